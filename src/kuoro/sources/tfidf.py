"""The ``tfidf`` source: cosine similarity between a document and each concept's profile.

A concept's profile is the L2-normalised sum of the TF-IDF vectors of its training documents.
The profiles are kept transposed, as a features × concepts matrix (an inverted index), so that
scoring a batch of documents is one sparse product whose cost follows the documents' terms,
not the vocabulary's size.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import scipy
import scipy.sparse as sp
import sklearn
from sklearn.preprocessing import normalize

from kuoro.analyzers import Analyzer
from kuoro.corpus.documents import Document
from kuoro.errors import CorpusError, ModelError
from kuoro.sources.base import Source
from kuoro.sources.features import TfidfFeatures, damaged, fit_features
from kuoro.vocab.vocabulary import Vocabulary

_PROFILES = "profiles.npz"
_STATE = "tfidf.json"
BATCH_SIZE = 256


class TfidfSource(Source):
    """TF-IDF similarity between a document and each concept's training text."""

    backend = "tfidf"

    def __init__(
        self,
        vocabulary: Vocabulary,
        analyzer: Analyzer,
        *,
        top_k: int = 100,
        min_df: int = 1,
        ngram_max: int = 1,
        sublinear_tf: bool = True,
    ) -> None:
        super().__init__(vocabulary, analyzer, top_k=top_k)
        self.min_df = min_df
        self.ngram_max = ngram_max
        self.sublinear_tf = sublinear_tf
        self.features_: TfidfFeatures | None = None
        self.index_: sp.csr_matrix | None = None  # features × concepts, columns L2-normalised

    def library_versions(self) -> dict[str, str]:
        return {"scikit-learn": sklearn.__version__, "scipy": scipy.__version__}

    def fit(self, corpus: Iterable[Document], *, jobs: int = 1, progress: bool = False) -> Source:
        """Build the profiles in one pass; ``jobs`` is unused (analysis is single-threaded)."""
        features = TfidfFeatures(
            self.analyzer,
            min_df=self.min_df,
            ngram_max=self.ngram_max,
            sublinear_tf=self.sublinear_tf,
        )
        counts, labels = fit_features(
            features, corpus, len(self.vocabulary), progress=progress, weigh=False
        )
        if not labels.nnz:
            raise CorpusError("no training document has subjects; tfidf needs some")
        features.use_idf(concept_idf(counts, labels))
        rows = features.weigh(counts)
        # (concepts × documents) @ (documents × features): each concept's summed document vector.
        profiles = normalize(sp.csr_matrix(labels.T @ rows, dtype=np.float32))
        self.features_ = features
        self.index_ = sp.csr_matrix(profiles.T, dtype=np.float32)
        self.index_.sort_indices()
        return self

    def suggest(
        self, texts: Sequence[str], document_ids: Sequence[str | None] | None = None
    ) -> sp.csr_matrix:
        if self.features_ is None or self.index_ is None:
            raise ModelError("the tfidf source is not trained; call fit or load_state first")
        n_concepts = len(self.vocabulary)
        # Concepts removed from the vocabulary since training are never suggested.
        drop = np.zeros(self.index_.shape[1], bool)
        known = min(len(drop), n_concepts)
        drop[:known] = self.vocabulary.deprecated[:known]
        blocks = []
        for start in range(0, len(texts), BATCH_SIZE):
            vectors = self.features_.transform(texts[start : start + BATCH_SIZE])
            scores = sp.csr_matrix(vectors @ self.index_)
            scores.data[drop[scores.indices]] = 0.0
            blocks.append(sparse_top_k(scores, self.top_k, n_concepts))
        if not blocks:
            return sp.csr_matrix((0, n_concepts), dtype=np.float32)
        return sp.csr_matrix(sp.vstack(blocks, format="csr"), dtype=np.float32)

    def save_state(self, directory: Path) -> None:
        if self.features_ is None or self.index_ is None:
            raise ModelError("the tfidf source is not trained; nothing to save")
        self.features_.save(directory)
        with (directory / _PROFILES).open("wb") as out:
            sp.save_npz(out, self.index_, compressed=True)
        state = {"n_concepts": self.index_.shape[1], "n_features": self.index_.shape[0]}
        (directory / _STATE).write_text(json.dumps(state, indent=2), encoding="utf-8")

    def load_state(self, directory: Path) -> None:
        state_path = directory / _STATE
        try:
            state = json.loads(state_path.read_text(encoding="utf-8"))
            shape = (int(state["n_features"]), int(state["n_concepts"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise damaged(state_path, exc) from None
        features = TfidfFeatures.load(directory, self.analyzer)
        profiles_path = directory / _PROFILES
        try:
            index = sp.csr_matrix(sp.load_npz(profiles_path), dtype=np.float32)
            if index.shape != shape or features.n_features != shape[0]:
                raise ValueError(f"shape {index.shape}, expected {shape}")
            index.check_format(full_check=True)
        except Exception as exc:  # zip, CRC and format errors alike mean damage
            raise damaged(profiles_path, exc) from None
        if shape[1] > len(self.vocabulary):
            raise ModelError(
                f"{directory}: the model knows {shape[1]} concepts but the vocabulary has only "
                f"{len(self.vocabulary)}; was the vocabulary replaced? Retrain the project"
            )
        self.features_ = features
        self.index_ = index


def concept_idf(counts: sp.csr_matrix, labels: sp.csr_matrix) -> np.ndarray:
    """Each term's inverse concept frequency: log((1 + C) / (1 + c)), where c of the C concepts
    with training documents have the term in one of them. A term of every concept tells none
    apart and weighs nothing.

    Measured against the document frequency (log((1 + D) / (1 + d)) + 1, scikit-learn's), with
    min_df 1 and the same analyzer: archaeology (5,404 training texts, tested on 1,000) nDCG@10
    0.4688 → 0.4890, F1@5 0.2261 → 0.2376 (Annif's tfidf: 0.4892, 0.2378); the shared protocol
    (200,000 finna.fi titles, kirjastonhoitaja/test.tsv) 0.2178 → 0.2238, 0.1636 → 0.1653.
    """
    present = sp.csr_matrix((counts > 0).astype(np.float32))
    per_concept = sp.csr_matrix(labels.T @ present)  # concepts × terms: documents with both
    concepts_with_term = np.bincount(per_concept.indices, minlength=counts.shape[1])
    trained_concepts = int((per_concept.getnnz(axis=1) > 0).sum())
    idf: np.ndarray = np.log((1.0 + trained_concepts) / (1.0 + concepts_with_term))
    return idf


def sparse_top_k(scores: sp.csr_matrix, k: int, n_columns: int) -> sp.csr_matrix:
    """Keep each row's ``k`` highest positive scores, clipped into [0, 1], as float32 CSR."""
    indptr = [0]
    indices: list[np.ndarray] = []
    values: list[np.ndarray] = []
    for i in range(scores.shape[0]):
        start, end = scores.indptr[i], scores.indptr[i + 1]
        row_values = scores.data[start:end]
        row_indices = scores.indices[start:end]
        keep = row_values > 0
        row_values, row_indices = row_values[keep], row_indices[keep]
        if len(row_values) > k:
            top = np.argpartition(-row_values, k - 1)[:k]
            row_values, row_indices = row_values[top], row_indices[top]
        order = np.argsort(row_indices)
        indices.append(row_indices[order])
        values.append(row_values[order])
        indptr.append(indptr[-1] + len(order))
    data = np.clip(np.concatenate(values) if values else np.zeros(0), 0.0, 1.0)
    return sp.csr_matrix(
        (
            data.astype(np.float32),
            np.concatenate(indices).astype(np.int32) if indices else np.zeros(0, np.int32),
            np.asarray(indptr, np.int64),
        ),
        shape=(scores.shape[0], n_columns),
    )
