"""Which float type the encoder routes run in.

``bfloat16`` halves the weights' memory and, on CPUs with native bf16 arithmetic (AVX512-BF16,
AMX) or CUDA, runs an encoder about twice as fast as ``float32``. ``auto`` takes it only where the
hardware has it and only if the model, checked on probe texts (the run's own validation texts when
it has them), answers the same: the same labels and probabilities within 0.02 (classification), or
embeddings with cosine similarity >= 0.999. Otherwise the model stays in float32, and says so in
the log. NER runs in float32, like ``predict``; generation models settle their own type
(``inference/weights.py``: int8 weights too).
"""

import json
import logging
from pathlib import Path

import torch

from lmforge.inference.weights import bf16_native

log = logging.getLogger("lmforge")
DTYPES = ("auto", "float32", "bfloat16")
PROBES = [
    "The service was quick and the staff were friendly.",
    "I want a refund, the parcel never arrived.",
    "Shares fell sharply after the company cut its forecast.",
    "The match ended in a draw after extra time.",
    "这家餐厅的菜很好吃，服务也很周到。",
    "A short one.",
    "The new phone has a brighter screen, a faster chip and a battery that lasts two days of heavy use.",
]


def probe_texts(run_dir: Path | None, limit: int = 32) -> list[str]:
    """Up to ``limit`` validation texts the run saved, else a fixed mixed set."""
    path = run_dir / "predictions.jsonl" if run_dir else None
    texts = []
    if path is not None and path.is_file():
        with path.open(encoding="utf-8") as f:
            for line in f:
                text = json.loads(line).get("text")
                if isinstance(text, str) and text.strip():
                    texts.append(text[:2000])
                if len(texts) >= limit:
                    break
    return texts or list(PROBES)


def settle(requested: str, model, outputs, agree, label: str) -> str:
    """Put ``model`` in the dtype asked for (``auto``: bf16 if native and ``agree(fp32, bf16)``
    on ``outputs()``); returns the dtype it runs in. ``int8`` is for generation models: an encoder
    then settles as ``auto``."""
    if requested == "int8":
        log.info("%s: --dtype int8 applies to generation models; this encoder settles as auto", label)
        requested = "auto"
    if requested == "float32" or (requested == "auto" and not bf16_native(next(model.parameters()).device)):
        return "float32"
    before = outputs() if requested == "auto" else None
    model.to(torch.bfloat16)
    if requested == "bfloat16":
        return "bfloat16"
    if agree(before, outputs()):
        log.info("%s: bfloat16 (answers the same as float32 on the probe texts)", label)
        return "bfloat16"
    model.to(torch.float32)
    log.info("%s: float32 (in bfloat16 its answers moved on the probe texts)", label)
    return "float32"


def same_classes(a: list[dict], b: list[dict], tolerance: float = 0.02) -> bool:
    return all(x["label"] == y["label"] and abs(x["score"] - y["score"]) <= tolerance for x, y in zip(a, b))


def same_embeddings(a: list[torch.Tensor], b: list[torch.Tensor], floor: float = 0.999) -> bool:
    return all(float(torch.dot(x.float(), y.float())) >= floor for x, y in zip(a, b))
