"""Average accuracy, backward and forward transfer (Lopez-Paz & Ranzato 2017) on hand-made matrices."""

import pytest

from lmforge.evaluation.continual import average_metric, backward_transfer, forward_transfer, transfer_metrics

# R[i][j]: accuracy on stage j after training stage i (three stages).
MATRIX = [
    [0.90, 0.30, 0.20],
    [0.70, 0.85, 0.40],
    [0.60, 0.75, 0.95],
]
BASELINE = [0.33, 0.25, 0.10]


def test_the_gem_definitions_by_hand():
    # ACC = (0.60 + 0.75 + 0.95) / 3
    assert average_metric(MATRIX) == pytest.approx(2.30 / 3)
    # BWT = ((0.60 - 0.90) + (0.75 - 0.85)) / 2 = -0.20
    assert backward_transfer(MATRIX) == pytest.approx(-0.20)
    # FWT = ((0.30 - 0.25) + (0.40 - 0.10)) / 2 = 0.175
    assert forward_transfer(MATRIX, BASELINE) == pytest.approx(0.175)
    assert transfer_metrics(MATRIX, BASELINE) == pytest.approx({"average": 2.30 / 3, "bwt": -0.20, "fwt": 0.175})


def test_two_stages_and_unmeasured_cells():
    matrix = [[0.9, None], [0.1, 0.95]]  # R[0][1] was not measured
    assert backward_transfer(matrix) == pytest.approx(0.1 - 0.9)
    assert forward_transfer(matrix, [0.2, 0.5]) is None
    assert average_metric(matrix) == pytest.approx(0.525)


def test_one_stage_has_no_transfer():
    assert transfer_metrics([[0.8]], [0.5]) == {"average": 0.8, "bwt": None, "fwt": None}
    assert transfer_metrics([], []) == {"average": None, "bwt": None, "fwt": None}
