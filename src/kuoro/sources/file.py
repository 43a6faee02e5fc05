"""Precomputed suggestions from any external system, read from a TSV file.

The file has one suggestion per line, ``document_id<TAB>uri<TAB>score`` (the URI bare or in
angle brackets; plain or gzipped). ``fit`` reads it once and keeps a self-contained copy, so
the trained model does not depend on the file staying where it was. ``suggest`` looks documents
up by id and never looks at the texts. For corpora without document ids (short-text TSV), the
caller passes a document's 1-based position in the corpus as its id, as a string: "1", "2", ...
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, ClassVar

import numpy as np
import scipy.sparse as sp

from kuoro.analyzers import Analyzer
from kuoro.corpus.documents import Document
from kuoro.errors import ModelError, SourceError
from kuoro.sources.base import Source
from kuoro.util.wording import plural
from kuoro.vocab.vocabulary import Vocabulary

log = logging.getLogger("kuoro.sources.file")

_STATE_JSON = "file-source.json"
_STATE_NPZ = "suggestions.npz"
_FORMAT = "kuoro-file-source"
_FORMAT_VERSION = 1
# Bad lines are reported one by one up to this many, then only counted.
_MAX_REPORTED_LINES = 10


class FileSource(Source):
    """Suggestions that another system computed, looked up by document id."""

    backend: ClassVar[str] = "file"
    # "Training" reads the file once into the model, so that the model is self-contained.
    needs_training: ClassVar[bool] = True

    def __init__(
        self,
        vocabulary: Vocabulary,
        analyzer: Analyzer,
        *,
        top_k: int = 100,
        path: str | None = None,
    ) -> None:
        super().__init__(vocabulary, analyzer, top_k=top_k)
        self.path = path

    # -- reading the file ------------------------------------------------------------------

    def fit(
        self, corpus: Iterable[Document], *, jobs: int = 1, progress: bool = False
    ) -> FileSource:
        """Read the suggestions file (the corpus is not needed: the file has everything)."""
        if not self.path:
            raise SourceError("file source: parameter 'path' is required")
        path = Path(self.path)
        if not path.is_file():
            raise SourceError(f"file source: {path}: no such file")
        try:
            with _open_text(path) as lines:
                ids, matrix = self._read(path, lines, progress)
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise SourceError(f"file source: cannot read {path}: {exc}") from exc
        self.document_ids_ = ids
        self.matrix_ = matrix
        self._index = {doc_id: row for row, doc_id in enumerate(ids)}
        log.info("%s: %d suggestions for %d documents", path, matrix.nnz, len(ids))
        return self

    def _read(self, path: Path, lines: IO[str], progress: bool) -> tuple[list[str], sp.csr_matrix]:
        rows: dict[str, int] = {}
        chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        # Filled as lists, moved into compact arrays every million suggestions.
        doc_rows: list[int] = []
        concepts: list[int] = []
        scores: list[float] = []
        bad = 0
        unknown: dict[str, int] = {}
        read = non_positive = 0
        for lineno, line in _numbered(lines, progress, path):
            fields = [f.strip() for f in line.rstrip("\r\n").split("\t")]
            if fields == [""]:
                continue
            problem = _check_fields(fields)
            if problem == "header" and lineno == 1:
                continue
            read += 1
            if problem:
                bad += 1
                if bad <= _MAX_REPORTED_LINES:
                    log.warning("%s:%d: %s, line skipped", path, lineno, problem)
                continue
            doc_id, uri, score_text = fields
            # Registered even if none of its suggestions is usable: it is in the file.
            row = rows.setdefault(doc_id, len(rows))
            concept = self.vocabulary.id_of(uri)
            if concept is None:
                unknown[uri] = unknown.get(uri, 0) + 1
                continue
            score = float(score_text)
            if score <= 0.0:
                non_positive += 1
                continue
            doc_rows.append(row)
            concepts.append(concept)
            scores.append(score)
            if len(doc_rows) >= 1 << 20:
                chunks.append(_as_arrays(doc_rows, concepts, scores))
                doc_rows, concepts, scores = [], [], []
        chunks.append(_as_arrays(doc_rows, concepts, scores))
        if bad > _MAX_REPORTED_LINES:
            log.warning("%s: %d bad lines skipped in all", path, bad)
        if unknown:
            example = next(iter(unknown))
            log.warning(
                "%s: %d suggestions of %d URIs not in vocabulary '%s' skipped (e.g. %s)",
                path,
                sum(unknown.values()),
                len(unknown),
                self.vocabulary.name,
                example,
            )
        self.skipped_ = {"bad_lines": bad, "unknown_uri_suggestions": sum(unknown.values())}
        if not any(len(chunk[0]) for chunk in chunks):
            raise SourceError(
                f"file source: {path}: no usable suggestion in {read} lines ({bad} malformed, "
                f"{sum(unknown.values())} with a URI not in vocabulary '{self.vocabulary.name}', "
                f"{non_positive} with a score of 0 or less); each line must be "
                "document_id<TAB>URI<TAB>score"
            )
        all_rows, all_concepts, all_scores = (np.concatenate(c) for c in zip(*chunks, strict=True))
        matrix = _top_k_csr(
            all_rows, all_concepts, all_scores, len(rows), len(self.vocabulary), self.top_k
        )
        return list(rows), matrix

    # -- suggesting ------------------------------------------------------------------------

    def suggest(
        self, texts: Sequence[str], document_ids: Sequence[str | None] | None = None
    ) -> sp.csr_matrix:
        """The file's suggestions for each document id; texts themselves are not looked at."""
        self._check_fitted()
        n_columns = len(self.vocabulary)
        if document_ids is None:
            document_ids = [None] * len(texts)
        elif len(document_ids) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(document_ids)} document ids")
        found = [self._index.get(doc_id) if doc_id is not None else None for doc_id in document_ids]
        missing = sum(row is None for row in found)
        if missing:
            log.warning(
                "file source: %d of %s have no id or an id not in %s; they get no suggestions",
                missing,
                plural(len(texts), "document"),
                self.path,
            )
        present = [i for i, row in enumerate(found) if row is not None]
        picked = self.matrix_[[found[i] for i in present]]
        counts = np.zeros(len(texts), np.int64)
        counts[present] = np.diff(picked.indptr)
        indptr = np.concatenate(([0], np.cumsum(counts)))
        # The vocabulary may have grown since fit; its new concepts are empty columns here.
        result = sp.csr_matrix(
            (picked.data.astype(np.float32), picked.indices, indptr),
            shape=(len(texts), n_columns),
        )
        return _limit_rows(result, self.top_k)

    def _check_fitted(self) -> None:
        if not hasattr(self, "matrix_"):
            raise SourceError("file source: not trained; fit() or load_state() first")

    # -- state -----------------------------------------------------------------------------

    def save_state(self, directory: Path) -> None:
        self._check_fitted()
        ids = "\n".join(self.document_ids_).encode("utf-8")
        matrix = self.matrix_
        with (directory / _STATE_NPZ).open("wb") as out:
            np.savez_compressed(
                out,
                document_ids=np.frombuffer(ids, dtype=np.uint8),
                indptr=matrix.indptr.astype(np.int64),
                indices=matrix.indices.astype(np.int32),
                data=matrix.data.astype(np.float32),
            )
        meta = {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "path": self.path,
            "documents": len(self.document_ids_),
            "suggestions": int(matrix.nnz),
            "columns": int(matrix.shape[1]),
        }
        (directory / _STATE_JSON).write_text(json.dumps(meta, indent=2), encoding="utf-8")

    def load_state(self, directory: Path) -> None:
        meta_path, npz_path = directory / _STATE_JSON, directory / _STATE_NPZ
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelError(f"file source: model file {meta_path} is damaged ({exc})") from exc
        if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
            raise ModelError(f"file source: model file {meta_path} is damaged (not {_FORMAT})")
        if meta.get("format_version") != _FORMAT_VERSION:
            raise ModelError(
                f"file source: {meta_path} has format version {meta.get('format_version')}, "
                f"this Kuoro reads {_FORMAT_VERSION}; retrain the project"
            )
        try:
            with np.load(npz_path, allow_pickle=False) as npz:
                raw_ids = npz["document_ids"].tobytes().decode("utf-8")
                indptr, indices, data = npz["indptr"], npz["indices"], npz["data"]
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
            raise ModelError(
                f"file source: model file {npz_path} is damaged ({exc}); retrain the project"
            ) from exc
        ids = raw_ids.split("\n") if raw_ids else []
        n_columns = len(self.vocabulary)
        problem = _check_csr(indptr, indices, data, len(ids), n_columns)
        if problem or len(ids) != meta.get("documents"):
            raise ModelError(
                f"file source: model file {npz_path} is damaged "
                f"({problem or 'document count differs from ' + str(meta_path)}); "
                "retrain the project"
            )
        self.document_ids_ = ids
        self.matrix_ = sp.csr_matrix((data, indices, indptr), shape=(len(ids), n_columns))
        self._index = {doc_id: row for row, doc_id in enumerate(ids)}


