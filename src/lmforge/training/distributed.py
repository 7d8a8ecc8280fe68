"""Several processes, on the engines the field uses: Accelerate builds the process group and wraps
the model (DDP, FSDP, DeepSpeed); ``torchrun``'s launcher starts local processes for ``lmforge train
--processes N``. lmforge adds the semantics a user relies on:

- the global batch is ``train.batch_size`` x processes x ``train.grad_accum``, logged at the start;
  each global batch is the one a single process would take with the same global batch, split between
  the processes (``data/batching.py``), so N processes reproduce one process's steps;
- evaluation runs once, on the main process (every row once, none dropped), and its metrics are
  broadcast so every process takes the same early-stopping and best-model decisions;
- only the main process writes the run folder, logs and checkpoints;
- an error in one process stops all, and the launcher reports that process's message
  (``launcher.py``, which the launching process imports without the training stack).
"""

import importlib.util
import logging
import os

import torch
from accelerate import Accelerator, PartialState
from accelerate.state import AcceleratorState
from accelerate.utils import DDPCommunicationHookType, DistributedDataParallelKwargs, broadcast_object_list

from lmforge.config import JobConfig
from lmforge.errors import ConfigError
from lmforge.runtime import resolve_device
from lmforge.training.launcher import world_size

log = logging.getLogger("lmforge")


def start_processes(config: JobConfig) -> PartialState:
    """Join the job's processes (the process group, when a launcher started several) on the device of
    ``device``, before the model is built: the precision is chosen on the built model, and
    Accelerate fixes it when the Accelerator is made (``make_accelerator``)."""
    device = resolve_device(config.device)
    if device.type == "cuda" and "LOCAL_RANK" not in os.environ:
        torch.cuda.set_device(device)  # device: cuda:N in one process
    if world_size() > 1 and config.distributed.strategy == "fsdp":
        # Accelerate picks the process group's backends from these (a gloo group beside NCCL for
        # full state dicts); the plugin made in make_accelerator sets the same values.
        os.environ["ACCELERATE_USE_FSDP"] = "true"
        os.environ["FSDP_STATE_DICT_TYPE"] = "FULL_STATE_DICT"
        os.environ["FSDP_OFFLOAD_PARAMS"] = str(config.distributed.offload).lower()
    if (
        world_size() > 1
        and config.distributed.strategy == "deepspeed"
        and device.type == "cuda"
        and importlib.util.find_spec("deepspeed") is not None
    ):
        os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"  # else make_accelerator says what is missing
    return PartialState(cpu=device.type == "cpu")


def make_accelerator(config: JobConfig, precision: str = "no") -> Accelerator:
    """The Accelerator of a training job, after ``start_processes``: mixed precision ``precision``
    (Accelerate's name: no | bf16 | fp16), the distributed strategy from ``distributed``."""
    device = resolve_device(config.device)
    kwargs: dict = {}
    if world_size() > 1:
        kwargs = _strategy_plugin(config, device)
    _forget_other_precision(precision)
    return Accelerator(mixed_precision=precision, cpu=device.type == "cpu", **kwargs)


def _forget_other_precision(precision: str) -> None:
    """Accelerate keeps one mixed-precision setting per process and refuses an Accelerator with
    another: a second job in the same process (``tune`` trials, the web UI, tests) may choose
    differently, so the setting of a finished job is dropped (the process group is kept)."""
    chosen = AcceleratorState._shared_state.get("_mixed_precision")
    if chosen is not None and chosen != precision:
        AcceleratorState._reset_state(reset_partial_state=False)


