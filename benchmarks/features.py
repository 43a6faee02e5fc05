"""Candidate feature building: time per batch and per document at V = 36k and V = 456k.

Usage: python benchmarks/features.py [--batches 8] [--repeats 7] [--seed 0]

Batches of 256 documents × 4 sources × K = 100 from benchmarks/synthetic.py, with gold
labels and a concept prior, as in training. Each batch is built ``--repeats`` times, the
vocabulary sizes interleaved so that machine noise hits both alike; the table gives medians.
The cost must not depend on the vocabulary size: the last column should be about 1.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kuoro.fusion.candidates import ConceptPrior, build_candidates
from synthetic import generate

BATCH = 256
SIZES = (36_000, 456_000)


def batches(
    vocab_size: int, n_batches: int, seed: int
) -> list[tuple[list[sp.csr_matrix], sp.csr_matrix]]:
    """(sources, gold CSR) for each batch."""
    out = []
    for gold, sources in generate(vocab_size, n_batches * BATCH, seed=seed, chunk_size=BATCH):
        indptr = np.zeros(len(gold) + 1, np.int64)
        np.cumsum([len(g) for g in gold], out=indptr[1:])
        ids = np.concatenate(gold)
        gold_csr = sp.csr_matrix(
            (np.ones(len(ids), np.float32), ids, indptr), shape=(len(gold), vocab_size)
        )
        out.append((sources, gold_csr))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    data = {v: batches(v, args.batches, args.seed) for v in SIZES}
    priors = {v: ConceptPrior.from_counts(np.random.default_rng(1).zipf(1.5, v)) for v in SIZES}
    times: dict[int, list[float]] = {v: [] for v in SIZES}
    for _ in range(args.repeats):
        for v in SIZES:
            for sources, gold in data[v]:
                start = time.perf_counter()
                build_candidates(sources, gold, priors[v])
                times[v].append(time.perf_counter() - start)

    candidates, pairs, peaks = {}, {}, {}
    for v in SIZES:
        sources, gold = data[v][0]
        tracemalloc.start()
        build_candidates(sources, gold, priors[v])
        peaks[v] = tracemalloc.get_traced_memory()[1] / 1e6
        tracemalloc.stop()
        pairs[v] = sum(m.nnz for s, _ in data[v] for m in s) / (BATCH * len(data[v]))
        candidates[v] = statistics.mean(
            len(build_candidates(s, g).concepts) / BATCH for s, g in data[v]
        )

    batch_ms = {v: 1e3 * statistics.median(times[v]) for v in SIZES}
    rows = [
        ("time per batch of 256 (ms, median)", batch_ms, "{:.1f}"),
        ("time per document (µs)", {v: 1e3 * batch_ms[v] / BATCH for v in SIZES}, "{:.0f}"),
        ("(source, candidate) pairs per document", pairs, "{:.1f}"),
        ("candidates (union) per document", candidates, "{:.1f}"),
        ("peak allocation of one batch, result included (MB)", peaks, "{:.1f}"),
    ]
    small, large = SIZES
    print(
        f"Feature building, {BATCH} documents × 4 sources × K=100 per batch, "
        f"{args.batches} batches × {args.repeats} repeats, seed {args.seed}\n"
    )
    a, b = f"{small // 1000}k", f"{large // 1000}k"
    print(f"| measure | V={a} | V={b} | ratio {b}/{a} |")
    print("|---|---:|---:|---:|")
    for name, values, fmt in rows:
        ratio = values[large] / values[small]
        print(
            f"| {name} | {fmt.format(values[small])} | {fmt.format(values[large])} | {ratio:.2f} |"
        )


if __name__ == "__main__":
    main()
