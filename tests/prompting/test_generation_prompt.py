"""Zero/few-shot generation by prompting: shots from seq2seq pairs and conversations, the chat and
plain-LM templates, end-to-end ``lmforge prompt`` runs on a seq2seq and an instruction (causal_lm)
config with a real tiny chat model that ``lmforge eval`` reads back, replies fixed to the references
scoring 1.0 through the whole path, and raw text refused."""

import json
import sys
from pathlib import Path

import pytest

from lmforge.data.conversations import Conversation
from lmforge.errors import DataError
from lmforge.prompting.generation import GenerationTemplate, Shot, shot_of
from lmforge.tasks.seq2seq import PairExample

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serving"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tasks"))

from served import runs  # noqa: E402,F401  (fixture: a tiny chat SFT run among others)
from test_seq2seq import train_tiny_t5  # noqa: E402

from conftest import write_jsonl  # noqa: E402

CITIES = ["paris", "rome", "oslo", "lima", "cairo", "delhi", "tokyo", "quito", "dakar", "hanoi", "accra", "bern"]


def pairs(n: int, start: int = 0) -> list[dict]:
    return [
        {"source": f"the capital city is {c} and it is large", "target": f"{c} is the capital"}
        for c in (CITIES * 4)[start : start + n]
    ]


def test_shots_of_pairs_and_conversations():
    assert shot_of(PairExample("a b", "b", "f:1")) == Shot([], "a b", "b", "f:1")
    conv = Conversation(
        [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4"},
        ],
        "f:2",
    )
    shot = shot_of(conv)
    assert (
        shot.request == "2+2?"
        and shot.answer == "4"
        and [m["content"] for m in shot.context] == ["be brief", "hi", "hello"]
    )
    with pytest.raises(DataError, match="f:3"):
        shot_of(Conversation([{"role": "assistant", "content": "x"}], "f:3"))


def test_templates_show_shots_as_turns_and_blocks():
    shots = [Shot([], "one", "1"), Shot([{"role": "system", "content": "sys"}], "two", "2")]
    request = Shot([{"role": "system", "content": "own"}], "three", "3")
    chat = GenerationTemplate("en", "Write the number.").messages(request, shots)
    assert chat[0] == {"role": "system", "content": "Write the number."}  # the instruction wins
    assert [m["role"] for m in chat[1:]] == ["user", "assistant", "user", "assistant", "user"]
    assert [m["content"] for m in chat[1:]] == ["one", "1", "two", "2", "three"]
    own = GenerationTemplate("en").messages(request, shots)  # else the row's system turn, still first
    assert [m["content"] for m in own] == ["own", "one", "1", "two", "2", "three"]
    plain = GenerationTemplate("en", None, "Q: {text}")
    doc = plain.document(request, shots[:1])
    assert doc == "own\n\nInput: Q: one\nOutput: 1\n\nInput: Q: three\nOutput:"  # the row's system turn first
    # A conversation's earlier exchanges stay in the document, before the request.
    talk = Shot(
        [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "still there?"},
        ],
        "2+2?",
        "4",
    )
    assert GenerationTemplate("en", "Answer.").document(talk, []) == (
        "Answer.\n\nInput: hi\nOutput: hello\n\nInput: still there?\n\nInput: 2+2?\nOutput:"
    )
    assert plain.cut(" 3\n\nInput: Q: four") == "3" and plain.cut(" 3 Input: x") == "3"
    assert GenerationTemplate("zh").document(Shot([], "问", "答"), []) == "输入： 问\n输出："


def _seq2seq_config(tmp_path, model, shots=2) -> Path:
    train = write_jsonl(tmp_path / "train.jsonl", pairs(24))
    write_jsonl(tmp_path / "dev.jsonl", pairs(10, 24))
    config = tmp_path / "gen.yaml"
    config.write_text(
        "task: seq2seq\n"
        f"data: {{train: {train}, validation: {tmp_path / 'dev.jsonl'}}}\n"
        f"prompt: {{model: '{model}', shots: {shots}, selection: random, seed: 3, max_new_tokens: 8}}\n"
    )
    return config


def test_seq2seq_prompt_run_is_scored_and_read_back_by_eval(tmp_path, run_cli, runs):
    out = tmp_path / "run"
    code, stdout, err = run_cli("prompt", str(_seq2seq_config(tmp_path, runs["chat"])), f"output={out}", "--quiet")
    assert code == 0, err
    assert "ROUGE-L" in stdout
    results = json.loads((out / "eval_results.json").read_text())["validation"]
    assert results["count"] == 10 and 0 <= results["rougeL"] <= 1 and 0 <= results["bleu"] <= 100
    meta = json.loads((out / "lmforge.json").read_text())
    assert meta["task"] == "seq2seq" and meta["method"] == "prompt/generation"
    assert meta["prompt"]["shots"] == 2 and len(meta["prompt"]["examples"]) == 2 and meta["prompt"]["seed"] == 3
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 10 and all({"request", "reference", "generated"} <= set(r) for r in rows)
    assert all(r["examples"] == meta["prompt"]["examples"] for r in rows)  # random: the same 2 for every row
    assert "generated" in (out / "report.html").read_text()
    code, stdout, err = run_cli("eval", str(out), "--data", str(tmp_path / "dev.jsonl"), "--json")
    assert code == 0, err
    assert json.loads(stdout)["rougeL"] == results["rougeL"]  # greedy: the same replies again


