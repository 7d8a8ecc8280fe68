"""tracking: [tensorboard, wandb]: a tiny run logged to Weights & Biases in offline mode, read back
from W&B's own run file (parameters, per-step metrics, the final evaluation, report and model
artifacts); tracking: [] writes no TensorBoard events."""

import json
import struct
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conftest import tiny_overrides  # noqa: E402

wandb = pytest.importorskip("wandb")
from wandb.proto import wandb_internal_pb2  # noqa: E402


def wandb_records(path: Path):
    """The records of a .wandb file: W&B's LevelDB-style log (a 7-byte header, then 32 KiB blocks of
    chunks: crc, length, type) of protobuf ``Record`` messages."""
    data, pos, pending = path.read_bytes(), 7, b""
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:
            break
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or its last chunk
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record
            pending = b""


def test_a_run_is_tracked_in_wandb_offline(tiny_data, run_cli, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_PROJECT", "lmforge-test")
    config = tiny_data["dir"] / "c.yaml"
    config.write_text("task: classification\ntracking: [tensorboard, wandb]\n")
    out = tiny_data["dir"] / "run"
    code, _, err = run_cli("train", str(config), *tiny_overrides(tiny_data, out), "--quiet")
    assert code == 0, err
    files = list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1
    history, summary, config_items, artifacts = [], {}, {}, {}
    for record in wandb_records(files[0]):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append({"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            for u in record.summary.update:
                summary["/".join(u.nested_key) or u.key] = json.loads(u.value_json)
        elif kind == "run":  # the parameters come with the run record
            config_items.update({u.key: json.loads(u.value_json) for u in record.run.config.update})
        elif kind == "artifact":
            artifacts[record.artifact.type] = [e.path or e.ref for e in record.artifact.manifest.contents]
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in logged if r["kind"] == "train" and "loss" in r]
    assert [h["train/loss"] for h in history if "train/loss" in h] == pytest.approx(losses)
    evals = [r for r in logged if r["kind"] == "eval"]
    assert [h["validation/accuracy"] for h in history if "validation/accuracy" in h] == pytest.approx(
        [r["accuracy"] for r in evals]
    )
    final = json.loads((out / "eval_results.json").read_text())["validation"]
    assert summary["validation/accuracy"] == pytest.approx(final["accuracy"])
    assert config_items["train"]["lr"] == pytest.approx(3e-3) and config_items["task"] == "classification"
    assert {"report.html", "lmforge.json", "config.yaml"} <= set(artifacts["report"])
    assert any("model.safetensors" in ref for ref in artifacts["model"]) or artifacts["model"]
    assert any((out / "events").iterdir())


def test_tracking_can_leave_tensorboard_out_and_names_the_choices(tiny_data, run_cli):
    config = tiny_data["dir"] / "c.yaml"
    config.write_text("task: classification\ntracking: []\n")
    out = tiny_data["dir"] / "run"
    code, _, err = run_cli("train", str(config), *tiny_overrides(tiny_data, out, "train.epochs=1"), "--quiet")
    assert code == 0, err
    assert not (out / "events").exists() and (out / "metrics.jsonl").is_file()
    config.write_text("task: classification\ntracking: [mlflw]\n")
    code, _, err = run_cli("train", str(config), *tiny_overrides(tiny_data, tiny_data["dir"] / "r2"), "--quiet")
    assert code != 0 and "tracking" in err and "wandb" in err, err
