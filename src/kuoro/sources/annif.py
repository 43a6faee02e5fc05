"""Suggestions from a project of an Annif-compatible REST API (Annif itself, or Kuoro's server).

Documents go to ``POST {endpoint}/projects/{project}/suggest-batch`` in batches of at most 32
(the API's limit). Failures that may pass (no connection, timeouts, 5xx, 429) are retried with
exponential backoff; what remains becomes a :class:`SourceError` that says what to check.
There is nothing to train: ``fit`` only checks that the remote project exists.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import httpx
import numpy as np
import scipy.sparse as sp

from kuoro.analyzers import Analyzer
from kuoro.corpus.documents import Document
from kuoro.errors import ModelError, SourceError
from kuoro.sources.base import Source, rows_to_csr
from kuoro.util.version import __version__
from kuoro.vocab.vocabulary import Vocabulary

log = logging.getLogger("kuoro.sources.annif")

_STATE_JSON = "annif-source.json"
_FORMAT = "kuoro-annif-source"
_MAX_BATCH = 32  # the suggest-batch API refuses more documents per request
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_MAX_RETRY_AFTER_S = 60.0


class AnnifSource(Source):
    """Asks a project of an Annif-compatible REST API for suggestions."""

    backend: ClassVar[str] = "annif"
    needs_training: ClassVar[bool] = False
    # Seconds before the first retry; doubled for each further one. Tests make it tiny.
    backoff_s: float = 0.5

    def __init__(
        self,
        vocabulary: Vocabulary,
        analyzer: Analyzer,
        *,
        top_k: int = 100,
        endpoint: str | None = None,
        project: str | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        batch_size: int = 32,
    ) -> None:
        super().__init__(vocabulary, analyzer, top_k=top_k)
        self.endpoint = endpoint
        self.project = project
        self.timeout = timeout
        self.retries = retries
        self.batch_size = batch_size
        self._client: httpx.Client | None = None

    # -- the remote project ----------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if not self.endpoint:
            raise SourceError("annif source: parameter 'endpoint' is required")
        return self.endpoint.rstrip("/")

    @property
    def project_url(self) -> str:
        if not self.project:
            raise SourceError("annif source: parameter 'project' is required")
        return f"{self.base_url}/projects/{self.project}"

    def fit(
        self, corpus: Iterable[Document], *, jobs: int = 1, progress: bool = False
    ) -> AnnifSource:
        """Nothing to learn: check that the remote project exists and note its version."""
        info = self.project_info()
        if info.get("is_trained") is False:
            log.warning(
                "project '%s' on %s is not trained yet; suggestions will fail until it is",
                self.project,
                self.base_url,
            )
        self.modification_time_: str | None = info.get("modification_time")
        return self

    def project_info(self) -> dict[str, Any]:
        """The remote project's description (``GET {endpoint}/projects/{project}``)."""
        response = self._request("GET", self.project_url)
        if response.status_code == 404:
            raise self._unknown_project()
        self._raise_for_status(response)
        info = self._json(response)
        if not isinstance(info, dict):
            raise SourceError(f"{self.project_url} answered with something that is not a project")
        return info

    def _unknown_project(self) -> SourceError:
        """The error for a project that the service does not know, naming those it does."""
        message = f"project '{self.project}' does not exist on {self.base_url}"
        try:
            response = self._request("GET", f"{self.base_url}/projects")
            listed = self._json(response)["projects"] if response.is_success else None
            names = sorted(str(p["project_id"]) for p in listed or ())
        except (SourceError, KeyError, TypeError):
            listed = None
        if listed is None:
            return SourceError(f"{message} (or it is not the API's base URL, e.g. .../v1)")
        return SourceError(f"{message}; its public projects: {', '.join(names) or 'none'}")

    # -- suggesting ------------------------------------------------------------------------

    def suggest(
        self, texts: Sequence[str], document_ids: Sequence[str | None] | None = None
    ) -> sp.csr_matrix:
        if document_ids is not None and len(document_ids) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(document_ids)} document ids")
        rows: list[tuple[list[int], list[float]]] = [([], []) for _ in texts]
        # Empty texts are not sent: they get an empty row anyway.
        todo = [i for i, text in enumerate(texts) if text.strip()]
        size = max(1, min(self.batch_size, _MAX_BATCH))
        unknown: dict[str, int] = {}
        for start in range(0, len(todo), size):
            batch = todo[start : start + size]
            documents = [
                {
                    "text": texts[i],
                    "document_id": (document_ids[i] if document_ids else None) or str(i),
                }
                for i in batch
            ]
            for i, results in zip(batch, self._suggest_batch(documents), strict=True):
                rows[i] = self._map_results(results, unknown)
        if unknown:
            log.warning(
                "%d suggestions of %d URIs from project '%s' on %s are not in vocabulary '%s' "
                "and were dropped (e.g. %s)",
                sum(unknown.values()),
                len(unknown),
                self.project,
                self.base_url,
                self.vocabulary.name,
                next(iter(unknown)),
            )
        return rows_to_csr(rows, len(self.vocabulary), self.top_k)

    def _suggest_batch(self, documents: list[dict[str, str]]) -> list[list[Any]]:
        url = f"{self.project_url}/suggest-batch"
        response = self._request(
            "POST", url, params={"limit": self.top_k}, json={"documents": documents}
        )
        if response.status_code == 404:
            self.project_info()  # raises the clearer error when the project does not exist
        if response.status_code == 503:
            raise SourceError(
                f"project '{self.project}' on {self.base_url} is not ready, probably not "
                f"trained ({_detail(response)})"
            )
        self._raise_for_status(response)
        answer = self._json(response)
        if not isinstance(answer, list) or len(answer) != len(documents):
            raise SourceError(
                f"{url} answered with something that is not a suggest-batch answer for "
                f"{len(documents)} documents"
            )
        results: list[list[Any]] = []
        for item in answer:
            found = item.get("results") if isinstance(item, dict) else None
            if not isinstance(found, list):
                raise SourceError(f"{url} answered a document without a list of 'results'")
            results.append(found)
        return results

    def _map_results(
        self, results: list[Any], unknown: dict[str, int]
    ) -> tuple[list[int], list[float]]:
        ids: list[int] = []
        scores: list[float] = []
        for result in results:
            try:
                uri, score = str(result["uri"]), float(result["score"])
            except (TypeError, KeyError, ValueError):
                continue
            concept = self.vocabulary.id_of(uri)
            if concept is None:
                unknown[uri] = unknown.get(uri, 0) + 1
            elif np.isfinite(score) and score > 0:
                ids.append(concept)
                scores.append(min(score, 1.0))
        return ids, scores

    # -- HTTP ------------------------------------------------------------------------------

    def _http(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(
                timeout=self.timeout,
                headers={"User-Agent": f"kuoro/{__version__}", "Accept": "application/json"},
            )
        return self._client

    def close(self) -> None:
        """Close the HTTP connections; a later request opens new ones."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> AnnifSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send a request, retrying what may pass; the answer may still be an HTTP error."""
        attempt = 0
        while True:
            try:
                response = self._http().request(method, url, **kwargs)
            except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
                raise SourceError(
                    f"annif source: endpoint {self.endpoint!r} is not a usable URL ({exc})"
                ) from exc
            except httpx.TimeoutException as exc:
                if attempt >= self.retries:
                    raise SourceError(
                        f"Annif-compatible service at {self.base_url} did not answer within "
                        f"{self.timeout:g} s ({type(exc).__name__}, {attempt + 1} tries)"
                    ) from exc
                delay = self._delay(attempt, None)
            except httpx.TransportError as exc:
                if attempt >= self.retries:
                    raise SourceError(
                        f"cannot reach Annif-compatible service at {self.base_url}: "
                        f"{exc or type(exc).__name__} ({attempt + 1} tries)"
                    ) from exc
                delay = self._delay(attempt, None)
            else:
                if response.status_code not in _RETRY_STATUS or attempt >= self.retries:
                    return response
                # A 503 in Annif's problem+json is the project saying it is not trained:
                # an answer, not a passing failure, so it is not retried.
                if response.status_code == 503 and _is_problem(response):
                    return response
                delay = self._delay(attempt, response)
            attempt += 1
            log.info("retrying %s %s in %.2f s (try %d)", method, url, delay, attempt + 1)
            time.sleep(delay)

    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        delay = self.backoff_s * 2**attempt
        if response is not None and response.status_code == 429:
            with contextlib.suppress(ValueError):
                delay = max(delay, float(response.headers.get("Retry-After", "")))
        return float(min(delay, _MAX_RETRY_AFTER_S))

    def _raise_for_status(self, response: httpx.Response) -> None:
        if response.is_success:
            return
        raise SourceError(
            f"{response.request.method} {response.request.url} failed: HTTP "
            f"{response.status_code} {response.reason_phrase} ({_detail(response)})"
        )

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            raise SourceError(
                f"{response.request.url} answered with something that is not JSON "
                f"(content type {response.headers.get('content-type', 'unknown')!r})"
            ) from exc

    # -- state -----------------------------------------------------------------------------

    def save_state(self, directory: Path) -> None:
        state = {
            "format": _FORMAT,
            "format_version": 1,
            "endpoint": self.endpoint,
            "project": self.project,
            "modification_time": getattr(self, "modification_time_", None),
        }
        (directory / _STATE_JSON).write_text(json.dumps(state, indent=2), encoding="utf-8")

    def load_state(self, directory: Path) -> None:
        path = directory / _STATE_JSON
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelError(f"annif source: model file {path} is damaged ({exc})") from exc
        if not isinstance(state, dict) or state.get("format") != _FORMAT:
            raise ModelError(f"annif source: model file {path} is damaged (not {_FORMAT})")
        if (state.get("endpoint"), state.get("project")) != (self.endpoint, self.project):
            log.info(
                "annif source: now asking project '%s' on %s (was '%s' on %s)",
                self.project,
                self.endpoint,
                state.get("project"),
                state.get("endpoint"),
            )
        self.modification_time_ = state.get("modification_time")


def _is_problem(response: httpx.Response) -> bool:
    content_type: str = response.headers.get("content-type", "")
    return content_type.startswith("application/problem+json")


def _detail(response: httpx.Response) -> str:
    """The ``detail`` of a problem+json answer, or the start of the body."""
    try:
        body = response.json()
        if isinstance(body, dict) and body.get("detail"):
            return str(body["detail"])
    except ValueError:
        pass
    text = response.text.strip()
    return text[:200] if text else "empty answer"
