"""Weight-only int8 linears (``models/int8_weights.py``) and how a generation model's weights settle
(``inference/weights.py``)."""

import logging
from types import SimpleNamespace

import pytest
import torch

from conftest import tiny_llama
from lmforge.errors import ConfigError
from lmforge.inference import weights
from lmforge.models.int8_weights import PACKED_ROWS, Int8Linear, to_int8_weights


def tiny_model():
    return tiny_llama(300, tie_word_embeddings=True)


class ByteTokenizer:
    """Texts as UTF-8 bytes: enough for the probe texts."""

    def __call__(self, text: str, return_tensors: str = "pt"):
        return SimpleNamespace(input_ids=torch.tensor([list(text.encode("utf-8"))]))


@pytest.mark.parametrize("rows", [1, 5, PACKED_ROWS, PACKED_ROWS + 1, 100])
def test_int8_linear_computes_with_its_rounded_weights(rows):
    torch.manual_seed(rows)
    linear = torch.nn.Linear(96, 40)
    layer = Int8Linear(linear, torch.bfloat16)
    assert layer.weight_int8.dtype == torch.int8 and layer.weight_int8.abs().max() == 127
    x = torch.randn(2, rows, 96)
    out = layer(x.bfloat16())
    assert out.shape == (2, rows, 40) and out.dtype == torch.bfloat16
    rounded = torch.nn.functional.linear(x, layer.dequantized(torch.float32), linear.bias.detach())
    assert torch.allclose(out.float(), rounded, atol=0.06, rtol=0.02)  # bf16 activations: ~3 digits
    exact = linear(x).detach()
    assert (out.float() - exact).abs().mean() < 0.02 * exact.abs().mean() + 0.01
    # The weights' rounding error: at most half a step per channel, plus the scale's own bf16 rounding.
    weight = linear.weight.detach()
    step = weight.abs().amax(1, keepdim=True) / 127
    assert ((layer.dequantized(torch.float32) - weight).abs() <= step / 2 + weight.abs() * 2**-8 + 1e-6).all()


def test_to_int8_weights_keeps_the_head_and_answers_close_to_float32():
    model = tiny_model()
    ids = torch.randint(0, 300, (1, 20))
    with torch.inference_mode():
        before = model(input_ids=ids).logits.log_softmax(-1)
    replaced = to_int8_weights(model)
    assert replaced == 2 * 7  # q, k, v, o, gate, up, down per layer
    assert isinstance(model.lm_head, torch.nn.Linear) and model.lm_head.weight.dtype == torch.bfloat16
    assert model.lm_head.weight is model.model.embed_tokens.weight  # still tied
    with torch.inference_mode():
        after = model(input_ids=ids).logits.float().log_softmax(-1)
    assert (before.exp() * (before - after)).sum(-1).mean() < 0.01
    assert (before.argmax(-1) == after.argmax(-1)).float().mean() > 0.9


def test_settle_weights_as_asked(monkeypatch):
    tokenizer = ByteTokenizer()
    model = tiny_model()
    assert weights.settle_weights(model, tokenizer, "float32", "m") == "float32"
    assert next(model.parameters()).dtype == torch.float32
    assert weights.settle_weights(model, tokenizer, "bfloat16", "m") == "bfloat16"
    assert next(model.parameters()).dtype == torch.bfloat16
    model = tiny_model()
    assert weights.settle_weights(model, tokenizer, "int8", "m") == "int8"
    assert isinstance(model.model.layers[0].self_attn.q_proj, Int8Linear)
    with pytest.raises(ConfigError, match="LoRA adapters need float weights"):
        weights.settle_weights(tiny_model(), tokenizer, "int8", "m", peft=True)
    with pytest.raises(ConfigError, match="--dtype int4: not one of auto, float32, bfloat16, int8"):
        weights.check_dtype("int4", torch.device("cpu"))
    with pytest.raises(ConfigError, match="int8 weights run on the CPU"):
        weights.check_dtype("int8", torch.device("cuda"))


def test_auto_takes_the_fastest_close_candidate_else_float32(monkeypatch, caplog):
    tokenizer = ByteTokenizer()
    monkeypatch.setattr(weights, "bf16_native", lambda device: False)
    assert weights.settle_weights(tiny_model(), tokenizer, "auto", "m") == "float32"  # no native bf16

    monkeypatch.setattr(weights, "bf16_native", lambda device: True)
    model = tiny_model()
    assert weights.settle_weights(model, tokenizer, "auto", "m") == "int8"
    assert isinstance(model.model.layers[1].mlp.down_proj, Int8Linear)
    assert weights.settle_weights(tiny_model(), tokenizer, "auto", "m", peft=True) == "bfloat16"

    # Nothing close enough: back to the very float32 model it was, layers and weights.
    monkeypatch.setattr(weights, "MAX_KL", -1.0)
    model, reference = tiny_model(), tiny_model()
    logger = logging.getLogger("lmforge")  # it does not propagate to the root, where caplog listens
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level("INFO", logger="lmforge"):
            assert weights.settle_weights(model, tokenizer, "auto", "m") == "float32"
    finally:
        logger.removeHandler(caplog.handler)
    assert "not int8 (KL from float32" in caplog.text and "not bfloat16" in caplog.text
    assert all(type(m) is type(r) for m, r in zip(model.modules(), reference.modules()))
    ids = torch.randint(0, 300, (1, 12))
    with torch.inference_mode():
        assert torch.equal(model(input_ids=ids).logits, reference(input_ids=ids).logits)
    assert model.lm_head.weight is model.model.embed_tokens.weight
