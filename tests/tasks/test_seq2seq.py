"""Seq2seq with a tiny from-scratch T5: training lowers the loss, eval scores generations, the run
generates, and a row without a target is named."""

import json
import random

from conftest import write_jsonl

WORDS = "red blue green cat dog sun moon tree river stone".split()


def _rows(n, seed):
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(2, 4))]
        rows.append({"source": " ".join(words), "target": " ".join(words)})
    return rows


def train_tiny_t5(tmp_path, run_cli, rows: list[dict]):
    """A one-layer T5 trained for an epoch on ``rows``: its run folder."""
    config = tmp_path / "tiny_t5.yaml"
    config.write_text(
        "task: seq2seq\nmodel: {family: transformer, arch: t5, layers: 1, hidden: 16, heads: 2, vocab_size: 200}\n"
    )
    out = tmp_path / "t5"
    code, _, err = run_cli(
        "train",
        "--quiet",
        str(config),
        f"data.train={write_jsonl(tmp_path / 't.jsonl', rows)}",
        "train.epochs=1",
        "train.batch_size=8",
        "data.max_length=32",
        f"output={out}",
    )
    assert code == 0, err
    return out


def test_t5_from_scratch_trains_evaluates_and_generates(tmp_path, run_cli):
    train = write_jsonl(tmp_path / "train.jsonl", _rows(64, 0))
    dev = write_jsonl(tmp_path / "dev.jsonl", _rows(12, 1))
    config = tmp_path / "s2s.yaml"
    config.write_text(
        "task: seq2seq\nmodel: {family: transformer, arch: t5, layers: 2, hidden: 32, heads: 2, vocab_size: 300}\n"
    )
    out = tmp_path / "run"
    code, _, err = run_cli(
        "train",
        "--quiet",
        str(config),
        f"data.train={train}",
        f"data.validation={dev}",
        "train.epochs=4",
        "train.batch_size=8",
        "train.lr=5e-3",
        "train.warmup=0",
        "data.max_length=32",
        "train.max_target_length=32",
        "train.log_every=1",
        f"output={out}",
    )
    assert code == 0, err
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if r.get("kind") == "train"]
    assert sum(losses[-3:]) < sum(losses[:3])
    code, stdout, err = run_cli(
        "eval", str(out), "--data", str(dev), "--json", "--generate", "5", "--max-new-tokens", "8"
    )
    assert code == 0, err
    scores = json.loads(stdout)
    assert scores["generated"] == 5 and 0 <= scores["bleu"] <= 100 and scores["perplexity"] > 1
    code, stdout, err = run_cli("generate", str(out), "red cat", "--max-new-tokens", "4", "--json")
    assert code == 0, err
    assert 0 < json.loads(stdout)["new_tokens"] <= 4


def test_a_row_without_target_is_named(tmp_path, run_cli):
    train = write_jsonl(tmp_path / "train.jsonl", [{"source": "a b", "target": "b a"}, {"source": "c d"}])
    config = tmp_path / "s2s.yaml"
    config.write_text("task: seq2seq\nmodel: {family: transformer, arch: t5, layers: 1, hidden: 16, heads: 2}\n")
    code, _, err = run_cli("train", "--quiet", str(config), f"data.train={train}", f"output={tmp_path / 'run'}")
    assert code == 2 and "train.jsonl:2: missing or empty target field 'target'" in err
    assert not (tmp_path / "run").exists()
