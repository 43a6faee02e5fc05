"""Learning a score threshold per concept from suggestions on held-out documents: what
``kuoro optimize --per-concept`` runs after choosing the global limit and threshold.

Start from the global (limit L, threshold t) that gives the best document-average F1. A
concept's threshold decides, in each document that has it among the suggestions, whether the
suggestion is in or out of the kept list (whose first L are the predictions). With every other
concept at t, that is one of two F1 values per document, computed once: "in" and "out" (a
suggestion taken out lets the next kept one move up into the top L; one let in pushes the
last one out). For a candidate threshold v the concept's suggestions scored ≥ v are in, so
its gain in F1 summed over documents is a sum over its suggestions; each concept gets the
candidate of the highest gain (of equal gains, the one nearest t; no gain: t).

Few gold occurrences make that choice noise, so it is shrunk towards t by the concept's
support n (its gold occurrences in the corpus) with ``min_support`` m:

* ``blend``: t + min(n / m, 1) · (t̂ − t): a concept of m or more occurrences keeps its own
  t̂, one of fewer moves from t towards it in proportion;
* ``fallback``: t̂ when n ≥ m, else t.

Each concept's gain is measured with the others at t; thresholds learnt together interact a
little, so the F1 they give together is measured again (``PerConceptResult.f1``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from kuoro.evaluation.metrics import RankingMetrics
from kuoro.evaluation.optimize import DEFAULT_THRESHOLDS
from kuoro.project.thresholds import ConceptThresholds

SHRINKAGES = ("blend", "fallback")
SUPPORTS = ("gold", "gold-or-predicted")
# Measured by 2-fold cross-validation within the validation documents of the Finnish YSO
# protocol (benchmarks/calibration.py, README "Per-concept thresholds"): no variant gained
# beyond its spread, so the default is the conservative one, which changes fewest concepts.
DEFAULT_SHRINKAGE = "fallback"
DEFAULT_MIN_SUPPORT = 10
DEFAULT_SUPPORT = "gold"


@dataclass(frozen=True)
class PerConceptResult:
    """Learnt thresholds and the document-average F1 they give on the corpus they were learnt
    on (in-sample: optimistic), with the global threshold's F1 there for comparison."""

    thresholds: ConceptThresholds
    f1: float
    global_f1: float


@dataclass(frozen=True)
class _Entries:
    """Every positive suggestion of the corpus, sorted by document, score descending, then
    concept id (the order ``rank_row`` ranks in), with whether it is gold."""

    documents: np.ndarray  # int64
    concepts: np.ndarray  # int64
    scores: np.ndarray  # float32, compared with thresholds in float32 as rank_row does
    gold: np.ndarray  # bool
    n_gold: np.ndarray  # (n_documents,) gold subjects of each document
    support: np.ndarray  # (width,) gold occurrences of each concept

    @classmethod
    def of(cls, rows: sp.csr_matrix, gold: Sequence[Iterable[int]]) -> _Entries:
        n = rows.shape[0]
        documents = np.repeat(np.arange(n, dtype=np.int64), np.diff(rows.indptr))
        concepts = rows.indices.astype(np.int64)
        scores = rows.data.astype(np.float32)
        positive = scores > 0
        documents, concepts, scores = documents[positive], concepts[positive], scores[positive]
        order = np.lexsort((concepts, -scores, documents))
        documents, concepts, scores = documents[order], concepts[order], scores[order]
        gold_sets = [set(g) for g in gold]
        gold_documents = np.repeat(np.arange(n, dtype=np.int64), [len(g) for g in gold_sets])
        gold_concepts = np.fromiter(
            (c for g in gold_sets for c in g), np.int64, count=len(gold_documents)
        )
        width = max(rows.shape[1], int(gold_concepts.max()) + 1 if len(gold_concepts) else 0)
        is_gold = np.isin(documents * width + concepts, gold_documents * width + gold_concepts)
        n_gold = np.array([len(g) for g in gold_sets], dtype=np.int64)
        support = np.bincount(gold_concepts, minlength=width)
        return cls(documents, concepts, scores, is_gold, n_gold, support)


def _f1(hits: np.ndarray, predicted: np.ndarray, n_gold: np.ndarray) -> np.ndarray:
    denominator = predicted + n_gold
    out = np.zeros(len(hits))
    np.divide(2.0 * hits, denominator, out=out, where=denominator > 0)
    return out


