"""Kuoro: fuse the subject suggestions of several indexing models into one better ranked list.

The Python API, scikit-learn style (see README.md, "Python API")::

    import kuoro

    vocab = kuoro.read_vocabulary("yso.tsv", language="fi")
    train = kuoro.read_corpus("train.tsv", vocab)
    tfidf = kuoro.TfidfSource(vocab, kuoro.make_analyzer("snowball", "finnish")).fit(titles)
    fusion = kuoro.Fusion([tfidf, lexical]).fit(train, store="work/train.store")
    result = kuoro.evaluate(kuoro.suggestion_batches(fusion, test))

or a project of projects.toml: ``kuoro.open_project("yso-kuoro-fi").suggest([...])``.

The names load on first use, so that ``import kuoro`` (and the command line) stays quick.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from kuoro.util.version import __version__

if TYPE_CHECKING:
    from kuoro.analyzers import Analyzer, make_analyzer
    from kuoro.corpus.documents import Corpus, Document
    from kuoro.corpus.documents import Corpus as read_corpus
    from kuoro.errors import KuoroError
    from kuoro.evaluation.evaluate import Evaluation, evaluate, suggestion_batches
    from kuoro.fusion.estimator import Fusion
    from kuoro.project.datadir import DataDir
    from kuoro.project.project import Project, open_project
    from kuoro.project.results import Suggestion
    from kuoro.sources.annif import AnnifSource
    from kuoro.sources.base import Source
    from kuoro.sources.fasttext import FasttextSource
    from kuoro.sources.file import FileSource
    from kuoro.sources.lexical import LexicalSource
    from kuoro.sources.omikuji import OmikujiSource
    from kuoro.sources.tfidf import TfidfSource
    from kuoro.vocab.formats import read_vocabulary
    from kuoro.vocab.vocabulary import Vocabulary

# Each public name and the module it comes from.
_EXPORTS = {
    "Vocabulary": "kuoro.vocab.vocabulary",
    "read_vocabulary": "kuoro.vocab.formats",
    "Corpus": "kuoro.corpus.documents",
    "Document": "kuoro.corpus.documents",
    "Analyzer": "kuoro.analyzers",
    "make_analyzer": "kuoro.analyzers",
    "Source": "kuoro.sources.base",
    "TfidfSource": "kuoro.sources.tfidf",
    "OmikujiSource": "kuoro.sources.omikuji",
    "FasttextSource": "kuoro.sources.fasttext",
    "LexicalSource": "kuoro.sources.lexical",
    "AnnifSource": "kuoro.sources.annif",
    "FileSource": "kuoro.sources.file",
    "Fusion": "kuoro.fusion.estimator",
    "Evaluation": "kuoro.evaluation.evaluate",
    "evaluate": "kuoro.evaluation.evaluate",
    "suggestion_batches": "kuoro.evaluation.evaluate",
    "DataDir": "kuoro.project.datadir",
    "Project": "kuoro.project.project",
    "open_project": "kuoro.project.project",
    "Suggestion": "kuoro.project.results",
    "KuoroError": "kuoro.errors",
}
# read_corpus(paths, vocabulary, language=...) reads documents as the command line does.
_ALIASES = {"read_corpus": ("kuoro.corpus.documents", "Corpus")}

__all__ = [
    "Analyzer",
    "AnnifSource",
    "Corpus",
    "DataDir",
    "Document",
    "Evaluation",
    "FasttextSource",
    "FileSource",
    "Fusion",
    "KuoroError",
    "LexicalSource",
    "OmikujiSource",
    "Project",
    "Source",
    "Suggestion",
    "TfidfSource",
    "Vocabulary",
    "__version__",
    "evaluate",
    "make_analyzer",
    "open_project",
    "read_corpus",
    "read_vocabulary",
    "suggestion_batches",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module, attribute = _EXPORTS[name], name
    elif name in _ALIASES:
        module, attribute = _ALIASES[name]
    else:
        raise AttributeError(f"module 'kuoro' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # found once
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
