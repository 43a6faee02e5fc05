"""TF-IDF features of analyzer tokens and word n-grams, shared by the tfidf and omikuji sources.

The fitted state is the term list and the idf weights, stored as plain arrays (no pickle):
scikit-learn's vectoriser and transformer are rebuilt from them when a model is loaded.
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import sklearn
from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer
from tqdm import tqdm

from kuoro.analyzers import Analyzer
from kuoro.corpus.documents import Document
from kuoro.errors import CorpusError, ModelError

_ARRAYS = "features.npz"
_SETTINGS = "features.json"
FEATURE_FILES = (_ARRAYS, _SETTINGS)


class TfidfFeatures:
    """Turns texts into L2-normalised TF-IDF rows over analyzer tokens and their word n-grams."""

    def __init__(
        self,
        analyzer: Analyzer,
        *,
        min_df: int = 1,
        ngram_max: int = 1,
        sublinear_tf: bool = True,
    ) -> None:
        self.analyzer = analyzer
        self.min_df = min_df
        self.ngram_max = ngram_max
        self.sublinear_tf = sublinear_tf
        self.terms_: list[str] = []
        self.idf_ = np.zeros(0, np.float32)
        self._counter: CountVectorizer | None = None
        self._weighter: TfidfTransformer | None = None

    @property
    def n_features(self) -> int:
        return len(self.terms_)

    def terms(self, text: str) -> list[str]:
        """The analyzer's tokens followed by their n-grams up to ``ngram_max`` words."""
        tokens = self.analyzer.tokens(text)
        terms = list(tokens)
        for n in range(2, self.ngram_max + 1):
            terms.extend(" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
        return terms

    def fit_transform(self, texts: Iterable[str]) -> sp.csr_matrix:
        """Learn terms and idf from ``texts`` (read once) and return their TF-IDF rows."""
        counts = self.fit_counts(texts)
        self.use_idf(TfidfTransformer().fit(counts).idf_)
        return self.weigh(counts)

    def fit_counts(self, texts: Iterable[str]) -> sp.csr_matrix:
        """Learn the terms of ``texts`` (read once) and return their term counts; the idf is
        set by :meth:`use_idf` before anything is weighed."""
        counter = CountVectorizer(analyzer=self.terms, min_df=self.min_df, dtype=np.float32)
        try:
            counts = counter.fit_transform(texts)
        except ValueError as exc:
            # scikit-learn says "empty vocabulary" or "no terms remain" when nothing is left.
            raise CorpusError(
                f"no features in the training documents ({exc}); the texts are empty or every "
                f"word occurs in fewer than min_df = {self.min_df} documents"
            ) from None
        vocabulary: dict[str, int] = counter.vocabulary_
        self.terms_ = sorted(vocabulary, key=vocabulary.__getitem__)
        return sp.csr_matrix(counts)

    def use_idf(self, idf: np.ndarray) -> None:
        """Weigh each term by ``idf`` (one weight per term of :meth:`fit_counts`)."""
        if idf.shape != (self.n_features,):
            raise ValueError(f"{idf.shape} idf weights for {self.n_features} terms")
        self.idf_ = np.asarray(idf, np.float32)
        self._build()

    def transform(self, texts: Sequence[str]) -> sp.csr_matrix:
        """TF-IDF rows of ``texts``; a text without known terms gives an empty row."""
        if self._counter is None:
            raise RuntimeError("TfidfFeatures.transform called before fit or load")
        return self.weigh(self._counter.transform(texts))

    def weigh(self, counts: sp.csr_matrix) -> sp.csr_matrix:
        """Rows of term counts as L2-normalised TF-IDF rows."""
        assert self._weighter is not None
        rows = sp.csr_matrix(self._weighter.transform(counts), dtype=np.float32)
        rows.sort_indices()
        return rows

    def _build(self) -> None:
        vocabulary = {term: i for i, term in enumerate(self.terms_)}
        self._counter = CountVectorizer(
            analyzer=self.terms, vocabulary=vocabulary, dtype=np.float32
        )
        self._weighter = TfidfTransformer(sublinear_tf=self.sublinear_tf)
        self._weighter.idf_ = self.idf_

    def save(self, directory: Path) -> None:
        """Write ``features.npz`` (terms as one UTF-8 blob, idf) and ``features.json``."""
        blob = np.frombuffer("\n".join(self.terms_).encode("utf-8"), dtype=np.uint8)
        with (directory / _ARRAYS).open("wb") as out:
            np.savez_compressed(out, terms=blob, idf=self.idf_)
        settings = {
            "analyzer": self.analyzer.spec,
            "min_df": self.min_df,
            "ngram_max": self.ngram_max,
            "sublinear_tf": self.sublinear_tf,
            "n_features": self.n_features,
            "scikit_learn": sklearn.__version__,
        }
        (directory / _SETTINGS).write_text(json.dumps(settings, indent=2), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path, analyzer: Analyzer) -> TfidfFeatures:
        """Read what :meth:`save` wrote; a damaged file raises ModelError naming it."""
        settings_path = directory / _SETTINGS
        try:
            settings = json.loads(settings_path.read_text(encoding="utf-8"))
            features = cls(
                analyzer,
                min_df=int(settings["min_df"]),
                ngram_max=int(settings["ngram_max"]),
                sublinear_tf=bool(settings["sublinear_tf"]),
            )
            n_features = int(settings["n_features"])
            trained_with = str(settings["analyzer"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise damaged(settings_path, exc) from None
        if trained_with != analyzer.spec:
            raise ModelError(
                f"{directory}: the model was trained with analyzer {trained_with}, the project "
                f"now uses {analyzer.spec}; retrain the project"
            )
        arrays_path = directory / _ARRAYS
        try:
            with np.load(arrays_path, allow_pickle=False) as arrays:
                blob = arrays["terms"]
                idf = np.asarray(arrays["idf"], np.float32)
            terms = blob.tobytes().decode("utf-8").split("\n") if blob.size else []
        except Exception as exc:  # zip, CRC, format and decoding errors alike mean damage
            raise damaged(arrays_path, exc) from None
        if len(terms) != n_features or idf.shape != (n_features,):
            raise damaged(
                arrays_path, f"{len(terms)} terms and {idf.size} weights, expected {n_features}"
            )
        features.terms_ = terms
        features.idf_ = idf
        features._build()
        return features


def damaged(path: Path, why: object) -> ModelError:
    """The error for a model file that cannot be read back."""
    return ModelError(f"model file {path} is damaged ({why}); retrain the project")


def fit_features(
    features: TfidfFeatures,
    corpus: Iterable[Document],
    n_concepts: int,
    *,
    progress: bool = False,
    weigh: bool = True,
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Read the corpus once: fit ``features`` and return (TF-IDF rows, documents × concepts
    0/1); with ``weigh=False`` the rows are term counts and the idf is left to the caller."""
    indptr = array("q", [0])
    indices = array("i")

    def texts(documents: Iterable[Document]) -> Iterator[str]:
        # The subjects are collected on the side, so that the texts are analysed only once.
        for document in documents:
            indices.extend(s for s in document.subjects if 0 <= s < n_concepts)
            indptr.append(len(indices))
            yield document.text

    with tqdm(corpus, desc="reading documents", unit=" doc", disable=not progress) as bar:
        fit = features.fit_transform if weigh else features.fit_counts
        rows = fit(texts(bar))
    labels = sp.csr_matrix(
        (
            np.ones(len(indices), np.float32),
            np.frombuffer(indices, np.int32),
            np.frombuffer(indptr, np.int64),
        ),
        shape=(len(indptr) - 1, n_concepts),
    )
    return rows, labels
