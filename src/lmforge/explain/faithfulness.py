"""Faithfulness of attributions, measured: the deletion (comprehensiveness) curve.

For each text, the tokens (words for n-gram runs) are removed in the order an attribution method
ranks them, most positive for the predicted label first, 10 % more at each step; the probability of
the label predicted for the whole text is recorded after each step. The same is done in random
orders. Attributions that point at what the model used make the probability fall faster than
random: their area over the curve (AOPC, the mean fall over the steps; DeYoung et al., 2020, call it
comprehensiveness) is larger.
"""

import random
from dataclasses import dataclass

import torch

from lmforge.explain.attribution import without_words
from lmforge.explain.classify import ClassificationExplainer

FRACTIONS = tuple(i / 10 for i in range(11))


@dataclass
class DeletionCurves:
    method: str
    texts: int
    fractions: tuple[float, ...]
    attributed: list[float]  # mean probability of the predicted label after each step
    random: list[float]

    @property
    def aopc(self) -> tuple[float, float]:
        """(attributed, random) mean fall of the probability over the steps after the first."""

        def area(curve):
            return sum(curve[0] - p for p in curve[1:]) / max(len(curve) - 1, 1)

        return area(self.attributed), area(self.random)

    def as_json(self) -> dict:
        ours, rand = self.aopc
        return {
            "method": self.method,
            "texts": self.texts,
            "fractions_removed": list(self.fractions),
            "probability_attributed_order": [round(p, 6) for p in self.attributed],
            "probability_random_order": [round(p, 6) for p in self.random],
            "aopc_attributed": round(ours, 6),
            "aopc_random": round(rand, 6),
        }

    def lines(self) -> list[str]:
        ours, rand = self.aopc
        out = [
            f"deletion curve: {self.texts} texts, tokens removed in {self.method} order vs random order "
            "(mean probability of the predicted label)",
            f"{'removed':>8}  {self.method:>22}  {'random':>8}",
        ]
        for f, a, r in zip(self.fractions, self.attributed, self.random):
            out.append(f"{f:>8.0%}  {a:>22.4f}  {r:>8.4f}")
        verdict = "faster than random" if ours > rand else "NOT faster than random"
        out.append(f"comprehensiveness (AOPC): {self.method} {ours:.4f}, random {rand:.4f}: {verdict}")
        return out


def _kept(order: list[int], count: int, fraction: float) -> set[int]:
    gone = set(order[: round(fraction * len(order))])
    return {i for i in range(count) if i not in gone}


def _torch_curves(explainer, text, pair, attribution, orders) -> list[list[float]]:
    enc = explainer.encode(text, pair)
    ids, special = enc["ids"][0], enc["special"][0]
    token_type_ids = enc["extra"].get("token_type_ids")
    positions = [i for i, s in enumerate(special.tolist()) if not s]  # the attributed tokens, in order
    place = {p: j for j, p in enumerate(positions)}  # position in ids -> index among the attributed
    rows, types = [], []
    for order in orders:
        for f in FRACTIONS:
            kept = _kept(order, len(positions), f)
            keep = [i for i in range(len(ids)) if special[i] or place[i] in kept]
            rows.append(ids[keep])
            if token_type_ids is not None:
                types.append(token_type_ids[0][keep])
    width = max(len(r) for r in rows)
    pad = explainer.tokenizer.pad_token_id or 0
    batch = torch.full((len(rows), width), pad, dtype=torch.long, device=ids.device)
    mask = torch.zeros_like(batch)
    for i, r in enumerate(rows):
        batch[i, : len(r)], mask[i, : len(r)] = r, 1
    inputs = {"input_ids": batch, "attention_mask": mask}
    if types:
        tt = torch.zeros_like(batch)
        for i, t in enumerate(types):
            tt[i, : len(t)] = t
        inputs["token_type_ids"] = tt
    label = explainer.labels.index(attribution.extra["label"])
    with torch.no_grad():
        probs = explainer.model(**inputs).logits.float().softmax(-1)[:, label].cpu().tolist()
    n = len(FRACTIONS)
    return [probs[i * n : (i + 1) * n] for i in range(len(orders))]


def _ngram_curves(explainer, text, pair, attribution, orders) -> list[list[float]]:
    offsets = attribution.offsets
    label = explainer.labels.index(attribution.extra["label"])
    texts = []
    for order in orders:
        for f in FRACTIONS:
            kept = _kept(order, len(offsets), f)
            texts.append(without_words(text, offsets, [i in kept for i in range(len(offsets))]))
    pairs = [pair] * len(texts) if pair is not None else None
    probs = explainer.model.probabilities(texts, pairs)[:, label].tolist()
    n = len(FRACTIONS)
    return [probs[i * n : (i + 1) * n] for i in range(len(orders))]


def deletion_curves(
    explainer: ClassificationExplainer,
    texts: list[str],
    pairs: list[str] | None = None,
    method: str | None = None,
    random_orders: int = 5,
    seed: int = 0,
    steps: int = 50,
) -> DeletionCurves:
    """Mean deletion curves over ``texts``: attribution order (toward each text's predicted label)
    and ``random_orders`` random orders per text, seeded."""
    method = method or explainer.methods[0]
    rng = random.Random(seed)
    attributed = [0.0] * len(FRACTIONS)
    rand = [0.0] * len(FRACTIONS)
    counted = 0
    for i, text in enumerate(texts):
        pair = pairs[i] if pairs else None
        attribution = explainer.explain(text, pair, method=method, steps=steps)
        count = len(attribution.tokens)
        if not count:
            continue
        ranked = sorted(range(count), key=lambda j: -attribution.scores[j])
        shuffled = []
        for _ in range(random_orders):
            order = list(range(count))
            rng.shuffle(order)
            shuffled.append(order)
        curves = (_ngram_curves if explainer.ngram else _torch_curves)(
            explainer, text, pair, attribution, [ranked, *shuffled]
        )
        counted += 1
        for k in range(len(FRACTIONS)):
            attributed[k] += curves[0][k]
            rand[k] += sum(c[k] for c in curves[1:]) / random_orders
    if counted:
        attributed = [a / counted for a in attributed]
        rand = [r / counted for r in rand]
    return DeletionCurves(method, counted, FRACTIONS, attributed, rand)
