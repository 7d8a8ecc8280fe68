"""The routes in-process: answers equal the predictor's, limits answer 4xx with OpenAI error bodies,
every route but /health needs the key, a full queue answers 429, and the logs hold no secrets."""

import json
import logging
import threading

import pytest
import torch
from served import API_KEY, client, make_state, runs, state  # noqa: F401  (fixtures)


def error_of(response, status):
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert body["message"] and body["type"]
    return body


def test_classify_answers_what_the_predictor_does(client, state):
    texts = ["a dull , lifeless mess", "an absolute delight", "the cast is wonderful"]
    response = client.post("/v1/classify", json={"model": "sentiment", "input": texts, "top_k": 1})
    assert response.status_code == 200, response.text
    body = response.json()
    expected = state.models["sentiment"].predictor.predict(texts, top_k=1)
    assert [(r["label"], r["score"]) for r in body["data"]] == [(e["label"], e["score"]) for e in expected]
    assert [len(r["top_k"]) for r in body["data"]] == [1, 1, 1] and body["usage"]["prompt_tokens"] > 6
    # one string in, one row out; the model may be left out when one model classifies
    one = client.post("/v1/classify", json={"input": texts[1]}).json()
    assert len(one["data"]) == 1 and one["data"][0]["label"] == expected[1]["label"]


def test_ner_spans_have_character_offsets(client):
    text = "John Smith visited Paris on Monday ."
    body = client.post("/v1/ner", json={"model": "ner", "input": [text, ""]}).json()
    spans = body["data"][0]["entities"]
    assert all(text[e["start"] : e["end"]] == e["text"] and 0 < e["score"] <= 1 for e in spans)
    assert body["data"][1]["entities"] == []


def test_embeddings_are_mean_pooled_normalized_and_base64_decodes_to_the_same(client, state):
    import base64

    import numpy as np

    texts = ["a smart , moving story", "boring"]
    floats = client.post("/v1/embeddings", json={"model": "sentiment", "input": texts}).json()["data"]
    packed = client.post(
        "/v1/embeddings", json={"model": "sentiment", "input": texts, "encoding_format": "base64"}
    ).json()["data"]
    served = state.models["sentiment"]
    tok = served.predictor.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = served.predictor.model(**tok, output_hidden_states=True).hidden_states[-1].float()
    mask = tok["attention_mask"].unsqueeze(-1).float()
    expected = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    for row, b64, want in zip(floats, packed, expected):
        assert torch.allclose(torch.tensor(row["embedding"]), want, atol=1e-5)
        assert np.allclose(np.frombuffer(base64.b64decode(b64["embedding"]), dtype="<f4"), row["embedding"])


@pytest.mark.parametrize(
    "route,body,status,words",
    [
        ("/v1/classify", {"input": ["x"] * 65}, 413, "limit is 64"),
        ("/v1/classify", {"input": []}, 400, "at least 1"),
        ("/v1/classify", {"input": 3}, 400, "input"),
        ("/v1/classify", {"input": "x", "model": "nope"}, 404, "not served"),
        ("/v1/classify", {"input": "x", "model": "chat"}, 400, "does not serve"),
        ("/v1/classify", {"input": "word " * 600}, 413, "truncate"),
        ("/v1/completions", {"model": "chat", "prompt": "hi", "n": 5}, 400, "'n'"),
        ("/v1/completions", {"model": "chat", "prompt": "hi", "stop": list("abcde")}, 400, "'stop'"),
        ("/v1/completions", {"model": "chat", "prompt": "hi", "max_tokens": 10**9}, 400, "context"),
        ("/v1/completions", {"model": "chat", "prompt": "hi", "temperature": 9}, 400, "temperature"),
        ("/v1/chat/completions", {"model": "chat", "messages": []}, 400, "messages"),
        ("/v1/chat/completions", {"model": "chat", "messages": [{"role": "robot", "content": "x"}]}, 400, "role"),
        ("/v1/embeddings", {"model": "chat", "input": "x"}, 400, "does not serve"),
        ("/v1/embeddings", {"model": "sentiment", "input": "word " * 600}, 413, "truncate"),
    ],
)
def test_bad_requests_get_4xx_with_a_message(client, route, body, status, words):
    assert words in error_of(client.post(route, json=body), status)["message"]


