"""Filling a SuggestionStore by running the source projects over a training corpus, once.

The store records fingerprints of the vocabulary, of each source's trained model and of the
corpus. A later build with the same fingerprints reuses a complete store and resumes an
incomplete one (a killed build skips the documents already stored); a changed fingerprint is
reported by name and the store rebuilt beside the old one, which is replaced only when the new
one is complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

from tqdm import tqdm

from kuoro.corpus.documents import Corpus, check_corpus_paths
from kuoro.errors import KuoroError
from kuoro.project.batch import suggest_corpus_all
from kuoro.project.datadir import DataDir
from kuoro.project.model_files import read_model
from kuoro.project.project import Project
from kuoro.store.suggestion_store import StoreError, SuggestionStore
from kuoro.util.locks import FileLock
from kuoro.util.wording import plural
from kuoro.vocab.vocabulary import Vocabulary

__all__ = [
    "build_store",
    "corpus_fingerprint",
    "model_fingerprint",
    "open_shared_store",
    "store_fingerprints",
    "store_key",
]

log = logging.getLogger(__name__)

_VOCABULARY = "vocabulary"
# The key of the corpus fingerprint among a store's fingerprints.
CORPUS_FINGERPRINT = "corpus"
_SOURCE = "source:"
_DEFAULT_TOP_K = 100


def build_store(
    path: str | Path,
    projects: Sequence[Project],
    corpus_paths: Sequence[Path],
    *,
    vocabulary: Vocabulary,
    language: str,
    jobs: int = 1,
    cached: bool = True,
    progress: bool = False,
    lock: FileLock | None = None,
    fingerprints: Mapping[str, str] | None = None,
) -> SuggestionStore:
    """The store of the projects' suggestions for the corpus at ``path``, opened for reading.

    With ``cached`` an existing complete store with the same fingerprints is reused; without
    it the store is always rebuilt. ``lock``: the store's lock, taken (or already held)
    exclusively while the store is checked and built, then shared until the returned store
    is closed, so that no other process rebuilds it under a reader. ``fingerprints``:
    ``store_fingerprints`` of the same arguments, when the caller has them already.
    """
    path = Path(path)
    if fingerprints is None:
        fingerprints = store_fingerprints(
            projects, corpus_paths, vocabulary=vocabulary, language=language
        )
    if lock is not None:
        lock.acquire_waiting()
    try:
        _build(path, projects, corpus_paths, vocabulary, language, jobs, cached, progress,
               fingerprints)  # fmt: skip
        store = SuggestionStore.open(path)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    if lock is not None:
        lock.share()
        store.hold(lock.release)
    return store


def store_fingerprints(
    projects: Sequence[Project],
    corpus_paths: Sequence[Path],
    *,
    vocabulary: Vocabulary,
    language: str,
) -> dict[str, str]:
    """What a store of these sources' suggestions for the corpus holds: fingerprints of the
    vocabulary, of each source's trained model (in the store's column order) and of the
    corpus."""
    if not projects:
        raise KuoroError("a suggestion store needs at least one source project")
    for project in projects:
        if project.config.vocab != vocabulary.name:
            raise KuoroError(
                f"source '{project.project_id}' uses vocabulary '{project.config.vocab}', "
                f"not '{vocabulary.name}'"
            )
    return {
        _VOCABULARY: vocabulary.fingerprint,
        **{_SOURCE + p.project_id: model_fingerprint(p) for p in projects},
        CORPUS_FINGERPRINT: corpus_fingerprint(corpus_paths, language=language),
    }


def store_key(vocabulary_name: str, fingerprints: Mapping[str, str]) -> str:
    """The name of the shared store for these fingerprints: the vocabulary's name, the source
    projects in order and the corpus. Retrained sources or an updated vocabulary rebuild the
    store of the same name; another corpus or other sources have a store of their own."""
    sources = [key.removeprefix(_SOURCE) for key in fingerprints if key.startswith(_SOURCE)]
    described = {
        "vocabulary": vocabulary_name,
        "sources": sources,
        "corpus": fingerprints[CORPUS_FINGERPRINT],
    }
    return _digest(json.dumps(described, sort_keys=True).encode("utf-8"))


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
) -> SuggestionStore:
    """The store of the projects' suggestions for the corpus in the data directory's
    ``stores/``, shared by every fusion project over the same sources and corpus, built once.

    ``legacy``: where a project kept its own store before stores were shared; such a store
    of the same fingerprints is moved to the shared place instead of being built again.
    """
    fingerprints = store_fingerprints(
        projects, corpus_paths, vocabulary=vocabulary, language=language
    )
    path = datadir.store_path(store_key(vocabulary.name, fingerprints))
    lock = datadir.store_lock(path).acquire_waiting()
    try:
        if not path.exists():
            _adopt_legacy_store(path, legacy, fingerprints)
    except BaseException:
        lock.release()
        raise
    return build_store(
        path,
        projects,
        corpus_paths,
        vocabulary=vocabulary,
        language=language,
        jobs=jobs,
        cached=cached,
        progress=progress,
        lock=lock,
        fingerprints=fingerprints,
    )


def _adopt_legacy_store(
    path: Path, legacy: Sequence[Path], fingerprints: Mapping[str, str]
) -> None:
    for old in legacy:
        meta = _stored_meta(old)
        if meta is not None and meta.get("complete") and not _changes(meta, fingerprints):
            path.parent.mkdir(parents=True, exist_ok=True)
            os.rename(old, path)
            log.info("moved the store %s to %s, where fusion projects share it", old, path)
            return


def _build(
    path: Path,
    projects: Sequence[Project],
    corpus_paths: Sequence[Path],
    vocabulary: Vocabulary,
    language: str,
    jobs: int,
    cached: bool,
    progress: bool,
    fingerprints: Mapping[str, str],
) -> None:
    """Make the store at ``path`` hold what ``fingerprints`` describe, complete."""
    staging = path.with_name(path.name + ".new")
    _finish_interrupted_swap(path, staging)

    existing = _stored_meta(path)
    target, done = path, False
    if existing is not None:
        reasons = _changes(existing, fingerprints) or (
            [] if cached else ["a rebuild was requested"]
        )
        if not reasons and existing["complete"]:
            log.info("reusing store %s (%s)", path, plural(existing["documents"], "document"))
            return
        if reasons:
            # The old store stays usable until the new one is complete.
            log.info("%s; rebuilding", "; ".join(reasons))
            target = staging
            staged = _stored_meta(staging)
            if staged is None or _changes(staged, fingerprints) or not cached:
                shutil.rmtree(staging, ignore_errors=True)
            else:
                done = staged["complete"]  # killed after finishing, before the swap

    if not done:
        top_ks = [_top_k(project) for project in projects]
        store = SuggestionStore.create(
            target,
            source_names=[p.project_id for p in projects],
            vocab_size=len(vocabulary),
            fingerprints=fingerprints,
            top_k=max(top_ks),
            chunk_size=256,
        )
        with store:
            _fill(store, projects, corpus_paths, language, vocabulary, jobs, progress)
    if target == staging:
        _swap(staging, path)


def _fill(
    store: SuggestionStore,
    projects: Sequence[Project],
    corpus_paths: Sequence[Path],
    language: str,
    vocabulary: Vocabulary,
    jobs: int,
    progress: bool,
) -> None:
    done = len(store)
    if done:
        stored = plural(done, "document")
        log.info("resuming store %s: %s stored already, skipping them", store.path, stored)
    corpus = Corpus(corpus_paths, vocabulary, language=language)
    documents = islice(iter(corpus), done, None)
    source_seconds = store_seconds = 0.0
    written = 0
    with tqdm(
        desc="sources → store",
        unit="doc",
        initial=done,
        disable=not progress,
        file=sys.stderr,
        dynamic_ncols=True,
    ) as bar:
        batches = suggest_corpus_all(projects, documents, jobs=jobs, first_ordinal=done + 1)
        while True:
            started = time.perf_counter()
            item = next(batches, None)
            source_seconds += time.perf_counter() - started
            if item is None:
                break
            batch, rows = item
            started = time.perf_counter()
            store.append([d.subjects for d in batch], rows)
            store_seconds += time.perf_counter() - started
            written += len(batch)
            bar.update(len(batch))
        started = time.perf_counter()
        store.mark_complete()
        store_seconds += time.perf_counter() - started
    log.info(
        "store %s: %s written (sources %.1f s, store %.1f s), %d in all",
        store.path,
        plural(written, "document"),
        source_seconds,
        store_seconds,
        len(store),
    )


# -- fingerprints --------------------------------------------------------------------------


def model_fingerprint(project: Project) -> str:
    """Identifies a source project's trained model and what it returns: the model version,
    its files' checksums and the top_k it suggests with."""
    version_dir, manifest = read_model(project.model_dir, project.project_id)
    files = {name: info["sha256"] for name, info in sorted(manifest["files"].items())}
    described = {"version": version_dir.name, "files": files, "top_k": _top_k(project)}
    return _digest(json.dumps(described, sort_keys=True).encode("utf-8"))


