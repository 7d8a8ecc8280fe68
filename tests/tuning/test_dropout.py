"""The adapters' CPU dropout: nn.Dropout's Bernoulli mask in distribution, a quarter of the draws."""

import math

import pytest
import torch
from torch import nn
from transformers import BertForSequenceClassification

from conftest import tiny_bert_config, tiny_llama
from lmforge.tuning.dropout import STEPS, CheapDropout, cheapen_dropouts


def test_the_mask_drops_p_of_every_element_position_and_keeps_the_expectation():
    torch.manual_seed(0)
    x = torch.ones(64, 128, 33)  # an odd last size: the draws' quarters do not line up with rows
    dropout = CheapDropout(0.1).train()
    outs = torch.stack([dropout(x) for _ in range(8)])
    dropped = round(0.1 * STEPS) / STEPS
    n = outs.numel()
    rate = (outs == 0).float().mean().item()
    assert abs(rate - dropped) < 5 * math.sqrt(dropped * (1 - dropped) / n)
    # each of the four 15-bit quarters of a 64-bit draw: the same rate
    lanes = (outs == 0).flatten()[: n // 4 * 4].view(-1, 4).float().mean(0)
    assert torch.all((lanes - dropped).abs() < 5 * math.sqrt(dropped * (1 - dropped) / (n / 4)))
    kept = outs[outs != 0]
    assert torch.allclose(kept, torch.full_like(kept, STEPS / (STEPS - round(0.1 * STEPS))))
    assert outs.mean().item() == pytest.approx(1.0, abs=0.01)
    # neighbouring elements are not correlated
    flat = (outs == 0).flatten().float()
    assert (flat[1:] * flat[:-1]).mean().item() == pytest.approx(dropped**2, abs=0.002)


def test_seeded_draws_repeat_and_the_gradient_is_the_mask():
    x = torch.randn(4, 7, 16, requires_grad=True)
    dropout = CheapDropout(0.3).train()
    torch.manual_seed(3)
    first = dropout(x)
    torch.manual_seed(3)
    again = dropout(x)
    assert torch.equal(first, again)
    first.sum().backward()
    scale = STEPS / (STEPS - round(0.3 * STEPS))
    assert torch.equal(x.grad, (first != 0).float() * scale)


def test_evaluation_and_edge_rates_are_nn_dropouts():
    x = torch.randn(8, 8)
    assert torch.equal(CheapDropout(0.5).eval()(x), x)
    assert torch.equal(CheapDropout(0.0).train()(x), x)
    assert torch.equal(CheapDropout(1.0).train()(x), torch.zeros_like(x))
    assert CheapDropout(0.2)(x.to(torch.bfloat16)).dtype == torch.bfloat16


def test_the_lora_adapters_dropouts_are_replaced_and_nothing_else():
    import peft

    from lmforge.tuning.lora import wrap

    model = wrap(tiny_llama(), peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, target_modules="all-linear"))
    assert sum(isinstance(m, CheapDropout) for m in model.modules()) == 7 * 2  # q k v o gate up down, 2 layers
    bert = BertForSequenceClassification(tiny_bert_config())
    model = wrap(bert, peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, target_modules=["query", "value"]))
    assert sum(isinstance(m, CheapDropout) for m in model.modules()) == 2 * 2
    assert any(type(m) is nn.Dropout for m in model.modules())  # BERT's own dropouts stay
    assert cheapen_dropouts(model) == 0
