"""SuggestionStore: every source's top-K rows and the gold subjects of the training documents.

Running the sources over the training corpus is the slowest step of fusion training, so its
output is kept in an LMDB environment (a directory) and reused; ``kuoro.store.codec``
describes its records and encodes them, ``kuoro.store.lmdb_env`` opens and writes the
environment.

Each chunk is committed in its own write transaction with ``meta`` and ``index``, so a
writer killed at any moment leaves a store holding exactly the chunks committed before, which
opens and can be resumed. The LMDB map doubles whenever it is full; no user ever sizes it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import lmdb
import numpy as np
import scipy.sparse as sp

from kuoro.store.codec import (
    FORMAT,
    FORMAT_VERSION,
    INDEX_KEY,
    META_KEY,
    PRIOR_KEY,
    StoreBatch,
    StoreError,
    chunk_key,
    decode_chunk,
    decode_prior,
    encode_chunk,
    encode_prior,
    sorted_csr,
)
from kuoro.store.lmdb_env import begin_read, open_env, put_growing, release_mapped_pages
from kuoro.util.version import __version__

__all__ = ["StoreBatch", "StoreError", "SuggestionStore"]

_INITIAL_MAP_SIZE = 32 << 20
# Documents shuffled together when reading in random order: bounds memory whatever the store.
_SHUFFLE_WINDOW = 4096
# Chunks between rewrites of the prior, whose cost grows with the number of distinct gold
# concepts: a complete store's prior is whole, an incomplete one's is completed from its chunks.
_PRIOR_EVERY = 64
# Chunks read or written after which the store file's pages are unmapped again (see _touched).
_RELEASE_EVERY = 8


class SuggestionStore:
    """The store at ``path``: create or resume it with :meth:`create`, read it with :meth:`open`.

    An LMDB environment may be open only once per process: open a store in one place at a time.
    """

    def __init__(
        self, path: Path, env: lmdb.Environment, meta: dict[str, Any], writable: bool
    ) -> None:
        self.path = path
        self._env: lmdb.Environment | None = env
        self._meta = meta
        self._meta_blob = _dump_meta(meta)  # as stored: a writer checks nobody else changed it
        self._writable = writable
        self._touches = 0
        self._chunk_first, self._chunk_docs = self._read_chunk_index()
        self._pending: list[StoreBatch] = []
        self._prior_counts = self._read_prior() if writable else None
        self._on_close: list[Callable[[], None]] = []

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | Path,
        *,
        source_names: Sequence[str],
        vocab_size: int,
        fingerprints: Mapping[str, str],
        top_k: int,
        chunk_size: int = 256,
        _map_size: int = _INITIAL_MAP_SIZE,
    ) -> SuggestionStore:
        """A new store at ``path``, or the incomplete one there if it was built from the same
        sources, vocabulary and fingerprints: writing then continues after its last document
        (in the chunk size the store was created with)."""
        path = Path(path)
        if chunk_size < 1 or top_k < 1 or vocab_size < 1 or not source_names:
            raise ValueError("chunk_size, top_k, vocab_size and source_names must be positive")
        wanted = {
            "source_names": list(source_names),
            "vocab_size": int(vocab_size),
            "top_k": int(top_k),
            "fingerprints": dict(fingerprints),
        }
        if path.exists() and not (path / "data.mdb").exists() and any(path.iterdir()):
            raise StoreError(f"{path} exists and is not a suggestion store")
        env = open_env(path, readonly=False, map_size=_map_size)
        try:
            meta = _read_meta(env, path, required=False)
            if meta is None:
                meta = {
                    "format": FORMAT,
                    "format_version": FORMAT_VERSION,
                    "kuoro_version": __version__,
                    **wanted,
                    "chunk_size": int(chunk_size),
                    "score_dtype": "float32",
                    "documents": 0,
                    "chunks": 0,
                    "prior_chunks": 0,
                    "complete": False,
                }
                put_growing(env, {META_KEY: _dump_meta(meta)})
            else:
                differs = [key for key, value in wanted.items() if meta[key] != value]
                if differs:
                    raise StoreError(
                        f"the store at {path} was built with other {', '.join(differs)}; "
                        "remove it or write the new store elsewhere"
                    )
                if meta["complete"]:
                    raise StoreError(f"the store at {path} is complete already; open it to read")
        except BaseException:
            env.close()
            raise
        return cls(path, env, meta, writable=True)

    @classmethod
    def open(cls, path: str | Path, readonly: bool = True) -> SuggestionStore:
        """The existing store at ``path``; ``readonly=False`` allows appending to it."""
        path = Path(path)
        if not (path / "data.mdb").is_file():
            raise StoreError(f"no suggestion store at {path}")
        env = open_env(path, readonly=readonly, map_size=_INITIAL_MAP_SIZE)
        try:
            meta = _read_meta(env, path, required=True)
            assert meta is not None
            if not readonly and meta["complete"]:
                raise StoreError(f"the store at {path} is complete already; open it to read")
        except BaseException:
            env.close()
            raise
        return cls(path, env, meta, writable=not readonly)

    def close(self) -> None:
        """Write buffered documents (when writing) and close the store."""
        self._close(flush=True)

    def hold(self, release: Callable[[], None]) -> None:
        """Call ``release`` when the store is closed (e.g. to release a lock on it)."""
        self._on_close.append(release)

    def _close(self, *, flush: bool) -> None:
        if self._env is None:
            return
        try:
            if flush and self._writable and not self.complete:
                self.flush()
        finally:
            self._env.close()
            self._env = None
            while self._on_close:
                self._on_close.pop()()

    @property
    def _live_env(self) -> lmdb.Environment:
        if self._env is None:
            raise StoreError(f"the store at {self.path} is closed")
        return self._env

    def __enter__(self) -> SuggestionStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # After an error the buffered documents are dropped: a resumed build redoes them.
        self._close(flush=exc_type is None)

    # -- properties ------------------------------------------------------------------------

    @property
    def source_names(self) -> tuple[str, ...]:
        return tuple(self._meta["source_names"])

    @property
    def vocab_size(self) -> int:
        return int(self._meta["vocab_size"])

    @property
    def top_k(self) -> int:
        return int(self._meta["top_k"])

    @property
    def chunk_size(self) -> int:
        return int(self._meta["chunk_size"])

    @property
    def fingerprints(self) -> dict[str, str]:
        return dict(self._meta["fingerprints"])

    @property
    def complete(self) -> bool:
        """Whether the whole corpus was written (:meth:`mark_complete`)."""
        return bool(self._meta["complete"])

    def __len__(self) -> int:
        """The number of documents committed (buffered ones not counted)."""
        return int(self._meta["documents"])

    def __repr__(self) -> str:
        state = "complete" if self.complete else "incomplete"
        return f"SuggestionStore({str(self.path)!r}, {len(self)} documents, {state})"

    # -- writing ---------------------------------------------------------------------------

    def append(
        self, gold: Sequence[Sequence[int]] | Sequence[np.ndarray], sources: Sequence[sp.spmatrix]
    ) -> None:
        """Add documents: their gold concept ids and one (documents × V) row block per source.

        A chunk is committed whenever ``chunk_size`` documents are buffered.
        """
        self._require_writable()
        batch = self._validated(gold, sources)
        if not len(batch):
            return
        self._pending.append(batch)
        buffered = sum(len(b) for b in self._pending)
        if buffered < self.chunk_size:
            return
        pool = _vstack(self._pending)
        start = 0
        while len(pool) - start >= self.chunk_size:
            self._write_chunk(_slice(pool, start, start + self.chunk_size))
            start += self.chunk_size
        self._pending = [_slice(pool, start, len(pool))] if start < len(pool) else []

    def flush(self) -> None:
        """Commit the buffered documents as a (possibly short) chunk."""
        self._require_writable()
        if self._pending:
            pool = _vstack(self._pending)
            self._pending = []
            self._write_chunk(pool)

    def mark_complete(self) -> None:
        """Flush and record that the whole corpus is in the store."""
        self.flush()
        assert self._prior_counts is not None
        meta = {**self._meta, "complete": True, "prior_chunks": self._meta["chunks"]}
        self._commit({PRIOR_KEY: encode_prior(self._prior_counts)}, meta)

    def _commit(self, items: Mapping[bytes, bytes], meta: dict[str, Any]) -> None:
        """Write ``items`` and ``meta`` in one transaction, if no other writer came between."""
        blob = _dump_meta(meta)
        put_growing(self._live_env, {**items, META_KEY: blob}, expected_meta=self._meta_blob)
        self._meta, self._meta_blob = meta, blob

    def _require_writable(self) -> None:
        _ = self._live_env  # raises when closed
        if not self._writable:
            raise StoreError(f"the store at {self.path} is open for reading only")
        if self.complete:
            raise StoreError(f"the store at {self.path} is complete; nothing can be added")

    def _validated(
        self, gold: Sequence[Sequence[int]] | Sequence[np.ndarray], sources: Sequence[sp.spmatrix]
    ) -> StoreBatch:
        n, v = len(gold), self.vocab_size
        if len(sources) != len(self.source_names):
            raise ValueError(f"{len(sources)} source blocks for {len(self.source_names)} sources")
        rows = []
        for name, block in zip(self.source_names, sources, strict=True):
            matrix = sp.csr_matrix(block, dtype=np.float32)
            if matrix.shape != (n, v):
                raise ValueError(f"source '{name}': shape {matrix.shape}, expected {(n, v)}")
            if not matrix.has_canonical_format:
                matrix = matrix.copy()
                matrix.sum_duplicates()
            if n and int(np.diff(matrix.indptr).max()) > self.top_k:
                raise ValueError(f"source '{name}': a row holds more than top_k={self.top_k}")
            rows.append(matrix)
        return StoreBatch(np.arange(n, dtype=np.int64), _gold_matrix(gold, v), tuple(rows))

    def _write_chunk(self, batch: StoreBatch) -> None:
        number = int(self._meta["chunks"])
        first = int(self._meta["documents"])
        blob = encode_chunk(first, batch.gold, batch.sources)
        assert self._prior_counts is not None
        prior = self._prior_counts.copy()  # kept only once committed
        np.add.at(prior, batch.gold.indices, 1)
        meta = {**self._meta, "documents": first + len(batch), "chunks": number + 1}
        sizes = np.append(self._chunk_docs, len(batch))
        items = {chunk_key(number): blob, INDEX_KEY: sizes.astype("<u4").tobytes()}
        if (number + 1) % _PRIOR_EVERY == 0:
            items[PRIOR_KEY] = encode_prior(prior)
            meta["prior_chunks"] = number + 1
        self._commit(items, meta)
        self._prior_counts = prior
        self._touched()
        self._chunk_first = np.append(self._chunk_first, first)
        self._chunk_docs = sizes

    # -- reading ---------------------------------------------------------------------------

    def prior(self) -> np.ndarray:
        """(V,) int64: the number of committed documents having each concept as gold."""
        if self._prior_counts is not None:
            return self._prior_counts.astype(np.int64)
        return self._read_prior().astype(np.int64)

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        positions: np.ndarray | None = None,
    ) -> Iterator[StoreBatch]:
        """The committed documents in batches: in store order, or shuffled for training.

        Shuffling permutes the chunks, then the documents within windows of a few thousand
        documents, so memory is bounded whatever the store's size. ``positions`` restricts
        the documents read to those positions (e.g. a held-out split).
        """
        if batch_size < 1:
            raise ValueError("batch_size must be positive")
        rng = np.random.default_rng(seed)
        chunks = np.arange(len(self._chunk_first))
        wanted = None if positions is None else np.unique(np.asarray(positions, dtype=np.int64))
        if wanted is not None:
            if len(wanted) and (wanted[0] < 0 or wanted[-1] >= len(self)):
                raise ValueError(f"positions must lie in [0, {len(self)}): the documents stored")
            first, ends = self._chunk_first, self._chunk_first + self._chunk_docs
            lo, hi = np.searchsorted(wanted, first), np.searchsorted(wanted, ends)
            chunks = chunks[hi > lo]
        if shuffle:
            chunks = rng.permutation(chunks)
        window = max(1, _SHUFFLE_WINDOW // max(self.chunk_size, 1)) if shuffle else 1
        pending: list[StoreBatch] = []
        for start in range(0, len(chunks), window):
            pieces = [
                *pending,
                *(self._read_chunk(int(c), wanted) for c in chunks[start:][:window]),
            ]
            pool = _vstack(pieces)
            if shuffle:
                pool = _take(pool, rng.permutation(len(pool)))
            full = len(pool) - len(pool) % batch_size
            for begin in range(0, full, batch_size):
                yield _slice(pool, begin, begin + batch_size)
            pending = [_slice(pool, full, len(pool))] if full < len(pool) else []
        if pending:
            yield pending[0]

    def _read_chunk(self, number: int, wanted: np.ndarray | None) -> StoreBatch:
        blob = self._get(chunk_key(number))
        if blob is None:
            raise StoreError(f"the store at {self.path} lacks chunk {number}")
        batch = decode_chunk(blob, self.vocab_size, len(self.source_names))
        first = int(self._chunk_first[number])
        if len(batch) != self._chunk_docs[number] or (len(batch) and batch.positions[0] != first):
            raise StoreError(f"the store at {self.path} is damaged: chunk {number} misplaced")
        if wanted is None:
            return batch
        lo, hi = np.searchsorted(wanted, [first, first + len(batch)])
        return _take(batch, wanted[lo:hi] - first)

    def _get(self, key: bytes) -> bytes | None:
        with begin_read(self._live_env) as txn:
            view = txn.get(key)
            value = None if view is None else bytes(view)
        self._touched()
        return value

    def _touched(self) -> None:
        """Count a chunk read or written. The file pages LMDB's memory map touches stay in this
        process's resident set until unmapped (whole large folios on recent kernels), so an
        epoch would otherwise end with the whole file there: unmap them every few chunks."""
        self._touches += 1
        if self._touches % _RELEASE_EVERY == 0:
            release_mapped_pages(self.path / "data.mdb")

    def _read_prior(self) -> np.ndarray:
        """The stored prior plus the gold of the chunks committed since it was written."""
        blob = self._get(PRIOR_KEY)
        counts = np.zeros(self.vocab_size, dtype=np.uint32)
        if blob is not None:
            ids, values = decode_prior(blob)
            counts[ids] = values
        for number in range(int(self._meta["prior_chunks"]), len(self._chunk_docs)):
            np.add.at(counts, self._read_chunk(number, None).gold.indices, 1)
        return counts

    def _read_chunk_index(self) -> tuple[np.ndarray, np.ndarray]:
        """Each committed chunk's first document position and its number of documents."""
        blob = self._get(INDEX_KEY)
        sizes = np.frombuffer(blob or b"", dtype="<u4").astype(np.int64)
        if len(sizes) != self._meta["chunks"] or int(sizes.sum()) != self._meta["documents"]:
            raise StoreError(f"the store at {self.path} is damaged: chunks and meta disagree")
        firsts = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.int64)
        return firsts, sizes


