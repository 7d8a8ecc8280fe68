"""In-context example selection: ``random``, ``balanced`` (as even over the classes as they allow)
or ``nearest`` (the training examples most similar to each text, by sentence embeddings). Seeded
and deterministic; random and balanced examples are the same for every text, nearest ones are
per text, most similar last (closest to the text being classified)."""

import random

import torch

STRATEGIES = ("random", "balanced", "nearest")


def fixed_examples(labels: list[int], k: int, strategy: str, seed: int) -> list[int]:
    """Indices of ``k`` training examples for ``random`` or ``balanced``, in a seeded order."""
    if k <= 0:
        return []
    rng = random.Random(seed)
    if strategy == "random":
        return rng.sample(range(len(labels)), min(k, len(labels)))
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    pools = {c: rng.sample(idx, len(idx)) for c, idx in sorted(by_class.items())}
    chosen, classes = [], sorted(pools)
    while len(chosen) < min(k, len(labels)):
        for c in classes:  # one per class in turn
            if pools[c] and len(chosen) < k:
                chosen.append(pools[c].pop())
    rng.shuffle(chosen)  # no label run the model could copy
    return chosen


def nearest_examples(text_vectors: torch.Tensor, train_vectors: torch.Tensor, k: int) -> list[list[int]]:
    """Per text, the ``k`` most similar training examples (normalized vectors), most similar last."""
    if k <= 0:
        return [[] for _ in range(len(text_vectors))]
    similarity = text_vectors @ train_vectors.T  # (N, M)
    top = similarity.topk(min(k, train_vectors.shape[0]), dim=-1).indices
    return [list(reversed(row)) for row in top.tolist()]
