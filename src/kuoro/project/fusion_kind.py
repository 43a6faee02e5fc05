"""What a fusion project does: a fusion model over trained source projects.

Training and learning run in :mod:`kuoro.project.fusion_training`, which imports torch; it is
imported only when a fusion project trains, so that suggesting never loads torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kuoro.errors import ModelError
from kuoro.fusion.candidates import ConceptPrior
from kuoro.fusion.numpy_model import NumpyFusion
from kuoro.fusion.predictor import FusionPredictor
from kuoro.project.batch import Engine
from kuoro.project.cooccurrence_files import load_table
from kuoro.project.fusion_files import (
    NUMPY,
    fusion_engine,
    load_calibration,
    load_prior,
    trained_sources,
)
from kuoro.project.results import TrainingSummary

if TYPE_CHECKING:
    from kuoro.project.project import Project


class FusionKind:
    """The fusion side of a project: its sources, and the model that fuses what they suggest."""

    name = "fusion"

    def __init__(self, project: Project) -> None:
        self.project = project

    def sources(self, manifest: Mapping[str, Any] | None = None) -> list[Project]:
        """The source projects, each trained; with a model's manifest, each as it was then."""
        return trained_sources(self.project, manifest)

    def train(
        self,
        corpus_paths: Sequence[Path],
        *,
        jobs: int = 1,
        progress: bool = False,
        cached: bool = True,
        device: str = "auto",
        engine: Engine | None = None,
    ) -> TrainingSummary:
        """Fill (or reuse) the store of the sources' suggestions for the corpora and train the
        fusion model on it."""
        from kuoro.project.fusion_training import train_fusion  # torch: only to train

        return train_fusion(
            self.project,
            corpus_paths,
            jobs=jobs,
            progress=progress,
            cached=cached,
            device=device,
            engine=engine,
        )

    def learn(
        self,
        corpus_paths: Sequence[Path],
        *,
        jobs: int = 1,
        progress: bool = False,
        device: str = "auto",
        quick: bool = False,
        engine: Engine | None = None,
    ) -> TrainingSummary:
        """Update the trained model with new documents (see ``fusion_training.learn_fusion``)."""
        from kuoro.project.fusion_training import learn_fusion  # torch: only to train

        return learn_fusion(
            self.project,
            corpus_paths,
            jobs=jobs,
            progress=progress,
            device=device,
            quick=quick,
            engine=engine,
        )

    def load(self, version_dir: Path, manifest: Mapping[str, Any]) -> FusionPredictor:
        """The trained model with its sources, ready to suggest: the numpy model, or torch's
        when $KUORO_FUSION_ENGINE says so or the model was saved without ``fusion.npz``;
        its scores calibrated when it was saved with a calibration."""
        project = self.project
        sources = self.sources(manifest)
        spec = manifest["model"]
        n_concepts = int(spec["n_concepts"])
        model: Any
        if fusion_engine() == "numpy" and (version_dir / NUMPY).is_file():
            model = NumpyFusion.load(version_dir / NUMPY)
            if model.n_concepts not in (None, n_concepts):
                raise ModelError(
                    f"project '{project.project_id}': {version_dir / NUMPY} is for "
                    f"{model.n_concepts} concepts, the model for {n_concepts}; retrain it"
                )
        else:
            from kuoro.project.fusion_training import load_torch_model  # torch: this engine

            model = load_torch_model(project, version_dir, manifest)
        return FusionPredictor(
            sources,
            model,
            ConceptPrior.from_counts(load_prior(project, version_dir, n_concepts)),
            n_concepts=n_concepts,
            top_k=int(spec["top_k"]),
            cooccurrence=load_table(version_dir, n_concepts),
            calibration=load_calibration(project, version_dir),
        )

    def changes_since_training(self, manifest: Mapping[str, Any]) -> list[str]:
        """What of the configuration outside the parameters changed since training: nothing
        (the sources are checked when they load)."""
        return []