def test_long_input_is_cut_when_asked(client):
    response = client.post("/v1/classify", json={"input": "word " * 600, "truncate": True})
    assert response.status_code == 200 and response.json()["usage"]["prompt_tokens"] <= 512


def test_malformed_json_wrong_media_type_and_big_body(client):
    assert (
        error_of(client.post("/v1/classify", content=b"{nope", headers={"Content-Type": "application/json"}), 400)[
            "code"
        ]
        == "invalid_json"
    )
    error_of(
        client.post("/v1/classify", content=b"input=x", headers={"Content-Type": "application/x-www-form-urlencoded"}),
        415,
    )
    big = json.dumps({"input": "x" * (2 * 1024 * 1024)})
    assert (
        "limit"
        in error_of(client.post("/v1/classify", content=big, headers={"Content-Type": "application/json"}), 413)[
            "message"
        ]
    )


def test_every_route_but_health_needs_the_key(client, state):
    from fastapi.testclient import TestClient

    from lmforge.serving.app import create_app

    app = create_app(state)
    paths = {(route.path, sorted(route.methods - {"HEAD"})[0]) for route in app.routes if hasattr(route, "methods")}
    assert {"/v1/classify", "/v1/chat/completions", "/metrics", "/openapi.json"} <= {p for p, _ in paths}
    bare = TestClient(app)
    for path, method in sorted(paths):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY}):
            response = bare.request(method, path, headers=headers, json={})
            if path == "/health":  # open, but the model names only with the key
                assert response.status_code == 200 and response.json() == {"status": "ok"}
            elif path.startswith("/v1/admin/"):  # the admin key guards these; this server has none
                assert response.status_code == 404, (path, headers)
            else:
                assert response.status_code == 401, (path, headers)
                assert response.json()["error"]["type"] == "authentication_error"
    keyed = bare.get("/health", headers={"Authorization": f"Bearer {API_KEY}"}).json()
    assert keyed == {"status": "ok", "models": sorted(state.models, key=list(state.models).index)}


def test_health_is_503_while_loading(runs):
    from fastapi.testclient import TestClient

    from lmforge.serving.app import create_app
    from lmforge.serving.services import open_models
    from lmforge.serving.settings import ServeSettings
    from lmforge.serving.state import ServerState

    settings = ServeSettings(sources=[str(runs["sentiment"])])
    loading = ServerState(settings, open_models(settings))  # not loaded yet
    test_client = TestClient(create_app(loading))
    assert test_client.get("/health").status_code == 503
    assert test_client.get("/health").json()["status"] == "loading"
    assert error_of(test_client.post("/v1/classify", json={"input": "x"}), 503)["type"] == "unavailable"
    loading.draining = True
    assert test_client.get("/health").json()["status"] == "draining"
    assert error_of(test_client.post("/v1/classify", json={"input": "x"}), 503)


def test_full_queue_answers_429_at_once(runs):
    from fastapi.testclient import TestClient

    from lmforge.serving.app import create_app

    busy = make_state(runs, max_queue=1, max_generation_batch=1, sources=[str(runs["chat"])], api_key=None)
    test_client = TestClient(create_app(busy))
    statuses, gate = [], threading.Barrier(6)

    def ask():
        gate.wait()
        statuses.append(
            test_client.post("/v1/completions", json={"model": "chat", "prompt": "what is 1 plus 1", "max_tokens": 40})
        )

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    codes = sorted(r.status_code for r in statuses)
    assert set(codes) <= {200, 429} and 429 in codes and 200 in codes, codes
    refused = next(r for r in statuses if r.status_code == 429)
    assert refused.headers["Retry-After"] == "1" and refused.json()["error"]["code"] == "queue_full"
    busy.close()


