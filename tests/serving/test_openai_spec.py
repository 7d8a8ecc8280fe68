"""Requests and responses against OpenAI's own OpenAPI document (the schemas the API's routes use,
vendored in ``openai_spec/`` with its MIT licence): every request the tests send is valid there, and
every response and streamed chunk the server sends validates against OpenAI's response schema."""

import copy
import json
from pathlib import Path

import pytest
from served import API_KEY, client, runs, state  # noqa: F401  (fixtures)

jsonschema = pytest.importorskip("jsonschema")


def _nullable(node):
    """OpenAPI 3.0's ``nullable: true`` (which the document still uses) as JSON Schema says it."""
    if isinstance(node, list):
        return [_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _nullable(value) for key, value in node.items()}
    if node.pop("nullable", False):
        return {"anyOf": [node, {"type": "null"}]}
    return node


SPEC = _nullable(json.loads((Path(__file__).parent / "openai_spec" / "schemas.json").read_text()))
# Where OpenAI's API answers what its document does not describe, the server answers as the API does:
# with echo the prompt's first token has no log-probability (null, as OpenAI and vLLM send it), and
# encoding_format base64 sends each embedding as a base64 string.
_legacy = SPEC["components"]["schemas"]["CreateCompletionResponse"]["properties"]["choices"]["items"]["properties"]
_logprobs = _legacy["logprobs"]["anyOf"][0]["properties"]
_logprobs["token_logprobs"]["items"] = {"type": ["number", "null"]}
_logprobs["top_logprobs"]["items"] = {"anyOf": [_logprobs["top_logprobs"]["items"], {"type": "null"}]}
# Streamed, a completion's chunks use the response's schema, with finish_reason null until the last
# (as OpenAI streams them; its document has no schema of their own).
_chunk = copy.deepcopy(SPEC["components"]["schemas"]["CreateCompletionResponse"])
_reason = _chunk["properties"]["choices"]["items"]["properties"]["finish_reason"]
_chunk["properties"]["choices"]["items"]["properties"]["finish_reason"] = {"anyOf": [_reason, {"type": "null"}]}
SPEC["components"]["schemas"]["CompletionChunk"] = _chunk
_embedding = SPEC["components"]["schemas"]["Embedding"]["properties"]
_embedding["embedding"] = {"anyOf": [_embedding["embedding"], {"type": "string"}]}


def check(name: str, value: dict) -> None:
    schema = {"components": SPEC["components"], "$ref": f"#/components/schemas/{name}"}
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(value))
    assert not errors, f"{name}: " + "; ".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:5])


TOOL = {
    "type": "function",
    "function": {
        "name": "add",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer", "maximum": 9}},
            "required": ["a"],
            "additionalProperties": False,
        },
    },
}
USER = [{"role": "user", "content": "what is 2 plus 2"}]
CHATS = [
    {"model": "chat", "messages": USER, "max_tokens": 4},
    {"model": "chat", "messages": USER, "max_tokens": 4, "temperature": None, "n": None, "stream": None},
    {"model": "chat", "messages": USER, "max_completion_tokens": 4, "logprobs": True, "top_logprobs": 2, "n": 2},
    {"model": "chat", "messages": USER, "max_tokens": 40, "response_format": {"type": "json_object"}},
    {
        "model": "chat",
        "messages": USER,
        "max_tokens": 80,
        "tools": [TOOL],
        "tool_choice": "required",
        "parallel_tool_calls": False,
    },
    {
        "model": "chat",
        "messages": [
            *USER,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "add", "arguments": "{}"}}],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "4"},
        ],
        "max_tokens": 4,
        "presence_penalty": 0.5,
        "frequency_penalty": 0.5,
        "logit_bias": {"7": 3},
        "seed": 1,
        "user": "u1",
    },
]
COMPLETIONS = [
    {"model": "chat", "prompt": "what is", "max_tokens": 4, "logprobs": 2},
    {"model": "chat", "prompt": "what is", "max_tokens": 0, "echo": True, "logprobs": 1},
    {"model": "chat", "prompt": [[5, 6, 7], [8, 9]], "max_tokens": 3, "n": 2, "best_of": 3},
    {"model": "chat", "prompt": ["a", "b"], "max_tokens": 3, "temperature": None, "stop": None},
]


def answered_as_openai(client, route: str, body: dict, names: tuple[str, str, str], stream: bool) -> None:
    """``body`` is a valid request, and the answer (then, with ``stream``, every chunk) is OpenAI's."""
    check(names[0], body)
    response = client.post(route, json=body)
    assert response.status_code == 200, response.text
    check(names[1], response.json())
    if stream:
        options = {"stream_options": {"include_usage": True}} if "chat" in route else {}
        with client.stream("POST", route, json={**body, "stream": True, **options}) as streamed:
            chunks = [line[6:] for line in streamed.iter_lines() if line.startswith("data: ")]
        assert chunks[-1] == "[DONE]"
        for chunk in chunks[:-1]:
            check(names[2], json.loads(chunk))


@pytest.mark.parametrize("body", CHATS)
def test_chat_requests_and_responses_are_openais(client, body):
    names = ("CreateChatCompletionRequest", "CreateChatCompletionResponse", "CreateChatCompletionStreamResponse")
    answered_as_openai(client, "/v1/chat/completions", body, names, stream=body.get("n") in (1, None))


@pytest.mark.parametrize("body", COMPLETIONS)
def test_completion_requests_and_responses_are_openais(client, body):
    names = ("CreateCompletionRequest", "CreateCompletionResponse", "CompletionChunk")
    answered_as_openai(client, "/v1/completions", body, names, stream="best_of" not in body)


def test_embeddings_models_and_errors_are_openais(client):
    for body in (
        {"model": "sentiment", "input": ["a", "b"]},
        {"model": "sentiment", "input": [1, 2], "encoding_format": "base64"},
    ):
        check("CreateEmbeddingRequest", body)
        response = client.post("/v1/embeddings", json=body)
        assert response.status_code == 200, response.text
        check("CreateEmbeddingResponse", response.json())
    check("ListModelsResponse", client.get("/v1/models").json())
    check("Model", client.get("/v1/models/chat").json())
    for response in (
        client.post(
            "/v1/chat/completions",
            json={"model": "chat", "messages": USER, "audio": {"voice": "alloy", "format": "wav"}},
        ),
        client.post("/v1/completions", json={"model": "nope", "prompt": "x"}),
        client.post("/v1/completions", json={"model": "chat", "prompt": "x", "temperature": 9}),
    ):
        assert 400 <= response.status_code < 500
        check("ErrorResponse", response.json())
