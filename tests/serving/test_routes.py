"""The app's routes are exactly the expected ones, each in its group's router, and with a key set
every route but /health (and any unknown path) answers 401 without it. No model is needed: the
state serves none."""

import pytest

from lmforge.serving.app import create_app
from lmforge.serving.routers import admin, openai, tasks
from lmforge.serving.settings import ServeSettings
from lmforge.serving.state import ServerState

KEY = "route-test-key-0123456789"
GROUPS = {
    admin: {
        ("GET", "/health"),
        ("GET", "/metrics"),
        ("POST", "/v1/admin/adapters"),
        ("DELETE", "/v1/admin/adapters/{name}"),
    },
    openai: {
        ("GET", "/v1/models"),
        ("GET", "/v1/models/{model_id}"),
        ("POST", "/v1/completions"),
        ("POST", "/v1/chat/completions"),
    },
    tasks: {("POST", "/v1/classify"), ("POST", "/v1/ner"), ("POST", "/v1/embeddings")},
}
DOCS = {("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/docs/oauth2-redirect"), ("GET", "/redoc")}


def pairs(routes) -> set[tuple[str, str]]:
    # Starlette answers HEAD wherever it answers GET: not a route of its own.
    return {(method, route.path) for route in routes for method in route.methods - {"HEAD"}}


def app_with(key: str | None):
    state = ServerState(ServeSettings(sources=["none"], api_key=key), {})
    state.ready = True  # nothing to load
    return create_app(state)


@pytest.fixture(scope="module")
def client():
    from fastapi.testclient import TestClient

    return TestClient(app_with(KEY))


def test_the_routes_are_exactly_the_groups_and_the_docs():
    app = app_with(KEY)
    assert pairs(app.routes) == set().union(*GROUPS.values()) | DOCS
    for group, expected in GROUPS.items():
        assert pairs(group.router.routes) == expected, group.__name__


@pytest.mark.parametrize("method,path", sorted(set().union(*GROUPS.values()) | DOCS | {("GET", "/nowhere")}))
def test_every_route_but_health_needs_the_key(client, method, path):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}, {"Authorization": f"bearer {KEY}"}):
        response = client.request(method, path, headers=headers, json={})
        if path == "/health":
            assert response.status_code == 200
            continue
        if path.startswith("/v1/admin/"):  # the admin key guards these; without one they do not exist
            assert response.status_code == 404, (method, path, headers)
            continue
        assert response.status_code == 401, (method, path, headers)
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"]["type"] == "authentication_error"
    with_key = client.request(method, path, headers={"Authorization": f"Bearer {KEY}"}, json={})
    assert with_key.status_code != 401 and with_key.status_code < 500, with_key.text


def test_without_a_key_no_route_asks_for_one():
    from fastapi.testclient import TestClient

    open_client = TestClient(app_with(None))
    for method, path in sorted(set().union(*GROUPS.values()) | DOCS):
        response = open_client.request(method, path, json={})
        assert response.status_code != 401 and response.status_code < 500, (method, path, response.text)


def test_cors_is_off_unless_origins_are_given_and_a_preflight_needs_no_key():
    from fastapi.testclient import TestClient

    preflight = {"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"}
    closed = TestClient(app_with(KEY)).options("/v1/chat/completions", headers=preflight)
    assert "access-control-allow-origin" not in closed.headers
    state = ServerState(ServeSettings(sources=["none"], api_key=KEY, cors_origins=["https://app.example.com"]), {})
    state.ready = True
    client = TestClient(create_app(state))
    opened = client.options(
        "/v1/chat/completions", headers={**preflight, "Access-Control-Request-Headers": "authorization,content-type"}
    )
    assert opened.status_code == 200 and opened.headers["access-control-allow-origin"] == "https://app.example.com"
    other = client.options("/v1/models", headers={**preflight, "Origin": "https://evil.example.com"})
    assert other.headers.get("access-control-allow-origin") != "https://evil.example.com"
    answered = client.get("/v1/models", headers={"Origin": "https://app.example.com"})
    assert answered.status_code == 401 and answered.headers["access-control-allow-origin"] == "https://app.example.com"


def test_a_cors_origin_must_be_an_origin():
    from lmforge.errors import ConfigError

    with pytest.raises(ConfigError, match="cors-origins"):
        ServeSettings(sources=["x"], cors_origins=["app.example.com/path"]).check()
