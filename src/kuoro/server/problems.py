"""Errors as ``application/problem+json`` objects ``{type, title, status, detail}`` (RFC 9457,
as Annif answers them): the exception that routes raise, the handlers that turn every error
into such an answer, and the OpenAPI spec that says so."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from kuoro.errors import CorpusError, KuoroError, ModelError, NotFoundError, SourceError
from kuoro.project.datadir import DataDir
from kuoro.server.schemas import Problem
from kuoro.store.suggestion_store import StoreError
from kuoro.util.locks import BusyError

log = logging.getLogger("kuoro.server.app")

PROBLEM_MEDIA_TYPE = "application/problem+json"


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


def problem_for(exc: KuoroError, datadir: DataDir | None = None) -> ProblemError:
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


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of an operation that answers these error statuses."""
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


def add_error_handlers(app: FastAPI, datadir: DataDir) -> None:
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
        problem = problem_for(exc, datadir)
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


def problem_openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
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
