"""SuggestionStore size, write and read throughput and peak memory, as a Markdown table.

Usage:
    python benchmarks/store.py [--documents 25000 250000] [--vocab-size 456000]
        [--real-projects bench-tfidf,bench-omikuji,bench-fasttext,bench-lexical]
        [--real-datadir DIR] [--real-projects-file FILE] [--real-corpus FILE] [--jobs N]

Synthetic stores hold 4 sources × top 100 from ``benchmarks/synthetic.py`` (streamed: the
writer never holds more than a chunk of it). The real store is built by running the trained
real source projects over kirjastonhoitaja/train.tsv with ``build_store``; untrained projects
are left out. Every write and every read runs in its own child process, so each peak RSS is
that step's own. "write docs/s" counts only the store's time (``append`` and the final
commit), not generating or suggesting the documents; for the real store the whole build
(sources + store) is reported below the table. "read" is one full shuffled epoch in batches of
256. Bytes on disk are the LMDB files' sizes. A second table shows, on the real store, what
storing scores as float16 or 16-bit fixed point instead of float32 would save and change.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from kuoro.store.suggestion_store import SuggestionStore
from synthetic import generate

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench-work" / "sources"
SHARED = ROOT.parent / "shared" / "data"
REAL_PROJECTS = "bench-tfidf,bench-omikuji,bench-fasttext,bench-lexical"
SOURCES = ("s1", "s2", "s3", "s4")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def write_store(
    path: Path,
    chunks: Iterable[tuple[list[np.ndarray], list[sp.csr_matrix]]],
    *,
    source_names: tuple[str, ...],
    vocab_size: int,
) -> dict[str, Any]:
    """Write the chunks into a new store, timing only the store's own work."""
    store_seconds = 0.0
    documents = pairs = 0
    store = SuggestionStore.create(
        path,
        source_names=source_names,
        vocab_size=vocab_size,
        fingerprints={"benchmark": "1"},
        top_k=100,
    )
    with store:
        for gold, sources in chunks:
            started = time.perf_counter()
            store.append(gold, sources)
            store_seconds += time.perf_counter() - started
            documents += len(gold)
            pairs += sum(m.nnz for m in sources)
        started = time.perf_counter()
        store.mark_complete()
        store_seconds += time.perf_counter() - started
    return {"documents": documents, "pairs": pairs, "seconds": store_seconds}


def child_write_synthetic(path: Path, vocab_size: int, documents: int) -> dict[str, Any]:
    chunks = generate(vocab_size, documents, n_sources=len(SOURCES), top_k=100, seed=0)
    return write_store(path, chunks, source_names=SOURCES, vocab_size=vocab_size)


def child_copy(source_path: Path, path: Path) -> dict[str, Any]:
    """Write a store again from another one's rows: the store's own cost on real rows."""
    with SuggestionStore.open(source_path) as source:
        names, vocab_size = source.source_names, source.vocab_size

        def chunks() -> Iterator[tuple[list[np.ndarray], list[sp.csr_matrix]]]:
            for batch in source.batches(256):
                gold = np.split(batch.gold.indices, batch.gold.indptr[1:-1])
                yield gold, list(batch.sources)

        return write_store(path, chunks(), source_names=names, vocab_size=vocab_size)


def child_read(path: Path) -> dict[str, Any]:
    started = time.perf_counter()
    documents = pairs = 0
    with SuggestionStore.open(path) as store:
        for batch in store.batches(256, shuffle=True, seed=0):
            documents += len(batch)
            pairs += sum(m.nnz for m in batch.sources)
    return {"documents": documents, "pairs": pairs, "seconds": time.perf_counter() - started}


def child_build_real(
    path: Path, project_ids: list[str], datadir: Path, projects_file: Path, corpus: Path, jobs: int
) -> dict[str, Any]:
    from kuoro.config.projects import load_projects
    from kuoro.project.datadir import DataDir
    from kuoro.project.project import Project
    from kuoro.project.stores import build_source_store

    configs = load_projects(projects_file)
    projects = [Project(configs[p], DataDir(datadir)) for p in project_ids]
    started = time.perf_counter()
    store = build_source_store(
        path,
        projects,
        [corpus],
        vocabulary=projects[0].vocabulary,
        language=projects[0].config.language,
        jobs=jobs,
        cached=False,
    )
    with store:
        documents = len(store)
    return {"documents": documents, "seconds": time.perf_counter() - started}


