"""``train.precision``: which arithmetic the training steps use, decided once per run and logged.

- ``fp32``: no autocast.
- ``bf16``: bf16 autocast (Accelerate's ``mixed_precision="bf16"``); on a GPU without native bf16
  (before Ampere) it is refused, on a CPU without AMX or AVX512-BF16 it runs, slowly, with a warning.
- ``fp16``: fp16 autocast with loss scaling, on CUDA only.
- ``auto``: the candidate the hardware computes natively (bf16 on Ampere+ GPUs and on CPUs with AMX
  or AVX512-BF16, fp16 on older GPUs), kept only when a measured training step on the run's own
  model and batch is at least ``MIN_GAIN`` faster than fp32; else fp32. Measuring matters: on an H200
  bf16 autocast made a 2-layer BERT 8.7x *slower* (casts dominate tiny matrices).

The measurement runs forward and backward passes without an optimizer step, drops the gradients
and restores the random state, so a run that measured takes exactly the steps of one that did not.

A measured choice is kept in lmforge's cache (``$LMFORGE_CACHE/precision``, ``DecisionCache``) under
what decides it: the device (CPU model or GPU name), PyTorch's version, the threads, the model's
architecture and trainable parameters, the measured batch's shapes and the task. A later run with
all of them the same reuses it for ``CACHE_DAYS`` days (the log says so) instead of measuring again
(1-2 s of a run's start-up on a CPU; 8 passes). Deleting that folder makes runs measure again.
"""

import hashlib
import json
import logging
import os
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch

from lmforge.errors import ConfigError
from lmforge.inference.precision import cpu_has_native_bf16, native_candidate  # noqa: F401 (re-exported)
from lmforge.tracking.run_folder import write_atomic

log = logging.getLogger("lmforge")

MIN_GAIN = 1.1  # auto keeps a reduced precision only when a step is at least this much faster
MEASURED_STEPS = 3
# One timed pass a side decides when a pass takes at least LONG_PASS_S (timer and scheduling noise
# are small against it) and the speed-up is CLEAR_MARGIN away from MIN_GAIN either way: on SmolLM2
# LoRA SFT (2 rows of 512 tokens) the full measurement took 50 s, longer than 8 training steps.
LONG_PASS_S = 0.5
CLEAR_MARGIN = 1.1

CACHE_DAYS = 30  # a cached auto decision is measured again after this long

# Accelerate's names for them
ACCELERATE_NAMES = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


@dataclass
class PrecisionChoice:
    """What a run computes in (``fp32`` | ``bf16`` | ``fp16``) and why, for the log and the run record."""

    used: str
    reason: str
    timings_ms: dict | None = None

    @property
    def accelerate_name(self) -> str:
        return ACCELERATE_NAMES[self.used]

    def to_json(self) -> dict:
        out: dict = {"used": self.used, "reason": self.reason}
        if self.timings_ms:
            out["step_ms"] = self.timings_ms
        return out


def check_requested(precision: str, device: torch.device) -> PrecisionChoice | None:
    """The choice for an explicit ``train.precision`` (None for ``auto``); a combination the device
    cannot run is a one-line ConfigError."""
    if precision == "auto":
        return None
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("train.precision: fp16 (with loss scaling) runs on CUDA only; use bf16 or fp32 on CPU")
    if precision == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
            raise ConfigError(
                f"train.precision: bf16: {torch.cuda.get_device_name(device)} has no native bf16; use fp16 or auto"
            )
        if device.type == "cpu" and not cpu_has_native_bf16():
            log.warning(
                "warning: train.precision: bf16 on a CPU without AMX or AVX512-BF16 is emulated and usually "
                "slower than fp32 (train.precision: auto measures)"
            )
    return PrecisionChoice(precision, "set in train.precision")


def decide(candidate: str, fp32_s: float, reduced_s: float) -> PrecisionChoice:
    """The auto choice from measured seconds per step of fp32 and of ``candidate``."""
    timings = {"fp32": round(1000 * fp32_s, 2), candidate: round(1000 * reduced_s, 2)}
    speedup = fp32_s / reduced_s if reduced_s > 0 else float("inf")
    if speedup >= MIN_GAIN:
        return PrecisionChoice(candidate, f"{candidate} measured {speedup:.2f}x faster than fp32 per step", timings)
    return PrecisionChoice(
        "fp32", f"{candidate} measured {speedup:.2f}x the speed of fp32 per step (needs {MIN_GAIN}x)", timings
    )


def timed_passes(step, dtype: torch.dtype | None, device: torch.device, count: int) -> list[float]:
    """Seconds of each of ``count`` calls of ``step()`` (a forward and backward pass) under autocast
    to ``dtype`` (None: no autocast)."""
    times = []
    for _ in range(count):
        context = torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        with context:
            step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def decided_early(fp32_s: float, reduced_s: float) -> bool:
    """Whether one timed pass of each precision settles ``auto`` (see ``LONG_PASS_S``)."""
    if min(fp32_s, reduced_s) < LONG_PASS_S:
        return False
    speedup = fp32_s / reduced_s
    return speedup >= MIN_GAIN * CLEAR_MARGIN or speedup <= MIN_GAIN / CLEAR_MARGIN


