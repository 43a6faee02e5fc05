"""Running the sources over a corpus into a store: the local pool against a Dask LocalCluster.

Usage:
    python benchmarks/scale_out.py [--documents 10000] [--corpus FILE]
        [--datadir bench-work/sources/data] [--projects-file bench-work/sources/projects.toml]
        [--projects bench-tfidf,bench-omikuji,bench-fasttext,bench-lexical]
        [--runs local:1,local:2,dask:1,dask:2]

Builds the suggestion store of the protocol's four trained sources over the first
``--documents`` documents of the corpus (default: finna.fi titles) once per engine, each in a
fresh interpreter: ``local:N`` is ``-j N`` (N = 1 runs the sources in the process that writes
the store), ``dask:N`` a LocalCluster of N single-threaded worker processes
(``--cluster local:N``). For each it prints the documents per second over the whole run
(startup and loading the models included) and from the first stored batch on (the steady
rate), the peak RSS of the client (the process that reads the corpus and writes the store;
with a LocalCluster it holds the scheduler too) and of each worker process, sampled every
0.2 s, their CPU seconds, and the cores that processes outside the benchmark kept busy
meanwhile (on a shared machine). Every store must be byte-equal to the first one. Then,
measured alone: the single writer's rate (the rows of the store replayed from memory into a
new store: what the one writer can absorb), the client's rate reading the corpus, Dask's
transport (partitions of 256 documents out and their real rows back through a LocalCluster of
2 workers, no source work), and the bytes a document costs on the network (pickled batch of
texts out, rows back).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import pickle
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import lmdb
import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench-work" / "sources"
SHARED = ROOT.parent / "shared" / "data"
PROJECTS = "bench-tfidf,bench-omikuji,bench-fasttext,bench-lexical"


class PeakRss:
    """The peak RSS and the CPU time of this process and of each process below it, sampled
    in a thread, and the CPU time the whole machine spent meanwhile (to tell what other
    processes took)."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.peaks: dict[int, int] = {}
        self.cpu: dict[int, float] = {}  # the latest CPU seconds seen of each process
        self.leaves: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakRss:
        self._machine = _busy_seconds()
        self._started = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sample()
        self._stop.set()
        self._thread.join()
        self.machine_seconds = _busy_seconds() - self._machine
        self.wall = time.perf_counter() - self._started

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        me = psutil.Process()
        for process in [me, *me.children(recursive=True)]:
            try:
                rss = process.memory_info().rss
                times = process.cpu_times()
                command = " ".join(process.cmdline())
                leaf = not process.children()
            except psutil.Error:
                continue
            if "resource_tracker" in command:
                continue  # multiprocessing's helper
            self.peaks[process.pid] = max(self.peaks.get(process.pid, 0), rss)
            self.cpu[process.pid] = times.user + times.system
            if leaf and process.pid != me.pid:
                self.leaves.add(process.pid)

    def client_mb(self) -> float:
        return self.peaks[os.getpid()] / 2**20

    def workers(self, pids: set[int] | None = None) -> set[int]:
        """The given worker processes, else every process without children."""
        return {p for p in (self.leaves if pids is None else pids) if p in self.peaks}

    def workers_mb(self, pids: set[int]) -> list[float]:
        return sorted((self.peaks[p] / 2**20 for p in pids), reverse=True)

    def other_cores(self) -> float:
        """Cores busy on average with processes outside this tree while it ran."""
        ours = sum(self.cpu.values())
        return max(0.0, self.machine_seconds - ours) / self.wall


def _busy_seconds() -> float:
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def open_projects(project_ids: list[str], datadir: Path, projects_file: Path) -> list[Any]:
    from kuoro.config.projects import load_projects
    from kuoro.project.datadir import DataDir
    from kuoro.project.project import Project

    configs = load_projects(projects_file)
    return [Project(configs[p], DataDir(datadir), configs) for p in project_ids]


