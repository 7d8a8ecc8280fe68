import random

import pytest

from lmforge.data.batching import epoch_batches, inference_batches, pad_features, padding_share


def lengths(n=1000, seed=0):
    rng = random.Random(seed)
    return [rng.randint(3, 120) for _ in range(n)]


def test_epoch_is_a_seeded_permutation():
    lens = lengths()
    batches = epoch_batches(lens, 32, seed=1, epoch=0)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lens)))
    assert epoch_batches(lens, 32, seed=1, epoch=0) == batches
    assert epoch_batches(lens, 32, seed=1, epoch=1) != batches


def padding(lens, batches):
    return sum(max(lens[i] for i in b) * len(b) - sum(lens[i] for i in b) for b in batches)


def test_grouping_by_length_cuts_padding():
    lens = lengths()
    grouped = padding(lens, epoch_batches(lens, 32, 0, 0, group_by_length=True))
    plain = padding(lens, epoch_batches(lens, 32, 0, 0, group_by_length=False))
    assert grouped < plain / 5


def test_shards_are_disjoint_and_equal_in_count():
    lens = lengths(1001)
    shards = [epoch_batches(lens, 8, 0, 0, world_size=2, rank=r) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1])
    seen = [i for shard in shards for b in shard for i in b]
    assert len(seen) == len(set(seen))


def test_pad_features_and_inference_order():
    batch = pad_features([{"input_ids": [5, 6, 7], "label": 1}, {"input_ids": [8], "label": 0}], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [1, 0]
    order = inference_batches([1, 5, 3, 4], 2)
    assert order == [[1, 3], [2, 0]]


def test_inference_batches_cut_where_padding_would_dominate():
    lengths = [40, 38, 39, 37, 36, 10, 9, 11, 10, 12]
    batches = inference_batches(lengths, 32)
    assert sorted(i for b in batches for i in b) == list(range(10))  # every row, once
    assert batches == [[0, 2, 1, 3, 4], [9, 7, 5, 8], [6]]  # the short rows apart
    assert inference_batches(lengths, 32, max_waste=1.0) == [sorted(range(10), key=lambda i: -lengths[i])]
    assert inference_batches([5, 5, 5, 5, 5], 2) == [[0, 1], [2, 3], [4]]  # the batch size still holds


def test_padding_share_counts_the_tokens_padding_adds():
    assert padding_share([2, 4, 3, 3], [[0, 1], [2, 3]]) == pytest.approx(2 / 12)
    lens = lengths()
    share = padding_share(lens, epoch_batches(lens, 32, 0, 0))
    assert share == pytest.approx(padding(lens, epoch_batches(lens, 32, 0, 0)) / sum(lens))
