import math

import pytest
import torch

from lmforge.training.early_stopping import EarlyStopping
from lmforge.training.optim import WarmupDecay, build_optimizer, warmup_steps


def test_linear_schedule_values():
    f = WarmupDecay(warmup=4, total=14, kind="linear")
    assert [round(f(s), 4) for s in (0, 3, 4, 9, 14)] == [0.2, 0.8, 1.0, 0.5, 0.0]


def test_cosine_schedule_midpoint_and_end():
    f = WarmupDecay(warmup=0, total=10, kind="cosine")
    assert f(0) == pytest.approx(1.0) and f(5) == pytest.approx(0.5) and f(10) == pytest.approx(0.0)
    assert WarmupDecay(2, 10, "constant")(9) == 1.0


def test_warmup_fraction_or_steps():
    assert warmup_steps(0.06, 1000) == 60 and warmup_steps(25, 1000) == 25


def test_no_weight_decay_on_biases_and_norms():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    opt = build_optimizer(model, 1e-3, 0.1)
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(model[0].weight)}


def test_early_stopping_patience_and_modes():
    stop = EarlyStopping("macro_f1", "max", patience=2)
    assert stop.update(0.5, 1) and not stop.update(0.5, 2) and not stop.should_stop
    assert not stop.update(0.4, 3) and stop.should_stop and stop.best_step == 1
    low = EarlyStopping("loss", "min", patience=1, min_delta=0.1)
    assert low.update(1.0, 1) and not low.update(0.95, 2) and low.should_stop
    assert not EarlyStopping("loss", "min", None).update(math.nan, 1)
