"""What the source tests share: a fixed archaeology split and a hit-rate measure."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from kuoro.corpus.documents import Corpus, Document
from kuoro.vocab.formats import read_vocabulary
from kuoro.vocab.vocabulary import Vocabulary

from support.data import SHARED_DATA

Split = tuple[Vocabulary, list[Document], list[Document]]


def archaeology_split(held_out: int, *, shuffle: bool) -> Split:
    """The archaeology vocabulary, training documents and ``held_out`` held-out documents."""
    vocabulary = read_vocabulary(SHARED_DATA / "archaeology" / "yso-archaeology.ttl", "fi")
    documents = list(Corpus(SHARED_DATA / "archaeology" / "documents.tsv", vocabulary))
    if shuffle:
        order = np.random.default_rng(0).permutation(len(documents))
        documents = [documents[i] for i in order]
    return vocabulary, documents[held_out:], documents[:held_out]


def hits_at(scores: sp.csr_matrix, documents: list[Document], k: int) -> float:
    """Share of documents with a gold subject among their ``k`` best suggestions."""
    hits = 0
    for i, document in enumerate(documents):
        row = scores.getrow(i)
        best = row.indices[np.argsort(-row.data, kind="stable")][:k]
        hits += bool(set(best.tolist()) & set(document.subjects))
    return hits / len(documents)