def child_build(
    run: str, store: Path, project_ids: list[str], datadir: Path, projects_file: Path, corpus: Path
) -> dict[str, Any]:
    """Build the store with the engine ``run`` names; the timings and peaks of this run."""
    from kuoro.project.batch import Engine, LocalEngine, ProjectRows
    from kuoro.project.cluster import DaskEngine
    from kuoro.project.stores import build_source_store

    kind, _, count = run.partition(":")
    workers = int(count)
    projects = open_projects(project_ids, datadir, projects_file)
    vocabulary = projects[0].vocabulary
    inner: Engine = LocalEngine(workers) if kind == "local" else DaskEngine(f"local:{workers}")
    marks: list[tuple[float, int]] = []  # (time, documents) as each batch comes back
    worker_pids: set[int] | None = None

    class Timed(Engine):
        def suggest_all(self, *args: Any, **options: Any) -> Iterator[ProjectRows]:
            done = 0
            for batch, rows in inner.suggest_all(*args, **options):
                done += len(batch)
                marks.append((time.perf_counter(), done))
                yield batch, rows

        def close(self) -> None:
            inner.close()

    with PeakRss() as peaks:
        started = time.perf_counter()
        with Timed() as engine:
            built = build_source_store(
                store, projects, [corpus], vocabulary=vocabulary, language="fi", engine=engine
            )
            built.close()
            if isinstance(inner, DaskEngine):
                worker_pids = set(inner.session.client.run(os.getpid).values())
        seconds = time.perf_counter() - started
    if kind == "local" and workers == 1:
        worker_pids = set()  # the sources ran in the client
    pids = peaks.workers(worker_pids)
    (first, first_docs), (last, documents) = marks[0], marks[-1]
    return {
        "run": run,
        "documents": documents,
        "seconds": seconds,
        "first_batch_s": first - started,
        "steady_docs_s": (documents - first_docs) / (last - first),
        "client_mb": peaks.client_mb(),
        "workers_mb": peaks.workers_mb(pids),
        "client_cpu_s": peaks.cpu[os.getpid()],
        "workers_cpu_s": sum(peaks.cpu[p] for p in pids),
        "other_cores": peaks.other_cores(),
    }


def child_writer(store: Path, copy: Path) -> dict[str, Any]:
    """The one writer alone: the store's rows, held in memory, written into a new store."""
    from kuoro.store.builder import RowBatch, StoreSpec, build_store
    from kuoro.store.suggestion_store import SuggestionStore

    with SuggestionStore.open(store) as source:
        spec = StoreSpec(source.source_names, source.vocab_size, source.top_k, source.fingerprints)
        held = []
        for batch in source.batches(64):
            gold = np.split(batch.gold.indices, batch.gold.indptr[1:-1])
            held.append((gold, list(batch.sources)))

    def replay(skip: int) -> Iterator[RowBatch]:
        assert skip == 0
        yield from held

    started = time.perf_counter()
    build_store(copy, spec, replay).close()
    seconds = time.perf_counter() - started
    return {"documents": sum(len(g) for g, _ in held), "seconds": seconds}


def child_traffic(
    project_ids: list[str], datadir: Path, projects_file: Path, corpus: Path, documents: int
) -> dict[str, Any]:
    """What reading the corpus costs the client, and the bytes of a document each way."""
    from kuoro.corpus.documents import Corpus
    from kuoro.project.batch import LocalEngine, document_ids

    projects = open_projects(project_ids, datadir, projects_file)
    vocabulary = projects[0].vocabulary
    started = time.perf_counter()
    read = sum(1 for _ in Corpus([corpus], vocabulary, language="fi"))
    read_seconds = time.perf_counter() - started
    sent = received = counted = 0
    sample = islice(Corpus([corpus], vocabulary, language="fi"), documents)
    for batch, rows in LocalEngine(1).suggest_all(projects, sample):
        texts, ids = [d.text for d in batch], document_ids(batch, counted + 1)
        sent += len(pickle.dumps((texts, ids), protocol=5))
        received += len(pickle.dumps(rows, protocol=5))
        counted += len(batch)
    return {
        "read_docs_s": read / read_seconds,
        "sent_bytes": sent / counted,
        "received_bytes": received / counted,
    }


