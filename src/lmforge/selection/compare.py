"""``lmforge compare CONFIG --models a,b,c [--shots 0,8,32,all] [--budget k=v,...]``.

plan (every candidate's config built and checked, run folders checked: nothing trains before all
pass) -> for each step: train or prompt in a worker process (``worker.py``), then time inference in
another (its peak memory is the inference memory) -> quality on the evaluation rows every candidate
predicted (classification metrics recomputed from ``predictions.jsonl``, so a ``--limit`` sample is
the same for all) -> ``compare.json``, ``compare.md``, ``report.html`` and a recommendation.

With ``--shots`` the comparison is a learning curve: each training candidate trains on N labelled
examples (``data.train_limit=N``, class-balanced and seeded), each prompt candidate is shown N of
them in context (up to ``--max-shots``), and similarity runs once at N = 0; setfit candidates train
on pairs of the N examples and skip N = all.
"""

import json
import logging
import math
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from lmforge.config import load_config
from lmforge.config.loader import config_to_dict
from lmforge.config.schema import ModelSpec
from lmforge.errors import ConfigError, RunFolderError, TrainingError
from lmforge.models.family import FAMILIES
from lmforge.selection.candidates import Candidate, parse_candidates
from lmforge.tracking.run_folder import RunFolder, write_atomic
from lmforge.training.checkpoint import list_checkpoints

log = logging.getLogger("lmforge")
BUDGET_KEYS = {
    "latency_ms": "latency_p50_ms",
    "p95_ms": "latency_p95_ms",
    "memory_mb": "memory_mb",
    "size_mb": "size_mb",
}
IGNORED_KEYS = ("overwrite", "resume", "device")  # where a candidate ran does not change what it learned
CLOSE = 0.01  # "within 1 point" of the best, on metrics in [0, 1]
MIN_STEPS = 50  # learning curve: fewest optimizer steps a training candidate takes
# Few-label methods: trained on pairs of the labelled examples, on a schedule of their own (not the
# loop's steps, so not MIN_STEPS), and left out at N=all (2 x 20 pairs per example would be hours).
FEW_LABEL_METHODS = ("setfit",)


@dataclass
class Step:
    """One candidate at one amount of labelled data: a run folder and the overrides that make it."""

    candidate: Candidate
    labelled: str | None  # learning curve: "0", "8", ..., "all"; None outside --shots
    run_dir: Path
    overrides: list[str]
    config: object = None
    reuse: bool = False
    result: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.candidate.name if self.labelled is None else f"{self.candidate.name} @ {self.labelled}"


def parse_budget(text: str | None) -> dict[str, float]:
    if not text:
        return {}
    budget = {}
    for item in text.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep or key not in BUDGET_KEYS:
            raise ConfigError(f"compare --budget: '{item}' is not one of {', '.join(k + '=N' for k in BUDGET_KEYS)}")
        try:
            budget[key] = float(value)
        except ValueError:
            raise ConfigError(f"compare --budget: '{item}': {value!r} is not a number") from None
    return budget


def parse_shots(text: str | None) -> list[str] | None:
    if text is None:
        return None
    values = []
    for item in text.split(","):
        item = item.strip()
        if item != "all" and not (item.isdigit()):
            raise ConfigError(f"compare --shots: '{item}' is not a count of labelled examples or 'all'")
        values.append(item)
    if not values:
        raise ConfigError("compare --shots: no value given")
    return values


def plan(
    config_path: str,
    overrides: list[str],
    models: str,
    shots: list[str] | None,
    output: str | None,
    limit: int | None,
    max_shots: int,
    overwrite: bool,
    min_steps: int = MIN_STEPS,
) -> tuple[Path, list[Step], object]:
    """Every step's config, built and checked before anything runs."""

    base = load_config(config_path, overrides)
    folder = Path(output) if output else Path(base.output) / "compare"
    candidates = parse_candidates(models)
    steps = []
    for candidate in candidates:
        for labelled in shots or [None]:
            extra = _curve_overrides(candidate, labelled, max_shots)
            if extra is None:
                continue
            name = candidate.slug if labelled is None else f"{candidate.slug}-n{labelled}"
            run_dir = folder / "runs" / name
            step_overrides = [*overrides, *candidate.overrides, *extra, f"output={run_dir}"]
            if limit is not None:
                step_overrides.append(f"prompt.limit={limit}")
            steps.append(Step(candidate, labelled, run_dir, step_overrides))
    for step in steps:
        step.config = _checked_config(config_path, step, base.task)
    steps = [s for s in steps if not (s.labelled == "all" and s.config.tuning.method in FEW_LABEL_METHODS)]
    if not steps:
        raise ConfigError("compare: no candidate applies to the --shots given")
    for step in steps:
        if _few_label_epochs(step, min_steps):
            step.config = _checked_config(config_path, step, base.task)
        _check_folder(step, overwrite)
    return folder, steps, base


