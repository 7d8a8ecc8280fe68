"""Replay draws a seeded sample from every earlier stage, as evenly as the stages allow."""

from lmforge.data.examples import TextExample
from lmforge.training.continual.replay import replay_sample, shares


def _pool(stage: int, n: int) -> list[TextExample]:
    return [TextExample(f"s{stage} {i}", label=str(i % 2), where=f"s{stage}:{i}", label_id=i % 2) for i in range(n)]


def test_shares_split_evenly_and_pass_on_what_a_small_pool_lacks():
    assert shares(10, [100, 100]) == [5, 5]
    assert shares(11, [100, 100, 100]) == [3, 4, 4]
    assert shares(10, [2, 100]) == [2, 8]
    assert shares(500, [3, 4]) == [3, 4]


def test_every_earlier_stage_is_sampled_and_the_seed_decides():
    pools = [_pool(1, 40), _pool(2, 40), _pool(3, 6)]
    drawn = replay_sample(pools, 30, seed=7)
    assert [len(rows) for rows in drawn] == [12, 12, 6]
    for stage, rows in enumerate(drawn, 1):
        assert all(ex.where.startswith(f"s{stage}:") for ex in rows)
        assert sum(ex.label_id == 0 for ex in rows) == len(rows) // 2  # balanced over the classes
    again = replay_sample(pools, 30, seed=7)
    assert [[ex.where for ex in rows] for rows in again] == [[ex.where for ex in rows] for rows in drawn]
    other = replay_sample(pools, 30, seed=8)
    assert [ex.where for ex in other[0]] != [ex.where for ex in drawn[0]]
