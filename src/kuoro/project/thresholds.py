"""Per-concept score thresholds: stored with a project, tied to its trained model, applied to
its suggestion rows.

``kuoro optimize --per-concept`` learns them (``kuoro.evaluation.concept_thresholds``) and
saves them as ``projects/ID.thresholds.npz`` in the data directory: plain arrays (read with
``allow_pickle=False``) naming the model version they were learnt for. A project configured
with ``thresholds = "per-concept"`` applies them to every suggestion row: a suggestion of
concept c is kept when its score reaches c's threshold (a concept without one: the global
threshold learnt with them). Thresholds of another model version (the project was trained
since) are not applied, with a warning; none at all is an error.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from kuoro.errors import ModelError
from kuoro.project.datadir import DataDir
from kuoro.util.array_files import load_arrays, save_arrays

log = logging.getLogger(__name__)

FORMAT, FORMAT_VERSION = "kuoro-concept-thresholds", 1


@dataclass(frozen=True)
class ConceptThresholds:
    """A threshold for each of ``concepts`` (the rest: ``global_threshold``), learnt for
    model version ``model_version`` at ``limit`` suggestions per document.

    ``support``: each listed concept's gold occurrences in the corpus they were learnt on;
    ``min_support`` and ``shrinkage`` say how they were learnt (for the record).
    """

    model_version: str
    limit: int
    global_threshold: float
    concepts: np.ndarray  # (k,) int64, ascending
    thresholds: np.ndarray  # (k,) float64 in [0, 1]
    support: np.ndarray  # (k,) int64
    min_support: int
    shrinkage: str
    documents: int

    def __post_init__(self) -> None:
        k = len(self.concepts)
        if not (self.thresholds.shape == self.support.shape == (k,)):
            raise ValueError("concepts, thresholds and support must have one entry each")
        if k and (np.any(np.diff(self.concepts) <= 0) or self.concepts[0] < 0):
            raise ValueError("the concept ids must be distinct, non-negative and ascending")
        values = np.append(self.thresholds, self.global_threshold)
        if not (np.all(np.isfinite(values)) and values.min() >= 0 and values.max() <= 1):
            raise ValueError("thresholds must lie in [0, 1]")
        if self.limit < 1:
            raise ValueError(f"limit must be at least 1, not {self.limit}")

    def of(self, concepts: np.ndarray) -> np.ndarray:
        """(n,) float64 the threshold of each concept id."""
        concepts = np.asarray(concepts, np.int64)
        out = np.full(len(concepts), self.global_threshold)
        if len(self.concepts):
            at = np.minimum(np.searchsorted(self.concepts, concepts), len(self.concepts) - 1)
            own = self.concepts[at] == concepts
            out[own] = self.thresholds[at[own]]
        return out

    def apply(self, rows: sp.csr_matrix) -> sp.csr_matrix:
        """The rows without the suggestions below their concept's threshold (a threshold of 0
        keeps every positive score, as ``--threshold 0`` does)."""
        rows = sp.csr_matrix(rows, copy=True)
        limits = self.of(rows.indices)
        # In float32, as rank_row compares a score with --threshold.
        scores = rows.data.astype(np.float32)
        keep = np.where(limits > 0, scores >= limits.astype(np.float32), scores > 0)
        rows.data[~keep] = 0
        rows.eliminate_zeros()
        return rows

    def changed(self) -> int:
        """How many concepts have a threshold of their own other than the global one."""
        return int(np.count_nonzero(self.thresholds != self.global_threshold))

    # -- files ------------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write the thresholds as an uncompressed ``.npz`` of plain arrays, atomically."""
        arrays: dict[str, Any] = {
            "format": np.asarray(FORMAT),
            "format_version": np.asarray(FORMAT_VERSION, np.int64),
            "model_version": np.asarray(self.model_version),
            "limit": np.asarray(self.limit, np.int64),
            "global_threshold": np.asarray(self.global_threshold, np.float64),
            "concepts": np.asarray(self.concepts, np.int64),
            "thresholds": np.asarray(self.thresholds, np.float64),
            "support": np.asarray(self.support, np.int64),
            "min_support": np.asarray(self.min_support, np.int64),
            "shrinkage": np.asarray(self.shrinkage),
            "documents": np.asarray(self.documents, np.int64),
        }
        save_arrays(path, arrays)

    @classmethod
    def load(cls, path: Path) -> ConceptThresholds:
        """Read a file ``save`` wrote (never with pickle); ModelError if it is not one."""
        return load_arrays(path, "per-concept thresholds", cls.from_arrays)

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> ConceptThresholds:
        if str(arrays["format"]) != FORMAT:
            raise ValueError(f"not a {FORMAT} file")
        version = int(arrays["format_version"])
        if version != FORMAT_VERSION:
            raise ValueError(f"format version {version}; this Kuoro reads {FORMAT_VERSION}")
        return cls(
            model_version=str(arrays["model_version"]),
            limit=int(arrays["limit"]),
            global_threshold=float(arrays["global_threshold"]),
            concepts=np.asarray(arrays["concepts"], np.int64),
            thresholds=np.asarray(arrays["thresholds"], np.float64),
            support=np.asarray(arrays["support"], np.int64),
            min_support=int(arrays["min_support"]),
            shrinkage=str(arrays["shrinkage"]),
            documents=int(arrays["documents"]),
        )


def current_model_version(datadir: DataDir, project_id: str) -> str:
    """The version directory name of the project's current model (ModelError: untrained)."""
    try:
        return datadir.current_pointer(project_id).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ModelError(
            f"project '{project_id}' is not trained yet; train it with: "
            f"kuoro train {project_id} CORPUS"
        ) from None


def thresholds_for_model(
    project_id: str, path: Path, model_version: str
) -> ConceptThresholds | None:
    """The thresholds at ``path`` when they were learnt for ``model_version``; None, with a
    warning, when they were learnt for another; ModelError when there are none."""
    if not path.is_file():
        raise ModelError(
            f"project '{project_id}' is configured with thresholds = \"per-concept\", but no "
            f"per-concept thresholds were learnt for it: run kuoro optimize {project_id} "
            "CORPUS --per-concept (on held-out documents), or configure "
            'thresholds = "global"'
        )
    thresholds = ConceptThresholds.load(path)
    if thresholds.model_version != model_version:
        log.warning(
            "project '%s': the per-concept thresholds in %s were learnt for model version %s, "
            "but the project was trained since (its model is %s): they are not applied, "
            "suggestions are cut by the global threshold alone; learn them again with: "
            "kuoro optimize %s CORPUS --per-concept",
            project_id,
            path,
            thresholds.model_version,
            model_version,
            project_id,
        )
        return None
    return thresholds
