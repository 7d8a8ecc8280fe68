"""Experiment trackers beside the run folder, chosen by the config's ``tracking`` list:
``tensorboard`` (``events/``, on by default) and ``wandb`` (Weights & Biases).

W&B gets the resolved config as its parameters, every ``metrics.jsonl`` row as it is written
(``train/loss``, ``validation/accuracy``, ...), the final evaluation as the run summary, and at the
end ``report.html`` and ``lmforge.json`` as files of a ``report`` artifact plus the model folder as a
``model`` artifact (by reference: W&B records the files' checksums, nothing is copied). It runs
offline unless configured: ``WANDB_MODE`` (default ``offline``: the run is written under
``RUN/wandb/`` and ``wandb sync`` uploads it later), ``WANDB_PROJECT`` (default ``lmforge``),
``WANDB_ENTITY``; the API key only ever from W&B's own environment or login file, never argv.
"""

import logging
import math
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lmforge.errors import MissingDependencyError

log = logging.getLogger("lmforge")

TRACKERS = ("tensorboard", "wandb")


def _scalars(row: dict) -> dict:
    prefix = row.get("split", row.get("kind", "train"))
    return {
        f"{prefix}/{k}": v
        for k, v in row.items()
        if k not in ("step", "epoch", "kind", "split", "checkpoint")
        and isinstance(v, (int, float))
        and not isinstance(v, bool)
        and math.isfinite(v)
    }


class WandbTracker:
    """One W&B run for one lmforge run folder (resumed runs continue the same W&B run)."""

    def __init__(self, run_path: Path, config: dict, resume: bool):
        try:
            import wandb
        except ImportError:
            raise MissingDependencyError(
                "tracking: wandb needs the wandb package (pip install 'lmforge[track]' or pip install wandb)"
            ) from None
        self.wandb = wandb
        mode = os.environ.get("WANDB_MODE", "offline")
        run_id_file = run_path / "wandb" / "lmforge-run-id"
        run_id = run_id_file.read_text().strip() if resume and run_id_file.is_file() else None
        run_id = run_id or uuid.uuid4().hex[:8]
        (run_path / "wandb").mkdir(parents=True, exist_ok=True)
        run_id_file.write_text(run_id + "\n")
        init: Any = wandb.init
        self.run = init(
            project=os.environ.get("WANDB_PROJECT", "lmforge"),
            entity=os.environ.get("WANDB_ENTITY") or None,
            name=run_path.name,
            id=run_id,
            resume="allow",
            mode=mode,
            dir=str(run_path),
            config=config,
            settings=wandb.Settings(silent=True, console="off"),
        )
        log.info("tracking: W&B run %s (%s, project %s)", run_id, mode, self.run.project)

    def log(self, row: dict) -> None:
        values = _scalars(row)
        if not values:
            return
        if row.get("kind") == "final":
            for key, value in values.items():
                self.run.summary[key] = value
            return
        self.run.log(values, step=int(row["step"]) if "step" in row else None)

    def finish(self, run_path: Path, model_dir: Path | None, exit_code: int = 0) -> None:
        wandb = self.wandb
        report = wandb.Artifact(f"{run_path.name}-report", type="report")
        for name in ("report.html", "lmforge.json", "config.yaml"):
            if (run_path / name).is_file():
                report.add_file(str(run_path / name))
        self.run.log_artifact(report)
        if model_dir is not None and model_dir.is_dir():
            model = wandb.Artifact(f"{run_path.name}-model", type="model")
            model.add_reference(model_dir.resolve().as_uri())
            self.run.log_artifact(model)
        self.run.finish(exit_code=exit_code)


class Trackers:
    """The external trackers of one run (TensorBoard is written by ``MetricsLog`` itself)."""

    def __init__(self, names: Sequence[str], run_path: Path, config: dict, resume: bool):
        self.run_path = run_path
        self.open = [WandbTracker(run_path, config, resume)] if "wandb" in names else []

    def log(self, row: dict) -> None:
        for tracker in self.open:
            tracker.log(row)

    def finish(self, model_dir: Path | None, exit_code: int = 0) -> None:
        for tracker in self.open:
            tracker.finish(self.run_path, model_dir, exit_code)
        self.open = []
