"""Suggesting for a whole corpus in batches, in this process or a pool of worker processes."""

from __future__ import annotations

import dataclasses
import multiprocessing
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from itertools import islice
from pathlib import Path

import scipy.sparse as sp

from kuoro.config import ProjectConfig
from kuoro.corpus import Document
from kuoro.datadir import DataDir
from kuoro.project import Project

BATCH_SIZE = 64

# The project loaded once per worker process by _start_worker.
_worker_project: Project | None = None


def batches(documents: Iterable[Document], size: int = BATCH_SIZE) -> Iterator[list[Document]]:
    it = iter(documents)
    while batch := list(islice(it, size)):
        yield batch


def _ids(batch: list[Document], first_ordinal: int) -> list[str | None]:
    # Documents without an id (short-text TSV) are known by their 1-based position in the corpus.
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
    if jobs <= 1:
        ordinal = 1
        for batch in batches(documents, batch_size):
            yield batch, project.suggest([d.text for d in batch], _ids(batch, ordinal))
            ordinal += len(batch)
        return
    # A plain-dict copy of the config pickles; "spawn" keeps library thread pools out of forks.
    config = dataclasses.replace(project.config, params=dict(project.config.params))
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        jobs, mp_context=context, initializer=_start_worker, initargs=(config, project.datadir.root)
    ) as pool:
        pending: deque[tuple[list[Document], Future[sp.csr_matrix]]] = deque()
        ordinal = 1
        for batch in batches(documents, batch_size):
            texts = [d.text for d in batch]
            pending.append((batch, pool.submit(_suggest_in_worker, texts, _ids(batch, ordinal))))
            ordinal += len(batch)
            if len(pending) >= 2 * jobs:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()


def _start_worker(config: ProjectConfig, datadir_root: Path) -> None:
    global _worker_project
    _worker_project = Project(config, DataDir(datadir_root))
    _ = _worker_project.source  # load the model now, not inside the first batch


def _suggest_in_worker(texts: list[str], document_ids: list[str | None]) -> sp.csr_matrix:
    assert _worker_project is not None
    return _worker_project.suggest(texts, document_ids)
