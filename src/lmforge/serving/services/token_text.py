"""Tokens as the OpenAI API shows them: each token's text, and its exact UTF-8 bytes (a byte-level
BPE token can hold part of a character, whose text alone would read as U+FFFD)."""

import re
from functools import cache

_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")  # SentencePiece's byte fallback


@cache
def _byte_level_alphabet() -> dict[str, int]:
    """Byte-level BPE (GPT-2 and its heirs) writes each byte as one printable character: the
    printable Latin-1 bytes as themselves, the others shifted past 255 in byte order."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    alphabet = {chr(b): b for b in kept}
    shifted = 0
    for b in range(256):
        if b not in kept:
            alphabet[chr(256 + shifted)] = b
            shifted += 1
    return alphabet


class TokenText:
    """Text and bytes of a tokenizer's tokens, cached per token id."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        backend = getattr(tokenizer, "backend_tokenizer", None)
        decoder = getattr(backend, "decoder", None)
        self.byte_level = type(decoder).__name__ == "ByteLevel" if decoder is not None else False
        self._text: dict[int, str] = {}
        self._bytes: dict[int, list[int]] = {}

    def text(self, token: int) -> str:
        if token not in self._text:
            self._text[token] = self.tokenizer.decode([token])
        return self._text[token]

    def bytes(self, token: int) -> list[int]:
        if token not in self._bytes:
            self._bytes[token] = self._raw_bytes(token)
        return self._bytes[token]

    def _raw_bytes(self, token: int) -> list[int]:
        piece = self.tokenizer.convert_ids_to_tokens(token)
        if isinstance(piece, str):
            if self.byte_level:
                alphabet = _byte_level_alphabet()
                if all(c in alphabet for c in piece):
                    return [alphabet[c] for c in piece]
            found = _BYTE_TOKEN.fullmatch(piece)
            if found:
                return [int(found.group(1), 16)]
        return list(self.text(token).encode("utf-8"))