def test_reference_replies_score_one_through_the_whole_path(tmp_path, run_cli, runs, monkeypatch):
    from lmforge.prompting import generation

    monkeypatch.setattr(generation.PromptGenerator, "replies", lambda self, requests, per: [r.answer for r in requests])
    out = tmp_path / "gold"
    code, _, err = run_cli(
        "prompt", str(_seq2seq_config(tmp_path, runs["chat"], 2)), f"output={out}", "data.train_limit=1", "--quiet"
    )
    assert code == 0, err
    results = json.loads((out / "eval_results.json").read_text())["validation"]
    assert results["rougeL"] == 1.0 and results["exact_match"] == 1.0 and results["bleu"] == pytest.approx(100.0)
    assert len(json.loads((out / "lmforge.json").read_text())["prompt"]["examples"]) == 1  # the pool: 1 row


def test_instruction_data_is_answered_at_the_last_turn(tmp_path, run_cli, runs):
    topics = [
        "What is the sum of {n} and {n}?",
        "Write a short poem about a {c} in the rain.",
        "Translate the word {c} into French.",
    ]
    rows = [
        {"instruction": topics[i % 3].format(n=i, c=CITIES[i % 12]), "input": "", "output": f"answer {i}"}
        for i in range(30)
    ]
    data = write_jsonl(tmp_path / "sft.jsonl", rows)
    topic_of = {f"{data}:{i + 1}": i % 3 for i in range(30)}
    config = tmp_path / "sft.yaml"
    config.write_text(
        f"task: causal_lm\ndata: {{train: {data}, split: 0.2}}\n"
        f"prompt: {{model: '{runs['chat']}', shots: 1, selection: nearest, max_new_tokens: 6, limit: 4}}\n"
    )
    out = tmp_path / "sft_run"
    code, stdout, err = run_cli("prompt", str(config), f"output={out}", "--quiet")
    assert code == 0, err
    results = json.loads((out / "eval_results.json").read_text())["validation"]
    assert results["count"] == 4 and "rouge2" in results
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    for row in rows:  # nearest (MiniLM): per request, a training row of the same kind
        [shown] = row["examples"]
        assert shown != row["where"] and topic_of[shown] == topic_of[row["where"]]
        assert row["request"] == rows_by_line(data)[row["where"]]["instruction"]


def rows_by_line(path: Path) -> dict:
    return {f"{path}:{i + 1}": json.loads(line) for i, line in enumerate(path.read_text().splitlines())}


def test_raw_text_is_refused(tmp_path, run_cli, runs):
    text = tmp_path / "corpus.txt"
    text.write_text("".join(f"document {i} about {c}\n" for i, c in enumerate(CITIES)))
    config = tmp_path / "lm.yaml"
    config.write_text(f"task: causal_lm\ndata: {{train: {text}, split: 0.2}}\nprompt: {{model: '{runs['chat']}'}}\n")
    code, _, err = run_cli("prompt", str(config), f"output={tmp_path / 'x'}")
    assert code == 2 and "raw text" in err and "data.train" in err and not (tmp_path / "x").exists()


def test_an_encoder_decoder_run_is_prompted_with_the_plain_document(tmp_path, run_cli):
    t5 = train_tiny_t5(tmp_path, run_cli, pairs(24))
    out = tmp_path / "t5_prompt"
    code, _, err = run_cli("prompt", str(_seq2seq_config(tmp_path, t5, 1)), f"output={out}", "--quiet")
    assert code == 0, err
    meta = json.loads((out / "lmforge.json").read_text())
    assert meta["prompt"]["chat_template"] is False
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 10 and all(isinstance(r["generated"], str) for r in rows)


def test_similarity_is_refused_for_generation(tmp_path, run_cli):
    code, _, err = run_cli(
        "prompt", str(_seq2seq_config(tmp_path, "minilm")), f"output={tmp_path / 'x'}", "--method", "similarity"
    )
    assert code == 2 and "prompt.method" in err and "seq2seq" in err and not (tmp_path / "x").exists()


def test_a_task_without_answers_is_refused(tmp_path, run_cli):
    text = tmp_path / "corpus.txt"
    text.write_text("one document\nanother document\n")
    config = tmp_path / "mlm.yaml"
    config.write_text(f"task: masked_lm\ndata: {{train: {text}}}\n")
    code, _, err = run_cli("prompt", str(config), f"output={tmp_path / 'x'}")
    assert code == 2 and "masked_lm" in err and "seq2seq" in err and not (tmp_path / "x").exists()
