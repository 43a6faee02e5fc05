"""What a fusion project trains from: the stores of its sources' suggestions (shared, see
``project.stores``), the split of a store a model was trained on, and the checkpoint of an
interrupted training run, which a run of the same data and parameters resumes."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kuoro.corpus.fingerprint import corpus_fingerprint
from kuoro.errors import ModelError
from kuoro.project.batch import Engine
from kuoro.project.fusion_files import (
    SPLIT,
)
from kuoro.project.stores import build_source_store, open_shared_store
from kuoro.store.builder import CORPUS_FINGERPRINT
from kuoro.store.suggestion_store import SuggestionStore
from kuoro.training.callbacks import CHECKPOINT_STATE
from kuoro.util.atomic import atomic_write

if TYPE_CHECKING:
    from kuoro.project.project import Project

log = logging.getLogger(__name__)


RUN = "run.json"  # in the checkpoint directory: what the run it holds trained on, and how


def learn_store(
    project: Project,
    sources: Sequence[Project],
    path: Path,
    corpus_paths: Sequence[Path],
    jobs: int,
    cached: bool,
    progress: bool,
    engine: Engine | None = None,
) -> SuggestionStore:
    return build_source_store(
        path,
        sources,
        corpus_paths,
        vocabulary=project.vocabulary,
        language=project.config.language,
        jobs=jobs,
        cached=cached,
        progress=progress,
        engine=engine,
    )


def _shared_store(
    project: Project,
    sources: Sequence[Project],
    corpus_paths: Sequence[Path],
    jobs: int,
    cached: bool,
    progress: bool,
    legacy: Path,
    engine: Engine | None,
) -> SuggestionStore:
    return open_shared_store(
        project.datadir,
        sources,
        corpus_paths,
        vocabulary=project.vocabulary,
        language=project.config.language,
        jobs=jobs,
        cached=cached,
        progress=progress,
        legacy=[legacy],
        engine=engine,
    )


@contextmanager
def training_stores(
    project: Project,
    sources: Sequence[Project],
    corpus_paths: Sequence[Path],
    *,
    jobs: int = 1,
    cached: bool = True,
    progress: bool = False,
    engine: Engine | None = None,
) -> Iterator[tuple[SuggestionStore, SuggestionStore | None]]:
    """The store of the corpora, and of the project's ``validation`` corpus when that
    parameter is a path (else None), each filled from the sources or reused. Stores are
    shared: fusion projects over the same sources and corpus use one. ``engine`` runs the
    sources (default: ``jobs`` local processes)."""
    validation = project.config.params.get("validation")
    legacy = project.datadir.legacy_store_path(project.project_id)
    with ExitStack() as stack:
        store = stack.enter_context(
            _shared_store(project, sources, corpus_paths, jobs, cached, progress, legacy, engine)
        )
        held_out = None
        if isinstance(validation, str):
            held_out_corpus = corpus_fingerprint(
                [Path(validation)], language=project.config.language
            )
            if held_out_corpus == store.fingerprints.get(CORPUS_FINGERPRINT):
                log.warning(
                    "project '%s': the validation corpus %s is the training corpus: its "
                    "documents are trained on, so they cannot tell when training overfits; "
                    "give documents the model is not trained on",
                    project.project_id,
                    validation,
                )
                held_out = store
            else:
                legacy = project.datadir.legacy_validation_store_path(project.project_id)
                held_out = stack.enter_context(
                    _shared_store(
                        project,
                        sources,
                        [Path(validation)],
                        jobs,
                        cached,
                        progress,
                        legacy,
                        engine,
                    )
                )
        yield store, held_out


def training_context(
    project: Project,
    store: SuggestionStore,
    held_out: SuggestionStore | None,
    *,
    exclude: Collection[str] = (),
) -> dict[str, Any]:
    """What training ``project`` on these stores depends on, as JSON values: the backend, the
    parameters (less ``exclude``), the sources and their weights, the data's fingerprints.
    Runs with equal contexts train alike; a hyperparameter search excludes what it varies."""
    params = {k: v for k, v in project.config.params.items() if k not in exclude}
    context = {
        "backend": project.config.backend,
        "parameters": params,
        "sources": [[ref.project_id, ref.weight] for ref in project.config.sources],
        "data": store.fingerprints,
        "validation_data": None if held_out is None else held_out.fingerprints,
    }
    loaded: dict[str, Any] = json.loads(json.dumps(context))
    return loaded


def checkpoint_dir(
    project: Project,
    store: SuggestionStore,
    held_out: SuggestionStore | None,
    *,
    resume: bool,
) -> Path:
    """Where training saves every epoch, next to the store: a run of the same data and
    parameters that an interrupted ``train`` left there is resumed (if ``resume``); any other
    is discarded."""
    directory = project.datadir.checkpoint_dir(project.project_id)
    run = {**training_context(project, store, held_out), "torch": version("torch")}
    try:
        saved = json.loads((directory / RUN).read_text(encoding="utf-8"))
        epoch = json.loads((directory / CHECKPOINT_STATE).read_text(encoding="utf-8"))
        epoch = int(epoch["state"]["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        saved, epoch = None, 0
    if resume and saved == run and epoch > 0:
        log.warning(
            "resuming the interrupted training of '%s' after epoch %d (%s)",
            project.project_id,
            epoch,
            directory,
        )
        return directory
    shutil.rmtree(directory, ignore_errors=True)
    with atomic_write(directory / RUN) as out:
        out.write(json.dumps(run, indent=1).encode())
    return directory


def original_store(
    project: Project, manifest: Mapping[str, Any], version_dir: Path
) -> tuple[SuggestionStore, tuple[np.ndarray, np.ndarray]] | None:
    """The store the model was trained on and its (trained, held-out) split, if both remain."""
    training = manifest["training"]
    expected = training.get("store_fingerprints")
    split_file = version_dir / SPLIT
    if not expected or training.get("separate_validation") or not training.get("store"):
        return None
    path = project.datadir.recorded_store(training["store"], project.project_id)
    if not ((path / "data.mdb").is_file() and split_file.is_file()):
        return None
    lock = project.datadir.store_lock(path).acquire_waiting(shared=True)
    try:
        store = SuggestionStore.open(path)
    except BaseException:
        lock.release()
        raise
    store.hold(lock.release)
    if not store.complete or store.fingerprints != expected:
        store.close()
        return None
    try:
        with np.load(split_file, allow_pickle=False) as split:
            trained, held_out = np.asarray(split["train"]), np.asarray(split["validation"])
        for part in (trained, held_out):
            if part.ndim != 1 or part.dtype.kind not in "iu":
                raise ValueError(f"positions of shape {part.shape} and type {part.dtype}")
            if len(part) and (part.min() < 0 or part.max() >= len(store)):
                raise ValueError(f"positions outside the store's {len(store)} documents")
    except Exception as exc:  # numpy's and zipfile's errors on a damaged file vary
        store.close()
        raise ModelError(
            f"project '{project.project_id}': cannot read {split_file}: {exc}; "
            f"retrain '{project.project_id}'"
        ) from exc
    return store, (trained.astype(np.int64), held_out.astype(np.int64))
