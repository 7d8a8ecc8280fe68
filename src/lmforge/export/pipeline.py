"""``lmforge export``: a run's model through a list of steps, each variant re-evaluated.

A step is one function in ``STEPS`` -- the registry -- with the command-line arguments that ask for
it. The steps asked for run in ``order`` (merge 10, prune 20, onnx 30, quantize 40, gguf 50):
quantization comes after the ONNX export because it is applied to the model in its final format --
a PyTorch dynamic-int8 model does not export to ONNX, and ONNX Runtime quantizes the ONNX graph
itself. Each step takes the current variant (a run folder: ``lmforge.json``, ``config.yaml``,
``model/``) and returns a new one written in the work folder. Every variant and the original are
then evaluated on the same data and timed on the same texts (``export/compare.py``); the last
variant becomes the output folder -- itself a run folder that ``predict``, ``eval`` and ``serve``
take -- with the comparison table in ``export.json``, ``export.md`` and ``report.html``.

Adding a step is one ``register_step`` call below, naming its function as ``"module:function"``
(imported only when the step runs, so the CLI stays quick to start).
"""

import importlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lmforge.errors import LmforgeError


@dataclass
class Variant:
    """One model the export produced (or the original): a run folder and what made it."""

    name: str  # shown in the table: "original", "onnx fp32", "onnx int8", ...
    folder: Path  # run folder: lmforge.json, config.yaml, model/
    checkpoint: str = "model"
    format: str = "torch"  # torch | torch-int8 | onnx | onnx-int8 | ...
    notes: dict = field(default_factory=dict)  # what the step checked (parity, adapter, ...)


