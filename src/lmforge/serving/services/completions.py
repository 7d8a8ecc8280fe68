"""The completion routes' service: checks a request's sampling limits against the model, hands its
rows to the generation engine, and answers as one JSON body or as server-sent events.

Streaming follows OpenAI: ``data: {chunk}`` events (chat: a first delta with the role, then content
deltas, then one with ``finish_reason``), an optional usage chunk (``stream_options.include_usage``)
and ``data: [DONE]``. A client that goes away cancels its rows, which leave the running batch at the
next step.
"""

import asyncio
import json
import time
import uuid

from lmforge.serving import protocol as p
from lmforge.serving.batching import QueueFull
from lmforge.serving.engine import Job, Row
from lmforge.serving.services import ApiError


def _stops(value, limit: int) -> list[str]:
    stops = [value] if isinstance(value, str) else list(value or [])
    if len(stops) > limit:
        raise ApiError(400, f"'stop' has {len(stops)} strings; the limit is {limit}", param="stop")
    return [s for s in stops if s]


def _max_tokens(state, model, body, prompt_len: int, chat: bool) -> int:
    asked = (body.max_completion_tokens or body.max_tokens) if chat else body.max_tokens
    room = model.context - prompt_len if model.context else None
    if room is not None and room < 1:
        raise ApiError(
            400,
            f"the prompt is {prompt_len} tokens; this model's context is {model.context}",
            param="messages" if chat else "prompt",
            code="context_length_exceeded",
        )
    if asked is None:
        asked = min(state.settings.default_max_tokens, room) if room else state.settings.default_max_tokens
    if room is not None and asked > room:
        raise ApiError(
            400,
            f"the prompt is {prompt_len} tokens and 'max_tokens' is {asked}: over this model's "
            f"context of {model.context} tokens",
            param="max_tokens",
            code="context_length_exceeded",
        )
    return asked


def _rows(state, model, body, prompts: list[list[int]], chat: bool) -> list[Row]:
    if body.n > state.settings.max_n:
        raise ApiError(400, f"'n' is {body.n}; the limit is {state.settings.max_n}", param="n")
    stops = _stops(body.stop, state.settings.max_stop)
    rows = []
    for i, ids in enumerate(prompts):
        if not ids:
            raise ApiError(400, f"prompt {i} is empty", param="prompt")
        max_new = _max_tokens(state, model, body, len(ids), chat)
        for c in range(body.n):
            index = i * body.n + c
            seed = None if body.seed is None else body.seed + index
            rows.append(Row(ids, max_new, body.temperature, body.top_p, stops, seed, index))
    return rows


async def completion(state, model, body, prompts, chat: bool, request, json_response, stream_response):
    rows = _rows(state, model, body, prompts, chat)
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
        raise ApiError(
            429,
            f"the server is busy: {exc}; retry shortly",
            "rate_limit_error",
            code="queue_full",
            headers={"Retry-After": "1"},
        ) from None
    prompt_tokens = sum(len(ids) for ids in prompts)
    state.metrics.tokens_in.labels(model.name).inc(prompt_tokens)
    ident = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
    created = int(time.time())
    if body.stream:
        include_usage = bool((body.stream_options or {}).get("include_usage"))
        return stream_response(
            _stream(state, model, job, events, ident, created, chat, prompt_tokens, include_usage),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )
    texts, finishes, tokens = [""] * len(rows), [None] * len(rows), 0
    try:
        while any(f is None for f in finishes):
            row, kind, value = await events.get()
            if kind == "text":
                texts[row] += value
            elif kind == "done":
                finishes[row] = value[0]
                tokens += value[1]
            else:
                raise RuntimeError(f"generation failed: {value}")
    finally:
        job.cancelled.set()  # a request cancelled while waiting frees its rows
    state.metrics.tokens_out.labels(model.name).inc(tokens)
    usage = p.Usage(prompt_tokens=prompt_tokens, completion_tokens=tokens, total_tokens=prompt_tokens + tokens)
    if chat:
        return p.ChatResponse(
            id=ident,
            created=created,
            model=model.name,
            usage=usage,
            choices=[
                p.ChatChoice(index=i, message=p.AssistantMessage(content=t), finish_reason=f)
                for i, (t, f) in enumerate(zip(texts, finishes))
            ],
        )
    return p.CompletionResponse(
        id=ident,
        created=created,
        model=model.name,
        usage=usage,
        choices=[p.CompletionChoice(index=i, text=t, finish_reason=f) for i, (t, f) in enumerate(zip(texts, finishes))],
    )


async def _stream(state, model, job, events, ident, created, chat, prompt_tokens, include_usage):
    kind_name = "chat.completion.chunk" if chat else "text_completion"

    def chunk(choices, usage=None):
        body = {"id": ident, "object": kind_name, "created": created, "model": model.name, "choices": choices}
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
            row, kind, value = await events.get()
            if kind == "text":
                yield chunk([choice(row, value)])
            elif kind == "done":
                left -= 1
                tokens += value[1]
                yield chunk([choice(row, finish=value[0])])
            else:
                yield f"data: {json.dumps({'error': {'message': 'generation failed', 'type': 'server_error'}})}\n\n"
                return
        state.metrics.tokens_out.labels(model.name).inc(tokens)
        if include_usage:
            yield chunk(
                [],
                {"prompt_tokens": prompt_tokens, "completion_tokens": tokens, "total_tokens": prompt_tokens + tokens},
            )
        yield "data: [DONE]\n\n"
    finally:
        job.cancelled.set()
