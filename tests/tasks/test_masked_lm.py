"""Masked-LM: 80/10/10 masking of real tokens only, packed blocks, and the domain-adaptation path
(continue pre-training, then fine-tune from the saved folder)."""

import json

import torch

from conftest import TINY_MODEL, sentiment_rows, write_jsonl
from lmforge.data.examples import TextExample
from lmforge.tasks.masked_lm import IGNORE, MaskedLMTask, mask_tokens
from lmforge.tokenization.wordpiece import train_wordpiece


def test_masking_rates_and_special_tokens_are_never_masked():
    tokenizer = train_wordpiece(["the cat sat on the mat"] * 5, vocab_size=100)
    ids = torch.randint(5, len(tokenizer), (200, 64))  # ids 0-4 are the special tokens
    ids[:, 0], ids[:, -1] = tokenizer.cls_token_id, tokenizer.sep_token_id
    mask = torch.ones_like(ids)
    mask[:, 50:] = 0
    ids[:, 50:] = tokenizer.pad_token_id
    inputs, labels = mask_tokens(ids, mask, tokenizer, torch.Generator().manual_seed(0))
    chosen = labels != IGNORE
    assert not chosen[:, 0].any() and not chosen[:, 50:].any()
    rate = chosen.sum().item() / (200 * 48)
    assert 0.13 < rate < 0.17
    masked = (inputs == tokenizer.mask_token_id) & chosen
    kept = (inputs == ids) & chosen
    assert 0.76 < masked.sum().item() / chosen.sum().item() < 0.84
    assert 0.07 < kept.sum().item() / chosen.sum().item() < 0.13
    assert torch.equal(labels[chosen], ids[chosen])


def test_blocks_pack_texts_without_padding():
    tokenizer = train_wordpiece(["a b c d e f g"] * 3, vocab_size=100)
    features = MaskedLMTask().encode(tokenizer, [TextExample("a b c d e f g")] * 10, 16)
    assert all(len(f["input_ids"]) == 16 for f in features[:-1])
    assert all(f["input_ids"][0] == tokenizer.cls_token_id for f in features)
    assert sum(len(f["input_ids"]) - 1 for f in features) == 10 * 8


def test_continue_pretraining_then_fine_tune_from_the_saved_folder(tmp_path, run_cli):
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [{"text": r["text"]} for r in sentiment_rows(80, 3)])
    config = tmp_path / "mlm.yaml"
    config.write_text("task: masked_lm\n")
    out = tmp_path / "mlm"
    code, _, err = run_cli(
        "train",
        "--quiet",
        str(config),
        f"data.train={corpus}",
        "data.split=0.1",
        f"model={TINY_MODEL}",
        "train.epochs=4",
        "train.batch_size=4",
        "train.lr=3e-3",
        "data.max_length=32",
        "train.log_every=1",
        "train.warmup=0",
        f"output={out}",
    )
    assert code == 0, err
    results = json.loads((out / "eval_results.json").read_text())["validation"]
    assert results["masked_tokens"] > 0 and results["perplexity"] > 1
    evals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in evals if r.get("kind") == "train"]
    assert sum(losses[-3:]) < sum(losses[:3])
    code, stdout, err = run_cli("eval", str(out), "--data", str(corpus), "--json")
    assert code == 0 and "perplexity" in json.loads(stdout)

    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(32, 0))
    config = tmp_path / "cls.yaml"
    config.write_text("task: classification\n")
    code, _, err = run_cli(
        "train",
        "--quiet",
        str(config),
        f"data.train={train}",
        "data.split=0.25",
        f"model={out / 'model'}",
        "train.epochs=1",
        f"output={tmp_path / 'cls'}",
    )
    assert code == 0, err
    meta = json.loads((tmp_path / "cls" / "lmforge.json").read_text())
    assert meta["model"]["source_path"] == str((out / "model").resolve())


def test_head_on_masked_positions_equals_full_logits():
    from transformers import BertConfig, BertForMaskedLM

    from lmforge.tasks.masked_lm import masked_logits

    torch.manual_seed(0)
    model = BertForMaskedLM(
        BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32)
    ).eval()
    ids = torch.randint(5, 50, (3, 10))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    labels = torch.full_like(ids, IGNORE)
    labels[0, 2], labels[1, 5], labels[2, 9] = 7, 8, 9
    fast, gold = masked_logits(model, batch, labels)
    full = model(**batch).logits[labels != IGNORE]
    assert fast.shape == (3, 50) and gold.tolist() == [7, 8, 9]
    assert torch.allclose(fast, full, atol=1e-5)


def test_whole_word_masking_masks_every_piece_of_a_word_together():
    from lmforge.tasks.masked_lm import continuation_ids, word_ids

    tokenizer = train_wordpiece(["unbelievable stories are wonderful"] * 3, vocab_size=60, min_frequency=100)
    ids = torch.tensor([tokenizer("unbelievable wonderful stories " * 20)["input_ids"]] * 50)
    words = word_ids(ids, continuation_ids(tokenizer))
    inputs, labels = mask_tokens(ids, torch.ones_like(ids), tokenizer, torch.Generator().manual_seed(0), words)
    chosen = labels != IGNORE
    assert chosen.any()
    for row in range(ids.shape[0]):
        for word in words[row].unique():
            members = (words[row] == word) & (ids[row] != tokenizer.cls_token_id) & (ids[row] != tokenizer.sep_token_id)
            if members.sum() > 1:
                assert chosen[row][members].all() or not chosen[row][members].any()
