"""What the page reads from the runs root: the runs table (``tracking.runs_table``), one run's
details, and the compare and tune folders. A run is named by its path relative to the root; a name
that leaves the root, or names no run folder, is refused (404), so the page can read nothing else
on the machine. Nothing here writes."""

import csv
import json
import re
from pathlib import Path

import yaml

from lmforge.errors import RunFolderError
from lmforge.tracking.metrics_log import read_metrics
from lmforge.tracking.run_folder import META
from lmforge.tracking.runs_table import MAX_DEPTH, TRACKER_FOLDERS, list_runs, summarize

MAX_PREDICTIONS = 300  # prediction rows sent per run (mistakes first, then the rest in file order)
MAX_METRIC_ROWS = 5000  # metrics.jsonl rows sent per run (evenly thinned beyond)
STUDY_FILES = {"compare": "compare.json", "tune": "trials.csv"}


class NotFound(RunFolderError):
    """A run name that is not a folder under the root (the app answers 404)."""


def runs_table(root: Path) -> list[dict]:
    return list_runs(root) if root.is_dir() else []


def resolve(root: Path, name: str, kinds: tuple[str, ...] = ("run",)) -> Path:
    """The folder ``name`` (relative to ``root``) if it is under ``root`` and is a folder of one of
    ``kinds`` (run, compare, tune)."""
    if not name or "\x00" in name or Path(name).is_absolute():
        raise NotFound(f"{name!r}: give a folder relative to the runs root")
    base = root.resolve()
    folder = (base / name).resolve()
    if folder != base and base not in folder.parents:
        raise NotFound(f"{name}: not under the runs root")
    checks = {
        "run": lambda f: (f / META).is_file() or ((f / "config.yaml").is_file() and (f / "metrics.jsonl").is_file()),
        "compare": lambda f: (f / STUDY_FILES["compare"]).is_file(),
        "tune": lambda f: (f / STUDY_FILES["tune"]).is_file(),
    }
    if not folder.is_dir() or not any(checks[k](folder) for k in kinds):
        raise NotFound(f"{name}: no {' or '.join(kinds)} folder of that name under the runs root")
    return folder


def _json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return None


def _yaml(text: str | None) -> dict:
    try:
        data = yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def _thinned(rows: list[dict], limit: int) -> list[dict]:
    if len(rows) <= limit:
        return rows
    step = len(rows) / limit
    keep = {int(i * step) for i in range(limit)} | {len(rows) - 1}
    # Evaluations and the start row are few and all kept; training rows are thinned evenly.
    return [r for i, r in enumerate(rows) if i in keep or r.get("kind") != "train"]


def _predictions(path: Path) -> list[dict]:
    """Up to ``MAX_PREDICTIONS`` rows: the most confident mistakes first, then correct rows."""
    rows: list[dict] = []
    try:
        with path.open(encoding="utf-8") as f:
            for line in f:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict):
                    rows.append(row)
                if len(rows) >= 20 * MAX_PREDICTIONS:
                    break
    except OSError:
        return []

    def wrong(row: dict) -> bool:
        if "correct" in row:
            return not row["correct"]
        return "gold" in row and row.get("gold") != row.get("label")

    mistakes = sorted((r for r in rows if wrong(r)), key=lambda r: -float(r.get("score") or 0))
    rest = [r for r in rows if not wrong(r)]
    return (mistakes + rest)[:MAX_PREDICTIONS]


def run_details(root: Path, name: str) -> dict:
    """Everything the run page shows: its row in the runs table, record, config, metrics log,
    evaluation results (per-class tables, confusion matrices), prediction samples."""
    folder = resolve(root, name)
    row = summarize(folder, root.resolve())
    config = _text(folder / "config.yaml")
    return {
        "run": name,
        "row": row,
        "record": _json(folder / META),
        "config": config,
        "config_data": _yaml(config),
        "metrics": _thinned(read_metrics(folder / "metrics.jsonl"), MAX_METRIC_ROWS),
        "results": _json(folder / "eval_results.json") or {},
        "predictions": _predictions(folder / "predictions.jsonl"),
        "report": (folder / "report.html").is_file(),
    }


def report_path(root: Path, name: str) -> Path:
    path = resolve(root, name, ("run", "compare", "tune")) / "report.html"
    if not path.is_file():
        raise NotFound(f"{name}: no report.html yet")
    return path


def studies(root: Path) -> list[dict]:
    """The ``lmforge compare`` and ``lmforge tune`` folders under ``root``: name, kind and headline."""
    found: list[dict] = []
    if not root.is_dir():
        return found
    frontier = [root]
    for _ in range(MAX_DEPTH + 1):
        below: list[Path] = []
        for folder in frontier:
            for kind, marker in STUDY_FILES.items():
                if (folder / marker).is_file():
                    found.append(_study_row(root, folder, kind))
            if (folder / META).is_file():
                continue
            try:
                below.extend(
                    c
                    for c in folder.iterdir()
                    if c.is_dir() and not c.name.startswith(".") and c.name not in TRACKER_FOLDERS
                )
            except OSError:
                continue
        frontier = below
    return sorted(found, key=lambda r: r["name"])


def _study_row(root: Path, folder: Path, kind: str) -> dict:
    name = str(folder.relative_to(root)) if folder != root else "."
    row: dict = {"name": name, "kind": kind}
    if kind == "compare":
        data = _json(folder / "compare.json") or {}
        row.update(
            config=data.get("config"),
            metric=data.get("metric"),
            recommendation=data.get("recommendation"),
            candidates=len({r.get("candidate") for r in data.get("rows", []) if isinstance(r, dict)}),
        )
    else:
        trials = _trials(folder)
        row.update(trials=len(trials), best=_best_text(folder))
    return row


def _trials(folder: Path) -> list[dict]:
    try:
        with (folder / "trials.csv").open(encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f))
    except (OSError, csv.Error):
        return []


def _best_text(folder: Path) -> str | None:
    text = _text(folder / "best.yaml")
    if text is None:
        return None
    first = text.splitlines()[0] if text else ""
    return first.lstrip("# ").strip() or None


def study_details(root: Path, name: str, kind: str) -> dict:
    folder = resolve(root, name, (kind,))
    out: dict = {"name": name, "kind": kind, "report": (folder / "report.html").is_file()}
    if kind == "compare":
        out["compare"] = _json(folder / "compare.json") or {}
    else:
        out["trials"] = _trials(folder)
        best = _text(folder / "best.yaml")
        out["best_yaml"] = best
        found = re.search(r"trial (\d+),", best or "")
        out["best_trial"] = int(found.group(1)) if found else None
        try:
            out["best"] = yaml.safe_load(best) if best else None
        except yaml.YAMLError:
            out["best"] = None
    return out
