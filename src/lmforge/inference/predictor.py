"""Load a finished run once and predict or evaluate with it (used by ``predict``, ``eval`` and,
later, the server)."""

import logging
from pathlib import Path
from typing import Any, cast

import torch

from lmforge.config.schema import DataConfig, DataSource, Fields
from lmforge.data.examples import LabelSet, TextExample
from lmforge.data.readers import Problems
from lmforge.data.tagged import TaggedExample
from lmforge.data.tagging import word_offsets
from lmforge.errors import ConfigError, DataError, ModelError
from lmforge.evaluation.result import EvalResult
from lmforge.inference.precision import FP32, inference_precision, trained_precision
from lmforge.models import load_saved
from lmforge.models.one_pass import is_one_pass
from lmforge.runtime import resolve_device
from lmforge.tasks import get_task
from lmforge.tasks.classification import ClassificationTask, prediction_rows
from lmforge.tracking.run_folder import RunFolder

log = logging.getLogger("lmforge")


def entity_examples(texts: list[str] | None, tokens: list[list[str]] | None) -> list:
    """Sentences to tag: raw texts cut into words with character offsets, or pre-split tokens."""

    if texts is None:
        assert tokens is not None, "texts or tokens"
        return [TaggedExample(list(t)) for t in tokens]
    examples = []
    for text in texts:
        offsets = word_offsets(text)
        examples.append(TaggedExample([text[s:e] for s, e in offsets], raw_text=text, offsets=offsets))
    return examples


class RunPredictor:
    """A run's saved model, tokenizer, task and labels, loaded for inference on ``device`` (``auto`` |
    ``cpu`` | ``cuda`` | ``cuda:N``) in ``precision`` (``auto`` | ``fp32`` | ``bf16`` | ``fp16``, see
    ``lmforge.inference.precision``)."""

    def __init__(self, run_dir: str | Path, checkpoint: str = "auto", device: str = "auto", precision: str = "auto"):
        self.device = resolve_device(device)  # first: a wrong device fails before anything loads
        self.run = RunFolder(run_dir)
        self.record = self.run.read_record()
        if self.record.is_prompt_run:
            raise ModelError(
                f"{run_dir}: a prompt run (lmforge prompt) has no trained model to predict with; "
                "`lmforge eval RUN --data FILE` re-applies its prompt"
            )
        self.task = get_task(self.record.task)
        self.task.restore_head_options(self.record.options)
        self.task.read_run_files(self.run.path)
        assert self.record.labels is not None, "every trained run records its labels (language models: none)"
        self.labels = LabelSet.from_json(self.record.labels)
        self.folder = self.run.model_dir(checkpoint)
        loaded = load_saved(self.folder, self.record)
        # torch (float), torch-int8 or onnxruntime: exported folders (lmforge export) load by their files.
        self.backend = loaded.info.get("backend", "torch")
        if self.backend != "torch":
            self.device = torch.device("cpu")  # int8 kernels and ONNX Runtime run on the CPU
        model = loaded.model
        # One-pass models (the n-gram family) are not torch modules: they predict by themselves.
        self.one_pass = is_one_pass(model)
        if not self.one_pass:
            model = self.task.prepare_saved(model, self.folder, self.labels)
        self.model = model if self.one_pass else model.to(self.device).eval()
        # Exported int8 and ONNX folders and the n-gram family compute as they are.
        plain = self.one_pass or self.backend != "torch"
        if plain and precision not in ("auto", "fp32"):
            kind = "an n-gram model" if self.one_pass else f"a {self.backend} export"
            raise ConfigError(
                f"--precision {precision}: {run_dir} holds {kind}, which computes as it is (auto or fp32)"
            )
        trained = trained_precision(self.record.training)
        self.precision = FP32 if plain else inference_precision(precision, trained, self.device)
        if self.precision.used != "fp32":
            # debug: a bad input afterwards must stay a one-line error
            log.debug("%s: inference in %s (%s)", run_dir, self.precision.used, self.precision.reason)
        self.tokenizer = loaded.tokenizer
        self.max_length = self.record.max_length

    def predict(
        self, texts: list[str], pairs: list[str] | None = None, batch_size: int = 64, top_k: int = 3
    ) -> list[dict]:
        """Label, score and top-k probabilities for each text, batched by length."""
        if self.one_pass:
            return prediction_rows(self.model.probabilities(texts, pairs), self.labels.names, top_k)
        examples = [TextExample(t, pairs[i] if pairs else None) for i, t in enumerate(texts)]
        task = cast(ClassificationTask, self.task)  # labels and scores: a classification run
        features = task.encode(self.tokenizer, examples, self.max_length)
        with self.precision.autocast():
            logits = task.logits(self.model, self.tokenizer, features, batch_size, self.device)
        return prediction_rows(logits.softmax(-1), self.labels.names, top_k)

    def predict_entities(
        self, texts: list[str] | None = None, tokens: list[list[str]] | None = None, batch_size: int = 64
    ) -> list[dict]:
        """Entities in raw texts (character offsets) or in pre-split token lists (token offsets),
        each with its label, text and a confidence score."""
        examples = entity_examples(texts, tokens)
        rows: list[dict] = [{"entities": [], "tags": []} for _ in examples]
        todo = [i for i, ex in enumerate(examples) if ex.tokens]
        if self.one_pass:
            found = self.model.predict_examples(self.task, [examples[i] for i in todo], self.labels)
        else:
            with self.precision.autocast():
                found = cast(Any, self.task).predict_examples(  # the token_classification task's
                    self.model,
                    self.tokenizer,
                    [examples[i] for i in todo],
                    self.max_length,
                    batch_size,
                    self.device,
                    self.labels,
                )
        for i, row in zip(todo, found):
            rows[i] = row
        return rows

    def evaluate(
        self, path: str, fields: Fields | None = None, batch_size: int = 64, limit: int | None = None
    ) -> EvalResult:
        """Metrics on a labelled file; labels the run never saw are an error naming the row."""
        options = self.task.read_options()
        data = DataConfig(fields=fields or Fields(**self.record.fields), **options)
        source = DataSource(path=path, limit=limit)
        examples = self.task.read_labelled(source, data, self.labels, Problems())
        if not examples:
            raise DataError(f"{path}: no labelled rows to evaluate")
        if self.one_pass:
            return self.model.evaluate(self.task, examples, self.labels)
        features = self.task.encode(self.tokenizer, examples, self.max_length)
        with self.precision.autocast():
            return self.task.evaluate(
                self.model, self.tokenizer, features, examples, batch_size, self.device, self.labels
            )
