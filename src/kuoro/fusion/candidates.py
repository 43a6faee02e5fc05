"""Candidates and their features: per document, the union of the sources' top-K suggestions.

Everything is vectorised over a batch of documents, and nothing is allocated per vocabulary
size: a (document, concept) pair is keyed as ``document * V + concept`` (V only as a
multiplier), so the cost depends on the number of suggestions alone. The only V-sized array
read is the concept prior, by index.

Feature columns, source-major so that ``features[:, : S * P].reshape(m, S, P)`` gives each
source's P = ``len(SOURCE_FEATURES)`` columns, followed by the candidate-level ones
(``feature_names(S)`` spells out every column; ``FEATURE_NAMES`` is that for four sources).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from kuoro.fusion.cooccurrence import SubjectCooccurrence

# Per source s, named "s{s}_{name}"; rank is 1 for the source's best (ties: lower concept id).
SOURCE_FEATURES: dict[str, str] = {
    "score": "the source's raw score for the candidate, 0 when it did not suggest it",
    "present": "1 when the source suggested the candidate, else 0",
    "rrank": "1 / rank in the source's list for this document, 0 when absent",
    "logrank": "1 - ln(rank) / ln(top_k + 1), floored at 0: 1 at rank 1, 0 when absent",
    "relscore": "the score / the source's top score in this document, 0 when absent",
    "top": "the source's top score in this document (its confidence), 0 if it had none",
    "mass": "the sum of the source's scores in this document / top_k",
    "count": "the number of the source's suggestions in this document / top_k",
}
CANDIDATE_FEATURES: dict[str, str] = {
    "agreement": "the number of sources that suggested the candidate / S",
    "mean": "the sum of the sources' scores / S (absent = 0: the plain mean ensemble)",
    "mean_present": "the mean score of the sources that suggested the candidate",
    "max": "the highest score any source gave the candidate",
    "union_size": "the number of candidates in this document / (S * top_k)",
    "prior": "log1p(the concept's gold count in training) / log1p(largest count), 0 without",
    "implied": "Σ over the document's other candidates j of mean_j · P(c | j) / Σ mean_j, with "
    "P(c | j) counted on a large corpus (``SubjectCooccurrence``); 0 without the table",
    "implied_lift": "log1p(implied / P(c)) / 10: how much more likely the others make c",
    "corpus_prior": "log1p(the concept's document count in that corpus) / log1p(largest)",
}


def feature_names(n_sources: int) -> tuple[str, ...]:
    """The name of every feature column for ``n_sources`` sources, in column order."""
    per_source = [f"s{s}_{name}" for s in range(n_sources) for name in SOURCE_FEATURES]
    return (*per_source, *CANDIDATE_FEATURES)


FEATURE_NAMES: tuple[str, ...] = feature_names(4)


@dataclass(frozen=True)
class Candidates:
    """The candidates of a batch of documents, grouped by document, with their features."""

    doc_offsets: np.ndarray  # (n_docs + 1,) int64: document i's rows are [i] : [i + 1]
    concepts: np.ndarray  # (m,) int32, sorted within each document
    scores: np.ndarray  # (m, S) float32: each source's raw score, 0 where it did not suggest it
    features: np.ndarray  # (m, F) float32 model input, F = len(feature_names(S))
    labels: np.ndarray | None  # (m,) float32: 1.0 where the candidate is a gold concept

    @property
    def n_documents(self) -> int:
        return len(self.doc_offsets) - 1

    def documents(self) -> np.ndarray:
        """(m,) int64: the document (row of the batch) of each candidate."""
        return np.repeat(np.arange(self.n_documents, dtype=np.int64), np.diff(self.doc_offsets))


@dataclass(frozen=True)
class ConceptPrior:
    """How often each concept is gold in the training documents; the feature is in [0, 1]."""

    counts: np.ndarray  # (V,) float32 gold count of each concept
    scale: float  # log1p of the largest count: the feature is log1p(count) / scale

    @classmethod
    def from_counts(cls, counts: np.ndarray) -> ConceptPrior:
        counts = np.asarray(counts, dtype=np.float32)
        return cls(counts, float(np.log1p(counts.max())) if len(counts) else 0.0)

    def feature(self, concepts: np.ndarray, leave_out: np.ndarray | None = None) -> np.ndarray:
        """The prior of ``concepts``, less ``leave_out`` (0/1) from each count first."""
        counts = self.counts[concepts]
        if leave_out is not None:
            counts = np.maximum(counts - leave_out, 0.0)
        if self.scale <= 0:
            return np.zeros(len(concepts), np.float32)
        return np.asarray(np.log1p(counts) / self.scale, dtype=np.float32)


@dataclass(frozen=True)
class _Entries:
    """One source's suggestions as flat arrays, with each one's rank in its document."""

    rows: np.ndarray  # int64
    concepts: np.ndarray  # int64
    scores: np.ndarray  # float32
    ranks: np.ndarray  # int64, 1-based

    @classmethod
    def of(cls, matrix: sp.spmatrix | sp.sparray) -> _Entries:
        m = matrix.tocsr()
        if not m.has_sorted_indices:
            m = m.sorted_indices()
        rows = np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(m.indptr))
        concepts = np.asarray(m.indices, dtype=np.int64)
        scores = np.asarray(m.data, dtype=np.float32)
        positive = scores > 0  # a stored zero is no suggestion
        if not positive.all():
            rows, concepts, scores = rows[positive], concepts[positive], scores[positive]
        # Sorted by (document, score descending, concept), an entry's rank is its distance
        # from its document's first entry. A positive float32's bits order like its value,
        # so one int64 key and a stable sort (rows hold concepts in ascending order) do it.
        key = (rows << 31) | (np.int64(2**31 - 1) - scores.view(np.int32))
        order = np.argsort(key, kind="stable")
        per_row = np.bincount(rows, minlength=m.shape[0])
        row_start = np.cumsum(per_row) - per_row
        ranks = np.empty(len(order), np.int64)
        ranks[order] = np.arange(len(order)) - row_start[rows[order]] + 1
        return cls(rows, concepts, scores, ranks)


def build_candidates(
    sources: Sequence[sp.spmatrix | sp.sparray],
    gold: sp.spmatrix | sp.sparray | None = None,
    prior: ConceptPrior | None = None,
    *,
    top_k: int = 100,
    prior_counted_batch: bool = False,
    cooccurrence: SubjectCooccurrence | None = None,
) -> Candidates:
    """Candidates and features of a batch: one (n_docs × V) CSR per source, optional gold.

    ``prior_counted_batch``: the prior's counts include this batch's gold (training
    documents). Each candidate's own label is then left out of its count, so that the
    feature says what it says for an unseen document instead of leaking the label.
    ``cooccurrence``: the table behind the ``implied``, ``implied_lift`` and
    ``corpus_prior`` columns (0 without it).
    """
    if not sources:
        raise ValueError("build_candidates needs at least one source")
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, not {top_k}")
    n_docs, n_concepts = sources[0].shape
    for m in (*sources, *([gold] if gold is not None else [])):
        if m.shape != (n_docs, n_concepts):
            raise ValueError(f"shape {m.shape} differs from the first source's {sources[0].shape}")
    if prior is not None and len(prior.counts) != n_concepts:
        raise ValueError(f"prior has {len(prior.counts)} concepts, the sources {n_concepts}")
    if prior_counted_batch and gold is None:
        raise ValueError("prior_counted_batch needs the batch's gold")
    n_sources = len(sources)
    entries = [_Entries.of(m) for m in sources]
    union, inverse = _union([e.rows * n_concepts + e.concepts for e in entries])
    doc = union // n_concepts
    concepts = (union % n_concepts).astype(np.int32)
    per_doc = np.bincount(doc, minlength=n_docs)
    doc_offsets = np.zeros(n_docs + 1, np.int64)
    np.cumsum(per_doc, out=doc_offsets[1:])
    m = len(union)

    n_per_source = len(SOURCE_FEATURES)
    features = np.zeros((m, len(feature_names(n_sources))), np.float32)
    scores = np.zeros((m, n_sources), np.float32)
    n_present = np.zeros(m, np.float32)
    total = np.zeros(m, np.float32)
    best = np.zeros(m, np.float32)
    log_top_k = np.log(top_k + 1.0)
    for s, (e, at) in enumerate(zip(entries, inverse, strict=True)):
        scores[at, s] = e.scores
        n_present[at] += 1.0
        total[at] += e.scores
        best[at] = np.maximum(best[at], e.scores)
        top = np.zeros(n_docs, np.float32)
        first = e.ranks == 1
        top[e.rows[first]] = e.scores[first]
        mass = np.bincount(e.rows, weights=e.scores, minlength=n_docs) / top_k
        count = np.bincount(e.rows, minlength=n_docs) / top_k
        f = features[:, s * n_per_source : (s + 1) * n_per_source]
        f[at, 0] = e.scores
        f[at, 1] = 1.0
        f[at, 2] = 1.0 / e.ranks
        f[at, 3] = np.maximum(1.0 - np.log(e.ranks) / log_top_k, 0.0)
        f[at, 4] = e.scores / top[e.rows]
        f[:, 5] = top[doc]
        f[:, 6] = mass[doc]
        f[:, 7] = count[doc]

    shared = features[:, n_sources * n_per_source :]
    shared[:, 0] = n_present / n_sources
    shared[:, 1] = total / n_sources
    shared[:, 2] = total / np.maximum(n_present, 1.0)
    shared[:, 3] = best
    shared[:, 4] = per_doc[doc] / (n_sources * top_k)
    labels = None if gold is None else _gold_mask(union, gold, n_concepts).astype(np.float32)
    if prior is not None:
        shared[:, 5] = prior.feature(concepts, labels if prior_counted_batch else None)
    if cooccurrence is not None:
        if cooccurrence.n_concepts != n_concepts:
            raise ValueError(
                f"co-occurrence table has {cooccurrence.n_concepts} concepts, "
                f"the sources {n_concepts}"
            )
        shared[:, 6], shared[:, 7], shared[:, 8] = cooccurrence.features(
            doc, concepts, total / n_sources, n_docs
        )
    return Candidates(doc_offsets, concepts, scores, features, labels)


def _union(keys: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """The sorted distinct keys of all sources, and where each source's keys are in it."""
    flat = np.concatenate(keys)
    # Each source's keys are already sorted: a stable sort merges the runs quickly.
    order = np.argsort(flat, kind="stable")
    ordered = flat[order]
    new = np.ones(len(ordered), bool)
    np.not_equal(ordered[1:], ordered[:-1], out=new[1:])
    source = np.repeat(np.arange(len(keys)), [len(k) for k in keys])[order]
    if np.any(~new[1:] & (source[1:] == source[:-1])):
        raise ValueError(
            f"source {source[1:][~new[1:]][0]} suggests a concept twice for one document"
        )
    inverse = np.empty(len(flat), np.int64)
    inverse[order] = np.cumsum(new) - 1
    return ordered[new], np.split(inverse, np.cumsum([len(k) for k in keys])[:-1])


