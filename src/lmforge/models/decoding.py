"""Decoding primitives shared by every causal/seq2seq model: the options a user sets, the result of
one generation, end-of-sequence ids, left padding, batched greedy decoding, and the streamer that
never shows a stop string.

``inference/generator.py`` loads a model and drives these; tasks (eval-time generation) and
prompting use them directly.
"""

from dataclasses import dataclass, field

import numpy as np
import torch

from lmforge.errors import DataError


@dataclass
class GenerationOptions:
    max_new_tokens: int = 128
    temperature: float | None = None  # None or 0: greedy (unless top_k/top_p ask for sampling)
    top_k: int | None = None
    top_p: float | None = None
    num_beams: int = 1
    repetition_penalty: float | None = None
    stop: list[str] = field(default_factory=list)
    seed: int | None = None

    def check(self) -> None:
        if self.max_new_tokens < 1:
            raise DataError("--max-new-tokens must be at least 1")
        if self.temperature is not None and self.temperature < 0:
            raise DataError("--temperature must be >= 0")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise DataError("--top-p must be in (0, 1]")
        if self.top_k is not None and self.top_k < 1:
            raise DataError("--top-k must be at least 1")
        if self.num_beams < 1:
            raise DataError("--num-beams must be at least 1")
        if self.repetition_penalty is not None and self.repetition_penalty <= 0:
            raise DataError("--repetition-penalty must be > 0")

    @property
    def sampling(self) -> bool:
        return bool(self.temperature) or self.top_k is not None or self.top_p is not None


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    new_tokens: int
    seconds: float
    stopped_by: str  # "eos", "stop", "length"

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0


def sample_next(logits: np.ndarray, options: GenerationOptions, previous: list[int], rng: np.random.Generator) -> int:
    """The next token from one position's logits (V,), as transformers' ``generate`` picks it: the
    repetition penalty on the tokens so far, then greedy, or sampling with temperature, top-k and
    top-p. NumPy, not PyTorch: a PyTorch op per token wakes its OpenMP threads, which then compete
    with llama.cpp's for the cores (measured: decoding 2.7x slower on 2 cores)."""
    logits = logits.astype(np.float64)
    if options.repetition_penalty and previous:
        seen = np.array(sorted(set(previous)))
        values = logits[seen]
        penalty = options.repetition_penalty
        logits[seen] = np.where(values < 0, values * penalty, values / penalty)
    if not options.sampling:
        return int(logits.argmax())
    logits /= options.temperature or 1.0
    if options.top_k is not None and options.top_k < logits.size:
        logits[logits < np.partition(logits, -options.top_k)[-options.top_k]] = -np.inf
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    if options.top_p is not None and options.top_p < 1:
        order = np.argsort(-probs, kind="stable")
        ordered = probs[order]
        ordered[np.cumsum(ordered) - ordered > options.top_p] = 0  # the smallest head holding top_p
        probs = np.zeros_like(probs)
        probs[order] = ordered
        probs /= probs.sum()
    return int(rng.choice(probs.size, p=probs))


def stop_ids(model, tokenizer) -> list[int]:
    """End-of-sequence ids: the tokenizer's, the generation config's and ChatML's end of turn."""
    ids = set()
    generation_config = getattr(model, "generation_config", None)
    for value in (tokenizer.eos_token_id, getattr(generation_config, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list):
            ids.update(value)
    end_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(end_turn, int) and end_turn != tokenizer.unk_token_id:
        ids.add(end_turn)
    return sorted(ids)


def left_pad(prompts: list[list[int]], pad: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists -> left-padded ids and attention mask (B, T), so every row ends at the last
    column (where a causal LM's next token is read)."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        mask[row, width - len(prompt) :] = 1
    return ids.to(device), mask.to(device)


@torch.inference_mode()
def greedy_batch(model, tokenizer, prompts: list[list[int]], max_new_tokens: int, batch_size: int = 8) -> list[str]:
    """Greedy replies to many prompts (token ids), batched with left padding, in input order."""
    import transformers

    stops = stop_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (stops[0] if stops else 0)
    config = transformers.GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, eos_token_id=stops or None, pad_token_id=pad
    )
    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    replies: list[str] = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        ids, mask = left_pad([prompts[i] for i in chunk], pad, device)
        width = ids.shape[1]
        out = model.generate(ids, attention_mask=mask, generation_config=config)
        for row, i in enumerate(chunk):
            new = [t for t in out[row, width:].tolist()]
            for k, token in enumerate(new):
                if token in stops:
                    new = new[:k]
                    break
            replies[i] = tokenizer.decode(new, skip_special_tokens=True).strip()
    return replies


def held_back(text: str, stops: list[str]) -> int:
    """How many characters at the end of ``text`` could be the start of a stop string."""
    held = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), held, -1):
            if text.endswith(stop[:k]):
                held = k
                break
    return held


