"""Starting the processes of a data-parallel job: ``lmforge train CONFIG --processes N`` runs N local
processes of ``lmforge train`` with torch's elastic launcher (what ``torchrun --standalone
--nproc_per_node N`` does). This module imports no more than that launcher, so the launching
process starts the others within a second or two of the command, instead of after importing the
training stack (transformers, Accelerate, the models) that each launched process imports anyway.
"""

import json
import logging
import os
import sys
import uuid

from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.launcher.api import LaunchConfig, elastic_launch

from lmforge.config import JobConfig
from lmforge.errors import ConfigError
from lmforge.runtime import LAUNCHED_ENV


def world_size() -> int:
    """How many processes this job runs in (1 when it was not started by a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def refuse_several(config: JobConfig) -> None:
    """What trains in one process only, refused before any process starts or writes."""
    if config.tuning.method == "setfit":
        raise ConfigError("tuning.method=setfit trains in one process; run it without --processes or torchrun")


def launch(processes: int, argv: list[str]) -> int:
    """Run ``python -m lmforge ARGV`` in ``processes`` local processes with torch's elastic launcher
    (what ``torchrun --standalone --nproc_per_node N`` does); returns the exit code. When one process
    fails the launcher stops the others, and this prints the first failure's own message."""
    if "OMP_NUM_THREADS" not in os.environ:  # each process's share of the cores, as torchrun sets it
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // processes))
    # torch's elastic modules set each logger's own level when imported: every one is quietened
    # (lmforge reports a failure itself; Ctrl-C otherwise adds "Received 2 death signal" lines)
    for name in list(logging.root.manager.loggerDict):
        if name.startswith(("torch.distributed.elastic", "torch.distributed.launcher")):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=processes,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        monitor_interval=0.2,
    )
    before = os.environ.get(LAUNCHED_ENV)
    os.environ[LAUNCHED_ENV] = str(processes)  # the processes report their errors through this one
    try:
        elastic_launch(config, sys.executable)("-m", "lmforge", *argv)
    except (KeyboardInterrupt, SignalException) as exc:  # Ctrl-C, SIGTERM: the processes checkpoint and say so
        print("lmforge: interrupted", file=sys.stderr)
        # 128 + the signal, as a shell reports it: 130 for Ctrl-C, 143 for SIGTERM (a single process too)
        return 128 + int(exc.sigval) if isinstance(exc, SignalException) else 130
    except ChildFailedError as exc:
        rank, failure = _first_failure(exc)
        message = failure.message if isinstance(failure.message, str) else json.dumps(failure.message)
        if failure.error_file_data.get("message"):
            print(f"lmforge: error: (process {rank} of {processes}) {message}", file=sys.stderr)
        else:
            print(
                f"lmforge: error: process {rank} of {processes} failed (exit code {failure.exitcode})", file=sys.stderr
            )
        # the process whose message is shown may have been stopped by the launcher (exit < 0) after
        # failing the same way as another: that one's own exit code (2 for a config error) is the job's
        codes = [failure.exitcode, *(f.exitcode for f in exc.failures.values())]
        return next((code for code in codes if code > 0), 1)
    finally:  # for the processes only: a later job in this process (the web UI, tests) runs alone
        if before is None:
            os.environ.pop(LAUNCHED_ENV, None)
        else:
            os.environ[LAUNCHED_ENV] = before
    return 0


def _first_failure(exc):
    """The failure to report: the earliest that left an lmforge message, else the launcher's pick."""
    recorded = [(f.timestamp, rank, f) for rank, f in exc.failures.items() if f.error_file_data.get("message")]
    if recorded:
        _, rank, failure = min(recorded, key=lambda t: (t[0], t[1]))
        return rank, failure
    return exc.get_first_failure()
