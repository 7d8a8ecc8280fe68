"""The lineage of a continual run: one entry per stage (its run folder, data, seed and labels), kept in
each run's record (``continual.stages``), and the earlier stages' data read back through it.

A stage's data paths are recorded absolute (``package:`` paths as they are), so a later stage finds
them from any working directory. The first stage is an ordinary run with no lineage of its own: the
second stage builds its entry from the run's ``config.yaml``, whose relative paths are read from the
current directory, as ``lmforge train`` read them.
"""

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from lmforge.config import DataConfig, JobConfig
from lmforge.data.examples import LabelSet, limited_sample
from lmforge.data.readers import Problems
from lmforge.data.task_data import TaskData
from lmforge.errors import ConfigError, LmforgeError, RunFolderError
from lmforge.paths import PACKAGE_PREFIX
from lmforge.tasks import Task, get_task
from lmforge.tracking.run_record import RunRecord

log = logging.getLogger("lmforge")
SPLIT_KEYS = ("train", "validation", "test")


def absolute_sources(value: Any) -> Any:
    """``data.train``/``validation``/``test`` as config data, with every path made absolute."""
    if isinstance(value, list):
        return [absolute_sources(v) for v in value]
    if isinstance(value, dict) and "path" in value:
        return {**value, "path": absolute_sources(value["path"])}
    if isinstance(value, str) and not value.startswith(PACKAGE_PREFIX):
        return str(Path(value).expanduser().resolve())
    return value


def absolute_data(data: dict) -> dict:
    """A ``data`` section (config data) with absolute paths, without the keys left at their defaults."""
    defaults = DataConfig().model_dump(mode="json")
    return {
        k: absolute_sources(v) if k in SPLIT_KEYS else v
        for k, v in data.items()
        if k in SPLIT_KEYS and v is not None or k not in defaults or v != defaults[k]
    }


def stage_entry(number: int, run: Path, config: dict, labels: list[str] | None, method: str) -> dict:
    """The lineage entry of a stage: what a later stage needs to read its data again."""
    return {
        "stage": number,
        "run": str(Path(run).resolve()),
        "task": config["task"],
        "method": method,
        "model": config.get("model"),
        "data": absolute_data(config["data"]),
        "seed": config.get("train", {}).get("seed", 42),
        "labels": labels,
    }


def lineage_of(parent: Path, record: RunRecord) -> list[dict]:
    """The stages up to and including ``parent``: its record's lineage, or (a run that continued
    nothing) one entry made from its ``config.yaml``."""
    if record.continual and record.continual.get("stages"):
        return [dict(entry) for entry in record.continual["stages"]]
    config_file = parent / "config.yaml"
    if not config_file.is_file():
        raise RunFolderError(f"continual.parent: {parent} has no config.yaml, so its data cannot be found")
    resolved = yaml.safe_load(config_file.read_text(encoding="utf-8")) or {}
    return [stage_entry(1, parent, resolved, record.label_names or None, "none")]


def merge_labels(first: LabelSet, then: LabelSet) -> LabelSet:
    """``first``'s labels in their order (their ids, and so their rows of the head, stay), then the
    labels of ``then`` that are new; raw labels map as ``then`` maps them, else as ``first`` did."""
    names = list(first.names) + [n for n in then.names if n not in first.index]
    return LabelSet(names, {**first.raw_to_name, **then.raw_to_name})


@dataclass
class EarlierStage:
    """An earlier stage read back: its entry, its task (configured for its data) and its splits
    (training data as that stage trained on it, before any replay) in its own labels."""

    entry: dict
    config: JobConfig  # the config it ran with, reading the data its entry names
    task: Task
    data: TaskData

    @property
    def number(self) -> int:
        return int(self.entry["stage"])

    def examples(self, split: str, labels: LabelSet | None) -> list:
        """Copies of a split's examples, labelled with the ids of ``labels`` (which hold this
        stage's label names)."""
        rows = [copy.copy(ex) for ex in getattr(self.data, split)]
        if labels is not None and self.data.labels is not None and labels.names != self.data.labels.names:
            self.task.relabel(rows, self.data.labels, labels)
        return rows


def stage_config(entry: dict) -> JobConfig:
    """The config a stage ran with (its run's ``config.yaml``), reading the data the entry names."""
    config_file = Path(entry["run"]) / "config.yaml"
    resolved: dict = {}
    if config_file.is_file():
        resolved = yaml.safe_load(config_file.read_text(encoding="utf-8")) or {}
    resolved = {**resolved, "task": entry["task"], "data": entry["data"]}
    resolved["train"] = {**(resolved.get("train") or {}), "seed": entry.get("seed", 42)}
    resolved.pop("continual", None)
    try:
        return JobConfig.model_validate(resolved)
    except ValidationError as exc:
        raise ConfigError(
            f"continual: stage {entry['stage']} ({entry['run']}): its config no longer validates "
            f"({exc.errors()[0]['msg']})"
        ) from None


def read_stage(entry: dict) -> EarlierStage:
    """An earlier stage's task and data, read as that stage read them (its split, limit and seed)."""
    config = stage_config(entry)
    task = get_task(config.task)
    try:
        data = task.load_data(config, Problems(skip=config.data.on_error == "skip"))
    except LmforgeError as exc:
        raise type(exc)(f"continual: stage {entry['stage']} ({entry['run']}): {exc}") from None
    limit = config.data.train_limit
    if limit is not None and limit < len(data.train):
        data.train = limited_sample(data.train, limit, config.train.seed)
    task.configure(config, data.train, data.labels)
    log.info(
        "continual: stage %s (%s): %d training and %d validation examples",
        entry["stage"],
        entry["run"],
        len(data.train),
        len(data.validation),
    )
    return EarlierStage(entry, config, task, data)
