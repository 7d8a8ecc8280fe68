"""Pruning: exact sparsity, masks kept through recovery, head pruning that changes nothing but the
removed heads, and a saved folder plain transformers loads."""

import json

import pytest
import torch
import transformers
from run_fixtures import tiny_run  # noqa: F401  (fixture)

from lmforge.errors import ConfigError, ModelError
from lmforge.export.prune import (
    apply_masks,
    choose_heads,
    head_masks,
    magnitude_prune,
    slice_heads,
    sparsity,
)
from lmforge.export.prune_step import prune_run


def _bert(seed=0):
    torch.manual_seed(seed)
    config = transformers.BertConfig(
        vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, num_labels=2
    )
    return transformers.BertForSequenceClassification(config).eval()


def _inputs():
    return {
        "input_ids": torch.tensor([[2, 5, 7, 9, 11, 3], [2, 8, 4, 3, 0, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]]),
    }


def test_magnitude_sparsity_is_exact_and_spares_embeddings_and_head():
    model = _bert()
    embeddings = model.bert.embeddings.word_embeddings.weight.clone()
    head = model.classifier.weight.clone()
    result = magnitude_prune(model, 0.3)
    prunable = result.details["prunable_weights"]
    assert result.details["pruned_weights"] == round(0.3 * prunable)
    assert sparsity(model) == pytest.approx(0.3, abs=1 / prunable)
    assert not any("pooler" in n or "classifier" in n for n in result.masks)
    assert torch.equal(model.bert.embeddings.word_embeddings.weight, embeddings)
    assert torch.equal(model.classifier.weight, head)
    # global: the smallest kept weight is not smaller than the largest pruned one
    kept = torch.cat([p[m].abs() for n, p in model.named_parameters() if (m := result.masks.get(n)) is not None])
    assert kept.min() > 0


def test_head_masks_equal_sliced_heads_and_keep_output_shape():
    model = _bert()
    pruned = {0: [1, 3], 1: [0]}
    before = model(**_inputs()).logits
    apply_masks(model, head_masks(model, pruned))
    masked = model(**_inputs()).logits
    sliced_model = slice_heads(_bert(), pruned)  # same seed: same weights
    sliced = sliced_model(**_inputs()).logits
    assert masked.shape == before.shape == sliced.shape
    assert torch.allclose(masked, sliced, atol=1e-6)
    assert sliced_model.bert.encoder.layer[0].attention.self.query.out_features == 2 * 8
    assert sliced_model.bert.encoder.layer[0].attention.output.dense.in_features == 2 * 8
    assert not torch.allclose(before, masked)


def test_choose_heads_takes_the_least_important_and_keeps_one_per_layer():
    importance = torch.tensor([[0.9, 0.1, 0.5], [0.05, 0.02, 0.01]])
    assert choose_heads(importance, 0.5) == {0: [1], 1: [1, 2]}
    assert choose_heads(importance, 0.9) == {0: [1, 2], 1: [1, 2]}  # one head left per layer


@pytest.mark.parametrize("amount", [0.0, 1.0, 1.5, -0.2])
def test_amount_outside_zero_one_is_refused(amount):
    with pytest.raises(ConfigError, match="between 0 and 1"):
        magnitude_prune(_bert(), amount)


def test_heads_on_a_model_without_bert_attention_is_refused():
    config = transformers.LlamaConfig(
        vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    from lmforge.export.prune import attention_blocks

    with pytest.raises(ModelError, match="magnitude"):
        attention_blocks(transformers.LlamaForCausalLM(config))


def test_prune_run_recovers_keeping_the_mask_and_saves_a_plain_folder(tiny_run, tmp_path):
    report = prune_run(tiny_run, tmp_path / "mag", 0.3, "magnitude", recover_steps=4)
    assert report["mask_kept"] and report["recovery"]["steps"] == 4
    assert set(report["validation"]) == {"before", "pruned", "recovered"}
    model = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "mag")
    assert sparsity(model) == pytest.approx(0.3, abs=1e-3)
    assert json.loads((tmp_path / "mag" / "lmforge_export.json").read_text())["method"] == "magnitude"

    report = prune_run(tiny_run, tmp_path / "heads", 0.5, "heads", recover_steps=3)
    assert report["heads_pruned"] == 2 and report["mask_kept"]
    reloaded = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "heads").eval()
    for layer, heads in report["pruned_heads"].items():
        rows = reloaded.bert.encoder.layer[int(layer)].attention.self.value.weight.view(2, 16, -1)
        assert torch.all(rows[heads] == 0)
    assert reloaded(**_inputs()).logits.shape == (2, 2)
