"""Input a client should not send: each gets a 400 for that request alone, and the requests batched
beside it are answered as if it had not come (issue 32: a lone surrogate used to answer 500 and
fail its batch-mates)."""

import asyncio
import json
import threading
import time

import httpx
import pytest
from served import API_KEY, client, make_state, runs, state  # noqa: F401  (fixtures)

from lmforge.serving.app import create_app
from lmforge.serving.engine import Job
from lmforge.serving.services import completions

HEADERS = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}


def raw(client, route: str, text: str):  # noqa: F811
    """POST a body exactly as written (json= would escape or refuse what is tested here)."""
    return client.post(route, content=text.encode("utf-8"), headers={"Content-Type": "application/json"})


@pytest.mark.parametrize(
    "route,body,words",
    [
        ("/v1/classify", '{"input": "bad \\ud800 text"}', "surrogate"),
        ("/v1/classify", '{"input": ["fine", "lone low \\udc00"]}', "surrogate"),
        ("/v1/ner", '{"input": "x\\udbff"}', "surrogate"),
        ("/v1/embeddings", '{"model": "sentiment", "input": "\\ud800"}', "surrogate"),
        (
            "/v1/chat/completions",
            '{"model": "chat", "messages": [{"role": "user", "content": "\\ud800"}]}',
            "surrogate",
        ),
        ("/v1/completions", '{"model": "chat", "prompt": "hi", "stop": ["\\udfff"]}', "surrogate"),
        ("/v1/completions", '{"model": "chat", "prompt": "hi", "temperature": NaN}', "temperature"),
        ("/v1/completions", '{"model": "chat", "prompt": "hi", "top_p": Infinity}', "top_p"),
        ("/v1/completions", '{"model": "chat", "prompt": "hi", "temperature": 1e999}', "temperature"),
        ("/v1/completions", '{"model": "chat", "prompt": "hi", "max_tokens": 1' + "0" * 400 + "}", "max_tokens"),
        ("/v1/classify", '{"input": ' + "[" * 3000 + '"x"' + "]" * 3000 + "}", ""),
    ],
)
def test_hostile_bodies_are_400_naming_the_problem(client, route, body, words):  # noqa: F811
    response = raw(client, route, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and words in error["message"]


def test_valid_surrogate_pairs_and_escaped_backslashes_are_text(client):  # noqa: F811
    for text in ('{"input": "a smile \\ud83d\\ude00"}', '{"input": "a literal \\\\ud800 is six characters"}'):
        assert raw(client, "/v1/classify", text).status_code == 200


def test_a_bad_request_never_fails_the_requests_batched_with_it(runs):  # noqa: F811
    """Requests sent together share a batch (batch_wait_ms): the bad one is 400, the others 200 with
    the labels they get alone."""
    state = make_state(runs, batch_wait_ms=200.0, max_batch=16)
    try:
        app = create_app(state)

        async def main():
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=HEADERS) as c:
                good = [json.dumps({"input": f"a fine film number {i}"}) for i in range(6)]
                bad = '{"input": "broken \\ud800"}'
                bodies = good[:3] + [bad] + good[3:]
                answers = await asyncio.gather(*(c.post("/v1/classify", content=b) for b in bodies))
                alone = [await c.post("/v1/classify", content=b) for b in good]
                return answers, alone

        answers, alone = asyncio.run(main())
        codes = [a.status_code for a in answers]
        assert codes == [200, 200, 200, 400, 200, 200, 200], [a.text for a in answers]
        together = [a.json()["data"][0]["label"] for a in answers if a.status_code == 200]
        assert together == [a.json()["data"][0]["label"] for a in alone]
    finally:
        state.close()


