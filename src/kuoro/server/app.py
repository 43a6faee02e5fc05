"""Kuoro's REST API: Annif's paths, requests and answers (base ``/v1``), served by FastAPI.

Errors are ``application/problem+json`` objects ``{type, title, status, detail}``. A project
whose model is missing or damaged answers 503 and reports why in ``/health`` and its project
info; the other projects keep working. Suggestion responses carry a ``Server-Timing`` header
with the milliseconds spent in the sources, in the fusion model and in total.
"""

# No ``from __future__ import annotations``: FastAPI reads the annotations of the endpoints
# and of the request model that create_app builds for its batch limit at run time.

import hmac
import logging
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import scipy.sparse as sp
from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kuoro.config.projects import ProjectConfig
from kuoro.errors import CorpusError, KuoroError, ModelError, NotFoundError, SourceError
from kuoro.fusion.predictor import SourceTiming, timing_sources
from kuoro.project.datadir import DataDir
from kuoro.project.model_files import CURRENT
from kuoro.project.project import Project
from kuoro.store.suggestion_store import StoreError
from kuoro.util.locks import BusyError
from kuoro.util.ranking import rank_row
from kuoro.util.version import __version__
from kuoro.vocab.vocabulary import Vocabulary

log = logging.getLogger("kuoro.server.app")

API_TITLE = "Kuoro REST API"
PROBLEM_MEDIA_TYPE = "application/problem+json"


# -- request and response bodies (the schemas of Annif's OpenAPI spec) ------------------------


class ApiInfo(BaseModel):
    title: str
    version: str


class BackendInfo(BaseModel):
    backend_id: str


class VocabInfo(BaseModel):
    vocab_id: str
    languages: list[str]
    size: int | None
    loaded: bool


class VocabList(BaseModel):
    vocabs: list[VocabInfo]


class ProjectInfo(BaseModel):
    project_id: str
    name: str
    language: str
    backend: BackendInfo
    vocab: VocabInfo | None
    vocab_language: str | None
    is_trained: bool | None
    modification_time: datetime | None
    # Beyond Annif's fields: why the project cannot answer now, or None when it can.
    error: str | None = None


class ProjectList(BaseModel):
    projects: list[ProjectInfo]


class SuggestionResult(BaseModel):
    uri: str
    label: str | None
    notation: str | None
    score: float


class SuggestionResultList(BaseModel):
    results: list[SuggestionResult]


class BatchSuggestionResult(SuggestionResultList):
    document_id: str | None


class SuggestForm(BaseModel):
    """The form fields of ``suggest``; others (Annif's ``metadata_*``, ``project``) are ignored."""

    model_config = ConfigDict(extra="ignore")

    text: str = Field(description="input text")
    limit: int = Field(10, ge=0, description="maximum number of results")
    threshold: float = Field(0.0, ge=0, le=1, description="minimum score")
    language: str | None = Field(None, description="language of the labels")


async def _suggest_form(request: Request) -> SuggestForm:
    # Read by hand, not with FastAPI's Form(): that takes an empty text for a missing one.
    form = await request.form()
    fields = {k: v for k, v in form.items() if isinstance(v, str) and (v or k == "text")}
    try:
        return SuggestForm.model_validate(fields)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
        ) from exc


_SUGGEST_FORM_BODY = {
    "required": True,
    "content": {
        "application/x-www-form-urlencoded": {
            "schema": {
                **SuggestForm.model_json_schema(),
                "additionalProperties": {"type": "string"},
            }
        }
    },
}


class InputDocument(BaseModel):
    text: str
    document_id: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)


class LearnSubject(BaseModel):
    uri: str
    label: str | None = None


class LearnDocument(BaseModel):
    """A document with its known good subjects; one without text or subjects is skipped."""

    text: str | None = None
    subjects: list[LearnSubject] = Field(default_factory=list)
    metadata: dict[str, str] = Field(default_factory=dict)


class Problem(BaseModel):
    """An error, as RFC 9457 (and Annif) describe it."""

    model_config = ConfigDict(json_schema_extra={"example": {
        "type": "about:blank", "title": "Project not found", "status": 404,
        "detail": "Project 'x' not found",
    }})  # fmt: skip

    type: str = "about:blank"
    title: str
    status: int
    detail: str


class ProjectHealth(BaseModel):
    """``error`` says why a project cannot answer (how to train it, when it is not trained),
    or, beside ``ready``, why a newer model than the one it answers with failed to load."""

    status: Literal["ready", "not loaded", "not trained", "error"]
    error: str | None


