"""Suggesting with a trained fusion model: the sources' rows → candidates → model scores → CSR."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from kuoro.fusion.calibration import Calibration, calibrate_candidates
from kuoro.fusion.candidates import Candidates, ConceptPrior, build_candidates
from kuoro.fusion.cooccurrence import SubjectCooccurrence
from kuoro.fusion.numpy_model import NumpyFusion
from kuoro.sources.base import Suggester


@dataclass
class SourceTiming:
    """Seconds fusion models spent waiting on their sources (see ``timing_sources``)."""

    seconds: float = 0.0
    measured: bool = False  # whether any fusion model suggested meanwhile


_timing: ContextVar[SourceTiming | None] = ContextVar("source_timing", default=None)


@contextmanager
def timing_sources() -> Iterator[SourceTiming]:
    """Add up the time fusion models spend in their sources while the block runs (in this
    thread or task), e.g. to tell a server's client where a request's time went."""
    timing = SourceTiming()
    token = _timing.set(timing)
    try:
        yield timing
    finally:
        _timing.reset(token)


class FusionPredictor:
    """A trained fusion model with its sources: ``suggest`` like a source does.

    ``model`` is a ``NumpyFusion`` (serving: no torch) or a torch fusion model. Each row keeps
    the document's ``keep`` best candidates (however many the caller's ``limit`` later shows),
    over the ``n_concepts`` the model was trained with. ``calibration``: maps the model's
    scores to probabilities (ranking them alike); None gives the raw scores.
    """

    def __init__(
        self,
        sources: Sequence[Suggester],
        model: Any,
        prior: ConceptPrior,
        *,
        n_concepts: int,
        top_k: int,
        keep: int = 100,
        cooccurrence: SubjectCooccurrence | None = None,
        calibration: Calibration | None = None,
    ) -> None:
        self.sources = list(sources)
        self.calibration = calibration
        self.model = model if isinstance(model, NumpyFusion) else model.eval()
        self.prior = prior
        self.n_concepts = n_concepts
        self.top_k = top_k
        self.keep = keep
        self.cooccurrence = cooccurrence

    def source_rows(
        self, texts: Sequence[str], document_ids: Sequence[str | None] | None = None
    ) -> list[sp.csr_matrix]:
        """Each source's suggestions for the texts, cut to the concepts the model knows."""
        started = time.perf_counter()
        # Concepts appended to the vocabulary after training are unknown to the model.
        rows = [
            sp.csr_matrix(s.suggest(texts, document_ids))[:, : self.n_concepts]
            for s in self.sources
        ]
        timing = _timing.get()
        if timing is not None:
            timing.seconds += time.perf_counter() - started
            timing.measured = True
        return rows

    def fuse(self, rows: Sequence[sp.csr_matrix]) -> sp.csr_matrix:
        """The fused suggestions for the sources' rows of a batch of documents."""
        return self.fuse_candidates(rows)[2]

    def fuse_candidates(
        self, rows: Sequence[sp.csr_matrix]
    ) -> tuple[Candidates, np.ndarray, sp.csr_matrix]:
        """What ``fuse`` makes, with the candidates and their scores behind it."""
        n = rows[0].shape[0] if rows else 0
        candidates = self.candidates(rows)
        scores = self.candidate_scores(candidates)
        fused = top_rows(
            candidates.documents(), candidates.concepts, scores, n, self.n_concepts, self.keep
        )
        return candidates, scores, fused

    def candidates(self, rows: Sequence[sp.csr_matrix]) -> Candidates:
        """The candidates and features of the sources' rows, as the model was trained on."""
        return build_candidates(
            rows, None, self.prior, top_k=self.top_k, cooccurrence=self.cooccurrence
        )

    def candidate_scores(self, candidates: Candidates) -> np.ndarray:
        """(m,) float32 the model's score of each candidate, calibrated if it has a
        calibration."""
        raw = self.raw_scores(candidates)
        if self.calibration is None:
            return raw
        return calibrate_candidates(self.calibration, candidates.documents(), raw)

    def raw_scores(self, candidates: Candidates) -> np.ndarray:
        """(m,) float32 the model's own score of each candidate, before any calibration."""
        if isinstance(self.model, NumpyFusion):
            return self.model.predict_scores(candidates)
        import torch

        from kuoro.fusion.tensors import to_batch

        with torch.no_grad():
            scores = self.model.predict_scores(to_batch(candidates))
        return np.asarray(scores.numpy(), dtype=np.float32)

    def suggest(
        self, texts: Sequence[str], document_ids: Sequence[str | None] | None = None
    ) -> sp.csr_matrix:
        return self.fuse(self.source_rows(texts, document_ids))


def top_rows(
    documents: np.ndarray,
    concepts: np.ndarray,
    scores: np.ndarray,
    n_documents: int,
    n_concepts: int,
    keep: int,
) -> sp.csr_matrix:
    """A CSR of each document's ``keep`` highest positive scores (ties: lower concept id)."""
    positive = scores > 0
    documents, concepts, scores = documents[positive], concepts[positive], scores[positive]
    order = np.lexsort((concepts, -scores, documents))
    documents, concepts, scores = documents[order], concepts[order], scores[order]
    per_doc = np.bincount(documents, minlength=n_documents)
    start = np.cumsum(per_doc) - per_doc
    rank = np.arange(len(documents)) - start[documents]
    kept = rank < keep
    matrix = sp.csr_matrix(
        (scores[kept], (documents[kept], concepts[kept])),
        shape=(n_documents, n_concepts),
        dtype=np.float32,
    )
    matrix.sort_indices()
    return matrix
