"""Running projects over documents on a Dask cluster (``kuoro[dask]``).

``DaskEngine("local:4")`` starts a ``LocalCluster`` of 4 worker processes on this machine;
``DaskEngine("tcp://host:8786")`` uses a running scheduler and its workers. Either way the
documents go out in ordered partitions of a few batches (one Dask task each), at most two
per worker thread at a time, and come back in corpus order with the same rows a
:class:`~kuoro.project.batch.LocalEngine` gives. Each worker loads the projects' models
once, from the data directory every worker reads at the client's path (or at
``$KUORO_WORKER_DATADIR`` on the worker's host), and keeps them until the engine is closed.
A worker that dies has its partitions run again elsewhere; losing the scheduler is an error
of one line, and a rerun goes on where the output stopped (a store resumes after its last
stored document, ``index`` keeps the files written).

Dask itself is imported when the engine first runs something (see ``dask_session``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kuoro.corpus.documents import Document
from kuoro.errors import KuoroError
from kuoro.project.batch import BATCH_SIZE, Engine, ProjectRows

if TYPE_CHECKING:
    from kuoro.project.dask_session import DaskSession
    from kuoro.project.project import Project

__all__ = ["SCHEDULER_ENV", "ClusterSpec", "DaskEngine", "parse_cluster"]

# The environment variable that names a running scheduler when --cluster is not given.
SCHEDULER_ENV = "KUORO_DASK_SCHEDULER"

_LOCAL = re.compile(r"local(?::(\d+))?")


@dataclass(frozen=True)
class ClusterSpec:
    """Where to run: ``local_workers`` worker processes of a new LocalCluster, or the
    scheduler at ``address``."""

    address: str | None = None
    local_workers: int | None = None

    def __str__(self) -> str:
        return f"local:{self.local_workers}" if self.address is None else self.address


def parse_cluster(text: str) -> ClusterSpec:
    """``local:N`` (N worker processes here; ``local`` alone: one per core), a scheduler
    address (``tcp://host:8786``, ``tls://…``), or ``host:port`` for TCP."""
    text = text.strip()
    local = _LOCAL.fullmatch(text)
    if local:
        workers = int(local.group(1)) if local.group(1) else (os.cpu_count() or 1)
        if workers < 1:
            raise KuoroError(f"cluster '{text}': a local cluster needs at least 1 worker")
        return ClusterSpec(local_workers=workers)
    if "://" in text:
        scheme, _, rest = text.partition("://")
        if scheme and rest:
            return ClusterSpec(address=text)
    elif re.fullmatch(r"[\w.\-\[\]:]+:\d+", text):
        return ClusterSpec(address=f"tcp://{text}")
    raise KuoroError(
        f"cluster '{text}' is neither local:N nor a scheduler address such as tcp://host:8786"
    )


class DaskEngine(Engine):
    """Runs projects over documents on a Dask cluster (see the module's docstring).

    ``cluster``: ``local:N``, a scheduler address, or a :class:`ClusterSpec`. ``on_start``
    is told, once connected, where the scheduler and its dashboard are (default: the log).
    ``partition``: batches (of ``batch_size`` documents) per task, default 4; ``in_flight``:
    the most partitions handed out at a time (default two per worker thread): the client
    holds no more than these, whatever the corpus's size. ``log_level``: the level
    of Dask's own loggers in this process (``distributed``, which logs at INFO), when given.
    """

    def __init__(
        self,
        cluster: str | ClusterSpec,
        *,
        on_start: Callable[[str], None] | None = None,
        in_flight: int | None = None,
        partition: int = 4,
        log_level: int | None = None,
    ) -> None:
        self.spec = cluster if isinstance(cluster, ClusterSpec) else parse_cluster(cluster)
        if in_flight is not None and in_flight < 1:
            raise ValueError(f"in_flight must be at least 1, not {in_flight}")
        if partition < 1:
            raise ValueError(f"partition must be at least 1, not {partition}")
        self.partition = partition
        self.on_start = on_start
        self.in_flight = in_flight
        self.log_level = log_level
        self._session: DaskSession | None = None

    def __repr__(self) -> str:
        return f"DaskEngine({str(self.spec)!r})"

    @property
    def session(self) -> DaskSession:
        """The connection to the cluster, made (or the LocalCluster started) on first use."""
        if self._session is None:
            try:
                # Dask is optional (kuoro[dask]) and slow to import: only a cluster run needs it.
                from kuoro.project.dask_session import DaskSession
            except ImportError as exc:
                raise KuoroError(
                    f"running on a Dask cluster needs Dask ({exc}); install it with: "
                    "pip install 'kuoro[dask]'"
                ) from exc
            self._session = DaskSession(self.spec, on_start=self.on_start, log_level=self.log_level)
        return self._session

    def suggest_all(
        self,
        projects: Sequence[Project],
        documents: Iterable[Document],
        *,
        batch_size: int = BATCH_SIZE,
        first_ordinal: int = 1,
    ) -> Iterator[ProjectRows]:
        return self.session.suggest_all(
            projects,
            documents,
            batch_size=batch_size,
            first_ordinal=first_ordinal,
            in_flight=self.in_flight,
            partition=self.partition,
        )

    def close(self) -> None:
        """Unload the models from the workers and disconnect (a LocalCluster stops)."""
        if self._session is not None:
            session, self._session = self._session, None
            session.close()
