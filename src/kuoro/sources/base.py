"""The Source interface: a base indexing model that suggests each document's top-K concepts.

A source follows scikit-learn's conventions: parameters are keyword arguments of ``__init__``
(the names and defaults of :mod:`kuoro.config.backends`), ``fit`` learns from a corpus,
learned state ends in ``_``. ``suggest`` returns one sparse row per text over the whole
vocabulary, holding at most ``top_k`` scores in [0, 1]; nothing dense of the vocabulary's size
is kept per document.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import scipy.sparse as sp

from kuoro.analyzers import Analyzer
from kuoro.corpus.documents import Document
from kuoro.vocab.vocabulary import Vocabulary


class Suggester(Protocol):
    """Anything that gives one sparse row of scores per text: a source, a fusion model, a
    project."""

    def suggest(
        self, texts: Sequence[str], document_ids: Sequence[str | None] | None = None
    ) -> sp.csr_matrix: ...


class Source(ABC):
    """A base indexing model. Subclasses declare their parameters in ``__init__``."""

    backend: ClassVar[str]
    # Whether ``fit`` learns from a corpus; remote and precomputed sources need none.
    needs_training: ClassVar[bool] = True

    def __init__(self, vocabulary: Vocabulary, analyzer: Analyzer, *, top_k: int = 100) -> None:
        self.vocabulary = vocabulary
        self.analyzer = analyzer
        self.top_k = top_k

    @abstractmethod
    def fit(self, corpus: Iterable[Document], *, jobs: int = 1, progress: bool = False) -> Source:
        """Learn from documents with subjects; ``progress`` shows a bar on stderr."""

    @abstractmethod
    def suggest(
        self, texts: Sequence[str], document_ids: Sequence[str | None] | None = None
    ) -> sp.csr_matrix:
        """One row per text, ``len(vocabulary)`` columns, at most ``top_k`` scores in [0, 1]."""

    @abstractmethod
    def save_state(self, directory: Path) -> None:
        """Write the learned state into the (empty) ``directory``."""

    @abstractmethod
    def load_state(self, directory: Path) -> None:
        """Read the learned state written by :meth:`save_state`."""

    @classmethod
    def param_names(cls) -> list[str]:
        """The names of the parameters: the keyword-only arguments of ``__init__``."""
        signature = inspect.signature(cls.__init__)
        return [p.name for p in signature.parameters.values() if p.kind is p.KEYWORD_ONLY]

    def get_params(self, deep: bool = False) -> dict[str, Any]:
        """The parameters this source was built with (``top_k`` and the backend's own), as
        scikit-learn's estimators give them; each is an attribute of the same name."""
        return {name: getattr(self, name) for name in self.param_names()}

    def set_params(self, **params: Any) -> Source:
        """Change parameters; they take effect at the next ``fit``."""
        unknown = sorted(set(params) - set(self.param_names()))
        if unknown:
            allowed = ", ".join(self.param_names())
            raise ValueError(f"{type(self).__name__} has no parameter {', '.join(unknown)}; "
                             f"its parameters: {allowed}")  # fmt: skip
        for name, value in params.items():
            setattr(self, name, value)
        return self

    def params(self) -> dict[str, Any]:
        """The parameters, as saved with a trained model (``get_params``)."""
        return self.get_params()

    def library_versions(self) -> dict[str, str]:
        """Versions of the libraries whose files the learned state contains."""
        return {}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in sorted(self.get_params().items()))
        return f"{type(self).__name__}({params})"


def top_k_rows(scores: np.ndarray, k: int, *, n_columns: int | None = None) -> sp.csr_matrix:
    """Keep each row's ``k`` highest positive scores of a dense (documents × concepts) block."""
    n_rows, n_cols = scores.shape
    k = min(k, n_cols)
    if n_rows == 0 or k == 0:
        return sp.csr_matrix((n_rows, n_columns or n_cols), dtype=np.float32)
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    values = np.take_along_axis(scores, top, axis=1)
    rows = np.repeat(np.arange(n_rows), k)
    matrix = sp.csr_matrix(
        (values.ravel().astype(np.float32), (rows, top.ravel())),
        shape=(n_rows, n_columns or n_cols),
    )
    matrix.data = np.clip(matrix.data, 0.0, 1.0)
    matrix.eliminate_zeros()
    matrix.sort_indices()
    return matrix


def rows_to_csr(
    rows: Sequence[tuple[Sequence[int], Sequence[float]]], n_columns: int, k: int
) -> sp.csr_matrix:
    """Build the sparse result from per-document (concept ids, scores), keeping the top ``k``."""
    indptr = [0]
    indices: list[int] = []
    data: list[float] = []
    for ids, scores in rows:
        pairs = sorted(
            ((float(s), int(i)) for i, s in zip(ids, scores, strict=True) if s > 0),
            reverse=True,
        )[:k]
        # A concept given twice keeps its best score (duplicates would be summed by scipy).
        seen: dict[int, float] = {}
        for score, concept in pairs:
            seen.setdefault(concept, min(score, 1.0))
        for concept in sorted(seen):
            indices.append(concept)
            data.append(seen[concept])
        indptr.append(len(indices))
    return sp.csr_matrix(
        (np.asarray(data, np.float32), np.asarray(indices, np.int32), np.asarray(indptr)),
        shape=(len(rows), n_columns),
    )
