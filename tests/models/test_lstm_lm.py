"""The LSTM language model: the state cache gives the logits of recomputing the whole prefix,
padding and packing never change a score, the folder reloads to the same logits, and a run trains,
evaluates and generates (seeded sampling repeatable) through the CLI."""

import json
import math
import random

import pytest
import torch
import transformers

from lmforge.models.lstm_encoder import LstmConfig
from lmforge.models.lstm_lm import LstmForCausalLM

WORDS = "the cat sat on a mat and the dog ran to the park where a bird sang in the old tree".split()


def tiny_lm(tie: bool = True, seed: int = 0) -> LstmForCausalLM:
    torch.manual_seed(seed)
    config = LstmConfig(
        vocab_size=40,
        embedding_size=8,
        hidden_size=16,
        num_layers=2,
        dropout=0.0,
        tie_word_embeddings=tie,
        pad_token_id=0,
        bos_token_id=0,
        eos_token_id=0,
    )
    return LstmForCausalLM(config).eval()


@pytest.mark.parametrize("tie", [True, False])
def test_state_cache_gives_the_logits_of_the_whole_prefix(tie):
    model = tiny_lm(tie)
    ids = torch.randint(1, 40, (2, 9), generator=torch.Generator().manual_seed(1))
    full = model(ids).logits  # (B, T, V), no cache
    out = model(ids[:, :4], use_cache=True)
    steps, cache = [out.logits], out.cache
    for t in range(4, 9):
        out = model(ids[:, t : t + 1], cache=cache, use_cache=True)
        steps.append(out.logits)
        cache = out.cache
    assert cache.get_seq_length() == 9
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5)
    # The server's names: past_key_values in and out, batch_select_indices to drop finished rows.
    out = model(ids[:, :8], use_cache=True)
    out.past_key_values.batch_select_indices(torch.tensor([1]))
    last = model(ids[1:, 8:], past_key_values=out.past_key_values, use_cache=True).logits
    assert torch.allclose(last[0, -1], full[1, -1], atol=1e-5)
    # HF generate: carrying the state and recomputing the prefix pick the same greedy tokens.
    kwargs = dict(
        attention_mask=torch.ones_like(ids[:, :3]), max_new_tokens=8, do_sample=False, pad_token_id=0, eos_token_id=None
    )
    cached = model.generate(ids[:, :3], **kwargs)
    recomputed = model.generate(ids[:, :3], use_cache=False, **kwargs)
    assert cached.shape == (2, 11) and torch.equal(cached, recomputed)


def test_padding_and_packing_never_change_a_score():
    model = tiny_lm()
    a, b = torch.tensor([[5, 6, 7, 8, 9]]), torch.tensor([[11, 12, 13]])
    alone_a, alone_b = model(a).logits[0], model(b).logits[0]
    right = model(
        torch.tensor([[5, 6, 7, 8, 9], [11, 12, 13, 0, 0]]),
        attention_mask=torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]),
    ).logits
    assert torch.allclose(right[1, :3], alone_b, atol=1e-6)
    left = model(torch.tensor([[0, 0, 11, 12, 13]]), attention_mask=torch.tensor([[0, 0, 1, 1, 1]])).logits
    assert torch.allclose(left[0, 2:], alone_b, atol=1e-6)
    # Packed (SFT): position ids restart at each sequence; the padding tail is one more sequence.
    packed = model(
        torch.tensor([[5, 6, 7, 8, 9, 11, 12, 13, 0]]), position_ids=torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2, 0]])
    ).logits[0]
    assert torch.allclose(packed[:5], alone_a, atol=1e-6) and torch.allclose(packed[5:8], alone_b, atol=1e-6)
    # Batched generation from left-padded prompts gives each prompt's own continuation.
    prompts = torch.tensor([[0, 0, 11, 12, 13], [5, 6, 7, 8, 9]])
    batch = model.generate(
        prompts,
        attention_mask=(torch.arange(5) >= torch.tensor([[2], [0]])).long(),
        max_new_tokens=4,
        do_sample=False,
        pad_token_id=0,
        eos_token_id=None,
    )
    single = model.generate(
        b, attention_mask=torch.ones_like(b), max_new_tokens=4, do_sample=False, pad_token_id=0, eos_token_id=None
    )
    assert torch.equal(batch[0, 5:], single[0, 3:])


