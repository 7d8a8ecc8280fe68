"""``lmforge tune``: a hyperparameter search on Optuna, where every trial is an ordinary run.

The study folder holds:

- ``study.db`` -- Optuna's own SQLite storage (unless ``tune.storage`` or ``LMFORGE_TUNE_STORAGE``
  names another database): run the command again and an interrupted study continues; point workers
  on several machines at one database URL and they share the study;
- ``trials/trial-NNN/`` -- each trial's run folder (config, metrics, report), as ``lmforge train``
  or ``lmforge prompt`` writes it; a pruned trial keeps its metrics, not its checkpoints;
- ``best.yaml`` -- the best trial's config, which ``lmforge train`` takes as it is;
- ``trials.csv`` and ``report.html`` -- the trials table and Optuna's plots.

Trials report each validation to Optuna's pruner, which stops those behind the others. ``--jobs J``
runs J worker processes on the same study, the cores shared out between them.
"""

import contextlib
import copy
import csv
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import optuna
import yaml
from optuna.storages import RDBStorage, RetryFailedTrialCallback
from optuna.trial import TrialState

from lmforge._optional import require
from lmforge.config import JobConfig, apply_overrides, config_to_dict, load_config
from lmforge.errors import ConfigError, LmforgeError
from lmforge.prompting.prompt_run import run_prompt
from lmforge.search.report import write_study_report
from lmforge.search.space import Dimension, override, read_space
from lmforge.tasks import get_task
from lmforge.tracking.run_folder import RunFolder
from lmforge.training.recipe import train
from lmforge.training.signals import StopRequest

# The study speaks on its own logger, at INFO, while each trial's run is quiet (warnings only).
log = logging.getLogger("lmforge.tune")
log.setLevel(logging.INFO)

STORAGE_ENV = "LMFORGE_TUNE_STORAGE"
ENDED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


@dataclass
class Search:
    """A study to run: the user's config, its space and where everything goes."""

    config: JobConfig
    base: dict  # the config as the user wrote it (YAML + overrides), each trial's starting point
    dims: list[Dimension]
    folder: Path
    metric: str
    direction: Literal["maximize", "minimize"]
    worker: int = 0  # the worker's index under --jobs J: its sampler draws its own sequence

    @property
    def storage_url(self) -> str:
        return self.config.tune.storage or os.environ.get(STORAGE_ENV) or f"sqlite:///{self.folder / 'study.db'}"

    @property
    def name(self) -> str:
        return self.folder.resolve().name


def prepare(config_path: str, overrides: list[str]) -> Search:
    """Read and check everything a search needs; writes nothing."""
    base: dict = yaml.safe_load(Path(config_path).read_text(encoding="utf-8")) if config_path else {}
    config = load_config(config_path, overrides)  # one-line errors naming the file and key
    apply_overrides(base, overrides)
    dims = read_space(config, base)
    task = get_task(config.task)
    metric = config.tune.metric or (
        "accuracy" if config.tune.command == "prompt" and config.task == "classification" else task.default_metric
    )
    if config.tune.command == "train" and metric not in task.metric_names:
        raise ConfigError(
            f"tune.metric: '{metric}' is not reported for task {task.name} (choose from {', '.join(task.metric_names)})"
        )
    if config.data.validation is None:
        raise ConfigError("tune needs data.validation: trials are compared on the validation split")
    direction: Literal["maximize", "minimize"] = config.tune.direction or (
        "minimize" if metric in ("loss", "perplexity") else "maximize"
    )
    folder = Path(config.tune.output or f"{config.output.rstrip('/')}-tune")
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"tune.output: {folder} exists and is not a folder")
    return Search(config, base, dims, folder, metric, direction)


