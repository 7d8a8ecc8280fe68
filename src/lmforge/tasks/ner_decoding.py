"""Turning a tagger's word scores into entities and numbers: the entity bias (a log-space bonus for
entity tags against O, tuned by two-fold cross-validation), entity dicts with character offsets and
confidences, and recall on entities seen and unseen in training."""

import math

import torch

from lmforge.data.tagged import TaggedExample
from lmforge.data.tagging import joiner_of, tags_to_char_spans, to_spans
from lmforge.errors import ConfigError, DataError
from lmforge.evaluation.ner import entity_metrics

BIAS_GRID = tuple(i / 4 for i in range(-4, 13))  # -1 .. 3 in steps of 0.25 (log space)


def entity_bias_row(names: list[str], bias: float) -> torch.Tensor | None:
    """A value per label to add to log-scores: ``bias`` for every entity tag, 0 for O (None for no
    bias). A positive bias trades precision for recall: each entity tag's probability is multiplied
    by e**bias against O's before decoding."""
    if not bias:
        return None
    if not math.isfinite(bias):
        raise ConfigError(f"entity bias: {bias} is not a finite number")
    if "O" not in names:
        raise ConfigError("entity bias: the label set has no O tag to weigh the entity tags against")
    return torch.tensor([0.0 if n == "O" else float(bias) for n in names])


def cross_validate_bias(
    decode, examples: list, names: list[str], scheme: str, grid: tuple[float, ...] = BIAS_GRID
) -> tuple[list, list, dict]:
    """Tune the entity bias without scoring on what it was tuned on: the sentences are split into
    the even- and odd-numbered ones; the bias with the best F1 on one half decodes the other half.
    Returns the paths and confidence of all sentences so decoded, and a record of both folds plus
    the bias best on the whole data (the one to pass to ``predict --entity-bias``, whose own F1 on
    this data is tuned, not a held-out figure). ``decode(bias, indices)`` decodes those sentences."""
    n = len(examples)
    if n < 2:
        raise DataError("--tune-entity-bias needs at least two sentences (it tunes on one half and scores the other)")
    gold = [[names[t] for t in ex.tag_ids] for ex in examples]
    halves = {"even": list(range(0, n, 2)), "odd": list(range(1, n, 2))}
    # sentences decode independently: each half once per bias, and the whole file is both halves
    decoded = {(b, h): decode(b, idx) for b in grid for h, idx in halves.items()}

    def f1(b, which: tuple[str, ...]) -> float:
        idx = [i for h in which for i in halves[h]]
        paths = [p for h in which for p in decoded[b, h][0]]
        return entity_metrics([gold[i] for i in idx], [[names[t] for t in p] for p in paths], scheme)["f1"]

    def best_of(which: tuple[str, ...]) -> tuple[float, dict]:
        scores = {b: f1(b, which) for b in grid}
        return max(grid, key=lambda b: (scores[b], -abs(b))), scores

    paths, confidence, folds = [None] * n, [None] * n, []
    for tune, held in (("even", "odd"), ("odd", "even")):
        bias, scores = best_of((tune,))
        for i, p, c in zip(halves[held], *decoded[bias, held]):
            paths[i], confidence[i] = p, c
        folds.append(
            {
                "tuned_on": f"{tune} sentences",
                "bias": bias,
                "tuned_f1": scores[bias],
                "held_out_f1": f1(bias, (held,)),
                "held_out_f1_no_bias": f1(0.0, (held,)),
            }
        )
    whole, scores = best_of(("even", "odd"))
    return (
        paths,
        confidence,
        {
            "folds": folds,
            "whole_data_bias": whole,
            "whole_data_f1": scores[whole],
            "no_bias_f1": scores[0.0],
            "grid": list(grid),
        },
    )


def seen_unseen_recall(
    examples, gold: list[list[str]], pred: list[list[str]], scheme: str, train_entities: set
) -> dict:
    """Recall of the gold entities whose (type, words) training showed as an entity, and of those it
    never did, with the unseen share: a low unseen recall means the model learnt names, not contexts."""
    found = {True: [0, 0], False: [0, 0]}  # seen -> [support, recalled]
    for ex, g, p in zip(examples, gold, pred):
        predicted = set(to_spans(p, scheme))
        for span in to_spans(g, scheme):
            counts = found[(span[0], tuple(ex.tokens[span[1] : span[2]])) in train_entities]
            counts[0] += 1
            counts[1] += span in predicted
    total = found[True][0] + found[False][0]
    return {
        "seen_recall": found[True][1] / found[True][0] if found[True][0] else 0.0,
        "unseen_recall": found[False][1] / found[False][0] if found[False][0] else 0.0,
        "unseen_entities": found[False][0],
        "unseen_share": found[False][0] / total if total else 0.0,
    }


def pad_rows(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    longest = max(max(len(r) for r in rows), 1)
    padded = torch.zeros((len(rows), longest, *rows[0].shape[1:]), dtype=rows[0].dtype)
    mask = torch.zeros((len(rows), longest), dtype=torch.bool)
    for i, r in enumerate(rows):
        padded[i, : len(r)] = r
        mask[i, : len(r)] = True
    return padded, mask


def entities_of(ex: TaggedExample, tags: list[str], confidence, scheme: str) -> list[dict]:
    """Predicted entities: character spans (with text) for raw text, word spans otherwise."""
    spans = to_spans(tags, scheme)
    if ex.raw_text is not None and ex.offsets is not None:
        found = tags_to_char_spans(ex.raw_text, ex.offsets, tags, scheme)
    else:
        joiner = joiner_of(ex.tokens)
        found = [
            {"start_token": s, "end_token": e, "label": t, "text": joiner.join(ex.tokens[s:e])} for t, s, e in spans
        ]
    if confidence is not None:
        for entity, (_, s, e) in zip(found, spans):
            entity["score"] = round(float(confidence[s:e].mean()), 6)
    return found
