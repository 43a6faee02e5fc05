"""SuggestionStore: every source's top-K rows and the gold subjects of the training documents.

Running the sources over the training corpus is the slowest step of fusion training, so its
output is kept in an LMDB environment (a directory) and reused. Keys:

* ``meta``: JSON: format name and version, source names, vocabulary size, top_k, chunk size,
  fingerprints (of the vocabulary, each source's model and the corpus), documents committed,
  chunks committed and the ``complete`` flag;
* ``prior``: the number of documents that have each concept as gold (layout below), for
  the first ``prior_chunks`` chunks (meta): all of them once complete, else a multiple of 64;
* ``index``: the number of documents of each chunk, u32 per chunk (little-endian);
* ``c`` + chunk number (big-endian u64): one chunk of consecutive documents.

Each chunk is committed in its own write transaction with ``meta`` and ``index``, so a
writer killed at any moment leaves a store holding exactly the chunks committed before, which
opens and can be resumed. The LMDB map doubles whenever it is full; no user ever sizes it.

Chunk layout (little-endian). A 24-byte header, never compressed::

    magic b"KSSC" | u16 layout version (1) | u16 flags (bit 0: body zlib-compressed)
    u64 position of the chunk's first document | u32 documents n | u32 sources S

then the body (zlib level 1 when that makes it smaller, which it does for real data)::

    gold counts u32[n] | gold ids u32[sum]
    for each source: counts u32[n] | ids u32[nnz] | scores f32[nnz]

Concept ids are sorted within each document and stored as differences from the previous id of
the same document (the first as is). Every array is stored byte-plane transposed (all first
bytes, then all second bytes, ...): the high bytes of small differences are mostly zero, which
zlib then packs well. Scores are stored as float32, exactly as the sources gave them: measured
on kirjastonhoitaja with the real sources (2 or 4 of them), float16 or 16-bit fixed point
reordered the top 10 of 0.5–4% of the documents' source-mean rankings (and with 2 sources
changed ranking metrics in the 4th decimal), while float32 costs 1.7–1.9 bytes per (source,
candidate) pair more after compression: 5.2 bytes per pair in all for 4 sources at V=456k,
within the 8 allowed (``benchmarks/store.py`` prints both comparisons).

The ``prior`` value is the same kind of body: nonzero concept ids (as differences) u32[m] and
their counts u32[m], byte-plane transposed, zlib-compressed.
"""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import struct
import sys
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import lmdb
import numpy as np
import scipy.sparse as sp

from kuoro.errors import KuoroError
from kuoro.util.version import __version__

__all__ = ["StoreBatch", "StoreError", "SuggestionStore"]

FORMAT = "kuoro-suggestion-store"
FORMAT_VERSION = 1
_META = b"meta"
_PRIOR = b"prior"
_INDEX = b"index"
_CHUNK_PREFIX = b"c"
_HEADER = struct.Struct("<4sHHQII")
_MAGIC = b"KSSC"
_LAYOUT_VERSION = 1
_ZLIB = 1
_INITIAL_MAP_SIZE = 32 << 20
# Documents shuffled together when reading in random order: bounds memory whatever the store.
_SHUFFLE_WINDOW = 4096
# Chunks between rewrites of the prior, whose cost grows with the number of distinct gold
# concepts: a complete store's prior is whole, an incomplete one's is completed from its chunks.
_PRIOR_EVERY = 64
# Chunks read or written after which the store file's pages are unmapped again (see _touched).
_RELEASE_EVERY = 8


class StoreError(KuoroError):
    """A suggestion store is missing, damaged, or does not match what it is opened for."""


