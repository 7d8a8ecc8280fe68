"""Process-wide settings: logging, CPU threads, seeds, the device, library noise."""

import json
import logging
import os
import random
import sys
import time
import warnings
from typing import TYPE_CHECKING

from lmforge.config.schema import DEVICE_SPEC, device_problem
from lmforge.errors import ConfigError

if TYPE_CHECKING:  # torch is imported where it is used: `lmforge --help` must not load it
    import torch

log = logging.getLogger("lmforge")


def setup_logging(quiet: bool = False) -> None:
    """``lmforge: message`` lines on stderr; warnings only with ``--quiet``."""
    # A fresh handler each time: it must write to the sys.stderr of now (tests swap it).
    for old in list(log.handlers):
        log.removeHandler(old)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("lmforge: %(message)s"))
    log.addHandler(handler)
    log.propagate = False
    # Under torchrun every process runs this: the main one speaks, the others only on errors.
    level = logging.WARNING if quiet else logging.INFO
    log.setLevel(level if process_rank() == 0 else logging.ERROR)


def process_rank() -> int:
    """This process's rank among the processes of a distributed job (0 alone)."""
    return int(os.environ.get("RANK", "0") or 0)


def local_processes() -> int:
    """How many processes of this job run on this machine (1 alone)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)


def quiet_libraries() -> None:
    """Offline by default, and no fork warnings from the tokenizers library."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # peft asks transformers a question transformers 5 renamed; the answer is right, the warning noise.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    # The variable above silences the libraries imported from now on; those already imported are told.
    # (Importing transformers only to say so would cost every command, n-gram ones too, 0.6 s.)
    if "transformers.utils.logging" in sys.modules:
        sys.modules["transformers.utils.logging"].disable_progress_bar()
    if "huggingface_hub.utils" in sys.modules:
        sys.modules["huggingface_hub.utils"].disable_progress_bars()


# glibc's mallopt parameters
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_ALLOCATOR_SET: list[bool] = []


def keep_freed_memory() -> bool:
    """Let glibc's allocator keep the memory a training step frees for the next step, instead of
    returning every block over its mmap threshold to the kernel and faulting it back in, page by
    page, when the next step asks again: gradients, activations and their buffers are tens of MB,
    freed and allocated again at every step. MiniLM NER training on 2 threads: 2.05M -> 0.46M page
    faults and 6-9% faster steps (jemalloc and tcmalloc, which PyTorch's CPU tuning guide suggests,
    behave so too); peak memory within 1%; memory freed is returned to the system only
    above ``_M_TRIM_THRESHOLD`` at the top of the heap. Skipped where the user chose an allocator
    (jemalloc, tcmalloc or mimalloc in ``LD_PRELOAD``) or glibc's settings (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``),
    and off glibc; once per process. Returns whether it applied."""
    if _ALLOCATOR_SET:
        return _ALLOCATOR_SET[0]
    applied = False
    preload = os.environ.get("LD_PRELOAD", "")
    chosen = any(name in preload for name in ("jemalloc", "tcmalloc", "mimalloc")) or any(
        key in os.environ for key in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
    )
    if sys.platform.startswith("linux") and not chosen:
        import ctypes

        try:
            libc = ctypes.CDLL("libc.so.6")
            libc.gnu_get_libc_version  # glibc only: musl has no mallopt of these
            applied = bool(libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30))
        except (OSError, AttributeError):
            applied = False
    _ALLOCATOR_SET.append(applied)
    return applied


def set_threads(threads: int | None) -> int:
    """Use the cores this process may run on (or ``threads``), shared out between the processes of
    a distributed job on this machine; returns the count. The allocator keeps freed memory for reuse
    (``keep_freed_memory``)."""
    keep_freed_memory()
    if threads is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:
            cores = os.cpu_count() or 1
        threads = max(1, cores // local_processes())
    import torch  # here, not at the top: `lmforge --help` sets up logging and must not load torch

    torch.set_num_threads(threads)
    return threads


def set_seed(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# Set by ``lmforge train --processes N`` (training/launcher.py) for the processes it starts: N.
LAUNCHED_ENV = "LMFORGE_LAUNCHED"


def record_error(message: str) -> bool:
    """Under a torch launcher (torchrun, ``lmforge train --processes``), leave this process's
    one-line error where the launcher reads it: it names the process that failed first, with this
    message. Returns whether it was left."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return False
    try:
        with open(path, "w", encoding="utf-8") as handle:
            json.dump({"message": message, "timestamp": str(int(time.time()))}, handle)
    except OSError:
        return False
    return True


def resolve_device(spec: str = "auto") -> "torch.device":
    """The torch device of ``spec`` (``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``): the one place that
    decides where models run. ``auto`` is CUDA where there is one; under ``torchrun`` a CUDA process
    takes its local rank's GPU."""
    if not isinstance(spec, str) or not DEVICE_SPEC.fullmatch(spec):
        raise ConfigError(f"device: {device_problem(spec)}")
    import torch

    if spec == "cpu" or (spec == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"device: '{spec}' asks for CUDA, and torch sees no CUDA device here (use device=cpu)")
    if spec in ("auto", "cuda"):
        index = (
            int(os.environ.get("LOCAL_RANK", "0") or 0) if "LOCAL_RANK" in os.environ else torch.cuda.current_device()
        )
        return torch.device("cuda", index)
    index = int(spec.split(":", 1)[1])
    if index >= torch.cuda.device_count():
        raise ConfigError(f"device: '{spec}': torch sees {torch.cuda.device_count()} CUDA device(s) (0-based)")
    return torch.device("cuda", index)
