"""Entity tag schemes (BIO/IOB2, IOB1, IOBES), entity spans, and raw text <-> words with offsets.

A tag is ``"O"`` or ``"<prefix>-<type>"`` with prefix ``B`` (begin), ``I`` (inside), ``E`` (end) or
``S`` (single); the type is everything after the first ``-``, so ``"B-product-name"`` has type
``product-name``. Schemes (Ramshaw & Marcus 1995; Tjong Kim Sang & Veenstra 1999):

- ``bio`` (IOB2): every entity starts with ``B-``, continues with ``I-``.
- ``iob1``: entities are ``I-``; ``B-`` only starts an entity that directly follows one of the
  same type (CoNLL-2003's original files).
- ``iobes`` (alias ``bioes``): ``S-`` for one-token entities, else ``B- I-* E-``.

Tags are read into spans the lenient way ``conlleval`` and ``seqeval``'s default mode read them
(``seqeval.metrics.sequence_labeling.get_entities``), whatever the scheme: an ``I-``/``E-`` that
cannot continue the open entity starts a new one instead of being dropped. Reading, repairing and
scoring therefore all agree on what the entities of a sequence are.

Spans are ``(type, start, end)`` with ``end`` exclusive, in token positions.
"""

import bisect
import re
import unicodedata
from collections.abc import Iterable

SCHEMES = ("bio", "iob1", "iobes")
_ALIASES = {"bio": "bio", "iob2": "bio", "iob1": "iob1", "iobes": "iobes", "bioes": "iobes"}
_PREFIXES = {"bio": ("B", "I"), "iob1": ("B", "I"), "iobes": ("B", "I", "E", "S")}

Span = tuple[str, int, int]
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def joiner_of(tokens: list[str]) -> str:
    """How a sentence's tokens join into text: nothing between Chinese characters, else a space."""
    return "" if tokens and sum(bool(_HAN.match(t)) for t in tokens) > len(tokens) / 2 else " "


def sentence_text(tokens: list[str]) -> str:
    """A tokenized sentence as running text (Chinese characters joined, other tokens spaced)."""
    return joiner_of(tokens).join(tokens)


def normalize_scheme(name: str) -> str:
    """The canonical scheme name for ``name`` (case-insensitive; ``bioes`` -> ``iobes``,
    ``iob2`` -> ``bio``)."""
    key = name.lower() if isinstance(name, str) else name
    if key not in _ALIASES:
        raise ValueError(
            f"unknown tag scheme {name!r}: expected one of {', '.join(SCHEMES)} "
            "(or the aliases iob2 = bio, bioes = iobes)"
        )
    return _ALIASES[key]


def split_tag(tag: str) -> tuple[str, str | None]:
    """``"B-PER"`` -> ``("B", "PER")``, ``"O"`` -> ``("O", None)``; split on the first ``-`` only."""
    if tag == "O":
        return "O", None
    prefix, dash, type_ = tag.partition("-") if isinstance(tag, str) else ("", "", "")
    if not dash or prefix not in ("B", "I", "E", "S") or not type_:
        raise ValueError(
            f"invalid tag {tag!r}: expected 'O' or B-, I-, E- or S- followed by an entity type, e.g. 'B-PER'"
        )
    return prefix, type_


# ----------------------------------------------------------------------------- reading and writing


def _ends_before(prev_prefix: str, prefix: str, open_type: str, type_: str | None) -> bool:
    """Whether the entity open at the previous token ends before the current one (conlleval's
    ``endOfChunk`` rule, which seqeval copies)."""
    return prev_prefix in ("E", "S") or prefix in ("B", "S", "O") or type_ != open_type


def to_spans(tags: list[str], scheme: str = "bio") -> list[Span]:
    """Entities of one sentence as ``(type, start, end_exclusive)``, read leniently.

    Every non-``O`` tag belongs to an entity: it continues the open entity when the previous tag is
    ``B-``/``I-`` of the same type and the current one is ``I-``/``E-``; otherwise it starts a new
    one. Equal to ``seqeval``'s ``get_entities`` (with exclusive ends) for every scheme; ``scheme``
    is only checked, since that reading does not depend on it.
    """
    normalize_scheme(scheme)
    spans: list[Span] = []
    start: int | None = None
    open_type, prev_prefix = "", "O"  # open_type: the open entity's (read only while one is open)
    for i, tag in enumerate(tags):
        prefix, type_ = split_tag(tag)
        if start is not None and _ends_before(prev_prefix, prefix, open_type, type_):
            spans.append((open_type, start, i))
            start = None
        if start is None and prefix != "O":
            assert type_ is not None  # every tag but "O" has a type (split_tag)
            start, open_type = i, type_
        prev_prefix = prefix
    if start is not None:
        spans.append((open_type, start, len(tags)))
    return spans


