"""OpenAI-compatible routes: ``/v1/completions`` and ``/v1/chat/completions`` (one JSON body, or
server-sent events with ``"stream": true``), ``/v1/models`` and ``/v1/models/{id}``."""

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from lmforge.serving import protocol as p
from lmforge.serving.routers.dependencies import ERRORS, State, pick_model
from lmforge.serving.services import completions as service

router = APIRouter(tags=["openai"])


@router.get("/v1/models", response_model=p.ModelList, responses={401: ERRORS[401]})
async def models(state: State):
    return p.ModelList(data=[model.card() for model in state.models.values()])


@router.get("/v1/models/{model_id}", response_model=p.ModelCard, responses={401: ERRORS[401], 404: ERRORS[404]})
async def model(model_id: str, state: State):
    return state.find(model_id, "/v1/models").card()


@router.post("/v1/completions", response_model=p.CompletionResponse, responses=ERRORS)
async def completions(body: p.CompletionRequest, request: Request, state: State):
    model = pick_model(request, state, body.model, "/v1/completions")
    return await _answer(service.start_completion(model, body, state.settings, state.metrics), body.stream)


@router.post("/v1/chat/completions", response_model=p.ChatResponse, responses=ERRORS)
async def chat(body: p.ChatRequest, request: Request, state: State):
    model = pick_model(request, state, body.model, "/v1/chat/completions")
    return await _answer(service.start_chat(model, body, state.settings, state.metrics), body.stream)


async def _answer(run: service.Running, stream: bool | None):
    if stream:
        return StreamingResponse(
            service.stream(run), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )
    return await service.collect(run)
