"""Batched generation for the completion routes: the sequences of concurrent requests are decoded
together, one forward pass per step for the whole batch, on one worker thread.

Rows (one per prompt and choice) waiting when the worker is free start together: their prompts are
left-padded and run once (prefill), then decoded a token per step with the KV cache. Rows leave the
batch as they finish (end of sequence, a stop string, their ``max_tokens``, or a client that went
away), and the cache shrinks with them. Rows that arrive while a batch runs join it between two
steps (continuous batching): they are prefilled on their own, and their keys/values are left-padded
to the batch's length and appended to its cache, with the attention mask padded to match — so a
short request never waits for a long one to finish. Models whose cache is not a plain per-layer
key/value cache (sliding windows, recurrent state) and encoder-decoders run without joining.

Each row reports through its job's ``emit(row, kind, value)``: ``("text", piece)`` as text becomes
safe to show (a possible stop string is held back) and ``("done", (finish_reason, tokens))`` once.
A row that asks for log-probabilities also gets ``("prompt", [Scored, ...])`` after its prefill
(``echo``: every prompt token but the first) and ``("token", Scored)`` for each token it takes, before
the text that token adds. Log-probabilities are the model's own (log-softmax of its logits), before
the row's logit bias, penalties, temperature and top-p, so they score text whatever the sampling.

Sampling follows OpenAI's definitions: ``logit_bias`` is added to the logits, and each token already
generated lowers its logit by ``frequency_penalty`` per occurrence plus ``presence_penalty`` once;
greedy decoding (temperature 0) picks the highest adjusted logit. A row with a ``constraint``
(structured output, ``structured.py``) may only take the tokens its grammar allows next.
"""

import inspect
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from lmforge.inference.llama_cpp import shared_prefix
from lmforge.models.decoding import GenerationOptions, IncrementalText, left_pad
from lmforge.serving.batching import QueueFull
from lmforge.serving.compute import COMPUTE
from lmforge.serving.kv_cache import joinable, merge_caches, merge_masks, select_rows
from lmforge.serving.structured import Constraint

# A llama.cpp row waits for another joining row's prefill when that gives it this many more prompt
# tokens computed already than any cache holds (a second llama_decode call costs little).
SHARE_WORTH = 8
# Cells of the shared llama.cpp cache a row reserves to grow into when it joins; beyond them, rows
# that outgrow the cache are pre-empted (LlamaCppEngine).
RESERVE = 256


class Scored(NamedTuple):
    """A token, its log-probability under the model and the most likely alternatives there."""

    token: int
    logprob: float
    top: list[tuple[int, float]]


@dataclass
class Row:
    prompt: list[int]
    max_new: int
    temperature: float
    top_p: float
    stops: list[str]
    seed: int | None
    index: int  # the row's place in its job (prompt x choice)
    logprobs: int | None = None  # alternatives per token to report; None: no log-probabilities
    echo: bool = False  # report the prompt's log-probabilities too
    presence: float = 0.0
    frequency: float = 0.0
    bias: dict[int, float] | None = None
    constraint: Constraint | None = None  # a grammar the reply must follow (structured output)
    adapter: str | None = None  # the LoRA adapter it decodes with (serve --adapters); None: the base
    job: "Job" = None
    ids: list[int] = field(default_factory=list)
    text: str = ""
    shown: int = 0
    finish: str | None = None
    rng: torch.Generator | None = None
    counts: Counter = field(default_factory=Counter)  # generated tokens, for the penalties
    scored: Scored | None = None  # the log-probability of the token _choose picked
    logprob_sum: float = 0.0  # of the tokens taken (stop tokens excluded)
    decoded: IncrementalText | None = None  # the reply's text, decoded a few tokens at a time

    @property
    def adjusts(self) -> bool:
        return (
            bool(self.bias)
            or (bool(self.counts) and bool(self.presence or self.frequency))
            or self.constraint is not None
        )


@dataclass
class Job:
    rows: list[Row]
    emit: Callable[[int, str, object], None]
    cancelled: threading.Event = field(default_factory=threading.Event)


