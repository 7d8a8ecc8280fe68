"""Experience replay: a seeded sample of every earlier stage's training examples is mixed into the
new stage's training data (the simplest rehearsal method; e.g. Rolnick et al. 2019, "Experience
Replay for Continual Learning"; Chaudhry et al. 2019, "On Tiny Episodic Memories in Continual
Learning")."""

from lmforge.data.examples import limited_sample
from lmforge.training.continual.base import CONTINUAL_METHODS, ContinualMethod
from lmforge.training.continual.context import StageContext

DEFAULT_RATIO = 0.25  # replay_ratio when neither replay_size nor replay_ratio is set


def shares(total: int, sizes: list[int]) -> list[int]:
    """``total`` split as evenly as the pools' ``sizes`` allow: a pool smaller than its share gives
    all it has, and the rest is shared by the others."""
    out = [0] * len(sizes)
    left = total
    for k, i in enumerate(sorted(range(len(sizes)), key=lambda i: sizes[i])):  # smallest pools first
        out[i] = min(sizes[i], left // (len(sizes) - k))
        left -= out[i]
    return out


def replay_sample(pools: list[list], total: int, seed: int) -> list[list]:
    """A seeded sample of ``total`` examples over the ``pools`` (one per earlier stage), as even over
    them as they allow and, within a pool, over its classes (``limited_sample``)."""
    counts = shares(total, [len(pool) for pool in pools])
    return [limited_sample(pool, n, seed + i) if n else [] for i, (pool, n) in enumerate(zip(pools, counts))]


@CONTINUAL_METHODS.register("replay")
class Replay(ContinualMethod):
    """Mix ``replay_size`` (or ``replay_ratio`` x the new training set) earlier examples in."""

    name = "replay"

    def replay(self, stage: StageContext) -> list:
        settings = stage.settings
        if settings.replay_size is not None:
            total = settings.replay_size
        else:
            total = round((settings.replay_ratio or DEFAULT_RATIO) * len(stage.train))
        pools = [s.examples("train", stage.labels) for s in stage.earlier]
        drawn = replay_sample(pools, total, stage.config.train.seed)
        stage.facts["replay"] = [
            {"stage": s.number, "run": s.entry["run"], "examples": len(rows), "of": len(s.data.train)}
            for s, rows in zip(stage.earlier, drawn)
        ]
        stage.facts["replayed"] = [ex.where for rows in drawn for ex in rows]
        return [ex for rows in drawn for ex in rows]

    def summary(self, stage: StageContext) -> dict:
        settings = stage.settings
        return {
            "replay_size": settings.replay_size,
            "replay_ratio": settings.replay_ratio,
            "replay": stage.facts.get("replay", []),
        }
