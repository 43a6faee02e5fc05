"""Which subjects go together: co-occurrence counted on a large subject-indexed corpus.

A fusion model trains on a few thousand documents, too few to learn which of V concepts go
together; the sources were trained on a corpus hundreds of times larger, whose subject sets
say it sparsely. ``SubjectCooccurrence`` keeps, for every concept j, P(c | j): the share of
the corpus documents indexed with j that are also indexed with c (a sparse V × V table, the
diagonal left out), and each concept's document count. Given a document's candidates and
their scores, ``features`` says for each candidate how much the other candidates imply it.

Documents with more than ``MAX_SUBJECTS`` subjects are left out of the count: a few records
of the finna.fi titles list thousands of subjects, and each would add millions of pairs that
say nothing about a typical document.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from kuoro.corpus.documents import Corpus
from kuoro.util.array_files import load_arrays, save_arrays
from kuoro.vocab.vocabulary import Vocabulary

MAX_SUBJECTS = 10
FORMAT = "kuoro-subject-cooccurrence"
# The lift feature is log1p(P(c | candidates) / P(c)) / LIFT_SCALE: in [0, ~1] for real data.
LIFT_SCALE = 10.0


@dataclass(frozen=True)
class SubjectCooccurrence:
    """P(c | j) for concepts j, c of a vocabulary, and how many documents had each concept."""

    conditional: sp.csr_matrix  # (V, V) float32: row j holds P(c | j), diagonal 0
    counts: np.ndarray  # (V,) int64 documents indexed with each concept
    documents: int  # documents counted

    @property
    def n_concepts(self) -> int:
        return int(self.counts.shape[0])

    @classmethod
    def from_subject_sets(
        cls, subject_sets: Iterable[Iterable[int]], n_concepts: int
    ) -> SubjectCooccurrence:
        """Counted over documents given as their concept ids (each set of at most
        ``MAX_SUBJECTS`` distinct ids; larger ones are skipped)."""
        rows: list[np.ndarray] = []
        documents = 0
        for subjects in subject_sets:
            ids = np.unique(np.fromiter(subjects, np.int64))
            if not 0 < len(ids) <= MAX_SUBJECTS:
                continue
            if ids[0] < 0 or ids[-1] >= n_concepts:
                raise ValueError(f"concept id {int(ids[-1])} outside [0, {n_concepts})")
            rows.append(ids)
            documents += 1
        lengths = np.array([len(r) for r in rows], np.int64)
        indicator = sp.csr_matrix(
            (
                np.ones(int(lengths.sum()), np.float32),
                np.concatenate(rows) if rows else np.zeros(0, np.int64),
                np.concatenate([[0], np.cumsum(lengths)]),
            ),
            shape=(documents, n_concepts),
        )
        return cls.from_pair_counts((indicator.T @ indicator).tocsr(), documents)

    @classmethod
    def from_corpus(
        cls,
        paths: str | Path | Sequence[str | Path],
        vocabulary: Vocabulary,
        *,
        language: str | None = None,
    ) -> SubjectCooccurrence:
        """Counted over the subjects of a corpus (any format ``Corpus`` reads)."""
        corpus = Corpus(paths, vocabulary, language=language)
        return cls.from_subject_sets((d.subjects for d in corpus), len(vocabulary))

    @classmethod
    def from_pair_counts(cls, pairs: sp.csr_matrix, documents: int) -> SubjectCooccurrence:
        """From the symmetric (V, V) counts of documents having both concepts (diagonal: each
        concept's own count)."""
        counts = np.rint(pairs.diagonal()).astype(np.int64)
        off = sp.csr_matrix(pairs, dtype=np.float64, copy=True)
        off.setdiag(0)
        off.eliminate_zeros()
        conditional = sp.diags(1.0 / np.maximum(counts, 1)) @ off
        return cls(sp.csr_matrix(conditional, dtype=np.float32), counts, documents)

    # -- features ------------------------------------------------------------------------------

    def features(
        self, doc_index: np.ndarray, concepts: np.ndarray, weights: np.ndarray, n_docs: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(implied, lift, corpus prior) of each candidate, float32.

        ``implied``: Σ_j w_j · P(c | j) / Σ_j w_j over the document's other candidates j, with
        w their ``weights`` (e.g. the mean source score); ``lift``: log1p(implied / P(c)) /
        LIFT_SCALE; ``corpus prior``: log1p(count of c) / log1p(largest count).
        Costs the candidates' own pairs only: the table is sliced to this batch's concepts.
        """
        m = len(concepts)
        if m == 0 or self.documents == 0:
            zeros = np.zeros(m, np.float32)
            return zeros, zeros.copy(), zeros.copy()
        local, inverse = np.unique(concepts, return_inverse=True)
        table = self.conditional[local][:, local]  # P(c | j) among the batch's concepts
        doc_weights = sp.csr_matrix(
            (weights.astype(np.float32), (doc_index, inverse)), shape=(n_docs, len(local))
        )
        implied_all = (doc_weights @ table).tocsr()  # row d: Σ_j w_dj P(· | j)
        implied = _gather(implied_all, doc_index, inverse)
        total = np.bincount(doc_index, weights=weights, minlength=n_docs)[doc_index]
        others = np.maximum(total - weights, 1e-6)
        implied = np.asarray(implied / others, np.float32)
        marginal = self.counts[concepts] / self.documents
        lift = np.log1p(implied / np.maximum(marginal, 0.5 / self.documents)) / LIFT_SCALE
        largest = float(np.log1p(self.counts.max()))
        prior = np.log1p(self.counts[concepts]) / largest if largest > 0 else marginal * 0
        return implied, lift.astype(np.float32), prior.astype(np.float32)

    # -- files ---------------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        save_arrays(
            path,
            {
                "format": np.asarray(FORMAT),
                "indptr": self.conditional.indptr.astype(np.int64),
                "indices": self.conditional.indices.astype(np.int32),
                "data": self.conditional.data.astype(np.float32),
                "counts": self.counts,
                "documents": np.asarray(self.documents, np.int64),
            },
        )

    @classmethod
    def load(cls, path: Path) -> SubjectCooccurrence:
        return load_arrays(path, "subject co-occurrence table", cls._from_arrays)

    @classmethod
    def _from_arrays(cls, arrays: dict[str, np.ndarray]) -> SubjectCooccurrence:
        if str(arrays["format"]) != FORMAT:
            raise ValueError(f"format {arrays['format']!s}, not {FORMAT}")
        counts = np.asarray(arrays["counts"], np.int64)
        n = len(counts)
        table = sp.csr_matrix(
            (arrays["data"], arrays["indices"], arrays["indptr"]), shape=(n, n), dtype=np.float32
        )
        table.check_format(full_check=True)
        return cls(table, counts, int(arrays["documents"]))

    def resized(self, n_concepts: int) -> SubjectCooccurrence:
        """The table for a vocabulary grown to ``n_concepts`` (new concepts: never seen)."""
        if n_concepts == self.n_concepts:
            return self
        if n_concepts < self.n_concepts:
            raise ValueError(f"cannot shrink a table of {self.n_concepts} concepts")
        table = self.conditional.copy()
        table.resize((n_concepts, n_concepts))
        counts = np.zeros(n_concepts, np.int64)
        counts[: self.n_concepts] = self.counts
        return SubjectCooccurrence(table.tocsr(), counts, self.documents)


def _gather(matrix: sp.csr_matrix, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """matrix[rows[i], columns[i]] for every i, 0 where nothing is stored."""
    matrix.sort_indices()
    n_columns = matrix.shape[1]
    stored_rows = np.repeat(np.arange(matrix.shape[0], dtype=np.int64), np.diff(matrix.indptr))
    keys = stored_rows * n_columns + matrix.indices
    wanted = rows.astype(np.int64) * n_columns + columns
    if len(keys) == 0:
        return np.zeros(len(wanted), np.float32)
    at = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    return np.where(keys[at] == wanted, matrix.data[at], 0.0).astype(np.float32)
