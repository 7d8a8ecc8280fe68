"""One job per run folder: a live holder stops a second job at once (naming it, touching nothing), a
stale lock of a dead process is replaced, another host's lock names the file to delete, and a job
that fails before writing leaves no folder behind."""

import json
import socket
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conftest import tiny_overrides  # noqa: E402
from lmforge.tracking.run_lock import LOCK_NAME  # noqa: E402


def _config(tiny_data) -> Path:
    config = tiny_data["dir"] / "c.yaml"
    config.write_text("task: classification\n")
    return config


def _lock(folder: Path, pid: int, host: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    path.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(), "started": "2026-12-06 10:00:00"}))
    return path


def test_a_live_holder_stops_a_second_job(tiny_data, run_cli):
    out = tiny_data["dir"] / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = _lock(out, holder.pid)
        (out / "notes.txt").write_text("mine")
        code, _, err = run_cli(
            "train", str(_config(tiny_data)), *tiny_overrides(tiny_data, out, "train.epochs=1"), "--quiet"
        )
        assert code != 0 and f"in use by another lmforge job (pid {holder.pid}" in err
        assert len(err.strip().splitlines()) == 1
        assert lock.is_file() and (out / "notes.txt").read_text() == "mine" and len(list(out.iterdir())) == 2
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_lock_is_replaced_and_the_lock_goes_at_the_end(tiny_data, run_cli, caplog):
    out = tiny_data["dir"] / "run"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _lock(out, gone.pid)
    code, _, err = run_cli("train", str(_config(tiny_data)), *tiny_overrides(tiny_data, out, "train.epochs=1"))
    assert code == 0, err
    assert f"stale lock of pid {gone.pid}" in err + caplog.text
    assert not (out / LOCK_NAME).exists() and (out / "lmforge.json").is_file()


def test_another_hosts_lock_names_the_file(tiny_data, run_cli):
    out = tiny_data["dir"] / "run"
    lock = _lock(out, 12345, host="gpu-node-7")
    code, _, err = run_cli("train", str(_config(tiny_data)), *tiny_overrides(tiny_data, out), "--quiet")
    assert code != 0 and "gpu-node-7" in err and str(lock) in err and lock.is_file()


def test_a_job_failing_before_it_writes_leaves_no_folder(tiny_data, run_cli):
    out = tiny_data["dir"] / "new" / "run"
    argv = tiny_overrides(tiny_data, out)
    argv[0] = f"data.train={tiny_data['dir'] / 'missing.jsonl'}"
    code, _, err = run_cli("train", str(_config(tiny_data)), *argv, "--quiet")
    assert code != 0 and "missing.jsonl" in err
    assert not out.exists()
