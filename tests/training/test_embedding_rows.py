"""The row-wise all-reduce of embedding gradients (``EmbeddingRows``) gives what DDP's whole-table
all-reduce gives, in two gloo processes on the CPU: rows only one process used, rows both used,
a step that used most rows (the whole-table fallback) and accumulated micro batches."""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lmforge.training.distributed import EmbeddingRows


class _Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.words = torch.nn.Embedding(50, 4)
        self.positions = torch.nn.Embedding(8, 4)  # below ``smallest``: left to DDP

    def forward(self, ids):
        words = self.words(**ids) if isinstance(ids, dict) else self.words(ids)
        return (words * torch.arange(1.0, 5.0)).sum() + self.positions(torch.arange(2)).sum()


def _expected(model: _Model, batches: list[torch.Tensor]) -> torch.Tensor:
    """The mean over the processes of the whole table's gradient, as DDP computes it."""
    grad = torch.zeros_like(model.words.weight)
    for ids in batches:
        ids = ids["input"] if isinstance(ids, dict) else ids
        grad.index_add_(0, ids.reshape(-1), torch.arange(1.0, 5.0).expand(ids.numel(), 4))
    dist.all_reduce(grad)
    return grad / dist.get_world_size()


def _worker(rank: int, port: int, failures) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        model = _Model()
        rows = EmbeddingRows.attach(model, 2, smallest=20)
        assert rows is not None and [name for name, _ in rows.tables] == ["words"]
        steps = [
            [torch.tensor([[rank, 10 + rank, 7]])],  # rows of one process and of both
            [torch.arange(rank, 50, 1 + rank)],  # most rows: the whole table is all-reduced
            [torch.tensor([3, 3, 40 + rank]), torch.tensor([[5 + rank]])],  # two micro batches
            [torch.tensor([9])] if rank else [{"input": torch.tensor([rank + 30])}],  # ids by keyword
        ]
        model.train()
        for batches in steps:
            for ids in batches:
                model(ids).backward()
            with torch.no_grad():
                model.eval()
                model(torch.tensor([49]))  # not training: not recorded
                model.train()
            rows.reduce()
            expected = _expected(model, batches)
            if not torch.allclose(model.words.weight.grad, expected):
                failures.put(f"process {rank}: {model.words.weight.grad} != {expected}")
            model.zero_grad(set_to_none=True)
        rows.detach()
        model(torch.tensor([1])).backward()
        assert rows.used == [[]], "detached: nothing recorded"
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