class IncrementalText:
    """The text of a growing list of generated token ids, in time linear in its length: each update
    decodes a window of the last few tokens (from the last point where the text was whole) rather
    than the whole reply, and stop strings are looked for in the new text only, with the overlap a
    stop string could straddle. ``text`` always equals decoding all the ids (less a trailing half of
    a multi-byte character, held until the next token completes it)."""

    def __init__(self, tokenizer, stops: list[str]):
        self.tokenizer, self.stops = tokenizer, stops
        self.text = ""
        self._prefix = self._read = 0  # ids[_prefix:_read] decode to the text's last piece
        self._searched = 0
        self._longest = max((len(stop) for stop in stops), default=0)

    def update(self, ids: list[int], final: bool = False) -> bool:
        """Take the ids (the whole list, grown since the last call); True when the text grew.
        ``final``: no token will follow, so a half character is dropped rather than held."""
        decode = self.tokenizer.decode
        before = decode(ids[self._prefix : self._read], skip_special_tokens=True)
        now = decode(ids[self._prefix :], skip_special_tokens=True)
        if not final and now.endswith("\ufffd"):  # half of a multi-byte character
            return False
        added = now[len(before) :]
        if final:
            added = added.rstrip("\ufffd")
        if not added:
            return False
        self.text += added
        self._prefix, self._read = self._read, len(ids)
        return True

    def stop_index(self) -> int | None:
        """Where the first stop string starts in the text, looking only at what is new."""
        start = max(0, self._searched - self._longest + 1)
        self._searched = len(self.text)
        found = [i for i in (self.text.find(stop, start) for stop in self.stops) if i >= 0]
        return min(found) if found else None

    def shown_length(self) -> int:
        """How much may be shown while streaming (no stop string is in the text: see stop_index)."""
        return len(self.text) - held_back(self.text, self.stops)


class Streamer:
    """Feeds decoded text to a callback as tokens arrive, holding back what could be the start of a
    stop string, so a stop string is never shown."""

    def __init__(self, tokenizer, callback, stops: list[str]):
        self.tokenizer, self.callback, self.stops = tokenizer, callback, stops
        self.ids: list[int] = []
        self.decoded = IncrementalText(tokenizer, stops)
        self.stopped_at: int | None = None
        self.prompt_seen = False
        self.shown = 0

    def put(self, value) -> None:
        if not self.prompt_seen:  # the first call carries the prompt (seq2seq: the start token)
            self.prompt_seen = True
            return
        self.ids += value.reshape(-1).tolist()
        if not self.decoded.update(self.ids):
            return
        text = self.decoded.text
        if self.stopped_at is None:
            self.stopped_at = self.decoded.stop_index()
        # Nothing from a stop string on is shown, however many tokens the generator takes to stop.
        safe = self.stopped_at if self.stopped_at is not None else self.decoded.shown_length()
        if safe > self.shown:
            self.callback(text[self.shown : safe])
            self.shown = safe

    def end(self) -> None:
        pass

    def flush_rest(self, final: str) -> None:
        if len(final) > self.shown:
            self.callback(final[self.shown :])
            self.shown = len(final)
