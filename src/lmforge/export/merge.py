"""Fold a run's LoRA-style adapter into its base model's weights, and prove the fold is exact.

The run folder keeps the adapter (``model/adapter``) beside the merged weights. ``merge_run`` loads
the base model the run started from, applies the adapter unmerged (base output + the low-rank path,
as in training), merges a copy, and compares the two on sample inputs: the export is written only
when the largest logit difference is within ``tolerance``. The result is a plain Hugging Face
folder (safetensors) that loads without peft or lmforge.
"""

import copy
import json
import os
import shutil
from pathlib import Path

import torch

from lmforge.errors import LmforgeError, ModelError
from lmforge.export.base import STEPS, ExportStep
from lmforge.models.bundled import BUNDLED, bundled_path
from lmforge.models.safe_loading import quiet_transformers
from lmforge.models.transformer import HEADS
from lmforge.tracking.run_folder import RunFolder
from lmforge.tracking.run_record import ModelRecord

SAMPLES = [
    "The quick brown fox jumps over the lazy dog.",
    "Who are you?",
    "今天天气很好，我们去公园散步吧。",
    "def add(a, b):\n    return a + b",
]


def base_folder(model: ModelRecord) -> Path:

    source = model.source
    if source == "scratch" or source is None:
        raise ModelError("this run's model was built from scratch: it has no base model and no adapter to merge")
    if source in BUNDLED:
        return bundled_path(source)
    folder = Path(model.source_path or source)
    if not (folder / "config.json").is_file():
        raise ModelError(f"the run's base model {folder} is no longer there; give it back to merge")
    return folder


DEFAULT_TOLERANCE = 1e-4  # largest logit difference between merged and unmerged (fp32)


def merge_run(
    run_dir: str | Path, output: str | Path, checkpoint: str = "model", tolerance: float = DEFAULT_TOLERANCE
) -> dict:
    import peft
    from transformers import AutoTokenizer

    run = RunFolder(run_dir)
    record = run.read_record()
    folder = run.model_dir(checkpoint)
    adapter = folder / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        raise ModelError(
            f"{folder}: no adapter to merge (tuning.method was {record.tuning}); "
            "the model folder is already a plain model"
        )
    config = peft.PeftConfig.from_pretrained(adapter)
    if config.is_prompt_learning:
        raise ModelError(
            f"{folder}: a {config.peft_type} adapter adds virtual tokens; it cannot be merged into weights"
        )
    out = Path(output)
    if out.exists() and any(out.iterdir()):
        raise LmforgeError(f"{out}: output folder exists and is not empty")
    head = HEADS[record.head]
    with quiet_transformers():
        base = head.from_pretrained(
            base_folder(record.model),
            config=str(folder / "config.json"),
            use_safetensors=True,
            trust_remote_code=False,
            dtype=torch.float32,
        )
        unmerged = peft.PeftModel.from_pretrained(base, adapter).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    merged = copy.deepcopy(unmerged).merge_and_unload().eval()
    difference, tokens = 0.0, 0
    with torch.inference_mode():
        for text in SAMPLES:
            batch = tokenizer(text, return_tensors="pt", truncation=True, max_length=64, return_token_type_ids=False)
            a, b = unmerged(**batch).logits, merged(**batch).logits
            difference = max(difference, (a - b).abs().max().item())
            tokens += batch["input_ids"].numel()
    if difference > tolerance:
        raise ModelError(
            f"merged and unmerged outputs differ by {difference:.2e} (> {tolerance:.0e}); nothing "
            "written (a large model's fp32 rounding alone can pass 1e-4: --merge-tolerance sets it)"
        )
    tmp = out.parent / f".tmp-{out.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    report = {
        "run": str(run.path),
        "adapter": getattr(config.peft_type, "value", str(config.peft_type)),
        "max_logit_difference": difference,
        "tokens_compared": tokens,
        "output": str(out),
    }
    (tmp / "lmforge_export.json").write_text(json.dumps(report, indent=1))
    if out.exists():
        out.rmdir()
    os.replace(tmp, out)
    return report


def merge_step(current, context):
    """The export pipeline's ``--merge``: the merged model as a variant (a run folder)."""
    variant, model_dir = context.new_variant("merged", "torch", current)
    model_dir.rmdir()  # merge_run writes the folder itself
    report = merge_run(
        context.run_dir,
        model_dir,
        current.checkpoint if current.checkpoint != "auto" else _auto(context.run_dir),
        context.options.get("merge_tolerance") or DEFAULT_TOLERANCE,
    )
    variant.notes = {"adapter": report["adapter"], "max_logit_difference": report["max_logit_difference"]}
    return variant


def _auto(run_dir) -> str:

    return RunFolder(run_dir).model_dir("auto").name


def add_arguments(p) -> None:
    """The flags that ask for the merge step."""
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


STEPS.register(
    "merge",
    ExportStep("merge", 10, add_arguments, lambda o: bool(o.get("merge")), merge_step),
)
