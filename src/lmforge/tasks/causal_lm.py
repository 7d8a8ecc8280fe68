"""Causal language modelling: pre-training on raw text, and supervised fine-tuning on conversations.

The data decides the mode. Raw text (``.txt`` one document a line, ``.jsonl``/``.csv`` with a text
field) is pre-training: documents are joined with the end-of-text token and cut into blocks of
``data.max_length`` tokens, and every token is a target. Instruction data (alpaca, messages or
ShareGPT rows, see ``lmforge.data.conversations``) is SFT: each conversation is rendered with the
chat template (the tokenizer's own, or ``data.template``), and only the assistant turns -- every
one of them, each up to and including its end-of-turn marker -- are targets, unless
``data.train_on_prompt`` is set.

Padding-free packing (``data.packing``, on by default for SFT): conversations are packed first-fit
decreasing into rows of at most ``max_length`` tokens, and each row carries position ids that restart
at every conversation. Without an attention mask, transformers reads the restarts as sequence
boundaries and builds a block-diagonal causal mask, so a conversation never attends to its
neighbours: the loss equals that of the unpacked batch (a test checks it) while almost no compute
goes to padding.

The vocabulary projection is most of a small LM's step, so the head scores only the positions that
have a target (the assistant tokens, in SFT), as ``masked_lm`` does.
"""

import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from lmforge.data.conversations import Conversation, is_conversation_row, read_conversations
from lmforge.data.examples import TextExample, read_rows, read_text_examples, source_of
from lmforge.data.task_data import TaskData
from lmforge.errors import ConfigError, DataError
from lmforge.evaluation.language_model import bits_per_char, char_perplexity
from lmforge.evaluation.result import EvalResult
from lmforge.evaluation.text_overlap import generation_metrics
from lmforge.models.decoding import greedy_batch
from lmforge.models.safe_loading import quiet_transformers
from lmforge.tasks.base import TASKS, Task, generation_headline
from lmforge.tasks.lm_common import device_batches, load_splits, token_metrics
from lmforge.tuning.peft_methods import PROMPT_LEARNING

log = logging.getLogger("lmforge")
IGNORE = -100

# The template for models without one (models built from scratch, base models).
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TEMPLATES = {"chatml": CHATML}


