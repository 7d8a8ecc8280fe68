"""Task routes: ``/v1/classify``, ``/v1/ner`` and ``/v1/embeddings`` (OpenAI's shape)."""

from fastapi import APIRouter, Request

from lmforge.serving import protocol as p
from lmforge.serving.routers.dependencies import ERRORS, State, pick_model
from lmforge.serving.services import tasks

router = APIRouter(tags=["tasks"])


@router.post("/v1/classify", response_model=p.ClassifyResponse, responses=ERRORS)
async def classify(body: p.ClassifyRequest, request: Request, state: State):
    model = pick_model(request, state, body.model, "/v1/classify")
    answer = await tasks.classify(model, body, state.settings, state.metrics)
    request.state.usage = answer.usage
    return answer


@router.post("/v1/ner", response_model=p.NerResponse, responses=ERRORS)
async def ner(body: p.NerRequest, request: Request, state: State):
    model = pick_model(request, state, body.model, "/v1/ner")
    answer = await tasks.tag(model, body, state.settings, state.metrics)
    request.state.usage = answer.usage
    return answer


@router.post("/v1/embeddings", response_model=p.EmbeddingsResponse, responses=ERRORS)
async def embeddings(body: p.EmbeddingsRequest, request: Request, state: State):
    model = pick_model(request, state, body.model, "/v1/embeddings")
    answer = await tasks.embed(model, body, state.settings, state.metrics)
    request.state.usage = answer.usage
    return answer
