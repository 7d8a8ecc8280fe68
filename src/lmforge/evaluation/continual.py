"""Continual-learning metrics over a stage matrix (Lopez-Paz & Ranzato 2017, "Gradient Episodic Memory
for Continual Learning", section 2, the definitions below).

``matrix[i][j]`` is the metric on stage ``j``'s validation set after training stage ``i`` (0-based
here; rows and columns are stages in training order), ``None`` where it was not measured (a stage
is evaluated only once it exists). ``baseline[j]`` is the metric of the untrained starting model
(the first stage's model before any training, with a fresh head) on stage ``j``: GEM's ``b``.

With T stages:

- average ``ACC = 1/T * sum_j R[T-1][j]``: the final model on every stage;
- backward transfer ``BWT = 1/(T-1) * sum_{j<T-1} (R[T-1][j] - R[j][j])``: how learning later stages
  changed earlier ones (negative = forgetting, for a metric where higher is better);
- forward transfer ``FWT = 1/(T-1) * sum_{j>0} (R[j-1][j] - b[j])``: what earlier stages gave a
  stage before it was trained on.
"""

from statistics import fmean

Matrix = list[list[float | None]]


def _mean(values: list[float | None]) -> float | None:
    return fmean(values) if values and all(v is not None for v in values) else None  # type: ignore[arg-type]


def average_metric(matrix: Matrix) -> float | None:
    """ACC: the mean of the last row over the stages (None if one is missing)."""
    if not matrix:
        return None
    last = matrix[-1]
    return _mean([last[j] if j < len(last) else None for j in range(len(matrix))])


def backward_transfer(matrix: Matrix) -> float | None:
    """BWT: the mean change of each earlier stage's metric from right after its training to the end."""
    stages = len(matrix)
    if stages < 2:
        return None
    last = matrix[-1]
    changes: list[float | None] = []
    for j in range(stages - 1):
        end, then = last[j], matrix[j][j]
        changes.append(end - then if end is not None and then is not None else None)
    return _mean(changes)


def forward_transfer(matrix: Matrix, baseline: list[float | None]) -> float | None:
    """FWT: the mean of each later stage's metric before its training minus the untrained model's."""
    stages = len(matrix)
    if stages < 2 or len(baseline) < stages:
        return None
    gains: list[float | None] = []
    for j in range(1, stages):
        before = matrix[j - 1][j] if j < len(matrix[j - 1]) else None
        untrained = baseline[j]
        gains.append(before - untrained if before is not None and untrained is not None else None)
    return _mean(gains)


def transfer_metrics(matrix: Matrix, baseline: list[float | None]) -> dict:
    """``{"average", "bwt", "fwt"}`` of a stage matrix (each None where it cannot be computed)."""
    return {
        "average": average_metric(matrix),
        "bwt": backward_transfer(matrix),
        "fwt": forward_transfer(matrix, baseline),
    }
