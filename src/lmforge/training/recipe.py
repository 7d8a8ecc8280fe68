"""The training recipe: setup -> train -> checkpoint -> cleanup, as one visible script (n-gram
models fit in one pass, ``one_pass.py``; ``tuning.method: setfit`` runs SetFit's two phases, ``setfit.py``).

Everything a user can get wrong (config, data, model path, output folder) is checked in ``setup``
before anything is written; the loop itself is plain PyTorch with Accelerate handling devices,
mixed precision and distributed processes.
"""

import logging
from dataclasses import dataclass

from lmforge.config import JobConfig
from lmforge.models.one_pass import is_one_pass
from lmforge.runtime import process_rank
from lmforge.tracking.run_folder import PREVIOUS, RunFolder
from lmforge.tracking.run_lock import RunLock
from lmforge.training.finish import cleanup
from lmforge.training.job import TrainState, setup
from lmforge.training.loop import OnEvaluation, run_loop
from lmforge.training.one_pass import run_one_pass
from lmforge.training.setfit import run_setfit
from lmforge.training.signals import StopRequest

log = logging.getLogger("lmforge")
# Tuning methods that train in a recipe of their own instead of the loop: tuning.method -> recipe.
RECIPES = {"setfit": run_setfit}


@dataclass
class TrainOutcome:
    run: RunFolder
    state: TrainState
    stopped_by: str | None  # the signal that stopped the run before its end, if any
    main: bool = True  # False in the other processes of a distributed job: they report nothing
    checkpointed: bool = True  # a stopped run left a checkpoint to resume from (a recipe of its own keeps none)


def _restore_previous(config: JobConfig) -> None:
    """An overwrite that failed before its first checkpoint puts the run it replaced back."""
    if config.overwrite and not config.resume and process_rank() == 0:
        try:
            if RunFolder(config.output).restore_previous():
                log.warning("the run failed before its first checkpoint: the previous run in %s is back", config.output)
        except OSError as exc:
            log.warning("could not put the previous run back from %s (%s)", PREVIOUS, exc)


def train(config: JobConfig, quiet: bool = False, on_evaluation: OnEvaluation | None = None) -> TrainOutcome:
    """Run a training job end to end; ``on_evaluation(step, metrics, final)`` hears each validation."""
    with RunLock(config.output, enabled=process_rank() == 0):  # one job per run folder
        try:
            job = setup(config)
            if is_one_pass(job.model):
                return TrainOutcome(job.run, run_one_pass(job), None)
            recipe = RECIPES.get(config.tuning.method)
            with StopRequest() as stop:
                if recipe is not None:  # a method with a recipe of its own saves and evaluates itself
                    state = recipe(job, stop, quiet, on_evaluation)
                else:
                    state = run_loop(job, stop, quiet, on_evaluation)
            if recipe is None and not stop.requested:
                cleanup(job, state)
        except BaseException:
            _restore_previous(config)
            raise
    assert job.accelerator is not None, "setup() creates the accelerator"
    return TrainOutcome(job.run, state, stop.requested, job.accelerator.is_main_process, recipe is None)
