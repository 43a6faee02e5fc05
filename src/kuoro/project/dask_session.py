"""The Dask side of :class:`~kuoro.project.cluster.DaskEngine`: the client's connection, the
ordered stream of batches through the cluster, and what runs on the workers.

Imported only when a run uses a cluster (it imports ``distributed``), and on every worker,
which unpickles :class:`SourceModels` and :func:`suggest_partition` from here.

Each worker keeps the projects' models in a :class:`SourceModels` worker plugin, registered
once per set of projects: the scheduler gives it to every worker, including one that joins or
is restarted later, and each worker loads the models on its first batch (not in the plugin's
``setup``, which runs on the worker's event loop) and keeps them until the plugin is removed
when the engine closes.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import pickle
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import CancelledError
from contextlib import contextmanager, nullcontext
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import dask
import scipy.sparse as sp
from distributed import Client, Future, LocalCluster, WorkerPlugin, get_worker
from distributed.comm.core import CommClosedError
from distributed.scheduler import KilledWorker

from kuoro.config.projects import ProjectConfig
from kuoro.corpus.documents import Document
from kuoro.errors import KuoroError, ModelError
from kuoro.project.batch import BATCH_SIZE, ProjectRows, batches, document_ids, worker_configs
from kuoro.project.datadir import DataDir
from kuoro.util.wording import plural

if TYPE_CHECKING:
    from distributed import Worker

    from kuoro.project.cluster import ClusterSpec
    from kuoro.project.project import Project

log = logging.getLogger(__name__)

# On a worker's host: the data directory to read instead of the client's path.
WORKER_DATADIR_ENV = "KUORO_WORKER_DATADIR"

# Partitions in flight per worker thread: one running, one waiting, so that no worker idles
# while the client collects a result.
_PER_THREAD = 2
# Batches per task: a task costs the client and the scheduler a few milliseconds whatever it
# holds, so that a partition of 4 batches (256 documents) makes that a small share of the
# sources' time, and lets one client feed more workers.
PARTITION_BATCHES = 4
# glibc returns freed memory to the system only above this size. Dask starts its workers with
# 64 KiB, which made the sources' workers spend 7–14% more CPU than a local pool's processes;
# with 32 MiB (glibc's own ceiling) Dask's overhead at 2 workers on 2 cores was 6.7–7.9% of the
# steady rate over 30,000 titles (three runs), against 11.0% and 12.4%, and 5.9% over 100,000
# (benchmarks/scale_out.py).
MALLOC_TRIM_THRESHOLD = 32 * 1024 * 1024
_MALLOC_TRIM_KEY = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"

T = TypeVar("T")


class DaskSession:
    """A client of the cluster ``spec`` names (a LocalCluster it starts, or a running
    scheduler), the worker plugins it registered, and the batches it hands out."""

    def __init__(
        self,
        spec: ClusterSpec,
        *,
        on_start: Callable[[str], None] | None = None,
        log_level: int | None = None,
    ) -> None:
        if log_level is not None:  # set once distributed is imported: its import sets them
            logging.getLogger("distributed").setLevel(log_level)
        self.spec = spec
        self.token = uuid.uuid4().hex[:12]
        self.cluster: LocalCluster | None = None
        self._plugins: dict[str, str] = {}  # the digest of a set of projects -> plugin name
        self._submitted = 0
        self.lost = False  # the scheduler went away
        try:
            if spec.local_workers is not None:
                # Read when each worker's nanny starts, and kept for the workers it restarts;
                # a MALLOC_TRIM_THRESHOLD_ already in the environment wins (Dask's rule).
                trim = {_MALLOC_TRIM_KEY: MALLOC_TRIM_THRESHOLD}
                with dask.config.set(trim):
                    self.cluster = LocalCluster(
                        n_workers=spec.local_workers,
                        threads_per_worker=1,
                        processes=True,
                        dashboard_address=":8787",  # or any free port when that one is taken
                        silence_logs=logging.ERROR,
                    )
                self.client = Client(self.cluster)
            else:
                self.client = Client(spec.address)
        except OSError as exc:  # distributed's connection timeouts are OSErrors
            self._close_cluster()
            raise KuoroError(
                f"cannot reach the Dask scheduler at {spec.address} ({exc}); start one with "
                "'dask scheduler' or name a running one with --cluster or "
                "$KUORO_DASK_SCHEDULER"
            ) from None
        self.address = str(self.client.scheduler_info()["address"])
        message = self.describe()
        (on_start or log.info)(message)

    def describe(self) -> str:
        """Where the scheduler and its dashboard are, and the workers it has."""
        info = self.client.scheduler_info()
        workers, threads = info["workers"], sum(w["nthreads"] for w in info["workers"].values())
        where = "local cluster" if self.cluster is not None else "cluster"
        if "dashboard" not in info.get("services", {}):
            dashboard = "no dashboard"
        elif importlib.util.find_spec("bokeh") is None and self.cluster is not None:
            dashboard = "no dashboard (it needs bokeh: pip install 'kuoro[dask]')"
        else:
            dashboard = f"dashboard {self.client.dashboard_link}"
        waiting = "" if workers else " (the documents wait until workers join)"
        return (
            f"Dask {where} at {self.address}: {plural(len(workers), 'worker')}, "
            f"{plural(threads, 'thread')}{waiting}; {dashboard}"
        )

    # -- the stream of batches -------------------------------------------------------------

    def suggest_all(
        self,
        projects: Sequence[Project],
        documents: Iterable[Document],
        *,
        batch_size: int = BATCH_SIZE,
        first_ordinal: int = 1,
        in_flight: int | None = None,
        partition: int = PARTITION_BATCHES,
    ) -> Iterator[ProjectRows]:
        """The batches of the documents with each project's rows, in corpus order. A task
        takes a partition of ``partition`` batches (the worker suggests for each batch as a
        local run does, so the rows are the same); at most ``in_flight`` partitions are out
        at a time."""
        plugin = self._plugin_for(projects)
        window = in_flight or _PER_THREAD * max(1, sum(self.client.nthreads().values()))
        pending: deque[tuple[list[list[Document]], Future[list[list[sp.csr_matrix]]]]]
        pending = deque()
        ordinal = first_ordinal
        try:
            for part in batches_of(batches(documents, batch_size), partition):
                work = []
                for batch in part:
                    work.append(([d.text for d in batch], document_ids(batch, ordinal)))
                    ordinal += len(batch)
                self._submitted += 1
                future = self.client.submit(
                    suggest_partition,
                    plugin,
                    work,
                    key=f"kuoro-suggest-{self.token}-{self._submitted}",
                    pure=False,
                )
                pending.append((part, future))
                if len(pending) >= window:
                    yield from self._rows(*pending.popleft())
            while pending:
                yield from self._rows(*pending.popleft())
        finally:
            if pending and self.client.status == "running":
                self.client.cancel([future for _, future in pending])

    def _rows(
        self, part: list[list[Document]], future: Future[list[list[sp.csr_matrix]]]
    ) -> Iterator[ProjectRows]:
        """A partition's batches with their rows, once its task is done."""
        try:
            rows: list[list[sp.csr_matrix]] = future.result()
        except KilledWorker as exc:
            documents = sum(map(len, part))
            tried = exc.allowed_failures + 1
            workers = "the Dask worker" if tried == 1 else f"all {tried} Dask workers"
            raise KuoroError(
                f"a partition of {documents} documents killed {workers} that ran it, the "
                f"last {exc.last_worker.address}; a worker that runs out of memory is killed: "
                "each worker loads every source model, so give the workers more memory or run "
                "fewer of them per host (their logs say more)"
            ) from None
        except (CancelledError, CommClosedError, OSError) as exc:
            # The client cancels every future when it loses the scheduler; a result being
            # fetched then fails on the closed connection.
            raise self._lost(exc) from None
        yield from zip(part, rows, strict=True)

    def _lost(self, exc: BaseException) -> KuoroError:
        self.lost = True
        if isinstance(exc, (CancelledError, CommClosedError)):
            reason = "the connection closed"
        else:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return KuoroError(
            f"lost the Dask scheduler at {self.address} ({reason}); what was written is kept: "
            "run the command again to go on from there (a suggestion store resumes after its "
            "last stored document, index keeps the files it wrote)"
        )

    # -- the models on the workers ---------------------------------------------------------

    def _plugin_for(self, projects: Sequence[Project]) -> str:
        """The name of the worker plugin that holds these projects' models, registered (and
        so given to every worker) once per session."""
        configs = worker_configs(projects)
        roots = [str(p.datadir.root.resolve()) for p in projects]
        versions = [_current_version(p) for p in projects]
        kind = type(projects[0])
        described = pickle.dumps((kind.__module__, kind.__qualname__, configs, roots, versions))
        digest = hashlib.sha256(described).hexdigest()[:12]
        if digest not in self._plugins:
            name = f"kuoro-models-{self.token}-{digest}"
            try:
                self.client.register_plugin(SourceModels(kind, configs, roots, versions), name=name)
            except (OSError, CommClosedError) as exc:
                raise self._lost(exc) from None
            self._plugins[digest] = name
        return self._plugins[digest]

    def close(self) -> None:
        """Remove this session's plugins from the workers (unloading the models) and
        disconnect; a LocalCluster stops."""
        try:
            if self.client.status == "running":
                for name in self._plugins.values():
                    self.client.unregister_worker_plugin(name)
        except (OSError, CommClosedError, ValueError) as exc:
            log.debug("could not unregister the worker plugins: %s", exc)
        finally:
            self._plugins.clear()
            # A client still trying to reconnect logs its cancelled attempt as a traceback:
            # the user has been told in one line already.
            quiet = _silenced("distributed.client") if self.lost else nullcontext()
            with quiet:
                self.client.close()
            self._close_cluster()

    def _close_cluster(self) -> None:
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None


