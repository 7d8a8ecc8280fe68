"""serve --api-keys FILE: hashed keys with scopes and rates, rotated without a restart, and the
audit log (issue 32)."""

import json
import time

import pytest
from fastapi.testclient import TestClient
from served import make_state, runs  # noqa: F401  (fixtures)

from lmforge.errors import ConfigError
from lmforge.serving import keys as keymod
from lmforge.serving.app import create_app
from lmforge.serving.keys import hash_key, read_keys

APP_KEY, EMBED_KEY, OPS_KEY = "app-key-0123456789", "embed-key-0123456789", "ops-key-0123456789"


def write_keys(path, rows, **extra):
    lines = ["keys:"]
    for ident, key, scopes, rate in rows:
        lines += [f"  - id: {ident}", f"    sha256: {hash_key(key)}", f"    scopes: [{', '.join(scopes)}]"]
        if rate:
            lines.append(f"    requests_per_minute: {rate}")
        lines += [f"    {name}: {value}" for name, value in extra.get(ident, {}).items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def served(runs, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setattr(keymod, "RELOAD_CHECK_S", 0.0)
    keyfile = write_keys(
        tmp_path / "keys.yaml",
        [("app", APP_KEY, ["infer"], 3), ("embedder", EMBED_KEY, ["embed"], None), ("ops", OPS_KEY, ["admin"], None)],
    )
    audit = tmp_path / "audit.jsonl"
    state = make_state(runs, api_key=None, api_keys=str(keyfile), audit_log=str(audit))
    with TestClient(create_app(state)) as client:
        yield client, keyfile, audit
    state.close()


def call(client, key, route="/v1/classify", body=None):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if route in ("/metrics", "/health"):
        return client.get(route, headers=headers)
    return client.post(route, json=body or {"model": "sentiment", "input": "a fine film"}, headers=headers)


def test_scopes_rates_and_the_audit_log(served):
    client, _, audit = served
    assert call(client, None).status_code == 401 and call(client, "not-a-key").status_code == 401
    assert call(client, APP_KEY).status_code == 200
    denied = call(client, EMBED_KEY)  # a key without 'infer'
    assert denied.status_code == 403 and "no 'infer' scope" in denied.json()["error"]["message"]
    assert call(client, EMBED_KEY, "/v1/embeddings", {"model": "sentiment", "input": "x"}).status_code == 200
    assert call(client, APP_KEY, "/metrics").status_code == 403 and call(client, OPS_KEY, "/metrics").status_code == 200
    # 'app' may make 3 requests a minute: it made 1; two more pass, the next waits
    assert [call(client, APP_KEY).status_code for _ in range(2)] == [200, 200]
    limited = call(client, APP_KEY)
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert call(client, EMBED_KEY, "/v1/embeddings", {"model": "sentiment", "input": "x"}).status_code == 200
    # /health names the models to a holder of any key only
    assert "models" not in call(client, None, "/health").json() and call(client, OPS_KEY, "/health").json()["models"]
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    assert {"time", "key", "route", "status", "ms", "method"} <= set(lines[2])
    classify = [(r.get("key"), r["status"]) for r in lines if r["route"] == "/v1/classify"]
    assert classify == [
        (None, 401),
        (None, 401),
        ("app", 200),
        ("embedder", 403),
        ("app", 200),
        ("app", 200),
        ("app", 429),
    ]
    assert APP_KEY not in audit.read_text() and "a fine film" not in audit.read_text()  # no key, no text


def test_keys_rotate_without_a_restart_and_a_broken_file_keeps_the_old_ones(served):
    client, keyfile, _ = served
    new_key = "rotated-key-0123456789"
    time.sleep(0.01)
    write_keys(keyfile, [("app", new_key, ["infer"], None), ("ops", OPS_KEY, ["admin"], None)])
    assert call(client, APP_KEY).status_code == 401  # the old key is gone
    assert call(client, new_key).status_code == 200
    time.sleep(0.01)
    keyfile.write_text("keys: [{id: app, sha256: nothex, scopes: [infer]}]\n")  # a mistake while editing
    assert call(client, new_key).status_code == 200  # the keys before it stay in force


def test_token_quotas_charge_what_requests_used_and_the_audit_log_counts_it(runs, tmp_path):  # noqa: F811
    chat_key = "chat-key-0123456789"
    keyfile = write_keys(
        tmp_path / "keys.yaml",
        [("app", APP_KEY, ["infer"], None), ("chat", chat_key, ["infer"], None)],
        app={"tokens_per_minute": 6, "tokens_per_day": 100000},
        chat={"tokens_per_day": 10},
    )
    audit = tmp_path / "audit.jsonl"
    state = make_state(runs, api_key=None, api_keys=str(keyfile), audit_log=str(audit))
    try:
        with TestClient(create_app(state)) as client:
            first = call(client, APP_KEY, body={"model": "sentiment", "input": ["a fine film", "dull"]})
            assert first.status_code == 200
            used = first.json()["usage"]["prompt_tokens"]
            assert used > 6  # more than the minute's quota: admitted while the bucket was full, now in debt
            over = call(client, APP_KEY)
            assert over.status_code == 429 and "6 tokens per minute" in over.json()["error"]["message"]
            assert int(over.headers["retry-after"]) >= (used - 6) * 60 // 6  # until the debt is repaid
            body = {"model": "chat", "prompt": "hello", "max_tokens": 4, "temperature": 0}
            answer = call(client, chat_key, "/v1/completions", body)
            assert answer.status_code == 200, answer.text
            usage = answer.json()["usage"]
            again = call(client, chat_key, "/v1/completions", body)
            assert again.status_code == (429 if usage["total_tokens"] >= 10 else 200)
        lines = [json.loads(line) for line in audit.read_text().splitlines()]
        counted = [(r["key"], r["status"], r.get("prompt_tokens"), r.get("completion_tokens")) for r in lines]
        assert counted[:3] == [
            ("app", 200, used, 0),
            ("app", 429, None, None),
            ("chat", 200, usage["prompt_tokens"], usage["completion_tokens"]),
        ]
    finally:
        state.close()


def test_token_buckets_refill_evenly_and_requests_are_charged_even_when_cut_short(tmp_path, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(keymod.time, "monotonic", lambda: now[0])
    keys = keymod.KeyFile(
        write_keys(tmp_path / "k.yaml", [("a", APP_KEY, ["infer"], None)], a={"tokens_per_minute": 60})
    )
    (entry,) = keys.entries.values()
    assert keys.admit(entry) is None
    keys.charge(entry, 90)  # 60 - 90 = -30: 30 tokens of debt at one token a second
    refusal = keys.admit(entry)
    assert refusal is not None and refusal.limit == "60 tokens per minute" and refusal.wait == 31
    now[0] += 30.5  # 0.5 tokens left: admitted again
    assert keys.admit(entry) is None
    now[0] += 3600  # refilled to the capacity, no more
    keys.charge(entry, 60)
    assert keys.admit(entry) is not None


@pytest.mark.parametrize(
    "text,words",
    [
        ("", "list under 'keys'"),
        ("keys: [{id: a, sha256: abc, scopes: [infer]}]", "SHA-256 in hex"),
        (f"keys: [{{id: a, sha256: {'a' * 64}, scopes: [everything]}}]", "'scopes' must list"),
        (f"keys: [{{id: a, sha256: {'a' * 64}, scopes: [infer], color: red}}]", "unknown field 'color'"),
        (f"keys: [{{id: a, sha256: {'a' * 64}, scopes: [infer], requests_per_minute: 0}}]", "at least 1"),
        (f"keys: [{{id: a, sha256: {'a' * 64}, scopes: [infer], tokens_per_day: 1.5}}]", "'tokens_per_day' must"),
        (
            f"keys: [{{id: a, sha256: {'a' * 64}, scopes: [infer]}}, {{id: a, sha256: {'b' * 64}, scopes: [infer]}}]",
            "used twice",
        ),
    ],
)
def test_a_bad_key_file_is_one_line_naming_the_entry(tmp_path, text, words):
    path = tmp_path / "keys.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=words):
        read_keys(path)
