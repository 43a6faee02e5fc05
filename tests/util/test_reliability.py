"""The expected calibration error and its bins, checked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from kuoro.util.reliability import ReliabilityBins, bin_of, expected_calibration_error


def test_bins_are_equal_width_with_one_in_the_last() -> None:
    scores = np.array([0.0, 0.0999, 0.1, 0.55, 0.9, 0.99, 1.0])
    assert bin_of(scores).tolist() == [0, 0, 1, 5, 9, 9, 9]


def test_ece_by_hand() -> None:
    # Ten predictions. Bin 9 [0.9, 1]: four at 0.95, two correct: |0.5 − 0.95| = 0.45.
    # Bin 2 [0.2, 0.3): two at 0.25, one correct: |0.5 − 0.25| = 0.25. Bin 3 [0.3, 0.4): one
    # at 0.3 (a bin's lower edge belongs to it), correct: |1 − 0.3| = 0.7. Bin 0: three at
    # 0.05, none correct: |0 − 0.05| = 0.05. ECE: the gaps weighted by the bins' sizes.
    scores = np.array([0.95, 0.95, 0.95, 0.95, 0.25, 0.25, 0.3, 0.05, 0.05, 0.05])
    hits = np.array([1, 1, 0, 0, 1, 0, 1, 0, 0, 0])
    expected = (4 * 0.45 + 2 * 0.25 + 1 * 0.7 + 3 * 0.05) / 10
    assert expected == pytest.approx(0.315)
    assert expected_calibration_error(scores, hits) == pytest.approx(expected)


def test_ece_is_zero_when_scores_are_the_share_correct() -> None:
    scores = np.array([0.25] * 4 + [0.75] * 4)
    hits = np.array([1, 0, 0, 0, 1, 1, 1, 0])
    assert expected_calibration_error(scores, hits) == pytest.approx(0.0)


def test_bins_add_up_across_updates() -> None:
    rng = np.random.default_rng(0)
    scores, hits = rng.uniform(size=200), rng.integers(0, 2, size=200)
    bins = ReliabilityBins()
    bins.update(scores[:50], hits[:50])
    bins.update(scores[50:], hits[50:])
    assert bins.total == 200
    assert bins.ece() == pytest.approx(expected_calibration_error(scores, hits))
    filled = bins.counts > 0
    assert np.all(np.isnan(bins.accuracy()[~filled]))
    assert np.all(bins.confidence()[filled] >= np.arange(10)[filled] / 10)


def test_no_prediction_is_no_error() -> None:
    assert ReliabilityBins().ece() == 0.0
    with pytest.raises(ValueError):
        ReliabilityBins(0)
