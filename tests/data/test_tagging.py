import itertools
import random
import re

import pytest

from lmforge.data.tagging import (
    allowed_transitions,
    char_spans_to_tags,
    convert,
    detect_scheme,
    from_spans,
    normalize_scheme,
    repair,
    split_tag,
    tag_set,
    tags_to_char_spans,
    to_spans,
    word_offsets,
)

TYPES = ("PER", "LOC", "product-name")
SCHEMES = ("bio", "iob1", "iobes")


def random_tags(rng: random.Random, prefixes: str = "BIES") -> list[str]:
    """Any sequence at all, valid or not, over a few types."""
    return [
        "O" if rng.random() < 0.3 else f"{rng.choice(prefixes)}-{rng.choice(TYPES)}" for _ in range(rng.randint(0, 12))
    ]


def random_spans(rng: random.Random, length: int) -> list[tuple[str, int, int]]:
    """Non-overlapping spans, often touching, so IOB1's B- rule gets exercised."""
    spans, i = [], 0
    while i < length:
        if rng.random() < 0.5:
            end = rng.randint(i + 1, min(length, i + 3))
            spans.append((rng.choice(TYPES[:2]), i, end))
            i = end
        else:
            i += 1
    return spans


# ----------------------------------------------------------------------------- tags and schemes


def test_split_tag():
    assert split_tag("B-PER") == ("B", "PER")
    assert split_tag("O") == ("O", None)
    assert split_tag("I-product-name") == ("I", "product-name")
    assert split_tag("S-first_name") == ("S", "first_name")
    for bad in ("PER", "B-", "X-PER", "b-PER", "", "O-PER"):
        with pytest.raises(ValueError, match=re.escape(repr(bad))):
            split_tag(bad)


def test_normalize_scheme():
    assert normalize_scheme("BIOES") == "iobes"
    assert normalize_scheme("iob2") == "bio"
    with pytest.raises(ValueError, match="bio, iob1, iobes"):
        normalize_scheme("bilou")


def test_to_spans_lenient_reading():
    assert to_spans(["B-PER", "I-PER", "O", "B-LOC"]) == [("PER", 0, 2), ("LOC", 3, 4)]
    # An I- that cannot continue starts an entity, as in conlleval; B- after B- splits.
    assert to_spans(["O", "I-PER", "I-LOC", "B-LOC", "B-LOC"]) == [
        ("PER", 1, 2),
        ("LOC", 2, 3),
        ("LOC", 3, 4),
        ("LOC", 4, 5),
    ]
    assert to_spans(["B-X", "E-X", "E-X", "I-X", "E-X", "S-X", "I-X"], "iobes") == [
        ("X", 0, 2),
        ("X", 2, 3),
        ("X", 3, 5),
        ("X", 5, 6),
        ("X", 6, 7),
    ]
    assert to_spans([]) == []


@pytest.mark.parametrize("prefixes", ["BI", "BIES"])
def test_to_spans_matches_seqeval_get_entities(prefixes):
    seqeval = pytest.importorskip("seqeval.metrics.sequence_labeling")
    rng = random.Random(0)
    for _ in range(2000):
        tags = random_tags(rng, prefixes)
        expected = [(t, s, e + 1) for t, s, e in seqeval.get_entities(tags)]  # seqeval's end is inclusive
        assert to_spans(tags) == expected, tags


def test_from_spans_per_scheme():
    spans = [("PER", 0, 2), ("PER", 2, 3), ("LOC", 4, 5)]
    assert from_spans(spans, 6, "bio") == ["B-PER", "I-PER", "B-PER", "O", "B-LOC", "O"]
    assert from_spans(spans, 6, "iob1") == ["I-PER", "I-PER", "B-PER", "O", "I-LOC", "O"]
    assert from_spans(spans, 6, "iobes") == ["B-PER", "E-PER", "S-PER", "O", "S-LOC", "O"]
    # Touching entities of different types need no B- in IOB1.
    assert from_spans([("PER", 0, 1), ("LOC", 1, 2)], 2, "iob1") == ["I-PER", "I-LOC"]


