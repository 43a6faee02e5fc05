"""``kuoro clear``: remove what a project has in the data directory, as ``annif clear`` does."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from kuoro.config.projects import ProjectConfig
from kuoro.project.datadir import DataDir
from kuoro.project.model_files import MANIFEST

log = logging.getLogger("kuoro")


@dataclass
class Cleared:
    """What clearing a project removed, and the shared stores it left for other projects."""

    removed: list[tuple[Path, str]] = field(default_factory=list)  # (path, what it was)
    kept: list[tuple[Path, str]] = field(default_factory=list)  # (store, why it stays)


def clear_project(datadir: DataDir, config: ProjectConfig) -> Cleared:
    """Remove the project's model versions, learn store, training checkpoint and hyperparameter
    search, and the shared suggestion stores that were its own: the store its current model
    was trained on and, for a fusion project, every store over exactly its sources; a store
    another project's current model was trained on stays, and so does one in use.

    The project's lock is held throughout, so no training or learning of it runs meanwhile
    (BusyError when one does).
    """
    pid = config.project_id
    cleared = Cleared()
    with datadir.project_lock(pid).acquire_or_fail("wait for it to finish, then clear it"):
        own = _own_stores(datadir, config)
        used = {
            store: other
            for other, store in _trained_stores(datadir)
            if other != pid and store is not None
        }
        for path in datadir.project_files(pid):
            _remove(path)
            cleared.removed.append((path, _what(datadir, pid, path)))
        for store in sorted(own):
            if not store.exists():
                continue
            if store in used:
                cleared.kept.append((store, f"the current model of '{used[store]}' uses it"))
                continue
            lock = datadir.store_lock(store)
            if not lock.try_acquire():
                cleared.kept.append((store, "in use by another process"))
                continue
            try:
                for path in (store, *(store.with_name(store.name + s) for s in (".new", ".old"))):
                    if path.exists():
                        _remove(path)
                cleared.removed.append((store, "shared suggestion store"))
            finally:
                lock.release()
    return cleared


def _own_stores(datadir: DataDir, config: ProjectConfig) -> set[Path]:
    """The shared stores that are the project's: its current model's, and for a fusion project
    those over exactly its sources (its training and validation stores, also of earlier
    trainings, and stores another fusion project over the same sources shares)."""
    own = {store for pid, store in _trained_stores(datadir) if pid == config.project_id and store}
    if config.kind == "fusion":
        sources = tuple(ref.project_id for ref in config.sources)
        own.update(store for store in datadir.stores() if _source_names(store) == sources)
    return {path.resolve() for path in own}


def _trained_stores(datadir: DataDir) -> Iterator[tuple[str, Path | None]]:
    """(project id, the store its current model was trained on, or None) for every project
    with a current model in the data directory, configured or not."""
    for pid in datadir.trained_project_ids():
        pointer = datadir.current_pointer(pid)
        try:
            version = pointer.read_text(encoding="utf-8").strip()
            manifest = json.loads((pointer.parent / version / MANIFEST).read_text("utf-8"))
            recorded = manifest.get("training", {}).get("store")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(recorded, str) and recorded:
            yield pid, datadir.recorded_store(recorded, pid).resolve()
        else:
            yield pid, None


def _source_names(store: Path) -> tuple[str, ...] | None:
    """The source projects a store holds the suggestions of; None if it cannot be read."""
    from kuoro.store.suggestion_store import SuggestionStore

    try:
        with SuggestionStore.open(store) as opened:
            return opened.source_names
    except Exception:  # a damaged or foreign store is not taken for anyone's
        return None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _what(datadir: DataDir, pid: str, path: Path) -> str:
    names = {
        datadir.project_dir(pid): "model versions",
        datadir.learn_store_path(pid): "learn store",
        datadir.checkpoint_dir(pid): "training checkpoint",
        datadir.hyperopt_storage(pid): "hyperparameter search",
        datadir.thresholds_path(pid): "per-concept thresholds",
    }
    return names.get(path, "suggestion store of an earlier Kuoro")
