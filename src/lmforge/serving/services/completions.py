"""The completion services: check a request's sampling limits against the model, hand its rows to
the generation engine, and answer as one response or as server-sent events.

A completion's prompt is a string, a list of strings, a list of token ids or a list of those.
``logprobs`` (completions: an int, the alternatives per token; chat: ``logprobs`` + ``top_logprobs``)
report the model's log-probabilities in OpenAI's two shapes; ``echo`` puts the prompt before the
completion with its log-probabilities (``max_tokens: 0`` scores a prompt, as evaluation harnesses
do); ``best_of`` generates that many rows per prompt and returns the ``n`` with the highest mean
log-probability per token; ``suffix`` fills in the middle on models with FIM tokens. An OpenAI
parameter the server does not implement is refused naming it (``protocol.UNSUPPORTED``).

Streaming follows OpenAI: ``data: {chunk}`` events (chat: a first delta with the role, then content
deltas, then one with ``finish_reason``), an optional usage chunk (``stream_options.include_usage``)
and ``data: [DONE]``. A client that goes away cancels its rows, which leave the running batch at the
next step.
"""

import asyncio
import functools
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from jinja2 import TemplateError

from lmforge.masking.mask import Masker
from lmforge.masking.stream import StreamMasker
from lmforge.serving import protocol as p
from lmforge.serving.batching import QueueFull
from lmforge.serving.engine import Job, Row, Scored
from lmforge.serving.errors import Busy, InvalidRequest
from lmforge.serving.metrics import Metrics
from lmforge.serving.services.inputs import texts_of
from lmforge.serving.services.served_models import AdapterModel, TextGenerator
from lmforge.serving.services.token_text import TokenText
from lmforge.serving.settings import ServeSettings
from lmforge.serving.structured import GrammarError, json_schema_grammar, lark_grammar
from lmforge.serving.tools import could_be_call, forced_lark, parse_calls, with_tools


def _stops(value, limit: int) -> list[str]:
    stops = [value] if isinstance(value, str) else list(value or [])
    if len(stops) > limit:
        raise InvalidRequest(f"'stop' has {len(stops)} strings; the limit is {limit}", param="stop")
    return [s for s in stops if s]


def _max_tokens(settings: ServeSettings, model: TextGenerator, body, prompt_len: int, chat: bool) -> int:
    asked = (body.max_completion_tokens or body.max_tokens) if chat else body.max_tokens
    output = model.output_context  # an encoder-decoder: the reply's own limit
    room = output if output else (model.context - prompt_len if model.context else None)
    if (room is not None and room < 1) or (output and model.context and prompt_len > model.context):
        raise InvalidRequest(
            f"the prompt is {prompt_len} tokens; this model's {'input limit' if output else 'context'} is {model.context}",
            param="messages" if chat else "prompt",
            code="context_length_exceeded",
        )
    if asked is None:
        asked = min(settings.default_max_tokens, room) if room else settings.default_max_tokens
    if asked == 0 and not getattr(body, "echo", False):
        raise InvalidRequest("'max_tokens' is 0: that asks for nothing unless 'echo' is true", param="max_tokens")
    if room is not None and asked > room:
        raise InvalidRequest(
            f"'max_tokens' is {asked}: over this model's output limit of {output} tokens"
            if output
            else f"the prompt is {prompt_len} tokens and 'max_tokens' is {asked}: over this model's "
            f"context of {model.context} tokens",
            param="max_tokens",
            code="context_length_exceeded",
        )
    return asked


def _logit_bias(body, vocab: int) -> dict[int, float] | None:
    bias = {}
    for key, value in (body.logit_bias or {}).items():
        if not key.isdigit() or int(key) >= vocab:
            raise InvalidRequest(
                f"'logit_bias': {key!r} is not a token id of this model (0 to {vocab - 1})", param="logit_bias"
            )
        bias[int(key)] = float(value)
    return bias or None


