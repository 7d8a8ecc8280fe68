"""Evaluate a model saved in a run folder on encoded data (the path training's final evaluation and
``lmforge eval`` share)."""

from pathlib import Path

from lmforge.inference.precision import inference_precision, trained_precision
from lmforge.models import load_saved
from lmforge.models.one_pass import is_one_pass
from lmforge.runtime import resolve_device
from lmforge.tracking.run_record import RunRecord


def evaluate_saved(
    folder: Path,
    task,
    labels,
    features: list[dict],
    examples: list,
    batch_size: int,
    record: RunRecord,
    device: str = "auto",
    precision: str = "auto",
):
    """Load the model saved in ``folder`` and evaluate it on ``device`` (a spec: ``auto`` | ``cpu`` |
    ``cuda`` | ``cuda:N``) in ``precision`` (``auto``: the run's training precision where the device
    computes it natively, see ``lmforge.inference.precision``), the path ``lmforge eval`` takes."""
    where = resolve_device(device)
    loaded = load_saved(folder, record)
    model = loaded.model
    if is_one_pass(model):  # n-gram models read the examples themselves
        return model.evaluate(task, examples, labels)
    model = task.prepare_saved(model, folder, labels)
    model = model.to(where)
    with inference_precision(precision, trained_precision(record.training), where).autocast():
        return task.evaluate(model, loaded.tokenizer, features, examples, batch_size, where, labels)
