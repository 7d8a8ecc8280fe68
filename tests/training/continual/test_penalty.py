"""EWC and L2-SP penalties: zero at their anchors, the hand-computed value away from them."""

import pytest
import torch
from torch import nn

from lmforge.training.continual.penalty import QuadraticPenalty, diagonal_fisher, ewc_penalty, l2sp_penalty, pad_to


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(2, 2, bias=False)
        self.head = nn.Linear(2, 3, bias=False)  # grown from 2 labels to 3
        with torch.no_grad():
            self.body.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
            self.head.weight.copy_(torch.tensor([[0.5, -0.5], [1.0, 0.0], [0.2, 0.1]]))


def test_ewc_is_zero_at_the_anchor_and_the_hand_value_away():
    model = Tiny()
    fisher = {
        "body.weight": torch.tensor([[1.0, 0.0], [2.0, 0.5]]),
        "head.weight": torch.tensor([[4.0, 1.0], [0.0, 2.0]]),
    }
    penalty = ewc_penalty(model, fisher, lam=10.0)
    assert penalty().item() == 0.0
    with torch.no_grad():
        model.body.weight += torch.tensor([[1.0, 1.0], [-1.0, 2.0]])
        model.head.weight += torch.tensor([[0.5, 0.0], [0.0, 1.0], [3.0, 3.0]])  # the new row has no Fisher
    # 10/2 * (1*1 + 0*1 + 2*1 + 0.5*4 + 4*0.25 + 1*0 + 0*0 + 2*1) = 5 * 8 = 40
    assert penalty().item() == pytest.approx(40.0)
    penalty().backward()
    # d/dtheta = lambda * F * (theta - theta*): body.weight[1][0] = 10 * 2 * -1
    assert model.body.weight.grad[1, 0].item() == pytest.approx(-20.0)
    assert model.head.weight.grad[2].abs().sum().item() == 0.0


def test_l2sp_pulls_old_weights_to_the_parent_and_new_ones_to_zero():
    model = Tiny()
    shapes = {"body.weight": torch.Size([2, 2]), "head.weight": torch.Size([2, 2])}  # before the head grew
    penalty = l2sp_penalty(model, shapes, alpha=0.1, beta=0.01)
    # At the start only the new row is away from its anchor (0): 0.01/2 * (0.2^2 + 0.1^2)
    assert penalty().item() == pytest.approx(0.005 * 0.05)
    with torch.no_grad():
        model.body.weight[0, 0] += 2.0
        model.head.weight[2] = torch.zeros(2)
    # 0.1/2 * 2^2
    assert penalty().item() == pytest.approx(0.2)


def test_a_frozen_weight_is_no_term():
    model = Tiny()
    model.body.weight.requires_grad_(False)
    assert len(l2sp_penalty(model, {}, 1.0, 1.0).terms) == 1
    assert QuadraticPenalty([])().item() == 0.0


def test_pad_to_places_old_rows_in_the_corner():
    padded = pad_to(torch.tensor([[1.0, 2.0]]), torch.Size([3, 2]))
    assert padded.tolist() == [[1.0, 2.0], [0.0, 0.0], [0.0, 0.0]]
    with pytest.raises(ValueError):
        pad_to(torch.ones(3), torch.Size([2]))


class _Regression:
    """A task whose loss is 1/2 (w . x - y)^2 of one example: its gradient is (w . x - y) x."""

    def collate(self, features, tokenizer):
        return {"x": torch.tensor([f["x"] for f in features]), "y": torch.tensor([f["y"] for f in features])}

    def loss(self, model, batch):
        return 0.5 * ((model(batch["x"]).squeeze(-1) - batch["y"]) ** 2).mean()


def test_the_fisher_is_the_mean_squared_gradient_of_single_examples():
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0.0]]))
    features = [{"x": [1.0, 2.0], "y": 0.0}, {"x": [2.0, 1.0], "y": 1.0}]
    fisher = diagonal_fisher(model, _Regression(), None, features, samples=10, seed=0, device="cpu")
    # gradients: (1 - 0) * [1, 2] = [1, 2] and (2 - 1) * [2, 1] = [2, 1]; mean of squares [2.5, 2.5]
    assert fisher["weight"].tolist() == [[2.5, 2.5]]
    assert model.weight.grad is None
    # in one batch of two: 2 x (the mean gradient [1.5, 1.5])^2
    batched = diagonal_fisher(model, _Regression(), None, features, samples=10, seed=0, device="cpu", batch_size=2)
    assert batched["weight"].tolist() == [[4.5, 4.5]]
