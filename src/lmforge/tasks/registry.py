"""The registry of tasks. A task is one module and one ``register_task`` call.

A task knows how its data is read, how a batch becomes a loss, how outputs become predictions and
which metrics apply; the training recipe and the CLI only talk to this interface.
"""

from dataclasses import dataclass, field
from typing import Any, Protocol

from lmforge.errors import ConfigError


@dataclass
class TaskData:
    """The splits of a job, read and checked, plus the label set."""

    train: list
    validation: list
    test: list
    labels: Any = None
    notes: list[str] = field(default_factory=list)


@dataclass
class EvalResult:
    metrics: dict
    predictions: list[dict]


class Task(Protocol):
    name: str
    head: str  # the model head the task needs
    metric_names: tuple[str, ...]
    default_metric: str

    def load_data(self, config, problems) -> TaskData: ...
    def encode(self, tokenizer, examples: list, max_length: int) -> list[dict]: ...
    def collate(self, features: list[dict], tokenizer) -> dict: ...
    def loss(self, model, batch: dict): ...
    def evaluate(
        self, model, tokenizer, features: list[dict], examples: list, batch_size: int, device
    ) -> EvalResult: ...


TASKS: dict[str, type] = {}


def register_task(cls: type) -> type:
    """Register a task class (a fresh instance is made for each job)."""
    TASKS[cls.name] = cls
    return cls


def get_task(name: str) -> Task:
    from lmforge.tasks import causal_lm, classification, masked_lm, seq2seq, token_classification  # noqa: F401  (registration)

    if name not in TASKS:
        raise ConfigError(f"task: unknown task '{name}' (known: {', '.join(sorted(TASKS))})")
    return TASKS[name]()
