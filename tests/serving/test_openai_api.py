"""More of the OpenAI API than chat and completions: log-probabilities (checked against the model's
own forward pass), echo and prompt scoring, prompts and embedding inputs as token ids, logit bias
and penalties (checked against a reference decoder), best_of, nulls where the spec allows them,
tool messages, GET /v1/models/{id}, and a 400 naming every parameter the server does not implement."""

import json

import pytest
import torch
from served import API_KEY, client, runs, state  # noqa: F401  (fixtures)


def ok(response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def refused(response, param: str) -> str:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param, error
    return error["message"]


@pytest.fixture(scope="module")
def chat_model(state):
    return state.models["chat"].generator


def model_logprobs(generator, ids: list[int]) -> torch.Tensor:
    """log p(ids[k] | ids[:k]) for k >= 1, from one forward pass of the model."""
    with torch.inference_mode():
        logits = generator.model(torch.tensor([ids])).logits[0].float()
    return logits[:-1].log_softmax(-1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0]


def reference_greedy(generator, ids, steps, bias=None, presence=0.0, frequency=0.0) -> list[int]:
    """Greedy decoding without a cache, with OpenAI's logit bias and penalties on generated tokens."""
    out: list[int] = []
    for _ in range(steps):
        with torch.inference_mode():
            logits = generator.model(torch.tensor([ids + out])).logits[0, -1].float()
        logits = logits.clone()  # an inference tensor cannot be changed outside inference mode
        for token, value in (bias or {}).items():
            logits[token] += value
        for token in set(out):
            logits[token] -= out.count(token) * frequency + presence
        token = int(logits.argmax())
        if token in generator.stop_ids:
            break
        out.append(token)
    return out


def test_completion_logprobs_are_the_models_own(client, chat_model):
    body = ok(
        client.post(
            "/v1/completions",
            json={"model": "chat", "prompt": "what is 2 plus 3", "max_tokens": 6, "temperature": 0, "logprobs": 2},
        )
    )
    choice = body["choices"][0]
    logprobs = choice["logprobs"]
    n = body["usage"]["completion_tokens"]
    prompt = chat_model.encode("what is 2 plus 3", raw=True)
    generated = chat_model.tokenizer(choice["text"], add_special_tokens=False)["input_ids"]
    assert len(logprobs["tokens"]) == len(generated) == n - (choice["finish_reason"] == "stop")
    want = model_logprobs(chat_model, prompt + generated)[len(prompt) - 1 :]
    assert logprobs["token_logprobs"] == pytest.approx(want.tolist(), abs=1e-4)
    assert "".join(logprobs["tokens"]) == choice["text"]
    for token, logprob, top in zip(logprobs["tokens"], logprobs["token_logprobs"], logprobs["top_logprobs"]):
        assert token in top and max(top.values()) == pytest.approx(logprob)  # greedy took the most likely
        assert 2 <= len(top) <= 3
    offsets = logprobs["text_offset"]
    assert offsets[0] == len("what is 2 plus 3")  # counted from the start of the prompt, as OpenAI does
    assert all(b - a == len(t) for a, b, t in zip(offsets, offsets[1:], logprobs["tokens"]))


def test_echo_with_no_new_tokens_scores_the_prompt(client, chat_model):
    """What evaluation harnesses send to score a continuation through the API."""
    text = "what is 4 plus 1"
    choice = ok(
        client.post(
            "/v1/completions",
            json={"model": "chat", "prompt": text, "max_tokens": 0, "echo": True, "logprobs": 1, "temperature": 0},
        )
    )["choices"][0]
    ids = chat_model.encode(text, raw=True)
    assert choice["text"] == text and choice["finish_reason"] == "length"
    logprobs = choice["logprobs"]
    assert len(logprobs["tokens"]) == len(ids) and logprobs["token_logprobs"][0] is None
    assert logprobs["top_logprobs"][0] is None and logprobs["text_offset"][0] == 0
    assert logprobs["token_logprobs"][1:] == pytest.approx(model_logprobs(chat_model, ids).tolist(), abs=1e-4)
    assert refused(
        client.post("/v1/completions", json={"model": "chat", "prompt": text, "max_tokens": 0}), "max_tokens"
    )


def test_echo_puts_the_prompt_before_each_choice(client):
    body = {"model": "chat", "prompt": ["what is 1 plus 1", "hi"], "max_tokens": 3, "echo": True, "n": 2, "seed": 3}
    choices = ok(client.post("/v1/completions", json=body))["choices"]
    assert [c["text"].startswith(p) for c, p in zip(choices, ["what is 1 plus 1"] * 2 + ["hi"] * 2)] == [True] * 4


def test_prompts_as_token_ids_answer_as_the_text_does(client, chat_model):
    text = "what is 3 plus 3"
    ids = chat_model.encode(text, raw=True)
    common = {"model": "chat", "max_tokens": 5, "temperature": 0}
    by_text = ok(client.post("/v1/completions", json={**common, "prompt": text}))["choices"][0]["text"]
    by_ids = ok(client.post("/v1/completions", json={**common, "prompt": ids}))["choices"]
    two = ok(client.post("/v1/completions", json={**common, "prompt": [ids, ids[:3]]}))["choices"]
    assert by_ids[0]["text"] == by_text == two[0]["text"] and len(two) == 2
    too_big = {**common, "prompt": [1, 2, 10**6]}
    assert "vocabulary" in refused(client.post("/v1/completions", json=too_big), "prompt")


@pytest.mark.parametrize("presence,frequency", [(0.0, 0.0), (1.5, 0.0), (0.0, 2.0), (-1.0, 1.0)])
def test_logit_bias_and_penalties_decode_as_the_reference(client, chat_model, presence, frequency):
    prompt = chat_model.encode("what is 5 plus 5", raw=True)
    free = reference_greedy(chat_model, prompt, 1)
    bias = {free[0]: -100.0, 7: 5.0} if free else {7: 5.0}
    body = {
        "model": "chat",
        "prompt": prompt,
        "max_tokens": 8,
        "temperature": 0,
        "logit_bias": {str(k): v for k, v in bias.items()},
        "presence_penalty": presence,
        "frequency_penalty": frequency,
    }
    text = ok(client.post("/v1/completions", json=body))["choices"][0]["text"]
    want = reference_greedy(chat_model, prompt, 8, bias, presence, frequency)
    assert text == chat_model.tokenizer.decode(want, skip_special_tokens=True).rstrip("\ufffd")


def test_bad_logit_bias_and_penalties_are_400(client):
    base = {"model": "chat", "prompt": "hi", "max_tokens": 2}
    assert "token id" in refused(client.post("/v1/completions", json={**base, "logit_bias": {"x": 1}}), "logit_bias")
    assert refused(client.post("/v1/completions", json={**base, "logit_bias": {"10000000": 1}}), "logit_bias")
    assert refused(client.post("/v1/completions", json={**base, "logit_bias": {"5": 101}}), "logit_bias.5")
    assert refused(client.post("/v1/completions", json={**base, "presence_penalty": 3}), "presence_penalty")


def test_best_of_returns_the_most_likely_of_the_rows(client):
    common = {"model": "chat", "prompt": "what is 1 plus 4", "max_tokens": 6, "temperature": 1.0, "seed": 11}
    rows = ok(client.post("/v1/completions", json={**common, "n": 4, "logprobs": 0}))["choices"]
    means = [sum(c["logprobs"]["token_logprobs"]) / max(1, len(c["logprobs"]["token_logprobs"])) for c in rows]
    best = ok(client.post("/v1/completions", json={**common, "n": 1, "best_of": 4}))["choices"]
    assert len(best) == 1 and best[0]["logprobs"] is None
    assert best[0]["text"] == rows[max(range(4), key=lambda i: means[i])]["text"]
    assert refused(client.post("/v1/completions", json={**common, "n": 2, "best_of": 1}), "best_of")
    assert refused(client.post("/v1/completions", json={**common, "best_of": 3, "stream": True}), "best_of")


def test_chat_logprobs_bytes_and_top_alternatives(client):
    messages = [{"role": "user", "content": "what is 2 plus 2"}]
    common = {"model": "chat", "messages": messages, "max_tokens": 6, "temperature": 0}
    choice = ok(client.post("/v1/chat/completions", json={**common, "logprobs": True, "top_logprobs": 3}))["choices"][0]
    content = choice["logprobs"]["content"]
    assert choice["message"]["refusal"] is None and choice["logprobs"]["refusal"] is None
    assert bytes(b for entry in content for b in entry["bytes"]).decode() == choice["message"]["content"]
    for entry in content:
        assert len(entry["top_logprobs"]) == 3
        assert entry["top_logprobs"][0]["logprob"] == pytest.approx(entry["logprob"])  # greedy
    plain = ok(client.post("/v1/chat/completions", json=common))["choices"][0]
    assert plain["logprobs"] is None and plain["message"]["content"] == choice["message"]["content"]
    assert refused(client.post("/v1/chat/completions", json={**common, "top_logprobs": 2}), "top_logprobs")


def _events(client, body):
    with client.stream("POST", body.pop("route"), json=body) as response:
        assert response.status_code == 200
        lines = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def test_streamed_logprobs_are_the_whole_answers(client):
    common = {"model": "chat", "max_tokens": 7, "temperature": 0}
    completion = {**common, "prompt": "what is 3 plus 1", "logprobs": 2, "echo": True}
    whole = ok(client.post("/v1/completions", json=completion))["choices"][0]
    chunks = _events(client, {**completion, "route": "/v1/completions", "stream": True})
    tokens = [t for c in chunks for t in (c["choices"][0]["logprobs"] or {"tokens": []})["tokens"]]
    offsets = [t for c in chunks for t in (c["choices"][0]["logprobs"] or {"text_offset": []})["text_offset"]]
    assert "".join(c["choices"][0]["text"] for c in chunks) == whole["text"]
    assert tokens == whole["logprobs"]["tokens"] and offsets == whole["logprobs"]["text_offset"]
    chat = {**common, "messages": [{"role": "user", "content": "what is 3 plus 1"}], "logprobs": True}
    whole = ok(client.post("/v1/chat/completions", json=chat))["choices"][0]
    chunks = _events(client, {**chat, "route": "/v1/chat/completions", "stream": True})
    entries = [e for c in chunks for e in ((c["choices"][0]["logprobs"] or {}).get("content") or [])]
    assert [e["token"] for e in entries] == [e["token"] for e in whole["logprobs"]["content"]]


def test_nulls_mean_the_defaults(client):
    nulls = dict.fromkeys(["temperature", "top_p", "n", "stream", "stop", "seed", "stream_options", "user"])
    nulls.update(dict.fromkeys(["logprobs", "presence_penalty", "frequency_penalty", "logit_bias"]))
    body = ok(client.post("/v1/completions", json={"model": "chat", "prompt": "hi", "max_tokens": None, **nulls}))
    assert len(body["choices"]) == 1
    chat = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, **nulls}
    chat.update(top_logprobs=None, max_completion_tokens=None, tools=None, response_format=None)
    assert len(ok(client.post("/v1/chat/completions", json=chat))["choices"]) == 1


