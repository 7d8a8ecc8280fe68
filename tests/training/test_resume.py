"""Resume is exact: a run killed mid-way and resumed ends where an uninterrupted run ends."""

import json
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from conftest import sentiment_rows, tiny_overrides, write_jsonl
from lmforge.tracking.runs_table import list_runs
from lmforge.training.checkpoint import list_checkpoints


def _data(tmp_path):
    return {
        "train": write_jsonl(tmp_path / "train.jsonl", sentiment_rows(200, 0)),
        "dev": write_jsonl(tmp_path / "dev.jsonl", sentiment_rows(16, 1)),
    }


def _overrides(data, out):
    # 50 steps an epoch, a checkpoint every 5, dropout on: RNG state matters for exactness.
    return tiny_overrides(
        data,
        out,
        "train.batch_size=4",
        "train.save_every=5",
        "train.eval_every=20",
        "train.keep_checkpoints=3",
        "train.dropout=0.1",
        "train.grad_accum=1",
    )


def _train(args, **kw):
    config = args[0].split("=", 1)[1].rsplit("/", 1)[0] + "/job.yaml"  # beside train.jsonl
    with open(config, "w") as handle:
        handle.write("task: classification\n")
    cmd = [sys.executable, "-m", "lmforge.cli.main", "train", "--quiet", config, *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _wait_for(path, proc, timeout=120):
    start = time.time()
    while not path.exists():
        assert proc.poll() is None, f"training ended before {path.name} appeared: {proc.stderr.read()}"
        assert time.time() - start < timeout
        time.sleep(0.01)


def _assert_same_run(a, b):
    wa, wb = load_file(a / "model" / "model.safetensors"), load_file(b / "model" / "model.safetensors")
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], atol=1e-6, rtol=0)
    ra = json.loads((a / "eval_results.json").read_text())
    rb = json.loads((b / "eval_results.json").read_text())
    assert ra["validation"]["accuracy"] == rb["validation"]["accuracy"]
    assert ra["validation"]["loss"] == pytest.approx(rb["validation"]["loss"], abs=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize(
    "how,extra,corrupt",
    [("SIGKILL", [], False), ("SIGTERM", [], False), ("SIGKILL", ["train.ema=0.9"], False), ("SIGKILL", [], True)],
    ids=["SIGKILL", "SIGTERM", "SIGKILL-ema", "SIGKILL-damaged-newest"],
)
def test_killed_run_resumes_to_the_same_weights(tmp_path, how, extra, corrupt):
    # With train.ema the saved model is the weight average: it must resume exactly too.
    data = _data(tmp_path)
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    ref = _train(_overrides(data, reference) + extra)
    ref.wait(timeout=300)
    assert ref.returncode == 0, ref.stderr.read()

    proc = _train(_overrides(data, killed) + extra)
    _wait_for(killed / "checkpoints" / "step-35", proc)
    proc.send_signal(getattr(signal, how))
    proc.wait(timeout=60)
    if how == "SIGTERM":
        assert proc.returncode == 143  # stopped, not finished: 128 + SIGTERM
        told = proc.stderr.read()
        assert "resume=true" in told and f"output={killed}" in told  # the command resumes this run
        rows = [json.loads(line) for line in (killed / "metrics.jsonl").read_text().splitlines()]
        assert rows[-1]["kind"] == "stopped" and rows[-1]["signal"] == "SIGTERM"
        listed = next(r for r in list_runs(tmp_path) if r["path"] == str(killed))
        assert listed["status"] == "stopped" and listed["steps"] == rows[-1]["step"]  # not "running"
    else:
        assert proc.returncode == -signal.SIGKILL
    assert not (killed / "eval_results.json").exists()

    if corrupt:  # a disk that lost the newest checkpoint's last write: resume takes the one before
        newest = list_checkpoints(killed / "checkpoints")[-1]
        weights = newest / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:-8] + bytes(8))
    resumed = _train(_overrides(data, killed) + extra + ["resume=true"])
    resumed.wait(timeout=300)
    told = resumed.stderr.read()
    assert resumed.returncode == 0, told
    if corrupt:
        assert f"checkpoint {newest.name} cannot be used (model.safetensors does not match its checksum)" in told
    _assert_same_run(reference, killed)
    # the run ended: its checkpoints keep no optimizer state (train.keep_optimizer: false)
    assert not list((killed / "checkpoints").glob("*/optimizer.safetensors"))
    steps = [
        json.loads(l)["step"]
        for l in (killed / "metrics.jsonl").read_text().splitlines()
        if json.loads(l)["kind"] == "train"
    ]
    assert steps == sorted(set(steps)), "a resumed run logs each step once"
    assert '"stopped"' not in (killed / "metrics.jsonl").read_text()  # the resumed log goes on past the stop


