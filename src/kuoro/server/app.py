"""The REST API's application: Annif's paths (base ``/v1``) over the served projects.

Errors are ``application/problem+json`` objects ``{type, title, status, detail}``. A project
whose model is missing or damaged answers 503 and reports why in ``/health`` and its project
info; the other projects keep working. Suggestion responses carry a ``Server-Timing`` header
with the milliseconds spent in the sources, in the fusion model and in total.
"""

# No ``from __future__ import annotations``: FastAPI reads the annotations of the endpoints
# and of the request model that create_app builds for its batch limit at run time.

import hmac
import logging
import time
from collections.abc import Mapping
from typing import Annotated

import swagger_ui_bundle
from fastapi import Depends, FastAPI, Query, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from kuoro.config.projects import ProjectConfig
from kuoro.project.datadir import DataDir
from kuoro.server.limits import BodySizeLimit
from kuoro.server.problems import (
    ProblemError,
    add_error_handlers,
    problem_openapi,
    problem_responses,
)
from kuoro.server.schemas import (
    SUGGEST_FORM_BODY,
    ApiInfo,
    BatchSuggestionResult,
    Health,
    InputDocument,
    LearnDocument,
    ProjectInfo,
    ProjectList,
    SuggestForm,
    SuggestionResultList,
    VocabList,
    suggest_form,
)
from kuoro.server.served import ServedProject, Vocabularies
from kuoro.util.version import __version__

log = logging.getLogger("kuoro.server.app")

API_TITLE = "Kuoro REST API"


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
    vocabularies = Vocabularies(datadir)
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
        docs_url=None,  # served below from local files, not from a CDN
        redoc_url=None,
    )
    app.add_middleware(BodySizeLimit, max_bytes=max_request_bytes)
    add_swagger_ui(app)

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
        responses=problem_responses(404),
        tags=["Project administration"],
    )
    def show_project(project_id: str) -> ProjectInfo:
        """One project, public or hidden."""
        return lookup(project_id).info()

    @app.post(
        "/v1/projects/{project_id}/suggest",
        response_model=SuggestionResultList,
        responses=problem_responses(400, 404, 413, 503),
        tags=["Automatic subject indexing"],
        openapi_extra={"requestBody": SUGGEST_FORM_BODY},
    )
    def suggest(
        project_id: str,
        form: Annotated[SuggestForm, Depends(suggest_form)],
        response: Response,
    ) -> SuggestionResultList:
        """Suggest subjects for one text (form-encoded; ``metadata_*`` fields are accepted)."""
        project = lookup(project_id)
        results, timing = project.suggest(
            [InputDocument(text=form.text)],
            limit=form.limit,
            threshold=form.threshold,
            language=form.language,
            explain=form.explain,
        )
        response.headers["Server-Timing"] = timing
        return SuggestionResultList(results=results[0])

    @app.post(
        "/v1/projects/{project_id}/suggest-batch",
        response_model=list[BatchSuggestionResult],
        responses=problem_responses(400, 404, 413, 503),
        tags=["Automatic subject indexing"],
    )
    def suggest_batch(
        project_id: str,
        body: BatchRequest,
        response: Response,
        limit: Annotated[int, Query(ge=0, description="maximum number of results")] = 10,
        threshold: Annotated[float, Query(ge=0, le=1, description="minimum score")] = 0.0,
        language: Annotated[str | None, Query(description="language of the labels")] = None,
        explain: Annotated[bool, Query(description="add each result's explanation")] = False,
    ) -> list[BatchSuggestionResult]:
        """Suggest subjects for up to 32 documents (the server's limit), answered in order."""
        project = lookup(project_id)
        results, timing = project.suggest(
            body.documents, limit=limit, threshold=threshold, language=language, explain=explain
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
        responses=problem_responses(400, 401, 403, 404, 409, 413, 503),
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
        project.learn(documents)
        return Response(status_code=204)

    @app.get("/health", response_model=Health, tags=["API information"])
    def health() -> Health:
        """Whether each served project can answer, and why not."""
        states = {pid: p.health() for pid, p in served.items()}
        degraded = any(s.status == "error" for s in states.values())
        return Health(status="degraded" if degraded else "ok", projects=states)

    add_error_handlers(app, datadir)
    app.openapi = problem_openapi(app)  # type: ignore[method-assign]
    if not lazy:
        started = time.perf_counter()
        for project in served.values():
            project.load()
        ready = sum(p.project is not None for p in served.values())
        log.info(
            "%d of %d projects ready in %.1f s", ready, len(served), time.perf_counter() - started
        )
    return app


def add_swagger_ui(app: FastAPI) -> None:
    """The interactive API documentation at ``/v1/ui`` (where Annif has it), with Swagger UI's
    files served by this server from the ``swagger-ui-bundle`` package: a browser fetches
    nothing from elsewhere, so the page works without internet access and leaks no visits."""
    static = "/v1/ui/static"
    app.mount(static, StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="swagger-ui")

    @app.get("/v1/ui", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{API_TITLE}: API documentation",
            swagger_js_url=f"{static}/swagger-ui-bundle.js",
            swagger_css_url=f"{static}/swagger-ui.css",
            swagger_favicon_url=f"{static}/favicon-32x32.png",
        )
