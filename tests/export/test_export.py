"""lmforge export --onnx / --quantize on tiny runs: ONNX parity at shapes the export never saw, the
exported folders predicting, evaluating and serving like the run, and the refusals."""

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))

from conftest import TINY_MODEL, sentiment_rows, write_jsonl  # noqa: E402

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

TEXTS = ["a dull , lifeless mess", "an absolute delight", "the cast is wonderful really", "boring"]


def _cli(*argv) -> int:
    from lmforge.cli.main import main

    return main(list(argv))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A sentiment run and an NER run (tiny BERTs, seconds each) and their data."""
    from test_ner_end_to_end import ner_sentences, write_conll

    root = tmp_path_factory.mktemp("export")
    train, dev = (
        write_jsonl(root / "train.jsonl", sentiment_rows(48, 0)),
        write_jsonl(root / "dev.jsonl", sentiment_rows(16, 1)),
    )
    (root / "cls.yaml").write_text("task: classification\n")
    common = ["train.batch_size=8", "train.warmup=0", "train.lr=5e-3", f"model={TINY_MODEL}"]
    assert (
        _cli(
            "train",
            "--quiet",
            str(root / "cls.yaml"),
            f"data.train={train}",
            f"data.validation={dev}",
            "train.epochs=3",
            f"output={root / 'sentiment'}",
            *common,
        )
        == 0
    )
    (root / "ner.yaml").write_text("task: token_classification\n")
    ner_dev = write_conll(root / "ner_dev.conll", ner_sentences(16, 1))
    assert (
        _cli(
            "train",
            "--quiet",
            str(root / "ner.yaml"),
            f"data.train={write_conll(root / 'ner.conll', ner_sentences(48, 0))}",
            f"data.validation={ner_dev}",
            "train.epochs=4",
            f"output={root / 'ner'}",
            *common,
        )
        == 0
    )
    return {"sentiment": root / "sentiment", "ner": root / "ner", "dev": dev, "ner_dev": ner_dev, "root": root}


@pytest.fixture(scope="module")
def onnx_run(runs) -> Path:
    out = runs["root"] / "sentiment_onnx"
    assert _cli("export", str(runs["sentiment"]), "--onnx", "--output", str(out)) == 0
    return out


@pytest.fixture(scope="module")
def int8_run(runs) -> Path:
    out = runs["root"] / "sentiment_int8"
    assert _cli("export", str(runs["sentiment"]), "--quantize", "int8", "--output", str(out)) == 0
    return out


def _eval_json(capsys, run, data) -> dict:
    capsys.readouterr()
    assert _cli("eval", str(run), "--data", str(data), "--json") == 0
    return json.loads(capsys.readouterr().out)


def test_onnx_matches_pytorch_at_unseen_batch_sizes_and_lengths(runs, onnx_run):
    from lmforge.inference.predictor import RunPredictor
    from lmforge.models.onnx_model import OnnxModel

    torch_model = RunPredictor(runs["sentiment"]).model
    onnx = RunPredictor(onnx_run)
    assert isinstance(onnx.model, OnnxModel) and onnx.backend == "onnxruntime"
    g = torch.Generator().manual_seed(1)
    for batch, length in [(1, 2), (9, 23), (4, 77)]:  # none of these is the export's (2, T)
        ids = torch.randint(5, torch_model.config.vocab_size, (batch, length), generator=g)
        mask = torch.ones_like(ids)
        mask[-1, length // 2 :] = 0  # a padded row
        with torch.inference_mode():
            want = torch_model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        got = onnx.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        assert got.logits.shape == want.logits.shape
        assert (got.logits - want.logits).abs().max().item() <= 1e-4
        real = mask.bool()[..., None]
        assert ((got.last_hidden_state - want.hidden_states[-1]).abs() * real).max().item() <= 1e-4
    real = onnx.tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.inference_mode():
        want = torch_model(**real).logits
    assert (onnx.model(**real).logits - want).abs().max().item() <= 1e-4
    summary = json.loads((onnx_run / "export.json").read_text())
    assert [r["model"] for r in summary["rows"]] == ["original", "onnx fp32"]
    assert summary["rows"][1]["parity_max_difference"] <= 1e-4 and summary["rows"][1]["parity_shapes"] >= 4


def test_onnx_folder_is_a_run_folder_that_evaluates_like_the_run(capsys, runs, onnx_run):
    for name in (
        "lmforge.json",
        "config.yaml",
        "model/model.onnx",
        "model/tokenizer.json",
        "model/config.json",
        "export.json",
        "export.md",
        "report.html",
    ):
        assert (onnx_run / name).is_file(), name
    assert json.loads((onnx_run / "lmforge.json").read_text())["export"]["format"] == "onnx"
    want, got = _eval_json(capsys, runs["sentiment"], runs["dev"]), _eval_json(capsys, onnx_run, runs["dev"])
    assert got["accuracy"] == want["accuracy"] and got["confusion_matrix"] == want["confusion_matrix"]
    assert got["loss"] == pytest.approx(want["loss"], abs=1e-4)
    table = (onnx_run / "export.md").read_text()
    assert "| original |" in table and "| onnx fp32 |" in table


def test_onnx_ner_run_evaluates_with_the_same_entity_f1(capsys, runs):
    out = runs["root"] / "ner_onnx"
    assert _cli("export", str(runs["ner"]), "--onnx", "--output", str(out)) == 0
    want, got = _eval_json(capsys, runs["ner"], runs["ner_dev"]), _eval_json(capsys, out, runs["ner_dev"])
    assert got["f1"] == pytest.approx(want["f1"], abs=1e-6) and got["loss"] == pytest.approx(want["loss"], abs=1e-4)


def test_int8_folder_loads_back_exactly_and_predicts(capsys, runs, int8_run):
    from lmforge.inference.predictor import RunPredictor
    from lmforge.models.int8 import quantize_int8

    loaded = RunPredictor(int8_run)
    assert loaded.backend == "torch-int8" and (int8_run / "model/model_int8.safetensors").is_file()
    assert not list((int8_run / "model").glob("*.bin"))
    fresh = quantize_int8(RunPredictor(runs["sentiment"]).model)[0]  # quantized in memory, never saved
    batch = loaded.tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.inference_mode():
        assert torch.equal(loaded.model(**batch).logits, fresh(**batch).logits)
    assert json.loads((int8_run / "lmforge.json").read_text())["quantize"] == "int8"
    row = json.loads((int8_run / "export.json").read_text())["rows"][1]
    assert row["format"] == "torch-int8" and row["size_ratio"] < 1
    capsys.readouterr()
    assert _cli("predict", str(int8_run), "--text", TEXTS[0], "--text", TEXTS[1]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["label"] for r in rows] == [r["label"] for r in loaded.predict(TEXTS[:2])]


@pytest.mark.parametrize("which", ["int8", "onnx_int8"])
def test_exported_folders_serve(runs, int8_run, which):
    from fastapi.testclient import TestClient

    from lmforge.serving.app import ServerState, create_app
    from lmforge.serving.services import open_models
    from lmforge.serving.settings import ServeSettings

    folder = int8_run
    if which == "onnx_int8":
        folder = runs["root"] / "sentiment_onnx_int8"
        if not folder.exists():
            assert _cli("export", str(runs["sentiment"]), "--onnx", "--quantize", "int8", "--output", str(folder)) == 0
    settings = ServeSettings(sources=[f"m={folder}"], api_key="k" * 20)
    settings.check()
    state = ServerState(settings, open_models(settings))
    state.load()
    try:
        with TestClient(create_app(state), headers={"Authorization": "Bearer " + "k" * 20}) as client:
            response = client.post("/v1/classify", json={"model": "m", "input": TEXTS})
            assert response.status_code == 200, response.text
            expected = state.models["m"].predictor.predict(TEXTS)
            assert [r["label"] for r in response.json()["data"]] == [e["label"] for e in expected]
            vectors = client.post("/v1/embeddings", json={"model": "m", "input": TEXTS[:2]})
            assert vectors.status_code == 200, vectors.text
            assert len(vectors.json()["data"][0]["embedding"]) == 32
    finally:
        state.close()


def test_onnx_on_a_causal_lm_run_is_a_one_line_error(tmp_path, capsys):
    run = tmp_path / "chat"
    (run / "model").mkdir(parents=True)
    (run / "model/config.json").write_text("{}")
    (run / "lmforge.json").write_text(json.dumps({"task": "causal_lm", "model": {"family": "transformer"}}))
    assert _cli("export", str(run), "--onnx") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "causal_lm" in err and "encoder" in err
    assert not (run / "export").exists()


def test_int4_without_onnx_is_refused(runs, capsys):
    assert _cli("export", str(runs["sentiment"]), "--quantize", "int4", "--output", str(runs["root"] / "x4")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--onnx" in err
    assert not (runs["root"] / "x4").exists()


def test_a_non_empty_output_is_refused_and_left_alone(runs, tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert _cli("export", str(runs["sentiment"]), "--onnx", "--output", str(out)) == 2
    assert "not empty" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"
    assert not any(p.name.startswith(".tmp-export") for p in tmp_path.iterdir())


def test_a_step_is_one_registration(runs, tmp_path):
    """What --prune or --gguf add: a flag, a function in the list, and a row in the table."""
    import shutil

    from lmforge.export import STEPS, ExportStep

    def copy_step(current, context):
        variant, model_dir = context.new_variant("copied", current.format, current)
        shutil.copytree(Path(current.folder) / "model", model_dir, dirs_exist_ok=True)
        return variant

    step = ExportStep(
        "copy", 35, lambda p: p.add_argument("--copy", action="store_true"), lambda o: bool(o.get("copy")), copy_step
    )
    STEPS.register("copy", step)
    try:
        out = tmp_path / "out"
        assert _cli("export", str(runs["sentiment"]), "--copy", "--output", str(out), "--json") == 0
    finally:
        STEPS.unregister("copy")
    summary = json.loads((out / "export.json").read_text())
    assert summary["steps"] == ["copy"] and [r["model"] for r in summary["rows"]] == ["original", "copied"]
    assert summary["rows"][1]["accuracy"] == summary["rows"][0]["accuracy"]
    assert json.loads((out / "lmforge.json").read_text())["export"]["steps"] == ["copied"]