def _per_prompt(body, n: int, settings: ServeSettings) -> int:
    """Rows generated per prompt: ``n``, or ``best_of`` (completions)."""
    best_of = getattr(body, "best_of", None)
    if best_of is None:
        return n
    if best_of < n:
        raise InvalidRequest(f"'best_of' is {best_of}; it must be at least 'n' ({n})", param="best_of")
    if best_of > n and body.stream:
        raise InvalidRequest("'best_of' above 'n' cannot stream: the best rows are known at the end", param="best_of")
    if best_of > settings.max_n:
        raise InvalidRequest(f"'best_of' is {best_of}; the limit is {settings.max_n}", param="best_of")
    return best_of


def _grammar(model: TextGenerator, body) -> str | None:
    """The grammar a chat reply must follow (``response_format``), compiled once to check it."""
    form = getattr(body, "response_format", None)
    if form is None or form.type == "text":
        return None
    if model.grammars is None:
        raise InvalidRequest("'response_format' is not available for an encoder-decoder model", param="response_format")
    if form.type == "json_object":
        schema: dict = {"type": "object"}
    elif form.json_schema is None:
        raise InvalidRequest("'response_format': json_schema needs its 'json_schema'", param="response_format")
    else:
        schema = form.json_schema.schema_ if form.json_schema.schema_ is not None else {}
    try:
        grammar = json_schema_grammar(schema)
        model.grammars.compile(grammar)
    except GrammarError as exc:
        raise InvalidRequest(
            f"'response_format': the schema does not compile: {exc}", param="response_format"
        ) from None
    return grammar


def _rows(
    settings: ServeSettings,
    model: TextGenerator,
    body,
    prompts: list[list[int]],
    chat: bool,
    top: int | None,
    grammar: str | None = None,
) -> list[Row]:
    n = 1 if body.n is None else body.n
    if n > settings.max_n:
        raise InvalidRequest(f"'n' is {n}; the limit is {settings.max_n}", param="n")
    per_prompt = _per_prompt(body, n, settings)
    if per_prompt > n and top is None:
        top = 0  # best_of ranks the rows by their tokens' log-probabilities
    stops = _stops(body.stop, settings.max_stop)
    temperature = 1.0 if body.temperature is None else body.temperature
    top_p = 1.0 if body.top_p is None else body.top_p
    bias = _logit_bias(body, model.vocab)
    echo = bool(getattr(body, "echo", False))
    grammar = grammar or _grammar(model, body)
    if model.generator.seq2seq:
        asked = [name for name, on in (("logprobs", top is not None), ("echo", echo)) if on]
        asked += [name for name in ("presence_penalty", "frequency_penalty", "logit_bias") if getattr(body, name)]
        if asked:
            raise InvalidRequest(f"'{asked[0]}' is not available for an encoder-decoder model", param=asked[0])
    rows = []
    for i, ids in enumerate(prompts):
        if not ids:
            raise InvalidRequest(f"prompt {i} is empty", param="prompt")
        max_new = _max_tokens(settings, model, body, len(ids), chat)
        for c in range(per_prompt):
            index = i * per_prompt + c
            seed = None if body.seed is None else body.seed + index
            row = Row(ids, max_new, temperature, top_p, stops, seed, index, top, echo)
            row.presence, row.frequency, row.bias = body.presence_penalty or 0.0, body.frequency_penalty or 0.0, bias
            if grammar is not None and model.grammars is not None:
                row.constraint = model.grammars.compile(grammar)
            row.adapter = model.peft_name if isinstance(model, AdapterModel) else None
            rows.append(row)
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
    names: TokenText
    n: int = 1  # choices returned per prompt
    per_prompt: int = 1  # rows generated per prompt (best_of)
    logprobs: int | None = None  # alternatives per token shown; None: no logprobs in the answer
    prompts: list[str] | None = None  # completions: the prompts' texts
    echo: bool = False  # put each prompt before its completions
    tool_names: set[str] | None = None  # chat: functions whose calls are parsed from the replies
    created: int = field(default_factory=lambda: int(time.time()))
    ident: str = field(init=False)
    completion_tokens: int = 0  # of the rows done so far: what the request has used (key quotas, audit)
    masker: Masker | None = None  # serve --mask-responses: personal data in the answers masked

    def __post_init__(self):
        self.ident = ("chatcmpl-" if self.chat else "cmpl-") + uuid.uuid4().hex

    def prompt_text(self, row: int) -> str:
        return self.prompts[row // self.per_prompt] if self.prompts is not None else ""

    def echo_text(self, row: int) -> str:
        return self.prompt_text(row) if self.echo else ""


def _refuse_unsupported(body) -> None:
    name = body.unsupported()
    if name is not None:
        raise InvalidRequest(f"'{name}' is not supported by this server", param=name)


def _prompt_ids(model: TextGenerator, body: p.CompletionRequest, settings: ServeSettings) -> list[list[int]]:
    """The prompts as token ids: strings encoded as written (no chat template), ids as given."""
    prompt = body.prompt
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], int):
        prompt = [prompt]  # one prompt of token ids
    items = texts_of(prompt, settings, "prompt")  # type: ignore[arg-type]  # a list of either kind
    ids = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            ids.append(
                _infill(model, item, body.suffix) if body.suffix is not None else model.generator.encode(item, raw=True)
            )
            continue
        if body.suffix is not None:
            raise InvalidRequest("'suffix' needs the prompt as text", param="suffix")
        if max(item) >= model.vocab:
            raise InvalidRequest(f"prompt {i}: token id {max(item)} is not in this model's vocabulary", param="prompt")
        ids.append(list(item))
    return ids


