"""tracking: [mlflow]: a tiny run logged to MLflow's default local store (SQLite beside the run
folder), read back with MLflow's own client: parameters, the metric history of metrics.jsonl, the
final evaluation and the report and model artifacts."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conftest import sentiment_rows, tiny_overrides, write_jsonl  # noqa: E402

mlflow = pytest.importorskip("mlflow")


def test_a_run_is_tracked_in_a_local_mlflow_store(tiny_data, run_cli, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "lmforge-test")
    config = tiny_data["dir"] / "c.yaml"
    config.write_text("task: classification\ntracking: [mlflow]\n")
    out = tiny_data["dir"] / "run"
    code, _, err = run_cli("train", str(config), *tiny_overrides(tiny_data, out), "--quiet")
    assert code == 0, err
    assert not (out / "events").exists()  # tensorboard was not asked for
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tiny_data['dir'] / 'mlflow.db'}")
    run_id = (out / "mlflow-run-id").read_text().strip()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert float(run.data.params["train.lr"]) == pytest.approx(3e-3) and run.data.params["task"] == "classification"
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in logged if r["kind"] == "train" and "loss" in r]
    history = client.get_metric_history(run_id, "train/loss")
    assert [(m.step, m.value) for m in history] == [(r["step"], pytest.approx(r["loss"])) for r in train]
    evals = [r for r in logged if r["kind"] == "eval"]
    assert [m.value for m in client.get_metric_history(run_id, "validation/accuracy")] == pytest.approx(
        [r["accuracy"] for r in evals]
    )
    final = json.loads((out / "eval_results.json").read_text())["validation"]
    assert run.data.metrics["final/validation/accuracy"] == pytest.approx(final["accuracy"])
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"report.html", "lmforge.json", "config.yaml", "model"} <= artifacts
    assert "model/model.safetensors" in {a.path for a in client.list_artifacts(run_id, "model")}
    code, listed, _ = run_cli("runs", str(tiny_data["dir"]), "--json")
    assert code == 0 and [row["run"] for row in json.loads(listed)] == ["run"]  # MLflow's copy is not a run


def test_a_store_mlflow_refuses_is_one_line(tiny_data, run_cli, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())  # the file store: refused
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    config = tiny_data["dir"] / "c.yaml"
    config.write_text("task: classification\ntracking: [mlflow]\n")
    out = tiny_data["dir"] / "run"
    code, _, err = run_cli("train", str(config), *tiny_overrides(tiny_data, out), "--quiet")
    assert code != 0 and err.startswith("lmforge: error: tracking: mlflow:") and len(err.strip().splitlines()) == 1
    assert not out.exists()  # refused before anything was written: the same command runs once fixed


def test_a_tracker_failing_mid_run_is_dropped_and_the_run_finishes(tiny_data, run_cli, monkeypatch):
    """An MLflow server going away during training: a warning, the run goes on to its end."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    calls = []

    def unreachable(self, row):
        calls.append(row)
        if len(calls) == 2:
            raise ConnectionError("API request to http://mlflow:5000 failed: Max retries exceeded")

    monkeypatch.setattr("lmforge.tracking.external.MlflowTracker.log", unreachable)
    config = tiny_data["dir"] / "c.yaml"
    config.write_text("task: classification\ntracking: [mlflow]\n")
    out = tiny_data["dir"] / "run"
    code, _, err = run_cli("train", str(config), *tiny_overrides(tiny_data, out), "--quiet")
    assert code == 0, err
    assert "warning: tracking: mlflow failed (API request to http://mlflow:5000 failed" in err
    assert len(calls) == 2  # dropped at its failure: no retry on every row
    rows = (out / "metrics.jsonl").read_text().splitlines()
    assert len(rows) > 2 and json.loads(rows[-1])["kind"] == "final"  # every row kept locally


@pytest.mark.slow
def test_a_resumed_run_continues_its_mlflow_run(tmp_path, monkeypatch):
    """Killed after a checkpoint, then resumed: the same MLflow run goes on to FINISHED, with the
    metric history of every step in metrics.jsonl."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(200, 0))
    dev = write_jsonl(tmp_path / "dev.jsonl", sentiment_rows(16, 1))
    config = tmp_path / "c.yaml"
    config.write_text("task: classification\ntracking: [mlflow]\n")
    out = tmp_path / "run"
    args = tiny_overrides({"train": train, "dev": dev}, out, "train.batch_size=4", "train.save_every=5")
    command = [sys.executable, "-m", "lmforge", "train", "--quiet", str(config), *args]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "checkpoints" / "step-10").exists():
        assert first.poll() is None and time.time() < deadline, first.stderr.read()
        time.sleep(0.01)
    run_id = (out / "mlflow-run-id").read_text().strip()
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
    resumed = subprocess.run([*command, "resume=true"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert (out / "mlflow-run-id").read_text().strip() == run_id
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.get_run(run_id).info.status == "FINISHED"
    assert len(client.search_runs([client.get_run(run_id).info.experiment_id])) == 1
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = {r["step"] for r in logged if r["kind"] == "train" and "loss" in r}
    assert {m.step for m in client.get_metric_history(run_id, "train/loss")} == steps
