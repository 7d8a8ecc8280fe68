"""Lexicon features: word lists read in every form, matches and B/M/E/S places by hand, the lexicon
saved with the weights, bad input named."""

import pytest
import torch

from lmforge.errors import ConfigError, DataError
from lmforge.models.lexicon import MAX_WORD_TOKENS, LexiconFeatures, lexicon_file, lexicon_tensors, read_lexicon
from lmforge.models.lstm_encoder import LstmConfig, LstmForTokenClassification
from lmforge.tokenization.wordpiece import train_wordpiece

TEXTS = ["北京大学在北京", "张三去上海", "上海大学很大"]


@pytest.fixture(scope="module")
def tokenizer():
    return train_wordpiece(TEXTS, vocab_size=100, lowercase=False)


def test_read_lexicon_forms(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text(
        "北京 300 ns\n上海 ns\n大学\n北京大学 20 nt\n\n北京 5 n\n大学 12\n小学 3.5\n中学 1e3\n", encoding="utf-8"
    )
    # word freq tag | word tag | word | repeated word (first wins) | word freq (no tag), also decimal
    assert read_lexicon(path) == [
        ("北京", "ns"),
        ("上海", "ns"),
        ("大学", "word"),
        ("北京大学", "nt"),
        ("小学", "word"),
        ("中学", "word"),
    ]


def test_read_lexicon_errors(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("北京 3 ns\n上海 1 ns extra\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.txt:2: .*4 fields"):
        read_lexicon(bad)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match="no words"):
        read_lexicon(empty)
    with pytest.raises(ConfigError, match="model.lexicon: no such file"):
        lexicon_file(str(tmp_path / "missing.txt"))


def test_lexicon_tensors_drop_what_the_vocabulary_cannot_spell(tokenizer, monkeypatch):
    monkeypatch.setattr("lmforge.models.lexicon.MAX_TAGS", 1)
    entries = [("北京", "ns"), ("上海", "ns"), ("北京大学", "nt"), ("广州", "ns"), ("张三", "nr")]
    words, tags, names = lexicon_tensors(entries, tokenizer)
    assert names == ["ns", "other"]  # ns has 3 words (2 spellable); nt and nr share "other"
    assert words.shape == (4, MAX_WORD_TOKENS)  # 广州: neither character is in the vocabulary
    spelt = [tokenizer.decode([i for i in row if i >= 0]).replace(" ", "") for row in words.tolist()]
    assert spelt == ["北京", "上海", "北京大学", "张三"]
    assert tags.tolist() == [0, 0, 1, 1]
    assert (words[0, 2:] == -1).all()


def features_for(tokenizer, entries):
    words, tags, names = lexicon_tensors(entries, tokenizer)
    features = LexiconFeatures(len(words), len(names), len(tokenizer))
    features.load(words, tags)
    return features, names


def test_matches_and_places_by_hand(tokenizer, monkeypatch):
    features, names = features_for(tokenizer, [("北京", "ns"), ("北京大学", "nt"), ("大学", "n"), ("在", "p")])
    assert names == ["n", "ns", "nt", "p"]  # one word each: by name
    tag = {n: i for i, n in enumerate(names)}
    ids = tokenizer("北京大学在北京", add_special_tokens=False)["input_ids"]
    assert len(ids) == 7
    assert sorted(features.matches(ids)) == sorted(
        [(0, 2, tag["ns"]), (0, 4, tag["nt"]), (2, 4, tag["n"]), (4, 5, tag["p"]), (5, 7, tag["ns"])]
    )
    batch = torch.tensor([ids, ids[:3] + [0] * 4])
    out = features(batch, torch.tensor([[1] * 7, [1] * 3 + [0] * 4]))
    G = len(names)
    assert out.shape == (2, 7, 4 * G)

    def on(b, t):
        return {("BMES"[f // G], names[f % G]) for f in out[b, t].nonzero().flatten().tolist()}

    assert on(0, 0) == {("B", "ns"), ("B", "nt")}
    assert on(0, 1) == {("E", "ns"), ("M", "nt")}
    assert on(0, 2) == {("M", "nt"), ("B", "n")}
    assert on(0, 3) == {("E", "nt"), ("E", "n")}
    assert on(0, 4) == {("S", "p")}
    assert on(0, 6) == {("E", "ns")}
    # A cut sentence matches only inside itself: 北京大 has 北京, not 北京大学; padding stays zero.
    assert on(1, 0) == {("B", "ns")} and on(1, 2) == set()
    assert out[1, 3:].sum() == 0


def test_lexicon_is_saved_with_the_weights(tokenizer, tmp_path, monkeypatch):
    words, tags, names = lexicon_tensors([("北京", "ns"), ("上海", "ns"), ("张三", "nr")], tokenizer)
    torch.manual_seed(0)
    config = LstmConfig(
        vocab_size=len(tokenizer),
        embedding_size=8,
        hidden_size=8,
        num_layers=1,
        num_labels=3,
        lexicon_words=len(words),
        lexicon_tags=names,
    )
    model = LstmForTokenClassification(config).eval()
    model.encoder.lexicon.load(words, tags)
    ids = torch.tensor([tokenizer("张三去上海", add_special_tokens=False)["input_ids"]])
    before = model(ids, torch.ones_like(ids)).logits
    model.save_pretrained(tmp_path / "m")
    again = LstmForTokenClassification.from_pretrained(tmp_path / "m").eval()
    assert torch.equal(again.encoder.lexicon.words, words)
    assert torch.allclose(again(ids, torch.ones_like(ids)).logits, before, atol=1e-6)
    # The features change the scores: the same model with the lexicon's words emptied scores differently.
    again.encoder.lexicon.load(torch.full_like(words, -1), tags)
    assert not torch.allclose(again(ids, torch.ones_like(ids)).logits, before, atol=1e-4)


def test_lexicon_is_for_the_lstm_family():
    from lmforge.config import load_config

    with pytest.raises(ConfigError, match="model.lexicon: not a setting of the transformer family"):
        load_config(None, ["data.train=a.jsonl", "model={family: transformer, lexicon: jieba}"])
