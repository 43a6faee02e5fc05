"""A store writer run as a real process by the kill test: deterministic documents, written slowly.

Usage: python store_writer.py PATH --documents N [--chunk-size C] [--delay SECONDS]

It resumes the store at PATH if one is there, appends documents one at a time (sleeping
``delay`` between them), prints ``committed N`` after each chunk commit and ``complete N`` at
the end. Every document's rows depend only on its position (:func:`document_rows`).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.sparse as sp

from kuoro.store.suggestion_store import SuggestionStore

VOCAB_SIZE = 5000
SOURCES = ("alpha", "beta", "gamma")
TOP_K = 40
FINGERPRINTS = {"vocabulary": "v1", "corpus": "c1"}


def document_rows(position: int) -> tuple[np.ndarray, list[sp.csr_matrix]]:
    """The gold ids and one 1 × V row per source of the document at ``position``."""
    rng = np.random.default_rng([7, position])
    gold = np.sort(rng.choice(VOCAB_SIZE, size=int(rng.integers(0, 6)), replace=False))
    rows = []
    for _ in SOURCES:
        k = int(rng.integers(0, TOP_K + 1))
        ids = np.sort(rng.choice(VOCAB_SIZE, size=k, replace=False)).astype(np.int32)
        scores = rng.random(k).astype(np.float32)
        rows.append(sp.csr_matrix((scores, ids, [0, k]), shape=(1, VOCAB_SIZE)))
    return gold, rows


def open_store(path: str, chunk_size: int) -> SuggestionStore:
    return SuggestionStore.create(
        path,
        source_names=SOURCES,
        vocab_size=VOCAB_SIZE,
        fingerprints=FINGERPRINTS,
        top_k=TOP_K,
        chunk_size=chunk_size,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("path")
    parser.add_argument("--documents", type=int, required=True)
    parser.add_argument("--chunk-size", type=int, default=20)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    with open_store(args.path, args.chunk_size) as store:
        print(f"resumed {len(store)}", flush=True)
        for position in range(len(store), args.documents):
            gold, rows = document_rows(position)
            before = len(store)
            store.append([gold], rows)
            if len(store) != before:
                print(f"committed {len(store)}", flush=True)
            time.sleep(args.delay)
        store.mark_complete()
        print(f"complete {len(store)}", flush=True)


if __name__ == "__main__":
    main()
