"""The export's comparison table: the original and every variant on the same data and texts.

Each model is loaded through ``RunPredictor`` -- what ``predict``, ``eval`` and ``serve`` run -- and
gets its task metric on the evaluation file (accuracy and macro F1, or entity F1), its size on disk
(the model folder), its parameters, the p50 latency of one text at a time and the throughput in
batches of 32 (the same seeded texts for every model, after a warm-up). The models are timed in turn on each text, so on a busy machine the load falls on all of
them alike; the ratios to the original are what to read.
"""

import html
import json
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from lmforge.config.schema import DataConfig, DataSource, Fields
from lmforge.data.examples import LabelSet
from lmforge.data.readers import Problems
from lmforge.errors import DataError
from lmforge.inference.predictor import RunPredictor
from lmforge.models.int8 import int8_parameters
from lmforge.models.onnx_model import OnnxModel
from lmforge.selection.measure import folder_size
from lmforge.tasks import get_task
from lmforge.tracking.report import _page, _table
from lmforge.tracking.run_folder import write_atomic
from lmforge.tracking.run_record import RunRecord

ENCODER_TASKS = ("classification", "token_classification")
LATENCY_TEXTS, THROUGHPUT_TEXTS, ROUNDS, WARMUP = 30, 128, 3, 3


@dataclass
class EvalData:
    path: str | None  # None: the task has no evaluation here (sizes only)
    fields: object | None  # config.schema.Fields, or None for the run's own
    label: str
    texts: list[str]


def evaluation_data(run_dir: Path, record: RunRecord, eval_data: str | None) -> EvalData:
    """``--eval-data`` or the run's validation file (``config.yaml``), and its input texts."""
    import yaml

    if record.task not in ENCODER_TASKS:
        return EvalData(None, None, "no evaluation for this task (sizes only)", [])
    fields = None
    if eval_data:
        path = eval_data
    else:
        config = yaml.safe_load((Path(run_dir) / "config.yaml").read_text(encoding="utf-8")) or {}
        source = (config.get("data") or {}).get("validation")
        source = source[0] if isinstance(source, list) and source else source
        if not source:
            raise DataError(
                f"{run_dir}: the run has no validation file (data.validation) to evaluate the "
                "export on; give --eval-data FILE"
            )
        path = source if isinstance(source, str) else source["path"]
        if isinstance(source, dict) and source.get("fields"):
            fields = Fields(**{**record.fields, **source["fields"]})
    if not Path(path).exists():
        raise DataError(f"{path}: evaluation file not found (give --eval-data FILE)")
    task = get_task(record.task)
    task.restore_head_options(record.options)
    options = task.read_options()
    data = DataConfig(fields=fields or Fields(**record.fields), **options)
    examples = task.read_labelled(DataSource(path=str(path)), data, LabelSet.from_json(record.labels), Problems())
    if not examples:
        raise DataError(f"{path}: no labelled rows to evaluate the export on")
    texts = [ex.text if hasattr(ex, "text") else " ".join(ex.tokens) for ex in examples]
    return EvalData(str(path), fields, str(path), texts)


def count_parameters(model) -> int:

    if isinstance(model, OnnxModel):
        return model.num_parameters()
    return int8_parameters(model)


def predict_fn(predictor):
    """``(texts, batch_size) -> predictions`` as ``lmforge predict`` runs the predictor's task."""
    if predictor.record.task == "token_classification":
        return lambda batch, size: predictor.predict_entities(texts=batch, batch_size=size)
    return lambda batch, size: predictor.predict(batch, batch_size=size)


def _ms(fn) -> float:
    started = time.perf_counter()
    fn()
    return 1000 * (time.perf_counter() - started)


def interleaved_timings(
    predicts: dict,
    texts: list[str],
    seed: int = 0,
    latency_texts: int = LATENCY_TEXTS,
    throughput_texts: int = THROUGHPUT_TEXTS,
    rounds: int = ROUNDS,
) -> dict:
    """p50/p95 ms of one text at a time and texts/s in batches of 32, for every model in turn on each
    text (the order rotates), so load from other processes falls on all of them alike."""
    rng = random.Random(seed)
    short = rng.sample(texts, min(latency_texts, len(texts)))
    batch = rng.sample(texts, min(throughput_texts, len(texts)))
    names = list(predicts)
    for predict in predicts.values():  # warm-up
        for text in short[:WARMUP]:
            predict([text], 1)
        predict(batch[:32], 32)
    latency, speed = {n: [] for n in names}, {n: [] for n in names}
    for i, text in enumerate(short):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            latency[name].append(_ms(lambda: predicts[name]([text], 1)))
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            speed[name].append(len(batch) / (_ms(lambda: predicts[name](batch, 32)) / 1000))
    out = {name: {"throughput_per_s": round(statistics.median(speed[name]), 2)} for name in names}
    for name in names if short else []:
        ms = sorted(latency[name])
        out[name].update(
            {
                "latency_p50_ms": round(statistics.median(ms), 3),
                "timed_texts": len(short),
                "latency_p95_ms": round(ms[min(len(ms) - 1, int(0.95 * len(ms)))], 3),
            }
        )
    return out


