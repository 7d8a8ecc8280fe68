"""``lmforge augment CONFIG --output FILE``: the training set of CONFIG with the changed copies its
``data.augment`` makes (one epoch's draw, ``--epoch``), written as JSON lines: classification
``{"text", "label", "augmentation"}`` (and ``text_pair``), NER ``{"tokens", "tags", "augmentation"}``
(``augmentation``: ``original`` or the step's method). Train on the file like any other data set."""

import argparse
import json
from pathlib import Path

from lmforge.augment.models import augmenter_for
from lmforge.augment.pipeline import check_steps
from lmforge.cli.common import OVERRIDES_HELP, add_output_arguments, config_overrides, output_file
from lmforge.config import load_config
from lmforge.data.readers import Problems
from lmforge.data.tagged import TaggedExample
from lmforge.errors import ConfigError, DataError
from lmforge.models import load_model
from lmforge.paths import cache_root
from lmforge.tasks import get_task
from lmforge.tracking.run_folder import write_atomic


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="a training config with data.augment")
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    add_output_arguments(p, "the .jsonl file to write", required=True)
    p.add_argument("--epoch", type=int, default=1, help="which epoch's draw to write (default 1)")
    p.add_argument("--only-new", action="store_true", help="write the changed copies only, not the originals")


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config, config_overrides(args))
    if not config.data.augment:
        raise ConfigError(f"{args.config}: data.augment is empty: list the augmentations to apply")
    if args.epoch < 1:
        raise DataError("--epoch must be at least 1")
    if Path(args.output).suffix.lower() != ".jsonl":
        raise DataError(f"--output {args.output}: write a .jsonl file")
    target = output_file(args)
    assert target is not None, "--output is required"
    check_steps(config.data.augment, config.task)
    task = get_task(config.task)
    data = task.load_data(config, Problems(skip=config.data.on_error == "skip"))
    model, tokenizer = None, None
    if any(step.source == "embedding" for step in config.data.augment):
        texts = [ex.text for ex in data.train]
        loaded = load_model(config.model, task.head, data.labels.names, texts)
        model, tokenizer = loaded.model, loaded.tokenizer
    augmenter = augmenter_for(config, data, model, tokenizer, cache_root() / "augment")
    assert augmenter is not None, "data.augment is not empty"
    examples, stats = augmenter.epoch(args.epoch - 1)
    originals = len(data.train)
    methods = ["original"] * originals + [s.method for s in augmenter.steps for _ in range(s.copies * originals)]
    rows = [_row(ex, method) for ex, method in zip(examples, methods)]
    if args.only_new:
        rows = rows[originals:]
    write_atomic(target, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    print(stats.line(args.epoch - 1, originals))
    print(f"{len(rows)} examples written to {target}")
    return 0


def _row(example, method: str) -> dict:
    if isinstance(example, TaggedExample):
        return {"tokens": example.tokens, "tags": example.tags, "augmentation": method}
    row = {"text": example.text, "label": example.label, "augmentation": method}
    if example.text_pair is not None:
        row["text_pair"] = example.text_pair
    return row
