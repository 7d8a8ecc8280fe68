"""One training job per run folder: ``RUN/.lmforge.lock`` holds the pid, host and start time of the
job writing there. A second job into the same folder fails at once, naming the holder. A lock left
by a job that was killed is stale when its process no longer runs on this host: it is replaced,
with a warning. A lock from another host cannot be checked from here: the error says which file to
delete once that job is known to be gone. The lock is taken with ``O_CREAT | O_EXCL``, so two jobs
starting together cannot both get it."""

import json
import logging
import os
import socket
import time
from pathlib import Path

from lmforge.errors import RunFolderError

log = logging.getLogger("lmforge")

LOCK_NAME = ".lmforge.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


class RunLock:
    """``with RunLock(folder):`` holds the folder's lock for the block (``enabled=False``: does
    nothing, for the other processes of a distributed job)."""

    def __init__(self, folder: str | Path, enabled: bool = True):
        self.folder = Path(folder).expanduser()
        self.path = self.folder / LOCK_NAME
        self.enabled = enabled
        self.held = False
        self.made_folder = False

    def __enter__(self) -> "RunLock":
        if self.enabled:
            self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        if not self.folder.exists():
            self.folder.mkdir(parents=True)
            self.made_folder = True
        elif not self.folder.is_dir():
            raise RunFolderError(f"output {self.folder} exists and is not a folder")
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._check_holder()
                continue  # the stale lock is gone: try once more
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(holder, handle)
            self.held = True
            return
        raise RunFolderError(f"output {self.folder}: could not take {self.path} (another job took it just now)")

    def _check_holder(self) -> None:
        try:
            other = json.loads(self.path.read_text(encoding="utf-8"))
            pid, host, started = int(other["pid"]), str(other["host"]), str(other.get("started", "?"))
        except (OSError, ValueError, KeyError, TypeError):
            other = None
        if other is None:  # unreadable: a job killed while writing it (it is written in one go)
            log.warning("%s: an unreadable lock file; replaced", self.path)
        elif host != socket.gethostname():
            raise RunFolderError(
                f"output {self.folder} is in use by a job on {host} (pid {pid}, since {started}); if that job "
                f"is gone, delete {self.path}"
            )
        elif _alive(pid) and pid != os.getpid():
            raise RunFolderError(
                f"output {self.folder} is in use by another lmforge job (pid {pid}, since {started}); wait for "
                "it to end, or choose another output"
            )
        else:
            log.warning(
                "%s: a stale lock of pid %d (since %s), which no longer runs; replaced", self.path, pid, started
            )
        self.path.unlink(missing_ok=True)

    def release(self) -> None:
        if not self.held:
            return
        self.path.unlink(missing_ok=True)
        self.held = False
        if self.made_folder and self.folder.is_dir() and not any(self.folder.iterdir()):
            self.folder.rmdir()  # a job that failed before writing leaves no empty folder behind
