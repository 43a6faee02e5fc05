"""A project's suggestions with the reasons behind them (``kuoro suggest --explain``, the REST
API's ``explain=true``, the report's worst documents).

``suggest_explained`` gives the rows ``Project.suggest`` gives, from one run of the sources,
and an ``Explainer`` that explains any of the suggestions of those rows: for a fusion project
the records of ``kuoro.fusion.explain``; a source project's score is its model's own, so its
record holds that score and rank alone (there is nothing to take apart).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from kuoro.fusion.candidates import Candidates
from kuoro.fusion.explain import (
    Explanation,
    SourceProjectExplanation,
    explain_candidates,
    source_explanation,
)
from kuoro.fusion.numpy_model import NumpyFusion
from kuoro.fusion.predictor import FusionPredictor
from kuoro.util.ranking import rank_row

if TYPE_CHECKING:
    from kuoro.project.project import Project

__all__ = ["Explainer", "suggest_explained"]


class Explainer:
    """Explains the suggestions of one batch's rows: ``explain(document, concepts)``."""

    def explain(
        self, document: int, concepts: Sequence[int]
    ) -> list[Explanation | SourceProjectExplanation | None]:
        """One record per concept suggested for the batch's ``document``-th text (None for
        a concept that is not among its suggestions)."""
        raise NotImplementedError


class _FusionExplainer(Explainer):
    def __init__(
        self,
        model: NumpyFusion,
        candidates: Candidates,
        scores: np.ndarray,
        names: Sequence[str],
        n_concepts: int,
    ) -> None:
        self.model = model
        self.candidates = candidates
        self.scores = scores
        self.names = list(names)
        self.n_concepts = n_concepts
        # Candidates are sorted by document, then concept: one key orders them all.
        self.keys = candidates.documents() * n_concepts + candidates.concepts.astype(np.int64)

    def explain(
        self, document: int, concepts: Sequence[int]
    ) -> list[Explanation | SourceProjectExplanation | None]:
        wanted = np.asarray(concepts, dtype=np.int64)
        keys = document * self.n_concepts + wanted
        at = np.minimum(np.searchsorted(self.keys, keys), max(len(self.keys) - 1, 0))
        found = (wanted < self.n_concepts) & (len(self.keys) > 0)
        if len(self.keys):
            found &= self.keys[at] == keys
        records = explain_candidates(
            self.model, self.candidates, at[found], self.scores, self.names
        )
        result: list[Explanation | SourceProjectExplanation | None] = [None] * len(wanted)
        for i, record in zip(np.flatnonzero(found), records, strict=True):
            result[int(i)] = record
        return result


class _SourceExplainer(Explainer):
    def __init__(self, project_id: str, rows: sp.csr_matrix) -> None:
        self.project_id = project_id
        self.rows = rows

    def explain(
        self, document: int, concepts: Sequence[int]
    ) -> list[Explanation | SourceProjectExplanation | None]:
        row = self.rows[document]
        ids, scores = rank_row(row.indices, row.data, row.nnz)
        rank = {int(c): (r + 1, float(s)) for r, (c, s) in enumerate(zip(ids, scores, strict=True))}
        result: list[Explanation | SourceProjectExplanation | None] = []
        for c in concepts:
            found = rank.get(int(c))
            result.append(
                None if found is None else source_explanation(self.project_id, found[1], found[0])
            )
        return result


def suggest_explained(
    project: Project, texts: Sequence[str], document_ids: Sequence[str | None] | None = None
) -> tuple[sp.csr_matrix, Explainer]:
    """``project.suggest(texts, document_ids)``, and what explains its suggestions."""
    predictor = project.model
    if not isinstance(predictor, FusionPredictor):
        rows = project.suggest(texts, document_ids)
        return rows, _SourceExplainer(project.project_id, rows)
    source_rows = predictor.source_rows(texts, document_ids)
    candidates, scores, fused = predictor.fuse_candidates(source_rows)
    names = [ref.project_id for ref in project.config.sources]
    model = numpy_model(predictor.model)
    explainer = _FusionExplainer(model, candidates, scores, names, predictor.n_concepts)
    return project.served_rows(fused), explainer


def numpy_model(model: Any) -> NumpyFusion:
    """The fusion model as the numpy model, which explains: a torch model (the torch
    engine's, $KUORO_FUSION_ENGINE) is exported as training exports it."""
    if isinstance(model, NumpyFusion):
        return model
    from kuoro.fusion.export import export_arrays  # torch: loaded already by that engine

    return NumpyFusion.from_arrays(export_arrays(model))
