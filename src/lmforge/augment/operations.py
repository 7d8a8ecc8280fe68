"""Token operations on a list of units, as in EDA (Wei & Zou 2019): synonym replacement, random
insertion of a synonym, random swap and random deletion, each changing about ``p`` x the number of
words (at least one); and NER mention replacement (an entity swapped for another mention of the same
type from the training set). Locked units (entities) are never changed by token operations, so a
sentence's entities and their types survive every operation.

Each operation is pure given its ``random.Random``: the same seed gives the same result.
"""

import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

from lmforge.augment.lexicons import Synonyms
from lmforge.augment.units import Unit, new_unit
from lmforge.registry import Registry


@dataclass
class Context:
    """What an operation may use beside the units."""

    language: str
    tagged: bool  # an NER sentence: units spell tokens
    synonyms: Synonyms | None = None
    mentions: dict[str, list[list[str]]] | None = None  # NER: entity type -> training mentions (tokens)


Operation = Callable[[list[Unit], float, random.Random, Context], list[Unit]]
OPERATIONS: Registry[Operation] = Registry("augmentation", "data.augment.method")


# EDA leaves stop words alone; negations are in this list too, so "not good" never becomes "not bad"'s
# neighbour by a swap of "not". Chinese one-character words (的, 了, 不, 没, 很 ...) are the function
# words and negations there: only words of two or more characters change.
@cache
def _protected_en() -> frozenset[str]:
    # scikit-learn's list, imported when first needed: scikit-learn takes 0.8 s to import
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS) | {"n't", "'s", "'re", "'ve", "'ll", "'d", "'m"}


def _is_word(unit: Unit) -> bool:
    return not unit.locked and any(ch.isalnum() for ch in unit.word)


def changeable(unit: Unit, language: str) -> bool:
    """A word a synonym may replace: not an entity, a stop word, a clitic or a letter ("s" of "it's")."""
    if not _is_word(unit):
        return False
    if language == "zh":
        return len(unit.word) >= 2
    return len(unit.word) >= 3 and unit.word.lower() not in _protected_en()


def how_many(units: list[Unit], p: float) -> int:
    return max(1, round(p * len(units)))


def _synonym_of(unit: Unit, rng: random.Random, ctx: Context) -> str | None:
    if ctx.synonyms is None or not changeable(unit, ctx.language):
        return None
    found = ctx.synonyms(unit.word)
    if not found:
        return None
    word = rng.choice(found)
    # keep a capital first letter ("Good" -> "Great")
    return word[:1].upper() + word[1:] if unit.word[:1].isupper() and ctx.language == "en" else word


@OPERATIONS.register("synonym")
def synonym_replacement(units: list[Unit], p: float, rng: random.Random, ctx: Context) -> list[Unit]:
    out = list(units)
    order = [i for i, u in enumerate(units) if changeable(u, ctx.language)]
    rng.shuffle(order)
    left = how_many(units, p)
    for i in order:
        if left == 0:
            break
        word = _synonym_of(units[i], rng, ctx)
        if word is not None:
            out[i] = new_unit(word, units[i], ctx.language, ctx.tagged)
            left -= 1
    return out


@OPERATIONS.register("insert")
def random_insertion(units: list[Unit], p: float, rng: random.Random, ctx: Context) -> list[Unit]:
    out = list(units)
    for _ in range(how_many(units, p)):
        for _attempt in range(10):  # a word with a synonym, as EDA does
            pick = rng.choice(out) if out else None
            word = _synonym_of(pick, rng, ctx) if pick is not None else None
            if word is not None and pick is not None:
                unit = new_unit(word, pick, ctx.language, ctx.tagged)
                space = " " if ctx.language == "en" else ""
                at = rng.randint(0, len(out))
                if at == len(out):  # the new last word takes the sentence's end
                    unit, out[-1] = _with_gap(unit, out[-1].gap), _with_gap(out[-1], space)
                else:
                    unit = _with_gap(unit, space)
                out.insert(at, unit)
                break
    return out


@OPERATIONS.register("swap")
def random_swap(units: list[Unit], p: float, rng: random.Random, ctx: Context) -> list[Unit]:
    out = list(units)
    free = [i for i, u in enumerate(out) if _is_word(u)]  # punctuation stays where it is
    if len(free) < 2:
        return out
    for _ in range(how_many(units, p)):
        a, b = rng.sample(free, 2)
        # the words move, each position keeps its gap (the last word keeps the sentence's end)
        out[a], out[b] = _with_gap(out[b], out[a].gap), _with_gap(out[a], out[b].gap)
    return out


def _with_gap(unit: Unit, gap: str) -> Unit:
    return Unit(unit.word, gap, unit.entity, unit.tokens)


@OPERATIONS.register("delete")
def random_deletion(units: list[Unit], p: float, rng: random.Random, ctx: Context) -> list[Unit]:
    free = [i for i, u in enumerate(units) if _is_word(u)]  # words go, punctuation and entities stay
    if len(free) < 2:
        return list(units)
    dropped = {i for i in free if rng.random() < p}
    if not dropped:
        dropped = {rng.choice(free)}
    if len(dropped) == len(free):  # never every word
        dropped.discard(rng.choice(sorted(dropped)))
    out: list[Unit] = []
    for i, unit in enumerate(units):
        if i not in dropped:
            out.append(unit)
        elif out and not out[-1].gap and unit.gap:  # "bleak, the" less "," keeps its space
            out[-1] = _with_gap(out[-1], unit.gap)
    return out


@OPERATIONS.register("mention")
def mention_replacement(units: list[Unit], p: float, rng: random.Random, ctx: Context) -> list[Unit]:
    """Each entity, with probability ``p`` (at least one), becomes another training mention of its
    type (Dai & Adel 2020, "An Analysis of Simple Data Augmentation for Named Entity Recognition")."""
    out = list(units)
    entities = [i for i, u in enumerate(units) if u.locked]
    mentions = ctx.mentions or {}
    if not entities:
        return out
    chosen = [i for i in entities if rng.random() < p] or [rng.choice(entities)]
    for i in chosen:
        type_ = units[i].entity
        assert type_ is not None  # locked units are entities
        pool = [m for m in mentions.get(type_, []) if m != units[i].tokens]
        if pool:
            tokens = list(rng.choice(pool))
            word = ("" if ctx.language == "zh" else " ").join(tokens)
            out[i] = Unit(word, units[i].gap, type_, tokens)
    return out