# -- batches -------------------------------------------------------------------------------


def _vstack(batches: Sequence[StoreBatch]) -> StoreBatch:
    if len(batches) == 1:
        return batches[0]
    return StoreBatch(
        np.concatenate([b.positions for b in batches]),
        sp.vstack([b.gold for b in batches], format="csr"),
        tuple(
            sp.vstack(list(blocks), format="csr")
            for blocks in zip(*(b.sources for b in batches), strict=True)
        ),
    )


def _slice(batch: StoreBatch, start: int, end: int) -> StoreBatch:
    return StoreBatch(
        batch.positions[start:end],
        batch.gold[start:end],
        tuple(m[start:end] for m in batch.sources),
    )


def _take(batch: StoreBatch, rows: np.ndarray) -> StoreBatch:
    return StoreBatch(
        batch.positions[rows], batch.gold[rows], tuple(m[rows] for m in batch.sources)
    )


def _gold_matrix(
    gold: Sequence[Sequence[int]] | Sequence[np.ndarray], n_cols: int
) -> sp.csr_matrix:
    """One row of 1.0 per document at its gold ids, sorted and without repeats."""
    lengths = np.fromiter((len(g) for g in gold), dtype=np.int64, count=len(gold))
    flat = [np.asarray(g, dtype=np.int64).ravel() for g in gold]
    ids = np.concatenate(flat) if flat else np.zeros(0, dtype=np.int64)
    if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= n_cols):
        raise ValueError(f"a gold concept id is outside the vocabulary of {n_cols} concepts")
    rows = np.repeat(np.arange(len(gold)), lengths)
    order = np.lexsort((ids, rows))
    ids, rows = ids[order], rows[order]
    keep = np.ones(len(ids), dtype=bool)
    keep[1:] = (ids[1:] != ids[:-1]) | (rows[1:] != rows[:-1])
    indptr = np.zeros(len(gold) + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows[keep], minlength=len(gold)), out=indptr[1:])
    kept = ids[keep].astype(np.int32)
    return sorted_csr(np.ones(len(kept), dtype=np.float32), kept, indptr, n_cols)


# -- meta ----------------------------------------------------------------------------------


def _dump_meta(meta: Mapping[str, Any]) -> bytes:
    return json.dumps(meta, sort_keys=True).encode("utf-8")


def _read_meta(env: lmdb.Environment, path: Path, *, required: bool) -> dict[str, Any] | None:
    with begin_read(env) as txn:
        view = txn.get(META_KEY)
        raw = None if view is None else bytes(view)
    if raw is None:
        if required:
            raise StoreError(f"{path} is not a suggestion store (no meta record)")
        return None
    meta: dict[str, Any] = json.loads(raw)
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise StoreError(
            f"{path} is not a suggestion store of format version {FORMAT_VERSION}; rebuild it"
        )
    return meta