def test_tool_messages_and_assistant_tool_calls_are_read(client):
    messages = [
        {"role": "user", "content": "what is 2 plus 2"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a":2,"b":2}'}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "4"},
    ]
    body = ok(client.post("/v1/chat/completions", json={"model": "chat", "messages": messages, "max_tokens": 3}))
    assert body["choices"][0]["message"]["role"] == "assistant"
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]
    response = client.post("/v1/chat/completions", json={"model": "chat", "messages": image})
    assert response.status_code == 400 and "messages" in response.json()["error"]["param"]


@pytest.mark.parametrize(
    "route,extra,param",
    [
        ("/v1/chat/completions", {"tool_choice": "required"}, "tool_choice"),
        ("/v1/chat/completions", {"audio": {"voice": "x"}}, "audio"),
        ("/v1/completions", {"suffix": "and that is all"}, "suffix"),  # the tiny model has no FIM tokens
    ],
)
def test_what_the_server_does_not_do_is_a_400_naming_it(client, route, extra, param):
    body = {"model": "chat", "max_tokens": 2, **extra}
    body.update({"messages": [{"role": "user", "content": "hi"}]} if "chat" in route else {"prompt": "hi"})
    refused(client.post(route, json=body), param)


def test_off_values_of_unimplemented_parameters_are_fine(client):
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    body.update(response_format={"type": "text"}, tool_choice="none", tools=[], store=False, vendor_field=1)
    ok(client.post("/v1/chat/completions", json=body))


