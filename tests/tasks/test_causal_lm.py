"""Causal LM: assistant-only targets on every turn, packing that changes no loss, pre-training blocks,
and the conversation forms (alpaca, messages, ShareGPT) with their bad rows."""

import json

import pytest
import torch
import transformers

from conftest import tiny_llama, write_jsonl
from lmforge.config.schema import DataConfig
from lmforge.data.conversations import Conversation, read_conversations, row_to_messages
from lmforge.data.examples import TextExample
from lmforge.data.readers import Problems
from lmforge.errors import DataError
from lmforge.tasks.causal_lm import CHATML, IGNORE, CausalLMTask, causal_logits, collate_lm, encode_conversations, pack
from lmforge.tokenization.bpe import train_bpe

TEXTS = [
    "the cat sat on the mat",
    "what is the capital of france",
    "paris is the capital",
    "tell me a joke",
    "why did the chicken cross the road",
    "to get to the other side",
]


@pytest.fixture(scope="module")
def tokenizer():
    tok = train_bpe(TEXTS * 20, vocab_size=300)
    tok.chat_template = CHATML
    return tok


def test_alpaca_messages_and_sharegpt_rows_become_messages():
    alpaca = row_to_messages(
        {"instruction": "add", "input": "1 and 2", "output": "3", "system": "be brief", "history": [["hi", "hello"]]}
    )
    assert [m["role"] for m in alpaca] == ["system", "user", "assistant", "user", "assistant"]
    assert alpaca[3]["content"] == "add\n\n1 and 2"
    share = row_to_messages({"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]})
    assert share == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    with pytest.raises(ValueError, match="no assistant turn"):
        row_to_messages({"messages": [{"role": "user", "content": "hi"}]})
    with pytest.raises(ValueError, match="unknown role 'robot'"):
        row_to_messages({"messages": [{"role": "robot", "content": "hi"}, {"role": "assistant", "content": "x"}]})


def test_bad_conversation_rows_are_named_or_skipped(tmp_path):
    path = write_jsonl(
        tmp_path / "chat.jsonl",
        [
            {"instruction": "hi", "output": "hello {{name}}"},
            {"messages": [{"role": "user", "content": "only a question"}]},
            {"text": "not a conversation"},
        ],
    )
    with pytest.raises(DataError, match=r"chat.jsonl:2: no assistant turn"):
        read_conversations(str(path), DataConfig(), Problems())
    problems = Problems(skip=True)
    found = read_conversations(str(path), DataConfig(), problems, fill={"name": "Forge"})
    assert problems.skipped == 2 and found[0].messages[-1]["content"] == "hello Forge"


def test_only_assistant_tokens_are_targets_on_every_turn(tokenizer):
    messages = [
        {"role": "user", "content": "tell me a joke"},
        {"role": "assistant", "content": "the cat sat"},
        {"role": "user", "content": "why"},
        {"role": "assistant", "content": "to get to the other side"},
    ]
    ((ids, labels),) = encode_conversations(tokenizer, [Conversation(messages)])
    targets = tokenizer.decode([t for t, l in zip(ids, labels) if l != IGNORE])
    assert targets == "the cat sat<|im_end|>\nto get to the other side<|im_end|>\n"
    ((ids2, labels2),) = encode_conversations(tokenizer, [Conversation(messages)], train_on_prompt=True)
    assert ids2 == ids and labels2 == ids


def test_packing_keeps_sequences_apart_and_the_loss_unchanged(tokenizer):
    convs = [
        Conversation([{"role": "user", "content": q}, {"role": "assistant", "content": a}])
        for q, a in [
            ("tell me a joke", "why did the chicken cross the road"),
            ("what is the capital of france", "paris"),
            ("hi", "the cat sat on the mat"),
        ]
    ]
    rows = encode_conversations(tokenizer, convs)
    model = tiny_llama(len(tokenizer), tie_word_embeddings=True)
    plain = collate_lm([{"input_ids": i, "labels": l} for i, l in rows], tokenizer.pad_token_id)
    logits, gold = causal_logits(model, dict(plain), plain.pop("labels"))
    packed_rows = pack(rows, 128)
    assert len(packed_rows) == 1 and packed_rows[0]["sequences"] == 3
    packed = collate_lm(packed_rows, tokenizer.pad_token_id)
    assert "attention_mask" not in packed
    logits_p, gold_p = causal_logits(model, dict(packed), packed.pop("labels"))
    assert sorted(gold.tolist()) == sorted(gold_p.tolist())
    loss = torch.nn.functional.cross_entropy(logits, gold)
    loss_p = torch.nn.functional.cross_entropy(logits_p, gold_p)
    assert abs(loss.item() - loss_p.item()) < 1e-5


def test_pack_respects_max_length_and_loses_nothing():
    rows = [([1] * n, [2] * n) for n in (5, 9, 3, 7, 2, 8, 1)]
    packed = pack(rows, 10)
    assert all(len(r["input_ids"]) <= 10 for r in packed)
    assert sum(len(r["input_ids"]) for r in packed) == sum(n for n in (5, 9, 3, 7, 2, 8, 1))
    assert sum(r["sequences"] for r in packed) == 7 and len(packed) == 4


def test_text_blocks_join_documents_with_eos(tokenizer):
    task = CausalLMTask()
    features = task.encode(tokenizer, [TextExample(t) for t in TEXTS], 8)
    stream = [t for f in features for t in f["input_ids"]]
    assert stream.count(tokenizer.eos_token_id) == len(TEXTS)
    assert all(len(f["input_ids"]) == 8 for f in features[:-1]) and features[0]["labels"] == features[0]["input_ids"]


def test_sft_then_generate_from_scratch(tmp_path, run_cli, monkeypatch):
    rows = [{"instruction": f"what is {a} plus {b}", "output": f"{a + b}"} for a in range(6) for b in range(6)]
    train = write_jsonl(tmp_path / "sft.jsonl", rows)
    config = tmp_path / "sft.yaml"
    config.write_text(
        "task: causal_lm\nmodel: {family: transformer, arch: llama, layers: 2, hidden: 32, heads: 2, vocab_size: 300}\n"
    )
    out = tmp_path / "run"
    code, _, err = run_cli(
        "train",
        "--quiet",
        str(config),
        f"data.train={train}",
        "data.split=0.2",
        "train.epochs=3",
        "train.batch_size=4",
        "train.lr=3e-3",
        "data.max_length=64",
        "train.warmup=0",
        "train.log_every=1",
        f"output={out}",
    )
    assert code == 0, err
    results = json.loads((out / "eval_results.json").read_text())["validation"]
    assert results["tokens"] > 0 and results["perplexity"] < 300
    losses = [
        json.loads(x)["loss"]
        for x in (out / "metrics.jsonl").read_text().splitlines()
        if json.loads(x).get("kind") == "train"
    ]
    assert sum(losses[-3:]) < sum(losses[:3])
    assert "im_start" in (out / "model" / "tokenizer_config.json").read_text() + (
        (out / "model" / "chat_template.jinja").read_text() if (out / "model" / "chat_template.jinja").exists() else ""
    )
    code, stdout, err = run_cli(
        "eval", str(out), "--data", str(train), "--json", "--generate", "6", "--max-new-tokens", "6"
    )
    assert code == 0, err
    scores = json.loads(stdout)
    assert scores["perplexity"] > 1 and scores["generated"] == 6
    assert 0 <= scores["bleu"] <= 100 and 0 <= scores["rougeL"] <= 1 and "exact_match" in scores
    # The run generates: greedy is repeatable, a stop string ends the text, the context is enforced.
    code, stdout, err = run_cli("generate", str(out), "what is 2 plus 3", "--max-new-tokens", "8", "--json")
    assert code == 0, err
    first = json.loads(stdout)
    assert first["prompt_tokens"] > 0 and 0 < first["new_tokens"] <= 8
    assert (
        json.loads(run_cli("generate", str(out), "what is 2 plus 3", "--max-new-tokens", "8", "--json")[1])["text"]
        == first["text"]
    )
    lookup = {}  # speculative decoding by prompt lookup: in float32, the very reply decoding gives without it
    for n in ("0", "4"):
        code, stdout, err = run_cli(
            "generate", str(out), "what is 2 plus 3 plus 2 plus 3", "--max-new-tokens", "12", "--json",
            "--dtype", "float32", "--prompt-lookup", n,
        )  # fmt: skip
        assert code == 0, err
        lookup[n] = json.loads(stdout)["text"]
    assert lookup["4"] == lookup["0"]
    for dtype in ("bfloat16", "int8"):  # the PyTorch engine's other weight types answer too
        code, stdout, err = run_cli(
            "generate", str(out), "what is 2 plus 3", "--max-new-tokens", "8", "--json", "--dtype", dtype
        )
        assert code == 0, err
        assert 0 < json.loads(stdout)["new_tokens"] <= 8
    code, _, err = run_cli("generate", str(out), "what is 2 plus 3", "--max-new-tokens", "5000")
    assert code == 2 and "over the model's context" in err
    # chat: two turns (the second sees the first), /reset, then end of input.
    lines = iter(["what is 1 plus 1", "and 2 plus 2", "/reset", "what is 3 plus 0"])

    def fake_input(prompt=""):
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    from lmforge.inference.generator import Generator

    seen, real = [], Generator.generate

    def recording(self, prompt, options, raw=False, stream=None):
        seen.append([m["role"] for m in prompt])
        return real(self, prompt, options, raw, stream)

    monkeypatch.setattr("builtins.input", fake_input)
    monkeypatch.setattr(Generator, "generate", recording)
    code, _, err = run_cli("chat", str(out), "--max-new-tokens", "4")
    assert code == 0, err
    assert seen == [["user"], ["user", "assistant", "user"], ["user"]]


def test_streamer_never_shows_a_stop_string(tokenizer):
    from lmforge.models.decoding import Streamer as _Streamer

    shown = []
    streamer = _Streamer(tokenizer, shown.append, ["cat sat"])
    streamer.put(torch.tensor([0]))  # the prompt
    for piece in tokenizer("the cat sat on the mat", add_special_tokens=False)["input_ids"]:
        streamer.put(torch.tensor([piece]))
    streamer.flush_rest("the ")
    assert "".join(shown) == "the "
