"""Instruction and chat data for supervised fine-tuning: every form becomes a list of messages.

Three forms are read, row by row (a file may mix them):

- alpaca: ``instruction``, optional ``input`` (appended to the instruction after a blank line),
  ``output``, optional ``system`` and ``history`` (``[[user, assistant], ...]`` turns before this one);
- messages (OpenAI style): ``messages: [{role, content}, ...]``;
- ShareGPT: ``conversations: [{from, value}, ...]`` with ``human``/``gpt``/``system`` speakers.

A conversation must hold at least one assistant turn with text, and only the roles system, user and
assistant (a system turn only first); anything else is a bad row, named by file and line.
"""

from dataclasses import dataclass

from lmforge.data.examples import read_rows
from lmforge.data.readers import Problems
from lmforge.errors import DataError
from lmforge.paths import resolve_path

ROLES = {
    "system": "system",
    "user": "user",
    "assistant": "assistant",
    # ShareGPT speakers
    "human": "user",
    "gpt": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "model": "assistant",
}
FORMS = ("instruction", "messages", "conversations")


@dataclass
class Conversation:
    messages: list[dict]  # [{"role": "system"|"user"|"assistant", "content": str}, ...]
    where: str = ""

    @property
    def text(self) -> str:  # what tokenizers are trained on, for models built from scratch
        return "\n".join(m["content"] for m in self.messages)

    text_pair = None


def is_conversation_row(row: dict) -> bool:
    return any(key in row for key in FORMS)


def _alpaca(row: dict, where: str) -> list[dict]:
    messages = []
    system = row.get("system")
    if system:
        messages.append({"role": "system", "content": str(system)})
    history = row.get("history") or []
    if not isinstance(history, list) or not all(isinstance(t, (list, tuple)) and len(t) == 2 for t in history):
        raise ValueError("'history' must be a list of [user, assistant] pairs")
    for user, assistant in history:
        messages += [{"role": "user", "content": str(user)}, {"role": "assistant", "content": str(assistant)}]
    prompt = str(row.get("instruction") or "")
    extra = row.get("input")
    if extra:
        prompt = f"{prompt}\n\n{extra}" if prompt else str(extra)
    if not prompt.strip():
        raise ValueError("empty 'instruction' (and no 'input')")
    if "output" not in row:
        raise ValueError("alpaca row without 'output' (the assistant's answer)")
    output = row["output"]
    if isinstance(output, list):  # preference data puts [chosen, rejected] here
        raise ValueError("'output' is a list (preference data?); SFT needs one answer")
    messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": str(output)}]
    return messages


def _turns(items, role_key: str, content_key: str) -> list[dict]:
    if not isinstance(items, list) or not items:
        raise ValueError("expected a non-empty list of turns")
    messages = []
    for number, turn in enumerate(items, 1):
        if not isinstance(turn, dict) or role_key not in turn or content_key not in turn:
            raise ValueError(f"turn {number} needs '{role_key}' and '{content_key}'")
        raw = str(turn[role_key]).strip().lower()
        role = ROLES.get(raw)
        if role is None:
            raise ValueError(
                f"turn {number}: unknown role '{turn[role_key]}' (known: system, user, assistant; ShareGPT: human, gpt)"
            )
        content = turn[content_key]
        if not isinstance(content, str):
            raise ValueError(f"turn {number}: '{content_key}' must be a string")
        messages.append({"role": role, "content": content})
    return messages


def row_to_messages(row: dict) -> list[dict]:
    """The messages of one row in any of the three forms; ValueError says what is wrong."""
    if "messages" in row:
        messages = _turns(row["messages"], "role", "content")
    elif "conversations" in row:
        messages = _turns(row["conversations"], "from", "value")
        if row.get("system"):
            messages.insert(0, {"role": "system", "content": str(row["system"])})
    else:
        messages = _alpaca(row, "")
    check_messages(messages)
    return messages


def check_messages(messages: list[dict]) -> None:
    for number, message in enumerate(messages, 1):
        if message["role"] == "system" and number > 1:
            raise ValueError(f"turn {number}: a system message may only come first")
    if not any(m["role"] == "assistant" and m["content"].strip() for m in messages):
        raise ValueError("no assistant turn with text: nothing to learn from")


def read_conversations(source, data, problems: Problems, fill: dict | None = None) -> list[Conversation]:
    """Read every row of a source (or a list of sources) as a conversation.

    ``fill`` replaces ``{{name}}`` placeholders in every message (``data.fill``: the identity data
    set's ``{{name}}`` and ``{{author}}``)."""
    if isinstance(source, list):
        return [c for item in source for c in read_conversations(item, data, problems, fill)]
    found = []
    for where, row, _ in read_rows(source, data, problems):
        if not is_conversation_row(row):
            keys = ", ".join(str(k) for k in row) or "nothing"
            problems.report(
                f"{where}: not a conversation (needs 'instruction'/'output', 'messages' "
                f"or 'conversations'; the row has: {keys})"
            )
            continue
        try:
            messages = row_to_messages(row)
        except ValueError as exc:
            problems.report(f"{where}: {exc}")
            continue
        if fill:
            for message in messages:
                for key, value in fill.items():
                    message["content"] = message["content"].replace("{{" + key + "}}", value)
        found.append(Conversation(messages, where))
    if not found and not problems.items:
        path = source if isinstance(source, str) else source.path
        raise DataError(f"{resolve_path(path)}: no usable conversations")
    return found