@pytest.mark.slow
def test_non_finite_loss_stops_with_a_checkpoint(tiny_data, tmp_path, run_cli):
    out = tmp_path / "nan"
    config = tmp_path / "job.yaml"
    config.write_text("task: classification\n")
    code, _, err = run_cli(
        "train", "--quiet", str(config), *tiny_overrides(tiny_data, out, "train.lr=1e30", "train.max_grad_norm=null")
    )
    assert code == 3
    assert err.startswith("lmforge: error: non-finite loss") and err.count("\n") == 1
    checkpoints = sorted((out / "checkpoints").iterdir())
    assert checkpoints, "the last good state is kept"
    state = json.loads((checkpoints[-1] / "trainer_state.json").read_text())
    weights = load_file(checkpoints[-1] / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert state["step"] >= 0


@pytest.mark.slow
def test_sigkill_at_random_moments_always_resumes_to_the_same_weights(tmp_path):
    """Killed with SIGKILL at 20 random moments (a checkpoint every 2 steps, so some kills land while
    one is being written) and resumed each time: the folder always resumes, and the run ends on
    the weights of the uninterrupted run."""
    data = _data(tmp_path)
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    extra = ["train.save_every=2", "train.keep_checkpoints=2"]
    started = time.time()
    ref = _train(_overrides(data, reference) + extra)
    ref.wait(timeout=300)
    assert ref.returncode == 0, ref.stderr.read()
    whole = time.time() - started
    rng = random.Random(20261206)
    kills = 0
    for attempt in range(40):
        args = _overrides(data, killed) + extra + (["resume=true"] if attempt else [])
        proc = _train(args)
        if kills < 20:
            time.sleep(rng.uniform(0.3, max(0.6, whole * 0.6)))  # a resumed run has less left to do
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
        proc.wait(timeout=300)
        if proc.returncode == 0:
            break
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
    else:
        pytest.fail("the run never finished")
    assert kills >= 5  # most attempts were cut short
    _assert_same_run(reference, killed)
    assert not list(killed.glob("checkpoints/.tmp-*"))  # no half-written checkpoint left behind


@pytest.mark.slow
def test_an_adapters_checkpoint_holds_the_trained_weights_only_and_resumes_exactly(tmp_path):
    data = _data(tmp_path)
    base = _train(tiny_overrides(data, tmp_path / "base", "train.epochs=1"))  # a "pretrained" folder
    base.wait(timeout=300)
    assert base.returncode == 0, base.stderr.read()
    lora = [f"model={tmp_path / 'base' / 'model'}", "tuning.method=lora", "tuning.r=4", "tuning.dropout=0.0"]
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    ref = _train(_overrides(data, reference)[:2] + _overrides(data, reference)[3:] + lora)
    ref.wait(timeout=300)
    assert ref.returncode == 0, ref.stderr.read()
    first = list_checkpoints(reference / "checkpoints")[0]
    assert json.loads((first / "frozen.json").read_text())["source"] == str((tmp_path / "base" / "model").resolve())
    saved = load_file(first / "model.safetensors")
    assert saved and all("lora_" in k or "classifier" in k or "score" in k for k in saved), sorted(saved)

    args = _overrides(data, killed)[:2] + _overrides(data, killed)[3:] + lora
    proc = _train(args)
    _wait_for(killed / "checkpoints" / "step-35", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    # resumed on another base, the adapter would be applied to other weights: the changed config is
    # refused (the checkpoint's frozen.json names the base it needs)
    other = [a if not a.startswith("model=") else f"model={tmp_path / 'reference' / 'model'}" for a in args]
    refused = _train([*other, "resume=true"])
    refused.wait(timeout=300)
    told = refused.stderr.read()
    assert refused.returncode == 2 and "the config changed (model:" in told, told
    assert not (killed / "eval_results.json").exists()
    resumed = _train([*args, "resume=true"])
    resumed.wait(timeout=300)
    assert resumed.returncode == 0, resumed.stderr.read()
    _assert_same_run(reference, killed)
