"""The export pipeline's prune and gguf steps through the CLI: a pruned run folder, a GGUF beside a
from-scratch Llama's model, and one-line refusals."""

import json

import pytest
import transformers
from run_fixtures import tiny_run  # noqa: F401  (fixture)

from conftest import write_jsonl
from lmforge.export.prune import sparsity


def test_export_prune_with_recovery(tiny_run, tmp_path, run_cli):
    out = tmp_path / "pruned"
    code, stdout, err = run_cli(
        "export", str(tiny_run), "--prune", "0.3", "--recover-steps", "3", "--output", str(out), "--json"
    )
    assert code == 0, err
    rows = json.loads(stdout)["rows"]
    assert rows[-1]["sparsity"] == pytest.approx(0.3, abs=1e-3) and rows[-1]["mask_kept"]
    model = transformers.AutoModelForSequenceClassification.from_pretrained(out / "model")
    assert sparsity(model) == pytest.approx(0.3, abs=1e-3)
    meta = json.loads((out / "lmforge.json").read_text())
    assert meta["export"]["prune"]["recovery"]["steps"] == 3


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--prune", "1.5"], "--prune 1.5"),
        (["--prune", "0.3", "--recover-steps", "-1"], "--recover-steps"),
        (["--gguf"], "Llama-style"),
    ],
)
def test_bad_requests_are_one_line_errors(tiny_run, tmp_path, run_cli, flags, message):
    code, _, err = run_cli("export", str(tiny_run), *flags, "--output", str(tmp_path / "x"))
    assert code != 0 and err.strip().splitlines()[-1].startswith("lmforge: error:") and message in err
    assert not (tmp_path / "x").exists()


def test_export_gguf_of_a_scratch_llama_run(tmp_path, run_cli):
    rows = [{"text": t} for t in ["the cat sat on the mat", "a dog ran in the park", "birds sing at dawn"] * 8]
    train = write_jsonl(tmp_path / "corpus.jsonl", rows)
    config = tmp_path / "lm.yaml"
    config.write_text(
        "task: causal_lm\n"
        f"data: {{train: {train}}}\n"
        "model: {family: transformer, arch: llama, layers: 2, hidden: 32, heads: 2, vocab_size: 300}\n"
        "train: {epochs: 1, max_steps: 2, batch_size: 4, lr: 0.01, warmup: 0, max_length: 32}\n"
        f"output: {tmp_path / 'run'}\n"
    )
    code, _, err = run_cli("train", str(config), "--quiet")
    assert code == 0, err
    out = tmp_path / "gguf"
    code, stdout, err = run_cli("export", str(tmp_path / "run"), "--gguf", "f32", "--output", str(out), "--json")
    assert code == 0, err
    row = json.loads(stdout)["rows"][-1]
    assert row["gguf"] == "model.f32.gguf" and row["max_abs_logit_difference"] <= 1e-5
    assert (out / "model.f32.gguf").is_file() and (out / "model" / "config.json").is_file()
    loaded = transformers.AutoModelForCausalLM.from_pretrained(out, gguf_file="model.f32.gguf")
    assert loaded.config.num_hidden_layers == 2
