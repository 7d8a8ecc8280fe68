"""``lmforge runs``: run folders found under a folder (not inside a run), their status, metrics and
sorting, a damaged record listed rather than fatal, and bad input named."""

import json
import os
import time

from lmforge.tracking.run_folder import RunFolder
from lmforge.tracking.run_record import ModelRecord, RunRecord
from lmforge.tracking.runs_table import list_runs


def _run(folder, task="classification", results=None, finished=True, seconds=75.0):
    run = RunFolder(folder)
    run.write_config({"task": task, "model": {"name": "minilm"}})
    record = RunRecord(
        task=task,
        head="sequence_classification",
        model=ModelRecord(source="minilm", arch="bert"),
        tuning="full",
        finished=finished,
        training={"steps": 40, "wall_time_s": seconds},
        results=results or {},
    )
    run.write_record(record)
    (folder / "model").mkdir()
    (folder / "model" / "config.yaml").write_text("a model's own folder is not a run\n")
    return folder


def test_runs_are_found_summarized_and_sorted(tmp_path, run_cli):
    root = tmp_path / "runs"
    _run(root / "a", results={"validation": {"accuracy": 0.81, "macro_f1": 0.80, "count": 10}})
    _run(root / "group" / "b", results={"validation": {"accuracy": 0.93, "macro_f1": 0.91}}, seconds=3700)
    _run(root / "c", task="causal_lm", results={"validation": {"perplexity": 12.5, "loss": 2.5}}, finished=False)
    live = root / "live"  # a job before its first record: config and metrics log only
    live.mkdir()
    (live / "config.yaml").write_text("task: token_classification\nmodel: {name: minilm}\n")
    (live / "metrics.jsonl").write_text(
        json.dumps({"kind": "train", "step": 5, "loss": 1.0})
        + "\n"
        + json.dumps({"kind": "eval", "split": "validation", "step": 5, "f1": 0.42})
        + "\n{cut"
    )
    rows = {r["run"]: r for r in list_runs(root)}
    assert sorted(rows) == ["a", "c", "group/b", "live"]
    assert rows["a"]["status"] == "done" and rows["a"]["metrics"] == {"accuracy": 0.81, "macro_f1": 0.80}
    assert rows["c"]["status"] == "stopped"  # no end in the record, no recent log
    assert rows["live"]["status"] == "running" and rows["live"]["metrics"] == {"f1": 0.42}
    assert rows["live"]["steps"] == 5 and rows["live"]["task"] == "token_classification"
    old = time.time() - 3600
    os.utime(live / "metrics.jsonl", (old, old))
    assert {r["run"]: r for r in list_runs(root)}["live"]["status"] == "stopped"

    assert [r["run"] for r in list_runs(root, sort="accuracy")][:2] == ["group/b", "a"]
    assert [r["run"] for r in list_runs(root, sort="perplexity")][0] == "c"  # lower is better
    assert [r["run"] for r in list_runs(root, task="causal_lm")] == ["c"]

    code, out, err = run_cli("runs", str(root), "--sort", "accuracy")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:8] == ["run", "task", "model", "tuning", "status", "steps", "time", "accuracy"]
    assert lines[2].startswith("group/b") and "1h01m" in lines[2] and "0.9300" in lines[2]
    code, out, _ = run_cli("runs", str(root), "--json")
    assert code == 0 and len(json.loads(out)) == 4


def test_bad_input_is_named_and_a_damaged_record_is_listed(tmp_path, run_cli):
    root = tmp_path / "runs"
    _run(root / "good", results={"validation": {"accuracy": 0.5}})
    (root / "broken").mkdir()
    (root / "broken" / "lmforge.json").write_text("{not json")
    rows = {r["run"]: r for r in list_runs(root)}
    assert "problem" in rows["broken"] and rows["good"]["status"] == "done"
    code, out, err = run_cli("runs", str(root))
    assert code == 0 and "unreadable" in out
    code, _, err = run_cli("runs", str(root), "--sort", "bleu")
    assert code != 0 and err.count("\n") == 1 and "--sort bleu" in err and "accuracy" in err
    code, _, err = run_cli("runs", str(tmp_path / "missing"))
    assert code != 0 and "missing: no such folder" in err
    code, out, _ = run_cli("runs", str(tmp_path / "runs" / "good" / "model"))
    assert code == 0 and "no run folders" in out
