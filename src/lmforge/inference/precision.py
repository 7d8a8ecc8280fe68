"""The arithmetic a saved model's forward passes use at inference: ``lmforge eval``, ``predict``,
``serve`` and the validation passes of the training run itself.

- ``fp32``: no autocast: the model as its saved weights compute.
- ``bf16`` / ``fp16``: autocast to that type (fp16 on CUDA only).
- ``auto`` (the default): the precision the run trained in (``training.precision.used`` of its
  record) where this device computes it natively (bf16 on CPUs with AMX or AVX512-BF16 and on
  Ampere+ GPUs, fp16 on CUDA), else fp32. ``train.precision: auto`` kept bf16 only because a
  training step of this model measured faster in it; a forward pass gains as much (MiniLM NER,
  3,250 CoNLL sentences, 2 threads: 11.9 s in fp32, 7.0 s in bf16, entity F1 74.31 against 74.35),
  and the run's own validation figures were computed the same way, so ``lmforge eval`` of a run
  reproduces them.

A training run's precision is chosen by ``lmforge.training.precision``; the hardware checks are
here, where both the training and the inference side can read them.
"""

import logging
import sys
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from lmforge.errors import ConfigError

log = logging.getLogger("lmforge")

INFERENCE_PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 matrix products natively (AMX or AVX512-BF16)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[-1].split())
            break
    return bool(flags & {"amx_bf16", "avx512_bf16"})


def native_candidate(device: torch.device) -> tuple[str | None, str]:
    """(the reduced precision this device computes natively, or None; why)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return "bf16", f"{name} computes bf16 natively"
        return "fp16", f"{name} has no native bf16; fp16 with loss scaling"
    if cpu_has_native_bf16():
        return "bf16", "this CPU has AMX or AVX512-BF16"
    return None, "this CPU has neither AMX nor AVX512-BF16, so bf16 would be emulated (slower)"


@dataclass(frozen=True)
class InferencePrecision:
    """What inference computes in (``fp32`` | ``bf16`` | ``fp16``) on ``device``, and why."""

    used: str
    reason: str
    device_type: str = "cpu"

    def autocast(self) -> AbstractContextManager:
        """The block forward passes run in: autocast to ``used``, or nothing for fp32."""
        if self.used == "fp32":
            return nullcontext()
        return torch.autocast(self.device_type, dtype=DTYPES[self.used])


FP32 = InferencePrecision("fp32", "full precision")


def trained_precision(training: dict | None) -> str | None:
    """What a run's training steps computed in, from its record's ``training`` (None: not recorded)."""
    chosen = (training or {}).get("precision") or {}
    return chosen.get("used")


def inference_precision(spec: str, trained: str | None, device: torch.device) -> InferencePrecision:
    """``spec`` (``auto`` | ``fp32`` | ``bf16`` | ``fp16``, ``--precision``) resolved for a run that
    trained in ``trained`` on ``device``; a combination the device cannot run is a one-line error."""
    if spec not in INFERENCE_PRECISIONS:
        raise ConfigError(f"--precision: {spec!r} is not one of {', '.join(INFERENCE_PRECISIONS)}")
    kind = device.type
    if spec == "fp32":
        return InferencePrecision("fp32", "--precision fp32", kind)
    if spec == "fp16":
        if kind != "cuda":
            raise ConfigError("--precision fp16 runs on CUDA only; use bf16 or fp32 on a CPU")
        return InferencePrecision("fp16", "--precision fp16", kind)
    if spec == "bf16":
        if kind == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
            raise ConfigError(f"--precision bf16: {torch.cuda.get_device_name(device)} has no native bf16; use fp16")
        if kind == "cpu" and not cpu_has_native_bf16():
            log.warning("warning: --precision bf16 on a CPU without AMX or AVX512-BF16 is emulated and usually slower")
        return InferencePrecision("bf16", "--precision bf16", kind)
    native, why = native_candidate(device)
    if trained not in DTYPES:
        return InferencePrecision("fp32", f"the run trained in {trained or 'fp32'}", kind)
    if native != trained:
        return InferencePrecision("fp32", f"the run trained in {trained}, but {why}", kind)
    return InferencePrecision(trained, f"the run trained in {trained} and {why}", kind)
