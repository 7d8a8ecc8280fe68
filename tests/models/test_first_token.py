"""The first-token last layer of a BERT classifier: the same logits and gradients as the whole layer
while training on padded batches and packed rows; the whole layer in evaluation; copies run their own
weights; models it cannot serve keep their layer."""

import copy

import pytest
import torch
from transformers import BertForSequenceClassification, BertForTokenClassification

from conftest import tiny_bert_config
from lmforge.data.batching import pad_features
from lmforge.models.first_token import enable_first_token, first_token_reason
from lmforge.models.unpadded import enable_unpadded, pack_features

LENGTHS = [5, 11, 3, 8]


def _model(cls=BertForSequenceClassification, **extra):
    torch.manual_seed(0)
    config = tiny_bert_config(num_labels=3, **extra)
    return cls(config)


def _features() -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    return [{"input_ids": torch.randint(1, 100, (n,), generator=generator).tolist()} for n in LENGTHS]


def _step(model, batch):
    """(logits, gradients) of one training forward and backward."""
    model.train()
    model.zero_grad()
    logits = model(**batch).logits
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 1])).backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_same(ours, theirs):
    torch.testing.assert_close(ours[0], theirs[0], atol=1e-5, rtol=1e-5)
    assert ours[1].keys() == theirs[1].keys()
    for name in theirs[1]:
        torch.testing.assert_close(ours[1][name], theirs[1][name], atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_training_step_gives_the_whole_layer_logits_and_gradients(attention):
    whole = _model(attn_implementation=attention)
    short = copy.deepcopy(whole)
    assert enable_first_token(short)
    batch = pad_features(_features(), 0)
    _assert_same(_step(short, batch), _step(whole, batch))
    # the shortened layer ran: the encoder's output holds the first token only while training
    short.train()
    assert short.bert(**batch).last_hidden_state.shape[1] == 1
    short.eval()
    assert short.bert(**batch).last_hidden_state.shape[1] == max(LENGTHS)  # evaluation: every token


def test_under_lora_the_adapter_gradients_agree():
    peft = pytest.importorskip("peft")
    config = peft.LoraConfig(r=4, target_modules=["query", "key", "value", "dense"], init_lora_weights=False)
    whole = peft.get_peft_model(_model(), config)
    short = copy.deepcopy(whole)
    assert first_token_reason(short) is None and enable_first_token(short)
    _assert_same(_step(short, pad_features(_features(), 0)), _step(whole, pad_features(_features(), 0)))


def test_packed_rows_give_the_padded_whole_layer_logits_and_gradients():
    whole = _model()
    short = copy.deepcopy(whole)
    enable_unpadded(short)
    assert enable_first_token(short)
    _assert_same(_step(short, pack_features(_features())), _step(whole, pad_features(_features(), 0)))
    short.train()
    calls = []
    short.bert.encoder.layer[-1].register_forward_hook(lambda module, args, out: calls.append(out))
    short(**pack_features(_features()))
    starts = [0, 5, 16, 19]  # the texts' first tokens in the packed row: the only outputs computed
    assert calls[0].shape == (1, sum(LENGTHS), 32) and calls[0][0].abs().sum(-1).nonzero().flatten().tolist() == starts


def test_a_copy_runs_its_own_weights():
    model = _model()
    enable_first_token(model)
    copied = copy.deepcopy(model)
    layer = copied.bert.encoder.layer[-1]
    assert layer.forward.__self__ is layer
    with torch.no_grad():
        layer.output.dense.weight.zero_()
    batch = pad_features(_features(), 0)
    assert not torch.allclose(_step(copied, batch)[0], _step(model, batch)[0])


def test_models_it_cannot_serve_keep_their_layer():
    tagger = _model(BertForTokenClassification)
    assert "BertForTokenClassification" in first_token_reason(tagger)
    assert not enable_first_token(tagger) and "forward" not in tagger.bert.encoder.layer[-1].__dict__
    peft = pytest.importorskip("peft")
    prompted = peft.get_peft_model(
        _model(), peft.PromptTuningConfig(task_type=peft.TaskType.SEQ_CLS, num_virtual_tokens=4)
    )
    assert "virtual tokens" in first_token_reason(prompted) and not enable_first_token(prompted)
