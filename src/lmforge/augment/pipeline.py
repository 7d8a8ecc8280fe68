"""``data.augment``: the training examples of one epoch, each with its changed copies.

Every step of ``data.augment`` makes ``copies`` changed versions of every training example, so an
epoch holds N x (1 + sum of copies) examples whatever the epoch, and the run's step count is known
before training. The changes are drawn anew each epoch from a generator seeded by (train.seed, epoch,
step, copy, example): an epoch is the same on a resumed run and in every process. Model-based steps
(``contextual``, ``paraphrase``) are computed once, not once an epoch (their copies vary, the epochs
share them): paraphrases are also kept in the run folder (``augment/paraphrase.jsonl``) so a resumed
or repeated run does not generate them again.
"""

import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from lmforge.augment.lexicons import EmbeddingSynonyms, Synonyms, lexicon_source
from lmforge.augment.operations import OPERATIONS, Context
from lmforge.augment.units import Unit, language_of, tagged_units, text_units, to_tagged, to_text_example
from lmforge.config.schema import AugmentStep
from lmforge.data.examples import TextExample
from lmforge.data.tagged import TaggedExample
from lmforge.errors import ConfigError

log = logging.getLogger("lmforge")

TASKS = ("classification", "token_classification")
TOKEN_METHODS = ("synonym", "insert", "swap", "delete", "mention")
SAMPLES = 24  # changed examples of each step kept for the report
AUGMENT_SAMPLES = "augment-samples.jsonl"  # in the run folder


def check_steps(steps: list[AugmentStep], task: str) -> None:
    """One-line errors for settings that cannot work, before anything loads."""
    if steps and task not in TASKS:
        raise ConfigError(f"data.augment: augmentation is for {' and '.join(TASKS)}, not task {task}")
    for i, step in enumerate(steps):
        key = f"data.augment[{i}]"
        if step.method == "mention" and task != "token_classification":
            raise ConfigError(f"{key}.method: mention replaces entities: it needs task token_classification")
        if step.method == "paraphrase" and task == "token_classification":
            raise ConfigError(f"{key}.method: paraphrase loses the entity tags: use synonym, mention or contextual")
        if step.method == "contextual" and not step.model:
            raise ConfigError(
                f"{key}.model: contextual needs a masked LM (a run of task masked_lm or a model folder "
                "with a masked-LM head; the bundled minilm has none)"
            )


@dataclass
class AugmentStats:
    """How many examples each step made and changed, for the run log."""

    made: Counter = field(default_factory=Counter)
    changed: Counter = field(default_factory=Counter)

    def line(self, epoch: int, originals: int) -> str:
        parts = [f"{m} {self.made[m]} ({self.changed[m]} changed)" for m in self.made]
        return f"data.augment: epoch {epoch + 1}: {originals} examples + " + ", ".join(parts)


class Augmenter:
    """The augmented training examples of each epoch."""

    def __init__(
        self,
        steps: list[AugmentStep],
        task: str,
        train: list,
        seed: int,
        scheme: str = "bio",
        tag_index: dict[str, int] | None = None,
        embeddings: tuple[Any, Any] | None = None,
        model_steps: dict[int, Any] | None = None,
    ):
        """``embeddings``: (input embedding matrix, tokenizer) of the job's model, for ``source:
        embedding``; ``model_steps``: step index -> a callable (example list, copy, rng) -> examples
        for model-based steps (``augment/models.py``)."""
        check_steps(steps, task)
        self.steps, self.task, self.train, self.seed = steps, task, train, seed
        self.scheme, self.tag_index = scheme, tag_index or {}
        self.tagged = task == "token_classification"
        texts = [ex.text for ex in train]
        self.languages = [s.language if s.language != "auto" else language_of(texts) for s in steps]
        self.synonyms: list[Synonyms | None] = []
        for step, language in zip(steps, self.languages):
            source = lexicon_source(step.source, language) if step.method in ("synonym", "insert") else None
            if source is None and step.method in ("synonym", "insert"):
                if embeddings is None:
                    raise ConfigError("data.augment source embedding needs a pretrained transformer model")
                words = [u.word for ex in train for u in self._units(ex, language)]
                source = EmbeddingSynonyms(embeddings[0], embeddings[1], words, lower=language != "zh")
            self.synonyms.append(source)
        self.mentions = self._mentions() if self.tagged else None
        self.model_steps = model_steps or {}
        self._fixed: dict[tuple[int, int], list] = {}  # model-based copies, made once
        self.samples: list[dict] = []
        self.last_stats = AugmentStats()

    @property
    def factor(self) -> int:
        """Examples an epoch holds per training example."""
        return 1 + sum(step.copies for step in self.steps)

    def _units(self, example, language: str) -> list[Unit]:
        if self.tagged:
            return tagged_units(example, self.scheme, language)
        return text_units(example.text, language)[1]

    def _mentions(self) -> dict[str, list[list[str]]]:
        found: dict[str, dict[tuple[str, ...], None]] = {}
        for ex in self.train:
            for unit in tagged_units(ex, self.scheme, "en"):  # entities are whole spans in either language
                if unit.entity is not None:
                    found.setdefault(unit.entity, {})[tuple(unit.tokens)] = None
        return {type_: [list(m) for m in mentions] for type_, mentions in found.items()}

    def epoch(self, epoch: int) -> tuple[list, AugmentStats]:
        """The originals, then every step's copies of every example."""
        stats = AugmentStats()
        if epoch == 0:
            self.samples = []
        out = list(self.train)
        for s, step in enumerate(self.steps):
            for copy in range(step.copies):
                if s in self.model_steps:
                    made = self._fixed.get((s, copy))
                    if made is None:
                        rng = random.Random(f"{self.seed}-model-{s}-{copy}")
                        made = self._fixed[(s, copy)] = self.model_steps[s](self.train, copy, rng)
                else:
                    made = [self._change(ex, s, copy, epoch, i) for i, ex in enumerate(self.train)]
                for original, new in zip(self.train, made):
                    changed = _text_of(new) != _text_of(original)
                    stats.made[step.method] += 1
                    stats.changed[step.method] += changed
                    if changed and epoch == 0 and copy == 0 and len(self.samples) < SAMPLES * (s + 1):
                        self.samples.append(_sample(step.method, original, new))
                out.extend(made)
        self.last_stats = stats
        return out, stats

    def _change(self, example, s: int, copy: int, epoch: int, i: int):
        step, language = self.steps[s], self.languages[s]
        rng = random.Random(f"{self.seed}-{epoch}-{s}-{copy}-{i}")
        ctx = Context(language, self.tagged, self.synonyms[s], self.mentions)
        operation = OPERATIONS.get(step.method)
        where = f"{example.where} ({step.method} {copy + 1})"
        if self.tagged:
            units = tagged_units(example, self.scheme, language)
            new = to_tagged(example, operation(units, step.p, rng, ctx), self.scheme, where)
            new.tag_ids = [self.tag_index[t] for t in new.tags or []] if self.tag_index else None
            return new
        head, units = text_units(example.text, language)
        return to_text_example(example, head, operation(units, step.p, rng, ctx) if units else units, where)


def _text_of(example) -> str:
    return " ".join(example.tokens) if isinstance(example, TaggedExample) else example.text


def _sample(method: str, original, new) -> dict:
    row: dict[str, str | None] = {"method": method, "original": _text_of(original), "augmented": _text_of(new)}
    if isinstance(original, TextExample):
        row["label"] = original.label
    else:
        row["original_tags"] = " ".join(original.tags or [])
        row["augmented_tags"] = " ".join(new.tags or [])
    return row
