"""Document corpora in every Annif format, read as streams, and their statistics."""

from kuoro.corpus.documents import Corpus, CorpusReport, Document

__all__ = ["Corpus", "CorpusReport", "Document"]
