"""The ``gpu`` suite: every path on a CUDA device, unchanged. Skipped where torch sees no CUDA
(``pytest -m gpu`` selects it on a GPU machine; it runs in a few minutes).

What it proves: training picks the device and a measured precision and records the CUDA peak; the
BiLSTM-CRF tagger (cuDNN's flattened weights) checkpoints and saves; eval and predict on CUDA agree
with CPU; generation and the server's model service run on CUDA."""

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))

from test_ner_end_to_end import ner_overrides, ner_sentences, write_conll  # noqa: E402

from conftest import TINY_MODEL, sentiment_rows, write_jsonl  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _classification(tmp_path, run_cli, *extra):
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(64, 0))
    dev = write_jsonl(tmp_path / "dev.jsonl", sentiment_rows(24, 1))
    config = tmp_path / "job.yaml"
    config.write_text("task: classification\n")
    out = tmp_path / "run"
    code, _, err = run_cli(
        "train",
        "--quiet",
        str(config),
        f"data.train={train}",
        f"data.validation={dev}",
        f"model={TINY_MODEL}",
        "train.epochs=3",
        "train.batch_size=8",
        "train.lr=3e-3",
        "train.warmup=0",
        f"output={out}",
        *extra,
    )
    assert code == 0, err
    return out, dev


def test_training_on_cuda_measures_precision_and_records_the_peak(tmp_path, run_cli):
    out, dev = _classification(tmp_path, run_cli, "device=cuda", "train.precision=auto")
    summary = json.loads((out / "lmforge.json").read_text())["training"]
    assert summary["precision"]["reason"].startswith("auto: ")
    assert "step_ms" in summary["precision"]  # a GPU always has a candidate, so auto measured
    assert summary["cuda_peak_mb"] > 0
    assert json.loads((out / "eval_results.json").read_text())["validation"]["accuracy"] > 0.8


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_explicit_precisions_train(tmp_path, run_cli, precision):
    if precision == "bf16" and not torch.cuda.is_bf16_supported(including_emulation=False):
        pytest.skip("no native bf16 on this GPU")
    out, _ = _classification(tmp_path, run_cli, "device=cuda", f"train.precision={precision}")
    summary = json.loads((out / "lmforge.json").read_text())["training"]
    assert summary["precision"]["used"] == precision


def test_eval_and_predict_on_cuda_agree_with_cpu(tmp_path, run_cli):
    out, dev = _classification(tmp_path, run_cli, "device=cuda")
    results = {}
    for device in ("cuda", "cpu"):
        code, stdout, err = run_cli("eval", str(out), "--data", str(dev), "--json", "--device", device)
        assert code == 0, err
        results[device] = json.loads(stdout)["accuracy"]
    assert results["cuda"] == results["cpu"]
    code, stdout, err = run_cli("predict", str(out), "--text", "an absolute delight", "--device", "cuda")
    assert code == 0, err
    assert json.loads(stdout)["label"] == "pos"


def test_bilstm_crf_checkpoints_and_saves_on_cuda(tmp_path, run_cli):
    train = write_conll(tmp_path / "train.conll", ner_sentences(48, 0))
    dev = write_conll(tmp_path / "dev.txt", ner_sentences(16, 1))
    out = tmp_path / "lstm"
    code, _, err = run_cli(
        "train",
        "--quiet",
        *ner_overrides(
            train,
            dev,
            out,
            "model={family: lstm, layers: 1, hidden: 32, embedding: 16, vocab_size: 200}",
            "head.crf=true",
            "train.lr=2e-2",
            "train.eval_every=4",
            "device=cuda",
        ),
    )
    assert code == 0, err
    assert list((out / "checkpoints").iterdir())
    code, stdout, err = run_cli("predict", str(out), "--text", "Omar lives in Lima .", "--device", "cuda")
    assert code == 0, err


def test_generation_on_cuda(tmp_path, run_cli):
    rows = [{"text": "the cat sat on the mat . " * 4} for _ in range(32)]
    train = write_jsonl(tmp_path / "lm.jsonl", rows)
    config = tmp_path / "lm.yaml"
    config.write_text("task: causal_lm\n")
    out = tmp_path / "lm"
    code, _, err = run_cli(
        "train",
        "--quiet",
        str(config),
        f"data.train={train}",
        f"data.validation={train}",
        "model={family: transformer, arch: llama, layers: 2, hidden: 32, heads: 2, vocab_size: 200}",
        "train.epochs=2",
        "device=cuda",
        f"output={out}",
    )
    assert code == 0, err
    code, stdout, err = run_cli("generate", str(out), "the cat", "--max-new-tokens", "8", "--device", "cuda")
    assert code == 0, err
    assert stdout.strip()


def test_a_gguf_decodes_on_the_gpu_as_on_the_cpu(tmp_path, run_cli):
    """An f32 GGUF export greedy-decodes the same text on the GPU as on the CPU: on llama.cpp's GPU
    offload where llama-cpp-python has a GPU back end, else (``auto``) on PyTorch on the GPU."""
    pytest.importorskip("llama_cpp")
    rows = [{"text": "the cat sat on the mat . " * 4} for _ in range(32)]
    train = write_jsonl(tmp_path / "lm.jsonl", rows)
    config = tmp_path / "lm.yaml"
    config.write_text("task: causal_lm\n")
    out = tmp_path / "lm"
    model = "model={family: transformer, arch: llama, layers: 2, hidden: 32, heads: 2, vocab_size: 200}"
    code, _, err = run_cli(
        "train", "--quiet", str(config), f"data.train={train}", model, "train.epochs=2", f"output={out}"
    )
    assert code == 0, err
    code, _, err = run_cli("export", str(out), "--gguf", "f32", "--output", str(tmp_path / "gguf"))
    assert code == 0, err
    texts = {}
    for device in ("cpu", "cuda"):
        code, stdout, err = run_cli(
            "generate", str(tmp_path / "gguf"), "the cat", "--max-new-tokens", "8", "--device", device, "--json"
        )
        assert code == 0, err
        texts[device] = json.loads(stdout)["text"]
    assert texts["cuda"] == texts["cpu"]
