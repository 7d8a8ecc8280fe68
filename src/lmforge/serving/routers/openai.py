"""OpenAI-compatible routes: ``/v1/completions`` and ``/v1/chat/completions`` (one JSON body, or
server-sent events with ``"stream": true``), ``/v1/models`` and ``/v1/models/{id}``."""

import asyncio
import contextlib

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from lmforge.serving import protocol as p
from lmforge.serving.routers.dependencies import ERRORS, State, pick_model
from lmforge.serving.services import completions as service

router = APIRouter(tags=["openai"])


@router.get("/v1/models", response_model=p.ModelList, responses={401: ERRORS[401]})
async def models(state: State):
    return p.ModelList(data=[model.card() for model in state.models.values()])


@router.get(
    "/v1/models/{model_id}",
    response_model=p.ModelCard,
    responses={401: ERRORS[401], 404: ERRORS[404]},
    operation_id="getModel",  # the target of the adapter routes' OpenAPI links
)
async def model(model_id: str, state: State):
    return state.find(model_id, "/v1/models").card()


@router.post("/v1/completions", response_model=p.CompletionResponse, responses=ERRORS)
async def completions(body: p.CompletionRequest, request: Request, state: State):
    model = pick_model(request, state, body.model, "/v1/completions")
    loop = asyncio.get_running_loop()  # tokenizing (and compiling a grammar) off the event loop
    run = await asyncio.to_thread(service.start_completion, model, body, state.settings, state.metrics, loop)
    return await _answer(run, body.stream, request)


@router.post("/v1/chat/completions", response_model=p.ChatResponse, responses=ERRORS)
async def chat(body: p.ChatRequest, request: Request, state: State):
    model = pick_model(request, state, body.model, "/v1/chat/completions")
    loop = asyncio.get_running_loop()
    run = await asyncio.to_thread(service.start_chat, model, body, state.settings, state.metrics, loop)
    return await _answer(run, body.stream, request)


async def _answer(run: service.Running, stream: bool | None, request: Request):
    request.state.usage = run  # its prompt_tokens and completion_tokens, counted as rows finish
    if stream:  # a streamed reply stops at the client's disconnect by itself: its next send fails
        return StreamingResponse(
            service.stream(run), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )
    # Not streamed: nothing is sent until the end, so the disconnect is watched for; when the client
    # goes, the generation is cancelled and its rows leave the batch at their next step.
    answer = asyncio.ensure_future(service.collect(run))
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({answer, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if not answer.done():
        answer.cancel()  # collect's own cleanup cancels the job
        with contextlib.suppress(asyncio.CancelledError):
            await answer
        return Response(status_code=CLIENT_CLOSED)
    return answer.result()


CLIENT_CLOSED = 499  # nginx's "client closed request": logged, never received


async def _disconnected(request: Request) -> None:
    """Returns when the client has gone (the body is read already: the next message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
