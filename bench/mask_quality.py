"""Precision and recall of ``lmforge mask`` on a labelled test set, against the regular expressions
a user would write without checks.

- Rule types (e-mail, phone, Chinese ID, bank card, IP): 600 generated English and Chinese sentences,
  each with one item in a realistic frame (``"请拨打 {phone} 联系"``, ``"card {card} expires"``),
  and 400 negatives with numbers that only look alike: dates, times, versions, amounts, order
  numbers, Chinese IDs with a wrong check digit, card numbers failing Luhn. Seeded: the same set
  every run.
- Names (person, place, organization; with ``--ner RUN``): the gold PER/LOC/ORG spans of the CoNLL
  2003 validation sentences (``--conll FILE``, default ../shared/data/conll2003/valid.txt), the
  words joined by spaces; a predicted span counts when type and characters match exactly.

    python bench/mask_quality.py                              # rules only
    python bench/mask_quality.py --ner runs/conll --limit 500  # and names from an NER run

Prints precision, recall and F1 per type for lmforge and for the naive baseline (``\\S+@\\S+``,
runs of 11-19 digits for phones, IDs and cards, four dotted numbers for IPs). The last line is
``ratio: X`` = lmforge's micro F1 over the baseline's on the rule types.
"""

import argparse
import random
import re
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from lmforge.masking.mask import Masker  # noqa: E402
from lmforge.masking.rules import ID_CHECK, ID_WEIGHTS, luhn  # noqa: E402

FRAMES = {
    "email": ["Please write to {x} before Friday.", "联系邮箱：{x}，谢谢。", "cc: {x}; bcc none"],
    "phone": ["请拨打 {x} 联系客服。", "Call me on {x} after six.", "手机号{x}已注册"],
    "cn_id": ["身份证号码{x}，请核对。", "ID no. {x} on file", "证件号：{x}"],
    "bank_card": ["card {x} expires 09/27", "银行卡号 {x} 已绑定", "pay with {x} please"],
    "ip": ["login from {x} blocked", "服务器地址 {x} 无响应", "ping {x} timed out"],
}
NEGATIVES = [
    "The meeting is on 2024-05-06 at 12:30:45.",
    "Upgrade to version 1.2.3.4.5 or 10.0.22621.",
    "Total 1,234,567.89 yuan, order 20240506123.",
    "邮编100871，门牌号1203室，2024年5月6日",
    "Invoice INV-2024-000123 of 3,500 USD",
    "pi is 3.14159 and e is 2.71828",
    "Room 4521, floor 12, building 7",
]


def _id(rng, valid=True):
    body = f"{rng.randint(110000, 659999)}{rng.randint(1950, 2005)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}{rng.randint(0, 999):03d}"
    check = ID_CHECK[sum(int(d) * w for d, w in zip(body, ID_WEIGHTS)) % 11]
    return body + (check if valid else next(c for c in "0123456789X" if c != check))


def _card(rng, valid=True):
    digits = "".join(str(d) for d in [rng.choice([4, 5, 6])] + [rng.randint(0, 9) for _ in range(14)])
    last = next(str(d) for d in range(10) if luhn(digits + str(d)) == valid)
    number = digits + last
    return number if rng.random() < 0.5 else " ".join(number[i : i + 4] for i in range(0, 16, 4))


def _item(kind, rng):
    if kind == "email":
        return f"{rng.choice(['li.wei', 'jane_doe', 'ops+alerts', 'x9'])}@{rng.choice(['example.com', 'mail.qq.com', 'corp.co.uk'])}"
    if kind == "phone":
        mobile = f"1{rng.choice('3456789')}{rng.randint(0, 9)}{rng.randint(10**7, 10**8 - 1)}"
        return rng.choice(
            [
                mobile,
                f"+86 {mobile[:3]}-{mobile[3:7]}-{mobile[7:]}",
                f"+1 ({rng.randint(200, 999)}) {rng.randint(200, 999)}-{rng.randint(1000, 9999)}",
                f"020 {rng.randint(1000, 9999)} {rng.randint(1000, 9999)}",
            ]
        )
    if kind == "cn_id":
        return _id(rng)
    if kind == "bank_card":
        return _card(rng)
    return rng.choice(
        [
            f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
            f"2001:db8::{rng.randint(1, 9999):x}:{rng.randint(1, 65535):x}",
        ]
    )


