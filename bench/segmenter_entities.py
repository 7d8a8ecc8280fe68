"""How much a Chinese segmenter's part-of-speech tags already know about entities: each segmenter's
person / place / organisation words read as entity spans and scored against gold NER tags, with
lmforge's entity metrics (strict: exact span and type).

This is the question behind ``model.segmenter``: the tagger gets each character's place in the
segmenter's word and the word's tag as features, so a segmenter whose ``person`` words are MSRA's PER
entities hands the tagger most of a name it has never seen. jieba (the baseline: the segmenter
lmforge had first) calls persons ``nr``, places ``ns``, organisations ``nt``; THULAC ``np``, ``ns``,
``ni``. THULAC is optional (``pip install thulac``) and pure Python (about 2,300 characters a second).
Both segmenters run on the CPU only (neither is a torch model): ``--device`` takes ``cpu`` (the
default) or ``auto`` and refuses CUDA.

    python bench/segmenter_entities.py --quick      # the first 500 sentences of MSRA dev
    python bench/segmenter_entities.py              # all of MSRA dev (2,765 sentences, about a minute)

The last line printed is ``ratio: X.XX`` = THULAC's micro F1 / jieba's.
"""

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from _common import add_device_arg, resolve_device  # noqa: E402
from lmforge.data.tagging import from_spans  # noqa: E402
from lmforge.evaluation.ner import entity_metrics  # noqa: E402
from lmforge.models.segmenter import _FACTORIES, word_places  # noqa: E402

CPU_ONLY = "jieba and THULAC are CPU-only segmenters (pure Python, no torch)"
ENTITY_TAGS = {"jieba": {"nr": "PER", "ns": "LOC", "nt": "ORG"}, "thulac": {"np": "PER", "ns": "LOC", "ni": "ORG"}}


def read_columns(path: Path, limit: int | None) -> list[tuple[str, list[str]]]:
    """(text, BIO tags) of each sentence of a one-character-a-line ``char<TAB>tag`` file."""
    out, chars, tags = [], [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            if chars:
                out.append(("".join(chars), tags))
                chars, tags = [], []
            continue
        parts = line.split()
        if len(parts) != 2:
            raise SystemExit(f"{path}:{number}: expected 'char tag', got {line!r}")
        chars.append(parts[0])
        tags.append(parts[1])
    if chars:
        out.append(("".join(chars), tags))
    return out[:limit] if limit else out


def segmenter_tags(name: str, sentences) -> tuple[list[list[str]], float]:
    """BIO tags of the segmenter's entity words for each sentence (its words placed on the characters
    as the tagger's features place them), and the seconds it took."""
    cut = _FACTORIES[name]()
    mapping, out = ENTITY_TAGS[name], []
    start = time.perf_counter()
    for text, gold in sentences:
        spans, begin = [], 0
        for i, (place, tag) in enumerate(word_places(text, cut(text))):
            if place in (0, 3):  # B or S: a word starts here
                begin = i
            if place in (2, 3) and tag in mapping:  # E or S: a word ends here
                spans.append((mapping[tag], begin, i + 1))
        out.append(from_spans(spans, len(gold)))
    return out, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/msra_ner/dev.txt")
    parser.add_argument("--quick", action="store_true", help="the first 500 sentences")
    parser.add_argument("--limit", type=int, default=None)
    add_device_arg(parser, cpu_only=CPU_ONLY)
    args = parser.parse_args()
    _, device_label = resolve_device(args.device, cpu_only=CPU_ONLY)
    if not args.data.is_file():
        raise SystemExit(f"{args.data}: no such file (MSRA is in ../shared/data; --data names another)")
    sentences = read_columns(args.data, 500 if args.quick else args.limit)
    gold = [tags for _, tags in sentences]
    chars = sum(len(text) for text, _ in sentences)
    print(f"{args.data}: {len(sentences)} sentences, {chars} characters; device {device_label}")
    print(f"{'segmenter':<10} {'P':>6} {'R':>6} {'F1':>6} {'PER':>6} {'LOC':>6} {'ORG':>6} {'chars/s':>9}")
    f1 = {}
    for name in ("jieba", "thulac"):
        try:
            pred, seconds = segmenter_tags(name, sentences)
        except Exception as exc:  # a missing optional package: say so and go on
            print(f"{name:<10} unavailable: {exc}")
            continue
        m = entity_metrics(gold, pred)
        per = {t: m["per_type"].get(t, {}).get("f1", 0.0) for t in ("PER", "LOC", "ORG")}
        f1[name] = m["f1"]
        print(
            f"{name:<10} {100 * m['precision']:6.1f} {100 * m['recall']:6.1f} {100 * m['f1']:6.1f} "
            f"{100 * per['PER']:6.1f} {100 * per['LOC']:6.1f} {100 * per['ORG']:6.1f} {chars / seconds:9.0f}"
        )
    if len(f1) < 2:
        print("ratio: nan")
        return 1
    print(f"ratio: {f1['thulac'] / f1['jieba']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