@TASKS.register("causal_lm")
class CausalLMTask(Task):
    name = "causal_lm"
    head = "causal_lm"
    metric_names = ("loss", "perplexity", "accuracy")
    default_metric = "loss"
    transfer_metric = "perplexity"
    generates = True

    def __init__(self):
        self.mode = "text"  # "text" (pre-training) or "chat" (SFT)
        self.template: str | None = None
        self.train_on_prompt = False
        self.packing = True
        self.fill: dict | None = None
        self.skip_long = False  # data.on_error: skip drops over-long conversations instead
        self.stats = {"truncated": 0, "dropped": 0}
        self.unigram: torch.Tensor | None = None  # log-probabilities of the baseline
        self.generate_limit = 0  # lmforge eval: score this many generated replies
        self.max_new_tokens = 128

    # -- configuration ---------------------------------------------------------------------------
    def configure(self, config, train_examples, labels) -> None:
        data = config.data
        self.template = resolve_template(data.template)
        self.train_on_prompt, self.packing = data.train_on_prompt, data.packing
        self.skip_long = data.on_error == "skip"

        if self.packing and self.mode == "chat" and config.tuning.method in PROMPT_LEARNING:
            log.info(
                "tuning.method=%s adds virtual tokens that packed rows cannot carry: packing is off",
                config.tuning.method,
            )
            self.packing = False

    def head_options(self) -> dict:
        return {"mode": self.mode, "train_on_prompt": self.train_on_prompt, "packing": self.packing}

    def restore_head_options(self, options: dict) -> None:
        self.mode = options.get("mode", "text")
        self.train_on_prompt = bool(options.get("train_on_prompt", False))
        self.packing = bool(options.get("packing", True))

    def fit_baseline(self, train_features: list[dict], vocab_size: int) -> None:
        """The unigram model of the training targets (add-one smoothed): the perplexity a model
        that ignores context reaches, reported beside the real one so "it learned" is measurable."""
        counts = torch.ones(vocab_size, dtype=torch.float64)
        for f in train_features:
            ids = torch.tensor([t for t in f["labels"][1:] if t != IGNORE], dtype=torch.long)
            counts += torch.bincount(ids, minlength=vocab_size)[:vocab_size].double()
        self.unigram = (counts / counts.sum()).log()

    # -- data ------------------------------------------------------------------------------------
    def load_data(self, config, problems) -> TaskData:
        self.fill = config.data.fill
        self.mode = detect_mode(config.data.train, config.data, problems)
        data = load_splits(config, problems, self._read)
        data.notes.insert(
            0, f"causal_lm: {'SFT on conversations' if self.mode == 'chat' else 'pre-training on raw text'}"
        )
        return data

    def _read(self, source, data, problems) -> list:
        if self.mode == "chat":
            return read_conversations(source, data, problems, self.fill)
        return read_text_examples(source, data, problems, False)

    def read_labelled(self, source, data, labels, problems) -> list:
        """Rows to evaluate on (``lmforge eval``): texts or conversations, as the run trained."""
        return self._read(source, data, problems)

    # -- batches ---------------------------------------------------------------------------------
    def encode(self, tokenizer, examples: list, max_length: int) -> list[dict]:
        if not examples:
            return []
        if self.mode == "text":
            return text_blocks(tokenizer, examples, max_length)
        install_template(tokenizer, self.template)
        rows = []
        for ids, labels in encode_conversations(tokenizer, examples, self.train_on_prompt):
            if len(ids) > max_length and self.skip_long:
                self.stats["dropped"] += 1
                continue
            if len(ids) > max_length:
                self.stats["truncated"] += 1
                ids, labels = ids[:max_length], labels[:max_length]
            if all(label == IGNORE for label in labels[1:]):
                self.stats["dropped"] += 1
                continue
            rows.append((ids, labels))
        if self.stats["truncated"] or self.stats["dropped"]:
            log.warning(
                "warning: %d conversation(s) longer than data.max_length=%d were truncated; %d %s dropped",
                self.stats["truncated"],
                max_length,
                self.stats["dropped"],
                "over-long or without an assistant token were"
                if self.skip_long
                else "had no assistant token left and were",
            )
            self.stats = {"truncated": 0, "dropped": 0}
        if not rows:
            raise DataError(f"no conversation keeps an assistant token within max_length={max_length}")
        if self.packing:
            return pack(rows, max_length)
        return [{"input_ids": ids, "labels": labels} for ids, labels in rows]

    def collate(self, features: list[dict], tokenizer) -> dict:
        return collate_lm(features, tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)

    def loss(self, model, batch: dict):
        labels = batch.pop("labels")
        logits, gold = causal_logits(model, batch, labels)
        return F.cross_entropy(logits.float(), gold)

    def loss_units(self, batch: dict) -> int:
        return int((batch["labels"][:, 1:] != IGNORE).sum())  # the targets causal_logits scores

    # -- evaluation ------------------------------------------------------------------------------
    @torch.inference_mode()
    def evaluate(self, model, tokenizer, features, examples, batch_size, device, labels=None) -> EvalResult:
        model.eval()
        batches = device_batches(lambda chunk: self.collate(chunk, tokenizer), features, batch_size, device)
        golds = []

        def score(batch):
            logits, gold = causal_logits(model, batch, batch.pop("labels"))
            golds.append(gold.cpu())
            return logits, gold

        metrics = token_metrics(batches, score)
        metrics["count"] = len(examples)
        if self.mode == "text" and metrics["tokens"]:
            metrics.update(
                character_metrics(metrics["loss"] * metrics["tokens"], target_characters(tokenizer, features))
            )
        if self.unigram is not None and golds:
            gold = torch.cat(golds).clamp(max=len(self.unigram) - 1)
            metrics["unigram_perplexity"] = math.exp(-self.unigram[gold].mean().item())
        predictions: list[dict] = []
        if self.mode == "chat" and self.generate_limit:
            metrics_gen, predictions = self.generation_scores(model, tokenizer, examples[: self.generate_limit])
            metrics.update(metrics_gen)
        return EvalResult(metrics, predictions)

    def headline(self, metrics: dict) -> str:
        """Generated answers (``--generate``, prompt runs) are summed up by their scores; else the default."""
        return generation_headline(metrics) if "rougeL" in metrics else super().headline(metrics)

    def generation_scores(self, model, tokenizer, conversations: list[Conversation]) -> tuple[dict, list[dict]]:
        """Greedy replies to each conversation's last prompt, scored against its last assistant turn
        (BLEU, ROUGE-1/2/L, exact match)."""

        install_template(tokenizer, self.template)
        prompts, references = [], []
        for conv in conversations:
            last = max(i for i, m in enumerate(conv.messages) if m["role"] == "assistant")
            text = render(tokenizer, conv.messages[:last], add_generation_prompt=True)
            prompts.append(tokenizer(text, add_special_tokens=False)["input_ids"])
            references.append(conv.messages[last]["content"])
        replies = greedy_batch(model, tokenizer, prompts, self.max_new_tokens)
        scores = generation_metrics(replies, references)
        scores["generated"] = len(replies)
        rows = [
            {"where": c.where, "reference": r, "generated": g} for c, r, g in zip(conversations, references, replies)
        ]
        return scores, rows


