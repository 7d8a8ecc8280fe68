"""The completion services: check a request's sampling limits against the model, hand its rows to
the generation engine, and answer as one response or as server-sent events.

Streaming follows OpenAI: ``data: {chunk}`` events (chat: a first delta with the role, then content
deltas, then one with ``finish_reason``), an optional usage chunk (``stream_options.include_usage``)
and ``data: [DONE]``. A client that goes away cancels its rows, which leave the running batch at the
next step.
"""

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from lmforge.serving import protocol as p
from lmforge.serving.batching import QueueFull
from lmforge.serving.engine import Job, Row
from lmforge.serving.errors import Busy, InvalidRequest
from lmforge.serving.metrics import Metrics
from lmforge.serving.services.inputs import texts_of
from lmforge.serving.services.served_models import TextGenerator
from lmforge.serving.settings import ServeSettings


def _stops(value, limit: int) -> list[str]:
    stops = [value] if isinstance(value, str) else list(value or [])
    if len(stops) > limit:
        raise InvalidRequest(f"'stop' has {len(stops)} strings; the limit is {limit}", param="stop")
    return [s for s in stops if s]


def _max_tokens(settings: ServeSettings, model: TextGenerator, body, prompt_len: int, chat: bool) -> int:
    asked = (body.max_completion_tokens or body.max_tokens) if chat else body.max_tokens
    room = model.context - prompt_len if model.context else None
    if room is not None and room < 1:
        raise InvalidRequest(
            f"the prompt is {prompt_len} tokens; this model's context is {model.context}",
            param="messages" if chat else "prompt",
            code="context_length_exceeded",
        )
    if asked is None:
        asked = min(settings.default_max_tokens, room) if room else settings.default_max_tokens
    if room is not None and asked > room:
        raise InvalidRequest(
            f"the prompt is {prompt_len} tokens and 'max_tokens' is {asked}: over this model's "
            f"context of {model.context} tokens",
            param="max_tokens",
            code="context_length_exceeded",
        )
    return asked


def _rows(settings: ServeSettings, model: TextGenerator, body, prompts: list[list[int]], chat: bool) -> list[Row]:
    if body.n > settings.max_n:
        raise InvalidRequest(f"'n' is {body.n}; the limit is {settings.max_n}", param="n")
    stops = _stops(body.stop, settings.max_stop)
    rows = []
    for i, ids in enumerate(prompts):
        if not ids:
            raise InvalidRequest(f"prompt {i} is empty", param="prompt")
        max_new = _max_tokens(settings, model, body, len(ids), chat)
        for c in range(body.n):
            index = i * body.n + c
            seed = None if body.seed is None else body.seed + index
            rows.append(Row(ids, max_new, body.temperature, body.top_p, stops, seed, index))
    return rows


@dataclass
class Running:
    """A request's rows in the engine, and the events they send back."""

    job: Job
    events: asyncio.Queue
    model: str
    chat: bool
    prompt_tokens: int
    include_usage: bool
    metrics: Metrics
    created: int = field(default_factory=lambda: int(time.time()))
    ident: str = field(init=False)

    def __post_init__(self):
        self.ident = ("chatcmpl-" if self.chat else "cmpl-") + uuid.uuid4().hex


def start_completion(
    model: TextGenerator, body: p.CompletionRequest, settings: ServeSettings, metrics: Metrics
) -> Running:
    """``/v1/completions``: each prompt as written (no chat template)."""
    prompts = texts_of(body.prompt, settings, "prompt")
    return _start(model, body, [model.generator.encode(t, raw=True) for t in prompts], False, settings, metrics)


def start_chat(model: TextGenerator, body: p.ChatRequest, settings: ServeSettings, metrics: Metrics) -> Running:
    """``/v1/chat/completions``: the messages through the model's chat template."""
    messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in body.messages]
    return _start(model, body, [model.generator.encode(messages)], True, settings, metrics)


