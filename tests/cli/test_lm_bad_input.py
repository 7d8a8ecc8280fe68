"""Language-model bad input: one line, exit 2, nothing written -- or a counted warning."""

import json

from conftest import write_jsonl

TINY_LLAMA = "{family: transformer, arch: llama, layers: 1, hidden: 16, heads: 2, vocab_size: 200}"


def _config(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("task: causal_lm\n")
    return str(path)


def test_empty_corpus_is_an_error(tmp_path, run_cli):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    code, _, err = run_cli(
        "train",
        "--quiet",
        _config(tmp_path),
        f"data.train={empty}",
        f"model={TINY_LLAMA}",
        f"output={tmp_path / 'run'}",
    )
    assert code == 2 and "empty.txt: no rows" in err and not (tmp_path / "run").exists()


def test_an_encoder_for_causal_lm_is_refused(tmp_path, run_cli):
    train = write_jsonl(tmp_path / "t.jsonl", [{"instruction": "hi", "output": "yo"}])
    code, _, err = run_cli(
        "train",
        "--quiet",
        _config(tmp_path),
        f"data.train={train}",
        "model={family: transformer, arch: bert, layers: 1, hidden: 16, heads: 2}",
        f"output={tmp_path / 'run'}",
    )
    assert code == 2 and "bert does not suit this task" in err


def test_overlong_conversations_are_truncated_with_a_count(tmp_path, run_cli, caplog):
    rows = [{"instruction": "word " * 200, "output": "ok"}] + [{"instruction": "hi", "output": "hello there"}] * 4
    train = tmp_path / "long.json"
    train.write_text(json.dumps(rows))
    code, _, err = run_cli(
        "train",
        _config(tmp_path),
        f"data.train={train}",
        f"model={TINY_LLAMA}",
        "data.max_length=48",
        "train.max_steps=1",
        f"output={tmp_path / 'run'}",
    )
    assert code == 0, err
    assert "1 conversation(s) longer than data.max_length=48 were truncated; 1 had no assistant token" in err
    code, _, err = run_cli(
        "train",
        _config(tmp_path),
        f"data.train={train}",
        f"model={TINY_LLAMA}",
        "data.max_length=48",
        "train.max_steps=1",
        "data.on_error=skip",
        f"output={tmp_path / 'run2'}",
    )
    assert code == 0 and "0 conversation(s) longer than data.max_length=48 were truncated; 1 over-long" in err


def test_generate_rejects_bad_options_and_non_generative_runs(tmp_path, run_cli, tiny_data):
    from conftest import tiny_overrides

    config = tmp_path / "cls.yaml"
    config.write_text("task: classification\n")
    run = tmp_path / "cls"
    assert run_cli("train", "--quiet", str(config), *tiny_overrides(tiny_data, run, "train.epochs=1"))[0] == 0
    code, _, err = run_cli("generate", str(run), "hello")
    assert code == 2 and "generation needs a causal_lm or seq2seq run" in err
    code, _, err = run_cli("generate", str(run), "hello", "--top-p", "1.5")
    assert code == 2 and "--top-p must be in (0, 1]" in err
