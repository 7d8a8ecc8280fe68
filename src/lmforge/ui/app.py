"""``create_ui_app(settings)``: the dashboard's FastAPI app: the page and its assets (open), the JSON
API under ``/api`` and the playground's serving app under ``/play`` (both behind the API key when one
is set, as ``lmforge serve`` guards its routes). Errors are JSON ``{"error": {"message": ...}}``
with a 4xx status: a run that is not under the root 404, a bad job or config 400, a run name taken
409, too many jobs 429; POST bodies must be JSON of at most ``max_body_bytes`` (415 / 413)."""

import hmac
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from lmforge.errors import LmforgeError
from lmforge.serving.keys import KeyFile
from lmforge.serving.middleware import JsonBody, error_body, send_json
from lmforge.ui import runs
from lmforge.ui.jobs import JobError, Jobs
from lmforge.ui.playground import GENERATORS, PLAY_PREFIX, Playground
from lmforge.ui.settings import UiSettings

STATIC = Path(__file__).parent / "static"
GUARDED = ("/api/", PLAY_PREFIX + "/")
# The page and its reports: scripts and styles from this server only (the reports' inline styles and
# data: images allowed), no other host; frames only from here (a report is shown in a sandboxed srcdoc frame).
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; "
    "frame-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'"
)


class UiKey:
    """401 on ``/api/`` and ``/play/`` unless the request sends ``Authorization: Bearer KEY``. With a
    key file (``keys``, ``lmforge ui --api-keys``): 401 for a key not in it, 403 for one without the
    ``ui`` scope, 429 with ``Retry-After`` over its request rate (as ``lmforge serve``'s keys)."""

    def __init__(self, app, key: str | None, keys: KeyFile | None = None):
        self.app, self.keys = app, keys
        self.expected = f"Bearer {key}".encode() if key else None

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(GUARDED):
            return await self.app(scope, receive, send)
        given = dict(scope["headers"]).get(b"authorization", b"")
        if self.keys is not None:
            text = given.decode("latin-1")
            entry = self.keys.lookup(text[7:]) if text.startswith("Bearer ") else None
            if entry is None:
                return await _unauthorized(send)
            if "ui" not in entry.scopes:
                body = error_body(f"key {entry.id!r} has no 'ui' scope", "permission_error", "scope")
                return await send_json(send, 403, body)
            refusal = self.keys.admit(entry)
            if refusal is not None:
                body = error_body(f"key {entry.id!r} is over its {refusal.limit}", "rate_limit_error", "rate_limited")
                return await send_json(send, 429, body, [(b"retry-after", str(int(refusal.wait)).encode())])
        elif self.expected is not None and not hmac.compare_digest(given, self.expected):
            return await _unauthorized(send)
        await self.app(scope, receive, send)


async def _unauthorized(send) -> None:
    body = error_body("missing or wrong API key", "authentication_error", "invalid_api_key")
    await send_json(send, 401, body, [(b"www-authenticate", b"Bearer")])


class PlayRoute:
    """``/play/...`` to the playground's serving app; everything else to the UI's own routes."""

    def __init__(self, app, playground: Playground):
        self.app, self.playground = app, playground

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope.get("path", "").startswith(PLAY_PREFIX + "/"):
            return await self.playground(scope, receive, send)
        await self.app(scope, receive, send)


class Headers:
    """Security headers on every answer of the UI's own routes."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"SAMEORIGIN"),
                ]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


class JobRequest(BaseModel):
    model_config = {"extra": "forbid"}
    name: str = Field(..., max_length=64, description="the run's folder name under the runs root")
    config: str | None = Field(None, description="one of the offered config files")
    yaml: str | None = Field(None, description="the config's text, instead of a file")
    overrides: list[str] = Field(default_factory=list, max_length=64)


class ChooseRequest(BaseModel):
    model_config = {"extra": "forbid"}
    model: str = Field(..., min_length=1, max_length=512)


class ExplainRequest(BaseModel):
    model_config = {"extra": "forbid"}
    run: str = Field(..., min_length=1, max_length=512)
    text: str = Field(..., max_length=2000)
    method: Literal["integrated_gradients", "gradient_x_input", "occlusion", "attention"] | None = None
    target: str | None = Field(None, max_length=500)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message}}, status_code=status)


def create_ui_app(settings: UiSettings) -> "UiApp":
    """The ASGI app of ``lmforge ui`` (jobs stop and the playground closes at shutdown)."""
    root = Path(settings.runs).expanduser()
    jobs = Jobs(root, settings.configs, settings.max_jobs)
    playground = Playground(root, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        jobs.stop_all()
        playground.close()

    app = FastAPI(title="lmforge ui", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.jobs, app.state.playground = jobs, playground

    @app.exception_handler(LmforgeError)
    async def lmforge_error(request: Request, exc: LmforgeError):
        status = exc.status if isinstance(exc, JobError) else 404 if isinstance(exc, runs.NotFound) else 400
        return _error(status, str(exc).splitlines()[0])

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return _error(400, f"{where}: {first.get('msg', 'invalid request')}" if where else "invalid request")

    @app.get("/", response_class=HTMLResponse)
    async def index():
        return FileResponse(STATIC / "index.html", headers={"cache-control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/info")
    async def info():
        return {
            "runs": str(root),
            "poll_s": settings.poll_s,
            "configs": jobs.configs(),
            "generators": list(GENERATORS),
            "max_jobs": settings.max_jobs,
        }

    @app.get("/api/runs")
    async def runs_list():
        return {"runs": runs.runs_table(root), "studies": runs.studies(root)}

    @app.get("/api/run")
    async def run(name: str):
        return runs.run_details(root, name)

    @app.get("/api/report", response_class=HTMLResponse)
    async def report(name: str):
        return FileResponse(runs.report_path(root, name), media_type="text/html")

    @app.get("/api/study")
    async def study(name: str, kind: Literal["compare", "tune"]):
        return runs.study_details(root, name, kind)

    @app.get("/api/jobs")
    async def jobs_list():
        return {"jobs": jobs.rows()}

    @app.post("/api/jobs", status_code=201)
    async def start_job(body: JobRequest):
        job = jobs.start(body.name, body.config, body.yaml, [o.strip() for o in body.overrides if o.strip()])
        return job.as_json()

    @app.post("/api/jobs/{job_id}/stop")
    async def stop_job(job_id: str):
        return jobs.stop(job_id).as_json()

    @app.get("/api/playground")
    async def playground_status():
        return playground.status()

    @app.post("/api/playground")
    async def choose(body: ChooseRequest):
        return playground.choose(body.model)

    @app.post("/api/explain")
    async def explain(body: ExplainRequest):
        return {"explanations": await playground.explain_async(body.run, body.text, body.method, body.target)}

    # Outermost first on the way in: the key, the body checks, the headers, then /play or the routes.
    inner = Headers(PlayRoute(app, playground))
    keys = KeyFile(settings.api_keys) if settings.api_keys else None  # a bad file fails here, in one line
    return UiApp(UiKey(JsonBody(inner, settings.max_body_bytes), settings.api_key, keys), jobs, playground)


class UiApp:
    """The ASGI app, with its jobs and playground at hand (for the CLI's shutdown and the tests)."""

    def __init__(self, asgi, jobs: Jobs, playground: Playground):
        self.asgi, self.jobs, self.playground = asgi, jobs, playground

    async def __call__(self, scope, receive, send):
        await self.asgi(scope, receive, send)