def open_study(search: Search) -> optuna.Study:
    """The study in its storage, created on first use and loaded after."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    tune = search.config.tune
    try:
        storage = RDBStorage(
            search.storage_url,
            heartbeat_interval=30,
            grace_period=120,  # a trial whose worker died is failed, then retried once
            **_retry_once(),
        )
    except Exception as exc:  # SQLAlchemy: a bad URL, an unreachable server, a missing driver
        shown = search.storage_url if search.storage_url.startswith("sqlite") else "the storage URL"
        raise ConfigError(f"tune.storage: cannot open {shown}: {str(exc).splitlines()[0]}") from None
    study = optuna.create_study(
        storage=storage,
        study_name=search.name,
        direction=search.direction,
        sampler=_sampler(tune.sampler, tune.seed + search.worker, search.dims),
        pruner=_pruner(tune.pruner),
        load_if_exists=True,
    )
    made_for = study.user_attrs.get("metric")
    if made_for is None:
        study.set_user_attr("metric", search.metric)
    elif made_for != search.metric:
        raise ConfigError(
            f"tune.metric: the study in {search.folder} holds validation {made_for} values; this config "
            f"asks for {search.metric} (use another tune.output)"
        )
    if study.direction.name.lower() != search.direction:
        raise ConfigError(
            f"tune.direction: the study in {search.folder} was made to {study.direction.name.lower()}; "
            f"this config asks to {search.direction} (use another tune.output)"
        )
    held = len(study.trials)
    if held:
        # a study taken up again draws on from where it stopped, not the values of its first trials again
        study.sampler = _sampler(tune.sampler, tune.seed + search.worker + 1000 * held, search.dims)
    return study


def _retry_once() -> dict:
    """The storage's setting that fails a trial whose worker died, and runs it again once (Optuna 4.9
    renamed it; both spellings work until Optuna 6)."""
    if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):
        return {"heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)}
    return {"failed_trial_callback": RetryFailedTrialCallback(max_retry=1)}


def _sampler(name: str, seed: int, dims: list[Dimension]) -> optuna.samplers.BaseSampler:
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return optuna.samplers.GridSampler({d.key: list(d.choices or ()) for d in dims}, seed=seed)
    if name == "cmaes":
        require("cmaes", purpose="tune.sampler: cmaes")
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    return optuna.samplers.TPESampler(seed=seed)


def _pruner(name: str) -> optuna.pruners.BasePruner:
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.NopPruner()


STOPPED_EXIT = 130  # a tune process a stop request ended (128 + SIGINT, as shells report Ctrl-C)


class StudyStopped(Exception):
    """Ctrl-C or SIGTERM stopped a trial before its end. Not an ``LmforgeError``: Optuna records the
    trial as failed and ends ``optimize``; the trial is marked ``stopped`` and does not count among
    the study's trials, so rerunning the command runs it again."""

    def __init__(self, signal: str):
        super().__init__(signal)
        self.signal = signal


class Terminated(KeyboardInterrupt):
    """SIGTERM while trials run outside a training loop's own handler (loading a trial, between
    trials): raised where the study is, as Ctrl-C raises ``KeyboardInterrupt``, so Optuna ends the
    trial it was in the same way and the study stops cleanly."""

    signal = "SIGTERM"


@contextmanager
def _terminate_as_interrupt():
    """SIGTERM raises ``Terminated`` while the study runs (a training loop's ``StopRequest`` takes
    over while it runs and gives the handler back after)."""

    def handle(signum, frame):
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, handle)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _StoppedTrialWarnings(logging.Filter):
    """Drops Optuna's "Trial N failed" warnings (a traceback, then the value) for the trials a stop
    request cut short: the command says what happened in one line."""

    def __init__(self):
        super().__init__()
        self.numbers: set[int] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(message.startswith(f"Trial {n} failed") for n in self.numbers)


_STOPPED_WARNINGS = _StoppedTrialWarnings()
logging.getLogger("optuna.study._optimize").addFilter(_STOPPED_WARNINGS)


def _stop(trial: optuna.Trial, signal_name: str) -> StudyStopped:
    """Mark ``trial`` as cut short by ``signal_name``; the exception that ends the study's loop."""
    trial.set_user_attr("stopped", signal_name)
    _STOPPED_WARNINGS.numbers.add(trial.number)
    return StudyStopped(signal_name)


def stopped(trial: optuna.trial.FrozenTrial) -> bool:
    return "stopped" in trial.user_attrs


def ended(study: optuna.Study) -> int:
    """The study's ended trials (complete, pruned or failed), not counting those a stop cut short."""
    return sum(not stopped(t) for t in study.get_trials(deepcopy=False, states=ENDED))


def _enough(trials: int):
    """An ``optimize`` callback that stops the study once it holds ``trials`` ended trials (every
    worker on the storage counts)."""

    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if ended(study) >= trials:
            study.stop()

    return callback


# -- trials -------------------------------------------------------------------------------------
def run_trials(search: Search, trials: int, timeout: float | None, quiet: bool = True, more: int | None = None):
    """Run trials in this process until the study holds ``trials`` ended ones (or ``timeout`` s);
    ``more``: run at most that many here (a worker's share under ``--jobs``)."""
    study = open_study(search)
    if ended(study) >= trials or more == 0:
        return study
    try:
        with _terminate_as_interrupt():
            study.optimize(
                lambda trial: _objective(search, trial, quiet),
                n_trials=more,
                timeout=timeout,
                catch=(LmforgeError,),  # a trial that diverges or runs out of memory fails; the study goes on
                callbacks=[_enough(trials)],
                gc_after_trial=True,
            )
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM between trials, in Optuna's own work
        raise StudyStopped(getattr(exc, "signal", "SIGINT")) from None
    except StudyStopped:
        raise
    except Exception as exc:  # one that hit Optuna's bookkeeping surfaces as another error
        if isinstance(exc.__context__, KeyboardInterrupt):
            raise StudyStopped(getattr(exc.__context__, "signal", "SIGINT")) from None
        raise
    return study


