"""A fusion model's files, read without torch: the numpy model, the prior, the sources.

A fusion model directory holds the model twice: ``model.pt`` (torch weights, for ``learn``)
and ``fusion.npz`` (the same model as numpy arrays, see ``kuoro.fusion.numpy_model``), which is
what suggesting reads; beside them the concept prior, the held-out split, the history and,
for a model trained since calibration exists, ``calibration.npz`` (``kuoro.fusion.calibration``;
absent: the raw scores).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kuoro.config.projects import ProjectConfig
from kuoro.errors import KuoroError, ModelError
from kuoro.fusion.calibration import Calibration
from kuoro.project.stores import model_fingerprint

if TYPE_CHECKING:
    from kuoro.project.project import Project

WEIGHTS, NUMPY, PRIOR = "model.pt", "fusion.npz", "prior.npz"
SPLIT, HISTORY, CALIBRATION = "split.npz", "history.jsonl", "calibration.npz"
ENGINES = ("numpy", "torch")


def fusion_engine() -> str:
    """What runs fusion models when suggesting: $KUORO_FUSION_ENGINE, "numpy" by default."""
    engine = os.environ.get("KUORO_FUSION_ENGINE", "numpy") or "numpy"
    if engine not in ENGINES:
        raise KuoroError(f"KUORO_FUSION_ENGINE is {engine!r}; allowed: {', '.join(ENGINES)}")
    return engine


def load_prior(project: Project, version_dir: Path, n_concepts: int | None = None) -> np.ndarray:
    """The concept prior counts the model was trained with (of ``n_concepts`` concepts)."""
    try:
        with np.load(version_dir / PRIOR, allow_pickle=False) as prior:
            counts = np.asarray(prior["counts"])
        if counts.ndim != 1 or counts.dtype.kind not in "iu" or (counts < 0).any():
            raise ValueError(f"counts of shape {counts.shape} and type {counts.dtype}")
        if n_concepts is not None and len(counts) != n_concepts:
            raise ValueError(f"{len(counts)} concepts, the model has {n_concepts}")
        return counts.astype(np.int64)
    except Exception as exc:  # a damaged file: numpy's and zipfile's errors vary
        raise ModelError(
            f"project '{project.project_id}': cannot read {version_dir / PRIOR}: {exc}; "
            f"retrain '{project.project_id}'"
        ) from exc


def load_calibration(project: Project, version_dir: Path) -> Calibration | None:
    """The model's calibration, or None for a model saved without one (raw scores)."""
    path = version_dir / CALIBRATION
    if not path.is_file():
        return None
    try:
        return Calibration.load(path)
    except ModelError as exc:
        raise ModelError(
            f"project '{project.project_id}': {exc}; retrain '{project.project_id}'"
        ) from exc


def trained_sources(project: Project, manifest: Mapping[str, Any] | None = None) -> list[Project]:
    """The project's sources, each trained; with a model's manifest, each as it was then.

    Without ``manifest`` (training) the configured sources must be trained; with it (loading,
    learning) they must be the ones the model was trained with, unchanged since.
    """
    pid = project.project_id
    configured = [ref.project_id for ref in project.config.sources]
    saved: list[Mapping[str, Any]] = list(manifest["sources"]) if manifest else []
    if manifest is not None:
        trained_ids = [s["project_id"] for s in saved]
        if trained_ids != configured:
            raise ModelError(
                f"project '{pid}' was trained with sources {', '.join(trained_ids)} but is "
                f"configured with {', '.join(configured)}; retrain '{pid}'"
            )
    elif project.projects is None:
        raise KuoroError(f"fusion project '{pid}' needs the configuration of its sources")
    sources = []
    for i, sid in enumerate(configured):
        if project.projects is not None and sid in project.projects:
            config = project.projects[sid]
        else:
            config = config_from_dict(saved[i]["config"])
        source = project.loaded_sources.get(sid)
        if source is None or source.config != config or source.datadir.root != project.datadir.root:
            source = project.sibling(config)
        if not source.is_trained:
            cls = ModelError if manifest is not None else KuoroError
            raise cls(
                f"source '{sid}' of fusion project '{pid}' is not trained yet; train it first "
                f"with: kuoro train {sid} CORPUS" + (f", then retrain '{pid}'" if manifest else "")
            )
        if manifest is not None and model_fingerprint(source) != saved[i]["fingerprint"]:
            raise ModelError(
                f"source '{sid}' was retrained after this model was trained (or its top_k "
                f"changed); retrain '{pid}'"
            )
        sources.append(source)
    return sources


def config_dict(config: ProjectConfig) -> dict[str, Any]:
    """A source project's configuration as JSON, saved with a fusion model that uses it."""
    return {
        "project_id": config.project_id,
        "name": config.name,
        "language": config.language,
        "vocab": config.vocab,
        "backend": config.backend,
        "analyzer": config.analyzer,
        "limit": config.limit,
        "access": config.access,
        "allow_learn": config.allow_learn,
        "params": dict(config.params),
    }


def config_from_dict(data: Mapping[str, Any]) -> ProjectConfig:
    return ProjectConfig(**{**data, "params": dict(data["params"]), "sources": ()})
