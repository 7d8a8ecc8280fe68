"""The run record (``lmforge.json``): typed, versioned, migrated on load.

``tests/fixtures/runs_v1/`` holds run folders written by lmforge 0.1.0 before the typed record
(version 1, no ``record_version``): a tiny BERT classifier and NER tagger trained by the test suite,
and a few-shot prompt run. The golden figures below were measured with that release
(commit 73fcfd0) on the same folders and files.
"""

import json
import shutil
from pathlib import Path

import pytest

from lmforge.errors import RunFolderError
from lmforge.tracking.run_folder import RunFolder
from lmforge.tracking.run_record import RECORD_VERSION, ModelRecord, RunRecord, migrate, read_record

V1 = Path(__file__).parents[1] / "fixtures" / "runs_v1"


@pytest.fixture
def old_runs(tmp_path):
    """A copy of the version-1 run folders (commands may write into a run folder)."""
    target = tmp_path / "runs_v1"
    shutil.copytree(V1, target)
    return target


def test_version_1_records_migrate_and_keep_every_key():
    for name in ("sentiment", "ner", "prompt"):
        original = json.loads((V1 / name / "lmforge.json").read_text(encoding="utf-8"))
        assert "record_version" not in original
        record = read_record(V1 / name)
        assert record.record_version == RECORD_VERSION
        again = record.to_dict()
        # Every key of the old file survives, with its value (typed or kept in ``extra``).
        assert {k: again[k] for k in original} == original, name


def test_migration_fills_what_version_1_left_to_guess():
    prompt = read_record(V1 / "prompt")
    assert prompt.head == "sequence_classification"  # from the task
    assert prompt.max_length == 128  # from the run's own config.yaml, not a reader's guess
    assert prompt.is_prompt_run and prompt.family == "prompt"
    assert prompt.extra["method"] == "prompt/likelihood"
    ner = read_record(V1 / "ner")
    assert ner.task == "token_classification" and ner.head == "token_classification"
    assert ner.head_options == {"crf": False, "scheme": "bio", "window_stride": 32}
    assert ner.model == ModelRecord(
        family="transformer", source="scratch", arch="bert", vocab_size=65, parameters=ner.parameters
    )
    assert ner.label_names == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]


def test_write_then_read_is_the_same_record(tmp_path):
    record = read_record(V1 / "sentiment")
    folder = RunFolder(tmp_path / "run")
    folder.path.mkdir()
    folder.write_record(record)
    assert read_record(folder.path) == record
    assert json.loads(folder.meta.read_text(encoding="utf-8"))["record_version"] == RECORD_VERSION


def test_a_record_from_a_newer_lmforge_is_refused(tmp_path):
    (tmp_path / "lmforge.json").write_text(json.dumps({"task": "classification", "record_version": 99}))
    with pytest.raises(RunFolderError, match="newer lmforge"):
        read_record(tmp_path)


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "unreadable"),
        ("[1, 2]", "not a JSON object"),
        ('{"model": {}}', "no task recorded"),
        (
            '{"task": "classification", "head": "x", "labels": {"names": []}, "max_length": {"a": 1}, '
            '"record_version": 2, "model": []}',
            "not a valid run record",
        ),
    ],
)
def test_a_damaged_record_is_one_clear_error(tmp_path, text, message):
    (tmp_path / "lmforge.json").write_text(text)
    with pytest.raises(RunFolderError, match=message):
        read_record(tmp_path)


def test_migrate_leaves_a_current_record_alone():
    data = RunRecord(task="seq2seq", head="seq2seq").to_dict()
    assert migrate(data) == data


def test_an_old_classifier_evaluates_and_predicts_as_it_did(old_runs, run_cli):
    code, out, err = run_cli("eval", str(old_runs / "sentiment"), "--data", str(old_runs / "dev.jsonl"), "--json")
    assert code == 0, err
    metrics = json.loads(out)
    assert metrics["count"] == 16 and metrics["accuracy"] == 0.5
    assert metrics["loss"] == pytest.approx(0.6935129165649414, abs=1e-6)
    code, out, err = run_cli("predict", str(old_runs / "sentiment"), "--text", "the cast is wonderful")
    assert code == 0, err
    row = json.loads(out)
    assert row["label"] == "pos" and row["score"] == pytest.approx(0.516197, abs=1e-6)


def test_an_old_tagger_evaluates_and_predicts_as_it_did(old_runs, run_cli):
    code, out, err = run_cli("eval", str(old_runs / "ner"), "--data", str(old_runs / "ner_dev.conll"), "--json")
    assert code == 0, err
    metrics = json.loads(out)
    assert metrics["f1"] == pytest.approx(0.9387755102040817, abs=1e-9)
    assert metrics["loss"] == pytest.approx(0.35261696577072144, abs=1e-6)
    code, out, err = run_cli("predict", str(old_runs / "ner"), "--text", "Alice met Bob in Paris .")
    assert code == 0, err
    row = json.loads(out)
    assert [(e["text"], e["label"]) for e in row["entities"]] == [("met", "LOC"), ("Bob", "LOC"), ("Paris", "LOC")]
    assert row["entities"][2]["score"] == pytest.approx(0.535981, abs=1e-6)


def test_old_runs_serve_as_they_predicted(old_runs):
    from fastapi.testclient import TestClient

    from lmforge.serving.app import create_app
    from lmforge.serving.services import open_models
    from lmforge.serving.settings import ServeSettings
    from lmforge.serving.state import ServerState

    # float32: the scores predict gave (dtype auto serves in bf16 where the CPU computes it natively)
    settings = ServeSettings(sources=[str(old_runs / "sentiment"), str(old_runs / "ner")], dtype="float32")
    settings.check()
    state = ServerState(settings, open_models(settings))
    state.load()
    try:
        with TestClient(create_app(state)) as client:
            reply = client.post("/v1/classify", json={"model": "sentiment", "input": ["the cast is wonderful"]})
            assert reply.status_code == 200, reply.text
            assert reply.json()["data"][0]["score"] == pytest.approx(0.516197, abs=1e-6)
            reply = client.post("/v1/ner", json={"model": "ner", "input": ["Alice met Bob in Paris ."]})
            assert reply.status_code == 200, reply.text
            entities = reply.json()["data"][0]["entities"]
            assert [(e["text"], e["label"]) for e in entities] == [("met", "LOC"), ("Bob", "LOC"), ("Paris", "LOC")]
    finally:
        state.close()
