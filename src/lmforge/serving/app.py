"""``create_app(state)``: the FastAPI app, wired from its parts and nothing else: the routers (task
endpoints, OpenAI-compatible, admin), the error handlers, the middleware (metrics and log, drain,
API key, JSON body limits, and CORS when ``--cors-origins`` allows web pages to call it) and a
lifespan that loads the models at start-up.

Every refusal is an OpenAI-style error body with a 4xx status: validation errors and malformed
JSON are 400, an unknown model 404, an over-limit request 413 (or 400 for sampling parameters, as
OpenAI answers them), a full queue 429 with ``Retry-After``, and a model still loading or a server
draining 503.
"""

from collections.abc import Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from lmforge.serving.http_errors import add_error_handlers
from lmforge.serving.middleware import AllowedHosts, ApiKey, Drain, JsonBody, Observe
from lmforge.serving.routers import admin, openai, tasks
from lmforge.serving.state import ServerState

DESCRIPTION = (
    "Task endpoints and an OpenAI-compatible API over models trained with lmforge. Every route but "
    "/health needs 'Authorization: Bearer KEY' when the server has a key."
)


def create_app(state: ServerState, on_load_failure: Callable[[str], None] | None = None) -> FastAPI:
    """The app over ``state`` (``ServerState.open(settings)``). Models not loaded yet load at
    start-up, in the background (``/health`` says "loading" meanwhile), and close at shutdown;
    ``on_load_failure(why)`` is told if loading fails. A state loaded by its caller stays the
    caller's to close."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        starts = not (state.loading or state.ready)
        if starts:
            state.load_in_background(on_load_failure)
        yield
        if starts:
            state.close()

    # The groups' routes join the app's own list rather than come in by ``include_router``, which
    # recent FastAPI keeps as one nested entry: ``app.routes`` lists every route, for the metrics'
    # route labels and the tests. (So ``app.dependency_overrides`` does not reach them; a test
    # swaps the state instead.)
    routes = [route for group in (admin, openai, tasks) for route in group.router.routes]
    app = FastAPI(title="lmforge", version="1", description=DESCRIPTION, lifespan=lifespan, routes=routes)
    app.state.lmforge = state
    add_error_handlers(app)
    # Added innermost first: a request meets Observe, Drain, ApiKey, then JsonBody.
    app.add_middleware(JsonBody, limit=state.settings.max_body_bytes, timeout=state.settings.body_timeout)
    app.add_middleware(ApiKey, key=state.settings.api_key, keys=state.keys)
    app.add_middleware(Drain, state=state)
    app.add_middleware(Observe, state=state, routes={route.path for route in app.routes})
    if state.settings.allowed_hosts:  # outside Observe: a request for another host is refused first
        app.add_middleware(AllowedHosts, hosts=state.settings.allowed_hosts)
    if state.settings.cors_origins:  # outermost: a browser's preflight carries no key
        app.add_middleware(
            CORSMiddleware,
            allow_origins=state.settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
            max_age=600,
        )
    return app
