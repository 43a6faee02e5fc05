"""Running sources on a Dask cluster: the same store, files and numbers as a local run, a
killed worker that loses nothing, a lost scheduler that is one line and a rerun that resumes,
and a bounded number of batches in flight."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from kuoro.cli import main
from kuoro.corpus.documents import Corpus, Document
from kuoro.errors import KuoroError, ModelError
from kuoro.project.batch import BATCH_SIZE, ProjectRows
from kuoro.project.cluster import ClusterSpec, DaskEngine, parse_cluster
from kuoro.project.project import Project
from kuoro.project.stores import build_source_store
from kuoro.store.builder import stored_meta

from support.dask_cluster import DaskProcesses, free_port, wait_until, worker_environment
from support.data import SHARED_DATA, requires_shared_data
from support.stores import store_records
from support.workspace import kuoro, make_workspace, open_project

ARCH = SHARED_DATA / "archaeology"
SOURCES = ("arch-tfidf", "arch-lexical")
PROJECTS = """
[arch-tfidf]
language = "fi"
vocab = "arch"
backend = "tfidf"
analyzer = "snowball(finnish)"

[arch-lexical]
language = "fi"
vocab = "arch"
backend = "lexical"
analyzer = "simplemma(fi)"

[arch-mean]
language = "fi"
vocab = "arch"
backend = "mean"
sources = ["arch-tfidf", "arch-lexical"]
"""


# -- the --cluster value (no cluster needed) --------------------------------------------------


def test_cluster_values() -> None:
    assert parse_cluster("local:3") == ClusterSpec(local_workers=3)
    assert parse_cluster("local") == ClusterSpec(local_workers=os.cpu_count() or 1)
    assert parse_cluster("tcp://10.0.0.5:8786") == ClusterSpec(address="tcp://10.0.0.5:8786")
    assert parse_cluster("tls://sched:8786") == ClusterSpec(address="tls://sched:8786")
    assert parse_cluster("sched.example.org:8786") == ClusterSpec(
        address="tcp://sched.example.org:8786"
    )
    for bad in ("local:0", "local:x", "nowhere", "tcp://", ""):
        with pytest.raises(KuoroError):
            parse_cluster(bad)


def test_a_bad_cluster_value_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["index", "some-project", str(tmp_path), "--cluster", "local:0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'--cluster'" in err and "at least 1 worker" in err


# -- on a cluster -----------------------------------------------------------------------------

requires_dask = pytest.mark.skipif(
    importlib.util.find_spec("distributed") is None,
    reason="Dask is not installed: pip install 'kuoro[dask]'",
)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two archaeology sources and a `mean` fusion of them, trained (locally)."""
    work = tmp_path_factory.mktemp("cluster")
    return make_workspace(work, PROJECTS, sources=SOURCES, fusion=["arch-mean"])


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    """The address of a LocalCluster of 2 single-threaded worker processes, for the module."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as cluster:
        yield str(cluster.scheduler_address)


def _sources(work: Path) -> list[Project]:
    return [open_project(work, p) for p in SOURCES]


def _build(work: Path, path: Path, corpus: Path, **options: Any) -> Path:
    sources = _sources(work)
    store = build_source_store(
        path, sources, [corpus], vocabulary=sources[0].vocabulary, language="fi", **options
    )
    store.close()
    return path


@requires_shared_data
@requires_dask
@pytest.mark.integration
def test_a_store_built_on_a_cluster_is_byte_equal_to_a_local_one(
    workspace: Path, scheduler: str, tmp_path: Path
) -> None:
    corpus = workspace / "fusion.tsv"
    local = _build(workspace, tmp_path / "local.store", corpus, jobs=1)
    with DaskEngine(scheduler) as engine:
        on_cluster = _build(workspace, tmp_path / "dask.store", corpus, engine=engine)
    records = store_records(local)
    assert len(records) > 5  # the meta, the chunk index, the prior, 5 chunks of 256 documents
    assert store_records(on_cluster) == records


@requires_shared_data
@requires_dask
@pytest.mark.integration
def test_train_on_the_scheduler_of_the_environment_stores_the_same_rows(
    workspace: Path,
    scheduler: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The store of fusion.tsv, built by the workspace's (local) train.
    stores = (workspace / "data" / "stores").glob("*.store")
    (store,) = (p for p in stores if (stored_meta(p) or {}).get("documents") == 1200)
    before = store_records(store)
    monkeypatch.setenv("KUORO_DASK_SCHEDULER", scheduler)
    corpus = str(workspace / "fusion.tsv")
    assert main(kuoro(workspace, "train", "arch-mean", corpus, "--no-cached")) == 0
    assert "kuoro: Dask cluster at" in capsys.readouterr().err
    assert store_records(store) == before
    # A store that is reused starts no cluster and connects to none.
    monkeypatch.setenv("KUORO_DASK_SCHEDULER", "local:2")
    assert main(kuoro(workspace, "train", "arch-mean", corpus)) == 0
    assert "Dask" not in capsys.readouterr().err


@requires_shared_data
@requires_dask
@pytest.mark.integration
def test_index_on_a_local_cluster_writes_the_same_files(
    workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    here, there = tmp_path / "here", tmp_path / "there"
    for target in (here, there):
        shutil.copytree(ARCH / "fulltext", target)
    assert main(kuoro(workspace, "index", "arch-mean", str(here), "-j", "1")) == 0
    capsys.readouterr()
    assert main(kuoro(workspace, "index", "arch-mean", str(there), "--cluster", "local:2")) == 0
    err = capsys.readouterr().err
    assert "kuoro: Dask local cluster at tcp://" in err and "2 workers" in err
    assert "dashboard http://" in err
    written = sorted(p.name for p in here.glob("*.annif"))
    assert len(written) == 28
    assert sorted(p.name for p in there.glob("*.annif")) == written
    for name in written:
        assert (there / name).read_bytes() == (here / name).read_bytes()


@requires_shared_data
@requires_dask
@pytest.mark.integration
def test_eval_on_a_cluster_gives_the_same_numbers(
    workspace: Path, scheduler: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    printed = []
    for name, engine in (("local", ["-j", "1"]), ("dask", ["--cluster", scheduler])):
        metrics, results = tmp_path / f"{name}.json", tmp_path / f"{name}.tsv"
        args = ["-M", str(metrics), "-r", str(results), *engine]
        corpus = str(workspace / "fusion.tsv")
        assert main(kuoro(workspace, "eval", "arch-mean", corpus, *args)) == 0
        printed.append(capsys.readouterr().out)
    assert printed[0] == printed[1] and "NDCG@10" in printed[0]
    for suffix in ("json", "tsv"):
        assert (tmp_path / f"dask.{suffix}").read_bytes() == (
            tmp_path / f"local.{suffix}"
        ).read_bytes()


@requires_shared_data
@requires_dask
@pytest.mark.integration
def test_batch_suggest_on_a_cluster_prints_the_same_lines(
    workspace: Path, scheduler: str, capsys: pytest.CaptureFixture[str]
) -> None:
    files = sorted(str(p) for p in (ARCH / "fulltext").glob("*.txt"))
    assert main(kuoro(workspace, "suggest", "arch-mean", *files)) == 0
    here = capsys.readouterr().out
    assert main(kuoro(workspace, "suggest", "arch-mean", *files, "--cluster", scheduler)) == 0
    assert capsys.readouterr().out == here
    assert here.count("Suggestions for ") == len(files) == 28


@requires_shared_data
@requires_dask
@pytest.mark.integration
def test_the_batches_in_flight_are_bounded(workspace: Path, scheduler: str) -> None:
    sources = _sources(workspace)
    documents = list(Corpus([workspace / "fusion.tsv"], sources[0].vocabulary, language="fi"))
    pulled = 0

    def counted() -> Iterator[Document]:
        nonlocal pulled
        for document in documents:
            pulled += 1
            yield document

    ahead, yielded = [], 0
    with DaskEngine(scheduler, in_flight=3, partition=2) as engine:
        for batch, _ in engine.suggest_all(sources, counted()):
            ahead.append(pulled - yielded)
            yielded += len(batch)
    assert yielded == len(documents) == 1200
    # The partition being yielded and two more out, of 2 batches each.
    assert max(ahead) == 3 * 2 * BATCH_SIZE


class _Hooked(DaskEngine):
    """A DaskEngine whose documents pass through ``hook(position)`` on their way out."""

    def __init__(self, cluster: str, hook: Any) -> None:
        super().__init__(cluster)
        self.hook = hook

    def suggest_all(
        self, projects: Sequence[Project], documents: Iterable[Document], **options: Any
    ) -> Iterator[ProjectRows]:
        def hooked() -> Iterator[Document]:
            for position, document in enumerate(documents):
                self.hook(position)
                yield document

        return super().suggest_all(projects, hooked(), **options)


@requires_shared_data
@requires_dask
@pytest.mark.integration
def test_a_killed_worker_loses_nothing(workspace: Path, tmp_path: Path) -> None:
    corpus = workspace / "fusion.tsv"
    local = _build(workspace, tmp_path / "local.store", corpus)
    victims: dict[str, Any] = {}

    def kill_a_busy_worker(position: int) -> None:
        if position != 600:
            return
        client = engine.session.client
        wait_until(lambda: any(client.processing().values()))
        worker, keys = next((w, k) for w, k in client.processing().items() if k)
        pid = client.run(os.getpid, workers=[worker])[worker]
        os.kill(pid, signal.SIGKILL)
        victims.update(worker=worker, pid=pid, keys=list(keys))

    with _Hooked("local:2", kill_a_busy_worker) as engine:
        on_cluster = _build(workspace, tmp_path / "dask.store", corpus, engine=engine)
        client = engine.session.client

        def runs(dask_scheduler: Any) -> dict[str, int]:
            # How often each of the killed worker's tasks was sent to a worker.
            log = dask_scheduler.transition_log
            keys = set(victims["keys"])
            counts = dict.fromkeys(keys, 0)
            for key, _start, finish, *_ in log:
                if key in keys and finish == "processing":
                    counts[key] += 1
            return counts

        ran = client.run_on_scheduler(runs)
        pids = client.run(os.getpid)
    assert victims and victims["pid"] not in pids.values()
    assert all(count >= 2 for count in ran.values()), ran  # run again on another worker
    assert store_records(on_cluster) == store_records(local)


@requires_shared_data
@requires_dask
@pytest.mark.integration
def test_a_partition_that_kills_its_workers_is_one_line(workspace: Path) -> None:
    import dask

    sources = _sources(workspace)
    documents = Corpus([workspace / "fusion.tsv"], sources[0].vocabulary, language="fi")

    def kill_a_busy_worker(position: int) -> None:
        if position == 300:
            client = engine.session.client
            wait_until(lambda: any(client.processing().values()))
            worker = next(w for w, keys in client.processing().items() if keys)
            os.kill(client.run(os.getpid, workers=[worker])[worker], signal.SIGKILL)

    # No retry: the first worker that dies running a partition fails it.
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 0}),
        _Hooked("local:2", kill_a_busy_worker) as engine,
        pytest.raises(KuoroError) as caught,
    ):
        for _ in engine.suggest_all(sources, documents):
            pass
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("a partition of 256 documents killed the Dask worker that ran it")
    assert "give the workers more memory" in message


@requires_shared_data
@requires_dask
@pytest.mark.integration
def test_a_lost_scheduler_is_one_line_and_the_rerun_resumes(
    workspace: Path, tmp_path: Path
) -> None:
    corpus = workspace / "sources.tsv"  # 5,204 documents: time to lose the scheduler
    local = _build(workspace, tmp_path / "local.store", corpus)
    stores = workspace / "data" / "stores"
    known = set(stores.glob("*.store"))

    def train(address: str, *options: str) -> subprocess.Popen[str]:
        command = [sys.executable, "-m", "kuoro.cli", *options]
        command += kuoro(workspace, "train", "arch-mean", str(corpus), "--cluster", address)
        return subprocess.Popen(
            command, stderr=subprocess.PIPE, text=True, env=worker_environment()
        )

    def stored() -> int:
        new = set(stores.glob("*.store")) - known
        meta = stored_meta(next(iter(new))) if new else None
        return 0 if meta is None or "error" in meta else int(meta["documents"])

    with DaskProcesses(1, log=tmp_path / "dask-1.log") as cluster:
        cluster.wait_for_workers()
        run = train(cluster.address)
        wait_until(lambda: stored() >= 512 or run.poll() is not None)
        cluster.kill_scheduler()
        _, err = run.communicate(timeout=120)
    kept = stored()
    assert run.returncode == 1, err
    lines = err.splitlines()
    assert lines[0].startswith(f"kuoro: Dask cluster at {cluster.address}: 1 worker, 1 thread;")
    assert lines[1:] == [
        f"kuoro: error: lost the Dask scheduler at {cluster.address} (the connection closed); "
        "what was written is kept: run the command again to go on from there (a suggestion "
        "store resumes after its last stored document, index keeps the files it wrote)"
    ], err
    assert 512 <= kept < 5204

    with DaskProcesses(1, log=tmp_path / "dask-2.log") as cluster:
        run = train(cluster.address, "-v")
        _, err = run.communicate(timeout=300)
    assert run.returncode == 0, err
    assert "resuming store" in err and f": {kept} documents stored already" in err
    (store,) = set(stores.glob("*.store")) - known
    assert store_records(store) == store_records(local)


@requires_shared_data
@requires_dask
@pytest.mark.integration
def test_a_worker_that_cannot_see_the_models_says_so(workspace: Path, tmp_path: Path) -> None:
    sources = _sources(workspace)
    documents = Corpus([workspace / "fusion.tsv"], sources[0].vocabulary, language="fi")
    elsewhere = {"KUORO_WORKER_DATADIR": str(tmp_path / "empty")}
    with (
        DaskProcesses(1, log=tmp_path / "dask.log", worker_env=elsewhere) as cluster,
        DaskEngine(cluster.address) as engine,
        pytest.raises(ModelError) as caught,
    ):
        next(iter(engine.suggest_all(sources, documents)))
    message = str(caught.value)
    assert "\n" not in message
    assert f"finds no model of project 'arch-tfidf' in {tmp_path / 'empty'}" in message
    assert "every worker must read the client's data directory" in message


@requires_dask
@pytest.mark.integration
def test_an_unreachable_scheduler_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import dask

    address = f"tcp://127.0.0.1:{free_port()}"
    (tmp_path / "projects.toml").write_text(PROJECTS, encoding="utf-8")
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        code = main(kuoro(tmp_path, "index", "arch-mean", str(tmp_path), "--cluster", address))
    assert code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"kuoro: error: cannot reach the Dask scheduler at {address} (")


def _trim_threshold() -> str | None:
    return os.environ.get("MALLOC_TRIM_THRESHOLD_")


@requires_dask
@pytest.mark.integration
def test_local_workers_start_with_glibc_trim_threshold_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kuoro.project.dask_session import MALLOC_TRIM_THRESHOLD

    # A value in the environment wins (Dask's rule); a LocalCluster started earlier in this
    # process leaves Dask's default there, so the test starts from an environment without it.
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    with DaskEngine("local:1") as engine:
        seen = engine.session.client.run(_trim_threshold)
    # Set before each worker process started (Dask's own default is 65536).
    assert list(seen.values()) == [str(MALLOC_TRIM_THRESHOLD)]
