"""What a source project does: its estimator trained on a corpus, saved, loaded."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kuoro.analyzers import make_analyzer
from kuoro.config.projects import parse_analyzer
from kuoro.corpus.documents import Corpus
from kuoro.errors import CorpusError, KuoroError, ModelError
from kuoro.fusion.cooccurrence import SubjectCooccurrence
from kuoro.project.batch import Engine
from kuoro.project.cooccurrence_files import COOCCURRENCE, count_corpus
from kuoro.project.model_files import write_model
from kuoro.project.results import TrainingSummary
from kuoro.sources.base import Source
from kuoro.sources.registry import source_class

if TYPE_CHECKING:
    from kuoro.project.project import Project

log = logging.getLogger(__name__)

# Parameters that only shape what a trained source returns, not what it learnt.
SUGGEST_TIME_PARAMS = frozenset({"top_k"})


class SourceKind:
    """The source side of a project: a base indexing model of the configured backend."""

    name = "source"

    def __init__(self, project: Project) -> None:
        self.project = project

    def new_source(self) -> Source:
        """An untrained source built from the configured parameters."""
        project = self.project
        params: dict[str, Any] = dict(project.config.params)
        return source_class(project.config.backend)(project.vocabulary, project.analyzer, **params)

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
        """Fit a new source on the corpora and save it as the project's current model
        (``cached``, ``device`` and ``engine`` are a fusion project's: a source has nothing
        to reuse and trains in this process, with ``jobs`` threads where its library has
        them)."""
        project = self.project
        source = self.new_source()
        corpus = Corpus(corpus_paths, project.vocabulary, language=project.config.language)
        started = time.perf_counter()
        if source.needs_training:
            log.info("training %s on %s", project.project_id, ", ".join(map(str, corpus_paths)))
        source.fit(corpus, jobs=jobs, progress=progress)
        seconds = time.perf_counter() - started
        # Which subjects go together in the corpus: what a fusion model over this source
        # learns from (its own training documents are far fewer).
        table: SubjectCooccurrence | None = None
        try:
            table = count_corpus(project, corpus_paths)
        except CorpusError as exc:  # a source that learnt nothing from subjects may lack them
            log.info("%s: no subject co-occurrence recorded (%s)", project.project_id, exc)
        metadata = {
            "project_id": project.project_id,
            "kind": self.name,
            "backend": project.config.backend,
            "params": source.params(),
            "analyzer": project.analyzer.spec,
            "language": project.config.language,
            "vocabulary": {
                "name": project.vocabulary.name,
                "size": len(project.vocabulary),
                "fingerprint": project.vocabulary.fingerprint,
            },
            "training": {
                "corpus": [str(p) for p in corpus_paths],
                "documents": corpus.report.documents,
                "seconds": round(seconds, 3),
                "report": corpus.report.summary(),
            },
            "libraries": source.library_versions(),
        }

        def save(directory: Path) -> None:
            source.save_state(directory)
            if table is not None:
                table.save(directory / COOCCURRENCE)

        model_dir = write_model(project.model_dir, metadata, save)
        project.forget_model()
        return TrainingSummary(corpus.report.documents, seconds, model_dir, None)

    def learn(self, corpus_paths: Sequence[Path], **options: Any) -> TrainingSummary:
        project = self.project
        raise KuoroError(
            f"project '{project.project_id}' (backend '{project.config.backend}') does not "
            f"support learning; retrain it with: kuoro train {project.project_id} CORPUS"
        )

    def load(self, version_dir: Path, manifest: Mapping[str, Any]) -> Source:
        """The trained source of a model directory.

        The model is what was trained: its analyzer and learnt-state parameters win over a
        configuration edited since, which only takes effect after retraining.
        """
        project = self.project
        params = dict(manifest["params"])
        for key in SUGGEST_TIME_PARAMS & set(project.config.params):
            params[key] = project.config.params[key]
        cls = source_class(project.config.backend)
        analyzer = make_analyzer(*parse_analyzer(manifest["analyzer"]))
        source = cls(project.vocabulary, analyzer, **params)
        try:
            source.load_state(version_dir)
        except ModelError:
            raise
        except Exception as exc:  # a library's own error on a file it cannot read
            raise ModelError(
                f"project '{project.project_id}': cannot load the model in {version_dir}: "
                f"{exc}; retrain the project"
            ) from exc
        return source

    def changes_since_training(self, manifest: Mapping[str, Any]) -> list[str]:
        """What of the configuration outside the parameters changed since training."""
        analyzer = self.project.analyzer.spec
        if manifest.get("analyzer") != analyzer:
            return [f"analyzer {manifest.get('analyzer')} → {analyzer}"]
        return []