class Health(BaseModel):
    """``ok`` when every trained project that was loaded can answer, ``degraded`` when some
    cannot; projects not trained yet are listed as such and do not make it degraded."""

    status: Literal["ok", "degraded"]
    projects: dict[str, ProjectHealth]


class ProblemError(Exception):
    """An error answered as a problem response (with ``headers``, e.g. WWW-Authenticate)."""

    def __init__(
        self, status: int, title: str, detail: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.headers = dict(headers or {})


def problem_response(
    status: int, title: str, detail: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body = Problem(title=title, status=status, detail=detail).model_dump()
    return JSONResponse(
        body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=dict(headers or {})
    )


def _problem_for(exc: KuoroError, datadir: DataDir | None = None) -> ProblemError:
    """The status of an error raised by Kuoro's own code: the client's fault or the server's.
    ``datadir``: the server's, whose absolute path the detail leaves out."""
    detail = str(exc) if datadir is None else datadir.public_message(str(exc))
    if isinstance(exc, NotFoundError):
        return ProblemError(404, "Not found", detail)
    if isinstance(exc, BusyError):
        return ProblemError(409, "Conflict", detail)
    if isinstance(exc, CorpusError):
        return ProblemError(400, "Bad Request", detail)
    if isinstance(exc, ModelError | SourceError | StoreError):
        return ProblemError(503, "Service unavailable", detail)
    return ProblemError(400, "Bad Request", detail)


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


class _Vocabularies:
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
        vocabularies: _Vocabularies,
        served: Mapping[str, "ServedProject"] | None = None,
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
    ) -> tuple[list[list[SuggestionResult]], str]:
        """Each document's results, and the ``Server-Timing`` header of the work."""
        project = self.ready()
        vocab = project.vocabulary
        label_language = self._label_language(vocab, language)
        # Blank texts get no suggestions; not every source accepts an empty string.
        wanted = [i for i, doc in enumerate(documents) if doc.text.strip()]
        rows = sp.csr_matrix((0, len(vocab)), dtype=np.float32)
        started = time.perf_counter()
        with timing_sources() as in_sources:
            if wanted:
                try:
                    rows = project.suggest(
                        [documents[i].text for i in wanted],
                        [documents[i].document_id for i in wanted],
                    )
                except KuoroError as exc:
                    raise _problem_for(exc, self.datadir) from exc
        total = time.perf_counter() - started
        results: list[list[SuggestionResult]] = [[] for _ in documents]
        for position, i in enumerate(wanted):
            row = rows[position]
            ids, scores = rank_row(row.indices, row.data, min(limit, row.nnz), threshold)
            results[i] = [
                SuggestionResult(
                    uri=vocab.uri(int(c)),
                    label=vocab.label(int(c), label_language),
                    notation=vocab.notation(int(c)),
                    score=float(s),
                )
                for c, s in zip(ids, scores, strict=True)
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


# -- the request size limit ---------------------------------------------------------------------


class _BodySizeLimit:
    """Answer 413 to a request body over ``max_bytes``, declared or streamed (ASGI middleware).

    The body is read before the app sees it; at the default limit of 1 MB that is cheap.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = f"the request body is larger than the server's limit of {self.max_bytes} bytes"
        await problem_response(413, "Payload Too Large", detail)(scope, receive, send)


# -- the application ----------------------------------------------------------------------------


def _problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {
        400: "Bad Request: invalid input",
        401: "Unauthorized: no learn token was presented",
        403: "Operation is not allowed",
        409: "Conflict: the project is being trained by another process",
        404: "Project not found",
        413: "Payload Too Large",
        503: "Service Unavailable: the project's model cannot answer",
    }
    return {s: {"model": Problem, "description": descriptions[s]} for s in statuses}


def create_app(
    datadir: DataDir,
    projects: Mapping[str, ProjectConfig],
    *,
    lazy: bool = False,
    learn_token: str | None = None,
    max_request_bytes: int = 1_000_000,
    max_batch: int = 32,
) -> FastAPI:
    """The REST API over the configured projects.

    Models load now, unless ``lazy`` (then on first use). A project that cannot load answers
    503 and says why; the rest keep working. ``learn`` needs ``learn_token`` presented as
    ``Authorization: Bearer <token>`` and ``allow_learn`` in the project's configuration.
    Private projects are not served at all; hidden ones are served but not listed.
    """
    vocabularies = _Vocabularies(datadir)
    served: dict[str, ServedProject] = {}
    for pid, config in projects.items():
        if config.access != "private":
            served[pid] = ServedProject(config, datadir, projects, vocabularies, served)
    public = [p for p in served.values() if p.config.access == "public"]
    token = learn_token or None
    bearer = HTTPBearer(auto_error=False, description="The server's learn token.")

    app = FastAPI(
        title=API_TITLE,
        version=__version__,
        description="Annif-compatible subject indexing API of Kuoro.",
        docs_url="/v1/ui",
        redoc_url=None,
    )
    app.add_middleware(_BodySizeLimit, max_bytes=max_request_bytes)

    def lookup(project_id: str) -> ServedProject:
        found = served.get(project_id)
        if found is None:
            raise ProblemError(404, "Project not found", f"Project '{project_id}' not found")
        return found

    class BatchRequest(BaseModel):
        documents: Annotated[list[InputDocument], Field(max_length=max_batch)]

    @app.get("/v1/", response_model=ApiInfo, tags=["API information"])
    def show_info() -> ApiInfo:
        """Basic information about the API service."""
        return ApiInfo(title=API_TITLE, version=__version__)

    @app.get("/v1/vocabs", response_model=VocabList, tags=["Vocabulary information"])
    def list_vocabs() -> VocabList:
        """The vocabularies of the public projects."""
        names = dict.fromkeys(p.config.vocab for p in public)
        return VocabList(vocabs=[vocabularies.info(name) for name in names])

    @app.get("/v1/projects", response_model=ProjectList, tags=["Project administration"])
    def list_projects() -> ProjectList:
        """The public projects."""
        return ProjectList(projects=[p.info() for p in public])

    @app.get(
        "/v1/projects/{project_id}",
        response_model=ProjectInfo,
        responses=_problems(404),
        tags=["Project administration"],
    )
    def show_project(project_id: str) -> ProjectInfo:
        """One project, public or hidden."""
        return lookup(project_id).info()

    @app.post(
        "/v1/projects/{project_id}/suggest",
        response_model=SuggestionResultList,
        responses=_problems(400, 404, 413, 503),
        tags=["Automatic subject indexing"],
        openapi_extra={"requestBody": _SUGGEST_FORM_BODY},
    )
    def suggest(
        project_id: str,
        form: Annotated[SuggestForm, Depends(_suggest_form)],
        response: Response,
    ) -> SuggestionResultList:
        """Suggest subjects for one text (form-encoded; ``metadata_*`` fields are accepted)."""
        project = lookup(project_id)
        results, timing = project.suggest(
            [InputDocument(text=form.text)],
            limit=form.limit,
            threshold=form.threshold,
            language=form.language,
        )
        response.headers["Server-Timing"] = timing
        return SuggestionResultList(results=results[0])

    @app.post(
        "/v1/projects/{project_id}/suggest-batch",
        response_model=list[BatchSuggestionResult],
        responses=_problems(400, 404, 413, 503),
        tags=["Automatic subject indexing"],
    )
    def suggest_batch(
        project_id: str,
        body: BatchRequest,
        response: Response,
        limit: Annotated[int, Query(ge=0, description="maximum number of results")] = 10,
        threshold: Annotated[float, Query(ge=0, le=1, description="minimum score")] = 0.0,
        language: Annotated[str | None, Query(description="language of the labels")] = None,
    ) -> list[BatchSuggestionResult]:
        """Suggest subjects for up to 32 documents (the server's limit), answered in order."""
        project = lookup(project_id)
        results, timing = project.suggest(
            body.documents, limit=limit, threshold=threshold, language=language
        )
        response.headers["Server-Timing"] = timing
        return [
            BatchSuggestionResult(results=r, document_id=doc.document_id)
            for r, doc in zip(results, body.documents, strict=True)
        ]

    @app.post(
        "/v1/projects/{project_id}/learn",
        status_code=204,
        response_class=Response,
        responses=_problems(400, 401, 403, 404, 409, 413, 503),
        tags=["Learning from feedback"],
    )
    def learn(
        project_id: str,
        documents: list[LearnDocument],
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Response:
        """Learn from manually indexed documents (needs the server's learn token)."""
        project = lookup(project_id)
        if token is None:
            raise ProblemError(403, "Learning not allowed", "learning is disabled on this server")
        if credentials is None:  # no credentials at all: say how to authenticate (RFC 9110)
            raise ProblemError(
                401,
                "Unauthorized",
                "learning needs the server's token as 'Authorization: Bearer <token>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not hmac.compare_digest(credentials.credentials.encode(), token.encode()):
            raise ProblemError(
                403,
                "Learning not allowed",
                "the token presented is not the server's learn token",
            )
        if not project.config.allow_learn:
            raise ProblemError(
                403,
                "Learning not allowed",
                f"Project '{project_id}' is not configured to allow learning via API",
            )
        _learn(project, documents)
        return Response(status_code=204)

    @app.get("/health", response_model=Health, tags=["API information"])
    def health() -> Health:
        """Whether each served project can answer, and why not."""
        states = {pid: p.health() for pid, p in served.items()}
        degraded = any(s.status == "error" for s in states.values())
        return Health(status="degraded" if degraded else "ok", projects=states)

    _add_error_handlers(app, datadir)
    app.openapi = _problem_openapi(app)  # type: ignore[method-assign]
    if not lazy:
        started = time.perf_counter()
        for project in served.values():
            project.load()
        ready = sum(p.project is not None for p in served.values())
        log.info(
            "%d of %d projects ready in %.1f s", ready, len(served), time.perf_counter() - started
        )
    return app


def _learn(project: ServedProject, documents: Sequence[LearnDocument]) -> None:
    """Train the project further on the documents, then answer with the new model."""
    with project.learn_lock, tempfile.TemporaryDirectory(prefix="kuoro-learn-") as scratch:
        corpus = Path(scratch) / "learn.tsv"
        if write_learning_corpus(documents, corpus) == 0:
            raise ProblemError(400, "Bad Request", "no document with text and subjects to learn")
        learner = Project(
            project.config,
            project.datadir,
            project.projects,
            loaded_sources=project.served_sources(),
        )
        try:
            learner.learn([corpus], quick=True)
        except KuoroError as exc:
            raise _problem_for(exc, project.datadir) from exc
    if project.load(force=True) is None or project.reload_error is not None:
        detail = project.reload_error or project.error or "reloading failed"
        raise ProblemError(503, "Service unavailable", detail)


def _add_error_handlers(app: FastAPI, datadir: DataDir) -> None:
    async def on_problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ProblemError)
        return problem_response(exc.status, exc.title, exc.detail, exc.headers)

    async def on_invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        details = []
        for error in exc.errors()[:5]:
            where = ".".join(str(part) for part in error.get("loc", ()))
            details.append(f"{where}: {error.get('msg', 'invalid')}")
        return problem_response(400, "Bad Request", "; ".join(details) or "invalid request")

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        title = {404: "Not Found", 405: "Method Not Allowed"}.get(exc.status_code, "Error")
        answer = problem_response(exc.status_code, title, str(exc.detail))
        answer.headers.update(exc.headers or {})  # e.g. Allow on 405
        return answer

    async def on_kuoro(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, KuoroError)
        problem = _problem_for(exc, datadir)
        return problem_response(problem.status, problem.title, problem.detail)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        # The server logs the traceback too: Starlette re-raises the error after this answer.
        log.error("internal error answering %s %s: %r", request.method, request.url.path, exc)
        return problem_response(500, "Internal Server Error", "internal error; see the server log")

    handlers: dict[type[Exception], Callable[[Request, Exception], Any]] = {
        ProblemError: on_problem,
        RequestValidationError: on_invalid,
        StarletteHTTPException: on_http,
        KuoroError: on_kuoro,
        Exception: on_unexpected,
    }
    for kind, handler in handlers.items():
        app.add_exception_handler(kind, handler)


def _problem_openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """FastAPI's OpenAPI spec with errors as problem+json and invalid input as 400, not 422."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            for path_item in spec.get("paths", {}).values():
                for operation in path_item.values():
                    responses = operation.get("responses", {})
                    responses.pop("422", None)
                    for status, response in responses.items():
                        content = response.get("content", {})
                        if int(status) >= 400 and "application/json" in content:
                            content[PROBLEM_MEDIA_TYPE] = content.pop("application/json")
            schemas = spec.get("components", {}).get("schemas", {})
            for unused in ("HTTPValidationError", "ValidationError"):
                schemas.pop(unused, None)
            app.openapi_schema = spec
        return app.openapi_schema

    return openapi
