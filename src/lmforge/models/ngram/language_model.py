"""Language modelling with an interpolated Kneser-Ney n-gram model (``kneser_ney.py``), as a
one-pass lmforge model: raw text in words (the same word splitting as NER's raw-text input; Chinese
characters are words of their own) or in characters (``unit: char``), validation perplexity, and
sampling for ``lmforge generate``.

Perplexity counts what the model predicts: every word (or character) of a document plus its end,
as ``causal_lm`` counts the end-of-text token. Units differ between models (a word, a BPE token, a
character), so evaluation also reports ``bits_per_char`` and ``char_perplexity`` as causal_lm
does -- the total log-loss over the documents' characters, each document's end counted as one --
which compare across units. A word model skips the whitespace between words, so its figure is a
little flattering, and it predicts ``<unk>`` as one token (``unknown_rate``)."""

import math
import time
import unicodedata
from pathlib import Path

import numpy as np

from lmforge.data.tagging import word_offsets
from lmforge.errors import DataError, ModelError
from lmforge.evaluation.language_model import bits_per_char, char_perplexity, text_characters
from lmforge.evaluation.result import EvalResult
from lmforge.models.decoding import Generation
from lmforge.models.ngram.kneser_ney import EOS, UNK, KneserNeyLM
from lmforge.models.ngram.storage import load_folder, save_folder


def tokenize(text: str, unit: str) -> list[str]:
    return list(text) if unit == "char" else [text[s:e] for s, e in word_offsets(text)]


def _wide(ch: str) -> bool:
    return unicodedata.east_asian_width(ch) in "WF"


def _spaced(before: str, word: str) -> bool:
    """Whether generated words join with a space: not at the start or after one, not between
    Chinese (wide) characters."""
    return bool(before) and not before[-1].isspace() and not (_wide(before[-1]) and _wide(word[0]))


class NgramLanguageModel:
    fits_in_one_pass = True

    def __init__(self, settings: dict):
        self.settings = dict(settings)
        self.unit = settings["unit"]
        self.lm = KneserNeyLM(settings["order"], settings["discount"], settings["min_count"])

    @classmethod
    def from_spec(cls, spec, labels=None) -> "NgramLanguageModel":
        return cls({"unit": spec.unit, "order": spec.order, "discount": spec.discount, "min_count": spec.min_count})

    def fit(self, task, data) -> "NgramLanguageModel":
        if task.mode != "text":
            raise ModelError(
                "model.family ngram: the n-gram language model trains on raw text, "
                "not on conversations (SFT); use a transformer for SFT"
            )
        try:
            self.lm.fit([tokenize(ex.text, self.unit) for ex in data.train])
        except ValueError as exc:
            raise DataError(f"data.train: {exc} (model.min_count)") from None
        return self

    def parameter_count(self) -> int:
        return self.lm.parameter_count()

    # -- evaluation ------------------------------------------------------------------------------
    def evaluate(self, task, examples: list, labels=None):
        # The context-free baseline causal_lm reports: the add-one unigram of the training tokens.
        counts = self.lm.unigram_counts_ + 1.0
        unigram = np.log(counts / counts.sum())
        log_prob, baseline, tokens, unknown = 0.0, 0.0, 0, 0
        for ex in examples:
            words = tokenize(ex.text, self.unit)
            lp, n, unk = self.lm.log_likelihood(words)
            ids = [ord(c) for c in self.lm.encode(words)[self.lm.order - 1 :]]
            log_prob, baseline = log_prob + lp, baseline + float(unigram[ids].sum())
            tokens, unknown = tokens + n, unknown + unk
        if not tokens:
            raise DataError("no text to evaluate")
        loss = -log_prob / tokens
        # Characters as causal_lm counts them: the documents', each document's end as one more.
        characters = text_characters([ex.text for ex in examples], end_marker=True)
        metrics = {
            "loss": loss,
            "perplexity": math.exp(min(loss, 50)),
            "tokens": tokens,
            "count": len(examples),
            "characters": characters,
            "bits_per_char": bits_per_char(-log_prob, characters),
            "char_perplexity": char_perplexity(-log_prob, characters),
            "unknown_rate": unknown / tokens,
            "unigram_perplexity": math.exp(-baseline / tokens),
        }
        return EvalResult(metrics, [])

    # -- generation ------------------------------------------------------------------------------
    def generate(self, prompt, options, raw: bool = False, stream=None):
        """Continue ``prompt``: greedy, or sampled (temperature, top-k, top-p; ``seed``), never
        ``<unk>``, until ``</s>``, a stop string or ``max_new_tokens``."""
        options.check()
        if not isinstance(prompt, str):
            raise DataError("an n-gram language model continues plain text: give the prompt without --system")
        if options.num_beams > 1:
            raise DataError("--num-beams: an n-gram language model samples or decodes greedily (no beams)")
        rng = np.random.default_rng(options.seed)
        history = self.lm.encode(tokenize(prompt, self.unit), end=False)
        context = self.lm.order - 1
        pieces, stopped_by, start = [], "length", time.perf_counter()
        for _ in range(options.max_new_tokens):
            token = self._next(history[len(history) - context :] if context else "", options, rng, history)
            if token == self.lm.index_[EOS]:
                stopped_by = "eos"
                break
            history += chr(token)
            word = self.lm.vocabulary_[token]
            piece = word if self.unit == "char" or not _spaced(pieces[-1] if pieces else prompt, word) else " " + word
            pieces.append(piece)
            if stream and not options.stop:
                stream(piece)
        text = "".join(pieces)
        for stop in options.stop:
            if stop in text:
                text, stopped_by = text[: text.index(stop)], "stop"
        if stream and options.stop:
            stream(text)
        prompt_tokens = len(history) - len(pieces) - context
        return Generation(
            text, prompt_tokens, len(pieces) + (stopped_by == "eos"), time.perf_counter() - start, stopped_by
        )

    def _next(self, context: str, options, rng, history: str) -> int:
        p = self.lm.distribution(context)
        p[self.lm.index_[UNK]] = 0.0
        if options.repetition_penalty:
            seen = np.unique(np.frombuffer(history.encode("utf-32-le", "surrogatepass"), dtype=np.uint32))
            seen = seen[seen < len(p)]
            p[seen] /= options.repetition_penalty
        if not options.sampling:
            return int(p.argmax())
        if options.temperature:
            p = np.exp(np.log(np.maximum(p, 1e-300)) / options.temperature)
        order = np.argsort(-p)
        keep = order[: options.top_k] if options.top_k else order
        if options.top_p is not None:
            mass = np.cumsum(p[keep]) / p[keep].sum()
            keep = keep[: int(np.searchsorted(mass, options.top_p)) + 1]
        chosen = p[keep] / p[keep].sum()
        return int(keep[rng.choice(len(keep), p=chosen)])

    # -- saving ----------------------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        settings, arrays = self.lm.state()
        config = {
            "head": "causal_lm",
            **self.settings,
            "parameters": self.parameter_count(),
            "vocabulary_size": len(self.lm.vocabulary_),
        }
        save_folder(folder, config, {"lm": settings}, arrays)

    @classmethod
    def load(cls, folder: Path) -> "NgramLanguageModel":
        config, state, arrays = load_folder(folder)
        model = cls({k: config[k] for k in ("unit", "order", "discount", "min_count")})
        model.lm = KneserNeyLM.from_state(state["lm"], arrays)
        return model
