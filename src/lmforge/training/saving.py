"""Saving a model folder during and at the end of training: a plain Hugging Face model (adapters
merged, adapters also kept), written to a temporary folder and renamed into place."""

import os
import shutil
import warnings
from contextlib import nullcontext
from pathlib import Path

from lmforge.tracking.run_folder import replace_folder, staging_folder
from lmforge.training.checkpoint import has_flattened_rnn, independent_state
from lmforge.training.job import Job
from lmforge.tuning import export_model, is_peft


def averaged(job: Job):
    """The model holds its weight average inside this block (``train.ema``), else its own weights."""
    if job.ema is None:
        return nullcontext()
    assert job.accelerator is not None, "setup() creates the accelerator"
    return job.ema.applied(job.accelerator.unwrap_model(job.model))


def save_model_folder(job: Job, folder: Path, step: int | None = None) -> None:
    """Save a plain Hugging Face model (adapters merged) plus tokenizer, atomically; at ``step``, the
    model with adapters folded in that the loop evaluated there (``job.exported``), when it did."""
    tmp = staging_folder(folder)
    assert job.accelerator is not None, "setup() creates the accelerator"
    model = job.accelerator.unwrap_model(job.model)
    done = job.exported
    exported = done[1] if done is not None and step is not None and done[0] == step else export_model(model)
    # cuDNN's flattened LSTM weights share one buffer: saved from independent copies
    state = independent_state(exported) if has_flattened_rnn(exported) else None
    exported.save_pretrained(tmp, safe_serialization=True, state_dict=state)
    job.tokenizer.save_pretrained(tmp)
    if is_peft(model):
        with warnings.catch_warnings():
            # AdaLoRA prunes some matrices to rank 0 on purpose; peft mistakes that for unsaved shards.
            warnings.filterwarnings("ignore", message=".*have invalid shape.*")
            model.save_pretrained(tmp / "adapter", safe_serialization=True)
    replace_folder(tmp, folder)


def same_as(source: Path, folder: Path) -> None:
    """``folder``: a model folder with ``source``'s files (a model folder this run wrote from the same
    weights), atomically. The weights (``*.safetensors``) are hard links where the file system has
    them -- no second write of the largest files; safetensors replaces a file when it saves, so the two
    folders cannot come to differ through them --, everything else (config, tokenizer, adapter
    settings, which a later ``save_pretrained`` may rewrite in place) is copied."""
    tmp = staging_folder(folder)

    def link_weights(src: str, dst: str) -> None:
        if src.endswith(".safetensors"):
            try:
                os.link(src, dst)
                return
            except OSError:
                pass
        shutil.copy2(src, dst)

    shutil.copytree(source, tmp, copy_function=link_weights)
    replace_folder(tmp, folder)
