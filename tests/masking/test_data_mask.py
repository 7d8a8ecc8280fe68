"""``data.mask``: personal data replaced by its type in every task's examples before training, NER
words and tags kept one to one, counted in the log; bad settings fail naming the key."""

import json

import pytest

from conftest import TINY_MODEL, sentiment_rows, write_jsonl
from lmforge.data.conversations import Conversation
from lmforge.data.examples import TextExample
from lmforge.data.tagged import TaggedExample
from lmforge.masking.data import mask_examples
from lmforge.masking.mask import Masker
from lmforge.tasks.seq2seq import PairExample

RULES = Masker(("email", "phone", "cn_id", "bank_card", "ip"))


def test_texts_pairs_and_conversations_are_masked_and_counted():
    examples = [
        TextExample(text="write to ann.lee@example.com today", label="pos"),
        TextExample(text="nothing personal here", label="neg"),
        TextExample(text="call 13812345678", text_pair="or 10.0.0.1", label="neg"),
        PairExample(source="mail bo@example.org", target="ok"),
        Conversation(
            messages=[{"role": "user", "content": "my ip is 192.168.1.7"}, {"role": "assistant", "content": "noted"}]
        ),
    ]
    masked, stats = mask_examples(examples, RULES)
    assert masked[0].text == "write to [EMAIL] today" and masked[0].label == "pos"
    assert masked[1] is examples[1]  # nothing found: the same example
    assert (masked[2].text, masked[2].text_pair) == ("call [PHONE]", "or [IP]")
    assert masked[3].source == "mail [EMAIL]" and masked[3].target == "ok"
    assert [m["content"] for m in masked[4].messages] == ["my ip is [IP]", "noted"]
    assert masked[4].messages[0]["role"] == "user"
    assert examples[0].text.startswith("write to ann")  # the input list is not changed
    assert stats.examples == 5 and stats.changed == 4
    assert stats.by_type == {"email": 2, "phone": 1, "ip": 2}
    assert "5 span(s) in 4 of 5 example(s)" in stats.line("train")


def test_ner_words_and_tags_stay_one_to_one():
    sentence = TaggedExample(
        tokens=["John", "called", "+1", "(415)", "555-0123", "from", "mail:jo@example.com"],
        tags=["B-PER", "O", "O", "O", "O", "O", "O"],
        raw_text="John called +1 (415) 555-0123 from mail:jo@example.com",
        offsets=[(0, 4)],
    )
    (masked,), stats = mask_examples([sentence], RULES)
    assert masked.tokens == ["John", "called", "[PHONE]", "[PHONE]", "[PHONE]", "from", "mail:[EMAIL]"]
    assert masked.tags == sentence.tags and masked.raw_text is None and masked.offsets is None
    assert stats.by_type == {"phone": 1, "email": 1}


def test_a_run_trains_on_masked_text(tmp_path, run_cli):
    rows = sentiment_rows(24, 0)
    for i, row in enumerate(rows[:6]):
        row["text"] += f" mail me at user{i}@example.com"
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    dev = write_jsonl(
        tmp_path / "dev.jsonl", [{**r, "text": r["text"] + " or 13912345678"} for r in sentiment_rows(8, 1)]
    )
    config = tmp_path / "job.yaml"
    config.write_text(
        f"task: classification\ndata: {{train: {train}, validation: {dev}, mask: {{types: [email, phone]}}}}\n"
        f"model: {TINY_MODEL}\ntrain: {{epochs: 1, batch_size: 8, threads: 1}}\noutput: {tmp_path / 'run'}\n"
    )
    code, out, err = run_cli("train", str(config))
    assert code == 0, err
    assert "data.mask: train: 6 span(s) in 6 of 24 example(s) (email 6)" in err
    assert "data.mask: validation: 8 span(s) in 8 of 8 example(s) (phone 8)" in err
    predictions = (tmp_path / "run" / "predictions.jsonl").read_text()
    assert "[PHONE]" in predictions and "13912345678" not in predictions
    vocab = json.loads((tmp_path / "run" / "model" / "tokenizer.json").read_text())["model"]["vocab"]
    assert not any("example" in piece for piece in vocab)  # the tokenizer never saw the addresses


@pytest.mark.parametrize(
    "override,words",
    [
        ("data.mask={ner: /nowhere/run}", "data.mask.ner: /nowhere/run: no such run folder"),
        ("data.mask={types: [emails]}", "data.mask.types"),
        ("data.mask={splits: []}", "data.mask.splits"),
    ],
)
def test_bad_mask_settings_are_one_line_naming_the_key(tmp_path, run_cli, override, words):
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(8, 0))
    config = tmp_path / "job.yaml"
    config.write_text(
        f"task: classification\ndata: {{train: {train}, split: 0.25}}\nmodel: {TINY_MODEL}\n"
        f"output: {tmp_path / 'run'}\n"
    )
    code, _, err = run_cli("train", str(config), override, "--quiet")
    assert code != 0 and words in err and len(err.strip().splitlines()) == 1, err
