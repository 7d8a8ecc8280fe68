"""Tiny trained runs (classification, NER, SFT chat) served in-process, shared by the serving tests
(a module the tests import fixtures from, not a conftest: a second ``conftest`` module would shadow
the top one that other tests import helpers from)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conftest import TINY_MODEL, sentiment_rows, write_jsonl  # noqa: E402
from lmforge.cli.main import main  # noqa: E402

API_KEY = "test-key-0123456789"


def _train(*argv: str) -> None:
    assert main(["train", "--quiet", *argv]) == 0


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Three runs of a few seconds each: sentiment (tiny BERT), NER (tiny BERT), chat SFT (tiny Llama)."""
    from test_ner_end_to_end import ner_sentences, write_conll

    root = tmp_path_factory.mktemp("served")
    train, dev = (
        write_jsonl(root / "train.jsonl", sentiment_rows(48, 0)),
        write_jsonl(root / "dev.jsonl", sentiment_rows(16, 1)),
    )
    common = ["train.batch_size=8", "train.warmup=0", "train.lr=5e-3"]
    config = root / "cls.yaml"
    config.write_text("task: classification\n")
    _train(
        str(config),
        f"data.train={train}",
        f"data.validation={dev}",
        f"model={TINY_MODEL}",
        "train.epochs=2",
        f"output={root / 'sentiment'}",
        *common,
    )
    config = root / "ner.yaml"
    config.write_text("task: token_classification\n")
    _train(
        str(config),
        f"data.train={write_conll(root / 'ner.conll', ner_sentences(48, 0))}",
        f"data.validation={write_conll(root / 'ner_dev.conll', ner_sentences(16, 1))}",
        f"model={TINY_MODEL}",
        "train.epochs=4",
        f"output={root / 'ner'}",
        *common,
    )
    rows = [{"instruction": f"what is {a} plus {b}", "output": f"{a + b}"} for a in range(6) for b in range(6)]
    config = root / "sft.yaml"
    config.write_text(
        "task: causal_lm\nmodel: {family: transformer, arch: llama, layers: 2, hidden: 32, heads: 2, vocab_size: 300, "
        "max_position: 1024}\n"
    )
    _train(
        str(config),
        f"data.train={write_jsonl(root / 'sft.jsonl', rows)}",
        "data.split=0.2",
        "train.epochs=2",
        "data.max_length=64",
        f"output={root / 'chat'}",
        *common,
    )
    return {"sentiment": root / "sentiment", "ner": root / "ner", "chat": root / "chat"}


def make_state(runs, **settings):
    from lmforge.serving.services import open_models
    from lmforge.serving.settings import ServeSettings
    from lmforge.serving.state import ServerState

    options = {"sources": [str(runs["sentiment"]), str(runs["ner"]), str(runs["chat"])], "api_key": API_KEY}
    options.update(settings)
    config = ServeSettings(**options)
    config.check()
    state = ServerState(config, open_models(config))
    state.load()
    return state


@pytest.fixture(scope="session")
def state(runs):
    state = make_state(runs)
    yield state
    state.close()


@pytest.fixture(scope="session")
def client(state):
    from fastapi.testclient import TestClient

    from lmforge.serving.app import create_app

    with TestClient(create_app(state), headers={"Authorization": f"Bearer {API_KEY}"}) as test_client:
        yield test_client
