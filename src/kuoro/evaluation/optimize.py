"""Choosing a project's limit and threshold: document-average P/R/F1 over a grid, as
``annif optimize`` computes them.

Suggestions are computed once; each document's row is ranked once, and every (limit,
threshold) point is evaluated from that ranking with array operations: a threshold keeps a
prefix of the ranking, so a point's predictions are the first min(limit, kept) of it and its
hits a cumulative sum. The numbers are those of ``RankingMetrics(limit, threshold)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp

DEFAULT_LIMITS = tuple(range(1, 21))
DEFAULT_THRESHOLDS = tuple(round(i * 0.05, 2) for i in range(20))  # 0.0, 0.05, …, 0.95

# Rows ranked together: bounds the (rows × largest limit) arrays of one step.
_CHUNK_ROWS = 4096


@dataclass(frozen=True)
class GridPoint:
    """Document averages of precision, recall and F1 at one limit and threshold."""

    limit: int
    threshold: float
    precision: float
    recall: float
    f1: float
    documents: int


class GridAccumulator:
    """Adds batches of suggestions to the P/R/F1 sums of every (limit, threshold) point."""

    def __init__(
        self,
        limits: Sequence[int] = DEFAULT_LIMITS,
        thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    ) -> None:
        if not limits or not thresholds:
            raise ValueError("the grid needs at least one limit and one threshold")
        if min(limits) < 1:
            raise ValueError("limits must be at least 1")
        self.limits = np.asarray(limits, dtype=np.int64)
        # Python floats: compared with float32 scores exactly as rank_row compares them.
        self.thresholds = [float(t) for t in thresholds]
        self.documents = 0
        self._sums = np.zeros((3, len(self.thresholds), len(self.limits)))

    @property
    def depth(self) -> int:
        """How many suggestions per document the grid looks at: the largest limit."""
        return int(self.limits.max())

    def update(self, suggestions: sp.csr_matrix, gold: Sequence[Iterable[int]]) -> None:
        """Add a batch: one sparse suggestion row and one gold id set per document."""
        suggestions = sp.csr_matrix(suggestions)
        if suggestions.shape[0] != len(gold):
            raise ValueError(f"{suggestions.shape[0]} suggestion rows for {len(gold)} documents")
        for start in range(0, len(gold), _CHUNK_ROWS):
            stop = min(start + _CHUNK_ROWS, len(gold))
            self._add(suggestions[start:stop], gold[start:stop])

    def _add(self, suggestions: sp.csr_matrix, gold: Sequence[Iterable[int]]) -> None:
        n = suggestions.shape[0]
        gold_sets = [set(g) for g in gold]
        scores, hits = _ranked_prefix(suggestions, gold_sets, self.depth)
        n_gold = np.array([len(g) for g in gold_sets], dtype=np.int64)[:, None]
        # hits_upto[d, j]: hits among document d's first j ranked suggestions.
        hits_upto = np.zeros((n, self.depth + 1), dtype=np.int64)
        np.cumsum(hits, axis=1, out=hits_upto[:, 1:])
        for t, threshold in enumerate(self.thresholds):
            kept = (scores >= threshold if threshold > 0 else scores > 0).sum(axis=1)
            n_predicted = np.minimum(self.limits[None, :], kept[:, None])
            n_hits = np.take_along_axis(hits_upto, n_predicted, axis=1)
            self._sums[0, t] += _ratio(n_hits, n_predicted).sum(axis=0)
            self._sums[1, t] += _ratio(n_hits, np.broadcast_to(n_gold, n_hits.shape)).sum(axis=0)
            self._sums[2, t] += _ratio(2 * n_hits, n_predicted + n_gold).sum(axis=0)
        self.documents += n

    def points(self) -> list[GridPoint]:
        """Every point, limits ascending and, within a limit, thresholds ascending."""
        means = self._sums / max(self.documents, 1)
        precision, recall, f1 = means.tolist()
        return [
            GridPoint(
                int(limit), threshold, precision[t][i], recall[t][i], f1[t][i], self.documents
            )
            for i, limit in enumerate(self.limits)
            for t, threshold in enumerate(self.thresholds)
        ]


def _ranked_prefix(
    suggestions: sp.csr_matrix, gold: Sequence[set[int]], depth: int
) -> tuple[np.ndarray, np.ndarray]:
    """(scores, hits), each (documents × depth): every row's best ``depth`` positive scores,
    best first (ties by concept id, as ``rank_row``), padded with 0, and whether each is gold."""
    n = suggestions.shape[0]
    rows = np.repeat(np.arange(n), np.diff(suggestions.indptr))
    ids, data = suggestions.indices.astype(np.int64), suggestions.data
    positive = data > 0
    rows, ids, data = rows[positive], ids[positive], data[positive]
    order = np.lexsort((ids, -data, rows))
    rows, ids, data = rows[order], ids[order], data[order]
    position = np.arange(len(rows)) - np.searchsorted(rows, rows)  # rank within its row
    top = position < depth
    rows, ids, data, position = rows[top], ids[top], data[top], position[top]

    # A (row, concept) pair is one int64 key, so that gold membership is one isin().
    gold_rows = np.repeat(np.arange(n), [len(g) for g in gold])
    gold_ids = np.fromiter((c for g in gold for c in g), np.int64, count=sum(map(len, gold)))
    width = max(suggestions.shape[1], int(gold_ids.max()) + 1 if len(gold_ids) else 0)
    is_gold = np.isin(rows * width + ids, gold_rows * width + gold_ids)

    scores = np.zeros((n, depth), dtype=data.dtype)
    hits = np.zeros((n, depth), dtype=np.int64)
    scores[rows, position] = data
    hits[rows, position] = is_gold
    return scores, hits


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Elementwise numerator / denominator, 0 where the denominator is 0 (as Annif counts)."""
    out = np.zeros(numerator.shape)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def limit_threshold_grid(
    suggestions: Sequence[sp.csr_matrix] | sp.csr_matrix,
    gold: Sequence[Iterable[int]],
    limits: Sequence[int] = DEFAULT_LIMITS,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
) -> list[GridPoint]:
    """Document-average P/R/F1 at every (limit, threshold), from suggestions computed once.

    ``suggestions`` is one sparse matrix or a sequence of batches, with one row per ``gold``
    entry (the gold concept ids of each document, in order).
    """
    batches: list[sp.csr_matrix] = [suggestions] if sp.issparse(suggestions) else list(suggestions)
    grid = GridAccumulator(limits, thresholds)
    start = 0
    for batch in batches:
        grid.update(batch, gold[start : start + batch.shape[0]])
        start += batch.shape[0]
    if start != len(gold):
        raise ValueError(f"{start} suggestion rows for {len(gold)} documents")
    return grid.points()


def best_point(
    grid: Sequence[GridPoint], metric: Literal["precision", "recall", "f1"] = "f1"
) -> GridPoint:
    """The point with the highest ``metric``; of equals, the first in grid order (the smallest
    limit, then the lowest threshold)."""
    if not grid:
        raise ValueError("empty grid")
    best = grid[0]
    for point in grid[1:]:
        if getattr(point, metric) > getattr(best, metric):
            best = point
    return best