def _objective(search: Search, trial: optuna.Trial, quiet: bool) -> float:
    try:  # a stop anywhere in the trial (sampling, loading, training, recording) marks it stopped
        return _trial(search, trial, quiet)
    except KeyboardInterrupt as exc:  # Ctrl-C/SIGTERM before the loop listened (loading), a prompt run, a second one
        raise _stop(trial, getattr(exc, "signal", "SIGINT")) from None


def _trial(search: Search, trial: optuna.Trial, quiet: bool) -> float:
    values = {dim.key: dim.suggest(trial) for dim in search.dims}
    folder = search.folder / "trials" / f"trial-{trial.number:03d}"
    trial.set_user_attr("run", str(folder))
    overrides = [override(k, v) for k, v in values.items()]
    overrides += [override("output", str(folder)), "overwrite=true", "resume=false"]
    config = load_config(None, overrides, base=search.base)
    log.info("trial %d: %s", trial.number, ", ".join(f"{k}={shown(v)}" for k, v in values.items()))
    started = time.perf_counter()
    with _quiet_runs():
        results = _run_trial(search, trial, config, folder, quiet)
    trial.set_user_attr("seconds", round(time.perf_counter() - started, 2))
    value = results.get("validation", {}).get(search.metric)
    if not isinstance(value, (int, float)):
        raise ConfigError(f"tune.metric: trial {trial.number} reported no validation {search.metric}")
    log.info("trial %d: %s %.4f (%.0f s)", trial.number, search.metric, value, time.perf_counter() - started)
    return float(value)


