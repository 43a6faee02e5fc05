"""The fastText source: a linear classifier over the analyzer's tokens (and word n-grams).

Training streams the corpus into a temporary fastText input file (``__label__<concept id>``
labels, then the tokens), so memory stays at the size of the model, not of the corpus.

Suggesting splits a text into chunks of ``chunk_size`` tokens and averages their predictions.
Models trained on titles do much better that way on long documents than when the whole text
is averaged into one vector (nDCG@10 on kirjastonhoitaja/validate, trained on all finna
titles: whole text .18, chunks of 3 tokens .26, single tokens .30), and even on held-out
titles (300k training titles: .17 whole, .21 single tokens). Word n-grams only play a part
in suggesting when chunks are longer than one token (``chunk_size`` 0 or above 1).
"""

from __future__ import annotations

import json
import multiprocessing
import tempfile
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from tqdm import tqdm

from kuoro.analyzers import Analyzer
from kuoro.corpus.documents import Document
from kuoro.errors import ModelError, SourceError
from kuoro.sources.base import Source
from kuoro.util.hashing import file_sha256
from kuoro.vocab.vocabulary import Vocabulary

_LABEL = "__label__"
_MODEL_FILE = "model.bin"
_CHECK_FILE = "fasttext.json"
_BATCH = 1024
# Labels kept per chunk when texts are split: deeper ones barely move the average (nDCG@10 on
# kirjastonhoitaja/validate .235 with 30, .236 with 100) but make prediction 1.6 times slower.
_CHUNK_TOP_K = 30


