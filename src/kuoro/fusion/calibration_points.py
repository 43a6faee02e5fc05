"""The points a calibration is fitted on: a trained model's scores of held-out documents'
candidates, with whether each is correct (numpy, no torch).

Only held-out documents are read: documents the model was trained on would have it look
surer of itself than it is on documents it never saw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kuoro.fusion.calibration import CALIBRATION_DEPTH, CalibrationChoice, choose_calibration
from kuoro.fusion.candidates import ConceptPrior, build_candidates
from kuoro.fusion.cooccurrence import SubjectCooccurrence
from kuoro.fusion.numpy_model import NumpyFusion
from kuoro.store.suggestion_store import SuggestionStore


@dataclass(frozen=True)
class CalibrationPoints:
    """(n,) each point's raw score, 0/1 label and held-out document (its store position)."""

    scores: np.ndarray
    labels: np.ndarray
    documents: np.ndarray


def held_out_points(
    model: NumpyFusion,
    store: SuggestionStore,
    positions: np.ndarray,
    prior: ConceptPrior,
    *,
    depth: int = CALIBRATION_DEPTH,
    batch_size: int = 256,
    cooccurrence: SubjectCooccurrence | None = None,
) -> CalibrationPoints:
    """The ``depth`` best candidates (positive score) of each document at ``positions`` of
    the store, as the model scores them when suggesting."""
    scores, labels, documents = [], [], []
    for part in store.batches(batch_size, positions=positions):
        candidates = build_candidates(
            part.sources, part.gold, prior, top_k=store.top_k, cooccurrence=cooccurrence
        )
        assert candidates.labels is not None  # the store holds every document's gold
        raw = model.predict_scores(candidates)
        document = candidates.documents()
        order = np.lexsort((candidates.concepts, -raw, document))
        first = np.searchsorted(document[order], document[order])
        rank = np.arange(len(order)) - first
        kept = order[(rank < depth) & (raw[order] > 0)]
        scores.append(raw[kept])
        labels.append(candidates.labels[kept])
        documents.append(np.asarray(part.positions, np.int64)[document[kept]])
    if not scores:
        empty = np.zeros(0)
        return CalibrationPoints(empty, empty, np.zeros(0, np.int64))
    return CalibrationPoints(
        np.concatenate(scores), np.concatenate(labels), np.concatenate(documents)
    )


def calibrate_on_held_out(
    model: NumpyFusion,
    store: SuggestionStore,
    positions: np.ndarray,
    prior: ConceptPrior,
    *,
    requested: str = "auto",
    seed: int = 0,
    cooccurrence: SubjectCooccurrence | None = None,
) -> CalibrationChoice:
    """The calibration ``requested`` ("auto": chosen by cross-validation) fitted on the
    held-out documents at ``positions`` of the store."""
    points = held_out_points(model, store, positions, prior, cooccurrence=cooccurrence)
    return choose_calibration(
        points.scores, points.labels, points.documents, requested=requested, seed=seed
    )
