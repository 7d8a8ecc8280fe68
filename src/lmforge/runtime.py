"""Process-wide settings: logging, CPU threads, seeds, library noise."""

import logging
import os
import random
import sys
import warnings

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
    log.setLevel(logging.WARNING if quiet else logging.INFO)


def quiet_libraries() -> None:
    """Offline by default, and no fork warnings from the tokenizers library."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # peft asks transformers a question transformers 5 renamed; the answer is right, the warning noise.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def set_threads(threads: int | None) -> int:
    """Use the cores this process may run on (or ``threads``); returns the count."""
    if threads is None:
        try:
            threads = len(os.sched_getaffinity(0))
        except AttributeError:
            threads = os.cpu_count() or 1
    import torch  # here, not at the top: `lmforge --help` sets up logging and must not load torch

    torch.set_num_threads(threads)
    return threads


def set_seed(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
