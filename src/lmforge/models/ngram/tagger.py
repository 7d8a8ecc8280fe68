"""Named-entity tagging with a feature-based CRF (``crf_tagger.py``), as a one-pass lmforge model.

Sentences come from any reader of the token_classification task (CoNLL, jsonl tokens/tags, jsonl
text + entities) with tags already in the task's scheme; entities, rows and metrics are the task's
own, so a CRF run reads like any other NER run."""

from pathlib import Path

import numpy as np

from lmforge.models.ngram.crf_tagger import CrfTagger
from lmforge.models.ngram.storage import load_folder, save_folder

MODEL_FILE = "crf.crfsuite"


class NgramTagger:
    fits_in_one_pass = True

    def __init__(self, settings: dict, labels: list[str]):
        self.settings, self.labels = dict(settings), list(labels)
        self.crf = CrfTagger(**self.settings)

    @classmethod
    def from_spec(cls, spec, labels: list[str]) -> "NgramTagger":
        return cls(
            {
                "c1": spec.c1,
                "c2": spec.c2,
                "max_iterations": spec.max_iterations,
                "window": spec.window,
                "min_freq": spec.min_df,
            },
            labels,
        )

    def fit(self, task, data) -> "NgramTagger":
        self.crf.fit([ex.tokens for ex in data.train], [ex.tags for ex in data.train])
        return self

    def parameter_count(self) -> int:
        return int(self.crf.weights_)

    def decode(self, examples: list, labels) -> tuple[list[list[int]], list[np.ndarray]]:
        """Tag ids of each sentence and the marginal probability of each chosen tag."""
        paths, confidence = [], []
        for tags, marginals in self.crf.predict_marginals([ex.tokens for ex in examples]):
            paths.append([labels.index[t] for t in tags])
            confidence.append(np.array(marginals))
        return paths, confidence

    def predict_examples(self, task, examples: list, labels) -> list[dict]:
        paths, confidence = self.decode(examples, labels)
        return task.prediction_rows(examples, paths, confidence, labels)

    def evaluate(self, task, examples: list, labels):
        paths, confidence = self.decode(examples, labels)
        # The loss is the mean negative log-likelihood of each gold sentence, as the CRF head's.
        losses = [self.crf.sequence_nll(ex.tokens, ex.tags) for ex in examples if ex.tokens]
        loss = float(np.mean(losses)) if losses else float("nan")
        return task.result(examples, paths, confidence, labels, loss)

    def save(self, folder: Path) -> None:
        config = {"head": "token_classification", "kind": "crf", **self.settings, "parameters": self.parameter_count()}
        save_folder(folder, config, {"labels": self.labels}, {})
        (Path(folder) / MODEL_FILE).write_bytes(self.crf.model_bytes_)

    @classmethod
    def load(cls, folder: Path) -> "NgramTagger":
        config, state, _ = load_folder(folder)
        settings = {k: config[k] for k in ("c1", "c2", "max_iterations", "window", "min_freq")}
        model = cls(settings, state["labels"])
        model.crf = CrfTagger.from_bytes(settings, (Path(folder) / MODEL_FILE).read_bytes())
        return model
