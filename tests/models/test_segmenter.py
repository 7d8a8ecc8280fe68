"""Segmenter features: jieba's words and tags on each character, by hand; saved with the weights."""

import logging

import pytest
import torch

from lmforge.models.lstm_encoder import LstmConfig, LstmForTokenClassification
from lmforge.models.segmenter import (
    PLACEHOLDER,
    SETS,
    THULAC_TAGS,
    SegmenterFeatures,
    segmenter_tags,
    token_codepoints,
    word_places,
)
from lmforge.tokenization.wordpiece import train_wordpiece

pytest.importorskip("jieba")
TEXT = "奥巴马访问了上海浦东新区。"


@pytest.fixture(scope="module")
def tokenizer():
    return train_wordpiece([TEXT, "我爱北京天安门"], vocab_size=100, lowercase=False)


def places(features: torch.Tensor, tags: list[str]) -> list[str]:
    """'B-ns' style names of each token's one active feature."""
    assert (features.sum(-1) == 1).all()
    out = []
    for f in features.argmax(-1).tolist():
        out.append(f"{SETS[f // len(tags)]}-{tags[f % len(tags)]}")
    return out


def test_each_character_gets_its_place_in_jiebas_word_and_the_word_tag(tokenizer):
    import jieba.posseg

    tags = segmenter_tags()
    module = SegmenterFeatures(len(tokenizer), tags)
    module.load(token_codepoints(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))))
    ids = tokenizer(list(TEXT), is_split_into_words=True, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(TEXT)
    batch = torch.tensor([ids + [0, 0], ids[:4] + [0] * (len(ids) - 2)])
    mask = torch.tensor([[1] * len(ids) + [0, 0], [1] * 4 + [0] * (len(ids) - 2)])
    out = module(batch, mask)
    assert out.shape == (2, len(ids) + 2, 4 * len(tags))
    expected = []
    for word, tag in jieba.posseg.lcut(TEXT):
        tag = tag if tag in tags else "other"
        expected += [f"S-{tag}"] if len(word) == 1 else [f"B-{tag}"] + [f"M-{tag}"] * (len(word) - 2) + [f"E-{tag}"]
    assert places(out[0, : len(ids)], tags) == expected
    assert "B-ns" in expected and "E-ns" in expected  # jieba calls 上海浦东新区 a place
    assert out[0, len(ids) :].sum() == 0 and out[1, 4:].sum() == 0  # padding has no features
    assert places(out[1, :4], tags)[0].startswith("B-")  # a window is segmented on its own
    # a cached sentence answers what it answered the first time, as a plain list
    first = module.features(ids)
    assert module.features(ids) == first and isinstance(module.features(ids), list)
    assert torch.equal(module(batch, mask), out)


def test_codepoints_and_placeholder():
    assert token_codepoints(["[PAD]", "上", "##海", "ab"]).tolist() == [
        ord(PLACEHOLDER),
        ord("上"),
        ord("海"),
        ord(PLACEHOLDER),
    ]


def test_the_character_table_is_saved_with_the_weights(tokenizer, tmp_path):
    config = LstmConfig(
        vocab_size=len(tokenizer),
        embedding_size=8,
        hidden_size=8,
        num_layers=1,
        num_labels=3,
        segmenter_tags=segmenter_tags(),
    )
    model = LstmForTokenClassification(config)
    table = token_codepoints(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))))
    model.encoder.segmenter.load(table)
    model.save_pretrained(tmp_path)
    again = LstmForTokenClassification.from_pretrained(tmp_path)
    assert torch.equal(again.encoder.segmenter.codepoints, table)
    ids = torch.tensor([tokenizer(list(TEXT), is_split_into_words=True, add_special_tokens=False)["input_ids"]])
    model.eval()
    again.eval()
    assert torch.equal(model(ids).logits, again(ids).logits)


def test_word_places_follow_the_text_not_the_segmenters_word_count():
    assert word_places("上海人", [("上海", "ns"), ("人", "n")]) == [(0, "ns"), (2, "ns"), (3, "n")]
    # THULAC turns two spaces into one: the dropped space is a single `other`, nothing shifts
    assert word_places("a  b", [("a", "x"), (" ", "w"), ("b", "x")]) == [(3, "x"), (3, "w"), (3, ""), (3, "x")]
    # a word the text does not have ends the match; the rest is `other`
    assert word_places("北京大学", [("北京", "ns"), ("天津", "ns")]) == [(0, "ns"), (2, "ns"), (3, ""), (3, "")]
    assert word_places("", []) == []


def fake_thulac():
    """A stand-in segmenter: every character a word, CJK tagged np, the rest w."""
    return lambda text: [(c, "np" if "\u4e00" <= c <= "\u9fff" else "w") for c in text]


