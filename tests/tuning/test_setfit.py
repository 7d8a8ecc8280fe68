"""SetFit's pieces on hand-made labels and a tiny BERT: the pairs (seeded, both kinds, only the right
kind), the mean-pooled classifier it trains (the sentence embedding, saved and loaded safely), the
pair loss and the config errors."""

from collections import Counter

import pytest
import torch
from transformers import AutoModelForSequenceClassification, BertForSequenceClassification

from conftest import tiny_bert_config
from lmforge.config import load_config
from lmforge.config.schema import TuningConfig
from lmforge.errors import ConfigError, DataError
from lmforge.models.embedding import mean_pool
from lmforge.models.mean_pooled import MeanPooledBertForSequenceClassification
from lmforge.tuning import apply_tuning
from lmforge.tuning.setfit import NEGATIVE, POSITIVE, make_pairs, pair_loss

LABELS = [0, 0, 1, 1, 1]  # two examples of label 0, three of label 1


def test_pairs_are_seeded_and_of_the_right_kind():
    pairs = make_pairs(LABELS, iterations=3, seed=7)
    assert pairs == make_pairs(LABELS, iterations=3, seed=7)
    assert pairs != make_pairs(LABELS, iterations=3, seed=8)
    # every round: each of the 5 examples gets one partner of its label and one of the other
    assert len(pairs) == 3 * 5 * 2
    kinds = Counter(target for *_, target in pairs)
    assert kinds == {POSITIVE: 15, NEGATIVE: 15}
    for i, j, target in pairs:
        assert i != j
        assert (LABELS[i] == LABELS[j]) == (target == POSITIVE)
    assert Counter(i for i, _, t in pairs if t == POSITIVE) == dict.fromkeys(range(5), 3)
    assert Counter(i for i, _, t in pairs if t == NEGATIVE) == dict.fromkeys(range(5), 3)
    # label 0 has two examples: each one's positive partner is the other
    assert {(i, j) for i, j, t in pairs if t == POSITIVE and LABELS[i] == 0} == {(0, 1), (1, 0)}


def test_a_label_with_one_example_gets_no_positive_pair():
    pairs = make_pairs([0, 1, 1], iterations=2, seed=0)
    assert [i for i, _, t in pairs if t == POSITIVE and i == 0] == []
    assert sorted((i, j) for i, j, t in pairs if t == POSITIVE) == [(1, 2), (1, 2), (2, 1), (2, 1)]
    assert len([p for p in pairs if p[2] == NEGATIVE]) == 6
    with pytest.raises(DataError, match="data.train: .*two examples of one label"):
        make_pairs([0, 1, 2], iterations=2, seed=0)


def tiny_classifier(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    return BertForSequenceClassification(tiny_bert_config(num_labels=2)).eval()


IDS = torch.tensor([[2, 5, 6, 7, 3], [2, 8, 3, 0, 0], [2, 9, 9, 3, 0]])  # (3, 5), padded with 0
MASK = (IDS != 0).long()


def test_the_setfit_model_reads_the_mean_pooled_embedding_and_loads_back(tmp_path):
    bert = tiny_classifier()
    model = apply_tuning(bert, TuningConfig(method="setfit"), "classification").eval()
    assert isinstance(model, MeanPooledBertForSequenceClassification)
    assert all(p.requires_grad for p in model.parameters())
    expected = mean_pool(bert.bert(IDS, attention_mask=MASK).last_hidden_state, MASK)  # the same body
    torch.testing.assert_close(model.embed(IDS, MASK), expected)
    logits = model(input_ids=IDS, attention_mask=MASK).logits
    torch.testing.assert_close(logits, model.classifier(expected))
    # padding does not change a text's logits: the mean is over its real tokens only
    torch.testing.assert_close(model(input_ids=IDS[1:2, :3]).logits, logits[1:2])
    model.save_pretrained(tmp_path, safe_serialization=True)
    assert not list(tmp_path.glob("*.bin")) and (tmp_path / "model.safetensors").is_file()
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path, use_safetensors=True, trust_remote_code=False)
    assert type(loaded) is MeanPooledBertForSequenceClassification
    torch.testing.assert_close(loaded.eval()(input_ids=IDS, attention_mask=MASK).logits, logits)


def test_pair_loss_is_the_squared_error_of_the_cosine():
    model = apply_tuning(tiny_classifier(), TuningConfig(method="setfit"), "classification").eval()
    left, right = {"input_ids": IDS[:2], "attention_mask": MASK[:2]}, {"input_ids": IDS[1:], "attention_mask": MASK[1:]}
    targets = torch.tensor([1.0, 0.0])
    a, b = model.embed(**left), model.embed(**right)
    cosine = (a * b).sum(-1)  # unit vectors
    expected = ((cosine - targets) ** 2).mean()
    torch.testing.assert_close(pair_loss(model, left, right, targets), expected)


@pytest.mark.parametrize(
    "overrides, named",
    [
        (["task=token_classification"], "tuning.method: setfit trains text classifiers"),
        (["model={family: lstm}"], "tuning.method: setfit fine-tunes a transformer encoder, not the lstm family"),
        (["model={family: ngram}"], "tuning.method: setfit .* not the ngram family"),
        (["tuning.pair_iterations=0"], "tuning.pair_iterations"),
        (["tuning.pair_iterations=-3"], "tuning.pair_iterations"),
        (["tuning.pair_iterations=100000"], "tuning.pair_iterations"),
        (["train.ema=0.99"], "train.ema: setfit"),
        (["train.adversarial={method: pgd, steps: 3}"], "train.adversarial: setfit .* would do nothing"),
        (["train.rdrop=1.0"], "train.rdrop: setfit"),
        (["train.label_smoothing=0.1"], "train.label_smoothing: setfit"),
        (["train.class_weights=balanced"], "train.class_weights: setfit"),
        (["train.early_stopping={patience: 2}"], "train.early_stopping: setfit"),
        (["tuning.label_templates=-1"], "tuning.label_templates"),
        (["tuning.template=It is good."], "tuning.template: must contain {label}"),
        (["tuning.template=It is {label} {mood}."], "tuning.template: must contain {label}.* no other"),
    ],
)
def test_bad_setfit_settings_fail_naming_the_key(overrides, named):
    with pytest.raises(ConfigError, match=named) as caught:
        load_config(None, ["data.train=train.jsonl", "tuning.method=setfit", *overrides])
    assert "\n" not in str(caught.value)


def test_setfit_refuses_a_model_it_cannot_pool():
    from transformers import LlamaConfig, LlamaForSequenceClassification

    llama = LlamaForSequenceClassification(
        LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    )
    with pytest.raises(ConfigError, match="tuning.method=setfit: needs a BERT-style encoder.*'llama'"):
        apply_tuning(llama, TuningConfig(method="setfit"), "classification")
    with pytest.raises(ConfigError, match="tuning.method=setfit: trains text classifiers"):
        apply_tuning(tiny_classifier(), TuningConfig(method="setfit"), "token_classification")
