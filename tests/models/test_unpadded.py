"""Padding-free training batches: a packed row gives the padded model's logits and gradients, with
or without adapters and a CRF; a run trains the same with and without them; models that cannot take
packed rows keep padded batches, or are refused under ``train.padding_free: true``."""

import json

import pytest
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertForTokenClassification,
    LlamaConfig,
    LlamaForSequenceClassification,
)

from conftest import tiny_bert_config, tiny_overrides
from lmforge.data.batching import pad_features
from lmforge.errors import ConfigError
from lmforge.models.unpadded import (
    PACK_KEY,
    choose_padding_free,
    enable_unpadded,
    pack_features,
    unpadded_reason,
)

LENGTHS = [5, 11, 3, 8]


def _config(**extra) -> BertConfig:
    return tiny_bert_config(**extra)


def _features(with_types: bool = False) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    features = []
    for n in LENGTHS:
        feature = {"input_ids": torch.randint(1, 100, (n,), generator=generator).tolist()}
        if with_types:
            feature["token_type_ids"] = [0] * (n // 2) + [1] * (n - n // 2)
        features.append(feature)
    return features


def _both(model, features):
    """(padded logits, packed logits, padded grads, packed grads) of the same examples."""
    results = []
    for packed in (False, True):
        model.zero_grad()
        batch = pack_features(features) if packed else pad_features(features, 0)
        logits = model(**batch).logits
        scored = logits if logits.dim() == 2 else logits[_real(logits)]  # tokens: the real ones only
        scored.float().pow(2).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((logits.detach(), grads))
    return results


def _real(logits):
    width = logits.shape[1]
    return torch.arange(width)[None, :] < torch.tensor(LENGTHS)[:, None]


@pytest.mark.parametrize("with_types", [False, True])
def test_a_packed_row_gives_the_padded_classifier_logits_and_gradients(with_types):
    torch.manual_seed(0)
    model = BertForSequenceClassification(_config(num_labels=3))
    before = model(**pad_features(_features(with_types), 0)).logits.detach()
    enable_unpadded(model)
    (padded, grads_padded), (packed, grads_packed) = _both(model, _features(with_types))
    torch.testing.assert_close(padded, before)  # padded batches (evaluation) are computed as before
    assert packed.shape == padded.shape == (len(LENGTHS), 3)
    torch.testing.assert_close(packed, padded, atol=1e-5, rtol=1e-5)
    assert grads_packed.keys() == grads_padded.keys()
    for name in grads_padded:
        torch.testing.assert_close(grads_packed[name], grads_padded[name], atol=1e-5, rtol=1e-4, msg=name)


def test_a_packed_row_gives_the_padded_token_logits_under_lora():
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    model = BertForTokenClassification(_config(num_labels=5))
    model = peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=["query", "value"], init_lora_weights=False))
    assert unpadded_reason(model) is None
    enable_unpadded(model)
    (padded, grads_padded), (packed, grads_packed) = _both(model, _features())
    real = _real(padded)
    torch.testing.assert_close(packed[real], padded[real], atol=1e-5, rtol=1e-5)
    lora = [n for n in grads_padded if "lora_" in n]
    assert lora and all(torch.allclose(grads_packed[n], grads_padded[n], atol=1e-5, rtol=1e-4) for n in lora)


def test_the_packing_keeps_each_text_apart():
    batch = pack_features(_features())
    assert batch["input_ids"].shape == (1, sum(LENGTHS))
    assert batch["position_ids"][0].tolist() == [i for n in LENGTHS for i in range(n)]
    pack = batch[PACK_KEY]
    assert (pack.rows, pack.width) == (4, 11)
    assert pack.index.tolist()[:6] == [0, 1, 2, 3, 4, 11]  # text 2 starts at row 1 of the (4, 11) block
    # attention blocks of similar lengths, longest first: (11, 8), then 5, then 3
    assert [(b.rows, b.width) for b in pack.blocks] == [(2, 11), (1, 5), (1, 3)]
    first = pack.blocks[0]
    assert first.tokens.tolist() == list(range(5, 16)) + list(range(19, 27))  # texts 2 and 4 of the row
    assert first.slots.tolist() == list(range(11)) + list(range(11, 19))