@pytest.mark.parametrize(
    "spans, message",
    [
        ([("PER", 0, 2), ("LOC", 1, 3)], "overlaps"),
        ([("PER", 2, 5)], "outside a sequence of length 4"),
        ([("PER", 2, 2)], "empty"),
        ([("", 0, 1)], "non-empty string"),
    ],
)
def test_from_spans_rejects(spans, message):
    with pytest.raises(ValueError, match=message):
        from_spans(spans, 4)


@pytest.mark.parametrize("source, target", list(itertools.permutations(SCHEMES, 2)))
def test_conversions_round_trip(source, target):
    rng = random.Random(1)
    for _ in range(300):
        length = rng.randint(0, 10)
        spans = random_spans(rng, length)
        tags = from_spans(spans, length, source)
        assert to_spans(tags, source) == spans
        converted = convert(tags, source, target)
        assert repair(converted, target) == (converted, 0)  # the output is valid in the target
        assert convert(converted, target, source) == tags


@pytest.mark.parametrize(
    "tags, scheme, fixed, changed",
    [
        (["O", "I-PER", "I-PER"], "bio", ["O", "B-PER", "I-PER"], 1),
        (["I-PER", "I-LOC", "B-LOC"], "bio", ["B-PER", "B-LOC", "B-LOC"], 2),
        (["B-PER", "O", "I-PER", "B-PER"], "iob1", ["I-PER", "O", "I-PER", "B-PER"], 1),
        (["B-X", "I-X", "O", "I-X", "B-Y"], "iobes", ["B-X", "E-X", "O", "S-X", "S-Y"], 3),
        (["B-PER", "I-PER", "O"], "bio", ["B-PER", "I-PER", "O"], 0),
    ],
)
def test_repair(tags, scheme, fixed, changed):
    assert repair(tags, scheme) == (fixed, changed)


def test_detect_scheme():
    assert detect_scheme([["O", "B-PER", "I-PER"], ["B-LOC"]]) == "bio"
    assert detect_scheme([["I-PER", "I-PER", "B-PER", "O", "I-LOC"]]) == "iob1"
    assert detect_scheme([["B-PER", "E-PER"], ["O"]]) == "iobes"
    assert detect_scheme([["O", "S-LOC"]]) == "iobes"
    # A B- after O is not IOB1; a corpus with no entities defaults to bio.
    assert detect_scheme([["I-PER", "O", "B-PER"]]) == "bio"
    assert detect_scheme([["O", "O"], []]) == "bio"


def test_tag_set():
    assert tag_set(["PER", "LOC", "PER"], "bio") == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    assert tag_set(["X"], "bioes") == ["O", "B-X", "I-X", "E-X", "S-X"]


# ----------------------------------------------------------------------------- transitions


def _accepts(tags: list[str], labels: list[str], scheme: str) -> bool:
    first, step, last = allowed_transitions(labels, scheme)
    ids = [labels.index(tag) for tag in tags]
    return not ids or (first[ids[0]] and last[ids[-1]] and all(step[a][b] for a, b in zip(ids, ids[1:])))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_allowed_transitions_accept_exactly_the_valid_sequences(scheme):
    # Exhaustive over short sequences: the masks allow a sequence iff it needs no repair.
    labels = tag_set(["A", "B"], scheme)
    for length in range(1, 5):
        for tags in itertools.product(labels, repeat=length):
            tags = list(tags)
            assert _accepts(tags, labels, scheme) == (repair(tags, scheme)[1] == 0), tags


def test_allowed_transitions_by_hand():
    labels = ["O", "B-PER", "I-PER", "E-PER", "S-PER"]
    first, step, last = allowed_transitions(labels, "iobes")
    assert first == [True, True, False, False, True]
    assert last == [True, False, False, True, True]
    assert step[1] == [False, False, True, True, False]  # B-PER -> I-PER / E-PER only
    assert not _accepts(["O", "I-PER", "E-PER"], labels, "iobes")
    assert not _accepts(["O", "I-LOC"], ["O", "B-LOC", "I-LOC"], "bio")
    with pytest.raises(ValueError, match="E-PER"):
        allowed_transitions(labels, "bio")