def _curve_overrides(candidate: Candidate, labelled: str | None, max_shots: int) -> list[str] | None:
    """The overrides that give a candidate N labelled examples (None: it does not apply at N)."""
    if labelled is None:
        return []
    similarity = "prompt.method=similarity" in candidate.overrides
    if candidate.kind == "train":
        if labelled == "0":
            return None
        return [] if labelled == "all" else [f"data.train_limit={labelled}"]
    if similarity:
        return [] if labelled == "0" else None
    if labelled == "all" or int(labelled) > max_shots:
        return None
    shots = int(labelled) if candidate.shots is None else min(candidate.shots, int(labelled))
    limit = [f"data.train_limit={labelled}"] if int(labelled) > 0 else []
    return [f"prompt.shots={shots}", *limit]


def _few_label_epochs(step: Step, min_steps: int) -> bool:
    """A training candidate given N labelled examples trains for at least ``min_steps`` optimizer
    steps (more epochs over its N examples, evaluated about five times), as a user training on a
    handful of labels would: one epoch of 32 examples is a single step. Adds the overrides; True
    when it did."""
    config = step.config
    limit = config.data.train_limit
    if step.candidate.kind != "train" or limit is None or config.tuning.method in FEW_LABEL_METHODS:
        return False
    per_epoch = math.ceil(limit / (config.train.batch_size * config.train.grad_accum))
    if config.train.epochs * per_epoch >= min_steps:
        return False
    epochs = math.ceil(min_steps / per_epoch)
    every = max(per_epoch, (epochs * per_epoch) // 5)
    step.overrides += [f"train.epochs={epochs}", f"train.eval_every={every}"]
    return True


def _checked_config(config_path: str, step: Step, task: str):

    try:
        config = load_config(config_path, step.overrides)
    except ConfigError as exc:
        raise ConfigError(f"compare --models '{step.candidate.name}': {exc}") from None
    if step.candidate.kind == "prompt" and task not in ("classification", "token_classification"):
        raise ConfigError(
            f"compare --models '{step.candidate.name}': prompting candidates classify or tag; "
            f"task '{task}' is not supported by them yet"
        )
    if step.candidate.kind == "train" and isinstance(config.model, ModelSpec):
        if config.model.family not in FAMILIES:
            raise ConfigError(
                f"compare --models '{step.candidate.name}': model family '{config.model.family}' "
                f"is not available (known: {', '.join(sorted(FAMILIES.names()))})"
            )
    return config


def _check_folder(step: Step, overwrite: bool) -> None:

    run = step.run_dir
    if not run.exists() or not any(run.iterdir()):
        return
    resolved = _comparable(config_to_dict(step.config))
    folder = RunFolder(run)
    if not overwrite and folder.config.is_file() and folder.meta.is_file():
        same = _comparable(yaml.safe_load(folder.config.read_text(encoding="utf-8")) or {}) == resolved
        if same and folder.read_record().finished:
            step.reuse = True
            return
        if same and step.candidate.kind == "train" and _has_checkpoint(run):
            step.overrides.append("resume=true")  # stopped part way: go on from its newest checkpoint
            return
    if not overwrite:
        raise RunFolderError(
            f"compare: {run} holds a different or unfinished run; give --overwrite to redo it, or another --output"
        )
    step.overrides.append("overwrite=true")


def _has_checkpoint(run: Path) -> bool:

    return bool(list_checkpoints(run / "checkpoints")) if (run / "checkpoints").is_dir() else False


def _comparable(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in IGNORED_KEYS}


# -- running ------------------------------------------------------------------------------------
def run_worker(step_spec: dict, log_path: Path) -> dict:
    """Run one worker process; its result, or ``{"error": ...}`` naming the log."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    spec_path = log_path.with_suffix(".step.json")
    result_path = log_path.with_suffix(".result.json")
    result_path.unlink(missing_ok=True)
    spec_path.write_text(json.dumps({**step_spec, "result": str(result_path)}, ensure_ascii=False), encoding="utf-8")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "a", encoding="utf-8") as handle:
        child = subprocess.Popen(
            [sys.executable, "-m", "lmforge.selection.worker", str(spec_path)],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
        )
        code = _wait_forwarding(child, log_path)
    if not result_path.is_file():
        return {"error": f"the worker exited with code {code} without a result (log: {log_path})"}
    result = json.loads(result_path.read_text(encoding="utf-8"))
    if "error" in result:
        result["error"] = f"{result['error']} (log: {log_path})"
    return result


def _wait_forwarding(child: subprocess.Popen, log_path: Path) -> int:
    """Wait for a worker. A SIGTERM to compare is passed on (a training worker checkpoints and
    stops, as ``lmforge train`` does); Ctrl-C reaches the worker from the terminal by itself. Either
    way compare stops once the worker has, and never leaves it running."""
    received = []

    def handle(signum, frame):
        received.append(signal.Signals(signum).name)
        if signum == signal.SIGTERM:
            child.send_signal(signum)

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            previous[sig] = signal.signal(sig, handle)
        except ValueError:  # not the main thread: leave signals alone
            pass
    try:
        code = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if child.poll() is None:
            child.kill()
            child.wait()
    if received:
        raise TrainingError(
            f"compare: stopped by {received[0]} (worker log: {log_path}); the same command "
            "goes on: finished runs are reused, a stopped one resumes from its last checkpoint"
        )
    return code


def execute(folder: Path, steps: list[Step], config_path: str, quiet: bool = False) -> None:
    """Train or prompt every step, then time it; results land in ``step.result``."""
    logs = folder / "logs"
    for number, step in enumerate(steps, 1):
        say = (
            (lambda msg: None)
            if quiet
            else (lambda msg: log.info("[%d/%d] %s: %s", number, len(steps), step.label, msg))
        )
        if step.reuse:
            say(f"reusing the finished run in {step.run_dir}")
            step.result = {"reused": True, **_previous(step)}
        else:
            say("training" if step.candidate.kind == "train" else "prompting")
            mode = "train" if step.candidate.kind == "train" else "prompt"
            done = run_worker(
                {"mode": mode, "config": config_path, "overrides": step.overrides},
                logs / f"{step.run_dir.name}.{mode}.log",
            )
            if "error" in done:
                log.warning("%s failed: %s", step.label, done["error"])
                step.result = {"error": done["error"]}
                continue
            step.result = {"job_seconds": done["seconds"], "train_peak_mb": done["peak_rss_mb"]}
        texts = evaluation_texts(step.run_dir)
        say(f"timing inference on {len(texts)} evaluation texts")
        if step.candidate.kind == "train":
            spec = {
                "mode": "measure_run",
                "run": str(step.run_dir),
                "texts": texts,
                "threads": step.config.train.threads,
                "device": step.config.device,
            }
        else:
            spec = {
                "mode": "measure_prompt",
                "config": config_path,
                "overrides": [o for o in step.overrides if o != "overwrite=true"],
                "texts": texts,
            }
        timed = run_worker(spec, logs / f"{step.run_dir.name}.measure.log")
        if "error" in timed:
            log.warning("%s: timing failed: %s", step.label, timed["error"])
            step.result["measure_error"] = timed["error"]
        else:
            timed["memory_mb"] = timed.pop("peak_rss_mb")
            timed.pop("seconds", None)
            step.result.update(timed)
        _save_costs(step)


def _costs_path(step: Step) -> Path:
    return step.run_dir / "compare_costs.json"


def _save_costs(step: Step) -> None:

    if step.run_dir.is_dir():
        write_atomic(_costs_path(step), json.dumps({k: v for k, v in step.result.items() if k != "reused"}))


def _previous(step: Step) -> dict:
    path = _costs_path(step)
    if not path.is_file():
        return {}
    saved = json.loads(path.read_text(encoding="utf-8"))
    return {k: saved[k] for k in ("job_seconds", "train_peak_mb") if k in saved}


def evaluation_texts(run_dir: Path) -> list[str]:
    """The texts of the run's evaluation rows (validation, else test), from its predictions."""
    rows = _prediction_rows(run_dir)
    texts = []
    for row in rows:
        if "text" in row:
            texts.append(row["text"])
        elif "tokens" in row:
            tokens = row["tokens"]
            joiner = "" if all(len(t) == 1 and not t.isascii() for t in tokens) else " "
            texts.append(joiner.join(tokens))
    return [t for t in texts if t]


def _prediction_rows(run_dir: Path) -> list[dict]:
    path = run_dir / "predictions.jsonl"
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    split = "validation" if any(r.get("split") == "validation" for r in rows) else "test"
    return [r for r in rows if r.get("split") == split]
