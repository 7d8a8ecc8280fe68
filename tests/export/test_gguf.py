"""GGUF export: the Q/K permutation against transformers' inverse, and a round trip of a tiny Llama
built from scratch (2 layers, width 64, grouped-query attention) through transformers' GGUF loader."""

import numpy as np
import pytest
import torch
import transformers

from lmforge.errors import ModelError
from lmforge.export.gguf import compare_gguf, llama_permute, write_gguf
from lmforge.tokenization.bpe import train_bpe

TEXTS = ["the quick brown fox jumps over the lazy dog", "hello world, who are you?", "def add(a, b): return a + b"]


def test_permutation_interleaves_each_heads_halves_and_transformers_undoes_it():
    rows = np.arange(8, dtype=np.float32)[:, None]  # 2 heads of 4 rows
    assert llama_permute(rows, 2)[:, 0].tolist() == [0, 2, 1, 3, 4, 6, 5, 7]
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    weight = np.random.default_rng(0).normal(size=(48, 64)).astype(np.float32)  # 3 kv heads of 16
    back = (
        LlamaTensorProcessor({"num_attention_heads": 6, "num_key_value_heads": 3})
        .process(llama_permute(weight, 3), "blk.0.attn_k.weight")
        .weights
    )
    assert np.array_equal(back, weight)


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llama") / "model"
    tokenizer = train_bpe(TEXTS * 20, vocab_size=300)
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        rope_theta=50000.0,
    )
    model = transformers.LlamaForCausalLM(config)
    with torch.no_grad():  # norms away from 1, so a misplaced norm would show
        for name, param in model.named_parameters():
            if "norm" in name:
                param.uniform_(0.5, 1.5)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("dtype, tolerance", [("f32", 1e-5), ("f16", 2e-3), ("q8_0", 3e-2)])
def test_round_trip_through_transformers(tiny_llama, tmp_path, dtype, tolerance):
    report = write_gguf(tiny_llama, tmp_path / f"m.{dtype}.gguf", dtype)
    assert report["tensors"] == 2 * 9 + 2  # tied output layer not written
    assert report["tokenizer"]["tokens"] == 300
    check = compare_gguf(tiny_llama, report["file"], TEXTS)
    assert check["same_token_ids"]
    assert check["max_abs_logit_difference"] <= tolerance
    assert check["top1_agreement"] == 1.0
    import gguf

    fields = gguf.GGUFReader(report["file"]).fields
    assert fields["llama.rope.freq_base"].contents() == 50000.0
    assert fields["tokenizer.ggml.model"].contents() == "gpt2"


def test_refuses_a_model_that_is_not_llama(tmp_path):
    config = transformers.BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    transformers.BertForMaskedLM(config).save_pretrained(tmp_path / "bert")
    with pytest.raises(ModelError, match="Llama-style"):
        write_gguf(tmp_path / "bert", tmp_path / "x.gguf")
    with pytest.raises(ModelError, match="q4"):
        write_gguf(tmp_path / "bert", tmp_path / "x.gguf", "q4")
