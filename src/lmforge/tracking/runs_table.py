"""Run folders under a directory, summarized for ``lmforge runs``: what each run is (task, model,
tuning), where it stands (done, running, stopped) and what it scored, sortable by a metric.

A run folder is one with ``lmforge.json`` (a finished or checkpointed run, a prompt run, an export)
or, for a job still starting or killed before its first record, ``config.yaml`` beside
``metrics.jsonl``. Status: ``done`` when the record says the job ran to its end; ``running`` when its
metrics log was written in the last ``LIVE_S`` seconds; ``stopped`` otherwise. Scores: the record's
results for the validation split (else the first split it has), else the last evaluation in the
metrics log. Nothing is written.
"""

import json
import math
import time
from pathlib import Path

import yaml

from lmforge.errors import RunFolderError
from lmforge.tracking.metrics_log import STOPPED_ROW, read_metrics
from lmforge.tracking.run_folder import META
from lmforge.tracking.run_record import read_record

LIVE_S = 120
MAX_DEPTH = 4
# Trackers' stores beside the runs (tracking/external.py): their copies of a run's files are not runs.
TRACKER_FOLDERS = ("mlflow-artifacts", "mlruns", "wandb")
LOWER_IS_BETTER = ("loss", "perplexity", "bits_per_char", "bpc", "seconds", "latency")
SHOWN = ("accuracy", "macro_f1", "f1", "precision", "recall", "exact_match", "bleu", "rougeL", "perplexity", "loss")


def find_runs(root: Path) -> list[Path]:
    """Run folders under ``root`` (itself included), up to ``MAX_DEPTH`` levels down, sorted."""
    if not root.is_dir():
        raise RunFolderError(f"{root}: no such folder")
    found, frontier = [], [root]
    for _ in range(MAX_DEPTH + 1):
        below: list[Path] = []
        for folder in frontier:
            if (folder / META).is_file() or (
                (folder / "config.yaml").is_file() and (folder / "metrics.jsonl").is_file()
            ):
                found.append(folder)
                continue  # a run's own subfolders (best/, model/, checkpoints/) are not runs
            try:
                below.extend(
                    child
                    for child in folder.iterdir()
                    if child.is_dir() and not child.name.startswith(".") and child.name not in TRACKER_FOLDERS
                )
            except OSError:
                continue  # unreadable: skipped, not fatal
        frontier = below
    return sorted(found)


def _scalar(metrics: dict) -> dict:
    return {
        k: v
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and k != "count"
    }


def _last_eval(log: list[dict]) -> tuple[str | None, dict]:
    for row in reversed(log):
        if row.get("kind") in ("final", "eval"):
            return row.get("split"), _scalar({k: v for k, v in row.items() if k not in ("step", "epoch")})
    return None, {}


def summarize(folder: Path, root: Path) -> dict:
    """One run's row: name (relative to ``root``), task, model, tuning, status, steps, seconds,
    split and scalar metrics; ``problem`` when its record cannot be read."""
    row: dict = {"run": str(folder.relative_to(root)) if folder != root else folder.name, "path": str(folder)}
    log = read_metrics(folder / "metrics.jsonl")
    record = None
    if (folder / META).is_file():
        try:
            record = read_record(folder)
        except Exception as exc:  # a damaged record is listed, not fatal to the listing
            row["problem"] = str(exc).splitlines()[0]
    if record is not None:
        row.update(task=record.task, model=record.model.source or record.model.arch, tuning=record.tuning)
        training = record.training or {}
        row.update(steps=training.get("steps"), seconds=training.get("wall_time_s"), created=record.created)
        results = record.results or _read_json(folder / "eval_results.json")
        split = "validation" if "validation" in results else next(iter(results), None)
        metrics = _scalar(results.get(split) or {}) if split else {}
        if record.export:
            row["kind"] = "export"
        elif record.is_prompt_run:
            row["kind"] = "prompt"
    else:
        config = _read_config(folder / "config.yaml")
        row.update(task=config.get("task"), model=(config.get("model") or {}).get("name"), tuning=None)
        split, metrics = None, {}
    if not metrics:
        split, metrics = _last_eval(log)
    if row.get("steps") is None:
        kinds = ("train", STOPPED_ROW)  # a stop request's row has the step the run stopped at
        steps = [r["step"] for r in log if r.get("kind") in kinds and isinstance(r.get("step"), int)]
        row["steps"] = steps[-1] if steps else None
    row["status"] = _status(folder, record, bool(log) and log[-1].get("kind") == STOPPED_ROW)
    row["split"], row["metrics"] = split, metrics
    return row


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, dict)} if isinstance(data, dict) else {}


def _read_config(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _status(folder: Path, record, stopped: bool) -> str:
    if record is not None and (record.finished or record.export or record.is_prompt_run):
        return "done"
    if stopped:  # its log ends with the row a stop request (Ctrl-C, SIGTERM) leaves
        return "stopped"
    log = folder / "metrics.jsonl"
    if log.is_file() and time.time() - log.stat().st_mtime < LIVE_S:
        return "running"
    return "stopped"


def list_runs(root: Path, sort: str | None = None, task: str | None = None) -> list[dict]:
    """The rows of every run under ``root``; ``sort``: best first by that metric (runs without it
    last); ``task``: only runs of that task."""
    rows = [summarize(folder, root) for folder in find_runs(root)]
    if task is not None:
        rows = [r for r in rows if r.get("task") == task]
    if sort is not None:
        have = sorted({k for r in rows for k in r["metrics"]})
        if sort not in have:
            listed = ", ".join(have) if have else "none (no run has metrics)"
            raise RunFolderError(f"--sort {sort}: no run under {root} has this metric; they have: {listed}")
        sign = 1 if sort.lower().endswith(LOWER_IS_BETTER) else -1
        rows.sort(key=lambda r: (sort not in r["metrics"], sign * r["metrics"].get(sort, 0.0)))
    return rows


def columns(rows: list[dict], sort: str | None = None) -> list[str]:
    """The metric columns worth showing: ``sort`` first, then the common ones the runs have."""
    have = {k for r in rows for k in r["metrics"]}
    shown = [m for m in SHOWN if m in have and m != sort]
    return ([sort] if sort else []) + shown[: 5 if sort is None else 4]


def table(rows: list[dict], sort: str | None = None) -> str:
    """A plain-text table for the terminal."""
    metrics = columns(rows, sort)
    head = ["run", "task", "model", "tuning", "status", "steps", "time", *metrics]
    lines = [head]
    for r in rows:
        seconds = r.get("seconds")
        lines.append(
            [
                r["run"],
                str(r.get("task") or "?"),
                str(r.get("model") or "?"),
                str(r.get("tuning") or r.get("kind") or "-"),
                r["status"] if "problem" not in r else "unreadable",
                "-" if r.get("steps") is None else str(r["steps"]),
                "-" if not isinstance(seconds, int | float) else _duration(seconds),
                *[_number(r["metrics"].get(m)) for m in metrics],
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    numeric = {i for i, name in enumerate(head) if name in ("steps", "time", *metrics)}
    out = []
    for k, line in enumerate(lines):
        cells = [cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i]) for i, cell in enumerate(line)]
        out.append("  ".join(cells).rstrip())
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def _number(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if abs(value) < 1000 else f"{value:.1f}"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def as_json(rows: list[dict]) -> str:
    return json.dumps(rows, ensure_ascii=False, indent=1)
