"""Clients that hold connections: headers sent a byte at a time are cut at --header-timeout, a body
that trickles is a 408 at --body-timeout, connections beyond --max-connections get 503, and a normal
client is served meanwhile. A real uvicorn server on a loopback port (the limits live in its
protocol, not in the app)."""

import json
import socket
import threading
import time

import pytest
import uvicorn
from served import API_KEY, make_state, runs  # noqa: F401  (fixtures)

from lmforge.serving.app import create_app
from lmforge.serving.server import connection_limits


@pytest.fixture(scope="module")
def server(runs):  # noqa: F811
    state = make_state(runs, header_timeout=0.5, body_timeout=0.5, max_connections=40)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(
        create_app(state), host="127.0.0.1", port=port, log_level="error", **connection_limits(state.settings)
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield port
    server.should_exit = True
    thread.join(timeout=30)
    state.close()


def classify(port: int) -> int:
    body = json.dumps({"input": "a fine film"}).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(
            b"POST /v1/classify HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {API_KEY}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        return int(_read_all(s).split(b" ", 2)[1])


def _read_all(s: socket.socket) -> bytes:
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    return data


def test_headers_sent_too_slowly_close_the_connection_and_others_are_served(server):
    slow = [socket.create_connection(("127.0.0.1", server), timeout=5) for _ in range(20)]
    for s in slow:
        s.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: t\r\n")  # and no more
    assert classify(server) == 200  # served while they hang
    for s in slow:
        assert _read_all(s) == b""  # closed by the server, with no answer
        s.close()


def test_a_body_that_trickles_is_a_408(server):
    with socket.create_connection(("127.0.0.1", server), timeout=5) as s:
        s.sendall(
            b"POST /v1/classify HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {API_KEY}\r\nContent-Length: 100\r\n\r\n".encode()
            + b'{"input": '
        )
        answer = _read_all(s)
    assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive within 0.5 s" in answer


def test_connections_beyond_the_limit_get_503(server):
    held = [socket.create_connection(("127.0.0.1", server), timeout=5) for _ in range(40)]
    try:
        time.sleep(0.1)
        assert classify(server) == 503
    finally:
        for s in held:
            s.close()
    time.sleep(0.2)
    assert classify(server) == 200


def test_websocket_upgrades_are_refused(server):
    with socket.create_connection(("127.0.0.1", server), timeout=5) as s:
        s.sendall(
            b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        first = s.recv(65536).split(b"\r\n", 1)[0]
    assert not first.startswith(b"HTTP/1.1 101")  # never switched protocols
