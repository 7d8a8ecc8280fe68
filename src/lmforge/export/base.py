"""The export contract: a step turns the current variant (a run folder) into a new one.

A step is an ``ExportStep`` registered in ``STEPS`` by the module that implements it
(``merge.py``, ``prune_step.py``, ``onnx_export.py``, ``quantize.py``, ``gguf.py``), with the
command-line flags that ask for it; ``lmforge/export/__init__.py`` imports those modules, and
``pipeline.py`` runs the steps asked for in ``order``.
"""

import copy
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from lmforge.registry import Registry
from lmforge.tracking.run_folder import RunFolder
from lmforge.tracking.run_record import RunRecord


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
    record: RunRecord  # the run's lmforge.json
    options: dict  # the command's arguments (vars(args)), one key per flag
    work: Path  # temporary folder for the variants
    samples: list[str] = field(default_factory=list)  # real texts (evaluation data) for parity checks
    steps_done: list[str] = field(default_factory=list)

    def new_variant(self, name: str, fmt: str, source: Variant, **extra) -> tuple[Variant, Path]:
        """A fresh run folder for a variant made from ``source``; returns it and its ``model/``."""
        slug = "".join(c if c.isalnum() else "-" for c in name)
        folder = self.work / f"{len(self.steps_done):02d}-{slug}"
        (folder / "model").mkdir(parents=True)
        record = copy.deepcopy(self.record)
        steps = self.steps_done + [name]
        record.export = {
            "from": str(self.run_dir),
            "checkpoint": self.options.get("checkpoint"),
            "steps": steps,
            "made_from": source.name,
            "format": fmt,
            **extra,
        }
        if fmt.endswith("int8") or fmt.endswith("int4"):
            record.quantize = fmt.rsplit("-", 1)[-1]
        RunFolder(folder).write_record(record)
        config = self.run_dir / "config.yaml"
        if config.is_file():
            shutil.copyfile(config, folder / "config.yaml")
        else:
            (folder / "config.yaml").write_text(yaml.safe_dump({"task": record.task}), encoding="utf-8")
        return Variant(name, folder, "model", fmt), folder / "model"


StepFn = Callable[[Variant, ExportContext], Variant]


@dataclass
class ExportStep:
    name: str
    order: int
    arguments: Callable  # (argparse parser) -> None: the step's flags
    wanted: Callable[[dict], bool]  # (options) -> True when the flags ask for this step
    run: StepFn  # (current variant, context) -> the new variant
    check: Callable | None = None  # (context) -> None: refuse early, before any step runs


STEPS: Registry[ExportStep] = Registry("export step", "export")


def ordered_steps() -> list[ExportStep]:
    """The registered steps in the order they run."""
    return sorted(STEPS, key=lambda step: step.order)
