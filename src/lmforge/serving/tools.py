"""Tool calling: the tools a chat request offers, laid out for the model, and the calls in its reply.

The call format is the one most open chat models are trained on (Hermes, Qwen 2.5, SmolLM3):

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

one block per call. A model whose chat template takes ``tools`` gets them through its template; any
other model gets them in a system message that describes this format (the message opens the
conversation, or is added to its system message).

``tool_choice``: ``auto`` (default when tools are given) parses calls from the reply when it has
them, and gives plain text otherwise; ``none`` never parses; ``required`` and a named function
constrain the reply with a grammar (``structured.py``) to one or more call blocks (one when
``parallel_tool_calls`` is false) whose JSON follows the function's parameter schema, so a forced
call always parses and validates.
"""

import json
import re
import uuid
from dataclasses import dataclass

from lmforge.serving.structured import JSON_STYLE

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_BLOCK = re.compile(re.escape(OPEN) + r"\s*(.*?)\s*(?:" + re.escape(CLOSE) + r"|$)", re.DOTALL)


@dataclass
class Call:
    name: str
    arguments: str  # JSON text, as OpenAI sends it
    ident: str

    def as_dict(self) -> dict:
        return {"id": self.ident, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


def system_text(tools: list[dict]) -> str:
    """The tools and the call format, for a model whose chat template does not take tools."""
    listed = "\n".join(json.dumps(tool, ensure_ascii=False) for tool in tools)
    return (
        f"You may call these functions:\n<tools>\n{listed}\n</tools>\n"
        f'To call one, reply with\n{OPEN}\n{{"name": <function name>, "arguments": <arguments object>}}\n{CLOSE}'
    )


def with_tools(messages: list[dict], tools: list[dict]) -> list[dict]:
    """``messages`` with the tools' system text first (joined to a leading system message)."""
    text = system_text(tools)
    if messages and messages[0]["role"] == "system":
        return [{**messages[0], "content": f"{messages[0]['content']}\n\n{text}"}, *messages[1:]]
    return [{"role": "system", "content": text}, *messages]


def call_schema(tools: list[dict]) -> dict:
    """JSON schema of one call to any of ``tools``."""
    options = []
    for tool in tools:
        function = tool["function"]
        parameters = function.get("parameters") or {"type": "object", "properties": {}}
        options.append(
            {
                "type": "object",
                "properties": {"name": {"const": function["name"]}, "arguments": parameters},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
        )
    return {"anyOf": options} if len(options) > 1 else options[0]


def forced_lark(tools: list[dict], parallel: bool) -> str:
    """A Lark grammar (llguidance's dialect) for one call block, or several when ``parallel``."""
    schema = json.dumps({**call_schema(tools), "x-guidance": JSON_STYLE})
    start = 'start: call ("\\n" call)*' if parallel else "start: call"
    return f'{start}\ncall: "{OPEN}\\n" body "\\n{CLOSE}"\nbody: %json {schema}\n'


def could_be_call(text: str) -> bool:
    """Whether a reply that begins with ``text`` may be a tool call (streaming holds it back)."""
    head = text.lstrip()
    return head.startswith(OPEN) or OPEN.startswith(head) or head.startswith("{")


def parse_calls(text: str, names: set[str]) -> tuple[str | None, list[Call]]:
    """(content, calls) of a reply: call blocks, or a reply that is one bare call object; calls to
    functions not offered, and blocks that are not JSON, stay text."""
    calls: list[Call] = []
    kept = text
    for found in _BLOCK.finditer(text):
        call = _call(found.group(1), names)
        if call is not None:
            calls.append(call)
            kept = kept.replace(found.group(0), "", 1)
    if not calls:
        call = _call(text.strip(), names)
        if call is not None:
            return None, [call]
        return text, []
    return (kept.strip() or None), calls


def _call(text: str, names: set[str]) -> Call | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, dict) or value.get("name") not in names:
        return None
    arguments = value.get("arguments", value.get("parameters", {}))
    if isinstance(arguments, str):  # some models write the arguments as a JSON string already
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return None
    if not isinstance(arguments, dict):
        return None
    return Call(value["name"], json.dumps(arguments, ensure_ascii=False), "call_" + uuid.uuid4().hex[:24])
