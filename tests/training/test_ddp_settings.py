"""DDP's settings as Accelerate receives them: the gradients' compression hook, checked before any
process starts."""

import pytest
import torch
from accelerate.utils import DDPCommunicationHookType

from lmforge.config import load_config
from lmforge.errors import ConfigError
from lmforge.training.distributed import _strategy_plugin


def _settings(tmp_path, *overrides: str, device: str = "cpu"):
    config = tmp_path / "job.yaml"
    config.write_text("data: {train: train.jsonl}\n", encoding="utf-8")
    plugin = _strategy_plugin(load_config(config, list(overrides)), torch.device(device))
    (ddp,) = plugin["kwargs_handlers"]
    return ddp


def test_exact_gradients_by_default_in_ddps_buckets(tmp_path):
    ddp = _settings(tmp_path)
    assert ddp.comm_hook == DDPCommunicationHookType.NO
    assert ddp.gradient_as_bucket_view  # no copy of the gradients into the buckets


@pytest.mark.parametrize(("name", "hook"), [("fp16", "fp16"), ("powersgd", "power_sgd")])
def test_compression_picks_torchs_hook(tmp_path, name, hook):
    ddp = _settings(
        tmp_path,
        f"distributed.gradient_compression={name}",
        "distributed.powersgd_rank=4",
        "distributed.powersgd_start=10",
    )
    assert ddp.comm_hook.value == hook
    if name == "powersgd":
        assert ddp.comm_state_option == {"matrix_approximation_rank": 4, "start_powerSGD_iter": 10}


def test_bf16_on_cpu_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"^distributed.gradient_compression: bf16 needs CUDA devices \(NCCL\)"):
        _settings(tmp_path, "distributed.gradient_compression=bf16")


def test_compression_outside_ddp_names_the_key(tmp_path):
    config = tmp_path / "job.yaml"
    config.write_text("data: {train: train.jsonl}\ndistributed: {strategy: fsdp, gradient_compression: fp16}\n")
    with pytest.raises(ConfigError, match="gradient_compression: fp16 needs strategy: ddp") as caught:
        load_config(config)
    assert "\n" not in str(caught.value)
