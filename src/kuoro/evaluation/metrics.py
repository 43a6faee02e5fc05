"""Ranking metrics on sparse suggestions, with the definitions ``annif eval`` uses.

A document's predictions are its ``limit`` best suggestions with score ≥ ``threshold`` (and
> 0), ranked by score (ties by concept id), taken as a set where a metric needs a set.

- "doc avg": precision, recall and F1 per document, averaged over documents; a document
  with nothing right (or without gold subjects) counts 0.
- "subj avg": per concept, averaged over every concept of the vocabulary (the width of the
  suggestion rows), so concepts never seen count 0; "weighted subj avg" weights each concept
  by its gold support; "microavg" uses the counts summed over all documents.
- Precision@k / Recall@k / F1@k: doc averages on each document's top k predictions;
  precision divides by the number of predictions kept (≤ k), as Annif does, not by k.
- nDCG: binary gains, discount 1/log2(rank + 1); nDCG@k takes the ideal DCG from the gold
  set truncated to k, plain nDCG from the whole gold set; a document without gold scores 1.
- LRAP (label ranking average precision) on the sparse predictions: for each gold subject
  predicted at rank r, the share of gold among the top r; a gold subject not predicted
  contributes 0 (it ranks below every prediction); averaged over the document's gold
  subjects, then over documents; a document without gold scores 1. On a dense score matrix
  with distinct positive scores this is scikit-learn's LRAP less 1/V per unpredicted gold
  subject (V concepts), which tends to 0 as the vocabulary grows.
- Expected calibration error (ECE): how far the predictions' scores are from the share of
  them that is correct, in 10 equal-width score bins over [0, 1]: Σ_b (n_b / N) ·
  |correct share_b − mean score_b| over the N predictions (``kuoro.util.reliability``).
- True positives, False positives, False negatives: predictions summed over all documents.

Per-concept counts live in vocabulary-sized integer arrays; nothing here builds a
documents × vocabulary array.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from kuoro.util.ranking import rank_row
from kuoro.util.reliability import ReliabilityBins

AT_K = (1, 3, 5)
NDCG_AT = (5, 10)

# Every metric `kuoro eval` can print, in the order Annif prints them (Kuoro's extra @k ones
# beside Annif's); the last four are counts.
ANNIF_ORDER = (
    "Precision (doc avg)",
    "Recall (doc avg)",
    "F1 score (doc avg)",
    "Precision (subj avg)",
    "Recall (subj avg)",
    "F1 score (subj avg)",
    "Precision (weighted subj avg)",
    "Recall (weighted subj avg)",
    "F1 score (weighted subj avg)",
    "Precision (microavg)",
    "Recall (microavg)",
    "F1 score (microavg)",
    "F1@5",
    "NDCG",
    "NDCG@5",
    "NDCG@10",
    "Precision@1",
    "Precision@3",
    "Precision@5",
    "Recall@1",
    "Recall@3",
    "Recall@5",
    "F1@1",
    "F1@3",
    "LRAP",
    "Expected calibration error",
    "True positives",
    "False positives",
    "False negatives",
    "Documents evaluated",
)


@dataclass(frozen=True)
class SubjectResult:
    """How one concept fared: gold support, times predicted, hits, and P/R/F1 from them."""

    concept: int
    support: int
    predicted: int
    hits: int
    precision: float
    recall: float
    f1: float


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


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator elementwise, 0 where the denominator is 0 (Annif's choice)."""
    out = np.zeros(len(numerator))
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _grown(counts: np.ndarray, size: int) -> np.ndarray:
    if len(counts) >= size:
        return counts
    return np.concatenate([counts, np.zeros(size - len(counts), np.int64)])