# -- data helpers ---------------------------------------------------------------------------------
def detect_mode(source, data, problems) -> str:
    """'chat' when the first row of the training data is a conversation, else 'text'."""
    first = source[0] if isinstance(source, list) else source
    for _, row, _ in read_rows(first, data, problems):
        return "chat" if is_conversation_row(row) else "text"
    raise DataError(f"{source_of(first).path}: no rows")


def resolve_template(value: str | None) -> str | None:
    """``data.template``: a built-in name, a ``.jinja`` file, or a Jinja string (None: the tokenizer's)."""
    if value is None:
        return None
    if value in TEMPLATES:
        return TEMPLATES[value]
    if value.endswith((".jinja", ".j2")):
        path = Path(value).expanduser()
        if not path.is_file():
            raise ConfigError(f"data.template: file {path} not found")
        return path.read_text(encoding="utf-8")
    if "{%" in value or "{{" in value:
        return value
    raise ConfigError(
        f"data.template: '{value}' is not a known template ({', '.join(TEMPLATES)}), a .jinja file, or a Jinja string"
    )


def install_template(tokenizer, template: str | None) -> None:
    """Give the tokenizer the configured template (saved with it), or ChatML if it has none."""
    if template is not None:
        tokenizer.chat_template = template
    elif not getattr(tokenizer, "chat_template", None):
        log.info("the tokenizer has no chat template: using ChatML (set data.template to choose)")
        tokenizer.chat_template = CHATML


