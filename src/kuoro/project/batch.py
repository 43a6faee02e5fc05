"""Suggesting for a whole corpus in batches: the engines that run projects over documents.

An :class:`Engine` takes projects and documents and yields each batch of documents with every
project's rows for it, in corpus order, whatever runs them. :class:`LocalEngine` runs them in
this process or a pool of worker processes on this machine; ``project.cluster.DaskEngine`` on
a Dask cluster. Every command that runs sources over documents (building a fusion project's
store, ``index``, ``eval``, batch ``suggest``) goes through one.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from itertools import islice
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import scipy.sparse as sp

from kuoro.config.projects import ProjectConfig
from kuoro.corpus.documents import Document
from kuoro.project.datadir import DataDir

if TYPE_CHECKING:
    from kuoro.project.project import Project

BATCH_SIZE = 64

# What an engine yields: a batch of documents and, for each project, their rows.
ProjectRows = tuple[list[Document], list[sp.csr_matrix]]

# The projects loaded once per worker process by _start_worker.
_worker_projects: list[Project] = []


def batches(documents: Iterable[Document], size: int = BATCH_SIZE) -> Iterator[list[Document]]:
    it = iter(documents)
    while batch := list(islice(it, size)):
        yield batch


def document_ids(batch: Sequence[Document], first_ordinal: int) -> list[str | None]:
    """The documents' ids; one without an id (short-text TSV) is known by its 1-based
    position in the corpus (``first_ordinal`` is the first document's)."""
    return [d.document_id or str(first_ordinal + i) for i, d in enumerate(batch)]


def worker_configs(projects: Sequence[Project]) -> list[ProjectConfig]:
    """The projects' configurations as plain data that pickles, for worker processes."""
    return [dataclasses.replace(p.config, params=dict(p.config.params)) for p in projects]


class Engine(ABC):
    """Runs projects over documents. Whatever runs them, :meth:`suggest_all` yields the same
    batches with the same rows, in corpus order; an engine is a context manager that releases
    what it started (processes, a cluster) when it is closed."""

    @abstractmethod
    def suggest_all(
        self,
        projects: Sequence[Project],
        documents: Iterable[Document],
        *,
        batch_size: int = BATCH_SIZE,
        first_ordinal: int = 1,
    ) -> Iterator[ProjectRows]:
        """Yield (batch of documents, each project's rows for it) in corpus order; at most
        ``batch_size`` documents a batch. ``first_ordinal`` is the corpus position of the
        first document, when the documents are not the corpus from its start."""

    def close(self) -> None:  # noqa: B027 (an engine that starts nothing releases nothing)
        """Release what the engine started."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class LocalEngine(Engine):
    """This machine: this process when ``jobs`` is 1, else a pool of ``jobs`` worker processes,
    each loading the projects' models once; at most two batches per worker are in flight, so
    memory stays bounded however long the corpus is."""

    def __init__(self, jobs: int = 1) -> None:
        if jobs < 1:
            raise ValueError(f"jobs must be at least 1, not {jobs}")
        self.jobs = jobs

    def __repr__(self) -> str:
        return f"LocalEngine(jobs={self.jobs})"

    def suggest_all(
        self,
        projects: Sequence[Project],
        documents: Iterable[Document],
        *,
        batch_size: int = BATCH_SIZE,
        first_ordinal: int = 1,
    ) -> Iterator[ProjectRows]:
        if self.jobs <= 1:
            ordinal = first_ordinal
            for batch in batches(documents, batch_size):
                texts, ids = [d.text for d in batch], document_ids(batch, ordinal)
                yield batch, [project.suggest(texts, ids) for project in projects]
                ordinal += len(batch)
            return
        # "spawn" keeps library thread pools out of forks.
        configs = worker_configs(projects)
        roots = [p.datadir.root for p in projects]
        context = multiprocessing.get_context("spawn")
        # The projects' class goes with them (pickled by name): each worker binds its own copies.
        kind = type(projects[0])
        start = (kind, configs, roots)
        with ProcessPoolExecutor(
            self.jobs, mp_context=context, initializer=_start_worker, initargs=start
        ) as pool:
            pending: deque[tuple[list[Document], Future[list[sp.csr_matrix]]]] = deque()
            ordinal = first_ordinal
            for batch in batches(documents, batch_size):
                texts = [d.text for d in batch]
                pending.append(
                    (batch, pool.submit(_suggest_in_worker, texts, document_ids(batch, ordinal)))
                )
                ordinal += len(batch)
                if len(pending) >= 2 * self.jobs:
                    done, future = pending.popleft()
                    yield done, future.result()
            while pending:
                done, future = pending.popleft()
                yield done, future.result()


def suggest_corpus(
    project: Project,
    documents: Iterable[Document],
    *,
    jobs: int = 1,
    batch_size: int = BATCH_SIZE,
    engine: Engine | None = None,
) -> Iterator[tuple[list[Document], sp.csr_matrix]]:
    """Yield (batch of documents, their suggestion rows) in corpus order.

    ``engine`` runs the project (default: a :class:`LocalEngine` of ``jobs`` processes).
    """
    for batch, (rows,) in suggest_corpus_all(
        [project], documents, jobs=jobs, batch_size=batch_size, engine=engine
    ):
        yield batch, rows


def suggest_corpus_all(
    projects: Sequence[Project],
    documents: Iterable[Document],
    *,
    jobs: int = 1,
    batch_size: int = BATCH_SIZE,
    first_ordinal: int = 1,
    engine: Engine | None = None,
) -> Iterator[ProjectRows]:
    """Like :func:`suggest_corpus` for several projects: each batch's rows from every project.

    A worker loads every project once and runs them all on each batch it is given.
    ``first_ordinal`` is the corpus position of the first document, when the documents are
    not the corpus from its start.
    """
    runner = engine if engine is not None else LocalEngine(jobs)
    return runner.suggest_all(
        projects, documents, batch_size=batch_size, first_ordinal=first_ordinal
    )


def _start_worker(
    project_class: type[Project], configs: list[ProjectConfig], datadir_roots: list[Path]
) -> None:
    global _worker_projects
    _worker_projects = [
        project_class(config, DataDir(root))
        for config, root in zip(configs, datadir_roots, strict=True)
    ]
    for project in _worker_projects:
        _ = project.model  # load the model now, not inside the first batch


def _suggest_in_worker(texts: list[str], document_ids: list[str | None]) -> list[sp.csr_matrix]:
    return [project.suggest(texts, document_ids) for project in _worker_projects]