def test_two_segmenters_side_by_side(tokenizer, monkeypatch):
    import lmforge.models.segmenter as segmenter

    monkeypatch.setitem(segmenter._FACTORIES, "thulac", fake_thulac)
    jieba_tags, both_tags = segmenter_tags(), segmenter_tags(["jieba", "thulac"])
    assert both_tags[: len(jieba_tags)] == jieba_tags and both_tags[len(jieba_tags)] == "thulac:n"
    assert both_tags[-1] == "thulac:other" and len(both_tags) == len(jieba_tags) + len(THULAC_TAGS) + 1
    table = token_codepoints(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))))
    alone, both = SegmenterFeatures(len(tokenizer), jieba_tags), SegmenterFeatures(len(tokenizer), both_tags)
    alone.load(table)
    both.load(table)
    ids = tokenizer(list(TEXT), is_split_into_words=True, add_special_tokens=False)["input_ids"]
    batch, mask = (
        torch.tensor([ids, ids[:3] + [0] * (len(ids) - 3)]),
        torch.tensor([[1] * len(ids), [1] * 3 + [0] * (len(ids) - 3)]),
    )
    one, two = alone(batch, mask), both(batch, mask)
    width = 4 * len(jieba_tags)
    assert two.shape == (2, len(ids), 4 * len(both_tags))
    assert torch.equal(two[..., :width], one)  # jieba's block is what jieba alone gives
    assert (two[0].sum(-1) == 2).all() and two[1, 3:].sum() == 0
    thulac_tags = [t.split(":", 1)[1] for t in both_tags[len(jieba_tags) :]]
    block = two[0, :, width:]
    names = [f"{SETS[f // len(thulac_tags)]}-{thulac_tags[f % len(thulac_tags)]}" for f in block.argmax(-1).tolist()]
    assert names == ["S-np"] * (len(TEXT) - 1) + ["S-w"]  # ... and the second segmenter's block its own


def test_an_unknown_segmenter_in_saved_tags_is_refused():
    with pytest.raises(ValueError, match="unknown segmenter 'hanlp'"):
        SegmenterFeatures(10, ["n", "other", "hanlp:nr", "hanlp:other"])
    with pytest.raises(ValueError, match="unknown segmenter 'hanlp'"):
        segmenter_tags(["jieba", "hanlp"])


def test_thulac_marks_a_person_and_prints_nothing(capsys):
    pytest.importorskip("thulac")
    from lmforge.models.segmenter import _thulac

    cut = _thulac()
    text = "国务院副总理李岚清访问上海。"
    places = word_places(text, cut(text))
    assert len(places) == len(text)
    start = text.index("李岚清")
    assert places[start : start + 3] == [(0, "np"), (1, "np"), (2, "np")]
    assert capsys.readouterr().out == ""  # stdout stays clean for --json


def test_a_slow_segmenters_words_are_stored_on_disk_for_the_next_process(tmp_path, monkeypatch):
    from lmforge.models import segmenter
    from lmforge.models.segmenter import SegmentStore, _stored

    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path))
    monkeypatch.setattr(segmenter, "_servers", [0])  # no server in this process holds the store
    calls = []

    def cut(text):
        calls.append(text)
        return [(c, "np") for c in text]

    first = _stored("thulac", cut)
    assert first("李岚清") == [("李", "np"), ("岚", "np"), ("清", "np")] and first("李岚清") == first("李岚清")
    assert calls == ["李岚清"]  # answered from the store after the first cut
    first.store.flush()
    again = _stored("thulac", cut)  # another process: a new store, the same file
    assert again("李岚清") == first("李岚清") and calls == ["李岚清"]
    assert again.store.path.parent == tmp_path / "segments" and again.store.path.name.startswith("thulac-")
    # a damaged entry is cut again, not trusted
    again.store._db.execute("UPDATE segments SET words = 'not json'")
    again.store._db.commit()
    assert again("李岚清") == [("李", "np"), ("岚", "np"), ("清", "np")] and calls == ["李岚清", "李岚清"]


def test_an_unwritable_store_is_skipped_with_a_warning(tmp_path, monkeypatch, caplog):
    from lmforge.models.segmenter import SegmentStore

    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("LMFORGE_CACHE", str(blocker))  # a file where the folder should be
    logger = logging.getLogger("lmforge")  # the CLI may have stopped it propagating
    logger.addHandler(caplog.handler)
    try:
        store = SegmentStore("thulac", "0")
    finally:
        logger.removeHandler(caplog.handler)
    assert "segmenting without it" in caplog.text and store._db is None
    store.put("上海", [("上海", "ns")])
    store.flush()
    assert store.get("上海") is None  # nothing kept, nothing fails


def test_a_server_keeps_no_new_sentences_and_a_store_is_bounded(tmp_path, monkeypatch):
    from lmforge.models import segmenter

    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path))
    monkeypatch.setattr(segmenter, "_servers", [0])
    store = segmenter.SegmentStore("thulac", "0")
    store.put("北京", [("北京", "ns")])
    store.flush()
    segmenter.hold_segment_store()  # what serve does at start-up
    try:
        store.put("一位客户的句子", [("一位", "m")])
        store.flush()
        assert store.get("北京") == [("北京", "ns")]  # lookups still answer
        assert store.get("一位客户的句子") is None  # the client's text was not written
    finally:
        segmenter.release_segment_store()
    store.put("训练句子", [("训练", "v")])  # no server now: kept
    store.flush()
    assert store.get("训练句子") == [("训练", "v")]
    monkeypatch.setattr(segmenter, "MAX_STORED", 2)
    for text in ("上海", "广州", "深圳"):
        store.put(text, [(text, "ns")])
    store.flush()
    rows = store._db.execute("SELECT count(*) FROM segments").fetchone()[0]
    assert rows == 2  # 北京 and 训练句子: full, the rest not kept


def test_serve_keeps_the_store_off_while_it_runs(monkeypatch):
    from lmforge.models import segmenter
    from lmforge.serving.settings import ServeSettings
    from lmforge.serving.state import ServerState

    monkeypatch.setattr(segmenter, "_servers", [0])
    state = ServerState(ServeSettings(sources=["x"]), {})
    state.load()
    assert segmenter._servers == [1]
    state.close()
    assert segmenter._servers == [0]  # released: training in the same process writes again
    keeping = ServerState(ServeSettings(sources=["x"], store_segments=True), {})
    keeping.load()
    assert segmenter._servers == [0]
    keeping.close()
