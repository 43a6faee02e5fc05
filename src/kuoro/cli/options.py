"""Options and helpers shared by the commands that run a project over documents."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click
from tqdm import tqdm

from kuoro.cli.context import (
    Context,
)
from kuoro.errors import KuoroError
from kuoro.project.batch import Engine, LocalEngine
from kuoro.project.cluster import SCHEDULER_ENV, ClusterSpec, DaskEngine, parse_cluster
from kuoro.util.atomic import atomic_write
from kuoro.util.progress import DOC_UNIT, count_documents

if TYPE_CHECKING:
    import scipy.sparse as sp

    from kuoro.corpus.documents import Document
    from kuoro.project.project import Project


# The most suggestions a document can get (a project's `limit` and `top_k` have the same bound).
MAX_LIMIT = 10_000


jobs_option = click.option(
    "-j", "--jobs", type=click.IntRange(min=1), default=1, show_default=True,
    help="Parallel jobs (processes for suggestion, threads where a library trains with them).",
)  # fmt: skip


def _cluster(ctx: click.Context, param: click.Parameter, value: str | None) -> ClusterSpec | None:
    if not value:
        return None
    try:
        return parse_cluster(value)
    except KuoroError as exc:
        raise click.BadParameter(str(exc)) from None


cluster_option = click.option(
    "--cluster", metavar="local:N|ADDRESS", envvar=SCHEDULER_ENV, callback=_cluster,
    help="Run the sources over the documents on a Dask cluster (pip install 'kuoro[dask]'): "
    "local:N starts N worker processes here, tcp://HOST:8786 uses a running scheduler "
    f"(env {SCHEDULER_ENV}). Results are those of a local run. Default: -j local processes.",
)  # fmt: skip


def open_engine(obj: Context, jobs: int, cluster: ClusterSpec | None) -> Engine:
    """What runs the project's sources over the documents: ``jobs`` local processes, or the
    Dask cluster of ``--cluster`` (connected on first use; its address and dashboard are
    printed then, unless --quiet). Close it when done (``with``)."""
    if cluster is None:
        return LocalEngine(jobs)

    def started(message: str) -> None:
        if obj.verbosity >= 0:
            click.echo(f"kuoro: {message}", err=True)

    # Dask's own messages only when they matter (-vv: all of them, for debugging).
    level = logging.DEBUG if obj.verbosity > 1 else logging.WARNING
    return DaskEngine(cluster, on_start=started, log_level=level)


def _finite_threshold(ctx: click.Context, param: click.Parameter, value: float) -> float:
    # click.FloatRange lets nan through: it fails every comparison.
    if math.isnan(value):
        raise click.BadParameter("nan is not a number between 0 and 1")
    return value


limit_option = click.option(
    "--limit", type=click.IntRange(1, MAX_LIMIT), default=10, show_default=True,
    help="Suggestions per document.",
)  # fmt: skip


threshold_option = click.option(
    "--threshold", type=click.FloatRange(0, 1), default=0.0, show_default=True,
    callback=_finite_threshold, help="Minimum score of a suggestion.",
)  # fmt: skip


def configured_project(
    obj: Context, project_id: str, backend_params: Sequence[str] = ()
) -> Project:
    """The project, with every configured project at hand (a fusion project's sources) and
    the ``--backend-param`` settings applied."""
    return obj.open_project(project_id, backend_params)


# A batch of documents: a list, or any sequence of them.
Batch = TypeVar("Batch", bound=Sequence["Document"])


def with_progress(
    stream: Iterator[tuple[Batch, sp.csr_matrix]],
    desc: str,
    enabled: bool,
    total: int | None = None,
) -> Iterator[tuple[Batch, sp.csr_matrix]]:
    """The batches of ``stream``, counted on a bar of ``total`` documents (an estimate: the
    bar ends at the documents there were)."""
    with tqdm(desc=desc, unit=DOC_UNIT, total=total, disable=not enabled) as bar:
        for batch, rows in stream:
            yield batch, rows
            bar.update(len(batch))
        bar.total = bar.n


def corpus_size(paths: Sequence[Path], docs_limit: int | None) -> int | None:
    """The documents a bar over the corpus counts to: its lines or files (``count_documents``:
    no parsing, a plain read of each file's bytes), no more than ``docs_limit``."""
    counted = count_documents(paths)
    if counted is None or docs_limit is None:
        return docs_limit if counted is None else counted
    return min(counted, docs_limit)


def write_text(path: Path, text: str) -> None:
    with atomic_write(path) as out:
        out.write(text.encode("utf-8"))