def test_metrics_count_requests_tokens_and_batches(client):
    client.post("/v1/classify", json={"input": ["one", "two"]})
    client.post("/v1/completions", json={"model": "chat", "prompt": "what is", "max_tokens": 3})
    text = client.get("/metrics").text
    for name in (
        'lmforge_requests_total{route="/v1/classify",status="200"}',
        "lmforge_request_seconds_bucket",
        'lmforge_tokens_in_total{model="sentiment"}',
        'lmforge_tokens_out_total{model="chat"}',
        'lmforge_batch_size_count{model="sentiment"}',
        "lmforge_queue_depth",
        "lmforge_in_flight",
    ):
        assert name in text, name


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_one_log_line_per_request_without_key_or_prompt(client):
    secret_prompt = "my card number is 4111\x1b[31m"
    handler, logger = _Lines(), logging.getLogger("lmforge.serve")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        client.post("/v1/completions", json={"model": "chat", "prompt": secret_prompt, "max_tokens": 2})
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    lines = handler.lines
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["route"] == "/v1/completions" and entry["status"] == 200 and entry["model"] == "chat"
    assert API_KEY not in lines[0] and "4111" not in lines[0] and "\x1b" not in lines[0]


def test_streaming_chat_sends_role_content_finish_and_done(client):
    with client.stream(
        "POST",
        "/v1/chat/completions",
        json={
            "model": "chat",
            "messages": [{"role": "user", "content": "what is 2 plus 3"}],
            "max_tokens": 6,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-2]["choices"][0]["finish_reason"] in ("stop", "length")
    assert chunks[-1]["usage"]["completion_tokens"] >= 1 and chunks[-1]["choices"] == []


def test_auto_precision_keeps_float32_unless_native_and_answers_agree(monkeypatch):
    from lmforge.serving import precision

    model = torch.nn.Linear(4, 2)
    monkeypatch.setattr(precision, "bf16_native", lambda device: False)
    assert precision.settle("auto", model, lambda: 0, lambda a, b: True, "m") == "float32"
    assert model.weight.dtype == torch.float32
    monkeypatch.setattr(precision, "bf16_native", lambda device: True)
    assert precision.settle("auto", model, lambda: 0, lambda a, b: False, "m") == "float32"
    assert model.weight.dtype == torch.float32  # put back after the check failed
    assert precision.settle("auto", model, lambda: 0, lambda a, b: True, "m") == "bfloat16"
    assert model.weight.dtype == torch.bfloat16
    assert precision.same_classes([{"label": "a", "score": 0.5}], [{"label": "a", "score": 0.51}])
    assert not precision.same_classes([{"label": "a", "score": 0.5}], [{"label": "b", "score": 0.5}])


def test_models_report_their_dtype(client):
    cards = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert cards["ner"]["dtype"] == "float32"
    assert cards["chat"]["dtype"] in ("float32", "bfloat16", "int8")  # auto: what the CPU computes natively
    assert cards["sentiment"]["dtype"] in ("float32", "bfloat16")


def test_settings_refuse_an_open_host_without_a_key_and_bad_limits():
    from lmforge.errors import ConfigError
    from lmforge.serving.settings import ServeSettings

    with pytest.raises(ConfigError, match="without an API key"):
        ServeSettings(sources=["x"], host="0.0.0.0").check()
    ServeSettings(sources=["x"], host="0.0.0.0", api_key="k").check()
    ServeSettings(sources=["x"], host="0.0.0.0", allow_insecure=True).check()
    with pytest.raises(ConfigError, match="max-n"):
        ServeSettings(sources=["x"], max_n=0).check()
    with pytest.raises(ConfigError, match="dtype"):
        ServeSettings(sources=["x"], dtype="float16").check()


def test_serve_cli_errors_are_one_line(run_cli, tmp_path):
    code, _, err = run_cli("serve", str(tmp_path / "missing"))
    assert code != 0 and err.count("\n") == 1 and "missing" in err
    code, _, err = run_cli("serve", "minilm", "--host", "0.0.0.0")
    assert code != 0 and "--api-key" in err


def test_a_prompt_run_is_refused_with_what_to_serve_instead(run_cli, tmp_path):
    run = tmp_path / "prompted"
    run.mkdir()
    (run / "lmforge.json").write_text(
        json.dumps({"task": "classification", "model": {"family": "prompt", "source": "smollm2"}})
    )
    code, _, err = run_cli("serve", str(run))
    assert code != 0 and "prompt run" in err and "smollm2" in err
