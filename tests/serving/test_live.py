"""A real server on loopback: the official ``openai`` client against it (streaming included), and
``lmforge serve`` as a process that drains in-flight requests on SIGTERM and exits 0."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from served import API_KEY, runs, state  # noqa: F401  (fixtures)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def live(state):
    import uvicorn

    from lmforge.serving.app import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(state), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def openai_client(live):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=f"{live}/v1", api_key=API_KEY, max_retries=0)


def test_openai_client_chat_with_and_without_stream(openai_client):
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "what is 2 plus 3"}]
    reply = openai_client.chat.completions.create(model="chat", messages=messages, max_tokens=6, temperature=0)
    assert reply.choices[0].message.role == "assistant" and reply.choices[0].finish_reason in ("stop", "length")
    assert (
        reply.usage.completion_tokens >= 1
        and reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    )
    pieces = []
    for chunk in openai_client.chat.completions.create(
        model="chat", messages=messages, max_tokens=6, temperature=0, stream=True
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
    assert "".join(pieces) == reply.choices[0].message.content  # greedy: streamed = whole


def test_openai_client_completions_n_and_seed(openai_client):
    first = openai_client.completions.create(
        model="chat", prompt="what is 1 plus", max_tokens=5, n=2, seed=11, temperature=1.0
    )
    again = openai_client.completions.create(
        model="chat", prompt="what is 1 plus", max_tokens=5, n=2, seed=11, temperature=1.0
    )
    assert [c.index for c in first.choices] == [0, 1]
    assert [c.text for c in first.choices] == [c.text for c in again.choices]


def test_openai_client_embeddings_and_models(openai_client):
    result = openai_client.embeddings.create(model="sentiment", input=["a smart , moving story", "boring"])
    assert len(result.data) == 2 and abs(sum(x * x for x in result.data[0].embedding) - 1) < 1e-4
    assert {m.id for m in openai_client.models.list()} == {"sentiment", "ner", "chat"}


def test_openai_client_logprobs_echo_token_ids_tools_and_one_model(openai_client):
    scored = openai_client.completions.create(
        model="chat", prompt="what is 2 plus 2", max_tokens=0, echo=True, logprobs=1, temperature=0
    )
    logprobs = scored.choices[0].logprobs
    assert scored.choices[0].text == "what is 2 plus 2" and logprobs.token_logprobs[0] is None
    assert all(lp <= 0 for lp in logprobs.token_logprobs[1:]) and len(logprobs.top_logprobs) == len(logprobs.tokens)
    by_ids = openai_client.completions.create(model="chat", prompt=[[5, 6, 7]], max_tokens=2, temperature=0)
    assert by_ids.choices[0].finish_reason in ("stop", "length")
    messages = [
        {"role": "user", "content": "add 2 and 2"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "add", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "4"},
    ]
    reply = openai_client.chat.completions.create(
        model="chat", messages=messages, max_tokens=4, temperature=None, logprobs=True, top_logprobs=2
    )
    content = reply.choices[0].logprobs.content
    assert reply.choices[0].message.refusal is None and all(len(t.top_logprobs) == 2 for t in content)
    assert openai_client.models.retrieve("chat").id == "chat"


def test_openai_client_parses_structured_output_into_a_pydantic_model(openai_client):
    from pydantic import BaseModel, Field

    class Answer(BaseModel):
        total: int = Field(ge=0, le=20)
        unit: str = Field(max_length=8)

    reply = openai_client.chat.completions.parse(
        model="chat",
        messages=[{"role": "user", "content": "what is 2 plus 3"}],
        response_format=Answer,
        max_tokens=40,
        temperature=0,
    )
    assert reply.choices[0].finish_reason == "stop" and isinstance(reply.choices[0].message.parsed, Answer)


def test_openai_client_forced_tool_call_whole_and_streamed(openai_client):
    tool = {
        "type": "function",
        "function": {
            "name": "add",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "integer", "maximum": 9}, "b": {"type": "integer", "maximum": 9}},
                "required": ["a", "b"],
                "additionalProperties": False,
            },
        },
    }
    common = {
        "model": "chat",
        "messages": [{"role": "user", "content": "add 2 and 3"}],
        "tools": [tool],
        "tool_choice": {"type": "function", "function": {"name": "add"}},
        "parallel_tool_calls": False,
        "max_tokens": 200,
        "temperature": 0,
    }
    reply = openai_client.chat.completions.create(**common)
    (call,) = reply.choices[0].message.tool_calls
    assert reply.choices[0].finish_reason == "tool_calls" and set(json.loads(call.function.arguments)) == {"a", "b"}
    streamed = [
        d
        for chunk in openai_client.chat.completions.create(**common, stream=True)
        for d in chunk.choices[0].delta.tool_calls or []
    ]
    assert [(d.function.name, d.function.arguments) for d in streamed] == [("add", call.function.arguments)]


def test_openai_client_sees_a_wrong_key_and_bad_requests_as_errors(live):
    import openai

    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{live}/v1", api_key="wrong", max_retries=0).models.list()
    with pytest.raises(openai.NotFoundError):
        openai.OpenAI(base_url=f"{live}/v1", api_key=API_KEY, max_retries=0).completions.create(
            model="missing", prompt="x"
        )
    with pytest.raises(openai.BadRequestError, match="audio"):
        openai.OpenAI(base_url=f"{live}/v1", api_key=API_KEY, max_retries=0).chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "x"}], audio={"voice": "alloy", "format": "wav"}
        )


def test_a_client_that_leaves_mid_stream_frees_its_slot(live, state):
    import httpx

    engine = state.models["chat"].engine
    with httpx.Client(base_url=live, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30) as http:
        with http.stream(
            "POST",
            "/v1/completions",
            json={"model": "chat", "prompt": "what is", "max_tokens": 40, "stream": True, "temperature": 1.0},
        ) as response:
            next(response.iter_lines())  # the first event, then hang up
        # the next request is served at once: the abandoned rows left the engine
        started = time.perf_counter()
        ok = http.post("/v1/completions", json={"model": "chat", "prompt": "hi", "max_tokens": 2})
        assert ok.status_code == 200 and time.perf_counter() - started < 10
    assert engine._jobs_waiting == 0


@pytest.mark.slow
def test_sigterm_drains_in_flight_requests_and_exits_0(runs, tmp_path):
    import httpx

    port = free_port()
    env = dict(os.environ, LMFORGE_API_KEY=API_KEY)
    # A batch that waits 2 s to fill keeps a classify request in flight when the signal comes.
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lmforge.cli.main",
            "serve",
            str(runs["sentiment"]),
            "--port",
            str(port),
            "--drain-timeout",
            "30",
            "--batch-wait-ms",
            "2000",
            "--max-batch",
            "64",
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    base, headers = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {API_KEY}"}
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(f"{base}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        results = {}

        def slow():
            results["slow"] = httpx.post(
                f"{base}/v1/classify", headers=headers, timeout=60, json={"input": "an absolute delight"}
            )

        thread = threading.Thread(target=slow)
        thread.start()
        time.sleep(0.3)
        server.send_signal(signal.SIGTERM)
        time.sleep(0.1)
        try:
            late = httpx.post(f"{base}/v1/classify", headers=headers, timeout=10, json={"input": "x"})
            assert late.status_code == 503 and httpx.get(f"{base}/health").status_code == 503
        except httpx.TransportError:  # or the socket is already closed: also "not accepting"
            pass
        thread.join(60)
        assert results["slow"].status_code == 200, results["slow"].text
        assert results["slow"].json()["data"][0]["label"] in ("pos", "neg")
        assert server.wait(60) == 0
        log = server.stderr.read()
        assert "draining (1 in flight" in log and API_KEY not in log
    finally:
        if server.poll() is None:
            server.kill()


@pytest.mark.slow
def test_workers_serve_and_stop_on_sigterm(runs):
    import httpx

    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lmforge.cli.main",
            "serve",
            str(runs["sentiment"]),
            "--port",
            str(port),
            "--workers",
            "2",
            "--batch-wait-ms",
            "2500",  # requests wait for their batch to fill: in flight when the signal comes
            "--max-batch",
            "64",
            "--drain-timeout",
            "60",
        ],
        env=dict(os.environ, LMFORGE_API_KEY=API_KEY),
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline, ready = time.time() + 90, 0
        while time.time() < deadline and ready < 6:  # every worker has loaded (each answers on its own)
            try:
                ready = ready + 1 if httpx.get(f"{base}/health").status_code == 200 else 0
            except httpx.TransportError:
                ready = 0
            time.sleep(0.2)
        assert ready >= 6
        for _ in range(4):
            response = httpx.post(
                f"{base}/v1/classify",
                json={"input": "an absolute delight"},
                headers={"Authorization": f"Bearer {API_KEY}"},
            )
            assert response.status_code == 200 and response.json()["data"][0]["label"] in ("pos", "neg")
        assert httpx.post(f"{base}/v1/classify", json={"input": "x"}).status_code == 401
        # /metrics of whichever worker answers counts every worker's requests
        counts = set()
        for _ in range(6):
            scraped = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {API_KEY}"}).text
            found = re.search(r'^lmforge_requests_total\{route="/v1/classify",status="200"\} ([0-9.]+)$', scraped, re.M)
            assert found, scraped[:2000]
            counts.add(float(found.group(1)))
        assert counts == {4.0}
        # Scaling down (SIGTERM to the server): every request already accepted is answered.
        answers: list = []

        def accepted(i: int) -> None:
            answers.append(
                httpx.post(
                    f"{base}/v1/classify",
                    json={"input": f"an absolute delight {i}"},
                    headers={"Authorization": f"Bearer {API_KEY}"},
                    timeout=90,
                )
            )

        threads = [threading.Thread(target=accepted, args=(i,)) for i in range(6)]
        for thread in threads:
            thread.start()
        deadline = time.time() + 30
        while time.time() < deadline:  # until all six wait in a batch (the scrape is the seventh in flight)
            scraped = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {API_KEY}"}).text
            found = re.search(r"^lmforge_in_flight ([0-9.]+)$", scraped, re.M)
            if found and float(found.group(1)) >= 7:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the six requests were never in flight together")
        server.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(90)
        assert [a.status_code for a in answers] == [200] * 6
        assert server.wait(60) == 0
    finally:
        if server.poll() is None:
            server.kill()