@dataclass(frozen=True)
class StoreBatch:
    """Consecutive or shuffled documents of a store, with their gold and source rows."""

    positions: np.ndarray  # (n,) int64: the documents' positions in the store (write order)
    gold: sp.csr_matrix  # (n × V) float32, 1.0 at each gold concept, sorted indices
    sources: tuple[sp.csr_matrix, ...]  # one (n × V) float32 CSR per source, sorted indices

    def __len__(self) -> int:
        return len(self.positions)


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
        env = _open_env(path, readonly=False, map_size=_map_size)
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
                _put_growing(env, {_META: _dump_meta(meta)})
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
        env = _open_env(path, readonly=readonly, map_size=_INITIAL_MAP_SIZE)
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
        self._commit({_PRIOR: _encode_prior(self._prior_counts)}, meta)

    def _commit(self, items: Mapping[bytes, bytes], meta: dict[str, Any]) -> None:
        """Write ``items`` and ``meta`` in one transaction, if no other writer came between."""
        blob = _dump_meta(meta)
        _put_growing(self._live_env, {**items, _META: blob}, expected_meta=self._meta_blob)
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
        items = {_chunk_key(number): blob, _INDEX: sizes.astype("<u4").tobytes()}
        if (number + 1) % _PRIOR_EVERY == 0:
            items[_PRIOR] = _encode_prior(prior)
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
        blob = self._get(_chunk_key(number))
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
        with _begin_read(self._live_env) as txn:
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
            _release_mapped_pages(self.path / "data.mdb")

    def _read_prior(self) -> np.ndarray:
        """The stored prior plus the gold of the chunks committed since it was written."""
        blob = self._get(_PRIOR)
        counts = np.zeros(self.vocab_size, dtype=np.uint32)
        if blob is not None:
            ids, values = _decode_prior(blob)
            counts[ids] = values
        for number in range(int(self._meta["prior_chunks"]), len(self._chunk_docs)):
            np.add.at(counts, self._read_chunk(number, None).gold.indices, 1)
        return counts

    def _read_chunk_index(self) -> tuple[np.ndarray, np.ndarray]:
        """Each committed chunk's first document position and its number of documents."""
        blob = self._get(_INDEX)
        sizes = np.frombuffer(blob or b"", dtype="<u4").astype(np.int64)
        if len(sizes) != self._meta["chunks"] or int(sizes.sum()) != self._meta["documents"]:
            raise StoreError(f"the store at {self.path} is damaged: chunks and meta disagree")
        firsts = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.int64)
        return firsts, sizes


# -- chunks --------------------------------------------------------------------------------


def encode_chunk(first: int, gold: sp.csr_matrix, sources: Sequence[sp.csr_matrix]) -> bytes:
    """The chunk blob of documents starting at position ``first`` (layout in the docstring)."""
    n = gold.shape[0]
    parts = [_planes(np.diff(gold.indptr), "<u4"), _planes(_row_deltas(gold), "<u4")]
    for matrix in sources:
        parts.append(_planes(np.diff(matrix.indptr), "<u4"))
        parts.append(_planes(_row_deltas(matrix), "<u4"))
        parts.append(_planes(matrix.data, "<f4"))
    body = b"".join(parts)
    packed = zlib.compress(body, 1)
    flags = _ZLIB if len(packed) < len(body) else 0
    header = _HEADER.pack(_MAGIC, _LAYOUT_VERSION, flags, first, n, len(sources))
    return header + (packed if flags & _ZLIB else body)


def decode_chunk(blob: bytes, vocab_size: int, n_sources: int) -> StoreBatch:
    """The documents of a chunk blob, checked against the store's vocabulary and sources."""
    first, n, flags = _read_header(blob[: _HEADER.size])
    try:
        body = zlib.decompress(blob[_HEADER.size :]) if flags & _ZLIB else blob[_HEADER.size :]
        reader = _Reader(body)
        gold = reader.matrix(n, vocab_size, scores=False)
        sources = tuple(reader.matrix(n, vocab_size, scores=True) for _ in range(n_sources))
        if reader.offset != len(body):
            raise ValueError("trailing bytes")
    except (zlib.error, ValueError) as exc:
        raise StoreError(f"damaged chunk at position {first}: {exc}") from exc
    positions = np.arange(first, first + n, dtype=np.int64)
    return StoreBatch(positions, gold, sources)


def _read_header(header: bytes) -> tuple[int, int, int]:
    if len(header) < _HEADER.size:
        raise StoreError("damaged chunk: truncated header")
    magic, version, flags, first, n, _ = _HEADER.unpack(header)
    if magic != _MAGIC or version != _LAYOUT_VERSION:
        raise StoreError(f"not a chunk of layout version {_LAYOUT_VERSION}")
    return int(first), int(n), int(flags)


