"""Text (and text-pair) classification: cross-entropy over a sequence-classification head."""

import math
from typing import cast

import torch
import torch.nn.functional as F

from lmforge.data.batching import inference_batches, pad_features
from lmforge.data.examples import LabelSet, TextExample, read_text_examples, stratified_split
from lmforge.data.readers import guarded
from lmforge.data.task_data import TaskData
from lmforge.errors import ConfigError, DataError
from lmforge.evaluation.classification import SCALAR_METRICS, classification_metrics
from lmforge.evaluation.result import EvalResult
from lmforge.models.first_token import enable_first_token
from lmforge.models.unpadded import choose_padding_free, pack_features
from lmforge.tasks.base import TASKS, Task


@TASKS.register("classification")
class ClassificationTask(Task):
    name = "classification"
    head = "sequence_classification"
    metric_names = SCALAR_METRICS + ("loss",)
    default_metric = "macro_f1"
    predicts = "labels"
    transfer_metric = "accuracy"
    supports_adversarial = True
    supports_rdrop = True

    def __init__(self):
        self.class_weights: torch.Tensor | None = None
        self.label_smoothing = 0.0
        self.packed = False  # training batches as packed rows (prepare_training)

    # -- data ------------------------------------------------------------------------------------
    def load_data(self, config, problems) -> TaskData:
        data = config.data
        train = guarded(problems, read_text_examples, data.train, data, problems)
        labels = LabelSet.build([ex.label for ex in train if ex.label is not None], data.label_names)
        self._attach_ids(train, labels, problems)
        notes = []
        if data.split is not None:
            ids = [ex.label_id for ex in train]
            keep, held = stratified_split(ids, data.split, config.train.seed)
            validation = [train[i] for i in held]
            train = [train[i] for i in keep]
            notes.append(
                f"held out {len(validation)} of {len(train) + len(validation)} training "
                f"examples for validation (seed {config.train.seed}, stratified)"
            )
        elif data.validation is not None:
            validation = guarded(problems, self.read_labelled, data.validation, data, labels, problems)
        else:
            validation = []
        test = guarded(problems, self.read_labelled, data.test, data, labels, problems) if data.test is not None else []
        if len(labels.names) < 2 and not problems.collect:
            raise DataError(f"data.train: classification needs at least two labels, found {labels.names}")
        return TaskData(train, validation, test, labels, notes)

    def read_labelled(self, source, data, labels: LabelSet, problems) -> list[TextExample]:
        examples = read_text_examples(source, data, problems)
        self._attach_ids(examples, labels, problems)
        return [ex for ex in examples if ex.label_id is not None]

    @staticmethod
    def _attach_ids(examples, labels: LabelSet, problems) -> None:
        for ex in examples:
            ex.label_id = labels.id_of(ex.label, ex.where, problems)

    def relabel(self, examples: list[TextExample], old: LabelSet, labels: LabelSet) -> None:
        for ex in examples:
            if ex.label_id is not None:
                ex.label_id = labels.index[old.names[ex.label_id]]

    def configure(self, config, train_examples, labels: LabelSet) -> None:
        """Loss options that depend on the data: class weights and label smoothing."""
        self.label_smoothing = config.train.label_smoothing
        weights = config.train.class_weights
        if weights is None:
            self.class_weights = None
        elif weights == "balanced":
            counts = torch.bincount(
                torch.tensor([ex.label_id for ex in train_examples]), minlength=len(labels.names)
            ).float()
            self.class_weights = counts.sum() / (len(labels.names) * counts.clamp(min=1))
        else:
            if len(weights) != len(labels.names):
                raise ConfigError(
                    f"train.class_weights: {len(weights)} weights for "
                    f"{len(labels.names)} labels ({', '.join(labels.names)})"
                )
            self.class_weights = torch.tensor(weights, dtype=torch.float32)

    # -- batches ---------------------------------------------------------------------------------
    def encode(self, tokenizer, examples: list[TextExample], max_length: int) -> list[dict]:
        if not examples:
            return []
        texts = [ex.text for ex in examples]
        pairs = [ex.text_pair for ex in examples] if examples and examples[0].text_pair is not None else None
        encoded = tokenizer(texts, pairs, truncation=True, max_length=max_length)
        features = []
        for i, ex in enumerate(examples):
            feature = {"input_ids": encoded["input_ids"][i]}
            if "token_type_ids" in encoded and pairs is not None:
                feature["token_type_ids"] = encoded["token_type_ids"][i]
            if getattr(ex, "label_id", None) is not None:
                feature["label"] = ex.label_id
            features.append(feature)
        return features

    def prepare_training(self, model, config, padding: float) -> str | None:
        self.packed, line = choose_padding_free(config.train.padding_free, model, padding)
        if enable_first_token(model):
            line += "; last layer: the first token only (what the classifier reads)"
        return line

    def collate(self, features: list[dict], tokenizer) -> dict:
        if not self.packed:
            return pad_features(features, tokenizer.pad_token_id or 0)
        batch = pack_features(features)  # (1, N) rows of real tokens
        if "label" in features[0]:
            batch["labels"] = torch.tensor([f["label"] for f in features], dtype=torch.long)
        return batch

    def loss_units(self, batch: dict) -> int:
        return int(batch["labels"].shape[0])  # the examples (a packed batch is one row of tokens)

    def loss(self, model, batch: dict):
        return self.loss_and_logits(model, batch)[0]

    def loss_and_logits(self, model, batch: dict):
        """Cross-entropy (class weights, label smoothing) and the (B, num_labels) logits."""
        labels = batch.pop("labels")
        logits = model(**batch).logits.float()  # (B, num_labels)
        weight = self.class_weights.to(logits.device) if self.class_weights is not None else None
        return F.cross_entropy(logits, labels, weight=weight, label_smoothing=self.label_smoothing), logits

    # -- evaluation ------------------------------------------------------------------------------
    @torch.inference_mode()
    def logits(self, model, tokenizer, features: list[dict], batch_size: int, device) -> torch.Tensor:
        """Logits for every feature, in input order (batches are formed by length)."""
        model.eval()
        out: list[torch.Tensor | None] = [None] * len(features)
        for idx in inference_batches([len(f["input_ids"]) for f in features], batch_size):
            batch = pad_features([features[i] for i in idx], tokenizer.pad_token_id or 0)
            batch.pop("labels", None)
            batch = {k: v.to(device) for k, v in batch.items()}
            logits = model(**batch).logits.float().cpu()
            for row, i in enumerate(idx):
                out[i] = logits[row]
        return torch.stack(cast(list[torch.Tensor], out)) if out else torch.zeros((0, 0))  # every slot is filled

    def evaluate(
        self,
        model,
        tokenizer,
        features,
        examples,
        batch_size: int,
        device,
        labels: LabelSet | None = None,
        top_k: int = 3,
    ) -> EvalResult:
        assert labels is not None, "classification is evaluated with the run's labels"
        return self.result(self.logits(model, tokenizer, features, batch_size, device), examples, labels, top_k)

    def result(self, logits: torch.Tensor, examples, labels: LabelSet, top_k: int = 3) -> EvalResult:
        """Metrics and prediction rows from the (N, labels) logits of ``examples`` (any model's:
        log-probabilities work too)."""
        gold = torch.tensor([ex.label_id for ex in examples], dtype=torch.long)
        loss = F.cross_entropy(logits, gold).item() if len(examples) else math.nan
        probs = logits.softmax(-1)
        pred = probs.argmax(-1)
        metrics = classification_metrics(gold.tolist(), pred.tolist(), labels.names)
        metrics["loss"] = loss
        rows = prediction_rows(probs, labels.names, top_k)
        for row, ex in zip(rows, examples):
            row.update({"text": ex.text, "gold": labels.names[ex.label_id], "where": ex.where})
            if ex.text_pair is not None:
                row["text_pair"] = ex.text_pair
        return EvalResult(metrics, rows)

    # -- output ----------------------------------------------------------------------------------
    def headline(self, metrics: dict) -> str:
        return f"accuracy {metrics['accuracy']:.4f}  macro F1 {metrics['macro_f1']:.4f} ({metrics['count']} examples)"

    def report_lines(self, metrics: dict) -> list[str]:
        """The scalar metrics, precision/recall/F1 per class, the confusion matrix, and (prompt runs)
        the calibrated metrics."""
        lines = [f"  {key:<16} {metrics[key]:.4f}" for key in REPORTED if key in metrics]
        lines.append(f"  {'label':<20} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}")
        for name, row in metrics["per_class"].items():
            lines.append(
                f"  {name[:20]:<20} {row['precision']:>9.4f} {row['recall']:>9.4f} {row['f1']:>9.4f} {row['support']:>8}"
            )
        lines.append("  confusion matrix (rows: true, columns: predicted):")
        for name, row in zip(metrics["labels"], metrics["confusion_matrix"]):
            lines.append(f"  {name[:20]:<20} " + " ".join(f"{v:>6}" for v in row))
        if "calibrated" in metrics:
            lines.append("  calibrated: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics["calibrated"].items()))
        return lines


# The scalar metrics a report lists, in order.
REPORTED = ("accuracy", "macro_f1", "micro_f1", "weighted_f1", "macro_precision", "macro_recall", "loss")


def prediction_rows(probs: torch.Tensor, names: list[str], top_k: int) -> list[dict]:
    """Label, score and the top-k label probabilities for each row of ``probs``."""
    k = min(top_k, len(names))
    top = probs.topk(k, dim=-1)
    rows = []
    for values, indices in zip(top.values.tolist(), top.indices.tolist()):
        rows.append(
            {
                "label": names[indices[0]],
                "score": round(values[0], 6),
                "top_k": [{"label": names[i], "score": round(v, 6)} for v, i in zip(values, indices)],
            }
        )
    return rows