FIM = ("<fim_prefix>", "<fim_suffix>", "<fim_middle>")


def _infill(model: TextGenerator, prefix: str, suffix: str) -> list[int]:
    """A fill-in-the-middle prompt (prefix-suffix-middle) for models whose tokenizer has FIM tokens."""
    tokenizer = model.generator.tokenizer
    ids = [tokenizer.convert_tokens_to_ids(token) for token in FIM]
    if model.generator.seq2seq or any(i is None or i == tokenizer.unk_token_id for i in ids):
        raise InvalidRequest(
            f"'suffix': {model.name} has no fill-in-the-middle tokens ({', '.join(FIM)})", param="suffix"
        )
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    return [ids[0], *encode(prefix), ids[1], *encode(suffix), ids[2]]


def start_completion(
    model: TextGenerator,
    body: p.CompletionRequest,
    settings: ServeSettings,
    metrics: Metrics,
    loop: asyncio.AbstractEventLoop | None = None,
) -> Running:
    """``/v1/completions``: each prompt as written (no chat template). Tokenizing is CPU work: the
    route calls this on a worker thread, giving the event ``loop`` the answer's events go to."""
    _refuse_unsupported(body)
    if body.echo and body.suffix is not None:
        raise InvalidRequest("'echo' and 'suffix' cannot be used together", param="echo")
    prompts = _prompt_ids(model, body, settings)
    run = _start(model, body, prompts, False, settings, metrics, body.logprobs, loop=loop)
    run.echo = bool(body.echo)
    if isinstance(body.prompt, str):
        run.prompts = [body.prompt]
    elif isinstance(body.prompt[0], str):
        run.prompts = list(body.prompt)  # type: ignore[arg-type]  # a list of strings
    else:
        run.prompts = [model.generator.tokenizer.decode(ids) for ids in prompts]
    return run