class GenerationEngine:
    def __init__(
        self,
        generator,
        max_batch: int = 8,
        max_queue: int = 64,
        on_batch=None,
        on_queue=None,
        name: str = "generation",
        wait_s: float = 0.005,
    ):
        self.gen = generator
        self.tokenizer = generator.tokenizer
        self.stop_ids = set(generator.stop_ids)
        self.pad = (
            self.tokenizer.pad_token_id
            if self.tokenizer.pad_token_id is not None
            else (min(self.stop_ids) if self.stop_ids else 0)
        )
        self.max_batch, self.max_queue, self.wait_s = max_batch, max_queue, wait_s
        self._prepare()
        self.on_batch, self.on_queue = on_batch or (lambda n: None), on_queue or (lambda n: None)
        self._rows: deque[Row] = deque()
        self._jobs_waiting = 0
        self._cond = threading.Condition()
        self._closed = False
        self.running: list[Row] = []  # the batch decoding now
        threading.Thread(target=self._loop, name=name, daemon=True).start()

    def _prepare(self) -> None:
        """What the engine needs of the model: whether rows can join a running batch, and whether
        the prefill can compute the last position's logits only."""
        self.model = self.gen.model
        self.joinable = not self.gen.seq2seq and COMPUTE.call(joinable, self.model)
        # prefill computes the logits of the last position only, unless a row asks for the prompt's
        self.keeps_logits = "logits_to_keep" in inspect.signature(type(self.model).forward).parameters

    # ---- the caller's side ----

    def submit(self, job: Job) -> None:
        with self._cond:
            if self._closed:
                raise QueueFull("the server is shutting down")
            if self._jobs_waiting >= self.max_queue:
                raise QueueFull(f"{self._jobs_waiting} requests are waiting for this model")
            for row in job.rows:
                row.job = job
                seed = row.seed if row.seed is not None else random.getrandbits(62)
                row.rng = torch.Generator().manual_seed(seed % 2**62)
            self._rows.extend(job.rows)
            self._jobs_waiting += 1
            self.on_queue(self._jobs_waiting)
            self._cond.notify()

    def uses(self, adapter: str) -> bool:
        """Whether a row waiting or decoding uses ``adapter``."""
        with self._cond:
            rows = [*self._rows, *self.running]
        return any(row.adapter == adapter and row.finish is None for row in rows)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    # ---- the worker ----

    def _take(self, room: int, wait: bool) -> list[Row]:
        """Up to ``room`` waiting rows; with ``wait``, block for the first and give others
        ``wait_s`` to arrive (requests sent together start together)."""
        with self._cond:
            if wait:
                while not self._rows and not self._closed:
                    self._cond.wait()
                deadline = time.monotonic() + self.wait_s
                while len(self._rows) < room and not self._closed and time.monotonic() < deadline:
                    self._cond.wait(max(0.0, deadline - time.monotonic()))
            batch = []
            while self._rows and len(batch) < room:
                row = self._rows.popleft()
                if row.index == 0:
                    self._jobs_waiting -= 1
                if row.job.cancelled.is_set():
                    continue
                batch.append(row)
            self.on_queue(self._jobs_waiting)
            return batch

    def _loop(self) -> None:
        while True:
            batch = self._take(self.max_batch, wait=True)
            if not batch:
                if self._closed:
                    return
                continue
            running = self.running = list(batch)
            try:
                if self.gen.seq2seq:
                    self.on_batch(len(batch))
                    for row in batch:
                        self._solo(row)
                else:
                    self._decode(batch, running)
            except Exception as exc:  # a failed batch ends its rows, not the worker
                for row in running:
                    if row.finish is None:
                        row.finish = "error"
                        row.job.emit(row.index, "error", str(exc))

    def _prefill(self, rows: list[Row]):
        """Left-padded prompts through the model: (cache, mask, last positions, first tokens)."""
        ids, mask = left_pad([row.prompt for row in rows], self.pad, self.gen.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, T)
        cache, tokens = COMPUTE.call(self._step, rows, ids, mask, positions, None)
        self.on_batch(len(rows))
        return cache, mask, positions[:, -1:], tokens

    def _decode(self, rows: list[Row], running: list[Row]) -> None:
        """Decode ``rows`` a step at a time; rows leave as they finish and, when the model's cache
        allows it, waiting rows join between steps (continuous batching). ``running`` is kept
        equal to the rows in the batch, for the caller's error handling."""
        cache, mask, last, tokens = self._prefill(rows)
        active, cache, mask, last, tokens = self._taken(rows, cache, mask, last, tokens)
        running[:] = active
        while True:
            joining = self._take(self.max_batch - len(active), wait=False) if self.joinable else []
            if joining:
                new = self._prefill(joining)
                joining, new_cache, new_mask, new_last, new_tokens = self._taken(joining, *new)
                if joining and active:
                    COMPUTE.call(merge_caches, cache, new_cache)
                    mask = merge_masks(mask, new_mask)
                    last, tokens = torch.cat([last, new_last]), torch.cat([tokens, new_tokens])
                elif joining:
                    cache, mask, last, tokens = new_cache, new_mask, new_last, new_tokens
                active = active + joining
                running[:] = active
                continue  # others may be waiting too
            if not active:
                return
            mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)
            last = last + 1  # (B, 1)
            cache, tokens = COMPUTE.call(self._step, active, tokens[:, None], mask, last, cache)
            active, cache, mask, last, tokens = self._taken(active, cache, mask, last, tokens)
            running[:] = active

    def _taken(self, rows: list[Row], cache, mask, last, tokens):
        """Each row takes in the token just chosen for it (once: a row's token is taken right
        after the forward pass that chose it); finished rows leave, with their cache rows."""
        keep = [i for i, (row, t) in enumerate(zip(rows, tokens.tolist())) if not self._add(row, t)]
        if len(keep) < len(rows):
            index = torch.tensor(keep, device=mask.device, dtype=torch.long)
            if keep:
                COMPUTE.call(select_rows, cache, index)
            mask, last, tokens = mask[index], last[index], tokens[index]
            rows = [rows[i] for i in keep]
        return rows, cache, mask, last, tokens

    @torch.inference_mode()
    def _step(self, rows, ids, mask, positions, cache):
        """One forward pass (the prefill when ``cache`` is None) and each row's next token."""
        echo = cache is None and any(row.echo for row in rows)
        keep: dict = {"logits_to_keep": 1} if self.keeps_logits and not echo else {}
        if hasattr(self.model, "peft_config"):  # adapters loaded: each row through its own (peft's mixed batch)
            keep["adapter_names"] = [row.adapter or "__base__" for row in rows]
        out = self.model(
            input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True, **keep
        )
        if echo:
            for i, row in enumerate(rows):
                if row.echo:
                    before = out.logits[i, out.logits.shape[1] - len(row.prompt) : -1]  # left-padded rows
                    row.job.emit(row.index, "prompt", _prompt_scores(before, row.prompt, row.logprobs or 0))
        return out.past_key_values, self._choose(out.logits[:, -1, :].float(), rows)  # (B,)

    def _choose(self, logits: torch.Tensor, rows: list[Row]) -> torch.Tensor:
        """Next token per row: greedy at temperature 0, else sampled with the row's temperature,
        nucleus (top-p) and its own random generator (so a seed reproduces a row in any batch);
        the row's logit bias and penalties first. Rows that report log-probabilities keep the
        model's own for the token picked (``row.scored``)."""
        raw = logits
        if any(row.adjusts for row in rows):
            logits = logits.clone()
            for i, row in enumerate(rows):
                if row.bias:
                    ids = torch.tensor(list(row.bias), device=logits.device)
                    logits[i, ids] += torch.tensor(list(row.bias.values()), device=logits.device)
                if row.counts and (row.presence or row.frequency):
                    ids = torch.tensor(list(row.counts), device=logits.device)
                    seen = torch.tensor(list(row.counts.values()), device=logits.device, dtype=logits.dtype)
                    logits[i, ids] -= seen * row.frequency + row.presence
                if row.constraint is not None:
                    self._constrain(logits[i], row.constraint)
        chosen = logits.argmax(-1).cpu()
        for i, row in enumerate(rows):
            if row.temperature == 0:
                continue
            probs = (logits[i] / row.temperature).softmax(-1).cpu()
            if row.top_p < 1:
                sorted_p, order = probs.sort(descending=True)
                outside = sorted_p.cumsum(0) - sorted_p > row.top_p  # keep the smallest head >= top_p
                sorted_p[outside] = 0
                probs = torch.zeros_like(probs).scatter(0, order, sorted_p)
            chosen[i] = torch.multinomial(probs, 1, generator=row.rng)[0]
        if any(row.logprobs is not None for row in rows):
            logprobs = raw.log_softmax(-1)
            for i, row in enumerate(rows):
                if row.logprobs is not None:
                    row.scored = _scored(logprobs[i], int(chosen[i]), row.logprobs)
        return chosen.to(logits.device)

    def _constrain(self, logits: torch.Tensor, constraint: Constraint) -> None:
        """Rule out (in place) the tokens the row's grammar does not allow next; a grammar that has
        failed allows the end of the reply only."""
        allowed = constraint.allowed()
        if allowed is None or not allowed.any():
            allowed = torch.zeros(logits.shape[-1], dtype=torch.bool)
            allowed[sorted(self.stop_ids) or [0]] = True
        width = min(allowed.shape[0], logits.shape[-1])
        logits[:width].masked_fill_(~allowed[:width].to(logits.device), float("-inf"))
        logits[width:] = float("-inf")

    def _add(self, row: Row, token: int) -> bool:
        """Take one token into a row; True when the row is finished."""
        if row.job.cancelled.is_set():
            row.finish = "cancelled"
            return True
        if row.max_new == 0:  # the prompt's log-probabilities only (echo)
            return self._finish(row, "length", "")
        row.ids.append(token)
        if token in self.stop_ids:
            return self._finish(row, "stop", row.text)
        row.counts[token] += 1
        if row.constraint is not None:
            row.constraint.take(token)
        if row.scored is not None:
            row.logprob_sum += row.scored.logprob
            row.job.emit(row.index, "token", row.scored)
            row.scored = None
        if row.decoded is None:
            row.decoded = IncrementalText(self.tokenizer, row.stops)
        at_limit = len(row.ids) >= row.max_new
        if not row.decoded.update(row.ids, final=at_limit) and not at_limit:
            return False  # nothing new to show (half of a multi-byte character, a skipped token)
        text = row.text = row.decoded.text
        stop = row.decoded.stop_index()
        if stop is not None:
            return self._finish(row, "stop", text[:stop])
        if at_limit:
            return self._finish(row, "length", text)
        safe = row.decoded.shown_length()
        if safe > row.shown:
            row.job.emit(row.index, "text", text[row.shown : safe])
            row.shown = safe
        return False

    def _finish(self, row: Row, reason: str, final: str) -> bool:
        if len(final) > row.shown:
            row.job.emit(row.index, "text", final[row.shown :])
        row.text, row.shown, row.finish = final, len(final), reason
        row.job.emit(row.index, "done", (reason, len(row.ids)))
        return True

    def _solo(self, row: Row) -> None:
        """Encoder-decoder models: one row at a time through the generator (no shared cache)."""
        if row.job.cancelled.is_set():
            row.finish = "cancelled"
            return
        options = GenerationOptions(
            max_new_tokens=row.max_new,
            temperature=row.temperature or None,
            top_p=row.top_p if row.top_p < 1 else None,
            stop=row.stops,
            seed=row.seed,
        )
        result = COMPUTE.call(
            self.gen.generate_ids, row.prompt, options, stream=lambda piece: row.job.emit(row.index, "text", piece)
        )
        row.finish = "length" if result.stopped_by == "length" else "stop"
        row.job.emit(row.index, "done", (row.finish, result.new_tokens))


