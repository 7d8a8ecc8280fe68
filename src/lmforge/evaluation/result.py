"""What evaluating a model on labelled examples gives back, whatever the task or family."""

from dataclasses import dataclass


@dataclass
class EvalResult:
    """Metrics of one split and one prediction row per example (what ``predictions.jsonl`` holds)."""

    metrics: dict
    predictions: list[dict]
