"""A fusion project's current model written for other runtimes: ``kuoro export --onnx``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kuoro.errors import KuoroError
from kuoro.fusion.candidates import ConceptPrior
from kuoro.fusion.numpy_model import NumpyFusion
from kuoro.project.cooccurrence_files import load_table
from kuoro.project.fusion_files import NUMPY, load_prior
from kuoro.project.model_files import read_model

if TYPE_CHECKING:
    from kuoro.project.project import Project


@dataclass(frozen=True)
class Exported:
    """What was written: the file, its size, and the model in it."""

    path: Path
    bytes: int
    family: str
    members: int
    sources: list[str]


def export_onnx(project: Project, path: Path) -> Exported:
    """Write the project's current fusion model, members included, to ``path`` as ONNX
    (layout: ``kuoro.fusion.onnx_export``), with the prior it was trained with, so that the
    graph needs the candidates' features and concept ids alone.

    A model trained with a subject co-occurrence table gets it beside the file
    (``cooccurrence_file(path)``; metadata ``cooccurrence``): the caller computes the
    candidates' co-occurrence columns with it, as Kuoro does when suggesting.
    KuoroError (one line) for a source project, an untrained one, or without ``onnx``.
    """
    pid = project.project_id
    if project.config.kind != "fusion":
        raise KuoroError(
            f"project '{pid}' is a source project (backend '{project.config.backend}'): only "
            "fusion projects export to ONNX"
        )
    try:
        import onnx  # noqa: F401

        from kuoro.fusion.onnx_export import onnx_model, write_onnx
    except ImportError as exc:
        raise KuoroError(
            f"exporting to ONNX needs the onnx package ({exc}): pip install 'kuoro[onnx]'"
        ) from exc
    version_dir, manifest = read_model(project.model_dir, pid, "fusion")
    n_concepts = int(manifest["model"]["n_concepts"])
    model = _numpy_model(project, version_dir, manifest)
    counts = load_prior(project, version_dir, n_concepts)
    prior = ConceptPrior.from_counts(counts).feature(np.arange(n_concepts))
    sources = [str(s["project_id"]) for s in manifest["sources"]]
    metadata = {
        "project": pid,
        "model_version": version_dir.name,
        "vocabulary": str(manifest["vocabulary"]["name"]),
        "vocabulary_fingerprint": str(manifest["vocabulary"]["fingerprint"]),
        "sources": json.dumps(sources),
        "top_k": str(manifest["model"]["top_k"]),
        "n_concepts": str(n_concepts),  # also for mean, which reads no concept
        "cooccurrence": "",
    }
    table = load_table(version_dir, n_concepts)
    if table is not None:
        table.save(cooccurrence_file(path))
        metadata["cooccurrence"] = cooccurrence_file(path).name
    write_onnx(onnx_model(model, prior=prior, metadata=metadata), path)
    return Exported(path, path.stat().st_size, model.family, model.n_members, sources)


def cooccurrence_file(onnx_path: Path) -> Path:
    """Where ``export_onnx`` writes the model's co-occurrence table: beside the ONNX file."""
    return onnx_path.with_name(onnx_path.name + ".cooccurrence.npz")


def _numpy_model(project: Project, version_dir: Path, manifest: dict[str, Any]) -> NumpyFusion:
    """The saved numpy model, or (a model saved without one) the torch model exported."""
    if (version_dir / NUMPY).is_file():
        return NumpyFusion.load(version_dir / NUMPY)
    from kuoro.fusion.export import export_arrays  # torch: only for such a model
    from kuoro.project.fusion_training import load_torch_model

    return NumpyFusion.from_arrays(export_arrays(load_torch_model(project, version_dir, manifest)))
