"""``data.mask``: the personal data in a job's examples replaced by its type when the data is read,
before a tokenizer is built from it or a model sees it.

Every task's examples are masked in place of their texts: a classification text and its pair, a
seq2seq source and target, each message of a conversation, a raw text for language modelling. A
tagged sentence (NER) keeps its words and tags one to one: a word inside a found span becomes the
span's placeholder (``[PHONE]``), or the part of it the span covers does, so a phone number of three
words is three ``[PHONE]`` words with their tags unchanged and the tag sequence stays valid. The
sentence's raw text and character offsets are dropped (they no longer match its words).

The texts of a split are masked in one call, so an NER run (``data.mask.ner``) tags them in batches.
"""

import dataclasses
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from lmforge.data.conversations import Conversation
from lmforge.data.tagged import TaggedExample
from lmforge.errors import ConfigError
from lmforge.masking.mask import Masker
from lmforge.masking.rules import Span
from lmforge.tasks.seq2seq import PairExample


@dataclasses.dataclass
class MaskStats:
    """What masking a split found: spans per type, and how many examples had any."""

    examples: int = 0
    changed: int = 0
    by_type: Counter = dataclasses.field(default_factory=Counter)

    def line(self, split: str) -> str:
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(self.by_type.items())) or "nothing found"
        return f"data.mask: {split}: {sum(self.by_type.values())} span(s) in {self.changed} of {self.examples} example(s) ({kinds})"


def mask_examples(examples: list, masker: Masker) -> tuple[list, MaskStats]:
    """The examples with their texts masked (new objects; the list given is not changed)."""
    texts: list[str] = []
    slots: list[tuple[int, Callable]] = []  # (example index, rebuild(example, masked texts of it))
    for i, ex in enumerate(examples):
        own, rebuild = _texts_of(ex)
        slots.append((len(own), rebuild))
        texts.extend(own)
    masked, spans = masker.mask(texts) if texts else ([], [])
    out, stats, at = [], MaskStats(examples=len(examples)), 0
    for ex, (count, rebuild) in zip(examples, slots):
        found = [s for group in spans[at : at + count] for s in group]
        stats.by_type.update(s.type for s in found)
        stats.changed += bool(found)
        out.append(rebuild(ex, masked[at : at + count], spans[at : at + count]) if found else ex)
        at += count
    return out, stats


def _texts_of(ex) -> tuple[list[str], Callable]:
    if isinstance(ex, TaggedExample):
        return [" ".join(ex.tokens)], _rebuild_tagged
    if isinstance(ex, Conversation):
        return [m["content"] for m in ex.messages], _rebuild_messages
    if isinstance(ex, PairExample):
        return [ex.source, ex.target], lambda e, m, _: dataclasses.replace(e, source=m[0], target=m[1])
    if getattr(ex, "text_pair", None) is not None:
        return [ex.text, ex.text_pair], lambda e, m, _: dataclasses.replace(e, text=m[0], text_pair=m[1])
    return [ex.text], lambda e, m, _: dataclasses.replace(e, text=m[0])


def _rebuild_messages(ex: Conversation, masked: list[str], _spans) -> Conversation:
    messages = [{**message, "content": text} for message, text in zip(ex.messages, masked)]
    return dataclasses.replace(ex, messages=messages)


def _rebuild_tagged(ex: TaggedExample, _masked, spans: list[list[Span]]) -> TaggedExample:
    """Each word with the parts of it inside a span replaced by the span's placeholder."""
    found = spans[0]
    tokens, start = [], 0
    for token in ex.tokens:
        end = start + len(token)
        pieces, at = [], start
        for span in found:
            lo, hi = max(span.start, start), min(span.end, end)
            if lo >= hi:
                continue
            pieces += [token[at - start : lo - start], f"[{span.type.upper()}]"]
            at = hi
        tokens.append("".join(pieces) + token[at - start :] if pieces else token)
        start = end + 1  # the space the words were joined with
    return dataclasses.replace(ex, tokens=tokens, raw_text=None, offsets=None)


def mask_task_data(settings, data, device: str = "auto") -> dict[str, dict]:
    """Mask the ``settings.splits`` of a job's data in place (``data.mask``: a ``MaskConfig``), with
    a note per split in ``data.notes``; returns the counts per split (for the run's record)."""
    if settings.ner is not None and not Path(settings.ner).is_dir():
        raise ConfigError(f"data.mask.ner: {settings.ner}: no such run folder")
    try:
        masker = Masker(tuple(settings.types), settings.ner, None, device)
    except ConfigError as exc:  # its messages name the command's flags
        raise ConfigError(str(exc).replace("--ner", "data.mask.ner").replace("--types", "data.mask.types")) from None
    if masker.names_skipped:
        data.notes.append(
            f"data.mask: {', '.join(masker.names_skipped)} not masked: give data.mask.ner (an NER run) to find names"
        )
    counts = {}
    for split in settings.splits:
        examples = getattr(data, split)
        if not examples:
            continue
        masked, stats = mask_examples(examples, masker)
        setattr(data, split, masked)
        data.notes.append(stats.line(split))
        counts[split] = {"examples": stats.examples, "changed": stats.changed, "spans": dict(stats.by_type)}
    return counts
