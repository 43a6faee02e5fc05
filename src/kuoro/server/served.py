"""The projects a server serves: each model loaded once (or never, with the reason), reloaded
in the background when it was trained again, suggesting with timings, and learning."""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from kuoro.config.projects import ProjectConfig
from kuoro.errors import KuoroError, SourceError
from kuoro.fusion.predictor import SourceTiming, timing_sources
from kuoro.project.datadir import DataDir
from kuoro.project.explaining import Explainer, suggest_explained
from kuoro.project.model_files import CURRENT
from kuoro.project.project import Project
from kuoro.server.problems import ProblemError, problem_for
from kuoro.server.schemas import (
    BackendInfo,
    InputDocument,
    LearnDocument,
    ProjectHealth,
    ProjectInfo,
    SuggestionResult,
    VocabInfo,
    explanation_model,
)
from kuoro.util.ranking import rank_row
from kuoro.vocab.vocabulary import Vocabulary

log = logging.getLogger("kuoro.server.app")


# -- where the time goes: sources vs the fusion model -------------------------------------------


def server_timing(total: float, sources: SourceTiming) -> str:
    """A ``Server-Timing`` header value in milliseconds: the total, and for a fusion model the
    time in its sources and in the fusion itself."""
    parts = {"total": total}
    if sources.measured:
        in_sources = min(sources.seconds, total)
        parts = {"sources": in_sources, "fusion": total - in_sources, "total": total}
    return ", ".join(f"{name};dur={seconds * 1000:.3f}" for name, seconds in parts.items())


# -- the served projects ------------------------------------------------------------------------


class Vocabularies:
    """Each stored vocabulary loaded once and shared by the projects that use it."""

    def __init__(self, datadir: DataDir) -> None:
        self.datadir = datadir
        self._loaded: dict[str, Vocabulary] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Vocabulary | None:
        """The vocabulary, or None when it is not loaded in the data directory (or unreadable)."""
        with self._lock:
            if name not in self._loaded:
                try:
                    self._loaded[name] = self.datadir.load_vocabulary(name)
                except KuoroError:
                    return None
            return self._loaded[name]

    def info(self, name: str) -> VocabInfo:
        vocab = self.get(name)
        if vocab is None:
            return VocabInfo(vocab_id=name, languages=[], size=None, loaded=False)
        return VocabInfo(
            vocab_id=name, languages=sorted(vocab.languages), size=len(vocab), loaded=True
        )