@pytest.mark.parametrize("tie", [True, False])
def test_saved_folder_reloads_to_the_same_logits(tmp_path, tie):
    model = tiny_lm(tie)
    ids = torch.tensor([[3, 4, 5, 6]])
    model.save_pretrained(tmp_path)
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, use_safetensors=True).eval()
    assert type(again) is LstmForCausalLM
    assert torch.allclose(again(ids).logits, model(ids).logits, atol=1e-6)
    assert (again.lm_head.weight is again.model.embeddings.weight) == tie


def test_beam_search_reorders_the_state():
    model = tiny_lm()
    ids = torch.tensor([[3, 4, 5]])
    out = model.generate(ids, max_new_tokens=5, num_beams=3, do_sample=False, pad_token_id=0, eos_token_id=None)
    assert out.shape == (1, 8)


LM_CONFIG = """task: causal_lm
data: {{train: {train}, split: 0.2}}
model: {{family: lstm, layers: 2, hidden: 32, embedding: 16, vocab_size: 300}}
train: {{epochs: 3, batch_size: 4, lr: 1.0e-2, max_length: 32, warmup: 0, log_every: 1, threads: 1}}
output: {out}
"""


def _corpus(path, rows: int, seed: int):
    rng = random.Random(seed)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 16))) for _ in range(rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_lstm_lm_trains_evaluates_and_generates_through_the_cli(tmp_path, run_cli):
    train = _corpus(tmp_path / "train.txt", 48, 0)
    config = tmp_path / "lm.yaml"
    config.write_text(LM_CONFIG.format(train=train, out=tmp_path / "run"))
    out = tmp_path / "run"
    code, _, err = run_cli("train", "--quiet", str(config))
    assert code == 0, err
    meta = json.loads((out / "lmforge.json").read_text())
    assert meta["model"]["family"] == "lstm" and meta["model"]["arch"] == "lstm"
    assert json.loads((out / "model" / "config.json").read_text())["model_type"] == "lmforge_lstm"
    results = json.loads((out / "eval_results.json").read_text())["validation"]
    assert results["perplexity"] == pytest.approx(math.exp(results["loss"]))
    assert results["perplexity"] < results["unigram_perplexity"]
    assert results["bits_per_char"] == pytest.approx(
        results["loss"] * results["tokens"] / math.log(2) / results["characters"]
    )
    losses = [
        json.loads(x)["loss"]
        for x in (out / "metrics.jsonl").read_text().splitlines()
        if json.loads(x).get("kind") == "train"
    ]
    assert sum(losses[-3:]) < sum(losses[:3])
    code, stdout, err = run_cli("eval", str(out), "--data", str(train), "--json")
    assert code == 0, err
    scores = json.loads(stdout)
    assert scores["perplexity"] > 1 and scores["bits_per_char"] > 0
    sample = (
        "generate",
        str(out),
        "the cat",
        "--max-new-tokens",
        "10",
        "--temperature",
        "0.9",
        "--top-k",
        "20",
        "--top-p",
        "0.95",
        "--json",
    )
    first = json.loads(run_cli(*sample, "--seed", "7")[1])
    assert first["prompt_tokens"] > 0 and 0 < first["new_tokens"] <= 10
    assert json.loads(run_cli(*sample, "--seed", "7")[1])["text"] == first["text"]
    greedy = ("generate", str(out), "the dog", "--max-new-tokens", "6", "--json")
    assert json.loads(run_cli(*greedy)[1])["text"] == json.loads(run_cli(*greedy)[1])["text"]
    # no position embeddings, yet not unbounded: the length the run trained with is its context
    code, _, err = run_cli("generate", str(out), "the dog", "--max-new-tokens", "100000")
    limit = meta["max_length"]
    assert code != 0 and err.strip().splitlines()[-1].startswith("lmforge: error: the prompt is")
    assert f"over the model's context of {limit} tokens" in err
