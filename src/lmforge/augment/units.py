"""Texts and tagged sentences as lists of ``Unit``s, the things augmentation changes.

A unit is a word with the whitespace that follows it. In an NER sentence a whole entity is one
locked unit (token operations never touch it; mention replacement swaps it whole), so any list of
units maps back to a valid tag sequence (``to_tagged`` rebuilds the tags from the entity spans with
``from_spans``, in the data's scheme). Chinese text is cut into words by jieba, the project's
segmenter (a Chinese NER sentence has one character a token: the words of each run of non-entity
characters are units, each spelling its characters as tokens).
"""

from dataclasses import dataclass, field, replace

from lmforge._optional import require
from lmforge.data.examples import TextExample
from lmforge.data.tagged import TaggedExample
from lmforge.data.tagging import from_spans, is_cjk, to_spans, word_offsets


@dataclass
class Unit:
    word: str
    gap: str = ""  # what follows the word in the text (classification)
    entity: str | None = None  # NER: the type of the entity this unit is; None outside entities
    tokens: list[str] = field(default_factory=list)  # NER: the sentence tokens this unit spells

    @property
    def locked(self) -> bool:
        return self.entity is not None


def language_of(texts: list[str]) -> str:
    """'zh' when at least a fifth of the letters of ``texts`` (a sample) are CJK characters, else 'en'."""
    sample = "".join(texts[:200])
    letters = [ch for ch in sample if ch.isalpha()]
    cjk = sum(is_cjk(ch) for ch in letters)
    return "zh" if letters and cjk / len(letters) >= 0.2 else "en"


def _jieba_words(text: str) -> list[str]:
    jieba = require("jieba", purpose="data.augment on Chinese text (words from jieba)")
    jieba.setLogLevel(60)
    return jieba.lcut(text)


def text_units(text: str, language: str) -> tuple[str, list[Unit]]:
    """(the text before the first word, the text's units)."""
    if language == "zh":
        words = [w for w in _jieba_words(text)]
        return "", [Unit(w) for w in words]
    offsets = word_offsets(text)
    if not offsets:
        return text, []
    units = []
    for i, (start, end) in enumerate(offsets):
        nxt = offsets[i + 1][0] if i + 1 < len(offsets) else len(text)
        units.append(Unit(text[start:end], text[end:nxt]))
    return text[: offsets[0][0]], units


def units_text(head: str, units: list[Unit]) -> str:
    return head + "".join(u.word + u.gap for u in units)


def new_unit(word: str, like: Unit, language: str, tagged: bool) -> Unit:
    """A unit spelling ``word`` where ``like`` stood (same gap; NER: its tokens)."""
    gap = like.gap
    tokens = (list(word.replace(" ", "")) if language == "zh" else word.split()) if tagged else []
    return Unit(word, gap, None, tokens)


def tagged_units(example: TaggedExample, scheme: str, language: str) -> list[Unit]:
    """An NER sentence's units: each entity one locked unit, other tokens one unit each (Chinese:
    one unit per jieba word of each run of non-entity characters)."""
    tokens = example.tokens
    units: list[Unit] = []

    def outside(start: int, end: int) -> None:
        if language == "zh" and all(len(t) == 1 for t in tokens[start:end]):
            at = start
            for word in _jieba_words("".join(tokens[start:end])):
                units.append(Unit(word, "", None, tokens[at : at + len(word)]))
                at += len(word)
        else:
            units.extend(Unit(t, " ", None, [t]) for t in tokens[start:end])

    at = 0
    for type_, start, end in to_spans(example.tags or ["O"] * len(tokens), scheme):
        outside(at, start)
        span = tokens[start:end]
        units.append(Unit(("" if language == "zh" else " ").join(span), " ", type_, list(span)))
        at = end
    outside(at, len(tokens))
    return units


def to_tagged(example: TaggedExample, units: list[Unit], scheme: str, where: str) -> TaggedExample:
    tokens: list[str] = []
    spans = []
    for unit in units:
        if unit.entity is not None:
            spans.append((unit.entity, len(tokens), len(tokens) + len(unit.tokens)))
        tokens.extend(unit.tokens)
    return TaggedExample(tokens, from_spans(spans, len(tokens), scheme), where, incomplete=example.incomplete)


def to_text_example(example: TextExample, head: str, units: list[Unit], where: str) -> TextExample:
    return replace(example, text=units_text(head, units), where=where)