class FasttextSource(Source):
    """fastText supervised classification; one fastText label per concept id."""

    backend = "fasttext"

    def __init__(
        self,
        vocabulary: Vocabulary,
        analyzer: Analyzer,
        *,
        top_k: int = 100,
        loss: str = "hs",
        dim: int = 100,
        lr: float = 0.25,
        epoch: int = 15,
        word_ngrams: int = 1,
        min_count: int = 1,
        chunk_size: int = 1,
    ) -> None:
        super().__init__(vocabulary, analyzer, top_k=top_k)
        self.loss = loss
        self.dim = dim
        self.lr = lr
        self.epoch = epoch
        self.word_ngrams = word_ngrams
        self.min_count = min_count
        self.chunk_size = chunk_size
        self.model_: Any = None
        self._label_ids: dict[str, int] = {}
        self._n_labels = 0

    def library_versions(self) -> dict[str, str]:
        from importlib.metadata import version

        return {"fasttext": version("fasttext")}

    def fit(
        self, corpus: Iterable[Document], *, jobs: int = 1, progress: bool = False
    ) -> FasttextSource:
        import fasttext

        with tempfile.TemporaryDirectory(prefix="kuoro-fasttext-") as tmp:
            train_file = Path(tmp) / "train.txt"
            written = self._write_training_file(corpus, train_file, progress)
            if not written:
                raise SourceError("fasttext: no training document has both text and subjects")
            settings = self.training_settings(train_file, jobs)
            model_file = Path(tmp) / "model.bin"
            # fastText 0.9.3 frees state that training shares between models when any model
            # object is destroyed; every later training in that process then diverges to NaN.
            # A fresh process per training is immune; loading and predicting are unaffected.
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                try:
                    pool.submit(_train_to_file, settings, str(model_file)).result()
                except (RuntimeError, ValueError, MemoryError) as exc:
                    # Divergence shows as NaN; fastText's own advice is a lower learning rate.
                    hint = f"; try a lower lr than {self.lr}" if "NaN" in str(exc) else ""
                    raise SourceError(f"fasttext: training failed: {exc}{hint}") from exc
            self.model_ = fasttext.load_model(str(model_file))
        self._index_labels()
        return self

    def training_settings(self, train_file: Path, jobs: int) -> dict[str, Any]:
        """The arguments of ``fasttext.train_supervised`` for this source's parameters."""
        return {
            "input": str(train_file),
            "loss": self.loss,
            "dim": self.dim,
            "lr": self.lr,
            "epoch": self.epoch,
            "wordNgrams": self.word_ngrams,
            "minCount": self.min_count,
            "thread": max(1, jobs),
            "verbose": 0,
        }

    def _write_training_file(self, corpus: Iterable[Document], path: Path, progress: bool) -> int:
        """Write one fastText line per usable document; return how many were written."""
        written = 0
        with path.open("w", encoding="utf-8") as out:
            documents = tqdm(corpus, desc="fasttext: reading", unit=" doc", disable=not progress)
            for document in documents:
                tokens = self.analyzer.tokens(document.text)
                if not tokens or not document.subjects:
                    continue
                labels = " ".join(f"{_LABEL}{s}" for s in document.subjects)
                out.write(f"{labels} {' '.join(tokens)}\n")
                written += 1
        return written

    def _index_labels(self) -> None:
        """Map fastText's label strings to concept ids, dropping any the vocabulary lacks."""
        size = len(self.vocabulary)
        self._label_ids = {}
        labels = self.model_.get_labels()
        self._n_labels = len(labels)
        for label in labels:
            text = str(label)
            suffix = text.removeprefix(_LABEL)
            concept = int(suffix) if suffix.isdigit() else size
            if concept < size and not self.vocabulary.deprecated[concept]:
                self._label_ids[text] = concept

    def suggest(
        self, texts: Sequence[str], document_ids: Sequence[str | None] | None = None
    ) -> sp.csr_matrix:
        if self.model_ is None:
            raise SourceError("fasttext: the source is not trained")
        blocks = [
            self._suggest_batch(texts[start : start + _BATCH])
            for start in range(0, len(texts), _BATCH)
        ]
        if not blocks:
            return sp.csr_matrix((0, len(self.vocabulary)), dtype=np.float32)
        return sp.csr_matrix(sp.vstack(blocks, format="csr"), dtype=np.float32)

    def _suggest_batch(self, texts: Sequence[str]) -> sp.csr_matrix:
        """Average the predictions for each text's chunks; a chunk seen twice is predicted once."""
        chunk_ids: dict[str, int] = {}
        weights: list[dict[int, float]] = []
        for text in texts:
            tokens = self.analyzer.tokens(text)
            step = self.chunk_size or max(len(tokens), 1)
            chunks = [" ".join(tokens[i : i + step]) for i in range(0, len(tokens), step)]
            row: dict[int, float] = {}
            for chunk in chunks:
                column = chunk_ids.setdefault(chunk, len(chunk_ids))
                row[column] = row.get(column, 0.0) + 1.0 / len(chunks)
            weights.append(row)
        mixing = sp.csr_matrix(
            (
                [w for row in weights for w in row.values()],
                [c for row in weights for c in row],
                np.cumsum([0, *(len(row) for row in weights)]),
            ),
            shape=(len(texts), len(chunk_ids)),
            dtype=np.float32,
        )
        result = mixing @ self._predict_chunks(list(chunk_ids))
        return _top_k_sparse(sp.csr_matrix(result), self.top_k)

    def _predict_chunks(self, chunks: list[str]) -> sp.csr_matrix:
        """fastText's top-k labels and scores for each chunk, as chunks × concepts."""
        size = len(self.vocabulary)
        if not chunks:
            return sp.csr_matrix((0, size), dtype=np.float32)
        k = self.top_k if self.chunk_size == 0 else min(self.top_k, _CHUNK_TOP_K)
        k = min(k, self._n_labels)
        # Only the list form works with numpy 2 (the single-string path fails).
        labels, probs = self.model_.predict(chunks, k=k, threshold=0.0)
        label_ids = self._label_ids
        indptr = [0]
        indices: list[int] = []
        data: list[float] = []
        for chunk_labels, chunk_probs in zip(labels, probs, strict=True):
            for label, prob in zip(chunk_labels, chunk_probs, strict=True):
                concept = label_ids.get(label)
                if concept is not None:
                    indices.append(concept)
                    data.append(prob)
            indptr.append(len(indices))
        return sp.csr_matrix(
            (np.asarray(data, np.float32), np.asarray(indices, np.int32), np.asarray(indptr)),
            shape=(len(chunks), size),
        )

    def save_state(self, directory: Path) -> None:
        if self.model_ is None:
            raise SourceError("fasttext: the source is not trained")
        path = directory / _MODEL_FILE
        self.model_.save_model(str(path))
        check = {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
        (directory / _CHECK_FILE).write_text(json.dumps(check), encoding="utf-8")

    def load_state(self, directory: Path) -> None:
        import fasttext

        path = directory / _MODEL_FILE
        # fastText's loader does not validate its input: a truncated or altered file can hang
        # it, kill the process (SIGFPE) or load garbage. So the file is checked before it is
        # handed over.
        try:
            check = json.loads((directory / _CHECK_FILE).read_text(encoding="utf-8"))
            expected_size, expected_hash = int(check["bytes"]), str(check["sha256"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(
                f"fasttext: model file {directory / _CHECK_FILE} is missing or damaged ({exc}); "
                "retrain the project"
            ) from exc
        if not path.is_file():
            raise ModelError(f"fasttext: model file {path} is missing; retrain the project")
        size = path.stat().st_size
        if size != expected_size or file_sha256(path) != expected_hash:
            raise ModelError(
                f"fasttext: model file {path} is damaged (its size or checksum does not match "
                f"what was written: {size} bytes, expected {expected_size}); retrain the project"
            )
        try:
            self.model_ = fasttext.load_model(str(path))
        except (ValueError, RuntimeError, MemoryError) as exc:
            raise ModelError(
                f"fasttext: model file {path} is damaged ({exc}); retrain the project"
            ) from exc
        self._index_labels()


def _top_k_sparse(matrix: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep each row's ``k`` highest scores, clipped into [0, 1]."""
    keep = np.zeros(matrix.nnz, dtype=bool)
    for row in range(matrix.shape[0]):
        start, end = matrix.indptr[row], matrix.indptr[row + 1]
        if end - start <= k:
            keep[start:end] = True
        else:
            keep[start + np.argpartition(-matrix.data[start:end], k - 1)[:k]] = True
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))[keep]
    result = sp.csr_matrix(
        (np.clip(matrix.data[keep], 0.0, 1.0), (rows, matrix.indices[keep])),
        shape=matrix.shape,
        dtype=np.float32,
    )
    result.eliminate_zeros()
    result.sort_indices()
    return result


__all__ = ["FasttextSource"]


def _train_to_file(settings: dict[str, Any], model_file: str) -> None:
    """Train in a child process and save the model (see ``FasttextSource.fit`` for why)."""
    import fasttext

    fasttext.train_supervised(**settings).save_model(model_file)