def shown(value: Any) -> str:
    """A sampled value as a person reads it (4 significant digits)."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@contextmanager
def _quiet_runs():
    runs = logging.getLogger("lmforge")
    level = runs.level
    runs.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        runs.setLevel(level)


def _run_trial(search: Search, trial: optuna.Trial, config: JobConfig, folder: Path, quiet: bool) -> dict:
    started = time.perf_counter()
    if search.config.tune.command == "prompt":
        return run_prompt(config, quiet=True).results

    def report(step: int, metrics: dict, final: bool) -> None:
        value = metrics.get(search.metric)
        if value is None or not math.isfinite(value):
            return
        trial.report(value, step)
        # The last evaluation is the trial's result: a fully trained trial is complete, not pruned.
        if not final and trial.should_prune():
            raise optuna.TrialPruned(f"{search.metric} {value:.4f} at step {step}")

    try:
        outcome = train(config, quiet=quiet, on_evaluation=report)
    except optuna.TrialPruned as pruned:
        shutil.rmtree(RunFolder(folder).checkpoints, ignore_errors=True)  # lmforge wrote them
        trial.set_user_attr("seconds", round(time.perf_counter() - started, 2))
        log.info("trial %d pruned: %s", trial.number, pruned)
        raise
    if outcome.stopped_by:
        raise _stop(trial, outcome.stopped_by)
    return _results(folder)


def _results(folder: Path) -> dict:
    return json.loads((folder / "eval_results.json").read_text(encoding="utf-8"))


# -- workers ------------------------------------------------------------------------------------
def run_workers(search: Search, argv: list[str], trials: int, timeout: float | None, jobs: int) -> None:
    """``--jobs J``: J processes of ``lmforge tune ... --worker`` on the same study, each with its
    share of the cores and of the trials still to run, and its own sampler seed; the first worker's
    failure is reported once the others stop. Ctrl-C or SIGTERM here is passed to each worker once
    (they run in their own session, so a terminal's Ctrl-C reaches this process only): each finishes
    its step, checkpoints and stops, and ``StudyStopped`` is raised once all have."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = max(1, cores // jobs)
    left = max(0, trials - ended(open_study(search)))
    shares = [left // jobs + (1 if i < left % jobs else 0) for i in range(jobs)]
    command = [sys.executable, "-m", "lmforge", "tune", *argv, override("train.threads", threads)]
    command += ["--quiet", "--trials", str(trials)]
    if timeout is not None:
        command += ["--timeout", str(timeout)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    with contextlib.ExitStack() as stack:
        workers = []
        for i, share in enumerate(shares):
            if not share:
                continue
            err = stack.enter_context(tempfile.TemporaryFile("w+", encoding="utf-8"))
            process = subprocess.Popen(
                command + ["--worker", f"{i}:{share}"], env=env, stderr=err, text=True, start_new_session=True
            )
            workers.append((process, err))
        with StopRequest() as stop:
            forwarded = False
            while any(process.poll() is None for process, _ in workers):
                if stop.requested and not forwarded:
                    sig = signal.SIGINT if stop.requested == "SIGINT" else signal.SIGTERM
                    for process, _ in workers:
                        if process.poll() is None:
                            process.send_signal(sig)
                    forwarded = True
                time.sleep(0.2)
        errors = []
        for process, err in workers:
            # a worker the forwarded signal reached before it listened (starting up) died of it: stopped
            if process.returncode in (0, STOPPED_EXIT) or (forwarded and process.returncode == -sig):
                continue
            err.seek(0)
            lines = err.read().strip().splitlines()
            errors.append(lines[-1] if lines else f"exit code {process.returncode}")
    if errors:
        raise LmforgeError(f"a tune worker failed: {errors[0]}")
    if stop.requested:
        raise StudyStopped(stop.requested)


# -- the result ---------------------------------------------------------------------------------
def finish(search: Search, study: optuna.Study) -> dict:
    """``best.yaml``, ``trials.csv`` and ``report.html`` in the study folder; returns the summary."""
    search.folder.mkdir(parents=True, exist_ok=True)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    summary: dict[str, Any] = {
        "study": str(search.folder),
        "metric": search.metric,
        "direction": search.direction,
        "trials": {
            s.name.lower(): sum(not stopped(t) for t in study.get_trials(deepcopy=False, states=(s,))) for s in ENDED
        },
    }
    cut_short = sum(stopped(t) for t in study.get_trials(deepcopy=False))
    if cut_short:
        summary["trials"]["stopped"] = cut_short
    if complete:
        best = study.best_trial
        best_config = load_config(
            None,
            [override(k, v) for k, v in best.params.items()]
            + [override("output", str(search.folder / "best")), "overwrite=false", "resume=false"],
            base=search.base,
        )
        data = config_to_dict(best_config)
        data.pop("tune", None)
        header = (
            f"# the best of {len(complete)} trial(s) of {search.folder}: trial {best.number}, "
            f"validation {search.metric} {best.value:.6g}\n# lmforge train {search.folder / 'best.yaml'}\n"
        )
        text = header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
        (search.folder / "best.yaml").write_text(text, encoding="utf-8")
        summary.update(best_trial=best.number, best_value=best.value, best_params=best.params)
    rows = trials_table(study)
    _write_csv(search.folder / "trials.csv", rows)
    write_study_report(search.folder / "report.html", study, rows, summary, [d.key for d in search.dims])
    return summary


def retrain_best(search: Search, study: optuna.Study, quiet: bool = True) -> Path:
    """Train the best trial's config once more on train + validation (``STUDY/retrained``): the
    values were chosen on validation, and the final model learns from it too. With no validation
    left, it trains the configured epochs (no early stopping) and is measured on ``data.test``."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise ConfigError("--retrain: no trial completed, so there is no best config to retrain")
    if search.config.tune.command != "train":
        raise ConfigError("--retrain: tune.command is prompt; there is nothing to train")
    base = copy.deepcopy(search.base)
    base.pop("tune", None)
    data = base.setdefault("data", {})
    if not data.get("split"):  # with data.split, train already holds the validation rows
        data["train"] = _sources(data.get("train")) + _sources(data.get("validation"))
    data["split"] = None
    data["validation"] = None
    base.setdefault("train", {})["early_stopping"] = None
    folder = search.folder / "retrained"
    overrides = [override(k, v) for k, v in study.best_trial.params.items()]
    overrides += [override("output", str(folder)), "resume=false", f"overwrite={str(folder.exists()).lower()}"]
    config = load_config(None, overrides, base=base)
    log.info("retraining the best config (trial %d) on train + validation in %s", study.best_trial.number, folder)
    train(config, quiet=quiet)
    return folder


def _sources(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def trials_table(study: optuna.Study) -> list[dict]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append(
            {
                "trial": t.number,
                "state": "stopped" if stopped(t) else t.state.name.lower(),
                "value": t.value,
                "last_step": t.last_step,
                "seconds": t.user_attrs.get("seconds"),
                **t.params,
            }
        )
    return rows


def _write_csv(path: Path, rows: list[dict]) -> None:
    keys = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
