"""Masked-LM (BERT-style) pre-training and continued pre-training on raw text.

Texts (``.txt`` one document a line, ``.jsonl``/``.csv`` with a text field) are tokenized, joined
with the separator token and cut into blocks of ``data.max_length`` tokens, so no compute goes to
padding. Each batch masks 15% of the non-special tokens (Devlin et al., 2019): 80% of those become
``[MASK]``, 10% a random token, 10% stay, and the loss is the cross-entropy on them. Validation uses
a fixed masking seed, so its loss is comparable across evaluations. The saved model is a plain
``AutoModelForMaskedLM`` folder that any task can start from (``model: runs/mlm/model``): the
domain-adaptation path, e.g. MiniLM with a vocabulary extended to Chinese (``model.extend_vocab``).
"""

import torch
import torch.nn.functional as F

from lmforge.data.batching import pad_features
from lmforge.data.examples import read_text_examples
from lmforge.data.task_data import TaskData
from lmforge.errors import ConfigError, DataError
from lmforge.evaluation.result import EvalResult
from lmforge.models.safe_loading import quiet_transformers
from lmforge.tasks.base import TASKS, Task
from lmforge.tasks.lm_common import device_batches, load_splits, token_metrics

IGNORE = -100
MASK_RATE = 0.15
EVAL_SEED = 1234


@TASKS.register("masked_lm")
class MaskedLMTask(Task):
    name = "masked_lm"
    head = "masked_lm"
    metric_names = ("loss", "perplexity", "accuracy")
    default_metric = "loss"
    transfer_metric = "perplexity"

    def load_data(self, config, problems) -> TaskData:
        return load_splits(
            config, problems, lambda source, data, problems: read_text_examples(source, data, problems, False)
        )

    whole_word = False
    _continuation: torch.Tensor | None = None

    def configure(self, config, train_examples, labels) -> None:
        self.whole_word = config.data.whole_word_mask

    def read_labelled(self, source, data, labels, problems) -> list:
        """Texts to evaluate on (``lmforge eval``): raw text needs no labels."""
        return read_text_examples(source, data, problems, False)

    # -- batches ---------------------------------------------------------------------------------
    def encode(self, tokenizer, examples: list, max_length: int) -> list[dict]:
        """Blocks of ``max_length`` tokens: [CLS] text [SEP] text [SEP] ... cut at block ends."""
        if not examples:
            return []
        if tokenizer.mask_token_id is None:
            raise DataError("task masked_lm: the model's tokenizer has no mask token")

        with quiet_transformers():  # long texts are cut into blocks below, not fed whole
            ids = tokenizer([ex.text for ex in examples], add_special_tokens=False)["input_ids"]
        sep = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
        cls = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
        stream = [t for row in ids for t in row + [sep]]
        body = max_length - 1
        blocks = [stream[i : i + body] for i in range(0, len(stream), body)]
        return [{"input_ids": [cls] + block} for block in blocks if len(block) > 1]

    def collate(self, features: list[dict], tokenizer, generator: torch.Generator | None = None) -> dict:
        batch = pad_features(features, tokenizer.pad_token_id or 0)
        words = None
        if self.whole_word:
            if self._continuation is None:
                self._continuation = continuation_ids(tokenizer)
            words = word_ids(batch["input_ids"], self._continuation)
        batch["input_ids"], batch["labels"] = mask_tokens(
            batch["input_ids"], batch["attention_mask"], tokenizer, generator, words
        )
        return batch

    def loss(self, model, batch: dict):
        labels = batch.pop("labels")
        logits, gold = masked_logits(model, batch, labels)  # (N, V), (N,)
        return F.cross_entropy(logits.float(), gold)

    def loss_units(self, batch: dict) -> int:
        return int((batch["labels"] != IGNORE).sum())  # the masked positions

    # -- evaluation ------------------------------------------------------------------------------
    @torch.inference_mode()
    def evaluate(self, model, tokenizer, features, examples, batch_size, device, labels=None) -> EvalResult:
        model.eval()
        generator = torch.Generator().manual_seed(EVAL_SEED)
        batches = device_batches(lambda chunk: self.collate(chunk, tokenizer, generator), features, batch_size, device)
        metrics = token_metrics(batches, lambda batch: masked_logits(model, batch, batch.pop("labels")))
        metrics.update(count=len(features), masked_tokens=metrics.pop("tokens"))
        return EvalResult(metrics, [])


# The MLM head of each architecture family, as an attribute of its *ForMaskedLM model.
HEAD_ATTRIBUTES = ("cls", "lm_head")


def masked_logits(model, batch: dict, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Vocabulary scores at the masked positions only, and their gold ids: (N, V), (N,).

    The projection onto the vocabulary is most of an MLM step's cost (MiniLM with an extended
    vocabulary: 40k x 384 per position), and only ~15% of positions are scored, so the head runs on
    those alone where the model's head can be found (BERT ``cls``, RoBERTa ``lm_head``); other
    models score every position and the masked ones are picked after.
    """
    chosen = labels != IGNORE
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = next(
        (getattr(inner, a) for a in HEAD_ATTRIBUTES if isinstance(getattr(inner, a, None), torch.nn.Module)), None
    )
    if head is None:
        return model(**batch).logits[chosen], labels[chosen]
    hidden = inner.base_model(**batch).last_hidden_state  # (B, T, H)
    return head(hidden[chosen]), labels[chosen]


def continuation_ids(tokenizer) -> torch.Tensor:
    """A (V,) mask of the WordPiece tokens that continue a word (``##...``)."""
    vocab = tokenizer.get_vocab()
    if not any(token.startswith("##") for token in vocab):
        raise ConfigError("data.whole_word_mask needs a WordPiece tokenizer (word pieces marked '##')")
    mask = torch.zeros(max(vocab.values()) + 1, dtype=torch.bool)
    for token, index in vocab.items():
        mask[index] = token.startswith("##")
    return mask


def word_ids(input_ids: torch.Tensor, continuation: torch.Tensor) -> torch.Tensor:
    """(B, T) word numbers: a token continuing a word shares the number of the token before it."""
    starts = ~continuation[input_ids.clamp(max=len(continuation) - 1)]
    return starts.long().cumsum(1)


def mask_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    tokenizer,
    generator: torch.Generator | None = None,
    words: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's 80/10/10 masking of 15% of the real, non-special tokens; returns (inputs, labels).
    With ``words`` (whole-word masking), a word's pieces are chosen together: the draw is made per
    word and every piece of a chosen word is masked."""
    special = torch.zeros_like(input_ids, dtype=torch.bool)
    for token_id in tokenizer.all_special_ids:
        special |= input_ids == token_id
    candidates = attention_mask.bool() & ~special
    draw = torch.rand(input_ids.shape, generator=generator)
    if words is not None:  # every piece takes the draw of its word's number
        draw = draw.gather(1, (words - 1).clamp(min=0, max=input_ids.shape[1] - 1))
    chosen = candidates & (draw < MASK_RATE)
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE))
    action = torch.rand(input_ids.shape, generator=generator)
    inputs = input_ids.clone()
    inputs[chosen & (action < 0.8)] = tokenizer.mask_token_id
    swap = chosen & (action >= 0.8) & (action < 0.9)
    inputs[swap] = torch.randint(len(tokenizer), input_ids.shape, generator=generator)[swap]
    return inputs, labels
