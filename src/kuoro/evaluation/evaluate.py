"""Evaluating suggestions against gold subjects: the one loop that ``kuoro eval``, the report
and the benchmarks run.

``evaluate`` scores batches of (documents, suggestion rows) with Annif's metrics;
``suggestion_batches`` makes such batches from anything that suggests (a project, whose
sources may run in worker processes, a fitted source or a ``Fusion`` estimator).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice

import scipy.sparse as sp

from kuoro.corpus.documents import Document
from kuoro.errors import KuoroError
from kuoro.evaluation.metrics import RankingMetrics, SubjectResult
from kuoro.project.batch import BATCH_SIZE, Engine, document_ids, suggest_corpus
from kuoro.project.project import Project
from kuoro.sources.base import Suggester
from kuoro.util.reliability import ReliabilityBins

__all__ = ["Evaluation", "evaluate", "suggestion_batches"]

Batch = tuple[Sequence[Document], sp.csr_matrix]


@dataclass(frozen=True)
class Evaluation:
    """The metrics of ``annif eval`` (names as it prints them) and the counts of hits, false
    positives and false negatives; the documents scored and how long that took; each concept's
    results (``subjects``, most frequent gold subjects first) and the predictions' reliability
    bins."""

    metrics: dict[str, float]
    documents: int
    seconds: float
    subjects: list[SubjectResult] = field(repr=False)
    # The predictions' scores against their correctness, binned (a reliability diagram).
    reliability: ReliabilityBins | None = field(default=None, repr=False)

    def __getitem__(self, name: str) -> float:
        return self.metrics[name]


def suggestion_batches(
    suggester: Project | Suggester,
    documents: Iterable[Document],
    *,
    jobs: int = 1,
    limit: int | None = None,
    engine: Engine | None = None,
) -> Iterator[Batch]:
    """The documents in batches with the suggester's rows for them, in corpus order.

    A project suggests in ``jobs`` worker processes when ``jobs`` > 1 (each loads the model
    once), or where ``engine`` runs it (e.g. a ``kuoro.project.cluster.DaskEngine``); any
    other suggester runs here. ``limit``: only the first so many documents.
    """
    documents = islice(documents, limit)
    if isinstance(suggester, Project):
        yield from suggest_corpus(suggester, documents, jobs=jobs, engine=engine)
        return
    it, ordinal = iter(documents), 1
    while batch := list(islice(it, BATCH_SIZE)):
        ids = document_ids(batch, ordinal)
        yield batch, sp.csr_matrix(suggester.suggest([d.text for d in batch], ids))
        ordinal += len(batch)


def evaluate(
    batches: Iterable[Batch],
    *,
    limit: int = 10,
    threshold: float = 0.0,
    n_concepts: int | None = None,
    on_batch: Callable[[Sequence[Document], sp.csr_matrix], None] | None = None,
) -> Evaluation:
    """Score each batch's rows against its documents' gold subjects.

    A document's predictions are its ``limit`` best suggestions with score ≥ ``threshold``
    (ties by concept id). ``n_concepts``: the vocabulary's size, which the subject averages
    divide by (by default the rows' width). ``on_batch`` sees every batch as it is scored (a
    progress bar, more metrics). A KuoroError when there is no document.
    """
    metrics = RankingMetrics(limit=limit, threshold=threshold, n_concepts=n_concepts)
    started = time.perf_counter()
    for documents, rows in batches:
        metrics.update(rows, [d.subjects for d in documents])
        if on_batch is not None:
            on_batch(documents, rows)
    seconds = time.perf_counter() - started
    if not metrics.documents:
        raise KuoroError("no documents to evaluate")
    return Evaluation(
        {**metrics.compute(), **metrics.counts()},
        metrics.documents,
        seconds,
        metrics.subject_results(),
        metrics.reliability(),
    )
