"""SetFit (Tunstall et al., 2022, "Efficient Few-Shot Learning Without Prompts"): contrastive
fine-tuning of a sentence encoder on pairs of the few labelled examples, then a classification head
fitted on the frozen embeddings.

This module is the method's model side: the classifier it trains (a BERT body read through mean
pooling, ``models/mean_pooled.py``), the pairs it trains on, and the loss. The two phases run in a
recipe of their own, ``training/setfit.py``, not in the training loop: their schedule is the pairs',
and the head is fitted in closed form.
"""

import random
from collections import Counter
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.config.schema import TuningConfig
from lmforge.errors import ConfigError, DataError
from lmforge.models.mean_pooled import MeanPooledBertForSequenceClassification, from_bert_classifier
from lmforge.tuning.base import METHODS

POSITIVE, NEGATIVE = 1.0, 0.0  # cosine-similarity targets of a pair (same label / different labels)


def make_pairs(labels: list[int], iterations: int, seed: int) -> list[tuple[int, int, float]]:
    """SetFit's pairs: ``iterations`` rounds, in each of which every example ``i`` is paired with one
    other example of its label (target 1.0) and one example of another label (target 0.0), drawn
    with ``seed``; the pairs are then shuffled. ``(i, j, target)``, indices into ``labels``.

    An example whose label has no other example gets no positive pair; there must be at least one
    positive and one negative pair in all."""
    check_labels(labels)
    rng = random.Random(seed)
    by_label: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    place = {i: k for members in by_label.values() for k, i in enumerate(members)}  # i's place in its label
    others = {label: [j for o, members in by_label.items() if o != label for j in members] for label in by_label}
    pairs: list[tuple[int, int, float]] = []
    for _ in range(iterations):
        for i, label in enumerate(labels):
            same = by_label[label]
            if len(same) > 1:  # another example of the label, uniformly: skip i's own place
                k = rng.randrange(len(same) - 1)
                pairs.append((i, same[k if k < place[i] else k + 1], POSITIVE))
            if others[label]:  # an example of another label, uniformly over those examples
                pairs.append((i, rng.choice(others[label]), NEGATIVE))
    rng.shuffle(pairs)
    return pairs


def check_labels(labels: list[int]) -> None:
    """Pairs can be drawn from examples with these labels: a positive pair needs two examples of
    one label, a negative pair examples of two labels."""
    counts = Counter(labels)
    if not any(n > 1 for n in counts.values()):
        raise DataError("data.train: tuning.method=setfit needs two examples of one label at least (positive pairs)")
    if len(counts) < 2:
        raise DataError("data.train: tuning.method=setfit needs examples of two labels at least (negative pairs)")


def check_data(labels: list[int], names: list[str], templates: int, text_pairs: bool) -> None:
    """What SetFit needs of its training data (the example ids ``labels`` of the label ``names``),
    checked before the run folder is written: templated examples need single texts and label names
    that are words ("This sentence is 0." tells the encoder nothing); pairs need two labels."""
    if templates:
        if text_pairs:
            raise ConfigError(
                "tuning.label_templates: templated examples are single texts, and this data has text pairs"
            )
        unnamed = [name for name in names if not any(ch.isalpha() for ch in name)]
        if unnamed:
            raise ConfigError(
                f"tuning.label_templates: templated examples need label names that are words, not "
                f"{', '.join(repr(n) for n in unnamed)}; name the labels (data.label_names, e.g. "
                "[negative, positive]) or set tuning.label_templates=0"
            )
    check_labels([*labels, *(i for i in range(len(names)) for _ in range(templates))])


def pair_loss(model: MeanPooledBertForSequenceClassification, left: dict, right: dict, targets: torch.Tensor):
    """SetFit's ``CosineSimilarityLoss``: the mean squared error between the cosine similarity of
    the two sides' sentence embeddings and the pair's target (1 same label, 0 different labels).
    ``left`` and ``right``: padded batches of the pairs' two sides, row by row."""
    a = model.embed(**left)  # (B, C)
    b = model.embed(**right)  # (B, C)
    cosine = F.cosine_similarity(a, b, dim=-1)  # (B,)
    return F.mse_loss(cosine, targets.to(cosine.dtype))


def check_setfit(model: nn.Module, task_type: str) -> None:
    """A one-line error unless setfit can train ``model`` for ``task_type``."""
    if task_type != "classification":
        raise ConfigError(f"tuning.method=setfit: trains text classifiers (task: classification), not '{task_type}'")
    kind = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
    if type(model).__name__ != "BertForSequenceClassification":
        raise ConfigError(
            f"tuning.method=setfit: needs a BERT-style encoder (minilm, a local BERT folder or model "
            f"{{family: transformer, arch: bert}}); this model is '{kind}'"
        )


def apply_setfit(
    model: nn.Module, config: TuningConfig, task_type: str, total_steps: int | None = None, **_: Any
) -> nn.Module:
    """The mean-pooled classifier over ``model``'s body, every weight trainable (the contrastive
    phase trains the body; the head is fitted afterwards)."""
    check_setfit(model, task_type)
    pooled = from_bert_classifier(model)
    for param in pooled.parameters():
        param.requires_grad_(True)
    return pooled


METHODS.register("setfit", apply_setfit)
