"""The comparison table: quality on the rows every candidate predicted, costs, a recommendation, and
the files ``compare`` writes (``compare.json``, ``compare.md``, ``report.html``)."""

import html
import json
from pathlib import Path

from lmforge.evaluation.classification import classification_metrics
from lmforge.evaluation.ner import entity_metrics
from lmforge.selection.compare import BUDGET_KEYS, CLOSE, Step, _prediction_rows
from lmforge.tracking.report import _image, _page, _pyplot, _safe, _table
from lmforge.tracking.run_folder import RunFolder, write_atomic

COLUMNS = [
    ("candidate", "candidate"),
    ("labelled", "labelled"),
    ("quality", "{metric}"),
    ("accuracy", "accuracy"),
    ("macro_f1", "macro F1"),
    ("f1", "entity F1"),
    ("parameters_trainable", "trainable params"),
    ("parameters_total", "params"),
    ("size_mb", "size MB"),
    ("train_seconds", "train s"),
    ("job_seconds", "job s"),
    ("train_peak_mb", "train peak MB"),
    ("latency_p50_ms", "p50 ms (b=1)"),
    ("latency_p95_ms", "p95 ms (b=1)"),
    ("throughput_per_s", "texts/s (b=32)"),
    ("memory_mb", "inference peak MB"),
]


def table_rows(steps: list[Step], task: str, metric: str) -> tuple[list[dict], int]:
    """One row per step (and per calibrated variant of a prompt step); the count of evaluation
    rows the quality is measured on."""
    common, per_step = None, {}
    if task in ("classification", "token_classification"):
        for step in steps:
            if "error" in step.result:
                continue
            rows = {r["where"]: r for r in _prediction_rows(step.run_dir) if "where" in r}
            per_step[id(step)] = rows
            common = set(rows) if common is None else common & set(rows)
    common = common or set()
    out = []
    for step in steps:
        base = {
            "candidate": step.candidate.name,
            "labelled": step.labelled,
            "kind": step.candidate.kind,
            "run": str(step.run_dir),
            **_costs(step),
        }
        if "error" in step.result:
            out.append({**base, "error": step.result["error"]})
            continue
        if task == "classification":
            rows = [per_step[id(step)][w] for w in sorted(common)]
            out.append({**base, **_class_quality(rows, "label")})
            if rows and all("label_calibrated" in r for r in rows):
                out.append(
                    {
                        **base,
                        "candidate": f"{step.candidate.name} +calibration",
                        **_class_quality(rows, "label_calibrated"),
                    }
                )
        elif common:
            out.append(
                {**base, **_entity_quality([per_step[id(step)][w] for w in sorted(common)], _scheme(step.run_dir))}
            )
        else:
            out.append({**base, **_saved_quality(step.run_dir)})
    for row in out:
        value = row.get(metric)
        row["quality"] = value if isinstance(value, (int, float)) else None
    return out, len(common) if common else _count(steps)


def _class_quality(rows: list[dict], key: str) -> dict:

    if not rows:
        return {}
    names = sorted({r["gold"] for r in rows} | {r[key] for r in rows})
    index = {n: i for i, n in enumerate(names)}
    metrics = classification_metrics([index[r["gold"]] for r in rows], [index[r[key]] for r in rows], names)
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]}


def _entity_quality(rows: list[dict], scheme: str) -> dict:

    if not rows or not all("gold" in r and "pred" in r for r in rows):
        return {}
    metrics = entity_metrics([r["gold"] for r in rows], [r["pred"] for r in rows], scheme)
    return {k: metrics[k] for k in ("f1", "precision", "recall", "macro_f1", "token_accuracy")}


def _scheme(run_dir: Path) -> str:
    folder = RunFolder(run_dir)
    return folder.read_record().options.get("scheme", "bio") if folder.meta.is_file() else "bio"


def _saved_quality(run_dir: Path) -> dict:
    path = run_dir / "eval_results.json"
    results = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    split = results.get("validation") or results.get("test") or {}
    return {
        k: split[k]
        for k in ("f1", "precision", "recall", "accuracy", "token_accuracy", "perplexity", "loss")
        if isinstance(split.get(k), (int, float))
    }