def _strategy_plugin(config: JobConfig, device: torch.device) -> dict:
    dist = config.distributed
    if dist.strategy == "fsdp" and device.type != "cuda":
        log.warning(
            "warning: distributed.strategy: fsdp shards on CUDA devices only; on CPU Accelerate "
            "runs it as ddp (a full copy of the model per process)"
        )
    if dist.strategy == "fsdp":
        from accelerate import FullyShardedDataParallelPlugin

        return {
            "fsdp_plugin": FullyShardedDataParallelPlugin(
                fsdp_version=2,
                auto_wrap_policy="size_based_wrap",
                min_num_params=dist.min_params,
                cpu_offload=dist.offload,
                state_dict_type="FULL_STATE_DICT",
                reshard_after_forward=True,
            )
        }
    if dist.strategy == "deepspeed":
        if device.type != "cuda":
            raise ConfigError("distributed.strategy: deepspeed runs on CUDA devices only; use ddp or fsdp on CPU")
        try:
            import deepspeed  # noqa: F401
        except ImportError:
            raise ConfigError(
                "distributed.strategy: deepspeed needs the deepspeed package (pip install deepspeed)"
            ) from None
        from accelerate import DeepSpeedPlugin

        offload = "cpu" if dist.offload else "none"
        plugin = DeepSpeedPlugin(
            zero_stage=dist.zero_stage,
            gradient_accumulation_steps=config.train.grad_accum,
            gradient_clipping=config.train.max_grad_norm or 0.0,
            offload_optimizer_device=offload,
            offload_param_device=offload if dist.zero_stage == 3 else "none",
        )
        # lmforge batches the data itself (no DataLoader reaches Accelerate), so DeepSpeed cannot
        # infer its per-GPU batch: it is train.batch_size.
        plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = config.train.batch_size
        return {"deepspeed_plugin": plugin}
    return {"kwargs_handlers": [_ddp_settings(config, device)]}


COMPRESSION_HOOKS = {
    "none": DDPCommunicationHookType.NO,
    "fp16": DDPCommunicationHookType.FP16,
    "bf16": DDPCommunicationHookType.BF16,
    "powersgd": DDPCommunicationHookType.POWER_SGD,
}


def _ddp_settings(config: JobConfig, device: torch.device) -> DistributedDataParallelKwargs:
    """DDP's settings: the gradients' communication hook (``distributed.gradient_compression``,
    torch's hooks registered by Accelerate). Gradients are views into DDP's buckets: no copy of every
    gradient into a bucket and back each step, and one gradient-sized buffer less."""
    dist = config.distributed
    if dist.gradient_compression == "bf16" and device.type != "cuda":
        # torch's bf16 hook needs NCCL; gloo's fp16 reduction is no faster than fp32 (26 against
        # 29 ms for MiniLM's 42 MB on 2 CPU processes), so fp16 is offered on CPU for the bytes only
        raise ConfigError("distributed.gradient_compression: bf16 needs CUDA devices (NCCL); on CPU use fp16 or none")
    options = {}
    if dist.gradient_compression == "powersgd":
        options = {"matrix_approximation_rank": dist.powersgd_rank, "start_powerSGD_iter": dist.powersgd_start}
        log.info(
            "ddp: gradients all-reduced exact for %d steps, then at rank %d (PowerSGD)",
            dist.powersgd_start,
            dist.powersgd_rank,
        )
    elif dist.gradient_compression != "none":
        log.info("ddp: gradients all-reduced in %s", dist.gradient_compression)
    return DistributedDataParallelKwargs(
        gradient_as_bucket_view=True,
        comm_hook=COMPRESSION_HOOKS[dist.gradient_compression],
        comm_state_option=options,
    )


def log_global_batch(config: JobConfig, processes: int) -> int:
    """Log and return the global batch: per-process batch x processes x accumulation."""
    cfg = config.train
    total = cfg.batch_size * processes * cfg.grad_accum
    log.info(
        "global batch %d = %d per process x %d process%s x %d accumulation step%s",
        total,
        cfg.batch_size,
        processes,
        "" if processes == 1 else "es",
        cfg.grad_accum,
        "" if cfg.grad_accum == 1 else "s",
    )
    return total


def from_main(accelerator: Accelerator | PartialState, value):
    """``value`` as the main process has it, on every process (any picklable lmforge-made object)."""
    if accelerator.num_processes == 1:
        return value
    box = [value]
    broadcast_object_list(box, from_process=0)
    return box[0]


def sums_over_processes(accelerator: Accelerator, values: list[int]) -> list[int]:
    """Each of ``values`` summed over all processes, in one all-reduce (the loss units of a global
    batch, the processes that were asked to stop)."""
    if accelerator.num_processes == 1:
        return list(values)
    total = torch.tensor(values, dtype=torch.float64, device=accelerator.device)
    return [int(v) for v in accelerator.reduce(total, reduction="sum").tolist()]


def mean_over_processes(accelerator: Accelerator, total: float, count: int) -> float:
    """``sum(total) / sum(count)`` over all processes (a logged loss)."""
    if accelerator.num_processes == 1:
        return total / max(count, 1)
    pair = torch.tensor([total, float(count)], dtype=torch.float64, device=accelerator.device)
    pair = accelerator.reduce(pair, reduction="sum")
    return float(pair[0] / pair[1].clamp(min=1))