def echo_rows(work: list[tuple[list[str], list[str | None]]], rows: Any) -> Any:
    """A task that costs nothing but its transport: the partition's rows, made in advance."""
    return rows


def child_transport(store: Path, partitions: int, workers: int) -> dict[str, Any]:
    """Dask's own ceiling: partitions of real texts out and real rows back through a
    LocalCluster, the ordered window of the engine, no source work."""
    from collections import deque

    import distributed

    from kuoro.project.batch import BATCH_SIZE
    from kuoro.store.suggestion_store import SuggestionStore

    with SuggestionStore.open(store) as source:
        rows = [list(b.sources) for b in islice(source.batches(BATCH_SIZE), 4)]
    texts = [(["Kirjastojen historia Suomessa 1900-luvulla"] * BATCH_SIZE, [None] * BATCH_SIZE)]
    work = texts * 4
    with (
        distributed.LocalCluster(
            n_workers=workers, threads_per_worker=1, dashboard_address=":0", silence_logs=40
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        shipped = client.scatter(rows, broadcast=True)  # on every worker, sent once
        window = 2 * workers
        pending: deque[Any] = deque()
        started = time.perf_counter()
        for _ in range(partitions):
            pending.append(client.submit(echo_rows, work, shipped, pure=False))
            if len(pending) >= window:
                pending.popleft().result()
        while pending:
            pending.popleft().result()
        seconds = time.perf_counter() - started
    documents = partitions * 4 * BATCH_SIZE
    return {"tasks_s": partitions / seconds, "docs_s": documents / seconds}


def run_child(options: argparse.Namespace, *args: str) -> dict[str, Any]:
    """Run one step in a fresh interpreter; its last output line is its JSON result."""
    command = [sys.executable, __file__, "--datadir", str(options.datadir)]
    command += ["--projects-file", str(options.projects_file), "--projects", options.projects]
    done = subprocess.run([*command, "--child", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"child {args[0]} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def records(path: Path) -> dict[bytes, bytes]:
    env = lmdb.open(str(path), readonly=True, lock=False)
    try:
        with env.begin() as txn:
            return {bytes(k): bytes(v) for k, v in txn.cursor()}
    finally:
        env.close()


def slice_corpus(source: Path, documents: int, target: Path) -> None:
    opener = gzip.open if source.suffix == ".gz" else open
    with opener(source, "rt", encoding="utf-8") as lines, target.open("w", encoding="utf-8") as out:
        out.writelines(islice(lines, documents))


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f}"


def engine_name(run: str) -> str:
    kind, _, n = run.partition(":")
    if kind == "local":
        return f"local pool `-j {n}`" if n != "1" else "local `-j 1` (no pool)"
    return f"Dask LocalCluster, {n} worker{'s' if n != '1' else ''}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--documents", type=int, default=10_000)
    parser.add_argument("--corpus", type=Path, default=SHARED / "yso-fi" / "finna-titles.tsv.gz")
    parser.add_argument("--datadir", type=Path, default=BENCH / "data")
    parser.add_argument("--projects-file", type=Path, default=BENCH / "projects.toml")
    parser.add_argument("--projects", default=PROJECTS)
    parser.add_argument("--runs", default="local:1,local:2,dask:1,dask:2")
    parser.add_argument("--traffic-documents", type=int, default=2000)
    parser.add_argument("--child", nargs="+")
    args = parser.parse_args()
    project_ids = args.projects.split(",")
    datadir, projects_file = args.datadir.resolve(), args.projects_file.resolve()

    if args.child:
        step, *rest = args.child
        if step == "build":
            result = child_build(
                rest[0], Path(rest[1]), project_ids, datadir, projects_file, Path(rest[2])
            )
        elif step == "writer":
            result = child_writer(Path(rest[0]), Path(rest[1]))
        elif step == "transport":
            result = child_transport(Path(rest[0]), int(rest[1]), int(rest[2]))
        else:
            result = child_traffic(project_ids, datadir, projects_file, Path(rest[0]), int(rest[1]))
        print(json.dumps(result))
        return

    runs = args.runs.split(",")
    with tempfile.TemporaryDirectory(prefix="kuoro-scale-out-") as scratch:
        work = Path(scratch)
        corpus = work / "corpus.tsv"
        slice_corpus(args.corpus, args.documents, corpus)
        load_before = load()
        results = []
        for run in runs:
            store = work / f"{run.replace(':', '-')}.store"
            results.append(run_child(args, "build", run, str(store), str(corpus)))
            print(f"done: {run} {results[-1]['seconds']:.1f} s", file=sys.stderr)
        first = records(work / f"{runs[0].replace(':', '-')}.store")
        identical = all(records(work / f"{r.replace(':', '-')}.store") == first for r in runs)
        writer = run_child(
            args, "writer", str(work / f"{runs[0].replace(':', '-')}.store"), str(work / "w.store")
        )
        traffic = run_child(args, "traffic", str(corpus), str(args.traffic_documents))
        transport = run_child(
            args, "transport", str(work / f"{runs[0].replace(':', '-')}.store"), "300", "2"
        )
        load_after = load()

    print(
        f"Sources {', '.join(project_ids)} over the first {args.documents:,} documents of "
        f"{args.corpus.name} into a store; load average before {load_before}, after "
        f"{load_after} ({os.cpu_count()} cores).\n"
    )
    print(
        "| engine | wall s | first batch s | docs/s (whole run) | docs/s (steady) "
        "| client peak RSS | worker peak RSS (each) | CPU s client / workers "
        "| other processes' load |"
    )
    print("|---|---:|---:|---:|---:|---:|---|---:|---:|")
    for r in results:
        workers = ", ".join(f"{mb:,.0f} MB" for mb in r["workers_mb"]) or "— (in the client)"
        print(
            f"| {engine_name(r['run'])} | {r['seconds']:.1f} | {r['first_batch_s']:.1f} "
            f"| {r['documents'] / r['seconds']:,.0f} | {r['steady_docs_s']:,.0f} "
            f"| {r['client_mb']:,.0f} MB | {workers} "
            f"| {r['client_cpu_s']:.0f} / {r['workers_cpu_s']:.0f} "
            f"| {r['other_cores']:.2f} cores |"
        )
    print()
    by_run = {r["run"]: r for r in results}
    for n in sorted({int(r.partition(":")[2]) for r in runs}):
        local, dask = by_run.get(f"local:{n}"), by_run.get(f"dask:{n}")
        if local and dask:
            whole = 1 - (dask["documents"] / dask["seconds"]) / (
                local["documents"] / local["seconds"]
            )
            steady = 1 - dask["steady_docs_s"] / local["steady_docs_s"]
            print(
                f"- Dask's overhead at {n} core{'s' if n > 1 else ''} against the local "
                f"{'pool' if n > 1 else 'run'}: {whole:+.1%} of the whole run's rate, "
                f"{steady:+.1%} of the steady rate (positive: Dask is slower)."
            )
    print(f"- Every store byte-equal to the first: {'yes' if identical else 'NO'}.")
    print(
        f"- The single writer alone (rows replayed from memory into a new store): "
        f"{writer['documents'] / writer['seconds']:,.0f} documents/s."
    )
    print(f"- The client reading the corpus alone: {traffic['read_docs_s']:,.0f} documents/s.")
    print(
        f"- Dask's transport alone (LocalCluster of 2 workers, partitions of 256 documents "
        f"with their real rows coming back, no source work): {transport['tasks_s']:,.0f} "
        f"tasks/s, {transport['docs_s']:,.0f} documents/s."
    )
    print(
        f"- Network bytes per document (pickled, over {args.traffic_documents:,} documents): "
        f"{traffic['sent_bytes']:,.0f} out (text and id), {traffic['received_bytes']:,.0f} "
        f"back (the {len(project_ids)} sources' rows)."
    )


if __name__ == "__main__":
    main()
