"""R-Drop (training/rdrop.py): the loss is the mean of the two passes' task losses plus alpha times
their symmetric KL, checked by hand on fixed logits and on a model's two dropout passes (class
weights and label smoothing included); the tasks give the logits R-Drop compares; tasks without
them are refused naming the key."""

import math

import pytest
import torch
from transformers import BertForSequenceClassification, BertForTokenClassification

from conftest import tiny_bert_config
from lmforge.config import load_config
from lmforge.data.batching import pad_features
from lmforge.data.examples import LabelSet
from lmforge.errors import ConfigError
from lmforge.models.crf_head import attach_crf
from lmforge.tasks import get_task
from lmforge.training.rdrop import RDropLoss, check_rdrop, rdrop_loss, symmetric_kl, training_loss

LOGITS1 = [[2.0, 0.5, -1.0], [0.0, 1.0, 0.0]]
LOGITS2 = [[1.5, 1.0, -0.5], [0.2, 0.4, 0.1]]
LABELS = [0, 1]


def _softmax(row: list[float]) -> list[float]:
    exps = [math.exp(v) for v in row]
    return [e / sum(exps) for e in exps]


def _kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q))


def test_rdrop_loss_by_hand_on_fixed_logits():
    alpha = 0.7
    ce1 = sum(-math.log(_softmax(row)[y]) for row, y in zip(LOGITS1, LABELS)) / 2
    ce2 = sum(-math.log(_softmax(row)[y]) for row, y in zip(LOGITS2, LABELS)) / 2
    kl = sum(
        (_kl(_softmax(a), _softmax(b)) + _kl(_softmax(b), _softmax(a))) / 2 for a, b in zip(LOGITS1, LOGITS2)
    ) / len(LABELS)
    expected = (ce1 + ce2) / 2 + alpha * kl

    p, q, y = torch.tensor(LOGITS1), torch.tensor(LOGITS2), torch.tensor(LABELS)
    loss1, loss2 = torch.nn.functional.cross_entropy(p, y), torch.nn.functional.cross_entropy(q, y)
    assert rdrop_loss(loss1, p, loss2, q, alpha).item() == pytest.approx(expected, abs=1e-6)
    assert symmetric_kl(p, q).item() == pytest.approx(kl, abs=1e-6)


def test_symmetric_kl_is_symmetric_zero_on_equal_logits_and_on_no_rows():
    p, q = torch.tensor(LOGITS1), torch.tensor(LOGITS2)
    assert symmetric_kl(p, q).item() == pytest.approx(symmetric_kl(q, p).item(), abs=1e-7)
    assert symmetric_kl(p, p).item() == 0.0
    assert symmetric_kl(p + 3.0, p).item() == pytest.approx(0.0, abs=1e-6)  # a shift is the same distribution
    assert symmetric_kl(torch.zeros(0, 3, requires_grad=True), torch.zeros(0, 3)).item() == 0.0


def _classifier(dropout: float):
    torch.manual_seed(0)
    config = tiny_bert_config(num_labels=3)
    config.hidden_dropout_prob = dropout
    return BertForSequenceClassification(config).train()


def _batch():
    generator = torch.Generator().manual_seed(1)
    features = [
        {"input_ids": torch.randint(1, 100, (n,), generator=generator).tolist(), "label": i % 3}
        for i, n in enumerate([6, 4, 9, 5])
    ]
    return pad_features(features, 0)


def _weighted_task():
    task = get_task("classification")
    task.class_weights = torch.tensor([1.0, 2.0, 0.5])
    task.label_smoothing = 0.1
    return task


