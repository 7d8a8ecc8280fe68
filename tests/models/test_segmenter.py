"""Segmenter features: jieba's words and tags on each character, by hand; saved with the weights."""

import pytest
import torch

from lmforge.models.lstm import LstmConfig, LstmForTokenClassification
from lmforge.models.segmenter import PLACEHOLDER, SETS, SegmenterFeatures, segmenter_tags, token_codepoints
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
        expected += [f"S-{tag}"] if len(word) == 1 else \
            [f"B-{tag}"] + [f"M-{tag}"] * (len(word) - 2) + [f"E-{tag}"]
    assert places(out[0, :len(ids)], tags) == expected
    assert "B-ns" in expected and "E-ns" in expected          # jieba calls 上海浦东新区 a place
    assert out[0, len(ids):].sum() == 0 and out[1, 4:].sum() == 0    # padding has no features
    assert places(out[1, :4], tags)[0].startswith("B-")     # a window is segmented on its own
    # a cached sentence answers what it answered the first time, as a plain list
    first = module.features(ids)
    assert module.features(ids) == first and isinstance(module.features(ids), list)
    assert torch.equal(module(batch, mask), out)


def test_codepoints_and_placeholder():
    assert token_codepoints(["[PAD]", "上", "##海", "ab"]).tolist() == [
        ord(PLACEHOLDER), ord("上"), ord("海"), ord(PLACEHOLDER)]


def test_the_character_table_is_saved_with_the_weights(tokenizer, tmp_path):
    config = LstmConfig(vocab_size=len(tokenizer), embedding_size=8, hidden_size=8, num_layers=1,
                        num_labels=3, segmenter_tags=segmenter_tags())
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