@contextmanager
def _silenced(name: str) -> Iterator[None]:
    logger = logging.getLogger(name)
    was = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = was


def _current_version(project: Project) -> str:
    """The name of the project's current model version, as the client sees it."""
    pointer = project.datadir.current_pointer(project.project_id)
    try:
        return pointer.read_text(encoding="utf-8").strip()
    except OSError:
        raise ModelError(
            f"project '{project.project_id}' is not trained yet; train it with: "
            f"kuoro train {project.project_id} CORPUS"
        ) from None


class SourceModels(WorkerPlugin):
    """On a worker: the projects, their models loaded on the first batch and kept.

    Every worker must see the models the client sees: a project whose current model version
    differs from the client's is an error naming the worker, not other suggestions.
    """

    def __init__(
        self,
        project_class: type[Project],
        configs: list[ProjectConfig],
        roots: list[str],
        versions: list[str],
    ) -> None:
        self.project_class = project_class
        self.configs = configs
        self.roots = roots
        self.versions = versions
        self._projects: list[Project] | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        # What goes to the workers: the description, never loaded models or the lock.
        state = dict(self.__dict__)
        state.pop("_lock")
        state["_projects"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def setup(self, worker: Worker) -> None:
        self.worker_address = str(worker.address)

    def teardown(self, worker: Worker) -> None:
        self._projects = None

    def suggest(self, texts: list[str], ids: list[str | None]) -> list[sp.csr_matrix]:
        """Each project's rows for the texts. One batch at a time per worker: the sources
        are not known to be thread-safe (run one thread per worker process)."""
        with self._lock:
            if self._projects is None:
                self._projects = self._load()
            return [project.suggest(texts, ids) for project in self._projects]

    def _load(self) -> list[Project]:
        override = os.environ.get(WORKER_DATADIR_ENV)
        projects = []
        for config, root, version in zip(self.configs, self.roots, self.versions, strict=True):
            project = self.project_class(config, DataDir(Path(override or root)))
            pointer = project.datadir.current_pointer(project.project_id)
            try:
                here = pointer.read_text(encoding="utf-8").strip()
            except OSError:
                here = None
            if here != version:
                found = "no model" if here is None else f"model version {here}"
                raise ModelError(
                    f"Dask worker {getattr(self, 'worker_address', '?')} finds {found} of "
                    f"project '{project.project_id}' in {project.datadir.root}, the client "
                    f"version {version}: every worker must read the client's data directory "
                    f"(a shared filesystem, or a copy at the same path or at "
                    f"${WORKER_DATADIR_ENV})"
                )
            _ = project.model  # load it now, once
            projects.append(project)
        return projects


def suggest_partition(
    plugin: str, work: list[tuple[list[str], list[str | None]]]
) -> list[list[sp.csr_matrix]]:
    """The task: each project's rows for each batch of a partition (texts and document ids),
    by the worker's loaded models."""
    models = get_worker().plugins[plugin]
    assert isinstance(models, SourceModels)
    return [models.suggest(texts, ids) for texts, ids in work]


def batches_of(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """The items in lists of ``size`` (the last one shorter)."""
    it = iter(items)
    while part := list(islice(it, size)):
        yield part