# ----------------------------------------------------------------------------- raw text


def _words(text):
    return [text[s:e] for s, e in word_offsets(text)]


def test_word_offsets():
    assert _words("Barack Obama's dog didn't bark.") == ["Barack", "Obama", "'s", "dog", "did", "n't", "bark", "."]
    assert _words("我爱北京，Tokyo东京 2024年！") == [
        "我",
        "爱",
        "北",
        "京",
        "，",
        "Tokyo",
        "东",
        "京",
        "2024",
        "年",
        "！",
    ]
    assert _words("  U.S.-based e\u0301te  ") == ["U.S.", "-", "based", "e\u0301te"]
    assert _words("Apple Inc. hired Mr. Smith. He said no.") == [
        "Apple",
        "Inc.",
        "hired",
        "Mr.",
        "Smith",
        ".",
        "He",
        "said",
        "no",
        ".",
    ]
    assert word_offsets("a  bc") == [(0, 1), (3, 5)]


@pytest.mark.parametrize(
    "text, entities, tags",
    [
        (
            "Barack Obama visited Paris.",
            [{"start": 0, "end": 12, "label": "PER"}, {"start": 21, "end": 26, "label": "LOC"}],
            ["B-PER", "I-PER", "O", "B-LOC", "O"],
        ),
        (
            "我爱北京天安门，张三在上海工作。",
            [
                {"start": 2, "end": 7, "label": "LOC"},
                {"start": 8, "end": 10, "label": "PER"},
                {"start": 11, "end": 13, "label": "LOC"},
            ],
            [
                "O",
                "O",
                "B-LOC",
                "I-LOC",
                "I-LOC",
                "I-LOC",
                "I-LOC",
                "O",
                "B-PER",
                "I-PER",
                "O",
                "B-LOC",
                "I-LOC",
                "O",
                "O",
                "O",
            ],
        ),
    ],
)
@pytest.mark.parametrize("scheme", SCHEMES)
def test_char_spans_round_trip(text, entities, tags, scheme):
    words, offsets, got = char_spans_to_tags(text, entities, scheme)
    assert got == convert(tags, "bio", scheme)
    assert words == [text[s:e] for s, e in offsets]
    back = tags_to_char_spans(text, offsets, got, scheme)
    assert back == [dict(e, text=text[e["start"] : e["end"]]) for e in entities]


def test_char_span_inside_a_word_takes_the_whole_word():
    text = "Visit New Yorkshire now"
    _, offsets, tags = char_spans_to_tags(text, [{"start": 6, "end": 14, "label": "LOC"}])
    assert tags == ["O", "B-LOC", "I-LOC", "O"]
    assert tags_to_char_spans(text, offsets, tags)[0]["text"] == "New Yorkshire"


@pytest.mark.parametrize(
    "entities, message",
    [
        (
            [
                {"start": 0, "end": 5, "label": "A"},
                {"start": 6, "end": 7, "label": "A"},
                {"start": 40, "end": 52, "label": "B"},
            ],
            "entity 2 [40, 52) falls outside the text (length 26)",
        ),
        (
            [{"start": 3, "end": 7, "label": "A"}, {"start": 5, "end": 9, "label": "B"}],
            "entity 1 [5, 9) overlaps entity 0 [3, 7)",
        ),
        ([{"start": "3", "end": 7, "label": "A"}], "entity 0: start and end must be integer"),
        ([{"start": 7, "end": 7, "label": "A"}], "entity 0 [7, 7) is empty"),
        ([{"start": 0, "end": 2, "label": ""}], "entity 0: label must be a non-empty string"),
        ([{"start": 0, "end": 2}], "entity 0 must be an object with start, end and label"),
        ([{"start": 5, "end": 6, "label": "A"}], "entity 0 [5, 6) covers no word"),
        (
            [{"start": 0, "end": 2, "label": "A"}, {"start": 2, "end": 5, "label": "B"}],
            "word 'Paris' [0, 5) straddles entity 0 [0, 2) and entity 1 [2, 5)",
        ),
    ],
)
def test_char_span_errors(entities, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        char_spans_to_tags("Paris is lovely in spring.", entities)
