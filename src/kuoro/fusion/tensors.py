"""A batch of candidates as torch tensors: what every fusion model reads."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from kuoro.fusion.candidates import Candidates


@dataclass(frozen=True)
class CandidateBatch:
    """The candidates of ``n_docs`` documents, one row per (document, candidate concept)."""

    features: Tensor  # (m, F) float32 model input, columns as in ``feature_names(S)``
    scores: Tensor  # (m, S) float32 each source's raw score, 0 where it did not suggest it
    concepts: Tensor  # (m,) int64 concept id
    doc_index: Tensor  # (m,) int64 the document (row of the batch) of each candidate
    doc_offsets: Tensor  # (n_docs + 1,) int64 document i's candidates are [i] : [i + 1]
    labels: Tensor | None  # (m,) float32 1.0 where the candidate is a gold concept
    n_gold: Tensor | None  # (n_docs,) float32 gold count, gold outside the candidates included
    n_docs: int

    @property
    def n_candidates(self) -> int:
        return int(self.concepts.shape[0])

    @property
    def n_sources(self) -> int:
        return int(self.scores.shape[1])

    def to(self, device: torch.device | str) -> CandidateBatch:
        """The same batch with every tensor on ``device``."""

        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        return CandidateBatch(
            features=self.features.to(device, non_blocking=True),
            scores=self.scores.to(device, non_blocking=True),
            concepts=self.concepts.to(device, non_blocking=True),
            doc_index=self.doc_index.to(device, non_blocking=True),
            doc_offsets=self.doc_offsets.to(device, non_blocking=True),
            labels=move(self.labels),
            n_gold=move(self.n_gold),
            n_docs=self.n_docs,
        )

    def documents(self, start: int, stop: int) -> CandidateBatch:
        """The batch of documents ``start`` to ``stop`` (exclusive): a view, not a copy."""
        start, stop, _ = slice(start, stop).indices(self.n_docs)
        stop = max(start, stop)
        lo, hi = int(self.doc_offsets[start]), int(self.doc_offsets[stop])
        rows = slice(lo, hi)
        return CandidateBatch(
            features=self.features[rows],
            scores=self.scores[rows],
            concepts=self.concepts[rows],
            doc_index=self.doc_index[rows] - start,
            doc_offsets=self.doc_offsets[start : stop + 1] - lo,
            labels=None if self.labels is None else self.labels[rows],
            n_gold=None if self.n_gold is None else self.n_gold[start:stop],
            n_docs=stop - start,
        )

    def with_concepts(self, concepts: Tensor) -> CandidateBatch:
        """The same batch with other concept ids (e.g. indices into a gathered table)."""
        return replace(self, concepts=concepts)


def to_batch(candidates: Candidates, n_gold: np.ndarray | None = None) -> CandidateBatch:
    """Candidates → tensors. ``n_gold``: each document's number of gold concepts.

    Without ``n_gold`` the count of gold candidates stands in for it when there are labels: a
    lower bound that makes nDCG look better than it is whenever the candidates miss gold.
    """
    n_docs = candidates.n_documents
    offsets = torch.from_numpy(np.asarray(candidates.doc_offsets, dtype=np.int64))
    doc_index = torch.repeat_interleave(torch.arange(n_docs, dtype=torch.int64), offsets.diff())
    labels = None
    if candidates.labels is not None:
        labels = torch.from_numpy(np.asarray(candidates.labels, dtype=np.float32))
    if n_gold is not None:
        if len(n_gold) != n_docs:
            raise ValueError(f"n_gold has {len(n_gold)} entries for {n_docs} documents")
        gold_count: Tensor | None = torch.from_numpy(np.asarray(n_gold, dtype=np.float32))
    elif labels is not None:
        gold_count = torch.zeros(n_docs).index_add_(0, doc_index, labels)
    else:
        gold_count = None
    return CandidateBatch(
        features=torch.from_numpy(np.asarray(candidates.features, dtype=np.float32)),
        scores=torch.from_numpy(np.asarray(candidates.scores, dtype=np.float32)),
        concepts=torch.from_numpy(np.asarray(candidates.concepts, dtype=np.int64)),
        doc_index=doc_index,
        doc_offsets=offsets,
        labels=labels,
        n_gold=gold_count,
        n_docs=n_docs,
    )
