"""The run folder: the contract between ``train`` and every later command (layout in DESIGN.md)."""

import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import yaml
from pydantic import ValidationError

from lmforge.config import JobConfig, config_to_dict
from lmforge.errors import RunFolderError
from lmforge.tracking.run_lock import LOCK_NAME
from lmforge.tracking.run_record import RECORD_FILE, RunRecord, read_record, record_text

META = RECORD_FILE
# What lmforge writes at the top of a run folder; ``overwrite`` replaces these and nothing else.
OWN_NAMES = {
    "config.yaml",
    "augment-samples.jsonl",
    "augment",
    RECORD_FILE,
    "model",
    "best",
    "checkpoints",
    "metrics.jsonl",
    "events",
    "report.html",
    "predictions.jsonl",
    "eval_results.json",
    "mlflow-run-id",
    "wandb",
    "compare_costs.json",
    "continual",
}
PREVIOUS = ".lmforge-previous"  # the run an overwrite replaces, kept until the new one checkpoints
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


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def write_atomic(path: Path, text: str) -> None:
    """Write a file through a temporary name, so a crash never leaves half of it."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def staging_folder(folder: Path) -> Path:
    """The empty name beside ``folder`` that a new version of it is written under first."""
    tmp = folder.parent / f".tmp-{folder.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    return tmp


def replace_folder(tmp: Path, folder: Path) -> None:
    """``tmp``, complete, becomes ``folder`` (its older version, if any, removed): with
    ``staging_folder``, a crash never leaves half a folder."""
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)


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
        if (self.path / PREVIOUS).is_dir():
            raise RunFolderError(
                f"output {self.path} holds a run set aside by an overwrite that was interrupted "
                f"({PREVIOUS}); set overwrite=true to replace it, or move its files back"
            )
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

    def own_entries(self, extra: Iterable[str] = ()) -> list[Path]:
        """What lmforge wrote at the top of this folder (``OWN_NAMES`` and a task's ``extra`` files):
        never the user's own files beside them."""
        names = OWN_NAMES | set(extra)
        if not self.path.is_dir():
            return []
        return sorted(p for p in self.path.iterdir() if p.name in names)

    def set_aside(self, extra: Iterable[str] = ()) -> Path | None:
        """``overwrite=true``: move the previous run's files into ``PREVIOUS`` (files lmforge did
        not write stay where they are), to be dropped once the new run has written its first
        checkpoint (``drop_previous``) or put back if it fails before (``restore_previous``).
        Returns the folder they went to, or None when there was no previous run."""
        aside = self.path / PREVIOUS
        entries = self.own_entries(extra)
        if aside.is_dir():
            # A run killed before its first checkpoint left the run before it aside: that one is
            # kept, and the killed run's own files are dropped.
            for entry in entries:
                _remove(entry)
            return aside
        if not entries:
            return None
        tmp = self.path / (PREVIOUS + ".tmp")
        _remove(tmp)
        tmp.mkdir()
        for entry in entries:
            os.replace(entry, tmp / entry.name)
        os.replace(tmp, aside)
        return aside

    def drop_previous(self) -> None:
        """The new run stands on its own (a checkpoint, or its end): the previous one goes."""
        _remove(self.path / PREVIOUS)

    def restore_previous(self) -> bool:
        """The new run failed before its first checkpoint: its files go and the previous run comes
        back as it was. True when there was one to restore."""
        aside = self.path / PREVIOUS
        if not aside.is_dir():
            return False
        for entry in self.own_entries(p.name for p in aside.iterdir()):
            _remove(entry)
        for entry in aside.iterdir():
            os.replace(entry, self.path / entry.name)
        aside.rmdir()
        return True

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