def _gold_keys(gold: sp.spmatrix | sp.sparray, n_concepts: int) -> np.ndarray:
    """Sorted ``document * V + concept`` keys of the gold pairs."""
    g = gold.tocsr()
    rows = np.repeat(np.arange(g.shape[0], dtype=np.int64), np.diff(g.indptr))
    keep = np.asarray(g.data) != 0
    return np.unique(rows[keep] * n_concepts + np.asarray(g.indices, np.int64)[keep])


def _gold_mask(keys: np.ndarray, gold: sp.spmatrix | sp.sparray, n_concepts: int) -> np.ndarray:
    """Which of the sorted ``keys`` are gold pairs."""
    gold_keys = _gold_keys(gold, n_concepts)
    if len(gold_keys) == 0:
        return np.zeros(len(keys), bool)
    at = np.minimum(np.searchsorted(gold_keys, keys), len(gold_keys) - 1)
    return np.asarray(gold_keys[at] == keys)


def candidate_recall(candidates: Candidates, gold: sp.spmatrix | sp.sparray) -> float:
    """The share of gold (document, concept) pairs that are among the candidates; NaN if none."""
    n_concepts = gold.shape[1]
    gold_keys = _gold_keys(gold, n_concepts)
    if len(gold_keys) == 0:
        return float("nan")
    keys = candidates.documents() * n_concepts + candidates.concepts
    if len(keys) == 0:
        return 0.0
    at = np.minimum(np.searchsorted(keys, gold_keys), len(keys) - 1)
    return float(np.count_nonzero(keys[at] == gold_keys)) / len(gold_keys)
