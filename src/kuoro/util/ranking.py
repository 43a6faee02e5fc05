"""Ranking one document's sparse suggestion row: best first, cut by limit and threshold."""

from __future__ import annotations

import numpy as np


def rank_row(
    ids: np.ndarray, scores: np.ndarray, limit: int, threshold: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """The ``limit`` best (ids, scores) with score ≥ ``threshold`` (and > 0); ties by lower id."""
    keep = scores >= threshold if threshold > 0 else scores > 0
    ids, scores = ids[keep], scores[keep]
    order = np.lexsort((ids, -scores))[:limit]
    return ids[order], scores[order]
