"""The suggestion stores of fusion projects: their sources run over a corpus, once.

A store holds what the source projects suggest for the documents of a corpus. Fusion projects
over the same sources and corpus share one, kept in the data directory's ``stores/`` under a
name made of the vocabulary, the sources and the corpus (``store_key``), and built under the
store's lock; retrained sources or an updated vocabulary rebuild the store of that name.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

from kuoro.corpus.documents import Corpus
from kuoro.corpus.fingerprint import corpus_fingerprint
from kuoro.errors import KuoroError
from kuoro.project.batch import Engine, suggest_corpus_all
from kuoro.project.datadir import DataDir
from kuoro.project.model_files import read_model
from kuoro.store.builder import (
    CORPUS_FINGERPRINT,
    VOCABULARY_FINGERPRINT,
    RowBatch,
    RowBatches,
    StoreSpec,
    build_store,
    source_fingerprint_key,
    store_changes,
    stored_meta,
)
from kuoro.store.suggestion_store import SuggestionStore
from kuoro.vocab.vocabulary import Vocabulary

if TYPE_CHECKING:
    from kuoro.project.project import Project

log = logging.getLogger(__name__)

_DEFAULT_TOP_K = 100


def model_fingerprint(project: Project) -> str:
    """Identifies a source project's trained model and what it returns: the model version,
    its files' checksums and the top_k it suggests with."""
    version_dir, manifest = read_model(project.model_dir, project.project_id)
    files = {name: info["sha256"] for name, info in sorted(manifest["files"].items())}
    described = {"version": version_dir.name, "files": files, "top_k": _top_k(project)}
    return _digest(json.dumps(described, sort_keys=True).encode("utf-8"))


def store_spec(
    projects: Sequence[Project],
    corpus_paths: Sequence[Path],
    *,
    vocabulary: Vocabulary,
    language: str,
) -> StoreSpec:
    """What a store of these source projects' suggestions for the corpus holds."""
    if not projects:
        raise KuoroError("a suggestion store needs at least one source project")
    for project in projects:
        if project.config.vocab != vocabulary.name:
            raise KuoroError(
                f"source '{project.project_id}' uses vocabulary '{project.config.vocab}', "
                f"not '{vocabulary.name}'"
            )
    fingerprints = {
        VOCABULARY_FINGERPRINT: vocabulary.fingerprint,
        **{source_fingerprint_key(p.project_id): model_fingerprint(p) for p in projects},
        CORPUS_FINGERPRINT: corpus_fingerprint(corpus_paths, language=language),
    }
    return StoreSpec(
        source_names=tuple(p.project_id for p in projects),
        vocab_size=len(vocabulary),
        top_k=max(_top_k(p) for p in projects),
        fingerprints=fingerprints,
    )


def store_key(vocabulary_name: str, spec: StoreSpec) -> str:
    """The name of the shared store of ``spec``: the vocabulary's name, the sources in order
    and the corpus. Retrained sources or an updated vocabulary rebuild the store of the same
    name; another corpus or other sources have a store of their own."""
    described = {
        "vocabulary": vocabulary_name,
        "sources": list(spec.source_names),
        "corpus": spec.fingerprints[CORPUS_FINGERPRINT],
    }
    return _digest(json.dumps(described, sort_keys=True).encode("utf-8"))


def source_rows(
    projects: Sequence[Project],
    corpus_paths: Sequence[Path],
    *,
    vocabulary: Vocabulary,
    language: str,
    jobs: int = 1,
    engine: Engine | None = None,
) -> RowBatches:
    """The row batches of the corpus's documents from a given one on: their gold and what
    each source project suggests for them, run by ``engine`` (default: ``jobs`` local
    processes)."""

    def batches(skip: int) -> Iterator[RowBatch]:
        corpus = Corpus(corpus_paths, vocabulary, language=language)
        documents = islice(iter(corpus), skip, None)
        for batch, rows in suggest_corpus_all(
            projects, documents, jobs=jobs, first_ordinal=skip + 1, engine=engine
        ):
            yield [d.subjects for d in batch], rows

    return batches


def build_source_store(
    path: str | Path,
    projects: Sequence[Project],
    corpus_paths: Sequence[Path],
    *,
    vocabulary: Vocabulary,
    language: str,
    jobs: int = 1,
    cached: bool = True,
    progress: bool = False,
    engine: Engine | None = None,
) -> SuggestionStore:
    """The store at ``path`` of the projects' suggestions for the corpus, built (or reused
    while sources, vocabulary and corpus are unchanged, when ``cached``), opened for reading.
    ``engine`` runs the sources (default: ``jobs`` local processes); whatever runs them, the
    rows are stored in corpus order by this process alone."""
    spec = store_spec(projects, corpus_paths, vocabulary=vocabulary, language=language)
    rows = source_rows(
        projects, corpus_paths, vocabulary=vocabulary, language=language, jobs=jobs, engine=engine
    )
    return build_store(path, spec, rows, cached=cached, progress=progress)


def open_shared_store(
    datadir: DataDir,
    projects: Sequence[Project],
    corpus_paths: Sequence[Path],
    *,
    vocabulary: Vocabulary,
    language: str,
    jobs: int = 1,
    cached: bool = True,
    progress: bool = False,
    legacy: Sequence[Path] = (),
    engine: Engine | None = None,
) -> SuggestionStore:
    """The store of the projects' suggestions for the corpus in the data directory's
    ``stores/``, shared by every fusion project over the same sources and corpus, built once.

    ``legacy``: where a project kept its own store before stores were shared; such a store
    of the same fingerprints is moved to the shared place instead of being built again.
    """
    spec = store_spec(projects, corpus_paths, vocabulary=vocabulary, language=language)
    path = datadir.store_path(store_key(vocabulary.name, spec))
    lock = datadir.store_lock(path).acquire_waiting()
    try:
        if not path.exists():
            _adopt_legacy_store(path, legacy, spec.fingerprints)
    except BaseException:
        lock.release()
        raise
    rows = source_rows(
        projects, corpus_paths, vocabulary=vocabulary, language=language, jobs=jobs, engine=engine
    )
    return build_store(path, spec, rows, cached=cached, progress=progress, lock=lock)


def _adopt_legacy_store(
    path: Path, legacy: Sequence[Path], fingerprints: Mapping[str, str]
) -> None:
    for old in legacy:
        meta = stored_meta(old)
        if meta is not None and meta.get("complete") and not store_changes(meta, fingerprints):
            path.parent.mkdir(parents=True, exist_ok=True)
            os.rename(old, path)
            log.info("moved the store %s to %s, where fusion projects share it", old, path)
            return


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _top_k(project: Project) -> int:
    top_k = project.config.params.get("top_k", _DEFAULT_TOP_K)
    return top_k if isinstance(top_k, int) else _DEFAULT_TOP_K
