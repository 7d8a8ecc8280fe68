"""Constrained decoding: replies that always parse and validate, by masking the logits at every step
to the tokens a grammar allows (llguidance, the engine behind OpenAI's and llama.cpp's structured
output, compiled from a JSON schema or a Lark grammar).

``Grammars`` is built once per model (the tokenizer's byte view takes ~0.5 s for a 50k vocabulary).
A request compiles its grammar into a ``Constraint``: the generation engine asks it for the allowed
tokens before it picks one (``allowed``) and feeds it the token picked (``take``). When the grammar is
complete only the end-of-sequence tokens are allowed, so a reply ends exactly where its JSON does.

JSON is written as ``json.dumps`` writes it (", " and ": ", no other whitespace): a model cannot pad
its reply with whitespace forever, and its tokens stay the ones it saw in training.
"""

import torch

from lmforge.errors import ModelError

JSON_STYLE = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
_BITS = torch.arange(32, dtype=torch.int32)


class GrammarError(ValueError):
    """A schema or grammar that does not compile; the message says why."""


def json_schema_grammar(schema: dict) -> str:
    """llguidance's grammar for JSON that validates against ``schema``."""
    import llguidance

    try:
        return llguidance.LLMatcher.grammar_from_json_schema(schema, overrides=JSON_STYLE)  # type: ignore[arg-type]
    except ValueError as exc:
        raise GrammarError(str(exc)) from None


def lark_grammar(lark: str) -> str:
    import llguidance

    return llguidance.LLMatcher.grammar_from_lark(lark)


class Grammars:
    """Compiles grammars against one model's tokenizer."""

    def __init__(self, tokenizer, vocab: int, stop_ids: list[int]):
        try:
            import llguidance
            import llguidance.hf
        except ImportError:  # pragma: no cover - a dependency of lmforge
            raise ModelError("structured output needs llguidance: pip install llguidance") from None
        self._llguidance = llguidance
        self.vocab = vocab
        self.tokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab, eos_token=stop_ids or None)

    def compile(self, grammar: str) -> "Constraint":
        why = self._llguidance.LLMatcher.validate_grammar(grammar, self.tokenizer)
        if why and not why.startswith("WARNING"):
            raise GrammarError(why.splitlines()[0])
        matcher = self._llguidance.LLMatcher(self.tokenizer, grammar, log_level=0)
        if matcher.is_error():
            raise GrammarError(matcher.get_error().splitlines()[0])
        return Constraint(matcher, self.vocab)


class Constraint:
    """One reply's grammar state."""

    def __init__(self, matcher, vocab: int):
        self.matcher, self.vocab = matcher, vocab
        self._mask = torch.zeros((1, (vocab + 31) // 32), dtype=torch.int32)

    def allowed(self) -> torch.Tensor | None:
        """(vocab,) bool: the tokens the grammar allows next; None once it has failed (the engine
        then ends the reply)."""
        if self.matcher.is_error():
            return None
        from llguidance.torch import fill_next_token_bitmask

        fill_next_token_bitmask(self.matcher, self._mask, 0)
        return ((self._mask[0, :, None] >> _BITS) & 1).flatten()[: self.vocab].bool()

    def take(self, token: int) -> None:
        self.matcher.consume_token(token)