def test_one_model_card_by_id(client):
    assert ok(client.get("/v1/models/chat"))["id"] == "chat"
    response = client.get("/v1/models/nope")
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"


def test_embeddings_of_token_ids_are_those_of_the_text(client, state):
    tokenizer = state.models["sentiment"].embedder.tokenizer
    text = "a fine film"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    by_text = ok(client.post("/v1/embeddings", json={"model": "sentiment", "input": text}))["data"][0]["embedding"]
    by_ids = ok(client.post("/v1/embeddings", json={"model": "sentiment", "input": [ids, ids]}))["data"]
    assert by_ids[0]["embedding"] == pytest.approx(by_text, abs=1e-5) and len(by_ids) == 2
    one = ok(client.post("/v1/embeddings", json={"model": "sentiment", "input": ids}))["data"]
    assert len(one) == 1
    bad = client.post("/v1/embeddings", json={"model": "sentiment", "input": [10**7]})
    assert refused(bad, "input")


SCHEMA = {
    "type": "object",
    "properties": {
        "answer": {"type": "integer", "minimum": 0, "maximum": 99},
        "words": {"type": "array", "items": {"type": "string", "enum": ["yes", "no"]}, "maxItems": 3},
        "sure": {"type": "boolean"},
    },
    "required": ["answer", "words", "sure"],
    "additionalProperties": False,
}


