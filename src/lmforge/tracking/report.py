"""A self-contained HTML report for one run folder: ``report.html``.

The page has, each section only when its inputs exist:

- **Summary**: task, model, parameter counts, best metric and step, training time (``lmforge.json``).
- **Training curves**: train/validation loss, learning rate and validation metrics vs step
  (``metrics.jsonl``), plus a table of the ``final`` evaluations logged there.
- **Evaluation**, per split of ``eval_results.json``: scalar metrics, a per-class
  precision/recall/F1 table and bar chart, and a confusion-matrix heatmap.
- **Error analysis** (``predictions.jsonl``, the validation split where there is one): accuracy by
  text length (quartiles) and the most confused label pairs (classification); missed and spurious
  entities per type and sentence accuracy by length (NER).
- **Samples**: the most confident mistakes and some correct predictions (``predictions.jsonl``).
- **Continual learning** (a run continued with ``--from``): the lineage, the stage matrix (each stage's
  validation score after each stage), average, backward and forward transfer (``lmforge.json``).
- **Config**: the resolved ``config.yaml``, verbatim.

Images are matplotlib PNGs embedded as base64, so the file needs nothing else to display.
Missing, empty or partly written inputs simply leave their section out.
"""

import base64
import html
import io
import json
import logging
import math
from pathlib import Path

from lmforge.errors import RunFolderError
from lmforge.tracking.metrics_log import read_metrics
from lmforge.tracking.run_folder import write_atomic
from lmforge.tracking.run_record import RECORD_FILE, RunRecord, read_record

log = logging.getLogger("lmforge")

REPORT_NAME = "report.html"
CURVE_METRICS = ("accuracy", "macro_f1", "weighted_f1")
NOT_METRICS = {"step", "epoch", "loss", "count", "lr", "grad_norm", "examples_per_s", "elapsed_s"}
MAX_WRONG, MAX_RIGHT, MAX_TEXT = 10, 5, 300

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "Noto Sans CJK SC", sans-serif;
       margin: 0 auto; max-width: 1180px; padding: 1.2em 1.5em 3em; color: #1d2330; line-height: 1.45;
       background: #f6f7f9; }