class _Reader:
    """Reads the typed, byte-plane transposed arrays of a chunk body in order."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.offset = 0

    def array(self, count: int, dtype: str) -> np.ndarray:
        size = np.dtype(dtype).itemsize
        end = self.offset + count * size
        if end > len(self.body):
            raise ValueError("truncated body")
        planes = np.frombuffer(self.body, np.uint8, count * size, self.offset)
        self.offset = end
        return planes.reshape(size, count).T.copy().view(dtype).ravel()

    def matrix(self, n: int, vocab_size: int, *, scores: bool) -> sp.csr_matrix:
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(self.array(n, "<u4"), out=indptr[1:])
        nnz = int(indptr[-1])
        ids = _undelta(indptr, self.array(nnz, "<u4"))
        if nnz and (int(ids.max()) >= vocab_size or int(ids.min()) < 0):
            raise ValueError("concept id outside the vocabulary")
        data = self.array(nnz, "<f4") if scores else np.ones(nnz, dtype=np.float32)
        return _csr(data.astype(np.float32, copy=False), ids, indptr, vocab_size)


def _planes(values: np.ndarray, dtype: str) -> bytes:
    """The little-endian bytes of ``values`` as ``dtype``, byte planes transposed."""
    array = np.ascontiguousarray(values, dtype=dtype)
    return array.view(np.uint8).reshape(-1, array.itemsize).T.tobytes()


def _row_deltas(matrix: sp.csr_matrix) -> np.ndarray:
    """Each id minus the previous id of its row; a row's first id as is."""
    ids: np.ndarray = matrix.indices.astype(np.int64)
    deltas = ids.copy()
    deltas[1:] -= ids[:-1]
    starts = matrix.indptr[:-1][np.diff(matrix.indptr) > 0]
    deltas[starts] = ids[starts]
    return deltas


def _undelta(indptr: np.ndarray, deltas: np.ndarray) -> np.ndarray:
    running = np.cumsum(deltas, dtype=np.int64)
    # The running sum before each row's first entry, removed from the whole row.
    before = np.concatenate(([0], running))[indptr[:-1]]
    ids: np.ndarray = (running - np.repeat(before, np.diff(indptr))).astype(np.int32)
    return ids


def _csr(data: np.ndarray, ids: np.ndarray, indptr: np.ndarray, n_cols: int) -> sp.csr_matrix:
    matrix = sp.csr_matrix((data, ids, indptr), shape=(len(indptr) - 1, n_cols))
    matrix.has_sorted_indices = True
    return matrix


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
    return _csr(np.ones(len(kept), dtype=np.float32), kept, indptr, n_cols)


def _chunk_key(number: int) -> bytes:
    return _CHUNK_PREFIX + struct.pack(">Q", number)


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


# -- prior, meta and the LMDB environment --------------------------------------------------


def _encode_prior(counts: np.ndarray) -> bytes:
    ids = np.flatnonzero(counts)
    deltas = np.diff(ids, prepend=0)
    return zlib.compress(_planes(deltas, "<u4") + _planes(counts[ids], "<u4"), 1)


def _decode_prior(blob: bytes) -> tuple[np.ndarray, np.ndarray]:
    body = zlib.decompress(blob)
    reader = _Reader(body)
    m = len(body) // 8
    ids = np.cumsum(reader.array(m, "<u4"), dtype=np.int64)
    return ids, reader.array(m, "<u4")


def _dump_meta(meta: Mapping[str, Any]) -> bytes:
    return json.dumps(meta, sort_keys=True).encode("utf-8")


def _read_meta(env: lmdb.Environment, path: Path, *, required: bool) -> dict[str, Any] | None:
    with _begin_read(env) as txn:
        view = txn.get(_META)
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


# LMDB's meta pages (pages 0 and 1): after a 16-byte page header, the magic number, the
# page size (the free-page database's md_pad), the last page used and the transaction id.
_LMDB_MAGIC = 0xBEEFC0DE
_LMDB_MAGIC_AT, _LMDB_PAGE_SIZE_AT, _LMDB_LAST_PAGE_AT = 16, 40, 136