def _start(
    model: TextGenerator, body, prompts: list[list[int]], chat: bool, settings: ServeSettings, metrics: Metrics
) -> Running:
    rows = _rows(settings, model, body, prompts, chat)
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()

    def emit(row, kind, value):
        try:
            loop.call_soon_threadsafe(events.put_nowait, (row, kind, value))
        except RuntimeError:  # the loop is gone (server stopped): nobody is listening
            pass

    job = Job(rows, emit)
    try:
        model.engine.submit(job)
    except QueueFull as exc:
        raise Busy(exc) from None
    prompt_tokens = sum(len(ids) for ids in prompts)
    metrics.tokens_in.labels(model.name).inc(prompt_tokens)
    include_usage = bool((body.stream_options or {}).get("include_usage"))
    return Running(job, events, model.name, chat, prompt_tokens, include_usage, metrics)


async def collect(run: Running) -> p.ChatResponse | p.CompletionResponse:
    """The whole answer, once every row has finished."""
    count = len(run.job.rows)
    texts, finishes, tokens = [""] * count, [None] * count, 0
    try:
        while any(f is None for f in finishes):
            row, kind, value = await run.events.get()
            if kind == "text":
                texts[row] += value
            elif kind == "done":
                finishes[row] = value[0]
                tokens += value[1]
            else:
                raise RuntimeError(f"generation failed: {value}")
    finally:
        run.job.cancelled.set()  # a request cancelled while waiting frees its rows
    run.metrics.tokens_out.labels(run.model).inc(tokens)
    prompt_tokens = run.prompt_tokens
    usage = p.Usage(prompt_tokens=prompt_tokens, completion_tokens=tokens, total_tokens=prompt_tokens + tokens)
    if run.chat:
        return p.ChatResponse(
            id=run.ident,
            created=run.created,
            model=run.model,
            usage=usage,
            choices=[
                p.ChatChoice(index=i, message=p.AssistantMessage(content=t), finish_reason=f)
                for i, (t, f) in enumerate(zip(texts, finishes))
            ],
        )
    return p.CompletionResponse(
        id=run.ident,
        created=run.created,
        model=run.model,
        usage=usage,
        choices=[p.CompletionChoice(index=i, text=t, finish_reason=f) for i, (t, f) in enumerate(zip(texts, finishes))],
    )


async def stream(run: Running) -> AsyncIterator[str]:
    """The answer as server-sent events, a piece at a time as the rows decode."""
    chat, job = run.chat, run.job
    kind_name = "chat.completion.chunk" if chat else "text_completion"

    def chunk(choices, usage=None):
        body = {"id": run.ident, "object": kind_name, "created": run.created, "model": run.model, "choices": choices}
        if usage is not None:
            body["usage"] = usage
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    def choice(index, text=None, finish=None, role=False):
        if chat:
            delta = {"role": "assistant", "content": ""} if role else ({"content": text} if text is not None else {})
            return {"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}
        return {"index": index, "text": text or "", "finish_reason": finish, "logprobs": None}

    left, tokens = len(job.rows), 0
    try:
        if chat:
            yield chunk([choice(i, role=True) for i in range(len(job.rows))])
        while left:
            row, kind, value = await run.events.get()
            if kind == "text":
                yield chunk([choice(row, value)])
            elif kind == "done":
                left -= 1
                tokens += value[1]
                yield chunk([choice(row, finish=value[0])])
            else:
                yield f"data: {json.dumps({'error': {'message': 'generation failed', 'type': 'server_error'}})}\n\n"
                return
        run.metrics.tokens_out.labels(run.model).inc(tokens)
        if run.include_usage:
            yield chunk(
                [],
                {
                    "prompt_tokens": run.prompt_tokens,
                    "completion_tokens": tokens,
                    "total_tokens": run.prompt_tokens + tokens,
                },
            )
        yield "data: [DONE]\n\n"
    finally:
        job.cancelled.set()