def _tool_choice(body: p.ChatRequest) -> tuple[list[dict], str | None, list[dict]]:
    """(the tools offered, how they may be called, the tools a forced call may use): ``auto``,
    ``required``, or a function's name forced; None: calls are not parsed."""
    offered = [tool.model_dump(exclude_none=True) for tool in body.tools or []]
    choice = body.tool_choice if body.tool_choice is not None else ("auto" if offered else "none")
    if choice != "none" and not offered:
        raise InvalidRequest("'tool_choice' needs 'tools'", param="tool_choice")
    names = [tool["function"]["name"] for tool in offered]
    if len(set(names)) < len(names):
        raise InvalidRequest("'tools': two functions have the same name", param="tools")
    if isinstance(choice, p.NamedToolChoice):
        name = choice.function.name
        if name not in names:
            raise InvalidRequest(f"'tool_choice': function '{name}' is not in 'tools'", param="tool_choice")
        return offered, name, [tool for tool in offered if tool["function"]["name"] == name]
    return offered, None if choice == "none" else choice, offered if choice == "required" else []


def _forced_grammar(model: TextGenerator, body: p.ChatRequest, forced: list[dict]) -> str:
    if body.response_format is not None and body.response_format.type != "text":
        raise InvalidRequest("'response_format' cannot be used with a forced tool call", param="response_format")
    if model.grammars is None:
        raise InvalidRequest("'tool_choice' is not available for an encoder-decoder model", param="tool_choice")
    try:
        grammar = lark_grammar(forced_lark(forced, body.parallel_tool_calls is not False))
        model.grammars.compile(grammar)
    except GrammarError as exc:
        raise InvalidRequest(f"'tools': a parameter schema does not compile: {exc}", param="tools") from None
    return grammar


def start_chat(
    model: TextGenerator,
    body: p.ChatRequest,
    settings: ServeSettings,
    metrics: Metrics,
    loop: asyncio.AbstractEventLoop | None = None,
) -> Running:
    """``/v1/chat/completions``: the messages (and tools) through the model's chat template (on a
    worker thread too, as ``start_completion``)."""
    _refuse_unsupported(body)
    if body.top_logprobs is not None and not body.logprobs:
        raise InvalidRequest("'top_logprobs' needs 'logprobs': true", param="top_logprobs")
    top = (body.top_logprobs or 0) if body.logprobs else None
    offered, choice, forced = _tool_choice(body)
    grammar = _forced_grammar(model, body, forced) if forced else None
    messages = [m.for_template() for m in body.messages]
    generator = model.generator
    if offered and not generator.template_takes_tools:
        messages = with_tools(messages, offered)
    try:
        prompt = generator.encode(messages, tools=offered if generator.template_takes_tools else None)
    except (TemplateError, ValueError, TypeError) as exc:  # the chat template refuses the conversation
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InvalidRequest(
            f"'messages': this model's chat template refuses them ({reason})", param="messages"
        ) from None
    run = _start(model, body, [prompt], True, settings, metrics, top, grammar, loop=loop)
    if choice is not None:
        run.tool_names = {tool["function"]["name"] for tool in offered}
    return run


def _start(
    model: TextGenerator,
    body,
    prompts: list[list[int]],
    chat: bool,
    settings: ServeSettings,
    metrics: Metrics,
    top: int | None,
    grammar: str | None = None,
    loop: asyncio.AbstractEventLoop | None = None,
) -> Running:
    if settings.mask_responses and top is not None:
        raise InvalidRequest(
            "'logprobs' cannot be returned by this server: it masks personal data in answers, and the tokens "
            "would show it",
            param="logprobs",
        )
    rows = _rows(settings, model, body, prompts, chat, top, grammar)
    loop = loop or asyncio.get_running_loop()
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
    n = 1 if body.n is None else body.n
    return Running(
        job,
        events,
        model.name,
        chat,
        prompt_tokens,
        include_usage,
        metrics,
        model.names,
        n,
        len(rows) // len(prompts),
        top,
        masker=response_masker(tuple(settings.mask_responses)),
    )


@functools.lru_cache(maxsize=8)
def response_masker(types: tuple[str, ...]) -> Masker | None:
    """The masker of ``serve --mask-responses`` (rule types only), None when it is off."""
    return Masker(types) if types else None