def _checked_spans(spans: Iterable[Span], length: int) -> list[Span]:
    """Spans sorted by start, after checking they are in range and do not overlap."""
    ordered = sorted(spans, key=lambda span: (span[1], span[2]))
    prev_end = 0
    for type_, start, end in ordered:
        if not isinstance(type_, str) or not type_:
            raise ValueError(f"span ({type_!r}, {start}, {end}): the type must be a non-empty string")
        if not (0 <= start < end <= length):
            raise ValueError(f"span ({type_!r}, {start}, {end}) is empty or outside a sequence of length {length}")
        if start < prev_end:
            raise ValueError(f"span ({type_!r}, {start}, {end}) overlaps an earlier span ending at {prev_end}")
        prev_end = end
    return ordered


def from_spans(spans: Iterable[Span], length: int, scheme: str = "bio") -> list[str]:
    """The valid tag sequence of ``length`` tokens in ``scheme`` whose entities are ``spans``."""
    scheme = normalize_scheme(scheme)
    tags = ["O"] * length
    prev: Span | None = None
    for type_, start, end in _checked_spans(spans, length):
        tags[start:end] = [f"I-{type_}"] * (end - start)
        if scheme == "bio":
            tags[start] = f"B-{type_}"
        elif scheme == "iobes":
            tags[start] = f"S-{type_}" if end - start == 1 else f"B-{type_}"
            if end - start > 1:
                tags[end - 1] = f"E-{type_}"
        elif prev is not None and prev[2] == start and prev[0] == type_:
            # IOB1 spends a B- only where two same-type entities touch; I- alone would merge them.
            tags[start] = f"B-{type_}"
        prev = (type_, start, end)
    return tags


def convert(tags: list[str], source: str, target: str) -> list[str]:
    """Rewrite a sentence's tags from scheme ``source`` into scheme ``target``."""
    return from_spans(to_spans(tags, source), len(tags), target)


def repair(tags: list[str], scheme: str = "bio") -> tuple[list[str], int]:
    """The valid sequence in ``scheme`` with the same (leniently read) entities, and how many tags
    changed: ``["O", "I-PER", "I-PER"]`` -> ``(["O", "B-PER", "I-PER"], 1)``."""
    fixed = convert(tags, scheme, scheme)
    return fixed, sum(a != b for a, b in zip(tags, fixed))


def detect_scheme(sequences: Iterable[list[str]]) -> str:
    """Guess the scheme of a corpus: ``iobes`` if any ``E-``/``S-`` tag appears; ``iob1`` if some
    entity starts with ``I-`` and ``B-`` only ever separates two touching entities of one type;
    ``bio`` otherwise (including a corpus with no entities)."""
    b_starts = i_starts = False
    for tags in sequences:
        prev_prefix, prev_type = "O", None
        for tag in tags:
            prefix, type_ = split_tag(tag)
            if prefix in ("E", "S"):
                return "iobes"
            continues = prev_prefix in ("B", "I") and prev_type == type_
            b_starts |= prefix == "B" and not continues
            i_starts |= prefix == "I" and not continues
            prev_prefix, prev_type = prefix, type_
    return "iob1" if i_starts and not b_starts else "bio"


# ----------------------------------------------------------------------------- label sets for models


def tag_set(types: Iterable[str], scheme: str) -> list[str]:
    """Every label of ``scheme`` for ``types``: ``"O"``, then per type (sorted) its prefixes in
    B, I(, E, S) order. The order is stable so label ids do not change between runs."""
    prefixes = _PREFIXES[normalize_scheme(scheme)]
    labels = ["O"]
    for type_ in sorted(set(types)):
        labels.extend(f"{prefix}-{type_}" for prefix in prefixes)
    for label in labels:
        split_tag(label)
    return labels


def _transition_ok(prev: tuple[str, str | None], cur: tuple[str, str | None], scheme: str) -> bool:
    (p_prefix, p_type), (c_prefix, c_type) = prev, cur
    same_open = p_prefix in ("B", "I") and p_type == c_type
    if scheme == "bio":
        return c_prefix != "I" or same_open
    if scheme == "iob1":
        return c_prefix != "B" or same_open
    # IOBES: an open entity (after B-/I-) must go on with I-/E- of its type; a closed one must not.
    if p_prefix in ("B", "I"):
        return c_prefix in ("I", "E") and same_open
    return c_prefix in ("B", "S", "O")