def _open_text(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", errors="surrogateescape", newline="")
    return path.open(encoding="utf-8", errors="surrogateescape", newline="")


def _numbered(lines: IO[str], progress: bool, path: Path) -> Iterator[tuple[int, str]]:
    if not progress:
        yield from enumerate(lines, start=1)
        return
    from tqdm import tqdm

    with tqdm(desc=f"reading {path.name}", unit=" lines", unit_scale=True) as bar:
        for item in enumerate(lines, start=1):
            yield item
            bar.update()


def _check_fields(fields: list[str]) -> str:
    """What is wrong with a line's fields, "header" for a header line, or ""."""
    if len(fields) != 3:
        return f"expected 3 tab-separated fields (document id, URI, score), found {len(fields)}"
    doc_id, uri, score = fields
    if [doc_id.lower(), score.lower()] == ["document_id", "score"]:
        return "header"
    if not doc_id or not uri:
        return "empty document id or URI"
    if any("\udc80" <= ch <= "\udcff" for ch in doc_id + uri):
        return "not valid UTF-8"
    try:
        value = float(score)
    except ValueError:
        return f"score {score!r} is not a number"
    if not math.isfinite(value):
        return f"score {score!r} is not a finite number"
    return ""


def _as_arrays(
    r: list[int], c: list[int], s: list[float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.asarray(r, np.int32), np.asarray(c, np.int32), np.asarray(s, np.float32)


def _top_k_csr(
    row: np.ndarray, col: np.ndarray, score: np.ndarray, n_rows: int, n_cols: int, k: int
) -> sp.csr_matrix:
    """Each row's ``k`` best scores, clipped to 1; a concept given twice keeps its best score."""
    order = np.lexsort((-score, col, row))
    row, col, score = row[order], col[order], score[order]
    first = np.ones(len(row), bool)
    first[1:] = (row[1:] != row[:-1]) | (col[1:] != col[:-1])
    row, col, score = row[first], col[first], np.minimum(score[first], 1.0)
    matrix = sp.csr_matrix((score, (row, col)), shape=(n_rows, n_cols), dtype=np.float32)
    return _limit_rows(matrix, k)


def _limit_rows(matrix: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Drop all but each row's ``k`` highest entries (a no-op where rows are short enough)."""
    counts = np.diff(matrix.indptr)
    if counts.size == 0 or counts.max() <= k:
        return matrix
    row = np.repeat(np.arange(matrix.shape[0]), counts)
    order = np.lexsort((-matrix.data, row))
    rank = np.arange(len(order)) - np.repeat(matrix.indptr[:-1], counts)
    keep = order[rank < k]
    limited = sp.csr_matrix(
        (matrix.data[keep], (row[keep], matrix.indices[keep])),
        shape=matrix.shape,
        dtype=np.float32,
    )
    limited.sort_indices()
    return limited


def _check_csr(
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, n_rows: int, n_cols: int
) -> str:
    """What makes these arrays an invalid suggestion matrix, or ""."""
    if indptr.ndim != 1 or len(indptr) != n_rows + 1 or indptr[0] != 0:
        return "row pointers do not match the document ids"
    if np.any(np.diff(indptr) < 0) or indptr[-1] != len(indices) or len(data) != len(indices):
        return "row pointers are inconsistent"
    if len(indices) and (indices.min() < 0 or indices.max() >= n_cols):
        return f"concept ids outside the vocabulary of {n_cols} concepts"
    if not np.all(np.isfinite(data)) or np.any(data < 0) or np.any(data > 1):
        return "scores outside [0, 1]"
    return ""