@dataclass
class ExportContext:
    run_dir: Path
    meta: dict  # the run's lmforge.json
    options: dict  # the command's arguments (vars(args)), one key per flag
    work: Path  # temporary folder for the variants
    samples: list[str] = field(default_factory=list)  # real texts (evaluation data) for parity checks
    steps_done: list[str] = field(default_factory=list)

    def new_variant(self, name: str, fmt: str, source: Variant, **extra) -> tuple[Variant, Path]:
        """A fresh run folder for a variant made from ``source``; returns it and its ``model/``."""
        import yaml

        slug = "".join(c if c.isalnum() else "-" for c in name)
        folder = self.work / f"{len(self.steps_done):02d}-{slug}"
        (folder / "model").mkdir(parents=True)
        meta = json.loads(json.dumps(self.meta))
        steps = self.steps_done + [name]
        meta["export"] = {
            "from": str(self.run_dir),
            "checkpoint": self.options.get("checkpoint"),
            "steps": steps,
            "made_from": source.name,
            "format": fmt,
            **extra,
        }
        if fmt.endswith("int8") or fmt.endswith("int4"):
            meta["quantize"] = fmt.rsplit("-", 1)[-1]
        (folder / "lmforge.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False), encoding="utf-8")
        config = self.run_dir / "config.yaml"
        if config.is_file():
            shutil.copyfile(config, folder / "config.yaml")
        else:
            (folder / "config.yaml").write_text(yaml.safe_dump({"task": meta.get("task")}), encoding="utf-8")
        return Variant(name, folder, "model", fmt), folder / "model"


StepFn = Callable[[Variant, ExportContext], Variant]


@dataclass
class ExportStep:
    name: str
    order: int
    arguments: Callable  # (argparse parser) -> None: the step's flags
    wanted: Callable[[dict], bool]  # (options) -> True when the flags ask for this step
    run: str | StepFn  # "module:function" or the function
    check: str | Callable | None = None  # (context) -> None: refuse early, before any step runs


STEPS: list[ExportStep] = []


def register_step(step: ExportStep) -> None:
    STEPS.append(step)
    STEPS.sort(key=lambda s: s.order)


def _resolve(fn):
    if isinstance(fn, str):
        module, name = fn.split(":")
        return getattr(importlib.import_module(module), name)
    return fn


def add_step_arguments(parser) -> None:
    for step in STEPS:
        step.arguments(parser)


def default_output(run_dir: str | Path) -> Path:
    return Path(run_dir) / "export"


def check_output(output: Path) -> None:
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise LmforgeError(
            f"{output}: output folder exists and is not empty (nothing was changed); choose another --output"
        )


def run_export(run_dir: str | Path, options: dict, log=print) -> dict:
    """Run the steps ``options`` ask for, evaluate every variant, write the output folder."""
    from lmforge.export.compare import evaluation_data, measure_variants, write_outputs
    from lmforge.tracking.run_folder import RunFolder

    run = RunFolder(run_dir)
    meta = run.read_meta()
    output = Path(options.get("output") or default_output(run.path))
    check_output(output)
    chosen = [step for step in STEPS if step.wanted(options)]
    if not chosen:
        flags = ", ".join(f"--{s.name}" for s in STEPS)
        raise LmforgeError(f"nothing to export: give one or more of {flags}")
    checkpoint = options.get("checkpoint") or "model"
    original = Variant("original", run.path, checkpoint, "torch")
    run.model_dir(checkpoint)  # a missing model fails here, before any work
    work = output.parent / f".tmp-export-{output.name}-{os.getpid()}"
    context = ExportContext(run.path, meta, {**options, "checkpoint": checkpoint}, work)
    for step in chosen:
        if step.check is not None:
            _resolve(step.check)(context)
    data = evaluation_data(run.path, meta, options.get("eval_data"))
    context.samples = data.texts[:64]
    output.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        variants, current = [original], original
        for step in chosen:
            log(f"export: {step.name} ...")
            current = _resolve(step.run)(current, context)
            context.steps_done.append(current.name)
            variants.append(current)
        log(f"export: evaluating {len(variants)} models on {data.label} ({len(data.texts)} texts) ...")
        rows = measure_variants(variants, data)
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


# -- the steps -----------------------------------------------------------------------------------
def _merge_arguments(p) -> None:
    p.add_argument(
        "--merge",
        action="store_true",
        help="fold the run's LoRA/AdaLoRA/IA3 adapter into the base weights (checked against the unmerged model)",
    )
    p.add_argument(
        "--merge-tolerance",
        type=float,
        default=None,
        help="--merge: largest logit difference from the unmerged model allowed (default 1e-4)",
    )


def _onnx_arguments(p) -> None:
    p.add_argument(
        "--onnx",
        action="store_true",
        help="export an encoder (classification, NER; embeddings included) to ONNX, dynamic batch and "
        "length, checked against PyTorch (max difference <= 1e-4); predict/eval/serve run it with "
        "ONNX Runtime",
    )


def _quantize_arguments(p) -> None:
    p.add_argument(
        "--quantize",
        choices=["int8", "int4"],
        help="int8: dynamic int8 linear layers (PyTorch, or ONNX Runtime with --onnx); int4: 4-bit "
        "weights, ONNX Runtime only (with --onnx)",
    )


def _prune_arguments(p) -> None:
    p.add_argument(
        "--prune",
        type=float,
        metavar="FRACTION",
        help="prune this fraction (e.g. 0.3) of the backbone's linear weights (--prune-method magnitude: "
        "one global threshold; embeddings, pooler and head kept) or of the attention heads (heads)",
    )
    p.add_argument(
        "--prune-method",
        choices=["magnitude", "heads"],
        default="magnitude",
        help="magnitude: unstructured, by |weight|; heads: whole heads by importance (Michel et al. 2019)",
    )
    p.add_argument(
        "--recover-steps",
        type=int,
        default=0,
        metavar="N",
        help="--prune: then fine-tune N steps on the run's training data, pruned weights held at zero",
    )
    p.add_argument("--recover-lr", type=float, help="--recover-steps: learning rate (default: the run's train.lr)")


def _gguf_arguments(p) -> None:
    p.add_argument(
        "--gguf",
        nargs="?",
        const="f16",
        choices=["f32", "f16", "q8_0"],
        help="Llama-style causal LMs: also write model.<type>.gguf for llama.cpp (default f16), checked "
        "by loading it back through transformers",
    )


register_step(
    ExportStep(
        "prune",
        20,
        _prune_arguments,
        lambda o: o.get("prune") is not None,
        "lmforge.export.prune:prune_step",
        "lmforge.export.prune:check_prune",
    )
)
register_step(
    ExportStep(
        "gguf",
        50,
        _gguf_arguments,
        lambda o: bool(o.get("gguf")),
        "lmforge.export.gguf:gguf_step",
        "lmforge.export.gguf:check_gguf",
    )
)
register_step(
    ExportStep("merge", 10, _merge_arguments, lambda o: bool(o.get("merge")), "lmforge.export.merge:merge_step")
)
register_step(
    ExportStep(
        "onnx",
        30,
        _onnx_arguments,
        lambda o: bool(o.get("onnx")),
        "lmforge.export.onnx_export:onnx_step",
        "lmforge.export.onnx_export:check_onnx",
    )
)
register_step(
    ExportStep(
        "quantize",
        40,
        _quantize_arguments,
        lambda o: bool(o.get("quantize")),
        "lmforge.export.quantize:quantize_step",
        "lmforge.export.quantize:check_quantize",
    )
)