def rule_set(seed=0):
    rng = random.Random(seed)
    rows = []
    for _ in range(120):
        for kind, frames in FRAMES.items():
            item = _item(kind, rng)
            frame = rng.choice(frames)
            start = frame.index("{x}")
            rows.append((frame.replace("{x}", item), {(start, start + len(item), kind)}))
    for i in range(400):
        text = rng.choice(NEGATIVES)
        if i % 3 == 0:
            text += f" 身份证号码{_id(rng, valid=False)}"
        elif i % 3 == 1:
            text += f" card {_card(rng, valid=False)}"
        rows.append((text, set()))
    return rows


NAIVE = [
    ("email", re.compile(r"\S+@\S+")),
    ("ip", re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")),
    ("cn_id", re.compile(r"\d{17}[\dXx]")),
    ("bank_card", re.compile(r"\d(?:[ -]?\d){12,18}")),
    ("phone", re.compile(r"\+?\d[\d ()-]{9,}\d")),
]


def naive(text):
    found, taken = set(), [False] * len(text)
    for kind, pattern in NAIVE:
        for m in pattern.finditer(text):
            if not any(taken[m.start() : m.end()]):
                found.add((m.start(), m.end(), kind))
                taken[m.start() : m.end()] = [True] * (m.end() - m.start())
    return found


def score(rows, predicted):
    tp, fp, fn = Counter(), Counter(), Counter()
    for (_, gold), pred in zip(rows, predicted):
        for span in pred:
            (tp if span in gold else fp)[span[2]] += 1
        for span in gold - pred:
            fn[span[2]] += 1
    return tp, fp, fn


def table(name, tp, fp, fn, kinds):
    print(f"\n{name}\n{'type':<14}{'precision':>10}{'recall':>8}{'F1':>8}{'items':>7}")
    for kind in kinds:
        p = tp[kind] / (tp[kind] + fp[kind]) if tp[kind] + fp[kind] else 0.0
        r = tp[kind] / (tp[kind] + fn[kind]) if tp[kind] + fn[kind] else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        print(f"{kind:<14}{p:>10.3f}{r:>8.3f}{f:>8.3f}{tp[kind] + fn[kind]:>7}")
    t, f_, n = sum(tp[k] for k in kinds), sum(fp[k] for k in kinds), sum(fn[k] for k in kinds)
    micro = 2 * t / (2 * t + f_ + n) if t else 0.0
    print(f"{'micro F1':<14}{micro:>26.3f}")
    return micro


def conll_names(path: Path, limit: int):
    rows, words, tags = [], [], []
    for line in path.read_text(encoding="utf-8").splitlines() + [""]:
        parts = line.split()
        if parts and not line.startswith("-DOCSTART-"):
            words.append(parts[0])
            tags.append(parts[-1])
            continue
        if words:
            text, spans, current = "", set(), None
            offsets = []
            for w in words:
                offsets.append((len(text) + (1 if text else 0), 0))
                text += (" " if text else "") + w
                offsets[-1] = (offsets[-1][0], len(text))
            kinds = {"PER": "person", "LOC": "place", "ORG": "organization"}
            for i, tag in enumerate(tags + ["O"]):
                if current and not tag.startswith("I-"):
                    spans.add((current[0], offsets[i - 1][1], current[1]))
                    current = None
                if tag.startswith("B-") and tag[2:] in kinds:
                    current = (offsets[i][0], kinds[tag[2:]])
            rows.append((text, spans))
            words, tags = [], []
        if len(rows) >= limit:
            break
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ner", help="an NER run (CoNLL labels PER/LOC/ORG) to measure names with")
    parser.add_argument("--conll", default=str(Path(__file__).resolve().parents[2] / "shared/data/conll2003/valid.txt"))
    parser.add_argument("--limit", type=int, default=500)
    args = parser.parse_args()
    rows = rule_set()
    masker = Masker(("email", "phone", "cn_id", "bank_card", "ip"))
    ours = [{(s.start, s.end, s.type) for s in spans} for spans in masker.find([t for t, _ in rows])]
    kinds = list(FRAMES)
    print(
        f"rule set: {len(rows)} sentences ({sum(len(g) for _, g in rows)} items, {sum(not g for _, g in rows)} negatives)"
    )
    mine = table("lmforge mask", *score(rows, ours), kinds)
    base = table("naive regular expressions", *score(rows, [naive(t) for t, _ in rows]), kinds)
    if args.ner:
        names = conll_names(Path(args.conll), args.limit)
        tagger = Masker(("person", "place", "organization"), ner_run=args.ner)
        found = [{(s.start, s.end, s.type) for s in spans} for spans in tagger.find([t for t, _ in names])]
        table(
            f"names: {args.ner} on {len(names)} CoNLL sentences",
            *score(names, found),
            ["person", "place", "organization"],
        )
    print(f"ratio: {mine / base:.2f}")


if __name__ == "__main__":
    main()