def _kept(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Which float32 scores pass ``threshold``: as ``rank_row`` and ``--threshold`` compare
    them (in float32), a threshold of 0 keeping every positive one."""
    return scores >= np.float32(threshold) if threshold > 0 else scores > 0


def _rank_among_kept(e: _Entries, threshold: float) -> np.ndarray:
    """Per suggestion, how many kept suggestions of its document rank above it."""
    kept = _kept(e.scores, threshold)
    if not len(kept):
        return np.zeros(0, np.int64)
    cumulative = np.cumsum(kept) - kept  # kept suggestions before each, over the corpus
    first = np.searchsorted(e.documents, np.arange(len(e.n_gold)))
    at_first = cumulative[np.minimum(first, len(kept) - 1)]
    return np.asarray(cumulative - at_first[e.documents])


def _gains(e: _Entries, limit: int, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Per suggestion, the change of its document's F1 when it is in the kept list and when
    it is out, every other suggestion kept as the global threshold keeps it."""
    n = len(e.n_gold)
    kept = _kept(e.scores, threshold)
    before = _rank_among_kept(e, threshold)
    n_kept = np.bincount(e.documents, weights=kept, minlength=n).astype(np.int64)
    predicted = kept & (before < limit)
    n_predicted = np.minimum(n_kept, limit)
    hits = np.bincount(e.documents, weights=predicted & e.gold, minlength=n)

    def gold_at(rank: int) -> np.ndarray:
        """(n,) whether each document's kept suggestion at ``rank`` (0-based) is gold."""
        out = np.zeros(n)
        at = kept & (before == rank)
        out[e.documents[at]] = e.gold[at]
        return out

    next_gold, last_gold = gold_at(limit), gold_at(limit - 1)
    d = e.documents
    g = e.gold.astype(np.float64)
    base = _f1(hits, n_predicted, e.n_gold)[d]
    f1_in, f1_out = base.copy(), base.copy()
    # Kept and predicted: taking it out lets the next kept suggestion (if any) move up.
    out_case = predicted
    has_next = (n_kept > limit)[d]
    f1_out[out_case] = _f1(
        hits[d] - g + next_gold[d] * has_next, n_predicted[d] - 1 + has_next, e.n_gold[d]
    )[out_case]
    # Not kept, but it would rank within the limit: letting it in pushes the last one out
    # when the list is full.
    in_case = ~kept & (before < limit)
    full = (n_kept >= limit)[d]
    in_hits = np.where(full, hits[d] + g - last_gold[d], hits[d] + g)
    in_predicted = np.where(full, n_predicted[d], n_predicted[d] + 1)
    f1_in[in_case] = _f1(in_hits, in_predicted, e.n_gold[d])[in_case]
    return f1_in - base, f1_out - base


def learn_concept_thresholds(
    suggestions: sp.csr_matrix | Sequence[sp.csr_matrix],
    gold: Sequence[Iterable[int]],
    *,
    limit: int,
    threshold: float,
    model_version: str,
    candidates: Sequence[float] = DEFAULT_THRESHOLDS,
    min_support: int = DEFAULT_MIN_SUPPORT,
    shrinkage: str = DEFAULT_SHRINKAGE,
    support_from: str = DEFAULT_SUPPORT,
) -> PerConceptResult:
    """Per-concept thresholds for suggestions at ``limit`` from the global ``threshold`` (see
    the module's docstring), tried among ``candidates``; tied to ``model_version``."""
    if shrinkage not in SHRINKAGES:
        raise ValueError(f"shrinkage must be one of {', '.join(SHRINKAGES)}, not {shrinkage!r}")
    if support_from not in SUPPORTS:
        raise ValueError(f"support must be one of {', '.join(SUPPORTS)}, not {support_from!r}")
    if min_support < 1:
        raise ValueError(f"min_support must be at least 1, not {min_support}")
    rows = suggestions if sp.issparse(suggestions) else sp.vstack(list(suggestions))
    rows = sp.csr_matrix(rows)
    if rows.shape[0] != len(gold):
        raise ValueError(f"{rows.shape[0]} suggestion rows for {len(gold)} documents")
    e = _Entries.of(rows, gold)
    gain_in, gain_out = _gains(e, limit, threshold)
    concepts, inverse = np.unique(e.concepts, return_inverse=True)
    best_gain = np.zeros(len(concepts))  # the global threshold's: no change
    best = np.full(len(concepts), threshold)
    # Nearest the global threshold first: of equal gains, the first found stays.
    for value in sorted({float(v) for v in candidates}, key=lambda v: (abs(v - threshold), v)):
        inside = _kept(e.scores, value)
        gain = np.bincount(
            inverse, weights=np.where(inside, gain_in, gain_out), minlength=len(concepts)
        )
        better = gain > best_gain + 1e-12
        best_gain[better], best[better] = gain[better], value
    support = e.support[concepts]
    if support_from == "gold-or-predicted":
        # Also the documents where it is predicted wrongly: a concept suggested often and
        # never right has all the evidence it needs for a higher threshold.
        wrong = _kept(e.scores, threshold) & (_rank_among_kept(e, threshold) < limit) & ~e.gold
        support = support + np.bincount(inverse, weights=wrong, minlength=len(concepts)).astype(
            np.int64
        )
    if shrinkage == "blend":
        weight = np.minimum(support / min_support, 1.0)
    else:
        weight = (support >= min_support).astype(np.float64)
    learnt = np.clip(threshold + weight * (best - threshold), 0.0, 1.0)
    listed = (learnt != threshold) | (support >= min_support)
    result = ConceptThresholds(
        model_version=model_version,
        limit=limit,
        global_threshold=float(threshold),
        concepts=concepts[listed].astype(np.int64),
        thresholds=learnt[listed],
        support=support[listed].astype(np.int64),
        min_support=min_support,
        shrinkage=shrinkage,
        documents=rows.shape[0],
    )
    return PerConceptResult(
        result,
        _document_f1(result.apply(rows), gold, limit),
        _document_f1(rows, gold, limit, threshold),
    )


def _document_f1(
    rows: sp.csr_matrix, gold: Sequence[Iterable[int]], limit: int, threshold: float = 0.0
) -> float:
    metrics = RankingMetrics(limit=limit, threshold=threshold)
    metrics.update(rows, gold)
    return metrics.compute()["F1 score (doc avg)"]
