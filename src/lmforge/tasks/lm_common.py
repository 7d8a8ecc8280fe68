"""What the language-modelling tasks (masked and causal) share: a seeded hold-out split of raw
rows, and token-level loss, perplexity and accuracy over a set of batches."""

import math
import random

import torch.nn.functional as F

from lmforge.data.examples import LabelSet
from lmforge.data.readers import guarded
from lmforge.data.task_data import TaskData


def hold_out(rows: list, fraction: float, seed: int) -> tuple[list, list, str]:
    """(train, validation, note): a seeded random ``fraction`` of ``rows`` held out."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    held = set(order[: max(1, round(len(rows) * fraction))])
    validation = [row for i, row in enumerate(rows) if i in held]
    train = [row for i, row in enumerate(rows) if i not in held]
    return train, validation, f"held out {len(validation)} of {len(rows)} rows for validation"


def load_splits(config, problems, read):
    """Train, validation (a file, or ``data.split`` held out) and test rows, each read by
    ``read(source, data, problems)``; language-model tasks have no label set."""
    data = config.data
    train = guarded(problems, read, data.train, data, problems)
    validation, notes = [], []
    if data.split is not None:
        train, validation, note = hold_out(train, data.split, config.train.seed)
        notes.append(note)
    elif data.validation is not None:
        validation = guarded(problems, read, data.validation, data, problems)
    test = guarded(problems, read, data.test, data, problems) if data.test is not None else []
    return TaskData(train, validation, test, LabelSet([], {}), notes)


def device_batches(collate, features: list[dict], batch_size: int, device):
    """Evaluation batches in order, collated and moved to ``device`` one at a time."""
    for start in range(0, len(features), batch_size):
        yield {k: v.to(device) for k, v in collate(features[start : start + batch_size]).items()}


def token_metrics(batches, score) -> dict:
    """Loss (mean cross-entropy per scored token), perplexity and accuracy; ``score(batch)`` gives
    the (N, V) logits and (N,) gold ids of one batch."""
    total, correct, count = 0.0, 0, 0
    for batch in batches:
        logits, gold = score(batch)
        total += F.cross_entropy(logits.float(), gold, reduction="sum").item()
        correct += (logits.argmax(-1) == gold).sum().item()
        count += len(gold)
    loss = total / count if count else math.nan
    return {
        "loss": loss,
        "perplexity": math.exp(min(loss, 50)) if count else math.nan,
        "accuracy": correct / count if count else math.nan,
        "tokens": count,
    }
