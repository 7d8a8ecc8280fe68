"""Sequence-to-sequence (T5/BART-style encoder-decoder): summarization, translation, rewriting.

Rows carry a ``source`` and a ``target`` text (``data.fields.source``/``target``). The encoder reads
the source (cut at ``data.max_length`` tokens, with the end-of-sequence token), the decoder learns
the target (cut at ``train.max_target_length``) by teacher forcing; the loss is the cross-entropy on
target tokens. Validation during training reports loss and perplexity; ``lmforge eval`` also
generates for the first ``--generate`` rows and scores them with BLEU, ROUGE and exact match.
Works with any local encoder-decoder folder and with a T5 built from scratch (``arch: t5``).
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lmforge.data.examples import read_rows
from lmforge.data.task_data import TaskData
from lmforge.errors import DataError
from lmforge.evaluation.result import EvalResult
from lmforge.evaluation.text_overlap import generation_metrics
from lmforge.tasks.base import TASKS, Task, generation_headline
from lmforge.tasks.lm_common import device_batches, load_splits, token_metrics

IGNORE = -100


@dataclass
class PairExample:
    source: str
    target: str
    where: str = ""

    @property
    def text(self) -> str:  # tokenizers built from scratch learn from both sides
        return f"{self.source}\n{self.target}"

    text_pair = None


def read_pairs(source, data, problems) -> list[PairExample]:
    if isinstance(source, list):
        return [ex for item in source for ex in read_pairs(item, data, problems)]
    found = []
    for where, row, fields in read_rows(source, data, problems):
        values = []
        for what in ("source", "target"):
            name = getattr(fields, what)
            value = row.get(name)
            if value is None or not str(value).strip():
                keys = ", ".join(str(k) for k in row if not isinstance(k, int)) or f"{len(row)} columns"
                problems.report(
                    f"{where}: missing or empty {what} field '{name}' (the row has: {keys}); set data.fields.{what}"
                )
                break
            values.append(str(value))
        else:
            found.append(PairExample(values[0], values[1], where))
    if not found and not problems.items and not problems.skipped:
        raise DataError(f"{source}: no usable rows")
    return found


@TASKS.register("seq2seq")
class Seq2SeqTask(Task):
    name = "seq2seq"
    head = "seq2seq"
    metric_names = ("loss", "perplexity", "accuracy")
    default_metric = "loss"
    transfer_metric = "perplexity"
    generates = True

    def __init__(self):
        self.max_target_length = 128
        self.generate_limit = 0
        self.max_new_tokens = 128

    def configure(self, config, train_examples, labels) -> None:
        self.max_target_length = config.train.max_target_length

    def head_options(self) -> dict:
        return {"max_target_length": self.max_target_length}

    def restore_head_options(self, options: dict) -> None:
        self.max_target_length = int(options.get("max_target_length", 128))

    def load_data(self, config, problems) -> TaskData:
        return load_splits(config, problems, read_pairs)

    def read_labelled(self, source, data, labels, problems) -> list:
        return read_pairs(source, data, problems)

    def encode(self, tokenizer, examples: list, max_length: int) -> list[dict]:
        if not examples:
            return []
        eos = tokenizer.eos_token_id
        sources = tokenizer([ex.source for ex in examples], add_special_tokens=False)["input_ids"]
        targets = tokenizer([ex.target for ex in examples], add_special_tokens=False)["input_ids"]
        return [
            {"input_ids": s[: max_length - 1] + [eos], "labels": t[: self.max_target_length - 1] + [eos]}
            for s, t in zip(sources, targets)
        ]

    def collate(self, features: list[dict], tokenizer) -> dict:
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        width = max(len(f["input_ids"]) for f in features)
        target_width = max(len(f["labels"]) for f in features)
        ids = torch.full((len(features), width), pad, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        labels = torch.full((len(features), target_width), IGNORE, dtype=torch.long)
        for row, f in enumerate(features):
            ids[row, : len(f["input_ids"])] = torch.tensor(f["input_ids"])
            mask[row, : len(f["input_ids"])] = 1
            labels[row, : len(f["labels"])] = torch.tensor(f["labels"])
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    @staticmethod
    def _scores(model, batch: dict):
        labels = batch["labels"]
        logits = model(**batch).logits  # teacher forcing: decoder inputs from labels
        chosen = labels != IGNORE
        return logits[chosen], labels[chosen]

    def loss(self, model, batch: dict):
        logits, gold = self._scores(model, batch)
        return F.cross_entropy(logits.float(), gold)

    def loss_units(self, batch: dict) -> int:
        return int((batch["labels"] != IGNORE).sum())  # the target tokens

    @torch.inference_mode()
    def evaluate(self, model, tokenizer, features, examples, batch_size, device, labels=None) -> EvalResult:
        model.eval()
        batches = device_batches(lambda chunk: self.collate(chunk, tokenizer), features, batch_size, device)
        metrics = token_metrics(batches, lambda batch: self._scores(model, batch))
        metrics["count"] = len(examples)
        predictions = []
        if self.generate_limit:
            chosen = examples[: self.generate_limit]
            replies = generate_pairs(
                model, tokenizer, [f["input_ids"] for f in features[: len(chosen)]], self.max_new_tokens, device
            )

            metrics.update(generation_metrics(replies, [ex.target for ex in chosen]), generated=len(replies))
            predictions = [
                {"where": ex.where, "reference": ex.target, "generated": g} for ex, g in zip(chosen, replies)
            ]
        return EvalResult(metrics, predictions)

    def headline(self, metrics: dict) -> str:
        """Generated answers (``--generate``, prompt runs) are summed up by their scores; else the default."""
        return generation_headline(metrics) if "rougeL" in metrics else super().headline(metrics)


def generate_pairs(
    model, tokenizer, sources: list[list[int]], max_new_tokens: int, device, batch_size: int = 16
) -> list[str]:
    """Greedy decoder outputs for encoded sources, in input order."""
    import transformers

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    config = transformers.GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=pad,
        decoder_start_token_id=model.config.decoder_start_token_id,
    )
    out = []
    for start in range(0, len(sources), batch_size):
        chunk = sources[start : start + batch_size]
        width = max(map(len, chunk))
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, s in enumerate(chunk):
            ids[row, : len(s)], mask[row, : len(s)] = torch.tensor(s), 1
        generated = model.generate(ids.to(device), attention_mask=mask.to(device), generation_config=config)
        out += tokenizer.batch_decode(generated[:, 1:], skip_special_tokens=True)
    return [text.strip() for text in out]
