"""Filling a SuggestionStore once with what the sources suggest for a corpus.

The store layer knows no project: a build is given what the store must hold (its
``StoreSpec``: the sources' names, the vocabulary's size, fingerprints of the vocabulary, of
each source's model and of the corpus) and a function that yields the row batches, from a
given document on. A later build of the same spec reuses a complete store and resumes an
incomplete one (a killed build skips the documents already stored); a changed fingerprint is
reported by name and the store rebuilt beside the old one, which is replaced only when the new
one is complete.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import scipy.sparse as sp
from tqdm import tqdm

from kuoro.errors import KuoroError
from kuoro.store.suggestion_store import StoreError, SuggestionStore
from kuoro.util.locks import FileLock
from kuoro.util.progress import DOC_UNIT
from kuoro.util.wording import plural

__all__ = [
    "CORPUS_FINGERPRINT",
    "VOCABULARY_FINGERPRINT",
    "RowBatches",
    "StoreSpec",
    "build_store",
    "source_fingerprint_key",
    "store_changes",
    "stored_meta",
]

log = logging.getLogger(__name__)

# The keys of a store's fingerprints: the vocabulary's, each source's ("source:" + its name)
# and the corpus's.
VOCABULARY_FINGERPRINT = "vocabulary"
CORPUS_FINGERPRINT = "corpus"
_SOURCE = "source:"

# One batch of documents: their gold concept ids and one (documents × V) row block per source.
RowBatch = tuple[Sequence[Sequence[int]], Sequence[sp.spmatrix]]
# The batches of a corpus from its document ``skip`` on (a resumed build skips those stored).
RowBatches = Callable[[int], Iterator[RowBatch]]


def source_fingerprint_key(name: str) -> str:
    """The key of a source's fingerprint among a store's fingerprints."""
    return _SOURCE + name


@dataclass(frozen=True)
class StoreSpec:
    """What a store holds: the sources (in column order), the vocabulary's size, the most
    suggestions a source gives per document, and the fingerprints that identify the
    vocabulary, each source's model and the corpus."""

    source_names: tuple[str, ...]
    vocab_size: int
    top_k: int
    fingerprints: Mapping[str, str]

    def __post_init__(self) -> None:
        if not self.source_names:
            raise KuoroError("a suggestion store needs at least one source")
        missing = [
            key
            for key in (
                VOCABULARY_FINGERPRINT,
                CORPUS_FINGERPRINT,
                *map(source_fingerprint_key, self.source_names),
            )
            if key not in self.fingerprints
        ]
        if missing:
            raise ValueError(f"the store's fingerprints lack {', '.join(missing)}")


def build_store(
    path: str | Path,
    spec: StoreSpec,
    batches: RowBatches,
    *,
    cached: bool = True,
    progress: bool = False,
    lock: FileLock | None = None,
) -> SuggestionStore:
    """The store at ``path`` holding ``spec``, filled from ``batches`` where needed, opened
    for reading.

    With ``cached`` an existing complete store of the same fingerprints is reused; without
    it the store is always rebuilt. ``lock``: the store's lock, taken (or already held)
    exclusively while the store is checked and built, then shared until the returned store
    is closed, so that no other process rebuilds it under a reader.
    """
    path = Path(path)
    if lock is not None:
        lock.acquire_waiting()
    try:
        _build(path, spec, batches, cached, progress)
        store = SuggestionStore.open(path)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    if lock is not None:
        lock.share()
        store.hold(lock.release)
    return store


def _build(path: Path, spec: StoreSpec, batches: RowBatches, cached: bool, progress: bool) -> None:
    """Make the store at ``path`` hold what ``spec`` describes, complete."""
    staging = path.with_name(path.name + ".new")
    _finish_interrupted_swap(path, staging)

    existing = stored_meta(path)
    target, done = path, False
    if existing is not None:
        reasons = store_changes(existing, spec.fingerprints) or (
            [] if cached else ["a rebuild was requested"]
        )
        if not reasons and existing["complete"]:
            log.info("reusing store %s (%s)", path, plural(existing["documents"], "document"))
            return
        if reasons:
            # The old store stays usable until the new one is complete.
            log.info("%s; rebuilding", "; ".join(reasons))
            target = staging
            staged = stored_meta(staging)
            if staged is None or store_changes(staged, spec.fingerprints) or not cached:
                shutil.rmtree(staging, ignore_errors=True)
            else:
                done = staged["complete"]  # killed after finishing, before the swap

    if not done:
        store = SuggestionStore.create(
            target,
            source_names=spec.source_names,
            vocab_size=spec.vocab_size,
            fingerprints=spec.fingerprints,
            top_k=spec.top_k,
            chunk_size=256,
        )
        with store:
            _fill(store, batches, progress)
    if target == staging:
        _swap(staging, path)


def _fill(store: SuggestionStore, batches: RowBatches, progress: bool) -> None:
    done = len(store)
    if done:
        stored = plural(done, "document")
        log.info("resuming store %s: %s stored already, skipping them", store.path, stored)
    source_seconds = store_seconds = 0.0
    written = 0
    with tqdm(
        desc="sources → store",
        unit=DOC_UNIT,
        initial=done,
        disable=not progress,
        file=sys.stderr,
        dynamic_ncols=True,
    ) as bar:
        rows = batches(done)
        while True:
            started = time.perf_counter()
            item = next(rows, None)
            source_seconds += time.perf_counter() - started
            if item is None:
                break
            gold, blocks = item
            started = time.perf_counter()
            store.append(gold, blocks)
            store_seconds += time.perf_counter() - started
            written += len(gold)
            bar.update(len(gold))
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


def store_changes(meta: Mapping[str, Any], fingerprints: Mapping[str, str]) -> list[str]:
    """Why a store built with ``meta`` does not hold what ``fingerprints`` describe."""
    if "error" in meta:
        return [f"the store cannot be read ({meta['error']})"]
    old: Mapping[str, str] = meta["fingerprints"]
    reasons = []
    if old.get(VOCABULARY_FINGERPRINT) != fingerprints[VOCABULARY_FINGERPRINT]:
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


def stored_meta(path: Path) -> dict[str, Any] | None:
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
