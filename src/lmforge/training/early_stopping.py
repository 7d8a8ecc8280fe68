"""Early stopping and best-model tracking on one validation metric."""

import math


class EarlyStopping:
    """Tracks the best value of ``metric``; ``should_stop`` after ``patience`` evaluations
    without an improvement of more than ``min_delta``. ``patience=None`` never stops."""

    def __init__(self, metric: str, mode: str, patience: int | None, min_delta: float = 0.0):
        self.metric, self.mode, self.patience, self.min_delta = metric, mode, patience, min_delta
        self.best: float | None = None
        self.best_step: int | None = None
        self.bad_evals = 0

    def update(self, value: float | None, step: int) -> bool:
        """Record an evaluation (None: the metric is missing); True if it is a new best."""
        if value is None or math.isnan(value):
            self.bad_evals += 1
            return False
        better = self.best is None or (
            value > self.best + self.min_delta if self.mode == "max" else value < self.best - self.min_delta
        )
        if better:
            self.best, self.best_step, self.bad_evals = value, step, 0
        else:
            self.bad_evals += 1
        return better

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_evals >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "best_step": self.best_step, "bad_evals": self.bad_evals}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_step, self.bad_evals = state["best"], state["best_step"], state["bad_evals"]