# -- embedding gradients, reduced over the rows used ------------------------------------------
SPARSE_MIN_ROWS = 4096  # embedding tables with at least this many rows are reduced row-wise
DENSE_SHARE = 0.5  # when the processes used more of a table's rows than this, all-reduce it whole


class EmbeddingRows:
    """Data-parallel gradients of large embedding tables, all-reduced over the rows a step used.

    A word embedding's gradient is zero outside the rows of the step's tokens -- a few thousand of
    30,000 or more -- yet DDP all-reduces the whole table every step: on MiniLM that is 47 of the
    91 MB a step sends, on two cores that also run the model. The tables are left out of DDP
    (``torch``'s ``_set_params_and_buffers_to_ignore_for_model``) and reduced here before clipping
    and the optimizer step: each process finds the rows of its gradient that are not zero (one read
    of the table, about 4 ms for MiniLM's on one thread), the processes exchange those row numbers,
    and the union of the rows only is all-reduced and averaged. Rows that are zero in every process
    average to zero, so the result is DDP's up to summation order, whatever made the gradient: token
    look-ups, an LM head that multiplies by the table, a penalty on the weights (``continual: ewc``)
    -- a dense gradient simply selects every row.

    Only ``nn.Embedding`` weights with ``SPARSE_MIN_ROWS`` rows or more (``distributed.embedding_rows:
    auto``; ``always`` takes every size), trainable and not shared with another module (a tied LM
    head) are taken; when the processes' rows are more than ``DENSE_SHARE`` of a table, it is
    all-reduced whole. ``attach`` must run before ``accelerator.prepare`` wraps the model in DDP."""

    def __init__(self, tables: list[tuple[str, torch.Tensor]], world: int):
        self.tables, self.world = tables, world

    @classmethod
    def attach(
        cls, model: torch.nn.Module, world: int, device: torch.device, smallest: int = SPARSE_MIN_ROWS
    ) -> "EmbeddingRows | None":
        """Take ``model``'s unshared embedding tables of ``smallest`` rows or more out of DDP (None when
        it has none); their weights are made process 0's, as DDP does with the weights it wraps (sent
        through ``device``, the process group's, where NCCL takes CUDA tensors only)."""
        owners: dict[int, int] = {}
        for _, param in model.named_parameters(remove_duplicate=False):
            owners[id(param)] = owners.get(id(param), 0) + 1
        tables = [
            (f"{name}.weight", module.weight)
            for name, module in model.named_modules()
            if isinstance(module, torch.nn.Embedding)
            and module.weight.requires_grad
            and module.num_embeddings >= smallest
            and owners.get(id(module.weight)) == 1
            and not module.sparse
        ]
        if not tables:
            return None
        names = [name for name, _ in tables]
        torch.nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, names)
        with torch.no_grad():
            for _, weight in tables:
                sent = weight.detach().to(device)
                torch.distributed.broadcast(sent, src=0)
                weight.copy_(sent)
        log.info("ddp: gradients of %s all-reduced over the rows each step used", ", ".join(names))
        return cls(tables, world)

    def reduce(self) -> None:
        """Average the tables' gradients over the processes (every process calls it, each step)."""
        for _, weight in self.tables:
            grad = weight.grad if weight.grad is not None else torch.zeros_like(weight)
            high, low = grad.amax(dim=1), grad.amin(dim=1)  # (aminmax takes six times as long here)
            mine = ((high > 0) | (low < 0) | high.isnan()).nonzero().squeeze(1)
            rows = self._union(mine)
            if not rows.numel():
                continue  # no process has a gradient here: none is made (one process would have none)
            if rows.numel() > DENSE_SHARE * grad.shape[0]:
                torch.distributed.all_reduce(grad)
                grad.div_(self.world)
            else:
                values = grad.index_select(0, rows)
                torch.distributed.all_reduce(values)
                grad.index_copy_(0, rows, values.div_(self.world))
            weight.grad = grad

    def _union(self, mine: torch.Tensor) -> torch.Tensor:
        counts = [torch.zeros(1, dtype=torch.long, device=mine.device) for _ in range(self.world)]
        torch.distributed.all_gather(counts, torch.tensor([mine.numel()], device=mine.device))
        longest = int(max(c.item() for c in counts))
        padded = torch.full((longest,), -1, dtype=torch.long, device=mine.device)
        padded[: mine.numel()] = mine
        gathered = [torch.empty_like(padded) for _ in range(self.world)]
        torch.distributed.all_gather(gathered, padded)
        every = torch.unique(torch.cat(gathered))
        return every[every >= 0]
