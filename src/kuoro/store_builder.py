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

from kuoro.batch_suggest import suggest_corpus_all
from kuoro.corpus import Corpus
from kuoro.errors import KuoroError
from kuoro.model_files import read_model
from kuoro.project import Project
from kuoro.store import StoreError, SuggestionStore
from kuoro.vocab import Vocabulary

__all__ = ["build_store", "corpus_fingerprint", "model_fingerprint"]

log = logging.getLogger(__name__)

_VOCABULARY = "vocabulary"
_CORPUS = "corpus"
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
) -> SuggestionStore:
    """The store of the projects' suggestions for the corpus at ``path``, opened for reading.

    With ``cached`` an existing complete store with the same fingerprints is reused; without
    it the store is always rebuilt.
    """
    path = Path(path)
    if not projects:
        raise KuoroError("a suggestion store needs at least one source project")
    for project in projects:
        if project.config.vocab != vocabulary.name:
            raise KuoroError(
                f"source '{project.project_id}' uses vocabulary '{project.config.vocab}', "
                f"not '{vocabulary.name}'"
            )
    top_ks = [_top_k(project) for project in projects]
    fingerprints = {
        _VOCABULARY: vocabulary.fingerprint,
        **{_SOURCE + p.project_id: model_fingerprint(p) for p in projects},
        _CORPUS: corpus_fingerprint(corpus_paths, language=language),
    }
    staging = path.with_name(path.name + ".new")
    _finish_interrupted_swap(path, staging)

    existing = _stored_meta(path)
    target, done = path, False
    if existing is not None:
        reasons = _changes(existing, fingerprints) or (
            [] if cached else ["a rebuild was requested"]
        )
        if not reasons and existing["complete"]:
            log.info("reusing store %s (%d documents)", path, existing["documents"])
            return SuggestionStore.open(path)
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
    return SuggestionStore.open(path)


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
        log.info("resuming store %s: %d documents stored already, skipping them", store.path, done)
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
        "store %s: %d documents written (sources %.1f s, store %.1f s), %d in all",
        store.path,
        written,
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
    if old.get(_CORPUS) != fingerprints[_CORPUS]:
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
