"""The task contract. A task is one module holding a ``Task`` subclass registered with
``@TASKS.register(name)``, plus one import line in ``lmforge/tasks/__init__.py``.

A task knows how its data is read, how a batch becomes a loss, how outputs become predictions and
which metrics apply; the training recipe, inference, prompting, export and the CLI talk to this
interface only. Every hook a caller may use is declared here with its default, so no caller ever
asks ``hasattr(task, ...)``: a task overrides what it needs.
"""

import math
from pathlib import Path
from typing import Any, ClassVar

from lmforge.data.task_data import TaskData
from lmforge.evaluation.result import EvalResult
from lmforge.models.head_growth import grow_output_layer
from lmforge.registry import Registry


class Task:
    """Base of every task. Subclasses set the four class attributes and implement the six
    abstract methods; every other hook has a working default."""

    name: ClassVar[str]  # the config's ``task:`` value
    head: ClassVar[str]  # the model head the task needs (a model family builds it)
    metric_names: ClassVar[tuple[str, ...]]  # scalar metrics ``evaluate`` reports
    default_metric: ClassVar[str]  # what early stopping watches unless the config says otherwise
    generates: ClassVar[bool] = False  # evaluation can also generate text (see ``set_generation``)
    predicts: ClassVar[str] = "predictions"  # what one prediction is, in a report's words ("labels")
    # The metric of a continual-learning stage matrix (training/continual/); None: ``default_metric``.
    transfer_metric: ClassVar[str | None] = None
    # Training extras a task was built and tested for; the set-up refuses the others, naming the key.
    supports_adversarial: ClassVar[bool] = False  # train.adversarial: perturbed input embeddings
    supports_rdrop: ClassVar[bool] = False  # train.rdrop: ``loss_and_logits`` is implemented
    generate_limit: int = 0  # evaluation rows also answered by generation (tasks that generate)
    max_new_tokens: int = 128  # the longest generated answer

    # -- data: required --------------------------------------------------------------------------
    def load_data(self, config, problems) -> TaskData:
        """Read and check every split of ``config.data``; row problems go to ``problems``."""
        raise NotImplementedError

    def read_labelled(self, source, data, labels, problems) -> list:
        """Read one labelled source (``lmforge eval --data``) as this task's examples, with the
        run's ``labels``."""
        raise NotImplementedError

    def encode(self, tokenizer, examples: list, max_length: int) -> list[dict]:
        """Examples -> model features (token ids and targets), cut to ``max_length`` tokens."""
        raise NotImplementedError

    def collate(self, features: list[dict], tokenizer) -> dict:
        """Features -> one padded batch of tensors."""
        raise NotImplementedError

    def loss(self, model, batch: dict):
        """The training loss (a scalar tensor) of one batch: a mean over its ``loss_units``."""
        raise NotImplementedError

    def loss_units(self, batch: dict) -> int:
        """How many things ``loss`` of ``batch`` is a mean over (read before ``loss``, which may
        consume the batch). The loop weights each micro batch by it, so accumulated and
        data-parallel steps average over the global batch's units, as one big batch would.
        Default: its examples; token-level losses count their scored tokens."""
        return int(next(iter(batch.values())).shape[0])

    def evaluate(self, model, tokenizer, features, examples, batch_size: int, device, labels=None) -> EvalResult:
        """Metrics and prediction rows of ``model`` on encoded ``features`` of ``examples``."""
        raise NotImplementedError

    # -- regularised training: optional ----------------------------------------------------------
    def loss_and_logits(self, model, batch: dict):
        """``loss`` of one batch and the logits it scores, one row per scored unit, (N, labels): an
        example's class scores, a token's tag scores. R-Drop (``train.rdrop``) compares their
        distributions between two dropout passes. Tasks that set ``supports_rdrop`` implement it;
        the others have no per-unit label distribution (language models are refused at set-up)."""
        raise NotImplementedError(f"task {self.name} has no per-unit logits for R-Drop")

    def relabel(self, examples: list, old, labels) -> None:
        """Move ``examples``, labelled with ids of the ``LabelSet`` ``old``, to the ids of ``labels``
        (which holds every name of ``old``), by name: an earlier or new continual stage's data in the
        grown label set. Default: nothing (tasks without labels)."""

    # -- configuration: optional -----------------------------------------------------------------
    def configure(self, config, train_examples: list, labels) -> None:
        """Read the job's options (class weights, schemes, templates) before encoding. Default: none."""

    def head_options(self) -> dict:
        """Task options the run record keeps (``RunRecord.head_options``), so later commands rebuild
        the same head. Default: nothing to keep."""
        return {}

    def restore_head_options(self, options: dict) -> None:
        """Restore what ``head_options()`` recorded, from a finished run's record. Default: nothing."""

    def read_options(self) -> dict:
        """Extra reader options for ``read_labelled`` on a run's data (NER: the output scheme).
        Default: none."""
        return {}

    def run_files(self) -> dict[str, str]:
        """Files (name -> text) the run folder keeps beside ``lmforge.json``. Default: none."""
        return {}

    def read_run_files(self, run_path: Path) -> None:
        """Read back what ``run_files`` wrote. Default: nothing."""

    # -- model: optional --------------------------------------------------------------------------
    def prepare_model(self, model, labels):
        """Change the freshly built model before tuning wraps it (NER: attach a CRF). Default: as is."""
        return model

    def prepare_training(self, model, config, padding: float) -> str | None:
        """Called once the model is ready to train (tuning applied): choose how training batches are
        built for it (classification, NER: packed rows where the model takes them and ``padding``,
        the share of tokens padding would add to the first epoch's batches, makes them pay). Returns
        a line for the run log, or None. Default: nothing to choose."""
        return None

    def prepare_saved(self, model, folder: Path, labels):
        """Put back what ``prepare_model`` added, on a model loaded from ``folder``. Default: as is."""
        return model

    def grow_head(self, model, old, labels) -> None:
        """Continual training on a bigger label set: give ``model``, trained with the ``LabelSet``
        ``old``, one output per name of ``labels`` (whose names begin with ``old``'s). The old labels
        keep their weights, the new ones start fresh. Default: grow the output layer (tasks without
        labels: nothing)."""
        if old is not None and labels is not None:
            grow_output_layer(model, len(old.names), list(labels.names))

    def fit_baseline(self, train_features: list[dict], vocab_size: int) -> None:
        """Fit a context-free baseline reported beside the model's metrics (language models: a
        unigram perplexity). Default: none."""

    def set_generation(self, limit: int, max_new_tokens: int) -> None:
        """How many evaluation rows to also answer by generation, and how long each answer may be
        (read by tasks with ``generates``; the others never generate)."""
        self.generate_limit, self.max_new_tokens = limit, max_new_tokens

    # -- output: optional -------------------------------------------------------------------------
    def headline(self, metrics: dict) -> str:
        """One line summing up a split's metrics for the terminal. Default: the scalar metrics this
        task names, in order."""
        shown = [k for k in self.metric_names if isinstance(metrics.get(k), (int, float))]
        return ", ".join(f"{k} {_number(metrics[k])}" for k in shown)

    def report_lines(self, metrics: dict) -> list[str]:
        """The lines ``lmforge eval`` prints for a split's metrics. Default: every scalar metric,
        one a line."""
        return [
            f"  {key:<16} {_number(value)}"
            for key, value in metrics.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)
        ]

    def count_phrase(self, metrics: dict) -> str:
        """What a split's metrics were computed on, for the first line of a report. Default:
        ``"N examples"`` from the ``count`` metric."""
        return f"{metrics['count']} examples"

    def sample_lines(self, predictions: list[dict]) -> list[str]:
        """A few evaluation rows ``lmforge eval`` shows after ``report_lines``. Default: for tasks
        that generate, the first three rows' reference and generated text (rows with ``where``,
        ``reference`` and ``generated``); none for the others."""
        lines = []
        for row in predictions[:3] if self.generates else []:
            lines += [
                f"  sample: {row['where']}",
                f"    reference: {row['reference'][:200]!r}",
                f"    generated: {row['generated'][:200]!r}",
            ]
        return lines


def _number(value: Any) -> str:
    if isinstance(value, float) and not math.isnan(value):
        return f"{value:.4f}"
    return str(value)


def generation_headline(metrics: dict) -> str:
    """The one-line summary of generated answers scored against references (BLEU, ROUGE, exact match)."""
    return (
        f"ROUGE-L {metrics['rougeL']:.4f}  ROUGE-1 {metrics['rouge1']:.4f}  BLEU {metrics['bleu']:.2f}  "
        f"exact match {metrics['exact_match']:.4f} ({metrics['count']} examples)"
    )


TASKS: Registry[type[Task]] = Registry("task", "task")


def get_task(name: str) -> Task:
    """A fresh instance of the task registered as ``name`` (a new one for each job)."""
    return TASKS.get(name)()