def _median(times: list[float]) -> float:
    return sorted(times)[len(times) // 2]


def choose_precision(precision: str, device: torch.device, model, loss_of_batch, candidate: str | None = None):
    """The run's PrecisionChoice. ``loss_of_batch(model)`` computes the loss of one training batch on
    ``device``; ``auto`` times it (forward and backward) in fp32 and in the native candidate.
    ``candidate`` overrides the hardware's candidate (tests)."""
    explicit = check_requested(precision, device)
    if explicit is not None:
        return explicit
    reason = "requested"
    if candidate is None:
        candidate, reason = native_candidate(device)
    if candidate is None:
        return PrecisionChoice("fp32", f"auto: {reason}")
    if candidate == "fp16" and device.type != "cuda":
        return PrecisionChoice("fp32", "auto: fp16 runs on CUDA only")
    dtype = torch.bfloat16 if candidate == "bf16" else torch.float16
    rng = _rng_state(device)
    was_training = model.training
    model.train()

    # measured without loss scaling: the speed of the arithmetic is what is compared
    def step():
        loss_of_batch(model).backward()

    try:  # a warm-up pass, then one timed pass each; more (MEASURED_STEPS each) unless that decides
        fp32 = timed_passes(step, None, device, 2)[1:]
        reduced = timed_passes(step, dtype, device, 2)[1:]
        if not decided_early(fp32[0], reduced[0]):
            fp32 += timed_passes(step, None, device, MEASURED_STEPS - 1)
            reduced += timed_passes(step, dtype, device, MEASURED_STEPS - 1)
        fp32_s, reduced_s = _median(fp32), _median(reduced)
    finally:
        for p in model.parameters():
            p.grad = None
        _set_rng_state(rng, device)
        model.train(was_training)
    choice = decide(candidate, fp32_s, reduced_s)
    choice.reason = f"auto: {reason}; {choice.reason}"
    return choice


def _rng_state(device: torch.device):
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def _set_rng_state(state, device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


@contextmanager
def full_precision(model: torch.nn.Module):
    """Calls of ``model`` inside this block skip the autocast that Accelerate wrapped its forward in
    (bf16/fp16 training): they compute as the model loaded from its saved folder does."""
    original = model.__dict__.get("_original_forward")
    if original is None:
        yield model
        return
    wrapped = model.__dict__["forward"]
    model.forward = original
    try:
        yield model
    finally:
        model.forward = wrapped


def device_description(device: torch.device) -> str:
    """What the arithmetic's speed depends on, of the device: the GPU's name and compute capability,
    or the CPU's model name and core count."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return f"cuda {torch.cuda.get_device_name(device)} sm{major}{minor}"
    name = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            name = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), "")
    except OSError:
        pass
    import platform

    return f"cpu {name or platform.processor() or platform.machine()} x{os.cpu_count()}"


class DecisionCache:
    """Measured ``auto`` choices by what decides them (see the module's docstring)."""

    def __init__(self, folder, device: torch.device, model, batch: dict, task: str):
        config = getattr(model, "config", None)
        to_json = getattr(config, "to_json_string", None)
        architecture = to_json() if callable(to_json) else type(model).__name__
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        shapes = {k: list(v.shape) for k, v in sorted(batch.items()) if isinstance(v, torch.Tensor)}
        key = json.dumps(
            [
                device_description(device),
                torch.__version__,
                torch.get_num_threads(),
                task,
                architecture,
                trainable,
                total,
                shapes,
                bool(getattr(model, "is_gradient_checkpointing", False)),
            ],
            sort_keys=True,
            default=str,
        )
        self.path = folder / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"

    def get(self) -> PrecisionChoice | None:
        try:
            saved = json.loads(self.path.read_text(encoding="utf-8"))
            age_days = (time.time() - float(saved["measured_at"])) / 86400
            if saved["used"] not in ACCELERATE_NAMES or not 0 <= age_days < CACHE_DAYS:
                return None
            day = time.strftime("%Y-%m-%d", time.localtime(float(saved["measured_at"])))
            reason = f"{saved['reason']} (measured on {day}, reused: same device, model and batch shape)"
            return PrecisionChoice(saved["used"], reason, saved.get("timings_ms"))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def put(self, choice: PrecisionChoice) -> None:
        record = {
            "used": choice.used,
            "reason": choice.reason,
            "timings_ms": choice.timings_ms,
            "measured_at": time.time(),
        }
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, json.dumps(record))
        except OSError as exc:  # a read-only cache costs a measurement next time, nothing else
            log.debug("precision: could not keep the decision in %s (%s)", self.path, exc)
