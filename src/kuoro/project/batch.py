"""Suggesting for a whole corpus in batches, in this process or a pool of worker processes."""

from __future__ import annotations

import dataclasses
import multiprocessing
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

import scipy.sparse as sp

from kuoro.config.projects import ProjectConfig
from kuoro.corpus.documents import Document
from kuoro.project.datadir import DataDir

if TYPE_CHECKING:
    from kuoro.project.project import Project

BATCH_SIZE = 64

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


def suggest_corpus(
    project: Project,
    documents: Iterable[Document],
    *,
    jobs: int = 1,
    batch_size: int = BATCH_SIZE,
) -> Iterator[tuple[list[Document], sp.csr_matrix]]:
    """Yield (batch of documents, their suggestion rows) in corpus order.

    With ``jobs > 1`` each worker process loads the project's model once and the batches are
    spread over the workers; at most two batches per worker are in flight, so memory stays
    bounded however long the corpus is.
    """
    for batch, (rows,) in suggest_corpus_all(
        [project], documents, jobs=jobs, batch_size=batch_size
    ):
        yield batch, rows


def suggest_corpus_all(
    projects: Sequence[Project],
    documents: Iterable[Document],
    *,
    jobs: int = 1,
    batch_size: int = BATCH_SIZE,
    first_ordinal: int = 1,
) -> Iterator[tuple[list[Document], list[sp.csr_matrix]]]:
    """Like :func:`suggest_corpus` for several projects: each batch's rows from every project.

    A worker loads every project once and runs them all on each batch it is given.
    ``first_ordinal`` is the corpus position of the first document, when the documents are
    not the corpus from its start.
    """
    if jobs <= 1:
        ordinal = first_ordinal
        for batch in batches(documents, batch_size):
            texts, ids = [d.text for d in batch], document_ids(batch, ordinal)
            yield batch, [project.suggest(texts, ids) for project in projects]
            ordinal += len(batch)
        return
    # Plain-dict copies of the configs pickle; "spawn" keeps library thread pools out of forks.
    configs = [dataclasses.replace(p.config, params=dict(p.config.params)) for p in projects]
    roots = [p.datadir.root for p in projects]
    context = multiprocessing.get_context("spawn")
    # The projects' class goes with them (pickled by name): each worker binds its own copies.
    kind = type(projects[0])
    with ProcessPoolExecutor(
        jobs, mp_context=context, initializer=_start_worker, initargs=(kind, configs, roots)
    ) as pool:
        pending: deque[tuple[list[Document], Future[list[sp.csr_matrix]]]] = deque()
        ordinal = first_ordinal
        for batch in batches(documents, batch_size):
            texts = [d.text for d in batch]
            pending.append(
                (batch, pool.submit(_suggest_in_worker, texts, document_ids(batch, ordinal)))
            )
            ordinal += len(batch)
            if len(pending) >= 2 * jobs:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()


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
