"""Training jobs started from the page: each is ``python -m lmforge train CONFIG OVERRIDES
output=ROOT/NAME --quiet`` in a child process of its own, its output in
``ROOT/.lmforge-ui/jobs/ID.log``. The config is checked here first (``load_config``), so a wrong key
is a 400 naming it, not a job that fails later; a run name already taken is refused (the page never
overwrites a run). Progress is read from the run's own ``metrics.jsonl`` (step of total, loss).
Stopping sends SIGINT: the job saves a checkpoint and stops as after Ctrl-C (resumable with
``resume=true``); stopping again kills it.

Relative data paths in a config are read from the folder ``lmforge ui`` was started in, as
``lmforge train`` reads them from its own working folder.
"""

import itertools
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from lmforge.config import load_config
from lmforge.errors import ConfigError, LmforgeError
from lmforge.tracking.metrics_log import read_metrics

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
JOBS_FOLDER = Path(".lmforge-ui") / "jobs"
MAX_YAML = 64 * 1024
MAX_OVERRIDES = 64
LOG_TAIL = 40
# Passed on to a job: never the UI's own key (a job needs none).
SECRET_ENV = ("LMFORGE_API_KEY", "LMFORGE_ADMIN_KEY")


class JobError(LmforgeError):
    """A job that cannot start: ``status`` is the HTTP answer (400 bad config, 409 name taken, 429 busy)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class Job:
    id: str
    name: str
    config: str
    overrides: list[str]
    output: Path
    log: Path
    process: subprocess.Popen
    started: float = field(default_factory=time.time)
    ended: float | None = None
    stops: int = 0

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def status(self) -> str:
        code = self.returncode
        if code is None:
            return "stopping" if self.stops else "running"
        if self.ended is None:
            self.ended = time.time()
        if self.stops:
            return "stopped"
        return "done" if code == 0 else "failed"

    def progress(self) -> dict:
        rows = read_metrics(self.output / "metrics.jsonl")
        total = next((r.get("steps") for r in rows if r.get("kind") == "start"), None)
        train = [r for r in rows if r.get("kind") == "train"]
        evals = [r for r in rows if r.get("kind") in ("eval", "final")]
        out: dict = {"total_steps": total, "step": train[-1]["step"] if train else 0}
        if train:
            out["loss"] = train[-1].get("loss")
        if evals:
            out["last_eval"] = {k: v for k, v in evals[-1].items() if isinstance(v, int | float | str)}
        return out

    def log_tail(self) -> list[str]:
        try:
            with self.log.open("rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 16384))
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return []
        # A progress bar rewrites its line with \r: keep what it shows last.
        lines = [line.rsplit("\r", 1)[-1] for line in text.splitlines()]
        return [line for line in lines if line.strip()][-LOG_TAIL:]

    def as_json(self) -> dict:
        status = self.status()
        return {
            "id": self.id,
            "name": self.name,
            "config": self.config,
            "overrides": self.overrides,
            "status": status,
            "returncode": self.returncode,
            "started": self.started,
            "seconds": round((self.ended or time.time()) - self.started, 1),
            "progress": self.progress(),
            "log": self.log_tail(),
            "error": self._error() if status == "failed" else None,
        }

    def _error(self) -> str | None:
        """The job's own one-line error (``lmforge: error: ...``), else its last line."""
        tail = self.log_tail()
        return next((line for line in reversed(tail) if line.startswith("lmforge: error:")), tail[-1] if tail else None)


class Jobs:
    """The jobs of this UI process. ``root``: where runs go; ``config_dirs``: the folders whose
    YAML files the form offers."""

    def __init__(self, root: Path, config_dirs: list[str], max_running: int):
        self.root, self.max_running = root, max_running
        self.config_dirs = [Path(d).expanduser() for d in config_dirs]
        self.jobs: dict[str, Job] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def configs(self) -> list[str]:
        """The config files the form offers (paths as given, sorted)."""
        found: list[str] = []
        for folder in self.config_dirs:
            if folder.is_dir():
                found.extend(str(p) for p in sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml")))
        return found

    def rows(self) -> list[dict]:
        return [job.as_json() for job in sorted(self.jobs.values(), key=lambda j: -j.started)]

    def get(self, job_id: str) -> Job:
        if job_id not in self.jobs:
            raise JobError(f"no job {job_id!r}", 404)
        return self.jobs[job_id]

    def start(self, name: str, config: str | None, yaml_text: str | None, overrides: list[str]) -> Job:
        if not NAME.fullmatch(name or ""):
            raise JobError(f"name {name!r}: letters, digits, '.', '_' and '-', at most 64, not starting with '.'")
        if (config is None) == (yaml_text is None):
            raise JobError("give either config (one of the offered files) or yaml (the config's text)")
        if len(overrides) > MAX_OVERRIDES or any("\n" in o or "=" not in o for o in overrides):
            raise JobError(f"overrides: at most {MAX_OVERRIDES} lines of key=value")
        if any(o.split("=", 1)[0].strip() in ("output", "resume", "overwrite") for o in overrides):
            raise JobError("overrides: output, resume and overwrite are set by the UI (the run name is the output)")
        output = self.root / name
        with self._lock:
            if output.exists():
                raise JobError(f"run {name!r} exists under {self.root}: choose another name", 409)
            running = sum(job.returncode is None for job in self.jobs.values())
            if running >= self.max_running:
                raise JobError(f"{running} job(s) running, the most at once (--max-jobs); wait or stop one", 429)
            job_id = f"{next(self._ids)}-{name}"
            folder = self.root / JOBS_FOLDER
            folder.mkdir(parents=True, exist_ok=True)
            if yaml_text is not None:
                if len(yaml_text.encode()) > MAX_YAML:
                    raise JobError(f"yaml: over {MAX_YAML // 1024} KiB")
                path = folder / f"{job_id}.yaml"
                path.write_text(yaml_text, encoding="utf-8")
                source = str(path)
            else:
                if config not in self.configs():
                    raise JobError(f"config {config!r}: not one of the offered files", 400)
                source = str(config)
            argv = [*overrides, f"output={output}"]
            try:
                load_config(source, argv)
            except ConfigError as exc:
                # The message names the pasted file; the page shows it as the form's error.
                raise JobError(str(exc).replace(source, "yaml" if yaml_text is not None else source)) from None
            log = folder / f"{job_id}.log"
            env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
            with log.open("wb") as out:
                process = subprocess.Popen(
                    [sys.executable, "-m", "lmforge", "train", source, *argv, "--quiet"],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    start_new_session=True,  # the terminal's Ctrl-C reaches the UI, which stops its jobs itself
                )
            job = Job(job_id, name, config or "(pasted yaml)", overrides, output, log, process)
            self.jobs[job_id] = job
            return job

    def stop(self, job_id: str) -> Job:
        """SIGINT (checkpoint, then stop); a second stop kills."""
        job = self.get(job_id)
        if job.returncode is None:
            job.stops += 1
            job.process.send_signal(signal.SIGINT if job.stops == 1 else signal.SIGKILL)
        return job

    def stop_all(self, wait_s: float = 30.0) -> None:
        """At the UI's shutdown: every running job stops (SIGINT, then SIGKILL after ``wait_s``)."""
        running = [job for job in self.jobs.values() if job.returncode is None]
        for job in running:
            job.stops += 1
            job.process.send_signal(signal.SIGINT)
        deadline = time.time() + wait_s
        for job in running:
            try:
                job.process.wait(timeout=max(0.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                job.process.kill()
                job.process.wait()
