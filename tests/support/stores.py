"""What the tests of suggestion stores share: reading a store whole, and comparing rows bit for
bit."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import lmdb
import numpy as np
import scipy.sparse as sp

from kuoro.store.suggestion_store import StoreBatch


def concat(batches: Iterator[StoreBatch], n_sources: int = 2) -> StoreBatch:
    """One batch of all the batches' documents, in the order read."""
    parts = list(batches)
    return StoreBatch(
        np.concatenate([p.positions for p in parts]),
        sp.vstack([p.gold for p in parts], format="csr"),
        tuple(sp.vstack([p.sources[s] for p in parts], format="csr") for s in range(n_sources)),
    )


def assert_same_rows(got: sp.csr_matrix, expected: sp.csr_matrix) -> None:
    assert got.shape == expected.shape and got.dtype == np.float32
    assert np.array_equal(got.indptr, expected.indptr)
    assert np.array_equal(got.indices, expected.indices)
    assert got.data.tobytes() == expected.data.astype(np.float32).tobytes()


def store_records(path: Path) -> dict[bytes, bytes]:
    """Every record of the store's LMDB database, as stored: two stores of the same rows,
    built in the same order, have the same records byte for byte."""
    env = lmdb.open(str(path), readonly=True, lock=False, subdir=True)
    try:
        with env.begin() as txn:
            return {bytes(key): bytes(value) for key, value in txn.cursor()}
    finally:
        env.close()
