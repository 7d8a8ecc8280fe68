"""The row-wise all-reduce of embedding gradients (``EmbeddingRows``) gives what DDP's whole-table
all-reduce gives, in two gloo processes on the CPU: rows only one process used, rows both used,
a step that used most rows (the whole-table fallback), accumulated micro batches, a gradient made
outside the module's look-up (a penalty on the weights, a head multiplying by the table) and a
step where no process touched the table."""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lmforge.training.distributed import EmbeddingRows

SCALE = torch.arange(1.0, 5.0)


class _Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(dist.get_rank())  # different weights: attach makes them process 0's
        self.words = torch.nn.Embedding(50, 4)
        self.positions = torch.nn.Embedding(8, 4)  # below ``smallest``: left to DDP

    def forward(self, step):
        total = self.positions(torch.arange(2)).sum()
        if "ids" in step:
            total = total + (self.words(step["ids"]) * SCALE).sum()
        if "penalty" in step:  # dense, different per process
            total = total + step["penalty"] * (self.words.weight**2).sum()
        if "head" in step:  # a head multiplying by the table
            total = total + (torch.ones(1, 4) @ self.words.weight.t()).sum() * step["head"]
        return total


def _expected(weight: torch.Tensor, steps: list[dict]) -> torch.Tensor | None:
    """The mean over the processes of the whole table's gradient, as DDP computes it."""
    grad = torch.zeros_like(weight)
    for step in steps:
        if "ids" in step:
            ids = step["ids"].reshape(-1)
            grad.index_add_(0, ids, SCALE.expand(ids.numel(), 4))
        if "penalty" in step:
            grad += 2 * step["penalty"] * weight.detach()
        if "head" in step:
            grad += step["head"]
    dist.all_reduce(grad)
    return grad / dist.get_world_size()


def _worker(rank: int, port: int, failures) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        model = _Model()
        rows = EmbeddingRows.attach(model, 2, torch.device("cpu"), smallest=20)
        assert rows is not None and [name for name, _ in rows.tables] == ["words.weight"]
        weights = [torch.empty(50, 4) for _ in range(2)]
        dist.all_gather(weights, model.words.weight.detach())
        assert torch.equal(weights[0], weights[1]), "process 0's weights everywhere"
        plan = [
            [{"ids": torch.tensor([[rank, 10 + rank, 7]])}],  # rows of one process and of both
            [{"ids": torch.arange(rank, 50, 1 + rank)}],  # most rows: the whole table is all-reduced
            [{"ids": torch.tensor([3, 3, 40 + rank])}, {"ids": torch.tensor([[5 + rank]])}],  # micro batches
            [{"ids": torch.tensor([1]), "penalty": 0.01 * (rank + 1)}],  # a dense penalty
            [{"head": float(rank)}],  # only process 1's head has a gradient
            [{}],  # the table untouched everywhere: no gradient is made
        ]
        for number, steps in enumerate(plan):
            for step in steps:
                model(step).backward()
            rows.reduce()
            expected = _expected(model.words.weight, steps)
            got = model.words.weight.grad
            if not steps[0]:
                if got is not None:
                    failures.put(f"process {rank}, step {number}: a gradient where none was taken")
            elif got is None or not torch.allclose(got, expected):
                failures.put(f"process {rank}, step {number}: {got} != {expected}")
            model.zero_grad(set_to_none=True)
    except Exception as exc:  # noqa: BLE001 - reported to the test
        failures.put(f"process {rank}: {exc!r}")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_rows_reduce_as_ddp_does():
    context = mp.get_context("spawn")
    failures = context.Queue()
    mp.start_processes(_worker, args=(_free_port(), failures), nprocs=2, start_method="spawn")
    found = []
    while not failures.empty():
        found.append(failures.get())
    assert not found, found
