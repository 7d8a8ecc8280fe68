"""Zero/few-shot NER by prompting: the template that asks a causal LM for entities, the strict parser
of its reply, and the placement of the parsed entities back onto the sentence's tokens.

The answer format is one entity a line, ``TYPE: entity text`` (``none`` / ``无`` when there is
none), the format of GPT-NER-style and instruction-tuned NER prompts (Wang et al. 2023). Parsing is
strict and never raises: a line that is not ``TYPE: text`` with a known type, or whose text is not
in the sentence, adds no entity and is counted, so a model's rambling costs recall and precision,
never a crash. An entity found in the sentence tags every occurrence at token boundaries (a model
names "Paris" once for a sentence that says it twice), longest entities first, without overlaps.
"""

import re
from dataclasses import dataclass, field

from lmforge.data.tagging import Span

DESCRIPTIONS = {
    "en": {
        "PER": "person",
        "LOC": "location",
        "ORG": "organization",
        "MISC": "other names (nationalities, events, works)",
    },
    "zh": {"PER": "人名", "LOC": "地名", "ORG": "机构名"},
}
ALIASES = {
    "PERSON": "PER",
    "PEOPLE": "PER",
    "LOCATION": "LOC",
    "PLACE": "LOC",
    "GPE": "LOC",
    "ORGANIZATION": "ORG",
    "ORGANISATION": "ORG",
    "人名": "PER",
    "地名": "LOC",
    "机构名": "ORG",
}
NONE_ANSWERS = {"none", "none.", "no entities", "n/a", "无", "没有", "无。"}
INSTRUCTIONS = {
    "en": (
        "List the named entities in the text, one per line, as TYPE: entity. Types: {types}. "
        "If there are none, answer: none"
    ),
    "zh": "找出文本中的命名实体，每行一个，格式为 类型: 实体。类型：{types}。没有实体时回答：无",
}
TEXT_CUE = {"en": ("Text: ", "Entities:"), "zh": ("文本：", "实体：")}
LINE = re.compile(r"^\s*(?:[-*•]|\d+[.)])?\s*([^\s:：]+)\s*[:：]\s*(.+?)\s*$")


@dataclass
class ParseStats:
    """What the parser could not use, over a whole evaluation."""

    replies: int = 0
    lines: int = 0
    unparseable: int = 0  # not ``TYPE: text``
    unknown_type: int = 0  # a type the data does not have
    not_in_text: int = 0  # the text is not in the sentence (at token boundaries)
    examples: list[str] = field(default_factory=list)  # a few unusable lines, for the report

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}

    def note(self, line: str) -> None:
        if len(self.examples) < 10:
            self.examples.append(line[:200])


@dataclass
class EntityTemplate:
    """Instruction, example answers and the text cue for ``types`` in ``language``."""

    types: list[str]
    language: str = "en"
    instruction: str | None = None  # "{types}" is replaced by the types and their descriptions
    max_chars: int = 1500

    def __post_init__(self):
        described = DESCRIPTIONS[self.language]
        sep = "、" if self.language == "zh" else ", "
        names = sep.join(f"{t} ({described[t]})" if t in described else t for t in self.types)
        self.instruction = (self.instruction or INSTRUCTIONS[self.language]).replace("{types}", names)
        self.text_cue, self.answer_cue = TEXT_CUE[self.language]

    def answer(self, entities: list[tuple[str, str]]) -> str:
        if not entities:
            return "无" if self.language == "zh" else "none"
        return "\n".join(f"{type_}: {text}" for type_, text in entities)

    def messages(self, text: str, examples: list[tuple[str, list[tuple[str, str]]]]) -> list[dict]:
        """Chat form: instruction and examples as earlier turns; the model answers the last one."""
        turns = []
        for i, (example, entities) in enumerate(examples + [(text, None)]):
            prefix = self.instruction + "\n\n" if i == 0 else ""
            turns.append({"role": "user", "content": prefix + self.text_cue + example[: self.max_chars]})
            if entities is not None:
                turns.append({"role": "assistant", "content": self.answer(entities)})
        return turns

    def document(self, text: str, examples: list[tuple[str, list[tuple[str, str]]]]) -> str:
        """Plain-LM form, ending in the answer cue."""
        blocks = [self.instruction]
        for example, entities in examples:
            blocks.append(f"{self.text_cue}{example[: self.max_chars]}\n{self.answer_cue}\n{self.answer(entities)}")
        blocks.append(f"{self.text_cue}{text[: self.max_chars]}\n{self.answer_cue}")
        return "\n\n".join(blocks)


def parse_reply(reply: str, types: list[str], stats: ParseStats | None = None) -> list[tuple[str, str]]:
    """``(type, text)`` pairs of a reply, in order, without repeats; unusable lines are counted."""
    stats = stats if stats is not None else ParseStats()
    stats.replies += 1
    known = {t.upper(): t for t in types}
    found = []
    for raw in reply.replace("\r", "").split("\n"):
        line = raw.strip()
        if not line or line.lower() in NONE_ANSWERS:
            continue
        stats.lines += 1
        match = LINE.match(line)
        if not match:
            stats.unparseable += 1
            stats.note(line)
            continue
        name, text = match.group(1).strip().upper(), match.group(2).strip().strip("\"'“”‘’「」")
        type_ = known.get(name) or known.get(ALIASES.get(name, ""))
        if type_ is None:
            stats.unknown_type += 1
            stats.note(line)
            continue
        if text and text.lower() not in NONE_ANSWERS and (type_, text) not in found:
            found.append((type_, text))
    return found


def place(
    entities: list[tuple[str, str]], tokens: list[str], joiner: str, stats: ParseStats | None = None
) -> list[Span]:
    """Token spans of every occurrence of each entity text (exact case first, then any case),
    longest entities first, none overlapping another."""
    stats = stats if stats is not None else ParseStats()
    starts, text = [], ""
    for i, token in enumerate(tokens):
        if i:
            text += joiner
        starts.append(len(text))
        text += token
    ends = [s + len(t) for s, t in zip(starts, tokens)]
    start_at, end_at = {s: i for i, s in enumerate(starts)}, {e: i for i, e in enumerate(ends)}
    taken = [False] * len(tokens)
    spans = []
    for type_, name in sorted(entities, key=lambda e: -len(e[1])):
        name = " ".join(name.split()) if joiner == " " else "".join(name.split())
        hits = _occurrences(text, name, start_at, end_at) or _occurrences(text.lower(), name.lower(), start_at, end_at)
        placed = False
        for first, last in hits:
            if not any(taken[first : last + 1]):
                taken[first : last + 1] = [True] * (last + 1 - first)
                spans.append((type_, first, last + 1))
                placed = True
        if not placed:
            stats.not_in_text += 1
            stats.note(f"{type_}: {name}")
    return sorted(spans, key=lambda s: s[1])


def _occurrences(text: str, name: str, start_at: dict, end_at: dict) -> list[tuple[int, int]]:
    """(first token, last token) of each occurrence of ``name`` that begins and ends on token edges."""
    out, pos = [], text.find(name) if name else -1
    while pos >= 0:
        end = pos + len(name)
        if pos in start_at and end in end_at:
            out.append((start_at[pos], end_at[end]))
        pos = text.find(name, pos + 1)
    return out
