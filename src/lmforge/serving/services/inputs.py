"""The request limits every service checks before a model sees the inputs: how many texts, how many
tokens each."""

from lmforge.serving.errors import InvalidRequest, TooLarge
from lmforge.serving.settings import ServeSettings


def texts_of(value: str | list, settings: ServeSettings, param: str = "input") -> list:
    """One input or a list of them (texts, or token-id lists), at most ``max_inputs``."""
    texts = [value] if isinstance(value, str) else list(value)
    if not texts:
        raise InvalidRequest(f"'{param}' is an empty list", param=param)
    if len(texts) > settings.max_inputs:
        raise TooLarge(
            f"'{param}' has {len(texts)} items; the limit is {settings.max_inputs} per request",
            param=param,
            code="too_many_inputs",
        )
    return texts


def token_counts(tokenizer, texts: list[str]) -> list[int]:
    """Tokens per text, special tokens included (what the model will read)."""
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]]


def check_lengths(counts: list[int], limit: int, truncate: bool | None) -> None:
    """Refuse an input over ``limit`` tokens unless ``truncate`` (None: the route cannot cut)."""
    for i, count in enumerate(counts):
        if count > limit and not truncate:
            hint = "" if truncate is None else ' (send "truncate": true to cut it)'
            raise TooLarge(
                f"input {i} is {count} tokens; the limit is {limit}{hint}", param="input", code="input_too_long"
            )