def _count(steps: list[Step]) -> int:
    for step in steps:
        rows = _prediction_rows(step.run_dir)
        if rows:
            return len(rows)
    return 0


def _costs(step: Step) -> dict:
    result = dict(step.result)
    folder = RunFolder(step.run_dir)
    record = folder.read_record() if folder.meta.is_file() else None
    costs = {
        k: result[k]
        for k in (
            "job_seconds",
            "train_peak_mb",
            "latency_p50_ms",
            "latency_p95_ms",
            "throughput_per_s",
            "memory_mb",
            "parameters_total",
        )
        if k in result
    }
    if "size_bytes" in result:
        costs["size_mb"] = round(result["size_bytes"] / 2**20, 1)
    if step.candidate.kind == "train":
        params = (record.parameters if record else None) or {}
        costs["parameters_trainable"] = params.get("trainable")
        costs["parameters_total"] = params.get("total", costs.get("parameters_total"))
        costs["train_seconds"] = ((record.training if record else None) or {}).get("wall_time_s")
    else:
        costs["parameters_trainable"] = 0
        costs["train_seconds"] = 0.0
    if "measure_error" in result:
        costs["measure_error"] = result["measure_error"]
    return costs


# -- recommendation -----------------------------------------------------------------------------
def recommend(rows: list[dict], budget: dict[str, float]) -> dict:
    """The best-quality candidate within the budget, and the cheapest (lowest p50 latency, then
    memory) within one point of the best."""

    def fits(row):
        return all(
            isinstance(row.get(BUDGET_KEYS[k]), (int, float)) and row[BUDGET_KEYS[k]] <= limit
            for k, limit in budget.items()
        )

    scored = [r for r in rows if isinstance(r.get("quality"), (int, float))]
    within = [r for r in scored if fits(r)]
    out = {"budget": budget, "within_budget": [_name(r) for r in within]}
    if not within:
        out["best"] = None
        out["text"] = "no candidate fits the budget" if scored else "no candidate produced a result"
        return out
    best = max(within, key=lambda r: r["quality"])
    close = [r for r in within if r["quality"] >= best["quality"] - CLOSE]
    cheapest = min(close, key=lambda r: (r.get("latency_p50_ms") or float("inf"), r.get("memory_mb") or float("inf")))
    out.update({"best": _name(best), "cheapest_close": _name(cheapest)})
    text = f"best within budget: {_name(best)} ({best['quality']:.4f})"
    if cheapest is not best:
        text += (
            f"; cheapest within 1 point of it: {_name(cheapest)} ({cheapest['quality']:.4f}, "
            f"p50 {_num(cheapest.get('latency_p50_ms'))} ms vs {_num(best.get('latency_p50_ms'))} ms)"
        )
    else:
        text += "; it is also the cheapest within 1 point of the best"
    out["text"] = text
    return out


def _name(row: dict) -> str:
    return row["candidate"] if row.get("labelled") is None else f"{row['candidate']} @ {row['labelled']}"


def _num(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "—" if value is None else str(value)


# -- output files -------------------------------------------------------------------------------
def _columns(rows: list[dict], metric: str, curve: bool) -> list[tuple[str, str]]:
    cols = [(k, h.format(metric=metric)) for k, h in COLUMNS if k != "labelled" or curve]
    shown = [c for c in cols if c[0] in ("candidate", "quality") or any(r.get(c[0]) is not None for r in rows)]
    return [c for c in shown if c[0] != metric]  # the metric is shown once, as 'quality'


def markdown(rows: list[dict], metric: str, curve: bool) -> str:
    cols = _columns(rows, metric, curve)
    lines = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['candidate']} | failed: {row['error']} |" + " |" * (len(cols) - 2))
            continue
        lines.append("| " + " | ".join(_num(row.get(k)) if k != "candidate" else row[k] for k, _ in cols) + " |")
    return "\n".join(lines) + "\n"


