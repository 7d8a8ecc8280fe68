import pytest
import torch

from lmforge.config.schema import TransformerSpec, TuningConfig
from lmforge.errors import ConfigError
from lmforge.models import load_model
from lmforge.tuning import apply_tuning, count_parameters, export_model

TEXTS = ["a good film", "a bad film", "good", "bad"] * 10


def tiny(layers=3):
    torch.manual_seed(0)
    spec = TransformerSpec(arch="bert", layers=layers, hidden=16, heads=2, vocab_size=100)
    return load_model(spec, "sequence_classification", ["neg", "pos"], TEXTS)


def trainable_names(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_freeze_keeps_top_layers_and_head():
    model = apply_tuning(tiny().model, TuningConfig(method="freeze", trainable_layers=1), "classification")
    names = trainable_names(model)
    assert names and all(n.startswith(("bert.encoder.layer.2.", "bert.pooler.", "classifier.")) for n in names)
    assert any(n.startswith("classifier.") for n in names) and any(".layer.2." in n for n in names)
    with pytest.raises(ConfigError, match="trainable_layers: 5 but the model has 3 layers"):
        apply_tuning(tiny().model, TuningConfig(method="freeze", trainable_layers=5), "classification")


def test_lora_trains_adapters_and_head_only_and_merges_exactly():
    loaded = tiny()
    model = apply_tuning(loaded.model, TuningConfig(method="lora", r=2, target=["query", "value"]), "classification")
    names = trainable_names(model)
    assert all("lora_" in n or "classifier" in n for n in names)
    trainable, total = count_parameters(model)
    assert 0 < trainable < total
    # Make the adapters non-zero, then check the merged copy computes the same function.
    for n, p in model.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.5)
    model.eval()
    batch = loaded.tokenizer(["a good film"], return_tensors="pt")
    merged = export_model(model)
    assert not any("lora" in n for n, _ in merged.named_parameters())
    torch.testing.assert_close(merged(**batch).logits, model(**batch).logits, atol=1e-5, rtol=1e-5)
    assert any("lora_" in n for n, _ in model.named_parameters()), "the training model keeps its adapters"


def test_lora_bad_target_is_a_config_error():
    with pytest.raises(ConfigError, match="tuning.target"):
        apply_tuning(tiny().model, TuningConfig(method="lora", target=["no_such_module"]), "classification")
