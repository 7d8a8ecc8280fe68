"""An ensemble served as one model (``lmforge serve NAME=RUN1+RUN2``): /v1/ner answers what
``lmforge predict RUN1 --ensemble RUN2`` does; members that cannot be averaged fail before start-up."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conftest import sentiment_rows, write_jsonl  # noqa: E402
from lmforge.cli.main import main  # noqa: E402

API_KEY = "test-key-0123456789"
LSTM = "model={family: lstm, layers: 1, hidden: 32, embedding: 16, vocab_size: 200}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    from test_ner_end_to_end import ner_sentences, write_conll

    root = tmp_path_factory.mktemp("ensemble_served")
    ner, dev = write_conll(root / "n.conll", ner_sentences(48, 0)), write_conll(root / "d.conll", ner_sentences(16, 1))
    config = root / "ner.yaml"
    config.write_text("task: token_classification\n")
    for name, extra in (("a", ["head.crf=true"]), ("b", ["train.seed=7"])):
        assert (
            main(
                [
                    "train",
                    "--quiet",
                    str(config),
                    f"data.train={ner}",
                    f"data.validation={dev}",
                    LSTM,
                    "train.epochs=6",
                    "train.batch_size=8",
                    "train.lr=2e-2",
                    "train.warmup=0",
                    "train.threads=1",
                    f"output={root / name}",
                    *extra,
                ]
            )
            == 0
        )
    other = write_conll(
        root / "gpe.conll", [(t, [g.replace("LOC", "GPE") for g in tags]) for t, tags in ner_sentences(24, 0)]
    )
    assert (
        main(
            [
                "train",
                "--quiet",
                str(config),
                f"data.train={other}",
                LSTM,
                "train.epochs=1",
                "train.threads=1",
                f"output={root / 'gpe'}",
            ]
        )
        == 0
    )
    config = root / "cls.yaml"
    config.write_text("task: classification\n")
    assert (
        main(
            [
                "train",
                "--quiet",
                str(config),
                f"data.train={write_jsonl(root / 't.jsonl', sentiment_rows(32, 0))}",
                LSTM,
                "train.epochs=1",
                "train.threads=1",
                f"output={root / 'sentiment'}",
            ]
        )
        == 0
    )
    return {"a": root / "a", "b": root / "b", "sentiment": root / "sentiment", "gpe": root / "gpe"}


def test_served_ensemble_answers_as_predict_ensemble_does(runs):
    from fastapi.testclient import TestClient

    from lmforge.inference.ensemble import EnsemblePredictor
    from lmforge.inference.predictor import RunPredictor
    from lmforge.serving.app import create_app
    from lmforge.serving.services import open_models
    from lmforge.serving.settings import ServeSettings
    from lmforge.serving.state import ServerState

    settings = ServeSettings(sources=[f"{runs['a']}+{runs['b']}", f"solo={runs['a']}"], api_key=API_KEY)
    settings.check()
    models = open_models(settings)
    assert list(models) == ["a+b", "solo"]
    state = ServerState(settings, models)
    state.load()
    texts = ["Omar lives in Lima .", "In Cape Town , Li Wei said hello .", ""]
    expected = EnsemblePredictor([RunPredictor(str(runs["a"])), RunPredictor(str(runs["b"]))]).predict_entities(texts)
    try:
        with TestClient(create_app(state), headers={"Authorization": f"Bearer {API_KEY}"}) as client:
            response = client.post("/v1/ner", json={"model": "a+b", "input": texts})
            assert response.status_code == 200, response.text
            got = [row["entities"] for row in response.json()["data"]]
            assert got == [row["entities"] for row in expected]
            assert {(e["text"], e["label"]) for e in got[0]} == {("Omar", "PER"), ("Lima", "LOC")}
            listed = {m["id"] for m in client.get("/v1/models").json()["data"]}
            assert listed == {"a+b", "solo"}
            refused = client.post("/v1/embeddings", json={"model": "a+b", "input": "Lima"})
            assert refused.status_code == 400 and "does not serve /v1/embeddings" in refused.text
    finally:
        state.close()


def test_members_that_cannot_be_averaged_fail_in_one_line(runs, run_cli, tmp_path):
    code, _, err = run_cli("serve", f"{runs['a']}+{runs['sentiment']}")
    assert code == 2 and "must all be classification or all token_classification runs" in err, err
    assert len(err.strip().splitlines()) == 1
    code, _, err = run_cli("serve", f"zh={runs['a']}+{runs['gpe']}")
    assert code == 2 and "its labels are not those of" in err and len(err.strip().splitlines()) == 1, err
    code, _, err = run_cli("serve", f"{runs['a']}+{tmp_path / 'nope'}")
    assert code != 0 and "nope" in err and len(err.strip().splitlines()) == 1, err
    code, _, err = run_cli("serve", f"{runs['a']}+")
    assert code != 0 and "no empty member" in err, err


def test_served_entity_bias_decodes_as_predict_does(runs):
    """``serve --entity-bias B`` answers /v1/ner as ``predict --entity-bias B`` does, for a single run and
    an ensemble; classification models beside them are untouched."""
    from fastapi.testclient import TestClient

    from lmforge.inference.ensemble import EnsemblePredictor
    from lmforge.inference.predictor import RunPredictor
    from lmforge.serving.app import create_app
    from lmforge.serving.services import open_models
    from lmforge.serving.settings import ServeSettings
    from lmforge.serving.state import ServerState

    texts = ["Omar lives in Lima .", "In Cape Town , Li Wei said hello to the old man .", "nothing here at all ."]
    bias = 4.0
    single = RunPredictor(str(runs["b"]))
    plain = single.predict_entities(texts)
    single.task.entity_bias = bias
    biased = single.predict_entities(texts)
    assert biased != plain  # the bias is large enough to change what is found
    pair = EnsemblePredictor([RunPredictor(str(runs["a"])), RunPredictor(str(runs["b"]))])
    pair.task.entity_bias = bias
    pair_biased = pair.predict_entities(texts)

    settings = ServeSettings(
        sources=[f"solo={runs['b']}", f"pair={runs['a']}+{runs['b']}", f"sent={runs['sentiment']}"],
        api_key=API_KEY,
        entity_bias=bias,
    )
    settings.check()
    state = ServerState(settings, open_models(settings))
    state.load()
    try:
        with TestClient(create_app(state), headers={"Authorization": f"Bearer {API_KEY}"}) as client:
            for name, expected in (("solo", biased), ("pair", pair_biased)):
                response = client.post("/v1/ner", json={"model": name, "input": texts})
                assert response.status_code == 200, response.text
                assert [row["entities"] for row in response.json()["data"]] == [r["entities"] for r in expected]
            response = client.post("/v1/classify", json={"model": "sent", "input": ["good film"]})
            assert response.status_code == 200, response.text
            cards = {c["id"]: c for c in client.get("/v1/models").json()["data"]}
            assert cards["solo"]["entity_bias"] == cards["pair"]["entity_bias"] == bias
            assert cards["sent"]["entity_bias"] is None
    finally:
        state.close()


def test_entity_bias_without_a_tagger_or_not_finite_fails_in_one_line(runs, run_cli):
    code, _, err = run_cli("serve", str(runs["sentiment"]), "--entity-bias", "1")
    assert code == 2 and "applies to NER (token_classification) runs" in err, err
    assert len(err.strip().splitlines()) == 1
    code, _, err = run_cli("serve", str(runs["a"]), "--entity-bias", "nan")
    assert code == 2 and "give a finite number" in err and len(err.strip().splitlines()) == 1, err


def test_served_vote_answers_as_predict_combine_vote_does(runs):
    from fastapi.testclient import TestClient

    from lmforge.inference.ensemble import EnsemblePredictor
    from lmforge.inference.predictor import RunPredictor
    from lmforge.serving.app import create_app
    from lmforge.serving.services import open_models
    from lmforge.serving.settings import ServeSettings
    from lmforge.serving.state import ServerState

    texts = ["Omar lives in Lima .", "In Cape Town , Li Wei said hello to the old man ."]
    pair = [RunPredictor(str(runs["a"])), RunPredictor(str(runs["b"]))]
    voted = EnsemblePredictor(pair, "vote").predict_entities(texts)
    # two members: a span stays only where both predict it
    for row, a, b in zip(voted, pair[0].predict_entities(texts), pair[1].predict_entities(texts)):
        keys = [{(e["label"], e["start"], e["end"]) for e in r["entities"]} for r in (a, b)]
        assert {(e["label"], e["start"], e["end"]) for e in row["entities"]} == keys[0] & keys[1]
    settings = ServeSettings(
        sources=[f"pair={runs['a']}+{runs['b']}", f"solo={runs['a']}"], api_key=API_KEY, combine="vote"
    )
    settings.check()
    state = ServerState(settings, open_models(settings))
    state.load()
    try:
        with TestClient(create_app(state), headers={"Authorization": f"Bearer {API_KEY}"}) as client:
            response = client.post("/v1/ner", json={"model": "pair", "input": texts})
            assert response.status_code == 200, response.text
            assert [row["entities"] for row in response.json()["data"]] == [r["entities"] for r in voted]
            cards = {c["id"]: c for c in client.get("/v1/models").json()["data"]}
            assert cards["pair"]["combine"] == "vote" and cards["solo"]["combine"] is None
    finally:
        state.close()


def test_vote_without_an_ensemble_fails_in_one_line(runs, run_cli):
    code, _, err = run_cli("serve", str(runs["a"]), "--combine", "vote")
    assert code == 2 and "combines the members of an ensemble" in err and len(err.strip().splitlines()) == 1, err
