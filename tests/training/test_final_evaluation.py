"""The end of a run reuses the loop's last validation evaluation when it is the best checkpoint's,
and the result equals what ``lmforge eval`` computes on the saved model (also after bf16 steps)."""

import json
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
    # the last step is the best: model/ holds best/'s files, linked, not written twice
    linked = (out / "model" / "model.safetensors").stat(), (out / "best" / "model.safetensors").stat()
    assert linked[0].st_ino == linked[1].st_ino


def test_adapters_that_do_not_fold_in_are_evaluated_again_from_the_saved_folder(
    tiny_data, tmp_path, run_cli, saved_evaluations
):
    # under train.ema the loop evaluates the adapters' averaged weights unfolded: the saved model is
    # evaluated from its folder
    _train(run_cli, tiny_data, tmp_path / "lora", "tuning.method=lora", "train.ema=0.9")
    assert len(saved_evaluations) == 1