class _Scores:
    """A choice's log-probabilities in OpenAI's shapes: completions' parallel lists (offsets count
    from the start of the prompt, as OpenAI's do) and chat's per-token entries."""

    def __init__(self, run: Running, row: int):
        self.run, self.names = run, run.names
        self.offset = 0 if run.echo else len(run.prompt_text(row))

    def completion(self, scored: list[Scored], first: int | None = None) -> dict:
        """``first``: the prompt's first token, which has no log-probability (echo)."""
        out: dict = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        entries: list = ([(first, None, None)] if first is not None else []) + list(scored)
        for token, logprob, top in entries:
            text = self.names.text(token)
            out["tokens"].append(text)
            out["token_logprobs"].append(logprob)
            if top is None:
                out["top_logprobs"].append(None)
            else:
                alternatives = {self.names.text(t): v for t, v in top}
                alternatives.setdefault(text, logprob)
                out["top_logprobs"].append(alternatives)
            out["text_offset"].append(self.offset)
            self.offset += len(text)
        return out

    def chat(self, scored: list[Scored]) -> dict:
        def entry(token, logprob):
            return {"token": self.names.text(token), "logprob": logprob, "bytes": self.names.bytes(token)}

        return {
            "content": [{**entry(s.token, s.logprob), "top_logprobs": [entry(t, v) for t, v in s.top]} for s in scored],
            "refusal": None,
        }


def _best(run: Running, scored: list[list[Scored]]) -> list[int]:
    """The rows to answer with, in order: all of them, or (``best_of``) each prompt's ``n`` rows
    with the highest mean log-probability per token."""
    if run.per_prompt == run.n:
        return list(range(len(scored)))
    chosen = []
    for start in range(0, len(scored), run.per_prompt):
        group = range(start, start + run.per_prompt)
        mean = {r: sum(s.logprob for s in scored[r]) / max(1, len(scored[r])) for r in group}
        chosen += sorted(group, key=lambda r: -mean[r])[: run.n]
    return chosen


async def collect(run: Running) -> p.ChatResponse | p.CompletionResponse:
    """The whole answer, once every row has finished."""
    count = len(run.job.rows)
    texts, finishes, tokens = [""] * count, [None] * count, 0
    scored: list[list[Scored]] = [[] for _ in range(count)]
    prompt_scored: list[list[Scored]] = [[] for _ in range(count)]
    try:
        while any(f is None for f in finishes):
            row, kind, value = await run.events.get()
            if kind == "text":
                texts[row] += value
            elif kind == "token":
                scored[row].append(value)
            elif kind == "prompt":
                prompt_scored[row] = value
            elif kind == "done":
                finishes[row] = value[0]
                tokens += value[1]
                run.completion_tokens = tokens
            else:
                raise RuntimeError(f"generation failed: {value}")
    finally:
        run.job.cancelled.set()  # a request cancelled while waiting frees its rows
    run.metrics.tokens_out.labels(run.model).inc(tokens)
    if run.masker is not None:
        texts = run.masker.mask(texts)[0]
    prompt_tokens = run.prompt_tokens
    usage = p.Usage(prompt_tokens=prompt_tokens, completion_tokens=tokens, total_tokens=prompt_tokens + tokens)
    order = _best(run, scored)
    if run.chat:
        chat_choices = []
        for i, r in enumerate(order):
            content, calls = parse_calls(texts[r], run.tool_names) if run.tool_names else (texts[r], [])
            message = p.AssistantMessage(
                content=content, tool_calls=[p.ToolCall.model_validate(c.as_dict()) for c in calls] or None
            )
            chat_choices.append(
                p.ChatChoice(
                    index=i,
                    message=message,
                    finish_reason="tool_calls" if calls else finishes[r],
                    logprobs=None if run.logprobs is None else _Scores(run, r).chat(scored[r]),
                )
            )
        return p.ChatResponse(id=run.ident, created=run.created, model=run.model, usage=usage, choices=chat_choices)
    choices = []
    for i, r in enumerate(order):
        logprobs = None
        if run.logprobs is not None:
            first = run.job.rows[r].prompt[0] if run.echo else None
            logprobs = _Scores(run, r).completion(prompt_scored[r] + scored[r], first)
        choices.append(
            p.CompletionChoice(index=i, text=run.echo_text(r) + texts[r], finish_reason=finishes[r], logprobs=logprobs)
        )
    return p.CompletionResponse(id=run.ident, created=run.created, model=run.model, usage=usage, choices=choices)


