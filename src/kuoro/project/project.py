"""A configured project: its vocabulary, analyzer and source, trained, saved and loaded."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import scipy.sparse as sp

from kuoro.analyzers import Analyzer, make_analyzer
from kuoro.config.backends import BACKENDS
from kuoro.config.projects import ProjectConfig, parse_analyzer
from kuoro.corpus.documents import Corpus
from kuoro.errors import KuoroError, ModelError
from kuoro.project.datadir import DataDir
from kuoro.project.model_files import read_model, write_model
from kuoro.sources.base import Source, Suggester
from kuoro.sources.registry import source_class
from kuoro.util.locks import FileLock
from kuoro.util.ranking import rank_row
from kuoro.vocab.vocabulary import Vocabulary

if TYPE_CHECKING:
    from kuoro.fusion.fit import FitInfo

log = logging.getLogger(__name__)

# Parameters that only shape what a trained source returns, not what it learnt.
_SUGGEST_TIME_PARAMS = {"top_k"}


@dataclass(frozen=True)
class Suggestion:
    """One suggested subject, as Kuoro prints it and the REST API returns it."""

    uri: str
    label: str | None
    notation: str | None
    score: float


@dataclass(frozen=True)
class TrainingSummary:
    documents: int
    seconds: float
    model_dir: Path
    report: str


class Project:
    """A project of ``projects.toml`` bound to a data directory.

    A fusion project needs its sources' configurations: ``projects`` (all configured projects)
    to train; to suggest without it, those saved with its model are used. ``loaded_sources``:
    source projects already bound (a server's), used as this fusion project's sources where
    configured alike, so that a process holding both loads each source model once.
    """

    def __init__(
        self,
        config: ProjectConfig,
        datadir: DataDir,
        projects: Mapping[str, ProjectConfig] | None = None,
        *,
        loaded_sources: Mapping[str, Project] | None = None,
    ) -> None:
        self.config = config
        self.datadir = datadir
        self.projects = projects
        self.loaded_sources = dict(loaded_sources or {})
        self.last_fit: FitInfo | None = None  # what the latest fusion training did

    @property
    def project_id(self) -> str:
        return self.config.project_id

    @cached_property
    def vocabulary(self) -> Vocabulary:
        return self.datadir.load_vocabulary(self.config.vocab)

    @cached_property
    def analyzer(self) -> Analyzer:
        return make_analyzer(*parse_analyzer(self.config.analyzer))

    @property
    def model_dir(self) -> Path:
        return self.datadir.project_dir(self.project_id)

    def _require_source_project(self) -> None:
        if self.config.kind != "source":
            raise KuoroError(
                f"project '{self.project_id}' is a fusion project (backend "
                f"'{self.config.backend}'), not a source"
            )

    def new_source(self) -> Source:
        """An untrained source built from the configured parameters."""
        self._require_source_project()
        params: dict[str, Any] = dict(self.config.params)
        return source_class(self.config.backend)(self.vocabulary, self.analyzer, **params)

    # -- training --------------------------------------------------------------------------

    def train(
        self,
        corpus_paths: Sequence[Path],
        *,
        jobs: int = 1,
        progress: bool = False,
        cached: bool = True,
        device: str = "auto",
    ) -> TrainingSummary:
        """Train on the corpora and save the result as the project's current model.

        A fusion project runs its (trained) sources over the corpora into a suggestion store,
        reused while they and the corpora are unchanged when ``cached``, and trains on it.
        Only one process at a time trains or updates a project: another is refused.
        """
        with self.lock():
            if self.config.kind == "fusion":
                from kuoro.project.fusion_training import train_fusion

                return train_fusion(
                    self, corpus_paths, jobs=jobs, progress=progress, cached=cached, device=device
                )
            return self._train_source(corpus_paths, jobs=jobs, progress=progress)

    def lock(self) -> FileLock:
        """The project's lock, taken: held while its model is trained or updated."""
        return self.datadir.project_lock(self.project_id).acquire_or_fail(
            "wait for it to finish, then try again"
        )

    def _train_source(
        self, corpus_paths: Sequence[Path], *, jobs: int, progress: bool
    ) -> TrainingSummary:
        source = self.new_source()
        corpus = Corpus(corpus_paths, self.vocabulary, language=self.config.language)
        started = time.perf_counter()
        if source.needs_training:
            log.info("training %s on %s", self.project_id, ", ".join(map(str, corpus_paths)))
        source.fit(corpus, jobs=jobs, progress=progress)
        seconds = time.perf_counter() - started
        metadata = {
            "project_id": self.project_id,
            "kind": "source",
            "backend": self.config.backend,
            "params": source.params(),
            "analyzer": self.analyzer.spec,
            "language": self.config.language,
            "vocabulary": {
                "name": self.vocabulary.name,
                "size": len(self.vocabulary),
                "fingerprint": self.vocabulary.fingerprint,
            },
            "training": {
                "corpus": [str(p) for p in corpus_paths],
                "documents": corpus.report.documents,
                "seconds": round(seconds, 3),
                "report": corpus.report.summary(),
            },
            "libraries": source.library_versions(),
        }
        model_dir = write_model(self.model_dir, metadata, source.save_state)
        self.__dict__.pop("source", None)
        return TrainingSummary(corpus.report.documents, seconds, model_dir, corpus.report.summary())

    # -- fusion projects -------------------------------------------------------------------

    def learn(
        self,
        corpus_paths: Sequence[Path],
        *,
        jobs: int = 1,
        progress: bool = False,
        device: str = "auto",
        quick: bool = False,
    ) -> TrainingSummary:
        """Update the trained model with new documents (fusion projects; see fusion_project).
        ``quick``: a few bounded epochs, for a client waiting on the answer."""
        if self.config.kind != "fusion":
            raise KuoroError(
                f"project '{self.project_id}' (backend '{self.config.backend}') does not support "
                f"learning; retrain it with: kuoro train {self.project_id} CORPUS"
            )
        from kuoro.project.fusion_training import learn_fusion

        with self.lock():
            return learn_fusion(
                self, corpus_paths, jobs=jobs, progress=progress, device=device, quick=quick
            )

    # -- loading and suggesting ------------------------------------------------------------

    @property
    def is_trained(self) -> bool:
        return (self.model_dir / "CURRENT").is_file()

    @cached_property
    def source(self) -> Suggester:
        """The trained model, loaded once; it is checked against the vocabulary and config."""
        version_dir, manifest = read_model(self.model_dir, self.project_id, self.config.kind)
        self._check_manifest(manifest)
        if self.config.kind == "fusion":
            from kuoro.project.fusion_loader import fusion_engine, load_fusion

            return load_fusion(self, version_dir, manifest, engine=fusion_engine())
        # The model is what was trained: its analyzer and learnt-state parameters win over a
        # configuration edited since, which only takes effect after retraining.
        params = dict(manifest["params"])
        for key in _SUGGEST_TIME_PARAMS & set(self.config.params):
            params[key] = self.config.params[key]
        cls = source_class(self.config.backend)
        source = cls(
            self.vocabulary, make_analyzer(*parse_analyzer(manifest["analyzer"])), **params
        )
        try:
            source.load_state(version_dir)
        except ModelError:
            raise
        except Exception as exc:  # a library's own error on a file it cannot read
            raise ModelError(
                f"project '{self.project_id}': cannot load the model in {version_dir}: {exc}; "
                "retrain the project"
            ) from exc
        return source

    def _check_manifest(self, manifest: dict[str, Any]) -> None:
        pid = self.project_id
        if manifest.get("backend") != self.config.backend:
            raise ModelError(
                f"project '{pid}' was trained with backend '{manifest.get('backend')}' but is "
                f"configured with '{self.config.backend}'; retrain it"
            )
        trained_vocab = manifest["vocabulary"]
        size = int(trained_vocab["size"])
        if size > len(self.vocabulary) or (
            self.vocabulary.prefix_fingerprint(size) != trained_vocab["fingerprint"]
        ):
            raise ModelError(
                f"project '{pid}' was trained on vocabulary '{trained_vocab['name']}' "
                f"(fingerprint {trained_vocab['fingerprint']}, {size} concepts), but vocabulary "
                f"'{self.vocabulary.name}' now assigns different concepts to those ids "
                f"(fingerprint {self.vocabulary.prefix_fingerprint(size)}); retrain it"
            )
        specs = BACKENDS[self.config.backend].params
        trained_params = {
            # A parameter added to Kuoro after this model was trained had its default then.
            **{k: spec.default for k, spec in specs.items() if not spec.required},
            **manifest["params"],
        }
        changed = [
            f"{key} {trained_params.get(key)!r} → {value!r}"
            for key, value in self.config.params.items()
            if key not in _SUGGEST_TIME_PARAMS and trained_params.get(key) != value
        ]
        if self.config.kind == "source" and manifest.get("analyzer") != self.analyzer.spec:
            changed.append(f"analyzer {manifest.get('analyzer')} → {self.analyzer.spec}")
        if changed:
            log.warning(
                "project '%s' changed since it was trained (%s); retrain to apply",
                pid,
                "; ".join(changed),
            )

    def suggest(
        self, texts: Sequence[str], document_ids: Sequence[str | None] | None = None
    ) -> sp.csr_matrix:
        """One sparse row of scores per text over the current vocabulary."""
        matrix = sp.csr_matrix(self.source.suggest(texts, document_ids))
        if matrix.shape[1] != len(self.vocabulary):  # trained before concepts were appended
            matrix.resize((matrix.shape[0], len(self.vocabulary)))
        return matrix

    def ranked(self, row: sp.csr_matrix, *, limit: int, threshold: float = 0.0) -> list[Suggestion]:
        """One document's suggestions as (uri, label, notation, score), best first."""
        ids, scores = rank_row(row.indices, row.data, limit, threshold)
        vocab = self.vocabulary
        language = self.config.language if self.config.language in vocab.languages else None
        return [
            Suggestion(
                vocab.uri(int(i)), vocab.label(int(i), language), vocab.notation(int(i)), float(s)
            )
            for i, s in zip(ids, scores, strict=True)
        ]