h1 { font-size: 1.5em; margin: .2em 0 .6em; }
h2 { font-size: 1.2em; margin: 1.8em 0 .5em; padding-bottom: .2em; border-bottom: 1px solid #e3e6ec; }
h3 { font-size: 1em; margin: 1.2em 0 .4em; color: #444; }
.headline { display: flex; flex-wrap: wrap; gap: .6em; margin: .4em 0 1em; }
.headline div { background: #fff; border: 1px solid #e3e6ec; border-radius: 8px; padding: .45em .9em; min-width: 110px; }
.headline .k { display: block; font-size: .78em; color: #667085; }
.headline .v { display: block; font-size: 1.15em; font-weight: 600; }
.table-wrap { display: inline-block; vertical-align: top; overflow-x: auto; max-width: 100%; margin: .4em .8em 1em 0;
              background: #fff; border: 1px solid #e3e6ec;
              border-radius: 8px; }
table { border-collapse: collapse; font-size: .9em; }
th, td { border-bottom: 1px solid #edf0f3; padding: .32em .7em; text-align: left; vertical-align: top; }
th { background: #f3f5f8; color: #555; font-weight: 600; white-space: nowrap; position: sticky; top: 0; }
tr:last-child td { border-bottom: none; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
pre { background: #fff; border: 1px solid #e3e6ec; border-radius: 8px; padding: 1em; overflow-x: auto; font-size: .85em; }
.plots { display: grid; grid-template-columns: repeat(auto-fit, minmax(430px, 1fr)); gap: .8em; margin: .4em 0 1em; }
img { max-width: 100%; height: auto; display: block; background: #fff; border: 1px solid #e3e6ec; border-radius: 8px; }
.plots img { margin: 0; }
.wrong { background: #fff4f4; }
.note { color: #667085; font-style: italic; }
"""


def write_report(run_dir: Path) -> Path:
    """Build ``run_dir/report.html`` from whatever the run folder holds; return its path."""
    run_dir = Path(run_dir)
    sections = [
        _safe(_summary_section, _record_or_none(run_dir)),
        _safe(_training_section, read_metrics(run_dir / "metrics.jsonl")),
        _safe(_augment_section, _augment_inputs(run_dir)),
        _safe(_continual_section, _record_or_none(run_dir)),
        _safe(_evaluation_section, _read_json(run_dir / "eval_results.json")),
        _safe(_errors_section, read_metrics(run_dir / "predictions.jsonl")),
        _safe(_samples_section, read_metrics(run_dir / "predictions.jsonl")),
        _safe(_config_section, _read_text(run_dir / "config.yaml")),
    ]
    record = _record_or_none(run_dir)
    page = _page(
        f"lmforge run: {run_dir.name}",
        "".join(sections),
        _safe_headline(record, _read_json(run_dir / "eval_results.json")),
    )
    target = run_dir / REPORT_NAME
    write_atomic(target, page)
    return target


# ---------------------------------------------------------------- reading inputs


def _record_or_none(run_dir: Path) -> RunRecord | None:
    """The run record, or None where there is none yet or it cannot be read (a report is written
    from whatever the folder holds)."""
    if not (run_dir / RECORD_FILE).is_file():
        return None
    try:
        return read_record(run_dir)
    except RunFolderError:
        return None


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8") if path.is_file() else None
    except (OSError, UnicodeDecodeError):
        return None


def _read_json(path: Path) -> dict | None:
    text = _read_text(path)
    try:
        data = json.loads(text) if text else None
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


# ---------------------------------------------------------------- page building blocks


def _safe(build, data) -> str:
    """Run one section builder; a bug or odd input costs that section, never the report."""
    if not data:
        return ""
    try:
        return build(data)
    except Exception as error:  # noqa: BLE001 - the report must always be written
        log.warning("report: skipped a section (%s: %s)", type(error).__name__, error)
        return f'<p class="note">A section could not be rendered ({html.escape(type(error).__name__)}).</p>'


def _page(title: str, body: str, headline: list[tuple[str, object]] | None = None) -> str:
    """A whole report page: the title, then ``headline`` (the few figures that matter, as cards),
    then ``body``."""
    title = html.escape(title)
    cards = "".join(
        f'<div><span class="k">{html.escape(str(k))}</span><span class="v">{_fmt(v)}</span></div>'
        for k, v in headline or []
        if v is not None and v != ""
    )
    top = f'<div class="headline">{cards}</div>\n' if cards else ""
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{title}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<h1>{title}</h1>\n{top}{body}\n"
        "</body>\n</html>\n"
    )


def _plots(images: list[str]) -> str:
    """Figures side by side where the page is wide enough."""
    images = [i for i in images if i]
    return f'<div class="plots">{"".join(images)}</div>\n' if images else ""


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _fmt(value) -> str:
    if _is_number(value) and isinstance(value, float):
        return f"{value:.4f}"
    return html.escape(str(value))


def _cell(value) -> str:
    css = ' class="num"' if _is_number(value) else ""
    return f"<td{css}>{_fmt(value)}</td>"


def _table(header: list[str], rows: list[list], row_class: list[str] | None = None) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        css = f' class="{row_class[i]}"' if row_class and row_class[i] else ""
        body.append(f"<tr{css}>" + "".join(_cell(v) for v in row) + "</tr>")
    return f'<div class="table-wrap"><table><tr>{head}</tr>{"".join(body)}</table></div>\n'


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _image(fig) -> str:
    """Embed a figure as a base64 PNG ``<img>`` and close it."""
    plt = _pyplot()
    try:
        buffer = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buffer, format="png", dpi=100)
    finally:
        plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="">\n'


# ---------------------------------------------------------------- summary and config

HEADLINE_METRICS = ("accuracy", "macro_f1", "f1", "exact_match", "rougeL", "bleu", "perplexity", "loss")


def _safe_headline(record: RunRecord | None, results: dict | None) -> list[tuple[str, object]]:
    try:
        return _headline(record, results or {})
    except Exception as error:  # noqa: BLE001 - the report must always be written
        log.warning("report: no headline (%s: %s)", type(error).__name__, error)
        return []


def _headline(record: RunRecord | None, results: dict) -> list[tuple[str, object]]:
    """Task, model, the main metrics of the validation split (else the first split), steps, time."""
    cards: list[tuple[str, object]] = []
    if record is not None:
        cards += [("task", record.task), ("model", record.model.source or record.model.family)]
    split = (
        "validation"
        if isinstance(results.get("validation"), dict)
        else next((k for k, v in results.items() if isinstance(v, dict)), None)
    )
    if split:
        shown = [m for m in HEADLINE_METRICS if _is_number(results[split].get(m))][:3]
        cards += [(f"{split} {m}", results[split][m]) for m in shown]
    if record is not None:
        training = record.training or {}
        wall = training.get("wall_time_s")
        cards += [("steps", _thousands(training.get("steps"))), ("time", f"{wall:.1f} s" if _is_number(wall) else None)]
    return cards


def _summary_rows(record: RunRecord) -> list[list]:
    best, training, parameters = record.best or {}, record.training or {}, record.parameters or {}
    wall = training.get("wall_time_s")
    return [
        [name, value]
        for name, value in [
            ("Task", record.task),
            ("Model family", record.model.family),
            ("Model source", record.model.source),
            ("Trainable parameters", _thousands(parameters.get("trainable"))),
            ("Total parameters", _thousands(parameters.get("total"))),
            (f"Best {best['metric']}" if best.get("metric") else "Best value", best.get("value")),
            ("Best step", best.get("step")),
            ("Training steps", training.get("steps")),
            ("Stopped early", training.get("stopped_early")),
            ("Wall time", f"{wall:.1f} s" if _is_number(wall) else wall),
            ("Labels", ", ".join(map(str, record.label_names)) or None),
            ("lmforge version", record.lmforge_version),
            ("Created", record.created),
        ]
        if value is not None
    ]


def _thousands(value):
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else value


def _summary_section(record: RunRecord | None) -> str:
    rows = _summary_rows(record) if record is not None else []
    return "<h2>Summary</h2>\n" + _table(["Field", "Value"], rows) if rows else ""


def _config_section(text: str) -> str:
    return f"<h2>Config</h2>\n<pre>{html.escape(text)}</pre>\n"


# ---------------------------------------------------------------- training curves


def _series(rows: list[dict], key: str) -> tuple[list, list]:
    points = [(r["step"], r[key]) for r in rows if _is_number(r.get("step")) and _is_number(r.get(key))]
    return [p[0] for p in points], [p[1] for p in points]


def _curve_metrics(evals: list[dict]) -> list[str]:
    present = [k for k in CURVE_METRICS if any(_is_number(r.get(k)) for r in evals)]
    if present:
        return present
    others = {k for r in evals for k, v in r.items() if _is_number(v) and k not in NOT_METRICS}
    return sorted(others)[:6]


def _line_plot(title: str, ylabel: str, lines: list[tuple[str, list, list, str]]) -> str:
    """One figure with a line per ``(label, xs, ys, style)`` that has points; "" if no line has two
    (one point is no curve: the final table holds it, and drawing costs a second)."""
    lines = [line for line in lines if line[1]]
    if not any(len(xs) > 1 for _, xs, _, _ in lines):
        return ""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for label, xs, ys, style in lines:
        ax.plot(xs, ys, style, label=label)
    ax.set(title=title, xlabel="step", ylabel=ylabel)
    ax.grid(alpha=0.3)
    if len(lines) > 1:
        ax.legend()
    return _image(fig)


def _training_section(rows: list[dict]) -> str:
    rows = [r for r in rows if isinstance(r, dict)]
    train = [r for r in rows if r.get("kind") == "train"]
    evals = [r for r in rows if r.get("kind") == "eval" and r.get("split", "validation") == "validation"]
    plots = [
        _line_plot(
            "Loss", "loss", [("train", *_series(train, "loss"), "-"), ("validation", *_series(evals, "loss"), "o-")]
        ),
        _line_plot("Learning rate", "lr", [("lr", *_series(train, "lr"), "-")]),
        _line_plot("Validation metrics", "value", [(k, *_series(evals, k), "o-") for k in _curve_metrics(evals)]),
    ]
    body = _plots(plots) + _final_table([r for r in rows if r.get("kind") == "final"])
    return "<h2>Training</h2>\n" + body if body else ""


def _final_table(finals: list[dict]) -> str:
    if not finals:
        return ""
    keys = [k for k in dict.fromkeys(k for r in finals for k in r) if k not in ("kind", "split", "checkpoint")]
    keys = [k for k in keys if any(_is_number(r.get(k)) for r in finals)]
    rows = [[r.get("split", ""), r.get("checkpoint", "")] + [r.get(k, "") for k in keys] for r in finals]
    return "<h3>Final evaluations</h3>\n" + _table(["split", "checkpoint", *keys], rows)


# ---------------------------------------------------------------- evaluation results


def _evaluation_section(results: dict) -> str:
    parts = [_split_section(split, metrics) for split, metrics in results.items() if isinstance(metrics, dict)]
    body = "".join(parts)
    return "<h2>Evaluation</h2>\n" + body if body else ""


def _split_section(split: str, metrics: dict) -> str:
    scalars = [[k, v] for k, v in metrics.items() if _is_number(v)]
    parts = [f"<h3>{html.escape(str(split))}</h3>\n"]
    if scalars:
        parts.append(_table(["Metric", "Value"], scalars))
    per_class = metrics.get("per_class")
    if isinstance(per_class, dict) and per_class:
        parts.append(_per_class_table(per_class))
    matrix = metrics.get("confusion_matrix")
    charts = [
        _per_class_chart(per_class, split) if isinstance(per_class, dict) and per_class else "",
        _confusion_heatmap(matrix, metrics.get("labels"), split) if isinstance(matrix, list) and matrix else "",
    ]
    parts.append(_plots(charts))
    confusions = metrics.get("confusions")
    if isinstance(confusions, list) and confusions:
        rows = [[c.get("gold", ""), c.get("pred", ""), c.get("count", "")] for c in confusions if isinstance(c, dict)]
        parts.append(
            '<p class="note">Most frequent entity errors: a gold span predicted with another '
            "type or boundary, missed (predicted O) or spurious (gold O).</p>\n"
            + _table(["gold", "predicted", "count"], rows)
        )
    return "".join(parts) if len(parts) > 1 else ""


def _per_class_table(per_class: dict) -> str:
    keys = ("precision", "recall", "f1", "support")
    rows = [[label] + [(s.get(k, "") if isinstance(s, dict) else "") for k in keys] for label, s in per_class.items()]
    return _table(["Label", *keys], rows)


def _per_class_chart(per_class: dict, split: str) -> str:
    import numpy as np

    plt = _pyplot()
    labels = [str(label) for label in per_class]
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(labels) + 2), 3.6))
    for i, key in enumerate(("precision", "recall", "f1")):
        values = [s.get(key) if isinstance(s, dict) and _is_number(s.get(key)) else 0.0 for s in per_class.values()]
        ax.bar(x + (i - 1) * 0.27, values, width=0.27, label=key)
    ax.set_xticks(x)
    _tick_labels(ax.set_xticklabels, labels)
    ax.set(title=f"Per-class scores ({split})", ylim=(0, 1.2), yticks=[0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.legend(loc="upper center", ncol=3, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return _image(fig)


def _tick_labels(setter, labels: list[str]) -> None:
    if len(labels) > 6 or max((len(s) for s in labels), default=0) > 8:
        setter(labels, rotation=45, ha="right")
    else:
        setter(labels)


def _confusion_heatmap(matrix: list, labels, split: str) -> str:
    import numpy as np

    plt = _pyplot()
    counts = np.asarray(matrix, dtype=float)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        return ""
    n = counts.shape[0]
    names = [str(s) for s in labels] if isinstance(labels, list) and len(labels) == n else [str(i) for i in range(n)]
    size = max(4.0, 0.6 * n + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(counts, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    threshold = counts.max() / 2 if counts.size else 0
    for i in range(n):
        for j in range(n):
            ax.text(
                j,
                i,
                f"{counts[i, j]:g}",
                ha="center",
                va="center",
                color="white" if counts[i, j] > threshold else "black",
                fontsize=9,
            )
    ax.set_xticks(range(n))
    ax.set_yticks(range(n), names)
    _tick_labels(ax.set_xticklabels, names)
    ax.set(title=f"Confusion matrix ({split})", xlabel="predicted", ylabel="true")
    return _image(fig)


# ---------------------------------------------------------------- continual learning


def _continual_section(record: RunRecord | None) -> str:
    """The stage matrix of a continual run: R[i][j], the metric on stage j after training stage i."""
    info = (record.continual or {}) if record is not None else {}
    matrix, stages = info.get("matrix") or [], info.get("stages") or []
    if not matrix:
        return ""
    metric = info.get("metric", "metric")
    header = ["after stage \\ on stage"] + [str(j + 1) for j in range(len(matrix[-1]))]
    rows = [[str(i + 1)] + ["-" if v is None else v for v in row] for i, row in enumerate(matrix)]
    baseline = info.get("baseline") or []
    if baseline:
        rows.append(["untrained"] + ["-" if v is None else v for v in baseline])
    lineage = [
        [s.get("stage"), s.get("run"), s.get("method"), ", ".join(map(str, s.get("labels") or []))] for s in stages
    ]
    sign = "higher is better" if info.get("higher_is_better", True) else "lower is better"
    return (
        f"<h2>Continual learning</h2>\n<p>Stage {html.escape(str(info.get('stage')))}, method "
        f"{html.escape(str(info.get('method')))} ({html.escape(str(info.get('protocol')))}): {html.escape(metric)} "
        f"on each stage's validation set ({sign}).</p>\n"
        + _table(header, rows)
        + _table(
            ["average", "backward transfer", "forward transfer"],
            [[info.get("average"), info.get("bwt"), info.get("fwt")]],
        )
        + _table(["stage", "run", "method", "labels"], lineage)
    )


# ---------------------------------------------------------------- data augmentation


def _augment_inputs(run_dir: Path) -> tuple[list[dict], list[dict]] | None:
    """(the metrics log's ``augment`` rows, the changed examples kept by data.augment), or None."""
    counts = [r for r in read_metrics(run_dir / "metrics.jsonl") if r.get("kind") == "augment"]
    samples = read_metrics(run_dir / "augment-samples.jsonl")
    return (counts, samples) if counts or samples else None


def _augment_section(inputs: tuple[list[dict], list[dict]]) -> str:
    counts, samples = inputs
    by_epoch = {r.get("epoch"): r for r in counts}  # a resumed run logs an epoch again: the last counts
    methods = list(dict.fromkeys(m for r in by_epoch.values() for m in r.get("made", {})))
    rows = [
        [int(epoch or 0) + 1, r.get("examples")]
        + [f"{r['made'].get(m, 0)} ({r.get('changed', {}).get(m, 0)} changed)" for m in methods]
        for epoch, r in sorted(by_epoch.items(), key=lambda item: item[0] or 0)
    ]
    body = "<h2>Data augmentation</h2>\n"
    if rows:
        body += _table(["epoch", "examples"] + methods, rows)
    if samples:
        tagged = "augmented_tags" in samples[0]
        header = ["method", "original", "augmented"] + (["tags"] if tagged else ["label"])
        body += "<h3>Examples (first epoch)</h3>\n" + _table(
            header,
            [
                [
                    s.get("method"),
                    s.get("original"),
                    s.get("augmented"),
                    s.get("augmented_tags") if tagged else s.get("label"),
                ]
                for s in samples
            ],
        )
    return body


# ---------------------------------------------------------------- prediction samples


def _samples_section(predictions: list[dict]) -> str:
    if any("gold_entities" in r for r in predictions):
        return _entity_samples(predictions)
    if any("generated" in r for r in predictions):
        return _generation_samples(predictions)
    labelled = [r for r in predictions if r.get("gold") is not None and "label" in r]
    wrong = [r for r in labelled if r.get("gold") != r.get("label")]
    wrong = sorted(wrong, key=lambda r: -r["score"] if _is_number(r.get("score")) else 0.0)[:MAX_WRONG]
    right = [r for r in labelled if r.get("gold") == r.get("label")][:MAX_RIGHT]
    if not wrong and not right:
        return ""
    rows = [_sample_row(r) for r in wrong + right]
    classes = ["wrong"] * len(wrong) + [""] * len(right)
    header = ["split", "gold", "predicted", "score", "top k", "text", "where"]
    intro = f'<p class="note">The {len(wrong)} most confident mistakes and {len(right)} correct predictions.</p>\n'
    return "<h2>Samples</h2>\n" + intro + _table(header, rows, classes)


def _one_split(predictions: list[dict]) -> tuple[str, list[dict]]:
    """The validation split's rows where there are some, else all: (what they are, rows)."""
    valid = [r for r in predictions if r.get("split") == "validation"]
    return ("validation", valid) if valid else ("all splits", predictions)


def _length_buckets(rows: list[dict], length, correct) -> list[list]:
    """Rows in four groups by ``length(row)`` (quartiles): range, count, accuracy by ``correct``."""
    ordered = sorted(rows, key=length)
    out = []
    for k in range(4):
        group = ordered[len(ordered) * k // 4 : len(ordered) * (k + 1) // 4]
        if group:
            right = sum(1 for r in group if correct(r))
            out.append([f"{length(group[0])}–{length(group[-1])}", len(group), right / len(group)])
    return out


def _errors_section(predictions: list[dict]) -> str:
    split, rows = _one_split(predictions)
    tagged = [r for r in rows if isinstance(r.get("gold_entities"), list)]
    if tagged:
        return _entity_errors(split, tagged)
    labelled = [r for r in rows if r.get("gold") is not None and "label" in r and isinstance(r.get("text"), str)]
    if len(labelled) < 4:
        return ""
    buckets = _length_buckets(labelled, lambda r: len(r["text"]), lambda r: r["gold"] == r["label"])
    pairs: dict[tuple, int] = {}
    for r in labelled:
        if r["gold"] != r["label"]:
            pairs[(r["gold"], r["label"])] = pairs.get((r["gold"], r["label"]), 0) + 1
    confused = sorted(pairs.items(), key=lambda item: -item[1])[:MAX_WRONG]
    html_out = f'<h2>Error analysis</h2>\n<p class="note">{len(labelled)} predictions ({split}).</p>\n'
    html_out += "<h3>Accuracy by text length (characters, quartiles)</h3>\n"
    html_out += _table(["length", "texts", "accuracy"], buckets)
    if confused:
        html_out += "<h3>Most confused labels</h3>\n"
        html_out += _table(["gold", "predicted", "texts"], [[g, p, n] for (g, p), n in confused])
    return html_out


def _entity_key(entity: dict) -> tuple:
    where = (entity.get("start"), entity.get("end"), entity.get("start_token"), entity.get("end_token"))
    return (entity.get("label"), where if any(w is not None for w in where) else entity.get("text"))


def _entity_errors(split: str, rows: list[dict]) -> str:
    counts: dict[str, list[int]] = {}  # type -> [gold, found, missed, spurious]
    for r in rows:
        gold = {_entity_key(e) for e in r["gold_entities"] if isinstance(e, dict)}
        found = {_entity_key(e) for e in r.get("entities") or [] if isinstance(e, dict)}
        for key in gold | found:
            entry = counts.setdefault(str(key[0]), [0, 0, 0, 0])
            entry[0] += key in gold
            entry[1] += key in found
            entry[2] += key in gold and key not in found
            entry[3] += key in found and key not in gold
    per_type = [[t, g, f, m, s] for t, (g, f, m, s) in sorted(counts.items())]
    buckets = _length_buckets(rows, lambda r: len(r.get("tokens") or []), lambda r: bool(r.get("correct")))
    html_out = f'<h2>Error analysis</h2>\n<p class="note">{len(rows)} sentences ({split}).</p>\n'
    html_out += "<h3>Entities by type</h3>\n"
    html_out += _table(["type", "gold", "predicted", "missed", "spurious"], per_type)
    if len(rows) >= 4:
        html_out += "<h3>Sentences without an error, by length (tokens, quartiles)</h3>\n"
        html_out += _table(["length", "sentences", "all entities right"], buckets)
    return html_out


def _generation_samples(predictions: list[dict]) -> str:
    """Generated texts beside their references (and the request, where the run kept it)."""
    shown = [r for r in predictions if "generated" in r][: MAX_WRONG + MAX_RIGHT]
    rows = [
        [
            r.get("split", ""),
            str(r.get("request", ""))[:MAX_TEXT],
            str(r.get("reference", ""))[:MAX_TEXT],
            str(r.get("generated", ""))[:MAX_TEXT],
            r.get("where", ""),
        ]
        for r in shown
    ]
    intro = f'<p class="note">The first {len(shown)} generated texts.</p>\n'
    return (
        "<h2>Samples</h2>\n"
        + intro
        + _table(["split", "request", "reference", "generated", "where"], rows, [""] * len(rows))
    )


def _entity_samples(predictions: list[dict]) -> str:
    tagged = [r for r in predictions if isinstance(r.get("gold_entities"), list)]
    wrong = [r for r in tagged if not r.get("correct")][:MAX_WRONG]
    right = [r for r in tagged if r.get("correct")][:MAX_RIGHT]
    if not wrong and not right:
        return ""

    def spans(entities) -> str:
        return "; ".join(f"{e.get('text', '')} [{e.get('label', '')}]" for e in entities if isinstance(e, dict))

    rows = [
        [
            r.get("split", ""),
            spans(r["gold_entities"]),
            spans(r.get("entities") or []),
            " ".join(map(str, r.get("tokens", [])))[:MAX_TEXT],
            r.get("where", ""),
        ]
        for r in wrong + right
    ]
    classes = ["wrong"] * len(wrong) + [""] * len(right)
    intro = f'<p class="note">{len(wrong)} sentences with errors and {len(right)} without.</p>\n'
    return (
        "<h2>Samples</h2>\n"
        + intro
        + _table(["split", "gold entities", "predicted", "sentence", "where"], rows, classes)
    )


def _sample_row(row: dict) -> list:
    text = str(row.get("text", ""))
    if len(text) > MAX_TEXT:
        text = text[:MAX_TEXT] + "…"
    given = row.get("top_k")
    top_k = given if isinstance(given, list) else []
    top = ", ".join(f"{t.get('label')} {_fmt(t.get('score'))}" for t in top_k if isinstance(t, dict))
    return [
        row.get("split", ""),
        row.get("gold"),
        row.get("label"),
        row.get("score", ""),
        top,
        text,
        row.get("where", ""),
    ]