def allowed_transitions(labels: list[str], scheme: str) -> tuple[list[bool], list[list[bool]], list[bool]]:
    """``(first, step, last)``: which labels may start a valid sequence of ``scheme``, whether
    ``labels[j]`` may follow ``labels[i]`` (``step[i][j]``), and which may end one. Used to mask
    CRF Viterbi decoding so it can only output valid sequences."""
    scheme = normalize_scheme(scheme)
    parsed = [split_tag(label) for label in labels]
    for label, (prefix, _) in zip(labels, parsed):
        if prefix != "O" and prefix not in _PREFIXES[scheme]:
            raise ValueError(f"label {label!r} has no place in the {scheme} scheme")
    outside = ("O", None)
    first = [_transition_ok(outside, cur, scheme) for cur in parsed]
    step = [[_transition_ok(prev, cur, scheme) for cur in parsed] for prev in parsed]
    last = [_transition_ok(prev, outside, scheme) for prev in parsed]
    return first, step, last


# ----------------------------------------------------------------------------- raw text and offsets

# Code point ranges written one character per word: CJK text has no spaces, and Chinese NER corpora
# (MSRA, Weibo, OntoNotes-zh) are annotated character by character. Kana are included so Japanese
# is cut the same way rather than into whole unspaced phrases.
_CJK_RANGES = (
    (0x2E80, 0x2FDF),  # CJK radicals, Kangxi radicals
    (0x3000, 0x303F),  # CJK symbols and punctuation (、。「」)
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x3400, 0x4DBF),  # CJK Unified Ideographs Extension A
    (0x4E00, 0x9FFF),  # CJK Unified Ideographs
    (0xF900, 0xFAFF),  # CJK Compatibility Ideographs
    (0xFF00, 0xFFEF),  # Halfwidth and fullwidth forms (，！（）０-９)
    (0x20000, 0x3134F),  # Extensions B-G and compatibility supplement
)
_APOSTROPHES = ("'", "\u2019")  # typewriter and typographic
_CLITICS = ("s", "re", "ve", "ll", "d", "m")


def is_cjk(ch: str) -> bool:
    code = ord(ch)
    return any(lo <= code <= hi for lo, hi in _CJK_RANGES)


def _is_word_char(ch: str) -> bool:
    # str.isalnum misses combining marks (the accent of a decomposed "é", Devanagari vowel signs),
    # which would otherwise cut words in two.
    return (ch.isalnum() or ch == "_" or unicodedata.category(ch).startswith("M")) and not is_cjk(ch)


def _word_end(text: str, i: int) -> int:
    while i < len(text) and _is_word_char(text[i]):
        i += 1
    return i


