"""Decoding a reply as it grows (serving and streaming): the text equals decoding every id at once,
stop strings are found where a full search finds them, and the work is linear in the reply's
length (it decoded the whole reply at every token before: quadratic, issue 32)."""

import random

import pytest

from lmforge.models.bundled import bundled_path
from lmforge.models.decoding import IncrementalText, held_back
from lmforge.tokenization.bpe import train_bpe

CORPUS = [
    "the cat sat on the mat , said the old man .",
    "今天天气很好，我们去公园散步吧。",
    "prices rose 5% in 2024 ; emoji 🙂 and café naïve façade",
]


@pytest.fixture(scope="module")
def tokenizers():
    found = {"byte-level BPE": train_bpe(CORPUS * 30, vocab_size=400)}
    try:
        from transformers import AutoTokenizer

        found["WordPiece (MiniLM)"] = AutoTokenizer.from_pretrained(bundled_path("minilm"))
    except Exception:  # noqa: BLE001 - the bundled model is optional here
        pass
    return found


class Counting:
    """A tokenizer that counts the ids it decodes."""

    def __init__(self, tokenizer):
        self.tokenizer, self.decoded = tokenizer, 0

    def decode(self, ids, **kw):
        self.decoded += len(ids)
        return self.tokenizer.decode(ids, **kw)


def test_the_text_is_the_whole_decode_and_the_work_is_linear(tokenizers):
    rng = random.Random(0)
    for name, tokenizer in tokenizers.items():
        words = " ".join(rng.choice(CORPUS) for _ in range(120))
        ids = tokenizer(words, add_special_tokens=False)["input_ids"]
        counting = Counting(tokenizer)
        text = IncrementalText(counting, [])
        grown: list[int] = []
        for i, token in enumerate(ids):
            grown.append(token)
            final = i == len(ids) - 1
            if text.update(grown, final=final) or final:
                assert text.text == tokenizer.decode(grown, skip_special_tokens=True).rstrip("\ufffd"), name
        assert text.text == tokenizer.decode(ids, skip_special_tokens=True), name
        assert len(ids) > 500
        assert counting.decoded < 8 * len(ids), (name, counting.decoded)  # whole decodes: ~len(ids)**2 / 2


def test_stop_strings_are_found_where_a_full_search_finds_them(tokenizers):
    tokenizer = tokenizers["byte-level BPE"]
    for stop in ["sat on", "。", "🙂", "mat , said the old"]:
        reply = "prices rose 5% in 2024 ; the cat sat on the mat , said the old man . 今天天气很好。🙂 done"
        ids = tokenizer(reply, add_special_tokens=False)["input_ids"]
        text, grown, found = IncrementalText(tokenizer, [stop, "never there"]), [], None
        for token in ids:
            grown.append(token)
            if text.update(grown):
                found = text.stop_index()
                if found is not None:
                    break
        assert found == reply.index(stop)
        assert text.text[:found] == reply[: reply.index(stop)]


def test_what_could_start_a_stop_string_is_held_back():
    assert held_back("the cat s", ["sat on", "cat sat"]) == 5  # "cat s" could be "cat sat"
    assert held_back("the cat", ["dog"]) == 0
    assert held_back("abc", ["c", "bcd"]) == 2
