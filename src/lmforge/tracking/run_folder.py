"""The run folder: the contract between ``train`` and every later command (layout in DESIGN.md)."""

import json
import os
import shutil
from pathlib import Path

import yaml
from pydantic import ValidationError

from lmforge.config import JobConfig, config_to_dict
from lmforge.errors import RunFolderError
from lmforge.tracking.run_lock import LOCK_NAME
from lmforge.tracking.run_record import RECORD_FILE, RunRecord, read_record, record_text

META = RECORD_FILE
# Keys a resumed run may change: they steer when to stop, evaluate or save, not what is learnt.
RESUMABLE_CHANGES = {
    "resume",
    "overwrite",
    "train.epochs",
    "train.precision",
    "train.mixed_precision",
    "train.gradient_checkpointing",
    "train.max_steps",
    "train.keep_optimizer",
    "train.early_stopping",
    "train.eval_every",
    "train.save_every",
    "train.keep_checkpoints",
    "train.log_every",
    "train.threads",
    "train.batch_size",  # per process: with another process count (checked at resume)
    "train.eval_batch_size",
    "distributed",  # a checkpoint taken with N processes resumes with M
    "device",
    "tune",
    "prompt",
}  # lmforge prompt's settings do not change what training learns


def write_atomic(path: Path, text: str) -> None:
    """Write a file through a temporary name, so a crash never leaves half of it."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_predictions(path: Path, rows: list[dict]) -> None:
    """``predictions.jsonl``: one JSON row per line."""
    write_atomic(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def _current_form(resolved: dict) -> dict:
    """A resolved config as this release writes it: one saved by an earlier release (a flat model
    spec, ``train.max_length``) goes through the schema's migrations, so only real changes count."""
    try:
        return config_to_dict(JobConfig.model_validate(resolved))
    except ValidationError:
        return resolved


def _flatten(data, prefix="") -> dict:
    if not isinstance(data, dict):
        return {prefix: data}
    out = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value and name != "train.early_stopping":
            out.update(_flatten(value, name))
        else:
            out[name] = value
    return out


class RunFolder:
    """Paths of a run folder and the checks made before anything is written to it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config = self.path / "config.yaml"
        self.meta = self.path / META
        self.model = self.path / "model"
        self.best = self.path / "best"
        self.checkpoints = self.path / "checkpoints"
        self.metrics = self.path / "metrics.jsonl"
        self.events = self.path / "events"
        self.report = self.path / "report.html"
        self.predictions = self.path / "predictions.jsonl"
        self.results = self.path / "eval_results.json"

    # -- before training -----------------------------------------------------------------------
    def check_writable(self, config: dict, resume: bool, overwrite: bool) -> None:
        """Refuse to clobber a different run; on resume, refuse a config that changed what is
        learnt. Writes nothing."""
        if not self.path.exists():
            return
        if not self.path.is_dir():
            raise RunFolderError(f"output {self.path} exists and is not a folder")
        if resume:
            if self.config.is_file():
                self._check_same_config(config)
            return
        if overwrite or not any(c.name != LOCK_NAME for c in self.path.iterdir()):
            return
        what = "a run" if self.config.is_file() else "other files"
        raise RunFolderError(
            f"output {self.path} already holds {what}; set overwrite=true to replace "
            f"it, resume=true to continue it, or choose another output"
        )

    def _check_same_config(self, config: dict) -> None:
        old = _flatten(_current_form(yaml.safe_load(self.config.read_text(encoding="utf-8")) or {}))
        new = _flatten(_current_form(config))
        changed = sorted(
            k
            for k in set(old) | set(new)
            if old.get(k) != new.get(k) and not any(k == r or k.startswith(r + ".") for r in RESUMABLE_CHANGES)
        )
        if changed:
            shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:3])
            raise RunFolderError(
                f"cannot resume {self.path}: the config changed ({shown}); "
                "start a new run (another output, or overwrite=true)"
            )

    def clear(self) -> None:
        """Remove a previous run's files (``overwrite=true``); the running job's lock stays."""
        for child in self.path.iterdir():
            if child.name == LOCK_NAME:
                continue
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()

    # -- metadata ------------------------------------------------------------------------------
    def write_config(self, config: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_atomic(self.config, yaml.safe_dump(config, sort_keys=False, allow_unicode=True))

    def write_record(self, record: RunRecord) -> None:
        write_atomic(self.meta, record_text(record))

    def read_record(self) -> RunRecord:
        """The run's ``lmforge.json``, typed and migrated (``tracking/run_record.py``)."""
        return read_record(self.path)

    def model_dir(self, which: str = "auto") -> Path:
        """The saved model to use: ``best``, ``model`` (final), or ``auto`` (best if present)."""
        if which == "auto":
            which = "best" if (self.best / "config.json").is_file() else "model"
        folder = self.best if which == "best" else self.model
        if not (folder / "config.json").is_file():
            raise RunFolderError(f"{self.path}: no saved model in {folder.name}/ (did training finish?)")
        return folder
