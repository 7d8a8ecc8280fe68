"""What the routers share: the server state on ``app.state``, picking the model a request names, and
the error responses every route documents."""

from typing import Annotated

from fastapi import Depends, Request

from lmforge.serving import protocol as p
from lmforge.serving.services import ServedModel
from lmforge.serving.state import ServerState

ERRORS = {status: {"model": p.ErrorResponse} for status in (400, 401, 404, 413, 415, 429, 503)}


def server_state(request: Request) -> ServerState:
    return request.app.state.lmforge


State = Annotated[ServerState, Depends(server_state)]


def pick_model(request: Request, state: ServerState, name: str | None, route: str) -> ServedModel:
    """The model that answers: named in the log line as soon as it is known, then checked to be
    loaded and to serve ``route``."""
    model = state.find(name, route)
    request.state.model = model.name
    state.check_serves(model, route)
    return model
