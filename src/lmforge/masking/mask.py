"""``Masker``: the rule spans of ``rules.py`` and, with an NER run, person, place and organization
names, replaced by their type (``[EMAIL]``, ``[PERSON]``) — or, with a key, by a token that only the
key turns back into the text (Fernet: AES-128-CBC with an HMAC), for a pipeline that must restore
them later (``unmask``)."""

import base64
import hashlib
import re
from dataclasses import dataclass

from lmforge._optional import require
from lmforge.errors import ConfigError
from lmforge.inference.predictor import RunPredictor
from lmforge.masking.rules import RULE_TYPES, Span, find_rule_spans

NAME_TYPES = {"person": ("PER", "PERSON", "NR"), "place": ("LOC", "GPE", "NS"), "organization": ("ORG", "NT")}
TYPES = RULE_TYPES + tuple(NAME_TYPES)
TOKEN = re.compile(r"\[(?P<type>[A-Z_]+):(?P<token>[A-Za-z0-9_=-]+)\]")


def _name_type(label: str) -> str | None:
    label = label.upper()
    return next((kind for kind, labels in NAME_TYPES.items() if label in labels), None)


def _fernet(key: str):
    fernet = require("cryptography.fernet", "cryptography", "reversible masking ($LMFORGE_MASK_KEY)")
    return fernet.Fernet(base64.urlsafe_b64encode(hashlib.sha256(key.encode("utf-8")).digest()))


@dataclass
class Masker:
    types: tuple[str, ...] = TYPES
    ner_run: str | None = None
    key: str | None = None  # reversible masking: the secret that turns tokens back into text
    device: str = "auto"

    def __post_init__(self):
        unknown = [t for t in self.types if t not in TYPES]
        if unknown:
            raise ConfigError(f"--types {unknown[0]}: not a type; choose from {', '.join(TYPES)}")
        names = [t for t in self.types if t in NAME_TYPES]
        if names and self.ner_run is None:
            self.types = tuple(t for t in self.types if t not in NAME_TYPES)
            self.names_skipped = names
        else:
            self.names_skipped = []
        self.predictor = RunPredictor(self.ner_run, "auto", self.device) if self.ner_run and names else None
        if self.predictor is not None and self.predictor.record.task != "token_classification":
            raise ConfigError(f"--ner {self.ner_run}: a {self.predictor.record.task} run; give an NER run")
        self.cipher = _fernet(self.key) if self.key else None

    def find(self, texts: list[str]) -> list[list[Span]]:
        """The spans to mask in each text, in order, without overlaps (rules first)."""
        found = [find_rule_spans(t, self.types) for t in texts]
        if self.predictor is None:
            return found
        tagged = self.predictor.predict_entities(texts)
        for i, row in enumerate(tagged):
            taken = [(s.start, s.end) for s in found[i]]
            for e in row["entities"]:
                kind = _name_type(e["label"])
                if kind is None or kind not in self.types:
                    continue
                if any(e["start"] < end and start < e["end"] for start, end in taken):
                    continue
                found[i].append(Span(e["start"], e["end"], kind, texts[i][e["start"] : e["end"]]))
            found[i].sort(key=lambda s: s.start)
        return found

    def replacement(self, span: Span) -> str:
        if self.cipher is None:
            return f"[{span.type.upper()}]"
        return f"[{span.type.upper()}:{self.cipher.encrypt(span.text.encode('utf-8')).decode('ascii')}]"

    def mask(self, texts: list[str]) -> tuple[list[str], list[list[Span]]]:
        spans = self.find(texts)
        out = []
        for text, found in zip(texts, spans):
            pieces, at = [], 0
            for span in found:
                pieces += [text[at : span.start], self.replacement(span)]
                at = span.end
            out.append("".join(pieces) + text[at:])
        return out, spans

    def unmask(self, text: str) -> str:
        """The text with every token this key made turned back (needs the key)."""
        if self.cipher is None:
            raise ConfigError("unmask: give the key the text was masked with ($LMFORGE_MASK_KEY)")
        invalid = require("cryptography.fernet", "cryptography").InvalidToken

        def back(m):
            try:
                return self.cipher.decrypt(m.group("token").encode("ascii")).decode("utf-8")
            except invalid:
                return m.group(0)  # not this key's: left as it is

        return TOKEN.sub(back, text)