def corpus_fingerprint(paths: Sequence[Path], *, language: str) -> str:
    """Identifies a corpus by its content (each file's bytes; a directory's files by relative
    name and bytes) and the options it is read with."""
    paths = check_corpus_paths(paths)
    digest = hashlib.sha256(json.dumps({"language": language}).encode("utf-8"))
    for path in map(Path, paths):
        if path.is_dir():
            digest.update(b"dir\0")
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                digest.update(file.relative_to(path).as_posix().encode("utf-8") + b"\0")
                _hash_file(digest, file)
        else:
            digest.update(b"file\0")
            _hash_file(digest, path)
    return digest.hexdigest()[:16]


def _hash_file(digest: Any, path: Path) -> None:
    digest.update(str(path.stat().st_size).encode("ascii") + b"\0")
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _top_k(project: Project) -> int:
    top_k = project.config.params.get("top_k", _DEFAULT_TOP_K)
    return top_k if isinstance(top_k, int) else _DEFAULT_TOP_K


def _changes(meta: Mapping[str, Any], fingerprints: Mapping[str, str]) -> list[str]:
    """Why a store built with ``meta`` does not hold what ``fingerprints`` describe."""
    if "error" in meta:
        return [f"the store cannot be read ({meta['error']})"]
    old: Mapping[str, str] = meta["fingerprints"]
    reasons = []
    if old.get(_VOCABULARY) != fingerprints[_VOCABULARY]:
        reasons.append("the vocabulary changed since the store was built")
    # The store's columns are in its source_names order; its fingerprints (a JSON object,
    # stored with sorted keys) do not keep that order.
    old_sources = list(meta["source_names"])
    new_sources = [k.removeprefix(_SOURCE) for k in fingerprints if k.startswith(_SOURCE)]
    if old_sources != new_sources:
        reasons.append(
            f"the sources are {', '.join(new_sources)}; the store has {', '.join(old_sources)}"
        )
    else:
        reasons.extend(
            f"source '{name}' was retrained since the store was built"
            for name in new_sources
            if old[_SOURCE + name] != fingerprints[_SOURCE + name]
        )
    if old.get(CORPUS_FINGERPRINT) != fingerprints[CORPUS_FINGERPRINT]:
        reasons.append("the training corpus changed since the store was built")
    return reasons


# -- the store's directory -----------------------------------------------------------------


def _stored_meta(path: Path) -> dict[str, Any] | None:
    """What the store at ``path`` was built from; None when there is no store there."""
    if not (path / "data.mdb").is_file():
        return None
    try:
        with SuggestionStore.open(path) as store:
            return {
                "fingerprints": store.fingerprints,
                "source_names": store.source_names,
                "complete": store.complete,
                "documents": len(store),
            }
    except StoreError as exc:
        return {"error": str(exc)}


def _swap(staging: Path, path: Path) -> None:
    """Replace the store at ``path`` by the complete one at ``staging``."""
    retired = path.with_name(path.name + ".old")
    shutil.rmtree(retired, ignore_errors=True)
    if path.exists():
        os.rename(path, retired)
    os.rename(staging, path)
    shutil.rmtree(retired, ignore_errors=True)


def _finish_interrupted_swap(path: Path, staging: Path) -> None:
    # A build killed between the two renames of _swap left the new store only at staging.
    if not path.exists() and (staging / "data.mdb").is_file():
        os.rename(staging, path)
    shutil.rmtree(path.with_name(path.name + ".old"), ignore_errors=True)
