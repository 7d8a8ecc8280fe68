"""The training recipe: setup -> train -> checkpoint -> cleanup, as one visible script.

Everything a user can get wrong (config, data, model path, output folder) is checked in ``setup``
before anything is written; the loop itself is plain PyTorch with Accelerate handling devices,
mixed precision and distributed processes.
"""

from dataclasses import dataclass

from lmforge.config import JobConfig
from lmforge.models.one_pass import is_one_pass
from lmforge.runtime import process_rank
from lmforge.tracking.run_folder import RunFolder
from lmforge.tracking.run_lock import RunLock
from lmforge.training.finish import cleanup
from lmforge.training.job import TrainState, setup
from lmforge.training.loop import OnEvaluation, run_loop
from lmforge.training.one_pass import run_one_pass
from lmforge.training.signals import StopRequest


@dataclass
class TrainOutcome:
    run: RunFolder
    state: TrainState
    stopped_by: str | None  # the signal that stopped the run before its end, if any
    main: bool = True  # False in the other processes of a distributed job: they report nothing


def train(config: JobConfig, quiet: bool = False, on_evaluation: OnEvaluation | None = None) -> TrainOutcome:
    """Run a training job end to end; ``on_evaluation(step, metrics, final)`` hears each validation."""
    with RunLock(config.output, enabled=process_rank() == 0):  # one job per run folder
        job = setup(config)
        if is_one_pass(job.model):
            return TrainOutcome(job.run, run_one_pass(job), None)
        with StopRequest() as stop:
            state = run_loop(job, stop, quiet, on_evaluation)
        if not stop.requested:
            cleanup(job, state)
    assert job.accelerator is not None, "setup() creates the accelerator"
    return TrainOutcome(job.run, state, stop.requested, job.accelerator.is_main_process)
