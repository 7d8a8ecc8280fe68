"""Admin routes: ``/health`` (open: no key needed; 503 unless ready) and Prometheus ``/metrics``."""

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse

from lmforge.serving import protocol as p
from lmforge.serving.routers.dependencies import ERRORS, State

router = APIRouter(tags=["admin"])


@router.get("/health", response_model=p.Health, responses={503: {"model": p.Health}})
async def health(state: State):
    status = state.status()
    body = p.Health(status=status, models=list(state.models))
    return JSONResponse(body.model_dump(), status_code=200 if status == "ok" else 503)


@router.get("/metrics", response_class=PlainTextResponse, responses={401: ERRORS[401]})
async def metrics(state: State):
    data, content_type = state.metrics.render()
    return PlainTextResponse(data, media_type=content_type)
