"""Prompt templates for classification by label likelihood, in English and Chinese.

A prompt is an instruction naming the answers, the in-context examples (each a text and its
answer) and the text to classify; the answer is scored as the model's reply. With a chat model
(one whose tokenizer has a chat template, like SmolLM2-Instruct) the examples are earlier turns —
user: the text, assistant: its answer — and the answer is the assistant's next message. A plain
LM gets the same content as one document, ``Text: …`` / ``Answer: …`` blocks, and the answer
follows ``Answer:`` after a space.
"""

import re
from dataclasses import dataclass

CJK = re.compile(r"[\u4e00-\u9fff]")

DEFAULTS = {
    "en": {
        "instruction": "Classify the text. Answer with one of: {answers}.",
        "text": "Text: {text}",
        "answer": "Answer:",
    },
    "zh": {
        "instruction": "请判断下面文本的类别，只回答以下之一：{answers}。",
        "text": "文本：{text}",
        "answer": "回答：",
    },
}


def detect_language(texts: list[str]) -> str:
    """``zh`` when most texts hold Chinese characters, else ``en``."""
    sample = texts[:200]
    return "zh" if sample and sum(bool(CJK.search(t)) for t in sample) > len(sample) / 2 else "en"


@dataclass
class PromptTemplate:
    verbalizers: list[str]  # answer text per label id
    language: str = "en"
    instruction: str | None = None  # "{answers}" is replaced by the verbalizers
    text_format: str | None = None  # "{text}" is replaced by the text
    max_chars: int = 1500  # texts (and examples) are cut to this many characters

    def __post_init__(self):
        base = DEFAULTS[self.language]
        self.instruction = self.instruction or base["instruction"]
        self.text_format = self.text_format or base["text"]
        self.answer_cue = base["answer"]
        sep = "、" if self.language == "zh" else ", "
        self.instruction = self.instruction.replace("{answers}", sep.join(self.verbalizers))

    def _text(self, text: str) -> str:
        return self.text_format.replace("{text}", text[: self.max_chars])

    def messages(self, text: str, examples: list[tuple[str, int]]) -> list[dict]:
        """Chat form: the instruction and examples as earlier turns, the text as the last one."""
        turns, first = [], True
        for example, label in examples + [(text, None)]:
            content = (self.instruction + "\n\n" if first else "") + self._text(example)
            first = False
            turns.append({"role": "user", "content": content})
            if label is not None:
                turns.append({"role": "assistant", "content": self.verbalizers[label]})
        return turns

    def document(self, text: str, examples: list[tuple[str, int]]) -> str:
        """Plain-LM form, ending in the answer cue (the answer follows after a space)."""
        blocks = [self.instruction]
        for example, label in examples:
            blocks.append(f"{self._text(example)}\n{self.answer_cue} {self.verbalizers[label]}")
        blocks.append(f"{self._text(text)}\n{self.answer_cue}")
        return "\n\n".join(blocks)

    def answers(self, chat: bool) -> list[str]:
        """What is scored after the prompt: the verbalizer (a plain LM's after a space)."""
        return list(self.verbalizers) if chat or self.language == "zh" else [" " + v for v in self.verbalizers]
