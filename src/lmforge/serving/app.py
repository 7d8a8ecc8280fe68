"""``create_app(state)``: the FastAPI app over a ``ServerState``, with thin routes that parse the
request (``protocol``), ask the served model (``services``) and shape the answer.

Every refusal is an OpenAI-style error body with a 4xx status: validation errors and malformed
JSON are 400, an unknown model 404, an over-limit request 413 (or 400 for sampling parameters, as
OpenAI answers them), a full queue 429 with ``Retry-After``, and a model still loading or a server
draining 503.
"""

import asyncio
import threading

from lmforge._optional import require
from lmforge.serving import protocol as p
from lmforge.serving.batching import QueueFull
from lmforge.serving.compute import COMPUTE
from lmforge.serving.guard import Guard
from lmforge.serving.metrics import Metrics
from lmforge.serving.services import ApiError, ServedModel, _check_lengths, _texts, embeddings_payload
from lmforge.serving.settings import ServeSettings

ERRORS = {status: {"model": p.ErrorResponse} for status in (400, 401, 404, 413, 415, 429, 503)}


class ServerState:
    """What the routes share: settings, models, metrics, and whether the server is ready or draining."""

    def __init__(self, settings: ServeSettings, models: dict[str, ServedModel]):
        self.settings, self.models = settings, models
        self.metrics = Metrics()
        self.ready = False
        self.failed: str | None = None
        self.draining = False
        self.in_flight = 0
        self.known_routes: set[str] = set()

    def load(self) -> None:
        """Load every model (slow: run at start-up, in a thread, while /health says 'loading')."""
        from lmforge.runtime import set_threads

        try:
            COMPUTE.call(set_threads, self.settings.threads)
            for model in self.models.values():
                COMPUTE.call(model.load, self.metrics)
            self.ready = True
        except Exception as exc:  # reported by /health and the server log; the runner exits
            self.failed = f"{type(exc).__name__}: {exc}"
            raise

    def load_in_background(self, on_failure=None) -> threading.Thread:
        def target():
            try:
                self.load()
            except Exception:
                if on_failure:
                    on_failure(self.failed)

        thread = threading.Thread(target=target, name="load-models", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        for model in self.models.values():
            model.close()

    def pick(self, name: str | None, route: str, scope: dict) -> ServedModel:
        if name is None:
            serving = [m for m in self.models.values() if route in m.routes]
            if len(serving) != 1:
                raise ApiError(
                    400,
                    "'model' is required: "
                    + (
                        f"{len(serving)} models serve {route} ({', '.join(m.name for m in serving)})"
                        if serving
                        else f"no model serves {route}"
                    ),
                    param="model",
                )
            model = serving[0]
        else:
            model = self.models.get(name)
            if model is None:
                raise ApiError(
                    404,
                    f"model '{name}' is not served here (served: {', '.join(self.models)})",
                    param="model",
                    code="model_not_found",
                )
        scope["state"]["model"] = model.name
        if not self.ready:
            raise ApiError(503, "the models are still loading", "unavailable")
        if route not in model.routes:
            raise ApiError(
                400,
                f"model '{model.name}' ({model.kind}) does not serve {route}; it serves "
                f"{', '.join(model.routes) or 'nothing'}",
                param="model",
            )
        return model


_BRANCHES = {"str", "int", "float", "bool", "list", "dict", "none"}


def _field(loc) -> str:
    """A validation error's field path, without the union branch names pydantic puts in it."""
    parts = [str(x) for x in loc if x != "body" and not (isinstance(x, str) and ("[" in x or x in _BRANCHES))]
    return ".".join(parts) or "body"


def _entity_bias(model) -> float | None:
    """The entity bias a served tagger decodes with; None for other models."""
    if model.kind != "token_classification":
        return None
    predictor = getattr(model, "predictor", None)
    return float(predictor.task.entity_bias) if predictor is not None else model.settings.entity_bias


async def _run(batcher, inputs: list) -> list:
    try:
        future = batcher.submit(inputs)
    except QueueFull as exc:
        raise ApiError(
            429,
            f"the server is busy: {exc}; retry shortly",
            "rate_limit_error",
            code="queue_full",
            headers={"Retry-After": "1"},
        ) from None
    return await asyncio.wrap_future(future)


def create_app(state: ServerState):
    fastapi = require("fastapi", "lmforge[serve]", "lmforge serve")
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
    from starlette.exceptions import HTTPException

    app = fastapi.FastAPI(
        title="lmforge",
        version="1",
        description="Task endpoints and an OpenAI-compatible API "
        "over models trained with lmforge. Every route but /health needs 'Authorization: Bearer KEY' "
        "when the server has a key.",
    )
    app.state.lmforge = state

    def error(status, message, kind="invalid_request_error", param=None, code=None, headers=None):
        body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
        return JSONResponse(body, status_code=status, headers=headers)

    @app.exception_handler(ApiError)
    async def api_error(request, exc: ApiError):
        return error(exc.status, exc.message, exc.kind, exc.param, exc.code, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc: RequestValidationError):
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return error(400, "the body is not valid JSON", code="invalid_json")
        where = _field(errors[0].get("loc", ())) if errors else "body"
        # a union ("a string or a list") fails once per branch: say all of them
        reasons = list(dict.fromkeys(e.get("msg", "invalid") for e in errors if _field(e.get("loc", ())) == where))
        return error(400, f"'{where}': {' or '.join(reasons)}", param=where)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return error(exc.status_code, str(exc.detail), kind, headers=getattr(exc, "headers", None))

    @app.get("/health", response_model=p.Health, responses={503: {"model": p.Health}})
    async def health():
        status = "draining" if state.draining else "failed" if state.failed else "ok" if state.ready else "loading"
        body = p.Health(status=status, models=list(state.models))
        return JSONResponse(body.model_dump(), status_code=200 if status == "ok" else 503)

    @app.get("/metrics", response_class=PlainTextResponse, responses={401: ERRORS[401]})
    async def metrics():
        data, content_type = state.metrics.render()
        return PlainTextResponse(data, media_type=content_type)

    @app.get("/v1/models", response_model=p.ModelList, responses={401: ERRORS[401]})
    async def models():
        return p.ModelList(
            data=[
                p.ModelCard(
                    id=m.name,
                    created=m.created,
                    task=m.kind,
                    routes=m.routes,
                    dtype=m.dtype,
                    entity_bias=_entity_bias(m),
                    combine=getattr(getattr(m, "predictor", None), "combine", None),
                )
                for m in state.models.values()
            ]
        )

    @app.post("/v1/classify", response_model=p.ClassifyResponse, responses=ERRORS)
    async def classify(body: p.ClassifyRequest, request: Request):
        model = state.pick(body.model, "/v1/classify", request.scope)
        texts = _texts(body.input, state.settings)
        counts = model.counts(texts)
        _check_lengths(counts, model.limit, body.truncate)
        rows = await _run(model.batcher, texts)
        used = sum(min(c, model.limit) for c in counts)
        state.metrics.tokens_in.labels(model.name).inc(used)
        return p.ClassifyResponse(
            model=model.name,
            usage=p.Usage(prompt_tokens=used, total_tokens=used),
            data=[
                p.Classification(index=i, label=r["label"], score=r["score"], top_k=r["top_k"][: body.top_k])
                for i, r in enumerate(rows)
            ],
        )

    @app.post("/v1/ner", response_model=p.NerResponse, responses=ERRORS)
    async def ner(body: p.NerRequest, request: Request):
        model = state.pick(body.model, "/v1/ner", request.scope)
        texts = _texts(body.input, state.settings)
        counts = model.counts(texts)
        _check_lengths(counts, model.ner_limit, None)
        rows = await _run(model.batcher, texts)
        state.metrics.tokens_in.labels(model.name).inc(sum(counts))
        data = [
            p.EntityList(
                index=i,
                entities=[
                    p.Entity(start=e["start"], end=e["end"], text=e["text"], label=e["label"], score=e["score"])
                    for e in r["entities"]
                ],
            )
            for i, r in enumerate(rows)
        ]
        return p.NerResponse(
            model=model.name, data=data, usage=p.Usage(prompt_tokens=sum(counts), total_tokens=sum(counts))
        )

    @app.post("/v1/embeddings", response_model=p.EmbeddingsResponse, responses=ERRORS)
    async def embeddings(body: p.EmbeddingsRequest, request: Request):
        model = state.pick(body.model, "/v1/embeddings", request.scope)
        texts = _texts(body.input, state.settings)
        counts = model.embedder.counts(texts)
        _check_lengths(counts, model.limit, body.truncate)
        vectors = await _run(model.embedder.batcher, texts)
        state.metrics.tokens_in.labels(model.name).inc(sum(counts))
        data = [
            p.Embedding(index=i, embedding=v)
            for i, v in enumerate(embeddings_payload(vectors, body.encoding_format, body.dimensions))
        ]
        return p.EmbeddingsResponse(
            model=model.name, data=data, usage=p.Usage(prompt_tokens=sum(counts), total_tokens=sum(counts))
        )

    @app.post("/v1/completions", response_model=p.CompletionResponse, responses=ERRORS)
    async def completions(body: p.CompletionRequest, request: Request):
        from lmforge.serving.generation import completion

        model = state.pick(body.model, "/v1/completions", request.scope)
        prompts = _texts(body.prompt, state.settings, "prompt")
        return await completion(
            state,
            model,
            body,
            [model.generator.encode(t, raw=True) for t in prompts],
            chat=False,
            request=request,
            json_response=JSONResponse,
            stream_response=StreamingResponse,
        )

    @app.post("/v1/chat/completions", response_model=p.ChatResponse, responses=ERRORS)
    async def chat(body: p.ChatRequest, request: Request):
        from lmforge.serving.generation import completion

        model = state.pick(body.model, "/v1/chat/completions", request.scope)
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in body.messages]
        return await completion(
            state,
            model,
            body,
            [model.generator.encode(messages)],
            chat=True,
            request=request,
            json_response=JSONResponse,
            stream_response=StreamingResponse,
        )

    state.known_routes = {route.path for route in app.routes}
    app.add_middleware(Guard, state=state)
    return app