def _split_word(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """The word ``text[start:end]`` plus a Penn Treebank clitic right after it, split the way
    CoNLL English is: ``Obama's`` -> ``Obama`` ``'s``; ``don't`` -> ``do`` ``n't``."""
    if end >= len(text) or text[end] not in _APOSTROPHES:
        return [(start, end)]
    clitic_end = _word_end(text, end + 1)
    clitic = text[end + 1 : clitic_end].lower()
    if clitic == "t" and end - start > 1 and text[end - 1] in "nN":
        return [(start, end - 1), (end - 1, clitic_end)]
    if clitic in _CLITICS:
        return [(start, end), (end, clitic_end)]
    return [(start, end)]


# Acronyms (U.S., U.K.) and common abbreviations keep their period, as in CoNLL-2003 ("Inc.").
_ACRONYM = re.compile(r"(?:[^\W\d_]\.){2,}")
ABBREVIATIONS = {
    "inc",
    "corp",
    "co",
    "ltd",
    "plc",
    "mr",
    "mrs",
    "ms",
    "dr",
    "prof",
    "st",
    "jr",
    "sr",
    "vs",
    "gen",
    "gov",
    "sen",
    "rep",
    "mt",
    "ft",
    "jan",
    "feb",
    "aug",
    "sept",
    "oct",
    "nov",
    "dec",
}


def word_offsets(text: str) -> list[tuple[int, int]]:
    """Cut ``text`` into words as ``(start, end)`` character offsets, the way CoNLL English was
    tokenised, simplified: whitespace separates; each CJK character is a word; a run of letters,
    digits, marks and ``_`` is a word, with a clitic after it (``'s``, ``'re``, ``'ve``, ``'ll``,
    ``'d``, ``'m``, ``n't``) a word of its own; acronyms (``U.S.``) and common abbreviations
    (``Inc.``, ``Mr.``) keep their period; any other character is a word by itself.
    """
    offsets: list[tuple[int, int]] = []
    i = 0
    while i < len(text):
        if text[i].isspace():
            i += 1
        elif (acronym := _ACRONYM.match(text, i)) and not is_cjk(text[i]):
            offsets.append((i, acronym.end()))
            i = acronym.end()
        elif _is_word_char(text[i]):
            pieces = _split_word(text, i, _word_end(text, i))
            start, end = pieces[-1]
            if text[end : end + 1] == "." and text[start:end].lower() in ABBREVIATIONS:
                pieces[-1] = (start, end + 1)
            offsets.extend(pieces)
            i = offsets[-1][1]
        else:
            offsets.append((i, i + 1))
            i += 1
    return offsets


def _checked_entities(text: str, entities: list[dict]) -> list[tuple[int, int, int, str]]:
    """``(index, start, end, label)`` per entity, sorted by start, after checking each one and that
    no two overlap. Entities are named by their index in the list, counted from 0."""
    rows = []
    for k, ent in enumerate(entities):
        if not isinstance(ent, dict) or not {"start", "end", "label"} <= ent.keys():
            raise ValueError(f"entity {k} must be an object with start, end and label, got {ent!r}")
        start, end, label = ent["start"], ent["end"], ent["label"]
        # bool is an int subclass, but true/false in a JSON file is a mistake, not an offset.
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in (start, end)):
            raise ValueError(f"entity {k}: start and end must be integer character offsets, got {start!r} and {end!r}")
        if not isinstance(label, str) or not label:
            raise ValueError(f"entity {k}: label must be a non-empty string, got {label!r}")
        if start >= end:
            raise ValueError(f"entity {k} [{start}, {end}) is empty: start must be less than end")
        if start < 0 or end > len(text):
            raise ValueError(f"entity {k} [{start}, {end}) falls outside the text (length {len(text)})")
        rows.append((k, start, end, label))
    rows.sort(key=lambda row: (row[1], row[2]))
    for (k0, s0, e0, _), (k1, s1, e1, _) in zip(rows, rows[1:]):
        if s1 < e0:
            raise ValueError(f"entity {k1} [{s1}, {e1}) overlaps entity {k0} [{s0}, {e0})")
    return rows


def char_spans_to_tags(
    text: str, entities: list[dict], scheme: str = "bio"
) -> tuple[list[str], list[tuple[int, int]], list[str]]:
    """Words of ``text`` (see ``word_offsets``), their offsets, and their tags for character-span
    ``entities`` (``{"start", "end", "label"}``, ``end`` exclusive, as annotation tools export).

    A word belongs to the entity it overlaps, so a span cutting through a word grows to the whole
    word. A word overlapping two entities cannot be tagged and is an error, as is an entity that
    covers only whitespace.
    """
    if not isinstance(text, str):
        raise ValueError(f"text must be a string, got {type(text).__name__}")
    offsets = word_offsets(text)
    starts, ends = [s for s, _ in offsets], [e for _, e in offsets]
    spans: list[Span] = []
    prev: tuple[int, int, int] | None = None
    for k, start, end, label in _checked_entities(text, entities):
        # Words are sorted and disjoint: those overlapping [start, end) are a contiguous run.
        first, stop = bisect.bisect_right(ends, start), bisect.bisect_left(starts, end)
        if first >= stop:
            raise ValueError(f"entity {k} [{start}, {end}) covers no word, only whitespace")
        if spans and first < spans[-1][2]:
            assert prev is not None  # the entity of spans[-1]
            k0, s0, e0 = prev
            ws, we = offsets[first]
            raise ValueError(
                f"word {text[ws:we]!r} [{ws}, {we}) straddles entity {k0} [{s0}, {e0}) "
                f"and entity {k} [{start}, {end}); split the word or merge the entities"
            )
        spans.append((label, first, stop))
        prev = (k, start, end)
    tags = from_spans(spans, len(offsets), scheme)
    return [text[s:e] for s, e in offsets], offsets, tags


def tags_to_char_spans(text: str, offsets: list[tuple[int, int]], tags: list[str], scheme: str = "bio") -> list[dict]:
    """Entities of a tagged sentence as character spans of ``text``: ``{"start", "end", "label",
    "text"}``, from the start of the entity's first word to the end of its last."""
    if len(offsets) != len(tags):
        raise ValueError(f"{len(offsets)} word offsets but {len(tags)} tags")
    out = []
    for label, first, end in to_spans(tags, scheme):
        start, stop = offsets[first][0], offsets[end - 1][1]
        out.append({"start": start, "end": stop, "label": label, "text": text[start:stop]})
    return out
