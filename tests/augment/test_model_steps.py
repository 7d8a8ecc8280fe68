"""The model-based augmentations on tiny models trained here: ``contextual`` fills masked words with a
masked LM's predictions (a masked_lm run of lmforge), ``paraphrase`` rewrites with a causal LM and
caches every rewrite in the run folder, so a second use generates nothing."""

import random

import pytest

from conftest import TINY_MODEL, sentiment_rows, write_jsonl
from lmforge.augment.models import ContextualFill, Paraphraser
from lmforge.config.schema import AugmentStep
from lmforge.data.examples import TextExample
from lmforge.errors import ConfigError

TEXTS = ["a truly great and moving film", "the plot was dull and the acting was worse"]


def _train(run_cli, tmp_path, name: str, task: str, rows: list[dict], model: str, *extra: str):
    config = tmp_path / f"{name}.yaml"
    config.write_text(f"task: {task}\n")
    data = write_jsonl(tmp_path / f"{name}.jsonl", rows)
    code, _, err = run_cli(
        "train",
        "--quiet",
        str(config),
        f"data.train={data}",
        "data.split=0.1",
        f"model={model}",
        "train.epochs=2",
        "train.batch_size=8",
        "train.lr=3e-3",
        "train.warmup=0",
        "data.max_length=32",
        "train.threads=1",
        f"output={tmp_path / name}",
        *extra,
    )
    assert code == 0, err
    return tmp_path / name


@pytest.fixture(scope="module")
def mlm_run(tmp_path_factory):
    from lmforge.cli.main import main

    root = tmp_path_factory.mktemp("mlm")

    def run_cli(*argv):
        return main(list(argv)), "", ""

    rows = [{"text": r["text"]} for r in sentiment_rows(80, 3)]
    return _train(run_cli, root, "mlm", "masked_lm", rows, TINY_MODEL)


def test_contextual_fills_masked_words_from_the_masked_lm(mlm_run):
    fill = ContextualFill(AugmentStep(method="contextual", model=str(mlm_run), p=0.3), "cpu")
    examples = [TextExample(text=t, label="pos") for t in TEXTS]
    first = fill(examples, 0, random.Random(7))
    again = fill(examples, 0, random.Random(7))
    assert [e.text for e in first] == [e.text for e in again]  # the same draw for the same seed
    changed = 0
    for before, after in zip(examples, first):
        old, new = before.text.split(), after.text.split()
        assert len(new) == len(old) and after.label == before.label
        swapped = [(a, b) for a, b in zip(old, new) if a != b]
        assert len(swapped) <= max(1, round(0.3 * len(old)))
        assert all(b.isalnum() and b.lower() != a.lower() for a, b in swapped)
        changed += bool(swapped)
    assert changed >= 1 and all("(contextual)" in e.where for e in first if e.text not in TEXTS)


def test_contextual_needs_a_masked_lm(tmp_path, run_cli):
    rows = sentiment_rows(24, 0)
    classifier = _train(run_cli, tmp_path, "cls", "classification", rows, TINY_MODEL)
    with pytest.raises(ConfigError, match="contextual needs a masked_lm run"):
        ContextualFill(AugmentStep(method="contextual", model=str(classifier)), "cpu")


def test_paraphrases_are_generated_once_and_cached(tmp_path, run_cli, monkeypatch):
    rows = [{"instruction": f"say {t}", "output": t} for t in TEXTS * 8]
    model = "{family: transformer, arch: llama, layers: 2, hidden: 32, heads: 2, vocab_size: 300, max_position: 256}"
    chat = _train(run_cli, tmp_path, "chat", "causal_lm", rows, model)
    step = AugmentStep(method="paraphrase", model=str(chat))
    cache = tmp_path / "run" / "augment"
    examples = [TextExample(text=t, label="pos") for t in TEXTS]
    first = Paraphraser(step, cache, "cpu")(examples, 0, random.Random(1))
    assert len(first) == 2 and all(e.label == "pos" and "(paraphrase 1)" in e.where for e in first)
    assert len((cache / "paraphrase.jsonl").read_text().splitlines()) == 2
    again = Paraphraser(step, cache, "cpu")  # a resumed or later run: read from the cache
    monkeypatch.setattr(again, "_rewrite", lambda *a: pytest.fail("generated again"))
    assert [e.text for e in again(examples, 0, random.Random(2))] == [e.text for e in first]
    second_copy = Paraphraser(step, cache, "cpu")(examples[:1], 1, random.Random(3))  # another copy: new
    assert len(second_copy) == 1 and len((cache / "paraphrase.jsonl").read_text().splitlines()) == 3
