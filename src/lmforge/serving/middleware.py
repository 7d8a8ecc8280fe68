"""The ASGI middleware every request passes: one log line and the metrics, drain (503), the API key
(401) and the body limit (413), in that order, before FastAPI routes it.

Written as plain ASGI rather than ``BaseHTTPMiddleware`` so a streamed response is not buffered and
a client's disconnect reaches the route.
"""

import hmac
import json
import logging
import time

log = logging.getLogger("lmforge.serve")
OPEN_ROUTES = ("/health",)


def error_body(status: int, message: str, kind: str, code: str | None = None) -> bytes:
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


class Guard:
    def __init__(self, app, state):
        self.app, self.state = app, state
        key = state.settings.api_key
        self.key = f"Bearer {key}".encode() if key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state, path = self.state, scope["path"]
        route = path if path in state.known_routes else "other"
        started, status = time.perf_counter(), [500]
        scope.setdefault("state", {})

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        state.in_flight += 1
        state.metrics.in_flight.inc()
        try:
            await self._guarded(scope, receive, send_status, path)
        finally:
            state.in_flight -= 1
            state.metrics.in_flight.dec()
            seconds = time.perf_counter() - started
            state.metrics.requests.labels(route, str(status[0])).inc()
            state.metrics.latency.labels(route).observe(seconds)
            # json.dumps escapes control characters; prompts and the key are never logged.
            log.info(
                json.dumps(
                    {
                        "method": scope["method"],
                        "route": route,
                        "status": status[0],
                        "ms": round(seconds * 1000, 1),
                        "model": scope["state"].get("model"),
                    }
                )
            )

    async def _guarded(self, scope, receive, send, path):
        state = self.state
        if path not in OPEN_ROUTES:
            if state.draining:
                return await send_json(
                    send,
                    503,
                    error_body(503, "the server is shutting down", "unavailable"),
                    [(b"connection", b"close")],
                )
            if self.key is not None:
                given = dict(scope["headers"]).get(b"authorization", b"")
                if not hmac.compare_digest(given, self.key):
                    return await send_json(
                        send,
                        401,
                        error_body(
                            401,
                            "missing or wrong API key (send 'Authorization: Bearer KEY')",
                            "authentication_error",
                            "invalid_api_key",
                        ),
                        [(b"www-authenticate", b"Bearer")],
                    )
        if scope["method"] in ("POST", "PUT", "PATCH"):
            headers = dict(scope["headers"])
            if b"json" not in headers.get(b"content-type", b""):
                return await send_json(
                    send,
                    415,
                    error_body(
                        415,
                        "send the body as JSON with 'Content-Type: application/json'",
                        "invalid_request_error",
                        "unsupported_media_type",
                    ),
                )
            limit = state.settings.max_body_bytes
            declared = headers.get(b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                return await send_json(send, 413, self._too_big(limit))
            chunks, size = [], 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunks.append(message.get("body", b""))
                size += len(chunks[-1])
                if size > limit:
                    return await send_json(send, 413, self._too_big(limit))
                if not message.get("more_body"):
                    break
            receive = _replay(b"".join(chunks), receive)
        await self.app(scope, receive, send)

    @staticmethod
    def _too_big(limit: int) -> bytes:
        return error_body(
            413, f"the request body is over the limit of {limit} bytes", "invalid_request_error", "body_too_large"
        )
