"""Several processes, on the engines the field uses: Accelerate builds the process group and wraps
the model (DDP, FSDP, DeepSpeed); ``torchrun``'s launcher starts local processes for ``lmforge train
--processes N``. lmforge adds the semantics a user relies on:

- the global batch is ``train.batch_size`` x processes x ``train.grad_accum``, logged at the start;
  each global batch is the one a single process would take with the same global batch, split between
  the processes (``data/batching.py``), so N processes reproduce one process's steps;
- evaluation runs once, on the main process (every row once, none dropped), and its metrics are
  broadcast so every process takes the same early-stopping and best-model decisions;
- only the main process writes the run folder, logs and checkpoints;
- an error in one process stops all, and the launcher reports that process's message.
"""

import importlib.util
import json
import logging
import os
import sys
import uuid

import torch
from accelerate import Accelerator, PartialState
from accelerate.state import AcceleratorState
from accelerate.utils import broadcast_object_list

from lmforge.config import JobConfig
from lmforge.errors import ConfigError
from lmforge.runtime import resolve_device

log = logging.getLogger("lmforge")


def world_size() -> int:
    """How many processes this job runs in (1 when it was not started by a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


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
    return {}


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


def sum_over_processes(accelerator: Accelerator, value: int) -> int:
    """``value`` summed over all processes (the loss units of a global batch)."""
    if accelerator.num_processes == 1:
        return value
    total = torch.tensor([value], dtype=torch.float64, device=accelerator.device)
    return int(accelerator.reduce(total, reduction="sum").item())


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
    (``torch``'s ``_set_params_and_buffers_to_ignore_for_model``) and reduced here before the
    optimizer step: each process records the token ids its embedding modules looked up while
    training (a forward pre-hook), the processes exchange them, and the union of those rows only
    is all-reduced and averaged; rows no process used are zero everywhere and stay so. The result
    is DDP's, up to summation order.

    Only ``nn.Embedding`` weights with ``SPARSE_MIN_ROWS`` rows or more (``distributed.embedding_rows:
    auto``; ``always`` takes every size), trainable and used by no other module (a tied LM head makes
    the gradient dense) are taken; with ``DENSE_SHARE`` of a table's rows used, it is all-reduced
    whole. ``attach`` must run before ``accelerator.prepare`` wraps the model in DDP."""

    def __init__(self, tables: list[tuple[str, torch.nn.Embedding]], world: int):
        self.tables, self.world = tables, world
        self.used: list[list[torch.Tensor]] = [[] for _ in tables]
        self.dense = [False] * len(tables)  # a look-up whose ids the hook could not see: reduce whole
        self.hooks = [
            module.register_forward_pre_hook(self._recorder(i), with_kwargs=True)
            for i, (_, module) in enumerate(tables)
        ]

    @classmethod
    def attach(cls, model: torch.nn.Module, world: int, smallest: int = SPARSE_MIN_ROWS) -> "EmbeddingRows | None":
        """Take ``model``'s untied embedding tables of ``smallest`` rows or more out of DDP (None when
        it has none)."""
        owners: dict[int, int] = {}
        for _, param in model.named_parameters(remove_duplicate=False):
            owners[id(param)] = owners.get(id(param), 0) + 1
        tables = [
            (name, module)
            for name, module in model.named_modules()
            if isinstance(module, torch.nn.Embedding)
            and module.weight.requires_grad
            and module.num_embeddings >= smallest
            and owners.get(id(module.weight)) == 1
            and not module.sparse
        ]
        if not tables:
            return None
        names = [f"{name}.weight" for name, _ in tables]
        torch.nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, names)
        for _, module in tables:  # DDP broadcasts the weights it wraps from process 0; these too
            torch.distributed.broadcast(module.weight.data, src=0)
        log.info("ddp: gradients of %s all-reduced over the rows each step used", ", ".join(names))
        return cls(tables, world)

    def _recorder(self, index: int):
        def record(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
            if module.training and torch.is_grad_enabled():
                ids = args[0] if args else kwargs.get("input")
                if isinstance(ids, torch.Tensor):
                    self.used[index].append(ids.detach().reshape(-1))
                else:
                    self.dense[index] = True

        return record

    def reduce(self) -> None:
        """Average the tables' gradients over the processes (every process calls it, each step)."""
        for index, (_, module) in enumerate(self.tables):
            weight = module.weight
            if weight.grad is None:
                weight.grad = torch.zeros_like(weight)
            grad = weight.grad
            used = self.used[index]
            mine = torch.unique(torch.cat(used)) if used else torch.empty(0, dtype=torch.long, device=grad.device)
            if self.dense[index]:  # every process takes part in the exchange of ids, whole or not
                mine = torch.arange(grad.shape[0], device=grad.device)
            self.used[index], self.dense[index] = [], False
            rows = self._union(mine.to(grad.device, torch.long))
            if rows.numel() > DENSE_SHARE * grad.shape[0]:
                torch.distributed.all_reduce(grad)
                grad.div_(self.world)
            elif rows.numel():
                values = grad.index_select(0, rows)
                torch.distributed.all_reduce(values)
                grad.index_copy_(0, rows, values.div_(self.world))

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

    def detach(self) -> None:
        """Remove the recording hooks (the model outlives the job in ``tune`` and the web UI)."""
        for hook in self.hooks:
            hook.remove()


# -- the launcher -------------------------------------------------------------------------------
def launch(processes: int, argv: list[str]) -> int:
    """Run ``python -m lmforge ARGV`` in ``processes`` local processes with torch's elastic launcher
    (what ``torchrun --standalone --nproc_per_node N`` does); returns the exit code. When one process
    fails the launcher stops the others, and this prints the first failure's own message."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if "OMP_NUM_THREADS" not in os.environ:  # each process's share of the cores, as torchrun sets it
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // processes))
    for name in ("torch.distributed.elastic", "torch.distributed.launcher"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=processes,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        monitor_interval=0.2,
    )
    try:
        elastic_launch(config, sys.executable)("-m", "lmforge", *argv)
    except ChildFailedError as exc:
        rank, failure = _first_failure(exc)
        message = failure.message if isinstance(failure.message, str) else json.dumps(failure.message)
        if failure.error_file_data.get("message"):
            print(f"lmforge: error: (process {rank} of {processes}) {message}", file=sys.stderr)
        else:
            print(
                f"lmforge: error: process {rank} of {processes} failed (exit code {failure.exitcode})", file=sys.stderr
            )
        return failure.exitcode if failure.exitcode > 0 else 1
    return 0


def _first_failure(exc):
    """The failure to report: the earliest that left an lmforge message, else the launcher's pick."""
    recorded = [(f.timestamp, rank, f) for rank, f in exc.failures.items() if f.error_file_data.get("message")]
    if recorded:
        _, rank, failure = min(recorded, key=lambda t: (t[0], t[1]))
        return rank, failure
    return exc.get_first_failure()