def _need(row: Row) -> int:
    """KV cells a llama.cpp row asks to join: its prompt, the tokens it has, and room to grow by
    ``RESERVE`` (or what is left of its ``max_tokens``, if less)."""
    return len(row.prompt) + len(row.ids) + min(row.max_new - len(row.ids), RESERVE) + 1


def _scored(logprobs: torch.Tensor, token: int, top: int) -> Scored:
    """``token``'s log-probability in ``logprobs`` (V,) and the ``top`` most likely tokens."""
    alternatives: list[tuple[int, float]] = []
    if top:
        values, ids = logprobs.topk(top)
        alternatives = list(zip(ids.tolist(), values.tolist()))
    return Scored(token, float(logprobs[token]), alternatives)


def _prompt_scores(before: torch.Tensor, prompt: list[int], top: int) -> list[Scored]:
    """Each prompt token's log-probability given the ones before it (the first has none: it is
    left out); ``before`` (len(prompt) - 1, V) holds the logits that predict tokens 1, 2, ..."""
    logprobs = before.float().log_softmax(-1)
    return [_scored(logprobs[k], prompt[k + 1], top) for k in range(len(prompt) - 1)]


class LlamaCppEngine(GenerationEngine):
    """The same rows, sampling, logprobs and grammars over a ``LlamaCppGenerator``: llama.cpp
    computes each step's logits for all the running rows at once (one sequence of its KV cache per
    row), and rows join between steps, as in the PyTorch engine.

    A row takes the free sequence whose cache shares the longest prefix with its prompt (a system
    prompt, a conversation's earlier turns), so only the rest is computed. A row joins when the
    cache has room for what the running rows hold plus ``RESERVE`` more tokens each (or what is left
    of their ``max_tokens``, if less), and its own prompt and reserve; otherwise it waits. When the
    rows running outgrow the cache, the row that joined last is pre-empted: its cache is dropped
    and it waits at the head of the queue, to go on later from its prompt and the tokens it has
    (recomputed), so its reply is the one it would have had. A row alone always fits: the server
    refuses a prompt and ``max_tokens`` beyond the model's context."""

    def _prepare(self) -> None:
        self.joinable = True
        self.sequences = self.gen.open_sequences(self.max_batch + 1)  # 0 is the generator's own
        self.free = list(range(1, self.sequences.count))
        self.held: deque[Row] = deque()  # taken from the queue, waiting for room in the cache
        self.joined: dict[int, int] = {}  # sequence -> when its row joined (the newest is pre-empted first)
        self.joins = 0
        self.preempted = 0  # rows pre-empted so far

    def _decode(self, rows: list[Row], running: list[Row]) -> None:
        """Decode ``rows`` and the rows that arrive meanwhile, a step for all at a time, until none
        is left. ``running`` is kept equal to the rows taken from the queue and not finished, for
        the caller's error handling."""
        self.held.extend(rows)
        active: dict[int, tuple[Row, int]] = {}  # sequence -> (row, the token it feeds next)
        try:
            while True:
                room = len(self.free) - len(self.held)
                if room > 0:
                    self.held.extend(self._take(room, wait=False))
                joining = self._admit(active)
                running[:] = [row for row, _ in active.values()] + [row for _, row in joining] + list(self.held)
                if joining:
                    self.on_batch(len(joining))
                    self._join(joining, active)
                if not active:
                    if self.held:
                        continue
                    return
                self._make_room(active)
                seqs = list(active)
                self.on_batch(len(seqs))
                logits = COMPUTE.call(self.sequences.decode, [(seq, [active[seq][1]], False) for seq in seqs])
                self._advance([(seq, active[seq][0]) for seq in seqs], logits, active)
        except BaseException:
            for seq in range(self.sequences.count):  # what a failed call left in the cache is unknown
                self.sequences.drop(seq)
            raise
        finally:  # no row runs between two calls: every sequence is free again
            self.free = list(range(1, self.sequences.count))
            self.held.clear()

    def _admit(self, active: dict[int, tuple[Row, int]]) -> list[tuple[int, Row]]:
        """The held rows that fit in the cache now (first come, first served), each given the free
        sequence that shares most of its prompt; the caches of idle sequences (and of sequence 0,
        which the server does not use) give way as needed."""
        budget = sum(_need(row) for row, _ in active.values())
        joining: list[tuple[int, Row]] = []
        while self.held and self.free:
            row = self.held[0]
            if row.job.cancelled.is_set():
                self.held.popleft()
                row.finish = "cancelled"
                continue
            need = _need(row)
            if budget + need > self.sequences.positions and (active or joining):
                break
            self.held.popleft()
            budget += need
            seq = max(self.free, key=lambda s: shared_prefix(self.sequences.cached[s], row.prompt))
            self.free.remove(seq)
            self.joins += 1
            self.joined[seq] = self.joins
            joining.append((seq, row))
        if joining:  # the rows running may grow to ``budget`` cells: idle caches make room
            idle = sorted(
                (s for s in [0, *self.free] if self.sequences.cached[s]), key=lambda s: len(self.sequences.cached[s])
            )
            held = sum(len(self.sequences.cached[s]) for s in idle)
            while held + budget > self.sequences.positions and idle:
                seq = idle.pop()  # the longest idle cache first
                held -= len(self.sequences.cached[seq])
                self.sequences.drop(seq)
        return joining

    def _make_room(self, active: dict[int, tuple[Row, int]]) -> None:
        """Room in the cache for one more token of every running row: idle caches go first (the
        longest first), then the rows that joined last are pre-empted (back to the head of the
        queue); the last row running always stays."""
        cached = self.sequences.cached
        while self.sequences.used() + len(active) > self.sequences.positions:
            idle = [s for s in [0, *self.free] if cached[s]]
            if idle:
                self.sequences.drop(max(idle, key=lambda s: len(cached[s])))
                continue
            if len(active) <= 1:
                return
            seq = max(active, key=lambda s: self.joined.get(s, 0))
            row, _ = active.pop(seq)
            self.sequences.drop(seq)
            self.free.append(seq)
            self.held.appendleft(row)
            self.preempted += 1

    def _join(self, joining: list[tuple[int, Row]], active: dict[int, tuple[Row, int]]) -> None:
        """Prefill the joining rows together and take each one's first token. A row starts from the
        longest prefix of its prompt that any sequence holds (its own idle cache, a running row's,
        sequence 0's: shared, not computed); a row whose prompt shares more with another joining
        row's (the same system prompt, sent by several clients at once) takes it from that row once
        it is computed, in a second call. A row that reports its prompt's log-probabilities
        computes the whole prompt."""
        cached, sequences = self.sequences.cached, self.sequences
        first: list[tuple[int, list[int], bool]] = []
        later: list[tuple[int, Row, int, int]] = []  # (seq, row, the joining row's seq to share, length)
        planned: list[tuple[int, list[int]]] = []  # joining rows in the first call: (seq, prompt)
        for seq, row in joining:
            if row.echo and not row.ids:
                sequences.drop(seq)
                first.append((seq, row.prompt, True))
                continue
            tokens = row.prompt + row.ids  # a pre-empted row goes on after the tokens it has
            prompt = tokens[:-1]  # the last token is computed, for its logits
            source, length = max(
                ((other, shared_prefix(cached[other], prompt)) for other in range(sequences.count)),
                key=lambda x: (x[1], x[0] == seq),
            )
            mate, together = max(
                ((other, shared_prefix(p, prompt)) for other, p in planned), key=lambda x: x[1], default=(0, 0)
            )
            if together >= length + SHARE_WORTH:
                later.append((seq, row, mate, together))
                continue
            sequences.share(source, seq, length)
            first.append((seq, tokens[length:], False))
            planned.append((seq, tokens))
        logits = dict(zip([seq for seq, _, _ in first], COMPUTE.call(sequences.decode, first)))
        if later:
            for seq, _, mate, together in later:
                sequences.share(mate, seq, together)
            second = [(seq, (row.prompt + row.ids)[together:], False) for seq, row, _, together in later]
            logits.update(zip([seq for seq, _, _ in second], COMPUTE.call(sequences.decode, second)))
        last = []
        for seq, row in joining:
            rows = logits[seq]
            if row.echo and not row.ids:
                row.job.emit(
                    row.index, "prompt", _prompt_scores(torch.from_numpy(rows[:-1]), row.prompt, row.logprobs or 0)
                )
                rows = rows[-1]
            last.append(rows)
        self._advance(joining, last, active)

    def _advance(self, rows: list[tuple[int, Row]], logits: list, active: dict[int, tuple[Row, int]]) -> None:
        """Each row takes its next token; finished rows give their sequence back (its cache stays,
        for a later prompt that starts the same way)."""
        for (seq, row), row_logits in zip(rows, logits):
            plain = row.temperature == 0 and row.logprobs is None and not row.adjusts
            if plain:  # NumPy: a PyTorch op per token slows llama.cpp (see sample_next)
                token = int(row_logits.argmax())
            else:
                token = int(self._choose(torch.from_numpy(row_logits)[None], [row])[0])
            done = self._add(row, token)
            if not done and len(self.sequences.cached[seq]) >= self.gen.context:
                done = self._finish(row, "length", row.text)
            if done:
                active.pop(seq, None)
                self.free.append(seq)
            else:
                active[seq] = (row, token)