@dataclass
class RankingMetrics:
    """Accumulates metrics over batches; ``compute`` gives the averages, ``counts`` the counts.

    ``n_concepts`` is the vocabulary size the subject averages divide by; by default the width
    of the widest suggestion matrix seen (``Project.suggest`` rows span the vocabulary).
    """

    limit: int = 10
    threshold: float = 0.0
    n_concepts: int | None = None
    _sums: dict[str, float] = field(default_factory=dict)
    documents: int = 0
    _width: int = 0
    # Per concept: gold support, times predicted, and predicted while gold (hits).
    _support: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    _predicted: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    _hits: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    # The predictions' scores against their correctness, for the calibration error.
    _reliability: ReliabilityBins = field(default_factory=ReliabilityBins)

    def update(self, suggestions: sp.csr_matrix, gold: Sequence[Iterable[int]]) -> None:
        """Add a batch: one sparse suggestion row and one gold id set per document."""
        suggestions = sp.csr_matrix(suggestions)
        if suggestions.shape[0] != len(gold):
            raise ValueError(f"{suggestions.shape[0]} suggestion rows for {len(gold)} documents")
        self._width = max(self._width, suggestions.shape[1])
        predicted_ids: list[np.ndarray] = []
        hit_ids: list[np.ndarray] = []
        gold_ids: list[np.ndarray] = []
        for i, document_gold in enumerate(gold):
            start, end = suggestions.indptr[i], suggestions.indptr[i + 1]
            predicted, scores = rank_row(
                suggestions.indices[start:end], suggestions.data[start:end], self.limit,
                self.threshold,
            )  # fmt: skip
            gold_set = set(document_gold)
            hits = np.fromiter((p in gold_set for p in predicted), bool, count=len(predicted))
            self._add(_metrics_from_hits(hits, len(gold_set)))
            self._reliability.update(scores, hits)
            predicted_ids.append(predicted)
            hit_ids.append(predicted[hits])
            gold_ids.append(np.fromiter(gold_set, np.int64, count=len(gold_set)))
        self._count(predicted_ids, hit_ids, gold_ids)

    def _count(self, *per_document: list[np.ndarray]) -> None:
        predicted, hits, gold = (
            np.concatenate([np.zeros(0, np.int64), *(a.astype(np.int64) for a in arrays)])
            for arrays in per_document
        )
        size = max([self._width, *(int(a.max()) + 1 for a in (predicted, gold) if len(a))])
        if size > len(self._support):  # rarely: the first batch, or a wider vocabulary
            self._support, self._predicted, self._hits = (
                _grown(a, size) for a in (self._support, self._predicted, self._hits)
            )
        # In place, at the batch's ids only: the cost per batch does not grow with the vocabulary.
        np.add.at(self._support, gold, 1)
        np.add.at(self._predicted, predicted, 1)
        np.add.at(self._hits, hits, 1)

    def document_metrics(self, predicted: np.ndarray, gold: set[int]) -> dict[str, float]:
        """Every per-document metric for one document's ranked predictions."""
        hits = np.fromiter((p in gold for p in predicted), dtype=bool, count=len(predicted))
        return _metrics_from_hits(hits, len(gold))

    def _add(self, values: dict[str, float]) -> None:
        self.documents += 1
        for name, value in values.items():
            self._sums[name] = self._sums.get(name, 0.0) + value

    def compute(self) -> dict[str, float]:
        """Every average: the per-document ones, then the subject and micro averages."""
        n = max(self.documents, 1)
        out = {name: total / n for name, total in self._sums.items()}
        out.update(self._subject_averages())
        out["Expected calibration error"] = self._reliability.ece()
        return out

    def reliability(self) -> ReliabilityBins:
        """The predictions counted in score bins (for a reliability diagram)."""
        return self._reliability

    def counts(self) -> dict[str, int]:
        """True/false positives and false negatives over all documents, and the documents."""
        tp = int(self._hits.sum())
        return {
            "True positives": tp,
            "False positives": int(self._predicted.sum()) - tp,
            "False negatives": int(self._support.sum()) - tp,
            "Documents evaluated": self.documents,
        }

    def _subject_averages(self) -> dict[str, float]:
        support, predicted, hits = self._support, self._predicted, self._hits
        precision = _ratio(hits, predicted)
        recall = _ratio(hits, support)
        f1 = _ratio(2 * hits, predicted + support)
        n_concepts = max(self.n_concepts or self._width, len(support), 1)
        total_support = int(support.sum())
        out: dict[str, float] = {}
        for name, values in (("Precision", precision), ("Recall", recall), ("F1 score", f1)):
            out[f"{name} (subj avg)"] = float(values.sum()) / n_concepts
            weighted = float(values @ support) / total_support if total_support else 0.0
            out[f"{name} (weighted subj avg)"] = weighted
        tp, n_predicted = int(hits.sum()), int(predicted.sum())
        p, r, f = _prf(tp, n_predicted, total_support)
        out["Precision (microavg)"], out["Recall (microavg)"], out["F1 score (microavg)"] = p, r, f
        return out

    def subject_results(self) -> list[SubjectResult]:
        """One row per concept that was gold or predicted, by support (descending), then id."""
        support, predicted, hits = self._support, self._predicted, self._hits
        seen = np.flatnonzero((support > 0) | (predicted > 0))
        seen = seen[np.lexsort((seen, -support[seen]))]
        results = []
        for c in seen.tolist():
            p, r, f = _prf(int(hits[c]), int(predicted[c]), int(support[c]))
            results.append(
                SubjectResult(c, int(support[c]), int(predicted[c]), int(hits[c]), p, r, f)
            )
        return results


def _metrics_from_hits(hits: np.ndarray, n_gold: int) -> dict[str, float]:
    """The per-document metrics from the hit (1) / miss (0) list of the ranked predictions."""
    hits = hits.astype(float)
    n_predicted = len(hits)
    out: dict[str, float] = {}
    p, r, f = _prf(int(hits.sum()), n_predicted, n_gold)
    out["Precision (doc avg)"], out["Recall (doc avg)"], out["F1 score (doc avg)"] = p, r, f
    for k in AT_K:
        p, r, f = _prf(int(hits[:k].sum()), min(k, n_predicted), n_gold)
        out[f"Precision@{k}"], out[f"Recall@{k}"], out[f"F1@{k}"] = p, r, f
    out["NDCG"] = _dcg(hits) / _ideal_dcg(n_gold, None) if n_gold else 1.0
    for k in NDCG_AT:
        out[f"NDCG@{k}"] = _dcg(hits[:k]) / _ideal_dcg(n_gold, k) if n_gold else 1.0
    out["LRAP"] = _lrap(hits, n_gold)
    return out


def _lrap(hits: np.ndarray, n_gold: int) -> float:
    """LRAP of one ranked prediction list (1/0 hits); gold not predicted adds 0."""
    if not n_gold:
        return 1.0
    ranks = np.flatnonzero(hits) + 1
    return float((np.arange(1, len(ranks) + 1) / ranks).sum()) / n_gold
