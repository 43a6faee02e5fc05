"""Ranking metrics on sparse suggestions, with the definitions ``annif eval`` uses.

Every metric is a document average. A document's predictions are its ``limit`` best
suggestions with score ≥ ``threshold``, ranked by score (ties by concept id). Precision@k
divides by the number of predictions kept (≤ k), as Annif does, not by k. nDCG uses binary
gains and the discount 1/log2(rank + 1); nDCG@k takes the ideal DCG from the gold set truncated
to k, plain nDCG from the whole gold set; a document without gold subjects scores 1.
Nothing here builds a documents × vocabulary array.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from kuoro.ranking import rank_row

AT_K = (1, 3, 5)
NDCG_AT = (5, 10)


def ranked_predictions(
    row_ids: np.ndarray, row_scores: np.ndarray, limit: int, threshold: float = 0.0
) -> np.ndarray:
    """The concept ids of one sparse row, best first, cut to ``limit`` and ``threshold``."""
    return rank_row(row_ids, row_scores, limit, threshold)[0]


def _dcg(hits: np.ndarray) -> float:
    return float((hits / np.log2(np.arange(2, len(hits) + 2))).sum())


def _ideal_dcg(n_gold: int, k: int | None) -> float:
    n = n_gold if k is None else min(n_gold, k)
    return _dcg(np.ones(n))


def _prf(n_hits: int, n_predicted: int, n_gold: int) -> tuple[float, float, float]:
    precision = n_hits / n_predicted if n_predicted else 0.0
    recall = n_hits / n_gold if n_gold else 0.0
    f1 = 2 * n_hits / (n_predicted + n_gold) if n_predicted + n_gold else 0.0
    return precision, recall, f1


@dataclass
class RankingMetrics:
    """Accumulates per-document metrics over batches; ``compute`` averages them."""

    limit: int = 10
    threshold: float = 0.0
    _sums: dict[str, float] = field(default_factory=dict)
    documents: int = 0

    def update(self, suggestions: sp.csr_matrix, gold: Sequence[Iterable[int]]) -> None:
        """Add a batch: one sparse suggestion row and one gold id set per document."""
        suggestions = sp.csr_matrix(suggestions)
        if suggestions.shape[0] != len(gold):
            raise ValueError(f"{suggestions.shape[0]} suggestion rows for {len(gold)} documents")
        for i, gold_ids in enumerate(gold):
            start, end = suggestions.indptr[i], suggestions.indptr[i + 1]
            predicted = ranked_predictions(
                suggestions.indices[start:end], suggestions.data[start:end], self.limit,
                self.threshold,
            )  # fmt: skip
            self._add(self.document_metrics(predicted, set(gold_ids)))

    def document_metrics(self, predicted: np.ndarray, gold: set[int]) -> dict[str, float]:
        """Every metric for one document's ranked predictions."""
        hits = np.fromiter((p in gold for p in predicted), dtype=float, count=len(predicted))
        n_gold = len(gold)
        out: dict[str, float] = {}
        p, r, f = _prf(int(hits.sum()), len(predicted), n_gold)
        out["Precision (doc avg)"], out["Recall (doc avg)"], out["F1 score (doc avg)"] = p, r, f
        for k in AT_K:
            p, r, f = _prf(int(hits[:k].sum()), min(k, len(predicted)), n_gold)
            out[f"Precision@{k}"], out[f"Recall@{k}"], out[f"F1@{k}"] = p, r, f
        out["NDCG"] = _dcg(hits) / _ideal_dcg(n_gold, None) if n_gold else 1.0
        for k in NDCG_AT:
            out[f"NDCG@{k}"] = _dcg(hits[:k]) / _ideal_dcg(n_gold, k) if n_gold else 1.0
        return out

    def _add(self, values: dict[str, float]) -> None:
        self.documents += 1
        for name, value in values.items():
            self._sums[name] = self._sums.get(name, 0.0) + value

    def compute(self) -> dict[str, float]:
        """The document averages, in a stable order."""
        n = max(self.documents, 1)
        return {name: total / n for name, total in self._sums.items()}
