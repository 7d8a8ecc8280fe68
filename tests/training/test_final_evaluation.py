"""The end of a run reuses the loop's last validation evaluation when it is the best checkpoint's,
and the result equals what ``lmforge eval`` computes on the saved model (also after bf16 steps)."""

import json
import os
from types import SimpleNamespace

import pytest

from conftest import tiny_overrides
from lmforge.inference import evaluate as evaluate_module
from lmforge.inference.precision import cpu_has_native_bf16
from lmforge.training import finish
from lmforge.training.finish import final_validation


def _train(run_cli, tiny_data, out, *extra: str) -> None:
    (tiny_data["dir"] / "job.yaml").write_text("task: classification\n")
    code, _, err = run_cli(
        "train",
        "--quiet",
        str(tiny_data["dir"] / "job.yaml"),
        *tiny_overrides(tiny_data, out, "train.epochs=1", *extra),
    )
    assert code == 0, err


@pytest.fixture
def saved_evaluations(monkeypatch):
    """Counts the reloads of a saved model for evaluation at the end of a run."""
    calls = []
    real = evaluate_module.evaluate_saved

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(finish, "evaluate_saved", counting)
    return calls


@pytest.mark.parametrize("method", ["full", "lora"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_last_step_evaluation_is_reused_and_matches_lmforge_eval(
    precision, method, tiny_data, tmp_path, run_cli, saved_evaluations
):
    # LoRA: the last step evaluates the copy with the adapters folded in, which is what the run saves
    out = tmp_path / precision
    _train(run_cli, tiny_data, out, f"train.precision={precision}", f"tuning.method={method}")
    assert saved_evaluations == []  # the one evaluation of the last (= best) step was reused
    saved = json.loads((out / "eval_results.json").read_text())["validation"]
    code, stdout, err = run_cli("eval", str(out), "--data", str(tiny_data["dev"]), "--json")
    assert code == 0, err
    fresh = json.loads(stdout)
    for key in ("accuracy", "macro_f1", "loss"):
        assert saved[key] == pytest.approx(fresh[key], abs=1e-5), key
    training = json.loads((out / "lmforge.json").read_text())["training"]
    # bf16 steps are evaluated in bf16 where the CPU computes it natively, as `lmforge eval` does
    native = precision == "bf16" and cpu_has_native_bf16()
    assert training["eval_precision"]["used"] == ("bf16" if native else "fp32")
    assert training["batches"].startswith("training batches: ")  # padded or packed, and why, on record
    assert "first token only" in training["batches"]
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 16 and {row["split"] for row in rows} == {"validation"}
    # the last step is the best: model/ holds best/'s files; the weights linked, not written twice
    # (copied where the file system has no hard links), the small files copied
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        assert (out / "model" / name).read_bytes() == (out / "best" / name).read_bytes(), name
    weights = (out / "model" / "model.safetensors").stat(), (out / "best" / "model.safetensors").stat()
    assert weights[0].st_ino == weights[1].st_ino or not links_work(tmp_path)
    config = (out / "model" / "config.json").stat(), (out / "best" / "config.json").stat()
    assert config[0].st_ino != config[1].st_ino  # writing model/'s config never changes best/'s


def test_adapters_that_do_not_fold_in_are_evaluated_again_from_the_saved_folder(
    tiny_data, tmp_path, run_cli, saved_evaluations
):
    # under train.ema the loop evaluates the adapters' averaged weights unfolded: the saved model is
    # evaluated from its folder
    _train(run_cli, tiny_data, tmp_path / "lora", "tuning.method=lora", "train.ema=0.9")
    assert len(saved_evaluations) == 1


def test_reused_only_when_the_last_step_is_the_best():
    result = object()
    job = SimpleNamespace(final_validation=(40, result), tracker=SimpleNamespace(best_step=40))
    assert final_validation(job, SimpleNamespace(step=40), "best") is result
    assert final_validation(job, SimpleNamespace(step=40), "model") is None  # no best/ folder
    job.tracker.best_step = 20  # an earlier epoch was better: best/ holds other weights
    assert final_validation(job, SimpleNamespace(step=40), "best") is None
    job.tracker.best_step, job.final_validation = 48, (40, result)  # stopped before the last step
    assert final_validation(job, SimpleNamespace(step=48), "best") is None
    job.final_validation = None
    assert final_validation(job, SimpleNamespace(step=40), "best") is None


def test_eval_in_full_precision_on_request(tiny_data, tmp_path, run_cli):
    out = tmp_path / "bf16"
    _train(run_cli, tiny_data, out, "train.precision=bf16")
    saved = json.loads((out / "eval_results.json").read_text())["validation"]
    code, stdout, err = run_cli("eval", str(out), "--data", str(tiny_data["dev"]), "--json", "--precision", "fp32")
    assert code == 0, err
    assert json.loads(stdout)["loss"] == pytest.approx(saved["loss"], abs=0.05)  # bf16 rounding apart
    code, _, err = run_cli("predict", str(out), "--text", "fine", "--precision", "fp16", "--device", "cpu")
    assert code != 0 and "--precision fp16 runs on CUDA only" in err


def links_work(folder) -> bool:
    """Whether the file system under ``folder`` makes hard links."""
    (folder / "link-probe").write_text("x")
    try:
        os.link(folder / "link-probe", folder / "link-probe-2")
    except OSError:
        return False
    return True
