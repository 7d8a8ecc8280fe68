"""``lmforge prompt`` on a ``token_classification`` config: zero/few-shot NER with a causal LM.

setup (the sentences as ``train`` reads them, the entity types, the template, the examples) ->
greedy replies, batched -> strict parse and placement on the tokens (``entities.py``) -> the
entity-level metrics of a trained NER run (seqeval-equal), ``predictions.jsonl`` with the raw
replies, the parser's counts, ``report.html``.
"""

import logging
import time

from lmforge.config.schema import JobConfig
from lmforge.data.readers import Problems
from lmforge.data.tagging import from_spans, joiner_of, sentence_text, to_spans
from lmforge.inference.generator import greedy_replies, open_transformer
from lmforge.models.embedding import SentenceEncoder
from lmforge.prompting.entities import EntityTemplate, ParseStats, parse_reply, place
from lmforge.prompting.selection import fixed_examples, nearest_examples
from lmforge.prompting.splits import evaluation_splits, labelled_pool
from lmforge.prompting.templates import detect_language
from lmforge.runtime import quiet_libraries, set_seed, set_threads
from lmforge.tasks import get_task

log = logging.getLogger("lmforge")


def gold_entities(ex, scheme: str) -> list[tuple[str, str]]:
    joiner = joiner_of(ex.tokens)
    return [(type_, joiner.join(ex.tokens[s:e])) for type_, s, e in to_spans(ex.tags, scheme)]


class PromptTagger:
    """A causal LM, the template and the in-context examples, ready to tag sentences."""

    def __init__(self, spec, train: list, types: list[str], language: str, scheme: str, *, device: str = "auto"):

        self.spec, self.train, self.scheme, self.types = spec, train, scheme, types
        self.template = EntityTemplate(types, language, spec.instruction, spec.max_chars)
        self.gen = open_transformer(spec.model, device, spec.engine)
        self.chat = self.gen.has_template
        main_type = [(to_spans(ex.tags, scheme) or [("none", 0, 0)])[0][0] for ex in train]
        ids = {t: i for i, t in enumerate(sorted(set(main_type)))}
        # balanced: even over each sentence's first entity type (and sentences with none)
        self.fixed = (
            fixed_examples([ids[t] for t in main_type], spec.shots, spec.selection, spec.seed)
            if spec.selection != "nearest"
            else []
        )
        self.encoder = None
        if spec.shots and spec.selection == "nearest":
            self.encoder = SentenceEncoder("minilm", device=device)
            self.train_vectors = self.encoder.encode([sentence_text(ex.tokens) for ex in train])

    def details(self) -> dict:
        return {
            "shots": self.spec.shots,
            "selection": self.spec.selection,
            "seed": self.spec.seed,
            "chat_template": self.chat,
            "types": self.types,
            "max_new_tokens": self.spec.max_new_tokens,
            "examples": [self.train[i].where for i in self.fixed],
        }

    def _shown(self, idx: list[int]) -> list[tuple[str, list[tuple[str, str]]]]:
        return [(sentence_text(self.train[i].tokens), gold_entities(self.train[i], self.scheme)) for i in idx]

    def prompts(self, texts: list[str]) -> list[list[int]]:
        per_text = (
            nearest_examples(self.encoder.encode(texts), self.train_vectors, self.spec.shots)
            if self.encoder is not None
            else [self.fixed] * len(texts)
        )
        out = []
        for text, idx in zip(texts, per_text):
            if self.chat:
                out.append(self.gen.encode(self.template.messages(text, self._shown(idx))))
            else:
                out.append(self.gen.tokenizer(self.template.document(text, self._shown(idx)))["input_ids"])
        return out

    def replies(self, texts: list[str]) -> list[str]:

        replies = greedy_replies(self.gen, self.prompts(texts), self.spec.max_new_tokens, self.spec.batch_size)
        if not self.chat:  # a plain LM runs on into the next block: its answer ends at a blank line
            replies = [r.split("\n\n")[0].split(self.template.text_cue)[0] for r in replies]
        return replies

    def tag(self, token_lists: list[list[str]], stats: ParseStats) -> tuple[list[list[str]], list[str]]:
        """Predicted tags of each sentence, and the model's replies."""
        replies = self.replies([sentence_text(t) for t in token_lists])
        tags = []
        for tokens, reply in zip(token_lists, replies):
            spans = place(parse_reply(reply, self.types, stats), tokens, joiner_of(tokens), stats)
            tags.append(from_spans(spans, len(tokens), self.scheme))
        return tags, replies


def prepare_tagger(config: JobConfig):
    """Read the config's sentences and build the tagger: (tagger, task, data, evaluation splits, language)."""

    quiet_libraries()
    set_threads(config.train.threads)  # once, for the whole job (the model and any encoder)
    spec = config.prompt
    task = get_task("token_classification")
    data = task.load_data(config, Problems(skip=config.data.on_error == "skip"))
    labelled_pool(config, data)
    for note in data.notes:
        log.info(note)
    splits = evaluation_splits(data, spec)
    set_seed(spec.seed)
    types = sorted({n.split("-", 1)[1] for n in data.labels.names if n != "O"})
    texts = [sentence_text(ex.tokens) for ex in data.train]
    language = spec.language if spec.language != "auto" else detect_language(texts)
    tagger = PromptTagger(spec, data.train, types, language, task.scheme, device=config.device)
    return tagger, task, data, splits, language


def tag_splits(config: JobConfig) -> tuple[dict, dict, object, str]:
    """(metrics and prediction rows per split, details of the prompt, the data, the language)."""
    tagger, task, data, splits, language = prepare_tagger(config)
    results, stats = {}, ParseStats()
    started = time.perf_counter()
    for split, examples in splits.items():
        tags, replies = tagger.tag([ex.tokens for ex in examples], stats)
        paths = [[data.labels.index[t] for t in sentence] for sentence in tags]
        outcome = task.result(examples, paths, [None] * len(examples), data.labels, float("nan"))
        outcome.metrics.pop("loss", None)
        for row, reply in zip(outcome.predictions, replies):
            row.update({"split": split, "reply": reply})
        results[split] = (outcome.metrics, None, outcome.predictions)
    details = {**tagger.details(), "parse": stats.to_json(), "seconds": round(time.perf_counter() - started, 1)}
    return results, details, data, language
