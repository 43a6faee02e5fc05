"""How well scores read as probabilities: reliability bins and the expected calibration error.

A prediction with score s is correct with some probability; scores are *calibrated* when,
among the predictions scored about s, a share s is correct. The scores are put in ``n_bins``
equal-width bins over [0, 1] (bin b holds b/n ≤ s < (b + 1)/n, the last also s = 1); in each
bin the mean score (confidence) is compared with the share of correct predictions (accuracy).
The expected calibration error (ECE) is the mean gap weighted by the bins' sizes:

    ECE = Σ_b (n_b / N) · |accuracy_b − confidence_b|

0 for perfectly calibrated scores, at most 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

RELIABILITY_BINS = 10


def bin_of(scores: np.ndarray, n_bins: int = RELIABILITY_BINS) -> np.ndarray:
    """The bin of each score in [0, 1]: floor(s · n), with s = 1 in the last bin."""
    scaled = np.floor(np.asarray(scores, dtype=np.float64) * n_bins).astype(np.int64)
    return np.clip(scaled, 0, n_bins - 1)


@dataclass
class ReliabilityBins:
    """Predictions counted in equal-width score bins: how many, their scores and hits summed."""

    n_bins: int = RELIABILITY_BINS
    counts: np.ndarray = field(init=False)
    score_sums: np.ndarray = field(init=False)
    hit_sums: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        if self.n_bins < 1:
            raise ValueError(f"n_bins must be at least 1, not {self.n_bins}")
        self.counts = np.zeros(self.n_bins, np.int64)
        self.score_sums = np.zeros(self.n_bins)
        self.hit_sums = np.zeros(self.n_bins)

    def update(self, scores: np.ndarray, hits: np.ndarray) -> None:
        """Add predictions: their scores (in [0, 1]) and whether each is correct (0/1)."""
        scores = np.asarray(scores, dtype=np.float64)
        hits = np.asarray(hits, dtype=np.float64)
        if scores.shape != hits.shape:
            raise ValueError(f"{scores.shape} scores but {hits.shape} hits")
        bins = bin_of(scores, self.n_bins)
        self.counts += np.bincount(bins, minlength=self.n_bins)
        self.score_sums += np.bincount(bins, weights=scores, minlength=self.n_bins)
        self.hit_sums += np.bincount(bins, weights=hits, minlength=self.n_bins)

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def confidence(self) -> np.ndarray:
        """Each bin's mean score; NaN for an empty bin."""
        return _mean(self.score_sums, self.counts)

    def accuracy(self) -> np.ndarray:
        """Each bin's share of correct predictions; NaN for an empty bin."""
        return _mean(self.hit_sums, self.counts)

    def ece(self) -> float:
        """The expected calibration error; 0 when there is no prediction."""
        if not self.total:
            return 0.0
        gaps = np.abs(self.hit_sums - self.score_sums)  # n_b · |accuracy_b − confidence_b|
        return float(gaps.sum() / self.total)


def expected_calibration_error(
    scores: np.ndarray, hits: np.ndarray, n_bins: int = RELIABILITY_BINS
) -> float:
    """The ECE of predictions with these scores and hits (see the module's docstring)."""
    bins = ReliabilityBins(n_bins)
    bins.update(scores, hits)
    return bins.ece()


def _mean(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    out = np.full(len(sums), np.nan)
    np.divide(sums, counts, out=out, where=counts > 0)
    return out
