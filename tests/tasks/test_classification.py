import pytest
import torch
import torch.nn.functional as F

from lmforge.config import load_config
from lmforge.data.examples import LabelSet, TextExample
from lmforge.errors import ConfigError
from lmforge.tasks import get_task


class FixedLogits(torch.nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, **batch):
        return type("Out", (), {"logits": self.logits})()


def examples(ids):
    return [TextExample("t", label=str(i), label_id=i) for i in ids]


def test_balanced_class_weights_and_label_smoothing_enter_the_loss():
    task = get_task("classification")
    labels = LabelSet(["a", "b"], {"0": "a", "1": "b"})
    config = load_config(None, ["data.train=x", "train.class_weights=balanced", "train.label_smoothing=0.1"])
    task.configure(config, examples([0, 0, 0, 1]), labels)
    assert task.class_weights.tolist() == pytest.approx([4 / 6, 4 / 2])
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.3]])
    gold = torch.tensor([0, 1])
    loss = task.loss(FixedLogits(logits), {"input_ids": None, "labels": gold})
    expected = F.cross_entropy(logits, gold, weight=torch.tensor([4 / 6, 2.0]), label_smoothing=0.1)
    assert loss.item() == pytest.approx(expected.item())


def test_explicit_class_weights_must_match_the_labels():
    task = get_task("classification")
    config = load_config(None, ["data.train=x", "train.class_weights=[1.0, 2.0, 3.0]"])
    with pytest.raises(ConfigError, match="3 weights for 2 labels"):
        task.configure(config, examples([0, 1]), LabelSet(["a", "b"], {}))
