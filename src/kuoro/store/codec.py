"""The suggestion store's format: its records, and the chunk and prior blobs, encoded and decoded.

The store is an LMDB environment (a directory). Keys:

* ``meta``: JSON: format name and version, source names, vocabulary size, top_k, chunk size,
  fingerprints (of the vocabulary, each source's model and the corpus), documents committed,
  chunks committed and the ``complete`` flag;
* ``prior``: the number of documents that have each concept as gold (layout below), for
  the first ``prior_chunks`` chunks (meta): all of them once complete, else a multiple of 64;
* ``index``: the number of documents of each chunk, u32 per chunk (little-endian);
* ``c`` + chunk number (big-endian u64): one chunk of consecutive documents.

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

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from kuoro.errors import KuoroError

FORMAT = "kuoro-suggestion-store"
FORMAT_VERSION = 1
META_KEY = b"meta"
PRIOR_KEY = b"prior"
INDEX_KEY = b"index"
_CHUNK_PREFIX = b"c"
_HEADER = struct.Struct("<4sHHQII")
_MAGIC = b"KSSC"
_LAYOUT_VERSION = 1
_ZLIB = 1


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


def chunk_key(number: int) -> bytes:
    """The key of chunk ``number``."""
    return _CHUNK_PREFIX + struct.pack(">Q", number)


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
        return sorted_csr(data.astype(np.float32, copy=False), ids, indptr, vocab_size)


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


def sorted_csr(data: np.ndarray, ids: np.ndarray, indptr: np.ndarray, n_cols: int) -> sp.csr_matrix:
    """A CSR matrix of arrays whose ids are sorted within each row, marked as such."""
    matrix = sp.csr_matrix((data, ids, indptr), shape=(len(indptr) - 1, n_cols))
    matrix.has_sorted_indices = True
    return matrix


# -- the prior -----------------------------------------------------------------------------


def encode_prior(counts: np.ndarray) -> bytes:
    """The ``prior`` blob of the gold counts of every concept (layout in the docstring)."""
    ids = np.flatnonzero(counts)
    deltas = np.diff(ids, prepend=0)
    return zlib.compress(_planes(deltas, "<u4") + _planes(counts[ids], "<u4"), 1)


def decode_prior(blob: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The concept ids of a ``prior`` blob that have gold documents, and their counts."""
    body = zlib.decompress(blob)
    reader = _Reader(body)
    m = len(body) // 8
    ids = np.cumsum(reader.array(m, "<u4"), dtype=np.int64)
    return ids, reader.array(m, "<u4")