class ServedProject:
    """One project as the server holds it: its model loaded once (or never, with the reason).

    A model trained since it was loaded (its ``CURRENT`` changed) is loaded in the background
    while the old one goes on answering, then takes its place at once.
    """

    def __init__(
        self,
        config: ProjectConfig,
        datadir: DataDir,
        projects: Mapping[str, ProjectConfig],
        vocabularies: Vocabularies,
        served: Mapping[str, ServedProject] | None = None,
    ) -> None:
        self.config = config
        self.datadir = datadir
        self.projects = projects
        self.vocabularies = vocabularies
        self.served = served or {}  # every project of the server, this one included
        self.project: Project | None = None
        self.error: str | None = None
        self._loaded_model: str | None = None  # the CURRENT stamp of the model served
        self._failed_model: str | None = None  # the CURRENT stamp of a model that failed
        self._next_check = 0.0  # when to look at CURRENT again (time.monotonic)
        self._reloading = False
        self.reload_error: str | None = None  # why a newer model than the one served failed
        self._load_lock = threading.Lock()
        self.learn_lock = threading.Lock()

    @property
    def project_id(self) -> str:
        return self.config.project_id

    def _new_project(self) -> Project:
        return Project(
            self.config,
            self.datadir,
            self.projects,
            loaded_sources=self.served_sources(),
            vocabulary=self.vocabularies.get(self.config.vocab),  # one copy for all
        )

    def served_sources(self) -> dict[str, Project]:
        """This fusion project's sources that the server serves too, loaded: the fusion model
        suggests (and learns) through them rather than loading each source model again."""
        loaded = {}
        for ref in self.config.sources:
            sibling = self.served.get(ref.project_id)
            project = None if sibling is None else sibling.load()
            if project is not None:
                loaded[ref.project_id] = project
        return loaded

    def _model_stamp(self) -> str | None:
        """Which model is current on disk: its version and when it became current."""
        try:
            pointer = self.datadir.project_dir(self.project_id) / CURRENT
            return f"{pointer.read_text(encoding='utf-8')}@{pointer.stat().st_mtime_ns}"
        except (OSError, KuoroError):
            return None

    def load(self, *, force: bool = False) -> Project | None:
        """Load the model unless it is loaded (or failed and is unchanged); None on failure.
        ``force``: load the current model again (the one loaded answers until it is done)."""
        with self._load_lock:
            if self.project is not None and not force:
                return self.project
            stamp = self._model_stamp()
            if self.error is not None and not force and stamp == self._failed_model:
                return None
            if stamp is None:
                message = (
                    f"project '{self.project_id}' is not trained yet; train it with: "
                    f"kuoro train {self.project_id} CORPUS"
                )
                log.warning("%s; until then it answers 503", message)
                self.project, self.error, self._failed_model = None, message, stamp
                return None
            started = time.perf_counter()
            try:
                project = self._new_project()
                _ = project.model  # the model itself, loaded and checked
                _ = project.concept_thresholds  # and its thresholds, if it applies its own
                _warm_up(project)
            except KuoroError as exc:
                self._fail(str(exc), stamp)
                return None
            except Exception as exc:  # a damaged file can break a library in any way
                log.exception("project '%s': loading the model failed", self.project_id)
                self._fail(f"cannot load the model: {exc}", stamp)
                return None
            self.project, self.error, self._failed_model = project, None, None
            self._loaded_model, self.reload_error = stamp, None
            log.info(
                "project '%s' loaded in %.2f s", self.project_id, time.perf_counter() - started
            )
            return project

    def _fail(self, message: str, stamp: str | None) -> None:
        message = self.datadir.public_message(message)
        log.error("project '%s' cannot answer: %s", self.project_id, message)
        if self.project is not None and stamp is not None:
            # A newer model that fails to load: the one loaded goes on answering.
            self._failed_model, self.reload_error = stamp, message
            return
        self.project, self.error, self._failed_model = None, message, stamp

    def ready(self) -> Project:
        """The loaded project, or a 503 problem saying why it cannot answer."""
        project = self.project
        if project is not None:
            self._reload_if_retrained()
            return project
        project = self.load()
        if project is None:
            raise ProblemError(503, "Service unavailable", self.error or "project not ready")
        return project

    def _reload_if_retrained(self) -> None:
        """Start loading the model in the background if another became current on disk
        (looked at once a second at most)."""
        now = time.monotonic()
        if now < self._next_check or self._reloading:
            return
        self._next_check = now + 1.0
        stamp = self._model_stamp()
        if stamp is None or stamp in (self._loaded_model, self._failed_model):
            return
        self._reloading = True

        def reload() -> None:
            try:
                self.load(force=True)
            finally:
                self._reloading = False

        threading.Thread(target=reload, name=f"reload-{self.project_id}", daemon=True).start()

    @property
    def model_time(self) -> datetime | None:
        """When the model served (or, before one is loaded, the current one) was trained."""
        stamp = self._loaded_model if self.project is not None else self._model_stamp()
        if stamp is None:
            return None
        return datetime.fromtimestamp(int(stamp.rsplit("@", 1)[1]) / 1e9, timezone.utc)

    def health(self) -> ProjectHealth:
        if self.project is not None:
            return ProjectHealth(status="ready", error=self.reload_error)
        if self.error is not None:
            trained = self._model_stamp() is not None
            return ProjectHealth(status="error" if trained else "not trained", error=self.error)
        return ProjectHealth(status="not loaded", error=None)

    def info(self) -> ProjectInfo:
        vocab = self.vocabularies.info(self.config.vocab)
        language = self.config.language
        vocab_language: str | None = language
        if language not in vocab.languages:
            vocab_language = vocab.languages[0] if vocab.languages else None
        mtime = self.model_time
        return ProjectInfo(
            project_id=self.project_id,
            name=self.config.name,
            language=language,
            backend=BackendInfo(backend_id=self.config.backend),
            vocab=vocab,
            vocab_language=vocab_language,
            is_trained=mtime is not None,
            modification_time=mtime,
            error=self.error,
        )

    def suggest(
        self,
        documents: Sequence[InputDocument],
        *,
        limit: int,
        threshold: float,
        language: str | None,
        explain: bool = False,
    ) -> tuple[list[list[SuggestionResult]], str]:
        """Each document's results, and the ``Server-Timing`` header of the work;
        ``explain``: each result with its explanation (``kuoro.project.explaining``)."""
        project = self.ready()
        vocab = project.vocabulary
        label_language = self._label_language(vocab, language)
        # Blank texts get no suggestions; not every source accepts an empty string.
        wanted = [i for i, doc in enumerate(documents) if doc.text.strip()]
        rows = sp.csr_matrix((0, len(vocab)), dtype=np.float32)
        started = time.perf_counter()
        explainer: Explainer | None = None
        with timing_sources() as in_sources:
            if wanted:
                texts = [documents[i].text for i in wanted]
                document_ids = [documents[i].document_id for i in wanted]
                try:
                    if explain:
                        rows, explainer = suggest_explained(project, texts, document_ids)
                    else:
                        rows = project.suggest(texts, document_ids)
                    rows = project.apply_thresholds(rows)
                except KuoroError as exc:
                    raise problem_for(exc, self.datadir) from exc
        total = time.perf_counter() - started
        results: list[list[SuggestionResult]] = [[] for _ in documents]
        for position, i in enumerate(wanted):
            row = rows[position]
            ids, scores = rank_row(row.indices, row.data, min(limit, row.nnz), threshold)
            records = explainer.explain(position, ids.tolist()) if explainer else [None] * len(ids)
            results[i] = [
                SuggestionResult(
                    uri=vocab.uri(int(c)),
                    label=vocab.label(int(c), label_language),
                    notation=vocab.notation(int(c)),
                    score=float(s),
                    explanation=None if record is None else explanation_model(record),
                )
                for c, s, record in zip(ids, scores, records, strict=True)
            ]
        return results, server_timing(total, in_sources)

    def _label_language(self, vocab: Vocabulary, language: str | None) -> str | None:
        if language:
            if language not in vocab.languages:
                raise ProblemError(
                    400, "Bad Request", f'language "{language}" not supported by vocabulary'
                )
            return language
        return self.config.language if self.config.language in vocab.languages else None

    def learn(self, documents: Sequence[LearnDocument]) -> None:
        """Train the project further on the documents, then answer with the new model."""
        with self.learn_lock, tempfile.TemporaryDirectory(prefix="kuoro-learn-") as scratch:
            corpus = Path(scratch) / "learn.tsv"
            if write_learning_corpus(documents, corpus) == 0:
                raise ProblemError(
                    400, "Bad Request", "no document with text and subjects to learn"
                )
            learner = Project(
                self.config,
                self.datadir,
                self.projects,
                loaded_sources=self.served_sources(),
            )
            try:
                learner.learn([corpus], quick=True)
            except KuoroError as exc:
                raise problem_for(exc, self.datadir) from exc
        if self.load(force=True) is None or self.reload_error is not None:
            detail = self.reload_error or self.error or "reloading failed"
            raise ProblemError(503, "Service unavailable", detail)


def _warm_up(project: Project) -> None:
    """Suggest once, so that what a model loads on first use is not the first client's wait."""
    try:
        project.suggest(["warm up"])
    except SourceError as exc:  # a remote source that is down now may be up later
        log.warning("project '%s': warming up failed: %s", project.project_id, exc)


# -- learning -----------------------------------------------------------------------------------


def write_learning_corpus(documents: Sequence[LearnDocument], path: Path) -> int:
    """Write the documents with text and subjects as an Annif short-text TSV; how many."""
    written = 0
    with path.open("w", encoding="utf-8") as out:
        for doc in documents:
            text = " ".join((doc.text or "").split())  # one line: no tabs or line breaks
            uris = [s.uri.strip().removeprefix("<").removesuffix(">") for s in doc.subjects]
            uris = [u for u in uris if u]
            if not text or not uris:
                continue
            for uri in uris:
                if any(c.isspace() or c in "<>" for c in uri):
                    raise ProblemError(400, "Bad Request", f"subject URI {uri!r} is malformed")
            out.write(f"{text}\t{' '.join(f'<{u}>' for u in uris)}\n")
            written += 1
    return written
