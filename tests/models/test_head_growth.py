"""A trained head grows for new labels: old rows kept exactly, new rows fresh; a CRF grows too."""

import pytest
import torch
from transformers import BertForSequenceClassification, BertForTokenClassification

from conftest import tiny_bert_config
from lmforge.config.model_spec import LstmSpec
from lmforge.errors import ModelError
from lmforge.models import load_model
from lmforge.models.crf_head import attach_crf, find_crf
from lmforge.models.head_growth import grow_crf, grow_output_layer, output_layer


def test_a_classifier_grows_and_keeps_its_rows():
    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny_bert_config(num_labels=2))
    old_w = model.classifier.weight.detach().clone()
    with torch.no_grad():
        model.classifier.bias.fill_(0.5)
    name = grow_output_layer(model, 2, ["neg", "pos", "neutral"])
    assert name == "classifier"
    assert model.classifier.weight.shape == (3, 32)
    assert torch.equal(model.classifier.weight[:2], old_w)
    assert model.classifier.bias.tolist() == [0.5, 0.5, 0.0]
    assert model.classifier.weight[2].abs().sum() > 0  # drawn, not zero
    assert model.config.id2label == {0: "neg", 1: "pos", 2: "neutral"} and model.config.num_labels == 3
    ids = torch.tensor([[1, 5, 7, 2]])
    assert model(input_ids=ids).logits.shape == (1, 3)


def test_the_lstm_classifier_grows_too():
    loaded = load_model(
        LstmSpec(family="lstm", embedding=8, hidden=8, layers=1), "sequence_classification", ["a", "b"], ["x y z"] * 4
    )
    old = loaded.model.classifier.weight.detach().clone()
    grow_output_layer(loaded.model, 2, ["a", "b", "c", "d"])
    assert loaded.model.classifier.out_features == 4 and torch.equal(loaded.model.classifier.weight[:2], old)


def test_the_head_is_the_last_layer_with_one_output_per_label():
    model = BertForSequenceClassification(tiny_bert_config(num_labels=32))  # as wide as the hidden layer
    assert output_layer(model, 32)[0] == "classifier"
    with pytest.raises(ModelError, match="no linear layer has 7 outputs"):
        grow_output_layer(model, 7, ["x"] * 8)
    with pytest.raises(ModelError, match="cannot shrink"):
        grow_output_layer(model, 32, ["x"] * 3)


def test_a_crf_keeps_the_transitions_between_old_tags():
    model = BertForTokenClassification(tiny_bert_config(num_labels=3))
    crf = attach_crf(model, ["O", "B-PER", "I-PER"], "bio")
    with torch.no_grad():
        crf.transitions.copy_(torch.arange(9.0).reshape(3, 3))
        crf.start_transitions.fill_(1.0)
    names = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG"]
    grow_output_layer(model, 3, names)
    grow_crf(model, names, "bio")
    grown = find_crf(model)
    assert grown is not crf and grown.num_tags == 5
    assert grown.transitions[:3, :3].tolist() == torch.arange(9.0).reshape(3, 3).tolist()
    assert grown.transitions[3:].abs().sum() == 0 and grown.start_transitions.tolist() == [1, 1, 1, 0, 0]
    # the scheme's constraints cover the new tags: O -> I-ORG is not allowed
    assert not bool(grown.trans_allowed[0, 4]) and bool(grown.trans_allowed[3, 4])
