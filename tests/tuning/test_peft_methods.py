"""Every tuning method on a tiny causal LM: a few real steps change only the parameters the method
owns, the run's saved model reproduces the trained one, and LoRA/AdaLoRA/IA3 merge exactly."""

import json

import pytest
import torch

from conftest import tiny_llama, write_jsonl
from lmforge.config import load_config
from lmforge.models import load_saved
from lmforge.tracking.run_record import read_record
from lmforge.training.finish import cleanup
from lmforge.training.job import setup
from lmforge.training.loop import run_loop
from lmforge.training.signals import StopRequest

OWN = {
    "lora": ("lora_",),
    "adalora": ("lora_",),
    "ia3": ("ia3_",),
    "prefix": ("prompt_encoder",),
    "prompt": ("prompt_encoder",),
    "ptuning": ("prompt_encoder",),
    "freeze": ("model.layers.1.",),
    "full": ("",),
}


def _config(tmp_path, method):
    rows = [
        {"instruction": f"say {w}", "output": f"{w} {w}"} for w in ["red", "blue", "green", "cat", "dog", "sun"]
    ] * 4
    train = write_jsonl(tmp_path / "sft.jsonl", rows)
    path = tmp_path / "c.yaml"
    path.write_text(
        "task: causal_lm\n"
        f"data: {{train: {train}, split: 0.25}}\n"
        "model: {family: transformer, arch: llama, layers: 2, hidden: 32, heads: 2, vocab_size: 300}\n"
        f"tuning: {{method: {method}, r: 4, target: {'all-linear' if method in ('lora', 'adalora') else 'auto'}, "
        "num_virtual_tokens: 4, trainable_layers: 1}\n"
        # precision fp32: under auto a bf16 run's trained model computes in bf16, its saved copy in fp32
        "train: {epochs: 5, max_steps: 4, batch_size: 4, lr: 0.01, warmup: 0, max_length: 64, seed: 1, precision: fp32}\n"
        f"output: {tmp_path / 'run'}\n"
    )
    return load_config(path, [])


@pytest.mark.parametrize("method", sorted(OWN))
def test_only_the_methods_parameters_change(tmp_path, method):
    job = setup(_config(tmp_path, method))
    before = {n: p.detach().clone() for n, p in job.model.named_parameters()}
    with StopRequest() as stop:
        state = run_loop(job, stop, quiet=True)
    assert state.step == 4
    changed = {n for n, p in job.model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed, f"{method}: nothing trained"
    stray = [n for n in changed if not any(key in n for key in OWN[method])]
    assert not stray, f"{method} changed parameters it does not own: {stray[:3]}"
    if method == "ia3":
        assert any("ia3_" in n for n in changed)
    # The saved model (merged, or base + prompts) computes what the trained model computes.
    cleanup(job, state)
    run = tmp_path / "run"
    saved = load_saved(run / "model", read_record(run)).model.eval()
    model = job.accelerator.unwrap_model(job.model).eval()
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        torch.testing.assert_close(saved(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-4, rtol=1e-4)


def test_export_merge_folds_lora_into_a_plain_model(tmp_path, run_cli):
    import transformers

    from lmforge.tokenization.bpe import train_bpe

    # A small "pretrained" base folder, as a user's local model would be.
    base = tmp_path / "base"
    tokenizer = train_bpe(["say red red", "say blue blue", "say green green"] * 20, vocab_size=300)
    model = tiny_llama(len(tokenizer))
    model.save_pretrained(base)
    tokenizer.save_pretrained(base)
    rows = [{"instruction": f"say {w}", "output": f"{w} {w}"} for w in ["red", "blue", "green"]] * 6
    train = write_jsonl(tmp_path / "sft.jsonl", rows)
    config = tmp_path / "c.yaml"
    config.write_text("task: causal_lm\n")
    run = tmp_path / "run"
    code, _, err = run_cli(
        "train",
        "--quiet",
        str(config),
        f"data.train={train}",
        f"model={base}",
        "tuning.method=lora",
        "tuning.target=all-linear",
        "train.max_steps=3",
        "train.lr=0.01",
        "data.max_length=64",
        f"output={run}",
    )
    assert code == 0, err
    code, stdout, err = run_cli("export", str(run), "--merge", "--output", str(tmp_path / "merged"))
    assert code == 0, err
    assert "agree within" in stdout
    # the export folder is a run folder; its model/ is a plain Hugging Face folder
    merged = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "merged" / "model").eval()
    assert (tmp_path / "merged" / "lmforge.json").is_file() and (tmp_path / "merged" / "export.md").is_file()
    saved = transformers.AutoModelForCausalLM.from_pretrained(run / "model").eval()
    ids = torch.tensor([[3, 4, 5, 6]])
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, saved(input_ids=ids).logits, atol=1e-5, rtol=1e-5)
    # Not again over a full folder; and a run without an adapter says so.
    code, _, err = run_cli("export", str(run), "--merge", "--output", str(tmp_path / "merged"))
    assert code != 0 and "not empty" in err
