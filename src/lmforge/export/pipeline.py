"""``lmforge export``: a run's model through a list of steps, each variant re-evaluated.

A step is an ``ExportStep`` in ``STEPS`` (``export/base.py``) with the command-line arguments that
ask for it. The steps asked for run in ``order`` (merge 10, prune 20, onnx 30, quantize 40, gguf 50):
quantization comes after the ONNX export because it is applied to the model in its final format --
a PyTorch dynamic-int8 model does not export to ONNX, and ONNX Runtime quantizes the ONNX graph
itself. Each step takes the current variant (a run folder: ``lmforge.json``, ``config.yaml``,
``model/``) and returns a new one written in the work folder. Every variant and the original are
then evaluated on the same data and timed on the same texts (``export/compare.py``); the last
variant becomes the output folder -- itself a run folder that ``predict``, ``eval`` and ``serve``
take -- with the comparison table in ``export.json``, ``export.md`` and ``report.html``.

Adding a step is one new module that registers an ``ExportStep`` in ``STEPS``, and one import line
in ``lmforge/export/__init__.py``.
"""

import os
import shutil
from pathlib import Path

from lmforge.errors import LmforgeError
from lmforge.export.base import ExportContext, Variant, ordered_steps
from lmforge.export.compare import evaluation_data, measure_variants, write_outputs
from lmforge.runtime import resolve_device
from lmforge.tracking.run_folder import RunFolder


def add_step_arguments(parser) -> None:
    for step in ordered_steps():
        step.arguments(parser)


def default_output(run_dir: str | Path) -> Path:
    return Path(run_dir) / "export"


def check_output(output: Path) -> None:
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise LmforgeError(
            f"{output}: output folder exists and is not empty (nothing was changed); choose another --output"
        )


def run_export(run_dir: str | Path, options: dict, log=print) -> dict:
    """Run the steps ``options`` ask for, evaluate every variant (on ``options["device"]``, default
    auto), write the output folder."""
    device = options.get("device") or "auto"
    resolve_device(device)  # a wrong device fails here, before any work
    run = RunFolder(run_dir)
    record = run.read_record()
    output = Path(options.get("output") or default_output(run.path))
    check_output(output)
    chosen = [step for step in ordered_steps() if step.wanted(options)]
    if not chosen:
        flags = ", ".join(f"--{s.name}" for s in ordered_steps())
        raise LmforgeError(f"nothing to export: give one or more of {flags}")
    checkpoint = options.get("checkpoint") or "model"
    original = Variant("original", run.path, checkpoint, "torch")
    run.model_dir(checkpoint)  # a missing model fails here, before any work
    work = output.parent / f".tmp-export-{output.name}-{os.getpid()}"
    context = ExportContext(run.path, record, {**options, "checkpoint": checkpoint}, work)
    for step in chosen:
        if step.check is not None:
            step.check(context)
    data = evaluation_data(run.path, record, options.get("eval_data"))
    context.samples = data.texts[:64]
    output.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        variants, current = [original], original
        for step in chosen:
            log(f"export: {step.name} ...")
            current = step.run(current, context)
            context.steps_done.append(current.name)
            variants.append(current)
        log(f"export: evaluating {len(variants)} models on {data.label} ({len(data.texts)} texts) ...")
        rows = measure_variants(variants, data, device)
        os.replace(current.folder, output)
        summary = {
            "run": str(run.path),
            "output": str(output),
            "steps": [s.name for s in chosen],
            "evaluated_on": data.label,
            "rows": rows,
        }
        write_outputs(output, summary)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return summary
