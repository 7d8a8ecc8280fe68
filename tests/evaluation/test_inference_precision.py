"""``--precision`` of eval / predict: auto follows the training precision where the device computes
it natively; impossible combinations are one-line errors."""

import pytest
import torch

from lmforge.errors import ConfigError
from lmforge.inference import precision as module
from lmforge.inference.precision import inference_precision, trained_precision

CPU = torch.device("cpu")


@pytest.fixture(params=[True, False], ids=["native-bf16", "emulated-bf16"])
def native(request, monkeypatch):
    monkeypatch.setattr(module, "cpu_has_native_bf16", lambda: request.param)
    return request.param


def test_auto_follows_the_training_precision_where_native(native):
    chosen = inference_precision("auto", "bf16", CPU)
    assert chosen.used == ("bf16" if native else "fp32")
    assert chosen.reason.startswith("the run trained in bf16")
    assert inference_precision("auto", "fp32", CPU).used == "fp32"
    assert inference_precision("auto", None, CPU).used == "fp32"  # a run recorded before the choice
    assert inference_precision("fp32", "bf16", CPU).used == "fp32"


def test_autocast_computes_in_the_chosen_type(native):
    layer = torch.nn.Linear(8, 4)
    with inference_precision("bf16", None, CPU).autocast():
        assert layer(torch.randn(2, 8)).dtype == torch.bfloat16
    with inference_precision("auto", "bf16", CPU).autocast():
        assert layer(torch.randn(2, 8)).dtype == (torch.bfloat16 if native else torch.float32)


def test_impossible_combinations_are_one_line_errors():
    with pytest.raises(ConfigError, match="fp16 runs on CUDA only"):
        inference_precision("fp16", "fp16", CPU)
    with pytest.raises(ConfigError, match="'int4' is not one of"):
        inference_precision("int4", None, CPU)


def test_trained_precision_reads_the_record():
    assert trained_precision({"precision": {"used": "bf16", "reason": "x"}}) == "bf16"
    assert trained_precision({}) is None and trained_precision(None) is None