def render(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def assistant_regions(tokenizer, messages: list[dict], where: str = "") -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character ranges of its assistant turns.

    A turn's range runs from the end of the prompt that asks for it (the text rendered with the
    generation prompt) to the end of the conversation rendered up to that turn: the reply and its
    end-of-turn marker, which the model must learn to emit."""
    full = render(tokenizer, messages)
    regions = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = render(tokenizer, messages[:i], add_generation_prompt=True)
        upto = render(tokenizer, messages[: i + 1])
        if not (upto.startswith(before) and full.startswith(upto)):
            raise DataError(
                f"{where}: the chat template does not render this conversation turn by turn "
                "(a later turn changes the text of an earlier one), so assistant tokens "
                "cannot be found; set data.template"
            )
        regions.append((len(before), len(upto)))
    return full, regions


def encode_conversations(tokenizer, conversations: list[Conversation], train_on_prompt: bool = False):
    """Token ids and targets of each conversation (targets: assistant tokens, else IGNORE)."""
    rendered = [assistant_regions(tokenizer, c.messages, c.where) for c in conversations]
    encoded = tokenizer([text for text, _ in rendered], add_special_tokens=False, return_offsets_mapping=True)
    out = []
    for (text, regions), ids, offsets in zip(rendered, encoded["input_ids"], encoded["offset_mapping"]):
        if train_on_prompt:
            labels = list(ids)
        else:
            labels = [
                tok if any(s <= start < e for s, e in regions) else IGNORE for tok, (start, _) in zip(ids, offsets)
            ]
        out.append((list(ids), labels))
    return out


def text_blocks(tokenizer, examples: list[TextExample], max_length: int) -> list[dict]:
    """Documents joined by the end-of-text token, cut into blocks of ``max_length`` tokens."""

    eos = tokenizer.eos_token_id
    if eos is None:
        raise DataError("task causal_lm: the tokenizer has no end-of-text token")
    with quiet_transformers():  # long documents are cut into blocks below, not fed whole
        ids = tokenizer([ex.text for ex in examples], add_special_tokens=False)["input_ids"]
    stream = [t for row in ids for t in row + [eos]]
    blocks = [stream[i : i + max_length] for i in range(0, len(stream), max_length)]
    return [{"input_ids": b, "labels": list(b)} for b in blocks if len(b) > 1]


def target_characters(tokenizer, features: list[dict]) -> int:
    """Characters of the text that the targets of pre-training blocks cover (a block's first token
    has no context and no target), end-of-text counted as one: the denominator of bits per
    character. Exact for a lossless tokenizer such as byte-level BPE."""
    eos, total = tokenizer.eos_token_id, 0
    for f in features:
        targets = [t for t in f["labels"][1:] if t != IGNORE]
        text = tokenizer.decode([t for t in targets if t != eos], clean_up_tokenization_spaces=False)
        total += len(text) + targets.count(eos)
    return total


def character_metrics(nll_nats: float, characters: int) -> dict:
    """Tokenizer-independent figures (bits and perplexity per character) of a total NLL."""

    return {
        "bits_per_char": bits_per_char(nll_nats, characters),
        "char_perplexity": char_perplexity(nll_nats, characters),
        "characters": characters,
    }


def pack(rows: list[tuple[list[int], list[int]]], max_length: int) -> list[dict]:
    """First-fit-decreasing packing into rows of at most ``max_length`` tokens, with position ids
    restarting at each sequence (deterministic: the same data always packs the same way)."""
    order = sorted(range(len(rows)), key=lambda i: (-len(rows[i][0]), i))
    bins: list[list[int]] = []
    room: list[int] = []
    for i in order:
        size = len(rows[i][0])
        for b, left in enumerate(room):
            if size <= left:
                bins[b].append(i)
                room[b] -= size
                break
        else:
            bins.append([i])
            room.append(max_length - size)
    packed = []
    for members in bins:
        ids, labels, positions = [], [], []
        for i in members:
            ids += rows[i][0]
            # A sequence's first token has no target inside its own row position -1: the
            # shift in causal_logits would otherwise make the previous sequence predict it.
            labels += [IGNORE] + rows[i][1][1:]
            positions += list(range(len(rows[i][0])))
        packed.append({"input_ids": ids, "labels": labels, "position_ids": positions, "sequences": len(members)})
    return packed


def collate_lm(features: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad to the longest row. Packed rows carry position ids and no attention mask (transformers
    then keeps each packed sequence to itself); the padding tail is one more sequence, untargeted."""
    width = max(len(f["input_ids"]) for f in features)
    batch_size = len(features)
    input_ids = torch.full((batch_size, width), pad_id, dtype=torch.long)
    labels = torch.full((batch_size, width), IGNORE, dtype=torch.long)
    packed = "position_ids" in features[0]
    if packed:
        positions = torch.arange(width).repeat(batch_size, 1)
    else:
        mask = torch.zeros((batch_size, width), dtype=torch.long)
    for row, f in enumerate(features):
        n = len(f["input_ids"])
        input_ids[row, :n] = torch.tensor(f["input_ids"])
        labels[row, :n] = torch.tensor(f["labels"])
        if packed:
            positions[row, :n] = torch.tensor(f["position_ids"])
            positions[row, n:] = torch.arange(width - n)
        else:
            mask[row, :n] = 1
    batch = {"input_ids": input_ids, "labels": labels}
    if packed:
        batch["position_ids"] = positions
    else:
        batch["attention_mask"] = mask
    return batch


def causal_logits(model, batch: dict, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token scores at the positions that have a target, and those targets: (N, V), (N,).

    The position t predicts the token t+1; only positions whose next token is a target go through
    the vocabulary projection. Models with virtual tokens (prompt learning) run whole. No KV cache:
    transformers only reads packed position ids as sequence boundaries when there is none."""
    targets = labels[:, 1:]
    chosen = targets != IGNORE  # (B, T-1)
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    prompt_learning = getattr(getattr(model, "active_peft_config", None), "is_prompt_learning", False)
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    if prompt_learning or head is None:
        logits = model(**batch, use_cache=False).logits[:, -labels.shape[1] :]  # drop virtual tokens
        return logits[:, :-1][chosen], targets[chosen]
    hidden = inner.base_model(**batch, use_cache=False).last_hidden_state  # (B, T, H)
    return head(hidden[:, :-1][chosen]), targets[chosen]