def test_a_completion_stops_when_its_client_goes(client, state, monkeypatch):  # noqa: F811
    """Not streamed: the client hangs up after 0.3 s of a reply that would run to 900 tokens (end of
    text banned); the route answers 499 at once and the rows leave the batch without finishing."""
    kinds: list[str] = []

    class Recorded(Job):
        def __init__(self, rows, emit):
            super().__init__(rows, lambda row, kind, value: (kinds.append(kind), emit(row, kind, value)))

    monkeypatch.setattr(completions, "Job", Recorded)
    engine = state.models["chat"].engine
    ban = {str(token): -100 for token in engine.stop_ids}
    body = json.dumps({"model": "chat", "prompt": "hi", "max_tokens": 900, "logit_bias": ban}).encode()

    async def drive():
        given = False

        async def receive():
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.sleep(0.3)
            return {"type": "http.disconnect"}

        sent = []

        async def send(message):
            sent.append(message)

        scope = {
            "type": "http",
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/completions",
            "raw_path": b"/v1/completions",
            "query_string": b"",
            "root_path": "",
            "headers": [(b"content-type", b"application/json"), (b"authorization", f"Bearer {API_KEY}".encode())],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
        }
        started = time.monotonic()
        await create_app(state)(scope, receive, send)
        return sent, time.monotonic() - started

    sent, seconds = asyncio.run(drive())
    assert sent[0]["status"] == 499 and seconds < 5
    time.sleep(0.5)
    produced = kinds.count("text")
    time.sleep(0.5)
    assert kinds.count("text") == produced and "done" not in kinds  # stopped, not finished
    assert 0 < produced < 900
    assert not any(isinstance(r.job, Recorded) for r in engine.running)  # its rows left the batch


@pytest.mark.parametrize(
    "route,body,slow",
    [
        ("/v1/classify", {"input": "a fine film"}, "counts"),
        (
            "/v1/chat/completions",
            {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
            "encode",
        ),
    ],
)
def test_tokenizing_runs_off_the_event_loop(state, monkeypatch, route, body, slow):  # noqa: F811
    """While one request's tokenizing takes a second, the event loop goes on (it ticks ~20 times in
    that second; blocked, it would not tick at all) and /health is answered meanwhile."""
    model = state.models["sentiment" if route == "/v1/classify" else "chat"]
    target = model if slow == "counts" else model.generator
    real = getattr(target, slow)
    tokenizing = threading.Event()

    def sluggish(*args, **kwargs):
        tokenizing.set()
        time.sleep(1.0)
        tokenizing.clear()
        return real(*args, **kwargs)

    monkeypatch.setattr(target, slow, sluggish)

    async def main():
        transport = httpx.ASGITransport(app=create_app(state))
        async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=HEADERS) as c:
            slow_one = asyncio.ensure_future(c.post(route, json=body))
            ticks, health = 0, None
            while not slow_one.done():
                await asyncio.sleep(0.05)
                if tokenizing.is_set():
                    ticks += 1
                    if health is None:
                        health = await c.get("/health")
            return ticks, health, await slow_one

    ticks, health, answer = asyncio.run(main())
    assert answer.status_code == 200, answer.text
    assert health is not None and health.status_code == 200
    assert ticks >= 5


def test_only_the_allowed_hosts_are_answered(runs):  # noqa: F811
    from fastapi.testclient import TestClient

    state = make_state(runs, allowed_hosts=["api.example.com", "*.internal"])
    try:
        client = TestClient(create_app(state), headers={"Authorization": f"Bearer {API_KEY}"})
        for host, status in [
            ("api.example.com", 200),
            ("api.example.com:8000", 200),
            ("a.b.internal", 200),
            ("evil.example", 400),
            ("internal", 400),
            ("", 400),
        ]:
            response = client.post("/v1/classify", json={"input": "fine"}, headers={"host": host})
            assert response.status_code == status, (host, response.text)
        refused = client.get("/health", headers={"host": "rebound.attacker.test"})
        assert refused.status_code == 400 and "not served here" in refused.json()["error"]["message"]
    finally:
        state.close()
