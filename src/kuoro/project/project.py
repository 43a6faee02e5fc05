"""A configured project bound to a data directory: its vocabulary, its analyzer, and its
model trained, saved, loaded and asked for suggestions.

What a project does depends on its kind: a source project fits a base indexing model
(:class:`~kuoro.project.source_kind.SourceKind`), a fusion project a fusion model over source
projects (:class:`~kuoro.project.fusion_kind.FusionKind`). ``Project`` holds what both share
and delegates the rest to ``project.kind``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import scipy.sparse as sp

from kuoro.analyzers import Analyzer, make_analyzer
from kuoro.config.backends import BACKENDS, BEHAVIOUR_BEFORE_PARAMETER
from kuoro.config.projects import (
    ProjectConfig,
    find_projects_file,
    load_projects,
    parse_analyzer,
)
from kuoro.errors import ModelError, NotFoundError
from kuoro.project.batch import Engine
from kuoro.project.datadir import DataDir
from kuoro.project.fusion_kind import FusionKind
from kuoro.project.model_files import read_model
from kuoro.project.results import Suggestion, TrainingSummary
from kuoro.project.source_kind import SUGGEST_TIME_PARAMS, SourceKind
from kuoro.project.thresholds import ConceptThresholds, thresholds_for_model
from kuoro.sources.base import Suggester
from kuoro.util.locks import FileLock
from kuoro.util.ranking import rank_row
from kuoro.vocab.vocabulary import Vocabulary

if TYPE_CHECKING:
    from kuoro.fusion.fit import FitInfo

__all__ = ["Project", "Suggestion", "TrainingSummary", "open_project"]

log = logging.getLogger(__name__)


class Project:
    """A project of ``projects.toml`` bound to a data directory.

    A fusion project needs its sources' configurations: ``projects`` (all configured projects)
    to train; to suggest without it, those saved with its model are used. ``loaded_sources``:
    source projects already bound (a server's), used as this fusion project's sources where
    configured alike, so that a process holding both loads each source model once.
    ``vocabulary``: the project's vocabulary when the caller has it loaded already.
    """

    def __init__(
        self,
        config: ProjectConfig,
        datadir: DataDir,
        projects: Mapping[str, ProjectConfig] | None = None,
        *,
        loaded_sources: Mapping[str, Project] | None = None,
        vocabulary: Vocabulary | None = None,
    ) -> None:
        self.config = config
        self.datadir = datadir
        self.projects = projects
        self.loaded_sources = dict(loaded_sources or {})
        self.kind: SourceKind | FusionKind = (
            FusionKind(self) if config.kind == "fusion" else SourceKind(self)
        )
        self.last_fit: FitInfo | None = None  # what the latest fusion training did
        self.model_version: str | None = None  # the version directory of the loaded model
        if vocabulary is not None:
            if vocabulary.name != config.vocab:
                raise ValueError(f"vocabulary '{vocabulary.name}' given for '{config.vocab}'")
            self.__dict__["vocabulary"] = vocabulary  # the cached_property's value

    def __repr__(self) -> str:
        return f"Project({self.project_id!r}, backend={self.config.backend!r})"

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

    def sibling(self, config: ProjectConfig) -> Project:
        """Another project of the same data directory (a fusion project's source)."""
        return Project(config, self.datadir, self.projects)

    # -- training --------------------------------------------------------------------------

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
        """Train on the corpora and save the result as the project's current model.

        A fusion project runs its (trained) sources over the corpora into a suggestion store,
        reused while they and the corpora are unchanged when ``cached``, and trains on it;
        ``engine`` runs the sources (default: ``jobs`` local processes; see
        ``project.cluster.DaskEngine`` for a cluster).
        Only one process at a time trains or updates a project: another is refused.
        """
        with self.lock():
            return self.kind.train(
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
        """Update the trained model with new documents (fusion projects).
        ``quick``: a few bounded epochs, for a client waiting on the answer; ``engine``: as
        for :meth:`train`."""
        if isinstance(self.kind, SourceKind):
            return self.kind.learn(corpus_paths)
        with self.lock():
            return self.kind.learn(
                corpus_paths,
                jobs=jobs,
                progress=progress,
                device=device,
                quick=quick,
                engine=engine,
            )

    def lock(self) -> FileLock:
        """The project's lock, taken: held while its model is trained or updated."""
        return self.datadir.project_lock(self.project_id).acquire_or_fail(
            "wait for it to finish, then try again"
        )

    # -- loading and suggesting ------------------------------------------------------------

    @property
    def is_trained(self) -> bool:
        return self.datadir.current_pointer(self.project_id).is_file()

    @cached_property
    def model(self) -> Suggester:
        """The trained model, loaded once; it is checked against the vocabulary and config."""
        version_dir, manifest = read_model(self.model_dir, self.project_id, self.kind.name)
        self._check_manifest(manifest)
        model = self.kind.load(version_dir, manifest)
        self.model_version = version_dir.name
        return model

    def forget_model(self) -> None:
        """Drop the loaded model: the next suggestion loads the current one."""
        self.__dict__.pop("model", None)
        self.__dict__.pop("concept_thresholds", None)

    @cached_property
    def concept_thresholds(self) -> ConceptThresholds | None:
        """The per-concept thresholds the project applies: those learnt for its model when it
        is configured with ``thresholds = "per-concept"``, else None (also, with a warning,
        when they were learnt for an earlier model); ModelError when none were learnt."""
        if self.config.thresholds != "per-concept":
            return None
        _ = self.model  # the version the thresholds must belong to
        assert self.model_version is not None  # set as the model loads
        path = self.datadir.thresholds_path(self.project_id)
        return thresholds_for_model(self.project_id, path, self.model_version)

    def apply_thresholds(self, rows: sp.csr_matrix) -> sp.csr_matrix:
        """Suggestion rows (of ``suggest``) cut by the per-concept thresholds the project
        applies; unchanged for a project with a global threshold."""
        thresholds = self.concept_thresholds
        return sp.csr_matrix(rows) if thresholds is None else thresholds.apply(rows)

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
            # A parameter added to Kuoro after this model was trained: its default, or what
            # models did before it existed.
            **{k: spec.default for k, spec in specs.items() if not spec.required},
            **BEHAVIOUR_BEFORE_PARAMETER.get(self.config.backend, {}),
            **manifest["params"],
        }
        changed = [
            f"{key} {trained_params.get(key)!r} → {value!r}"
            for key, value in self.config.params.items()
            if key not in SUGGEST_TIME_PARAMS and trained_params.get(key) != value
        ]
        changed += self.kind.changes_since_training(manifest)
        if changed:
            log.warning(
                "project '%s' changed since it was trained (%s); retrain to apply",
                pid,
                "; ".join(changed),
            )

    def suggest(
        self, texts: Sequence[str], document_ids: Sequence[str | None] | None = None
    ) -> sp.csr_matrix:
        """One sparse row of scores per text over the current vocabulary; deprecated concepts
        are never suggested (as in Annif)."""
        return self.served_rows(self.model.suggest(texts, document_ids))

    def served_rows(self, rows: sp.csr_matrix) -> sp.csr_matrix:
        """The model's rows as the project gives them: over the current vocabulary, without
        deprecated concepts."""
        matrix = sp.csr_matrix(rows)
        if matrix.shape[1] != len(self.vocabulary):  # trained before concepts were appended
            matrix.resize((matrix.shape[0], len(self.vocabulary)))
        deprecated = self.vocabulary.deprecated
        if matrix.nnz and deprecated[matrix.indices].any():
            matrix.data[deprecated[matrix.indices]] = 0
            matrix.eliminate_zeros()
        return matrix

    def ranked(self, row: sp.csr_matrix, *, limit: int, threshold: float = 0.0) -> list[Suggestion]:
        """One document's suggestions as (uri, label, notation, score), best first: its
        ``limit`` best with score ≥ ``threshold`` and, when the project applies per-concept
        thresholds, ≥ their concept's threshold."""
        row = self.apply_thresholds(row)
        ids, scores = rank_row(row.indices, row.data, limit, threshold)
        vocab = self.vocabulary
        language = self.config.language if self.config.language in vocab.languages else None
        return [
            Suggestion(
                vocab.uri(int(i)), vocab.label(int(i), language), vocab.notation(int(i)), float(s)
            )
            for i, s in zip(ids, scores, strict=True)
        ]


def open_project(
    project_id: str,
    *,
    projects: str | Path | None = None,
    datadir: str | Path | DataDir | None = None,
) -> Project:
    """A configured project, as the command line opens it: ``projects`` is the projects.toml
    file or projects.d directory (default $KUORO_PROJECTS, then ./projects.toml, then
    ./projects.d), ``datadir`` the data directory (default $KUORO_DATADIR, then ./data)."""
    configs = load_projects(find_projects_file(projects, Path.cwd()))
    if project_id not in configs:
        known = ", ".join(configs) or "none"
        raise NotFoundError(f"no project '{project_id}' (configured: {known})")
    root = datadir if isinstance(datadir, DataDir) else DataDir.resolve(datadir)
    return Project(configs[project_id], root, configs)
