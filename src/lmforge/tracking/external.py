"""Experiment trackers beside the run folder, chosen by the config's ``tracking`` list:
``tensorboard`` (``events/``, on by default), ``wandb`` (Weights & Biases) and ``mlflow``.

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
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lmforge.errors import ConfigError, LmforgeError, MissingDependencyError

log = logging.getLogger("lmforge")

TRACKERS = ("tensorboard", "wandb", "mlflow")


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


def _flat(config: dict, prefix: str = "") -> dict[str, str]:
    """``{"train.lr": "0.003", ...}``: MLflow parameters are flat strings."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flat(value, name + "."))
        else:
            out[name] = str(value)[:6000]
    return out


class MlflowTracker:
    """One MLflow run per lmforge run folder, through ``MlflowClient`` (no global MLflow state).

    The store is ``MLFLOW_TRACKING_URI`` when set (a server, a database, ...), else a local SQLite
    store beside the run folders: ``<output's parent>/mlflow.db`` with artifacts in
    ``<output's parent>/mlflow-artifacts/`` (``mlflow ui --backend-store-uri sqlite:///runs/mlflow.db``
    shows them). The experiment is ``MLFLOW_EXPERIMENT_NAME`` (default ``lmforge``). Parameters: the
    resolved config, flattened (``train.lr``); metrics: every ``metrics.jsonl`` row at its step; the
    final evaluation as ``final/<split>/<metric>``; artifacts: ``report.html``, ``lmforge.json``,
    ``config.yaml`` and the model folder (copied: MLflow keeps its own copy).
    """

    def __init__(self, run_path: Path, config: dict, resume: bool):
        try:
            from mlflow import MlflowClient
        except ImportError:
            raise MissingDependencyError(
                "tracking: mlflow needs the mlflow package (pip install 'lmforge[track]' or pip install mlflow)"
            ) from None
        root = run_path.resolve().parent
        uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / 'mlflow.db'}"
        self.client = MlflowClient(tracking_uri=uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "lmforge")
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            experiment = found.experiment_id
        else:
            local = None if os.environ.get("MLFLOW_TRACKING_URI") else (root / "mlflow-artifacts").as_uri()
            experiment = self.client.create_experiment(name, artifact_location=local)
        id_file = run_path / "mlflow-run-id"
        run_id = id_file.read_text().strip() if resume and id_file.is_file() else None
        if run_id is None:
            run_id = self.client.create_run(experiment, run_name=run_path.name).info.run_id
            params = _flat(config)
            from mlflow.entities import Param

            items = [Param(k, v) for k, v in params.items()]
            for i in range(0, len(items), 100):  # MLflow takes at most 100 parameters a batch
                self.client.log_batch(run_id, params=items[i : i + 100])
        else:
            self.client.update_run(run_id, status="RUNNING")
        id_file.write_text(run_id + "\n")
        self.run_id = run_id
        log.info("tracking: MLflow run %s in %s (experiment %s)", run_id, uri, name)

    def log(self, row: dict) -> None:
        from mlflow.entities import Metric

        values = _scalars(row)
        if not values:
            return
        step = int(row.get("step", 0))
        if row.get("kind") == "final":
            values = {f"final/{k}": v for k, v in values.items()}
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in values.items()])

    def finish(self, run_path: Path, model_dir: Path | None, exit_code: int = 0) -> None:
        for name in ("report.html", "lmforge.json", "config.yaml"):
            if (run_path / name).is_file():
                self.client.log_artifact(self.run_id, str(run_path / name))
        if model_dir is not None and model_dir.is_dir():
            self.client.log_artifacts(self.run_id, str(model_dir), "model")
        self.client.set_terminated(self.run_id, status="FINISHED" if exit_code == 0 else "KILLED")


TRACKER_NAMES = {WandbTracker: "wandb", MlflowTracker: "mlflow"}


class Trackers:
    """The external trackers of one run (TensorBoard is written by ``MetricsLog`` itself)."""

    def __init__(self, names: Sequence[str], run_path: Path, config: dict, resume: bool):
        self.run_path = run_path
        self.open: list[WandbTracker | MlflowTracker] = []
        kinds: dict[str, type[WandbTracker] | type[MlflowTracker]] = {"wandb": WandbTracker, "mlflow": MlflowTracker}
        for name in (n for n in names if n in kinds):
            try:
                self.open.append(kinds[name](run_path, config, resume))
            except LmforgeError:
                raise
            except Exception as exc:  # the tracker's own error (a bad URI, a refused store): one line
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ConfigError(f"tracking: {name}: {first}") from None

    def log(self, row: dict) -> None:
        """Each tracker gets the row; one that fails (its server down, its disk full) is dropped
        with a warning and the run goes on: metrics.jsonl keeps every row, for a later upload."""
        for tracker in list(self.open):
            try:
                tracker.log(row)
            except Exception as exc:  # noqa: BLE001 - a tracker must never stop training
                self._drop(tracker, exc, "its logging stops here; the run goes on and metrics.jsonl has every row")

    def finish(self, model_dir: Path | None, exit_code: int = 0) -> None:
        for tracker in list(self.open):
            try:
                tracker.finish(self.run_path, model_dir, exit_code)
            except Exception as exc:  # noqa: BLE001 - the run is written; a tracker's end must not fail it
                self._drop(
                    tracker, exc, "the run folder is complete; its final results and artifacts are not logged there"
                )
        self.open = []

    def _drop(self, tracker, exc: Exception, consequence: str) -> None:
        name = TRACKER_NAMES.get(type(tracker), type(tracker).__name__)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        log.warning("warning: tracking: %s failed (%s): %s", name, first, consequence)
        self.open.remove(tracker)
