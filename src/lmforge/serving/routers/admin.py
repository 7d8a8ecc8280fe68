"""Admin routes: ``/health`` (open: no key needed; 503 unless ready), Prometheus ``/metrics``, and
LoRA adapters loaded and unloaded at run time (``/v1/admin/adapters``: only with an admin key,
``$LMFORGE_ADMIN_KEY``, sent as ``Authorization: Bearer KEY``; 404 on a server without one)."""

import asyncio
import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException

from lmforge.serving import protocol as p
from lmforge.serving.routers.dependencies import ERRORS, State, server_state
from lmforge.serving.services import adapters
from lmforge.serving.state import ServerState

router = APIRouter(tags=["admin"])


@router.get("/health", response_model=p.Health, responses={503: {"model": p.Health}})
async def health(request: Request, state: State):
    """Open to all (load balancers probe it); the model names only to a client with the key."""
    status = state.status()
    key = state.settings.api_key
    given = request.headers.get("authorization", "")
    if state.keys is not None:
        told = given.startswith("Bearer ") and state.keys.lookup(given[7:]) is not None
    else:
        told = not key or hmac.compare_digest(given.encode(), f"Bearer {key}".encode())
    body = p.Health(status=status, models=list(state.models) if told else None)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=200 if status == "ok" else 503)


@router.get("/metrics", response_class=PlainTextResponse, responses={401: ERRORS[401]})
async def metrics(state: State):
    data, content_type = state.metrics.render()
    return PlainTextResponse(data, media_type=content_type)


def admin(request: Request, state: Annotated[ServerState, Depends(server_state)]) -> None:
    """404 without an admin key (no admin routes), 401 unless the request sends it. With a key
    file, the middleware has checked the key's 'admin' scope already."""
    if state.keys is not None:
        return
    key = state.settings.admin_key
    if not key:
        raise HTTPException(404, "not found")
    given = request.headers.get("authorization", "").encode()
    if not hmac.compare_digest(given, f"Bearer {key}".encode()):
        raise HTTPException(401, "missing or wrong admin key", headers={"WWW-Authenticate": "Bearer"})


Admin = Annotated[None, Depends(admin)]


# OpenAPI links: what a client (and the stateful API fuzzing) may do with a loaded adapter's name.
LOADED_LINKS = {
    "GetModel": {"operationId": "getModel", "parameters": {"model_id": "$response.body#/id"}},
    "UnloadAdapter": {"operationId": "unloadAdapter", "parameters": {"name": "$response.body#/id"}},
}
UNLOADED_LINKS = {"GetModel": {"operationId": "getModel", "parameters": {"model_id": "$request.path.name"}}}


@router.post(
    "/v1/admin/adapters",
    response_model=p.ModelCard,
    responses={**ERRORS, 200: {"description": "the adapter, now served", "links": LOADED_LINKS}},
    operation_id="loadAdapter",
)
async def load_adapter(body: p.AdapterRequest, state: State, _: Admin):
    """Load a LoRA run beside its base model; requests can name it once this answers."""
    if not state.ready:
        raise HTTPException(503, "the models are still loading")
    adapter = await asyncio.to_thread(adapters.load_adapter, state, body.name, body.run)
    state.models[body.name] = adapter  # here, on the event loop: no request iterates the dict meanwhile
    return adapter.card()


@router.delete(
    "/v1/admin/adapters/{name}",
    responses={**ERRORS, 200: {"description": "the adapter is no longer served", "links": UNLOADED_LINKS}},
    operation_id="unloadAdapter",
)
async def unload_adapter(name: str, state: State, _: Admin):
    """Stop serving an adapter: new requests for it get 404 at once; it unloads when those running
    have finished."""
    adapter = adapters.adapter_named(state, name)
    del state.models[name]
    await asyncio.to_thread(adapters.unload_adapter, state, adapter)
    return {"id": name, "object": "model", "deleted": True}