def run_child(*args: str) -> dict[str, Any]:
    """Run one step in a fresh interpreter; its last output line is its JSON result."""
    done = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"child {args[0]} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


def row(label: str, path: Path, write: dict[str, Any], read: dict[str, Any]) -> str:
    size = disk_bytes(path)
    assert read["documents"] == write["documents"] and read["pairs"] == write["pairs"]
    return (
        f"| {label} | {write['documents']:,} | {write['pairs']:,} | {size / 1e6:,.1f} MB "
        f"| {size / write['pairs']:.2f} | {write['documents'] / write['seconds']:,.0f} "
        f"| {write['rss_mb']:.0f} MB | {read['documents'] / read['seconds']:,.0f} "
        f"| {read['rss_mb']:.0f} MB |"
    )


def trained_projects(project_ids: list[str], datadir: Path, projects_file: Path) -> list[str]:
    from kuoro.config.projects import load_projects
    from kuoro.project.datadir import DataDir
    from kuoro.project.project import Project

    configs = load_projects(projects_file)
    return [p for p in project_ids if Project(configs[p], DataDir(datadir)).is_trained]


def quantise(scores: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(scores as read back, the stored array) for a score format."""
    if kind == "float16":
        stored = scores.astype("<f2")
        return stored.astype(np.float32), stored
    if kind == "16-bit fixed point":
        stored = np.round(scores.astype(np.float64) * 65535).astype("<u2")
        return (stored / 65535).astype(np.float32), stored
    return scores, scores.astype("<f4")


def planes(values: np.ndarray) -> bytes:
    return values.view(np.uint8).reshape(-1, values.itemsize).T.tobytes()


def deltas(matrix: sp.csr_matrix) -> np.ndarray:
    ids = matrix.indices.astype(np.int64)
    out = ids.copy()
    out[1:] -= ids[:-1]
    starts = matrix.indptr[:-1][np.diff(matrix.indptr) > 0]
    out[starts] = ids[starts]
    return out.astype("<u4")


def rankings(matrix: sp.csr_matrix) -> list[np.ndarray]:
    from kuoro.util.ranking import rank_row

    return [
        rank_row(matrix.indices[a:b], matrix.data[a:b], 1000)[0]
        for a, b in zip(matrix.indptr[:-1], matrix.indptr[1:], strict=True)
    ]


def precision_table(path: Path) -> list[str]:
    """What storing scores at lower precision would change in the mean of the sources' rankings
    (the fusion's starting point), and what it would save on disk."""
    from kuoro.evaluation.metrics import RankingMetrics

    with SuggestionStore.open(path) as store:
        batches = list(store.batches(store.chunk_size))
    lines = [
        "| scores stored as | bytes/pair (chunks) | largest metric change "
        "| metrics equal at 4 decimals | documents whose top 10 changed "
        "| largest rank change (top 100) |",
        "|---|---:|---:|---|---:|---:|",
    ]
    reference: tuple[dict[str, float], list[np.ndarray]] | None = None
    for kind in ("float32 (stored)", "float16", "16-bit fixed point"):
        size = pairs = 0
        metrics = RankingMetrics(limit=10)
        ranked: list[np.ndarray] = []
        for batch in batches:
            parts = [planes(np.diff(batch.gold.indptr).astype("<u4")), planes(deltas(batch.gold))]
            means = []
            for m in batch.sources:
                read_back, stored = quantise(m.data, kind)
                parts += [
                    planes(np.diff(m.indptr).astype("<u4")),
                    planes(deltas(m)),
                    planes(stored),
                ]
                means.append(sp.csr_matrix((read_back, m.indices, m.indptr), shape=m.shape))
                pairs += m.nnz
            size += 24 + len(zlib.compress(b"".join(parts), 1))
            mean = sum(means[1:], means[0]) / len(means)
            gold = np.split(batch.gold.indices, batch.gold.indptr[1:-1])
            metrics.update(mean, gold)
            ranked += rankings(sp.csr_matrix(mean))
        values = metrics.compute()
        if reference is None:
            reference = (values, ranked)
        ref_values, ref_ranked = reference
        largest = max(abs(values[k] - ref_values[k]) for k in values)
        equal = all(f"{values[k]:.4f}" == f"{ref_values[k]:.4f}" for k in values)
        top10 = sum(
            not np.array_equal(a[:10], b[:10]) for a, b in zip(ref_ranked, ranked, strict=True)
        )
        moved = 0
        for a, b in zip(ref_ranked, ranked, strict=True):
            where = {int(c): i for i, c in enumerate(b)}
            moved = max([moved, *(abs(i - where[int(c)]) for i, c in enumerate(a[:100]))])
        lines.append(
            f"| {kind} | {size / pairs:.2f} | {largest:.1e} | {'yes' if equal else 'no'} "
            f"| {top10} of {len(ranked)} | {moved} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, nargs="*", default=[25_000, 250_000])
    parser.add_argument("--vocab-size", type=int, default=456_000)
    parser.add_argument("--real-projects", default=REAL_PROJECTS, help="comma-separated; '' skips")
    parser.add_argument("--real-datadir", type=Path, default=BENCH / "data")
    parser.add_argument("--real-projects-file", type=Path, default=BENCH / "projects.toml")
    parser.add_argument("--real-corpus", type=Path, default=SHARED / "kirjastonhoitaja/train.tsv")
    parser.add_argument("--jobs", type=int, default=1, help="processes running the sources")
    parser.add_argument("--work", type=Path, help="where the stores go (default: a temp dir)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        step, *rest = args.child
        if step == "write-synthetic":
            result = child_write_synthetic(Path(rest[0]), int(rest[1]), int(rest[2]))
        elif step == "copy":
            result = child_copy(Path(rest[0]), Path(rest[1]))
        elif step == "read":
            result = child_read(Path(rest[0]))
        else:
            ids = rest[1].split(",")
            result = child_build_real(
                Path(rest[0]), ids, Path(rest[2]), Path(rest[3]), Path(rest[4]), int(rest[5])
            )
        print(json.dumps({**result, "rss_mb": peak_rss_mb()}))
        return

    work = Path(tempfile.mkdtemp(prefix="kuoro-store-bench-", dir=args.work))
    lines = [
        "| store | documents | pairs | on disk | bytes/pair | write docs/s | write peak RSS "
        "| read docs/s (shuffled epoch) | read peak RSS |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    notes = []
    try:
        for n in args.documents:
            path = work / f"synthetic-{n}"
            write = run_child("write-synthetic", str(path), str(args.vocab_size), str(n))
            read = run_child("read", str(path))
            label = f"synthetic V={args.vocab_size:,}, 4 sources, K=100"
            lines.append(row(label, path, write, read))
            print(lines[-1], file=sys.stderr)
            shutil.rmtree(path)
        wanted = [p for p in args.real_projects.split(",") if p]
        project_ids = (
            trained_projects(wanted, args.real_datadir, args.real_projects_file) if wanted else []
        )
        if project_ids:
            built = work / "real"
            build = run_child(
                "build-real",
                str(built),
                ",".join(project_ids),
                str(args.real_datadir),
                str(args.real_projects_file),
                str(args.real_corpus),
                str(args.jobs),
            )
            copy = work / "real-copy"
            write = run_child("copy", str(built), str(copy))
            read = run_child("read", str(copy))
            corpus_name = f"{args.real_corpus.parent.name}/{args.real_corpus.name}"
            label = f"{corpus_name}, {len(project_ids)} real source(s)"
            lines.append(row(label, copy, write, read))
            left_out = sorted(set(wanted) - set(project_ids))
            notes.append(
                f"Real sources: {', '.join(project_ids)}"
                + (f" (not trained, left out: {', '.join(left_out)})" if left_out else "")
                + f". Building that store, sources included (jobs={args.jobs}): "
                f"{build['documents'] / build['seconds']:,.1f} docs/s, peak RSS "
                f"{build['rss_mb']:,.0f} MB (mostly the models). Its row above is the store's "
                "own cost, measured by writing the same rows into a new store."
            )
            notes.append(
                "Score precision, on the real store: the mean of the sources ranked with each "
                "score format (metrics: kuoro.evaluation.metrics at limit 10, as `kuoro eval`).\n\n"
                + "\n".join(precision_table(built))
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\n".join(lines))
    for note in notes:
        print(f"\n{note}")


if __name__ == "__main__":
    main()