def curve_markdown(rows: list[dict], metric: str, labelled: list[str]) -> str:
    """Learning curve: one row per candidate, one column per amount of labelled data."""
    names = list(dict.fromkeys(r["candidate"] for r in rows))
    lines = ["| candidate | " + " | ".join(f"N={n}" for n in labelled) + " |", "|---|" + "---|" * len(labelled)]
    for name in names:
        cells = []
        for n in labelled:
            row = next((r for r in rows if r["candidate"] == name and r["labelled"] == n), None)
            cells.append("failed" if row and "error" in row else _num(row.get("quality")) if row else "—")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_outputs(folder: Path, rows: list[dict], summary: dict, metric: str, labelled: list[str] | None) -> None:

    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / "compare.json", json.dumps({**summary, "rows": rows}, indent=1, ensure_ascii=False))
    text = [
        f"# lmforge compare: {summary['config']}\n",
        f"Quality: `{metric}` on {summary['evaluated']} evaluation rows every candidate predicted.\n",
        markdown(rows, metric, labelled is not None),
    ]
    if labelled:
        text += [f"\nLearning curve ({metric} by labelled examples N):\n", curve_markdown(rows, metric, labelled)]
    text.append(f"\n**Recommendation:** {summary['recommendation']['text']}\n")
    write_atomic(folder / "compare.md", "\n".join(text))
    write_atomic(folder / "report.html", _html(rows, summary, metric, labelled))


def _html(rows: list[dict], summary: dict, metric: str, labelled: list[str] | None) -> str:

    cols = _columns(rows, metric, labelled is not None)
    body = [
        f"<p>Config <code>{html.escape(summary['config'])}</code>; quality is <b>{html.escape(metric)}</b> "
        f"on the {summary['evaluated']} evaluation rows every candidate predicted. Latency: one text at "
        "a time; throughput: batches of 32; memory: peak resident set of the process that loads and runs "
        "the model.</p>",
        f"<p><b>Recommendation:</b> {html.escape(summary['recommendation']['text'])}</p>",
        _table(
            [h for _, h in cols],
            [
                [
                    r.get(k)
                    if k == "candidate" or r.get(k) is not None
                    else ("failed: " + r["error"] if k == "quality" and "error" in r else "—")
                    for k, _ in cols
                ]
                for r in rows
            ],
        ),
    ]
    body.append(_safe(_quality_latency_plot, (rows, metric)))
    if labelled:
        body.append(_safe(_curve_plot, (rows, metric, labelled)))
    rec = summary.get("recommendation") or {}
    headline = [
        ("recommended", rec.get("cheapest_close") or rec.get("best")),
        ("best quality", rec.get("best")),
        ("quality metric", metric),
        ("candidates", len({r.get("candidate") for r in rows})),
        ("evaluation rows", summary.get("evaluated")),
    ]
    return _page("lmforge compare", "\n".join(body), headline)


def _quality_latency_plot(data) -> str:

    rows, metric = data
    points = [r for r in rows if isinstance(r.get("quality"), (int, float)) and r.get("latency_p50_ms")]
    if not points:
        return ""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row in points:
        ax.scatter(row["latency_p50_ms"], row["quality"])
        ax.annotate(
            _name(row), (row["latency_p50_ms"], row["quality"]), fontsize=8, textcoords="offset points", xytext=(4, 4)
        )
    ax.set_xscale("log")
    ax.set_xlabel("latency p50 at batch 1 (ms, log scale)")
    ax.set_ylabel(metric)
    ax.set_title("quality against latency")
    ax.grid(alpha=0.3)
    return "<h2>Quality against latency</h2>\n" + _image(fig)


def _curve_plot(data) -> str:

    rows, metric, labelled = data
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    numeric = [n for n in labelled if n != "all"]
    largest = max([int(n) for n in numeric] or [1])
    position = {n: (int(n) if n != "all" else largest * 4) for n in labelled}
    for name in dict.fromkeys(r["candidate"] for r in rows):
        pts = [
            (position[r["labelled"]], r["quality"])
            for r in rows
            if r["candidate"] == name and isinstance(r.get("quality"), (int, float))
        ]
        if pts:
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xticks([position[n] for n in labelled])
    ax.set_xticklabels(labelled)
    ax.set_xlabel("labelled examples N")
    ax.set_ylabel(metric)
    ax.set_title("learning curve")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return "<h2>Learning curve</h2>\n" + _image(fig)
