"""Shared fixtures: tiny real-looking data sets and a CLI runner."""

import json
import random
from pathlib import Path

import pytest

from lmforge.cli.main import main

POS = [
    "a gripping , beautifully acted film",
    "funny and warm from start to finish",
    "one of the best movies of the year",
    "a smart , moving story",
    "the cast is wonderful",
    "an absolute delight",
    "sharp writing and great music",
    "i loved every minute of it",
]
NEG = [
    "a dull , lifeless mess",
    "the plot makes no sense at all",
    "two hours i will never get back",
    "badly written and worse acted",
    "boring , slow and far too long",
    "a tired , predictable sequel",
    "the jokes fall flat",
    "i walked out halfway",
]
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def sentiment_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        positive = i % 2 == 1
        text = rng.choice(POS if positive else NEG) + " " + rng.choice(["", "really", "truly", "overall"])
        rows.append({"text": text.strip(), "label": "pos" if positive else "neg"})
    return rows


@pytest.fixture
def tiny_data(tmp_path) -> dict:
    """train.jsonl (48 rows), dev.jsonl (16 rows), 2 labels."""
    return {
        "train": write_jsonl(tmp_path / "train.jsonl", sentiment_rows(48, 0)),
        "dev": write_jsonl(tmp_path / "dev.jsonl", sentiment_rows(16, 1)),
        "dir": tmp_path,
    }


TINY_MODEL = "{family: transformer, arch: bert, layers: 2, hidden: 32, heads: 2, vocab_size: 200}"


def tiny_overrides(data: dict, output: Path, *extra: str) -> list[str]:
    return [
        f"data.train={data['train']}",
        f"data.validation={data['dev']}",
        f"model={TINY_MODEL}",
        "train.epochs=2",
        "train.batch_size=8",
        "train.lr=3e-3",
        "train.warmup=0",
        f"output={output}",
        *extra,
    ]


@pytest.fixture
def run_cli(capsys):
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""

    def run(*argv: str):
        code = main(list(argv))
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def tiny_llama(vocab: int = 50, seed: int = 0, **extra):
    """A 2-layer, width-32 Llama causal LM (random weights, eval mode); ``extra`` overrides its config."""
    import torch
    import transformers

    torch.manual_seed(seed)
    fields = dict(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**{**fields, **extra})).eval()


def tiny_bert_config(**extra):
    """A 2-layer, width-32 BERT config without dropout (outputs compare exactly)."""
    from transformers import BertConfig

    return BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        **extra,
    )
