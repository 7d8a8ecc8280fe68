"""The ASGI middleware every request passes, outermost first: ``Observe`` (one log line and the
metrics), ``Drain`` (503 while shutting down), ``ApiKey`` (401) and ``JsonBody`` (415, 413), before
FastAPI routes it. ``Drain`` and ``ApiKey`` let the open paths (``/health``) through.

Written as plain ASGI rather than ``BaseHTTPMiddleware`` so a streamed response is not buffered and
a client's disconnect reaches the route.
"""

import asyncio
import hmac
import json
import logging
import re
import time

from lmforge.serving.keys import scope_for

log = logging.getLogger("lmforge.serve")
OPEN_PATHS = ("/health",)
ADMIN_PREFIX = "/v1/admin/"


def error_body(message: str, kind: str, code: str | None = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}).encode()


async def send_json(send, status: int, body: bytes, headers: list | None = None) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            + (headers or []),
        }
    )
    await send({"type": "http.response.body", "body": body})


class Observe:
    """Counts requests in flight, and for each one observes its route, status and latency in the
    metrics and writes one JSON log line (never the body or the key; the tokens it used, where it
    used some). The served model's name is
    what a route put in ``request.state.model``."""

    def __init__(self, app, state, routes: set[str]):
        self.app, self.state, self.routes = app, state, routes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state, metrics = self.state, self.state.metrics
        route = scope["path"] if scope["path"] in self.routes else "other"
        started, status = time.perf_counter(), [500]
        scope.setdefault("state", {})

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        state.in_flight += 1
        metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_status)
        finally:
            state.in_flight -= 1
            metrics.in_flight.dec()
            seconds = time.perf_counter() - started
            metrics.requests.labels(route, str(status[0])).inc()
            metrics.latency.labels(route).observe(seconds)
            # json.dumps escapes control characters; prompts and the key are never logged.
            line = {
                "method": scope["method"],
                "route": route,
                "status": status[0],
                "ms": round(seconds * 1000, 1),
                "model": scope["state"].get("model"),
            }
            if scope["state"].get("key_id") is not None:
                line["key"] = scope["state"]["key_id"]
            if scope["state"].get("usage") is not None:
                line["prompt_tokens"], line["completion_tokens"] = tokens_used(scope)
            log.info(json.dumps(line))
            if state.audit is not None:  # the same facts, with the time: never a text or a key
                state.audit.write(json.dumps({"time": round(time.time(), 3), **line}) + "\n")


def tokens_used(scope) -> tuple[int, int]:
    """(prompt, completion) tokens of the request so far: its route puts the answer's usage (or the
    running generation, which counts as it goes) in ``scope["state"]["usage"]``."""
    usage = scope.get("state", {}).get("usage")
    if usage is None:
        return 0, 0
    return int(usage.prompt_tokens or 0), int(usage.completion_tokens or 0)


class Drain:
    """503 with ``Connection: close`` for every request but the open paths once draining starts."""

    def __init__(self, app, state):
        self.app, self.state = app, state

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and self.state.draining and scope["path"] not in OPEN_PATHS:
            body = error_body("the server is shutting down", "unavailable")
            return await send_json(send, 503, body, [(b"connection", b"close")])
        await self.app(scope, receive, send)