@pytest.mark.parametrize("temperature,seed", [(0, None), (1.0, 1), (1.0, 2), (1.5, 3)])
def test_json_schema_replies_always_parse_and_validate(client, temperature, seed):
    """A tiny model that never saw JSON still answers JSON that validates, greedy or sampled."""
    jsonschema = pytest.importorskip("jsonschema")
    body = {
        "model": "chat",
        "messages": [{"role": "user", "content": "what is 2 plus 2"}],
        "max_tokens": 60,
        "temperature": temperature,
        "seed": seed,
        "n": 2,
        "response_format": {"type": "json_schema", "json_schema": {"name": "sum", "schema": SCHEMA, "strict": True}},
    }
    for choice in ok(client.post("/v1/chat/completions", json=body))["choices"]:
        assert choice["finish_reason"] == "stop", choice  # the grammar ends the reply where the JSON ends
        jsonschema.validate(json.loads(choice["message"]["content"]), SCHEMA)


def test_json_object_streams_json(client):
    body = {
        "route": "/v1/chat/completions",
        "model": "chat",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 40,
        "temperature": 1.0,
        "seed": 5,
        "stream": True,
        "response_format": {"type": "json_object"},
    }
    chunks = _events(client, body)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    if chunks[-1]["choices"][0]["finish_reason"] == "stop":
        assert isinstance(json.loads(text), dict)
    else:  # cut by max_tokens inside the object: still a prefix of one
        assert text.startswith("{")


def test_a_schema_that_does_not_compile_is_a_400(client):
    form = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "response_format": form}
    assert "nonsense" in refused(client.post("/v1/chat/completions", json=body), "response_format")
    body["response_format"] = {"type": "json_schema"}
    refused(client.post("/v1/chat/completions", json=body), "response_format")


WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 12}, "unit": {"enum": ["C", "F"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer", "maximum": 99}},
            "required": ["a"],
            "additionalProperties": False,
        },
    },
}


def _tool_request(**extra) -> dict:
    return {
        "model": "chat",
        "messages": [{"role": "user", "content": "weather in Paris"}],
        "tools": [WEATHER, ADD],
        "max_tokens": 200,
        **extra,
    }


@pytest.mark.parametrize("temperature,seed", [(0, None), (1.0, 7)])
def test_a_forced_call_parses_and_follows_the_function_schema(client, temperature, seed):
    jsonschema = pytest.importorskip("jsonschema")
    choice_of = {"type": "function", "function": {"name": "weather"}}
    body = _tool_request(tool_choice=choice_of, temperature=temperature, seed=seed, parallel_tool_calls=False)
    choice = ok(client.post("/v1/chat/completions", json=body))["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None, choice
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "weather"
    jsonschema.validate(json.loads(call["function"]["arguments"]), WEATHER["function"]["parameters"])


def test_required_calls_one_of_the_tools_and_streams_the_calls(client):
    body = _tool_request(tool_choice="required", temperature=1.0, seed=3, parallel_tool_calls=False)
    whole = ok(client.post("/v1/chat/completions", json=body))["choices"][0]
    assert [c["function"]["name"] in ("weather", "add") for c in whole["message"]["tool_calls"]] == [True]
    chunks = _events(client, {**body, "route": "/v1/chat/completions", "stream": True})
    calls = [c for chunk in chunks for c in chunk["choices"][0]["delta"].get("tool_calls") or []] if chunks else []
    assert [c["function"] for c in calls] == [c["function"] for c in whole["message"]["tool_calls"]]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert not any(chunk["choices"][0]["delta"].get("content") for chunk in chunks)


def test_tools_reach_the_prompt_and_none_leaves_the_reply_as_text(client):
    plain = ok(client.post("/v1/chat/completions", json=_tool_request(tools=None, temperature=0)))
    offered = ok(client.post("/v1/chat/completions", json=_tool_request(tool_choice="none", temperature=0)))
    assert offered["usage"]["prompt_tokens"] > plain["usage"]["prompt_tokens"] + 40  # the tools' system text
    message = offered["choices"][0]["message"]
    assert "tool_calls" not in message and isinstance(message["content"], str)


@pytest.mark.parametrize(
    "extra,param",
    [
        ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"tools": None, "tool_choice": "required"}, "tool_choice"),
        ({"tools": [ADD, ADD]}, "tools"),
        ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools.0.function.name"),
        ({"tool_choice": "required", "response_format": {"type": "json_object"}}, "response_format"),
        ({"functions": [{"name": "f"}]}, "functions"),
    ],
)
def test_bad_tool_requests_are_400(client, extra, param):
    refused(client.post("/v1/chat/completions", json=_tool_request(**extra)), param)


def test_calls_are_read_from_blocks_or_a_bare_object():
    from lmforge.serving.tools import could_be_call, parse_calls

    names = {"add", "get_weather"}
    text = 'sure\n<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>\n<tool_call>\n'
    text += '{"name": "get_weather", "arguments": "{\\"city\\": \\"Oslo\\"}"}\n</tool_call>'
    content, calls = parse_calls(text, names)
    assert content == "sure" and [c.name for c in calls] == ["add", "get_weather"]
    assert [json.loads(c.arguments) for c in calls] == [{"a": 1, "b": 2}, {"city": "Oslo"}]
    assert parse_calls('{"name": "add", "parameters": {"a": 1}}', names)[1][0].arguments == '{"a": 1}'
    assert parse_calls('<tool_call>{"name": "rm", "arguments": {}}</tool_call>', names)[1] == []  # not offered
    assert parse_calls("<tool_call>not json</tool_call>", names)[1] == []
    assert parse_calls("4", names) == ("4", [])
    assert could_be_call(" <tool_") and could_be_call("<tool_call>{") and not could_be_call("The answer")
