"""Memory of many LoRA adapters served on one base model (``lmforge serve BASE --adapters ...``):
the server process's resident memory with the base alone, with 1 adapter and with 8, against what 8
separate merged models would take.

- Base: SmolLM2-135M-Instruct on PyTorch in float32, loaded by the server's own code
  (``ServerState`` with the admin routes enabled, so adapters may join).
- Adapters: 8 LoRA adapters of rank ``--rank`` on every linear layer of every block (q, k, v, o,
  gate, up, down), random weights, written by peft in a separate process (so their making does
  not count), then loaded one after the other through the server's ``add_adapter`` (what
  ``--adapters`` and ``POST /v1/admin/adapters`` run).
- Resident memory (RSS) after each step, with the garbage collected; the adapters' own weights
  (their parameters' bytes) for comparison; one mixed batch (a row per adapter and one for the base)
  is decoded at the end to show the adapters work together.

    python bench/adapter_memory.py            # rank 16

The last line is ``ratio: X`` = the memory 8 merged models would hold (8 x the base's own growth of
the process) over the memory of the base + 8 adapters (the process's growth from before the base).
"""

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ADAPTERS = 8
MIB = 2**20


def make_adapters(folder: Path, rank: int, count: int) -> None:
    """``count`` random LoRA adapters for smollm2 under ``folder/NAME``, written by peft."""
    import peft
    import torch
    import transformers

    from lmforge.models.transformer import resolve_source

    source, _ = resolve_source("smollm2")
    base = transformers.AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = peft.get_peft_model(base, peft.LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets))
    for i in range(count):
        torch.manual_seed(i)
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if "lora_" in name:
                    parameter.normal_(0, 0.02)
        model.save_pretrained(folder / f"a{i}")


def rss() -> float:
    gc.collect()
    return psutil.Process().memory_info().rss / MIB


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--make", type=Path, help=argparse.SUPPRESS)  # the child process's job
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.make:
        make_adapters(args.make, args.rank, ADAPTERS)
        return 0

    work = Path(tempfile.mkdtemp(prefix="lmforge-bench-adapters-"))
    subprocess.run([sys.executable, __file__, "--make", str(work), "--rank", str(args.rank)], check=True)

    import torch

    from lmforge.runtime import quiet_libraries, set_threads
    from lmforge.serving.compute import COMPUTE
    from lmforge.serving.engine import Job, Row
    from lmforge.serving.services import open_models
    from lmforge.serving.settings import ServeSettings
    from lmforge.serving.state import ServerState

    quiet_libraries()
    set_threads(None)
    torch.ones(1) @ torch.ones(1)  # PyTorch's own start-up memory is not the model's
    before = rss()
    settings = ServeSettings(sources=["base=smollm2"], engine="torch", dtype="float32", admin_key="bench-admin-key-0")
    settings.check()
    state = ServerState(settings, open_models(settings))
    state.load()
    served = state.models["base"]
    rows = [("base alone", rss(), 0)]
    adapter_bytes = 0
    for i in range(ADAPTERS):
        COMPUTE.call(served.add_adapter, f"a{i}", work / f"a{i}")  # as the server does
        if i in (0, ADAPTERS - 1):
            model = served.generator.model
            adapter_bytes = sum(p.numel() * p.element_size() for n, p in model.named_parameters() if "lora_" in n)
            rows.append((f"+ {i + 1} adapter{'s' if i else ''}", rss(), adapter_bytes / MIB))

    # One mixed batch: a row for each adapter and one for the base, decoded together.
    ids = served.generator.encode("Give three tips for staying healthy.")
    done, counts = threading.Event(), {}

    def emit(row, kind, value):
        if kind == "done":
            counts[row] = value[1]
            if len(counts) == ADAPTERS + 1:
                done.set()

    names = [None, *[f"a{i}" for i in range(ADAPTERS)]]
    start = time.perf_counter()
    job = Job([Row(ids, 16, 0.0, 1.0, [], None, k, adapter=name) for k, name in enumerate(names)], emit)
    served.engine.submit(job)
    done.wait(600)
    seconds = time.perf_counter() - start
    rows.append(("after a mixed batch of 9 rows", rss(), adapter_bytes / MIB))
    state.close()

    base_growth = rows[0][1] - before
    with_eight = rows[2][1] - before
    print(f"SmolLM2-135M float32 base, {ADAPTERS} LoRA adapters of rank {args.rank} on all 7 linears of each block")
    print(f"process RSS before the base: {before:.0f} MiB")
    print("| state | RSS (MiB) | growth over the base alone (MiB) | adapter weights (MiB) |")
    print("|---|---:|---:|---:|")
    for label, value, weights in rows:
        print(f"| {label} | {value:.0f} | {value - rows[0][1]:.0f} | {weights:.1f} |")
    print(f"mixed batch: {sum(counts.values())} tokens for {len(counts)} rows in {seconds:.2f} s")
    print(f"8 merged models would hold about {8 * base_growth:.0f} MiB; base + 8 adapters: {with_eight:.0f} MiB")
    ratio = 8 * base_growth / with_eight
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "before": before, "ratio": ratio}, indent=1))
    print(f"ratio: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