def check_data_file(data_file: Path) -> None:
    """Refuse an LMDB data file that is shorter than its own meta pages say (truncated, e.g.
    by a full disk or a bad copy): mapping it would kill the process with SIGBUS at the first
    read past its end."""
    try:
        size = data_file.stat().st_size
        with data_file.open("rb") as f:
            head = f.read(2 * 65536)
    except OSError as exc:
        raise StoreError(f"cannot read the suggestion store file {data_file}: {exc}") from exc
    rebuild = "rebuild it: run the training again with --no-cached"
    if len(head) < _LMDB_LAST_PAGE_AT + 16:
        raise StoreError(f"the suggestion store file {data_file} is truncated; {rebuild}")
    (magic,) = struct.unpack_from("<I", head, _LMDB_MAGIC_AT)
    (page_size,) = struct.unpack_from("<I", head, _LMDB_PAGE_SIZE_AT)
    if magic != _LMDB_MAGIC or page_size < 512 or page_size & (page_size - 1):
        raise StoreError(f"{data_file} is not an intact suggestion store file; {rebuild}")
    metas = [0, page_size] if len(head) >= page_size + _LMDB_LAST_PAGE_AT + 16 else [0]
    last_pages = []
    for offset in metas:
        (meta_magic,) = struct.unpack_from("<I", head, offset + _LMDB_MAGIC_AT)
        last_page, txn_id = struct.unpack_from("<QQ", head, offset + _LMDB_LAST_PAGE_AT)
        if meta_magic == _LMDB_MAGIC:
            last_pages.append((txn_id, last_page))
    # The meta page of the latest transaction says how far the file must reach.
    needed = (max(last_pages)[1] + 1) * page_size
    if size < needed:
        raise StoreError(
            f"the suggestion store file {data_file} is truncated ({size} bytes of {needed}); "
            f"{rebuild}"
        )


def _open_env(path: Path, *, readonly: bool, map_size: int) -> lmdb.Environment:
    data_file = path / "data.mdb"
    if data_file.exists():
        check_data_file(data_file)
    # LMDB maps at least the size recorded by the last writer; the file size covers the rest.
    size = max(map_size, data_file.stat().st_size if data_file.exists() else 0)
    if not readonly:
        path.mkdir(parents=True, exist_ok=True)
    try:
        return lmdb.open(
            os.fspath(path), map_size=size, readonly=readonly, max_dbs=0, meminit=False
        )
    except lmdb.Error as exc:
        raise StoreError(f"cannot open the suggestion store at {path}: {exc}") from exc


def _put_growing(
    env: lmdb.Environment, items: Mapping[bytes, bytes], *, expected_meta: bytes | None = None
) -> None:
    """Write ``items`` in one transaction, doubling the map until they fit. With
    ``expected_meta``, refuse to write unless the stored meta record is still that one."""
    while True:
        try:
            with env.begin(write=True) as txn:
                if expected_meta is not None and txn.get(_META) != expected_meta:
                    raise StoreError(
                        f"the store at {env.path()} was written by another writer meanwhile"
                    )
                for key, value in items.items():
                    txn.put(key, value)
            return
        except lmdb.MapFullError:
            # The failed transaction is aborted; nothing of it was written.
            env.set_mapsize(env.info()["map_size"] * 2)
        except lmdb.Error as exc:  # e.g. the disk is full
            raise StoreError(f"cannot write the suggestion store at {env.path()}: {exc}") from exc


def _begin_read(env: lmdb.Environment) -> lmdb.Transaction[memoryview]:
    """A read transaction whose values are views into the map, valid until it ends; it adopts
    a map grown by a writer in another process."""
    try:
        return env.begin(buffers=True)
    except lmdb.MapResizedError:
        env.set_mapsize(0)
        return env.begin(buffers=True)


def _find_madvise() -> Any:
    if not sys.platform.startswith("linux") or not hasattr(mmap, "MADV_DONTNEED"):
        return None
    madvise = ctypes.CDLL(None, use_errno=True).madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    return madvise


_MADVISE = _find_madvise()


def _release_mapped_pages(data_file: Path) -> None:
    """Drop this process's mapping of the store file's pages (Linux); they stay in the page
    cache and a later read maps them again. Harmless to concurrent readers."""
    if _MADVISE is None:
        return
    try:
        inode = data_file.stat().st_ino
        maps = Path("/proc/self/maps").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[4] == str(inode) and fields[5].endswith("data.mdb"):
            start, end = (int(x, 16) for x in fields[0].split("-"))
            _MADVISE(start, end - start, mmap.MADV_DONTNEED)