def test_two_dropout_passes_give_the_mean_task_loss_plus_alpha_kl():
    model, task, batch = _classifier(0.3), _weighted_task(), _batch()
    torch.manual_seed(5)
    got = RDropLoss(task, 0.5)(model, dict(batch))
    torch.manual_seed(5)  # the same two dropout masks, by hand
    logits1 = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logits2 = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    ce = [
        torch.nn.functional.cross_entropy(x, batch["labels"], weight=task.class_weights, label_smoothing=0.1)
        for x in (logits1, logits2)
    ]
    p, q = logits1.log_softmax(-1), logits2.log_softmax(-1)
    kl = ((p.exp() * (p - q)).sum(-1) + (q.exp() * (q - p)).sum(-1)).mean() / 2
    assert kl.item() > 0  # dropout made the passes differ
    assert got.item() == pytest.approx(((ce[0] + ce[1]) / 2 + 0.5 * kl).item(), abs=1e-6)


def test_without_dropout_rdrop_is_the_task_loss():
    model, task, batch = _classifier(0.0), _weighted_task(), _batch()
    assert RDropLoss(task, 2.0)(model, dict(batch)).item() == pytest.approx(task.loss(model, dict(batch)).item())


def test_training_loss_is_the_tasks_own_when_off():
    task = get_task("classification")
    assert training_loss(task, 0.0) == task.loss
    assert isinstance(training_loss(task, 0.1), RDropLoss)


# -- the tasks' logits -----------------------------------------------------------------------------
def _tagger_batch(task):
    generator = torch.Generator().manual_seed(2)
    features = []
    for n in [6, 4, 8]:
        ids = torch.randint(1, 100, (n,), generator=generator).tolist()
        labels = [-100] + [j % 3 for j in range(n - 2)] + [-100]
        features.append({"input_ids": ids, "labels": labels, "heads": list(range(1, n - 1))})
    return task.collate(features, type("Tokenizer", (), {"pad_token_id": 0})())


def test_token_classification_scores_each_labelled_token():
    task = get_task("token_classification")
    torch.manual_seed(0)
    model = BertForTokenClassification(tiny_bert_config(num_labels=3)).train()
    batch = _tagger_batch(task)
    loss, logits = task.loss_and_logits(model, dict(batch))
    assert logits.shape == (task.loss_units(batch), 3) == (4 + 2 + 6, 3)
    assert loss.item() == task.loss(model, dict(batch)).item()


def test_token_classification_with_a_crf_compares_the_words_emissions():
    task = get_task("token_classification")
    task.crf = True
    torch.manual_seed(0)
    model = BertForTokenClassification(tiny_bert_config(num_labels=3)).train()
    attach_crf(model, LabelSet(["O", "B-X", "I-X"], {}).names, "bio")
    batch = _tagger_batch(task)
    loss, logits = task.loss_and_logits(model, dict(batch))
    assert logits.shape == (int(batch["head_mask"].sum()), 3) == (12, 3)
    full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.allclose(logits[:4], full[0, 1:5])  # the first sentence's words, in order
    assert loss.item() == pytest.approx(task.loss(model, dict(batch)).item())
    rdrop = RDropLoss(task, 1.0)(model, dict(batch))
    assert torch.isfinite(rdrop) and rdrop.requires_grad


# -- settings ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("task", ["causal_lm", "masked_lm", "seq2seq"])
def test_tasks_without_label_distributions_are_refused(task):
    config = load_config(None, ["data.train=train.jsonl", f"task={task}", "train.rdrop=1.0"])
    with pytest.raises(ConfigError) as info:
        check_rdrop(config, get_task(task))
    message = str(info.value)
    assert message.startswith(f"train.rdrop: task {task} has no label distribution") and "\n" not in message
    assert "classification, token_classification" in message


def test_negative_alpha_fails_naming_the_key():
    with pytest.raises(ConfigError, match=r"train\.rdrop: Input should be greater than or equal to 0"):
        load_config(None, ["data.train=train.jsonl", "train.rdrop=-0.5"])


def test_classification_and_ner_pass_the_check():
    for task in ("classification", "token_classification"):
        config = load_config(None, ["data.train=train.jsonl", f"task={task}", "train.rdrop=1.0"])
        check_rdrop(config, get_task(task))