def test_models_that_cannot_take_packed_rows_are_named():
    llama = LlamaForSequenceClassification(
        LlamaConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    )
    assert "architecture llama" in unpadded_reason(llama)
    use, line = choose_padding_free("auto", llama, 0.5)
    assert not use and "padded" in line
    with pytest.raises(ConfigError, match="train.padding_free: true, but this model cannot train on packed rows"):
        choose_padding_free(True, llama, 0.5)
    peft = pytest.importorskip("peft")
    prefixed = peft.get_peft_model(
        BertForSequenceClassification(_config()), peft.PromptTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=2)
    )
    assert "prompt-learning" in unpadded_reason(prefixed)


def _train_rows(run):
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] != "start"]


@pytest.mark.parametrize("extra", [[], ["tuning.method=lora"]])
def test_a_run_trains_the_same_on_packed_and_padded_batches(tmp_path, tiny_data, run_cli, extra):
    job = tiny_data["dir"] / "job.yaml"
    job.write_text("task: classification\n", encoding="utf-8")
    runs = {}
    for setting in ("true", "false"):
        out = tmp_path / setting
        overrides = tiny_overrides(tiny_data, out, "train.dropout=0", "train.log_every=1", *extra)
        code, _, err = run_cli("train", "--quiet", str(job), *overrides, f"train.padding_free={setting}")
        assert code == 0, err
        runs[setting] = _train_rows(out)
    on, off = runs["true"], runs["false"]
    assert [r["kind"] for r in on] == [r["kind"] for r in off]
    for a, b in zip(on, off):
        for key in ("loss", "accuracy"):
            if key in a:
                assert a[key] == pytest.approx(b[key], abs=1e-4), (key, a, b)


def test_auto_packs_only_batches_that_padding_would_grow_enough():
    model = BertForSequenceClassification(_config())
    assert choose_padding_free("auto", model, 0.05) == (
        False,
        "training batches: padded (padding would add 5% tokens; packed rows pay from 15%)",
    )
    assert choose_padding_free("auto", model, 0.30) == (
        True,
        "training batches: packed rows without padding (padding would add 30% tokens)",
    )
    assert choose_padding_free(True, model, 0.0)[0] and not choose_padding_free(False, model, 0.9)[0]


@pytest.mark.parametrize(
    "extra", [[], ["head.crf=true"], ["train.gradient_checkpointing=true"]], ids=["ner", "crf", "checkpointed"]
)
def test_ner_trains_the_same_on_packed_and_padded_batches(tmp_path, run_cli, extra):
    from training.test_ner_end_to_end import ner_overrides, ner_sentences, write_conll

    train = write_conll(tmp_path / "train.conll", ner_sentences(24, 0))
    dev = write_conll(tmp_path / "dev.conll", ner_sentences(8, 1))
    runs = {}
    for setting in ("true", "false"):
        out = tmp_path / setting
        # fp32 both times: precision auto decides by timing, which a loaded machine can tip either way
        overrides = ner_overrides(
            train, dev, out, "train.epochs=2", "train.dropout=0", "train.log_every=1", "train.precision=fp32", *extra
        )
        code, _, err = run_cli("train", "--quiet", *overrides, f"train.padding_free={setting}")
        assert code == 0, err
        runs[setting] = _train_rows(out)
    assert len(runs["true"]) == len(runs["false"]) > 2
    for a, b in zip(runs["true"], runs["false"]):
        for key in ("loss", "f1"):
            if key in a:
                assert a[key] == pytest.approx(b[key], abs=1e-4), (key, a, b)


def test_padding_free_bad_values_are_one_line(tmp_path, tiny_data, run_cli):
    job = tiny_data["dir"] / "job.yaml"
    job.write_text("task: classification\n", encoding="utf-8")
    code, _, err = run_cli(
        "train", str(job), *tiny_overrides(tiny_data, tmp_path / "a"), "train.padding_free=sometimes"
    )
    assert code == 2 and "train.padding_free" in err and len(err.strip().splitlines()) == 1
    lstm = "model={family: lstm, layers: 1, hidden: 16, embedding: 16, vocab_size: 200}"
    code, _, err = run_cli(
        "train", "--quiet", str(job), *tiny_overrides(tiny_data, tmp_path / "b"), lstm, "train.padding_free=true"
    )
    assert code == 2, err
    assert err.startswith("lmforge: error: train.padding_free: true, but this model cannot train on packed rows")
    assert not (tmp_path / "b").exists()