class ApiKey:
    """401 unless the request sends ``Authorization: Bearer KEY`` (no check when ``key`` is None).
    With a key file (``keys``): 401 for a key not in it, 403 for one without the route's scope,
    429 with ``Retry-After`` over its request rate or a token quota; the key's id goes into
    ``scope["state"]["key_id"]``, and the tokens the request used are charged to it at its end."""

    def __init__(self, app, key: str | None, keys=None):
        self.app, self.keys = app, keys
        self.expected = f"Bearer {key}".encode() if key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and self.keys is not None and scope["path"] not in OPEN_PATHS:
            return await self._scoped(scope, receive, send)
        admin = scope.get("path", "").startswith(ADMIN_PREFIX)  # the admin key guards those (routers/admin.py)
        if scope["type"] == "http" and self.expected is not None and scope["path"] not in OPEN_PATHS and not admin:
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                body = error_body(
                    "missing or wrong API key (send 'Authorization: Bearer KEY')",
                    "authentication_error",
                    "invalid_api_key",
                )
                return await send_json(send, 401, body, [(b"www-authenticate", b"Bearer")])
        await self.app(scope, receive, send)

    async def _scoped(self, scope, receive, send):
        given = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        entry = self.keys.lookup(given[7:]) if given.startswith("Bearer ") else None
        if entry is None:
            body = error_body(
                "missing or wrong API key (send 'Authorization: Bearer KEY')", "authentication_error", "invalid_api_key"
            )
            return await send_json(send, 401, body, [(b"www-authenticate", b"Bearer")])
        scope.setdefault("state", {})["key_id"] = entry.id
        needed = scope_for(scope["path"])
        if needed not in entry.scopes:
            body = error_body(
                f"key {entry.id!r} has no '{needed}' scope for {scope['path']}", "permission_error", "scope"
            )
            return await send_json(send, 403, body)
        refusal = self.keys.admit(entry)
        if refusal is not None:
            body = error_body(f"key {entry.id!r} is over its {refusal.limit}", "rate_limit_error", "rate_limited")
            return await send_json(send, 429, body, [(b"retry-after", str(int(refusal.wait)).encode())])
        try:
            await self.app(scope, receive, send)
        finally:  # what the request used counts against the key's token quotas, finished or not
            self.keys.charge(entry, sum(tokens_used(scope)))


class AllowedHosts:
    """400 unless the request's Host header (without its port) is one of ``hosts`` (a leading
    ``*.`` allows the subdomains); no check when ``hosts`` is empty."""

    def __init__(self, app, hosts: list[str]):
        self.app, self.hosts = app, [h.lower() for h in hosts]

    def _allowed(self, host: str) -> bool:
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return any(name == h or (h.startswith("*.") and name.endswith(h[1:])) for h in self.hosts)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and self.hosts:
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1").lower()
            if not self._allowed(host):
                body = error_body(f"host {host!r} is not served here", "invalid_request_error", "invalid_host")
                return await send_json(send, 400, body)
        await self.app(scope, receive, send)


class JsonBody:
    """A body sent with POST, PUT or PATCH must be JSON (415), at most ``limit`` bytes (413, told by
    its Content-Length or found while reading it) and whole within ``timeout`` seconds (408); the
    app gets the body already read."""

    def __init__(self, app, limit: int, timeout: float = 30.0):
        self.app, self.limit, self.timeout = app, limit, timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if b"json" not in headers.get(b"content-type", b""):
            body = error_body(
                "send the body as JSON with 'Content-Type: application/json'",
                "invalid_request_error",
                "unsupported_media_type",
            )
            return await send_json(send, 415, body)
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await send_json(send, 413, self._too_big())
        chunks, size = [], 0
        deadline = asyncio.get_running_loop().time() + self.timeout
        while True:
            try:  # the whole body within the timeout, however it is cut up
                message = await asyncio.wait_for(receive(), deadline - asyncio.get_running_loop().time())
            except TimeoutError:
                body = error_body(
                    f"the request body did not arrive within {self.timeout:g} s",
                    "invalid_request_error",
                    "body_timeout",
                )
                return await send_json(send, 408, body, [(b"connection", b"close")])
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await send_json(send, 413, self._too_big())
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        problem = text_problem(body)
        if problem:
            return await send_json(send, 400, error_body(problem, "invalid_request_error", "invalid_text"))
        await self.app(scope, _replay(body, receive), send)

    def _too_big(self) -> bytes:
        return error_body(
            f"the request body is over the limit of {self.limit} bytes", "invalid_request_error", "body_too_large"
        )


SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def text_problem(body: bytes) -> str | None:
    """Why the JSON ``body`` cannot be served as text, or None. A lone UTF-16 surrogate escape
    (``"\\ud800"``) parses as JSON but is no Unicode text: the tokenizers fail on it, and with it
    every request batched beside it, so it is refused here, for this request alone. (Bodies without a
    surrogate escape, nearly all, cost one regular-expression scan.)"""
    if not SURROGATE_ESCAPE.search(body):
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None  # not JSON: the route's own parser answers 400
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                bad = value[exc.start]
                return f"the body has a lone surrogate (\\u{ord(bad):04x}) in a string: send valid Unicode text"
        elif isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return None


def _replay(body: bytes, receive):
    """A ``receive`` that hands the app the body already read, then waits for the disconnect."""
    sent = False

    async def replayed():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
