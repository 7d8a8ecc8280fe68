"""Attributions shown to people: tokens coloured in the terminal (green raises the target, red
lowers it), and one HTML page of heat maps, with the attention maps (per layer and head) where the
method was ``attention``. The page is self-contained: styles inline, images as data URIs."""

import base64
import html
import io
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lmforge.explain.attribution import Attribution  # noqa: E402


def _scale(attribution: Attribution) -> float:
    return max((abs(s) for s in attribution.scores), default=0.0) or 1.0


def terminal_line(attribution: Attribution, colour: bool) -> str:
    """The tokens in a row: ANSI background colours by sign and strength, or ``token(+0.123)``."""
    scale = _scale(attribution)
    parts = []
    for token, score in zip(attribution.tokens, attribution.scores):
        if not colour:
            parts.append(f"{token}({score:+.3f})")
            continue
        strength = min(abs(score) / scale, 1.0)
        level = 255 - int(strength * 160)  # lighter for weaker
        r, g, b = (level, 255, level) if score >= 0 else (255, level, level)
        parts.append(f"\x1b[48;2;{r};{g};{b}m\x1b[30m{token}\x1b[0m")
    return " ".join(parts)


def summary_line(attribution: Attribution) -> str:
    extra = attribution.extra
    if "label" in extra:
        head = f"predicted {extra['label']} ({extra['score']:.3f}); explaining {attribution.target}"
    elif "entity" in extra:
        head = f"entity {attribution.target} ({extra['entity_score']:.3f})"
    else:
        head = f"continuation {attribution.target!r}"
    delta = extra.get("convergence_delta")
    tail = f", convergence delta {delta:.2g}" if delta is not None else ""
    return f"{head} [{attribution.method}{tail}]"


def feature_lines(attribution: Attribution, top: int = 10) -> list[str]:
    """An n-gram run's features of the text, largest contribution first."""
    rows = attribution.extra.get("features") or []
    return [
        f"  {f['contribution']:+.4f}  {f['kind']:<4} {f['feature']!r} (value {f['value']:.3f} x weight {f['weight']:+.3f})"
        for f in rows[:top]
    ]


def _colour(score: float, scale: float) -> str:
    strength = min(abs(score) / scale, 1.0)
    alpha = round(0.08 + 0.8 * strength, 3)
    return f"rgba(22,163,74,{alpha})" if score >= 0 else f"rgba(220,38,38,{alpha})"


def _attention_png(tokens: list[str], maps) -> str:
    layers, heads = maps.shape[:2]
    fig, axes = plt.subplots(layers, heads, figsize=(1.6 * heads, 1.6 * layers), squeeze=False)
    for i in range(layers):
        for j in range(heads):
            ax = axes[i][j]
            ax.imshow(maps[i, j].numpy(), cmap="Blues", vmin=0.0)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(f"layer {i + 1}", fontsize=7)
            if i == 0:
                ax.set_title(f"head {j + 1}", fontsize=7)
    fig.suptitle("attention weights (row: query token, column: key token; tokens as listed below)", fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _generation_table(attribution: Attribution) -> str:
    rows = attribution.extra.get("token_attributions") or []
    outs = attribution.extra.get("output_tokens") or []
    if not rows:
        return ""
    scale = max((abs(v) for row in rows for v in row), default=0.0) or 1.0
    head = "".join(f"<th>{html.escape(t)}</th>" for t in attribution.tokens)
    body = []
    for out, row in zip(outs, rows):
        cells = "".join(f'<td style="background:{_colour(v, scale)}">{v:+.2f}</td>' for v in row)
        body.append(f"<tr><th>{html.escape(out)}</th>{cells}</tr>")
    return (
        "<p>Per generated token (rows) and prompt token (columns):</p>"
        f"<div class=scroll><table><tr><th></th>{head}</tr>{''.join(body)}</table></div>"
    )


def html_page(attributions: list[Attribution], title: str = "lmforge explain") -> str:
    sections = []
    for a in attributions:
        scale = _scale(a)
        spans = "".join(
            f'<span class=tok style="background:{_colour(s, scale)}" title="{s:+.4f}">{html.escape(t)}</span> '
            for t, s in zip(a.tokens, a.scores)
        )
        parts = [f"<h2>{html.escape(summary_line(a))}</h2>", f"<p class=text>{spans}</p>"]
        features = a.extra.get("features")
        if features:
            rows = "".join(
                f"<tr><td>{html.escape(f['feature'])}</td><td>{f['kind']}</td><td>{f['value']:.3f}</td>"
                f"<td>{f['weight']:+.3f}</td><td>{f['contribution']:+.4f}</td></tr>"
                for f in features
            )
            parts.append(
                "<table><tr><th>n-gram</th><th>kind</th><th>value</th><th>weight</th><th>contribution</th></tr>"
                f"{rows}</table>"
            )
        parts.append(_generation_table(a))
        if a.maps is not None:
            png = _attention_png(a.maps["tokens"], a.maps["attention"])
            listed = " ".join(f"{i}:{html.escape(t)}" for i, t in enumerate(a.maps["tokens"]))
            parts.append(f'<img alt="attention maps" src="data:image/png;base64,{png}"><p class=small>{listed}</p>')
        sections.append(f"<section>{''.join(parts)}</section>")
    style = (
        "body{font-family:system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;color:#1f2937}"
        "h1{font-size:1.4rem}h2{font-size:1rem;font-weight:600}section{border-top:1px solid #e5e7eb;padding:.5rem 0}"
        ".tok{padding:1px 2px;border-radius:3px;line-height:2}.text{font-size:1.05rem}"
        "table{border-collapse:collapse;font-size:.8rem}td,th{border:1px solid #e5e7eb;padding:2px 6px}"
        ".scroll{overflow-x:auto}.small{font-size:.75rem;color:#6b7280}img{max-width:100%}"
    )
    legend = (
        "Green raises the explained target, red lowers it; stronger colour, larger attribution (hover for the value)."
    )
    return (
        f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title><style>{style}</style>"
        f"</head><body><h1>{html.escape(title)}</h1><p>{legend}</p>{''.join(sections)}</body></html>"
    )


def jsonl(attributions: list[Attribution]) -> str:
    return "".join(json.dumps(a.as_json(), ensure_ascii=False) + "\n" for a in attributions)