def measure_variants(variants: list, data: EvalData, device: str = "auto") -> list[dict]:
    """Every variant's metrics, size and parameters, then their timings, interleaved; PyTorch float
    variants run on ``device`` (int8 and ONNX ones on the CPU, where their kernels are)."""

    rows, predicts = [], {}
    for variant in variants:
        predictor = RunPredictor(variant.folder, variant.checkpoint, device, "fp32")  # formats, not autocast
        row = {
            "model": variant.name,
            "format": variant.format,
            "size_bytes": folder_size(predictor.folder),
            "parameters": count_parameters(predictor.model),
            **variant.notes,
        }
        if data.path is not None:
            metrics = predictor.evaluate(data.path, data.fields).metrics
            keys = (
                ("accuracy", "macro_f1") if predictor.record.task == "classification" else ("f1", "precision", "recall")
            )
            row.update({k: metrics[k] for k in keys})
            predicts[variant.name] = predict_fn(predictor)
        rows.append(row)
    if predicts:
        timings = interleaved_timings(predicts, data.texts)
        for row in rows:
            row.update(timings[row["model"]])
    base = rows[0]
    for row in rows:
        row["size_ratio"] = round(row["size_bytes"] / base["size_bytes"], 4)
        for key in ("accuracy", "f1"):
            if key in row:
                row["delta_points"] = round(100 * (row[key] - base[key]), 2)
        if "latency_p50_ms" in row:
            row["latency_speedup"] = round(base["latency_p50_ms"] / row["latency_p50_ms"], 3)
            row["throughput_ratio"] = round(row["throughput_per_s"] / base["throughput_per_s"], 3)
    return rows


COLUMNS = [
    ("model", "model"),
    ("format", "format"),
    ("accuracy", "accuracy"),
    ("macro_f1", "macro F1"),
    ("f1", "entity F1"),
    ("delta_points", "Δ points"),
    ("size_mb", "size MB"),
    ("size_ratio", "size ×"),
    ("parameters", "parameters"),
    ("latency_p50_ms", "p50 ms (batch 1)"),
    ("latency_speedup", "speed-up"),
    ("throughput_per_s", "texts/s (batch 32)"),
    ("throughput_ratio", "throughput ×"),
]


def _cells(row: dict) -> dict:
    out = dict(row)
    out["size_mb"] = round(row["size_bytes"] / 1e6, 1)
    return out


def _columns(rows: list[dict]) -> list[tuple[str, str]]:
    cells = [_cells(r) for r in rows]
    return [(k, h) for k, h in COLUMNS if any(c.get(k) is not None for c in cells)]


FORMATS = {
    "accuracy": "{:.4f}",
    "macro_f1": "{:.4f}",
    "f1": "{:.4f}",
    "delta_points": "{:+.2f}",
    "size_mb": "{:.1f}",
    "size_ratio": "{:.2f}",
    "parameters": "{:,}",
    "latency_p50_ms": "{:.2f}",
    "latency_speedup": "{:.2f}",
    "throughput_per_s": "{:.1f}",
    "throughput_ratio": "{:.2f}",
}


def _text(key: str, value) -> str:
    if value is None:
        return "—"
    return FORMATS[key].format(value) if key in FORMATS else str(value)


def markdown(rows: list[dict]) -> str:
    cols = _columns(rows)
    lines = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
    for row in map(_cells, rows):
        lines.append("| " + " | ".join(_text(k, row.get(k)) for k, _ in cols) + " |")
    return "\n".join(lines) + "\n"


def write_outputs(folder: Path, summary: dict) -> None:

    rows = summary["rows"]
    intro = (
        f"Run `{summary['run']}`, steps: {', '.join(summary['steps'])}; evaluated on {summary['evaluated_on']}. "
        "Latency: one text at a time (p50); throughput: batches of 32; ratios against the original."
    )
    write_atomic(folder / "export.json", json.dumps(summary, indent=1, ensure_ascii=False))
    write_atomic(folder / "export.md", f"# lmforge export\n\n{intro}\n\n{markdown(rows)}")
    cols = _columns(rows)
    body = [
        f"<p>{html.escape(intro)}</p>",
        _table([h for _, h in cols], [[_text(k, _cells(r).get(k)) for k, _ in cols] for r in rows]),
    ]
    write_atomic(folder / "report.html", _page("lmforge export", "\n".join(body)))
