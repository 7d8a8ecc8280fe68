"""Vocabulary extension: MiniLM learns to read Chinese characters without renumbering its tokens."""

import pytest

from lmforge.models.bundled import BUNDLED, bundled_path
from lmforge.tokenization.extend import extend_wordpiece, unknown_characters

TEXTS = ["酒店的服务很好，房间干净。", "早餐一般，但是位置方便。", "服务 很好 hotel"]


@pytest.fixture(scope="module")
def minilm_tokenizer():
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(bundled_path("minilm"))
    except Exception:  # noqa: BLE001 - the bundled package is optional here
        pytest.skip(f"{BUNDLED['minilm'].pip_name} not installed")


def test_extension_adds_unknown_characters_and_keeps_old_ids(minilm_tokenizer):
    before = minilm_tokenizer(TEXTS)["input_ids"]
    assert sum(t == minilm_tokenizer.unk_token_id for row in before for t in row) > 5
    extended, added = extend_wordpiece(minilm_tokenizer, TEXTS)
    assert added and all(len(ch) == 1 for ch in added)
    after = extended(TEXTS)["input_ids"]
    assert not any(t == extended.unk_token_id for row in after for t in row)
    old_vocab = minilm_tokenizer.get_vocab()
    new_vocab = extended.get_vocab()
    assert all(new_vocab[token] == i for token, i in old_vocab.items())  # no token renumbered
    assert len(extended) == len(minilm_tokenizer) + 2 * len(added) - sum(
        "##" + c in old_vocab or c in old_vocab for c in added
    )
    assert extended("hotel")["input_ids"] == minilm_tokenizer("hotel")["input_ids"]
    assert unknown_characters(extended, TEXTS) == []
    again, added_again = extend_wordpiece(minilm_tokenizer, list(reversed(TEXTS)))
    assert added_again == added and again.get_vocab() == new_vocab  # repeatable