async def stream(run: Running) -> AsyncIterator[str]:
    """The answer as server-sent events, a piece at a time as the rows decode; log-probabilities
    ride with the text their tokens added."""
    chat, job = run.chat, run.job
    kind_name = "chat.completion.chunk" if chat else "text_completion"
    scores = [_Scores(run, r) for r in range(len(job.rows))]
    pending: list[list[Scored]] = [[] for _ in job.rows]

    def chunk(choices, usage=None):
        body = {"id": run.ident, "object": kind_name, "created": run.created, "model": run.model, "choices": choices}
        if usage is not None:
            body["usage"] = usage
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    def logprobs_of(index, first=None):
        if run.logprobs is None:
            return None
        taken, pending[index] = pending[index], []
        return scores[index].chat(taken) if chat else scores[index].completion(taken, first)

    def choice(index, text=None, finish=None, role=False, first=None):
        logprobs = logprobs_of(index, first)
        if chat:
            delta = {"role": "assistant", "content": ""} if role else ({"content": text} if text is not None else {})
            return {"index": index, "delta": delta, "finish_reason": finish, "logprobs": logprobs}
        return {"index": index, "text": text or "", "finish_reason": finish, "logprobs": logprobs}

    # Replies that may be tool calls are held back while they may be (tools.could_be_call), then
    # sent as calls or as text once the row is done (or as soon as they cannot be calls).
    held: list[str | None] = [("" if run.tool_names else None) for _ in job.rows]
    # serve --mask-responses: each row's text held back while a span may still be growing (masking/stream.py)
    masks = [StreamMasker(run.masker) for _ in job.rows] if run.masker is not None else None

    def calls_chunk(index: int, text: str) -> str | None:
        content, calls = parse_calls(text, run.tool_names or set())
        if not calls:
            return None
        delta: dict = {"tool_calls": [{"index": k, **c.as_dict()} for k, c in enumerate(calls)]}
        if content:
            delta["content"] = content
        return chunk([{"index": index, "delta": delta, "finish_reason": "tool_calls", "logprobs": logprobs_of(index)}])

    left, tokens = len(job.rows), 0
    try:
        if chat:
            yield chunk([choice(i, role=True) for i in range(len(job.rows))])
        while left:
            row, kind, value = await run.events.get()
            if kind == "token":
                pending[row].append(value)
            elif kind == "prompt":
                pending[row] = list(value)
                yield chunk([choice(row, run.echo_text(row), first=job.rows[row].prompt[0])])
            elif kind == "text":
                if masks is not None:
                    value = masks[row].feed(value)
                    if not value:
                        continue
                so_far = held[row]
                if so_far is None:
                    yield chunk([choice(row, value)])
                elif could_be_call(so_far + value):
                    held[row] = so_far + value
                else:
                    held[row] = None
                    yield chunk([choice(row, so_far + value)])
            elif kind == "done":
                left -= 1
                tokens += value[1]
                run.completion_tokens = tokens
                rest = masks[row].flush() if masks is not None else ""
                if rest and held[row] is None:
                    yield chunk([choice(row, rest)])
                elif rest:
                    held[row] = (held[row] or "") + rest
                so_far = held[row]
                calls = calls_chunk(row, so_far) if so_far else None
                if calls is not None:
                    yield calls
                    continue
                if so_far:
                    yield chunk([choice(row, so_far)])
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
