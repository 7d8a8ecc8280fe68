"""n-gram classification and CRF NER runs answer the server's task routes like any run."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conftest import sentiment_rows, write_jsonl  # noqa: E402
from lmforge.cli.main import main  # noqa: E402

API_KEY = "test-key-0123456789"


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from fastapi.testclient import TestClient
    from test_ner_end_to_end import ner_sentences, write_conll

    from lmforge.serving.app import create_app
    from lmforge.serving.services import open_models
    from lmforge.serving.settings import ServeSettings
    from lmforge.serving.state import ServerState

    root = tmp_path_factory.mktemp("ngram_served")
    config = root / "cls.yaml"
    config.write_text("task: classification\n")
    assert (
        main(
            [
                "train",
                "--quiet",
                str(config),
                f"data.train={write_jsonl(root / 't.jsonl', sentiment_rows(48, 0))}",
                "model={family: ngram, min_df: 1, C: 10}",
                f"output={root / 'sentiment'}",
            ]
        )
        == 0
    )
    config = root / "ner.yaml"
    config.write_text("task: token_classification\n")
    assert (
        main(
            [
                "train",
                "--quiet",
                str(config),
                f"data.train={write_conll(root / 'n.conll', ner_sentences(40, 0))}",
                "model={family: ngram, min_df: 1, max_iterations: 50}",
                f"output={root / 'ner'}",
            ]
        )
        == 0
    )
    settings = ServeSettings(sources=[str(root / "sentiment"), str(root / "ner")], api_key=API_KEY)
    settings.check()
    state = ServerState(settings, open_models(settings))
    state.load()
    with TestClient(create_app(state), headers={"Authorization": f"Bearer {API_KEY}"}) as test_client:
        test_client.runs = root
        yield test_client
    state.close()


def test_classify_and_ner_routes(client):
    response = client.post(
        "/v1/classify", json={"model": "sentiment", "input": ["an absolute delight", "the jokes fall flat"]}
    )
    assert response.status_code == 200
    assert [row["label"] for row in response.json()["data"]] == ["pos", "neg"]
    response = client.post("/v1/ner", json={"model": "ner", "input": ["Mary visited Berlin on Monday ."]})
    assert response.status_code == 200
    entities = response.json()["data"][0]["entities"]
    assert [(e["label"], e["start"], e["end"]) for e in entities] == [("PER", 0, 4), ("LOC", 13, 19)]


def test_entity_bias_refuses_the_one_pass_tagger(client):
    from lmforge.errors import ConfigError
    from lmforge.serving.services import open_models
    from lmforge.serving.settings import ServeSettings

    settings = ServeSettings(sources=[str(client.runs / "ner")], entity_bias=1.0)
    with pytest.raises(ConfigError, match="decodes in one pass and takes no bias"):
        open_models(settings)
