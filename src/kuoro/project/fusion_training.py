"""Fusion projects: train on the sources' suggestions and learn from new documents.

A fusion project runs its trained sources over a corpus into a suggestion store (reused while
sources and corpus are unchanged) and trains its model on the store. The model directory holds
the weights (``model.pt`` for torch, loaded with ``weights_only``; ``fusion.npz`` for
suggesting without torch, see ``fusion_loader``), the concept prior, the split of the
store into trained and held-out documents, the training history, and in the manifest the
fingerprints of the vocabulary, each source and the store, so that loading can say exactly
what changed since. Training saves every epoch next to the store (``ID.training``): a
``train`` that was interrupted and is run again on the same data and parameters goes on after
its last finished epoch, to the same model an uninterrupted run gives.

``learn`` starts from the trained weights and trains on the new documents together with the
original training documents (replayed from the store when it is still the one trained on),
choosing the epoch on the original held-out documents; the model it started from is kept
unless an epoch beats it there.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from kuoro.config.params import KuoroParams, LinearParams, fusion_params
from kuoro.errors import KuoroError, ModelError
from kuoro.fusion.batches import StorePart
from kuoro.fusion.calibration import CalibrationChoice
from kuoro.fusion.calibration_points import calibrate_on_held_out
from kuoro.fusion.candidates import ConceptPrior, feature_names
from kuoro.fusion.cooccurrence import SubjectCooccurrence
from kuoro.fusion.export import export_arrays
from kuoro.fusion.fit import (
    FitInfo,
    build_model,
    fit_fusion,
    gold_counts,
    split_positions,
    train_fusion_model,
)
from kuoro.fusion.models import widen_saved_inputs
from kuoro.fusion.numpy_model import NumpyFusion
from kuoro.project.batch import Engine
from kuoro.project.cooccurrence_files import COOCCURRENCE, load_table, table_for_training
from kuoro.project.fusion_files import (
    CALIBRATION,
    HISTORY,
    NUMPY,
    PRIOR,
    SPLIT,
    WEIGHTS,
    config_dict,
    load_prior,
    trained_sources,
)
from kuoro.project.fusion_stores import (
    checkpoint_dir,
    learn_store,
    original_store,
    training_stores,
)
from kuoro.project.model_files import read_model, write_model
from kuoro.project.results import TrainingSummary
from kuoro.project.stores import model_fingerprint
from kuoro.store.suggestion_store import SuggestionStore
from kuoro.training.callbacks import CheckpointError
from kuoro.util.wording import plural

if TYPE_CHECKING:
    from kuoro.project.project import Project

log = logging.getLogger(__name__)
# A quick learn (the REST API's): at most this many epochs, over the new documents and a sample
# of the original ones, QUICK_REPLAY_RATIO times as many as the new ones (at least the minimum).
QUICK_EPOCHS, QUICK_REPLAY_RATIO, QUICK_REPLAY_MIN = 3, 4, 256


def train_fusion(
    project: Project,
    corpus_paths: Sequence[Path],
    *,
    jobs: int = 1,
    progress: bool = False,
    cached: bool = True,
    device: str = "auto",
    engine: Engine | None = None,
) -> TrainingSummary:
    """Fill (or reuse) the project's store for the corpora and train its model on it;
    ``engine`` runs the sources (default: ``jobs`` local processes)."""
    sources = trained_sources(project)
    params = project.config.fusion_params()
    started = time.perf_counter()
    with ExitStack() as stack:
        store, held_out = stack.enter_context(
            training_stores(
                project,
                sources,
                corpus_paths,
                jobs=jobs,
                cached=cached,
                progress=progress,
                engine=engine,
            )
        )
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kuoro-")))
        documents = plural(len(store), "document")
        log.info("training fusion model '%s' on %s", project.project_id, documents)
        checkpoints = None
        if project.config.backend != "mean":  # which trains nothing
            checkpoints = checkpoint_dir(project, store, held_out, resume=cached)
        table = table_for_training(project, sources, store.vocab_size)

        def fit() -> tuple[nn.Module, FitInfo]:
            return fit_fusion(
                store,
                params,
                [ref.weight for ref in project.config.sources],
                progress=progress,
                device=device,
                validation_store=held_out,
                history_path=scratch / HISTORY,
                checkpoint_dir=checkpoints,
                cooccurrence=table,
            )

        try:
            model, info = fit()
        except CheckpointError as exc:
            assert checkpoints is not None
            log.warning("%s; discarding it and training from the start", exc)
            (scratch / HISTORY).unlink(missing_ok=True)
            checkpoints = checkpoint_dir(project, store, held_out, resume=False)
            model, info = fit()
        training = {
            "corpus": [str(p) for p in corpus_paths],
            "documents": len(store),
            "store": store.path.relative_to(project.datadir.root).as_posix(),
            "store_fingerprints": store.fingerprints,
            "separate_validation": held_out is not None,
            "cooccurrence_documents": 0 if table is None else table.documents,
            **info.summary(),
        }
        calibrate_on = (
            StorePart(held_out, np.arange(len(held_out), dtype=np.int64))
            if held_out is not None
            else StorePart(store, info.validation_positions)
        )
        summary = _save(
            project, sources, model, info, training, scratch, started, store, calibrate_on, table
        )
    if checkpoints is not None:
        shutil.rmtree(checkpoints, ignore_errors=True)
    return summary


def learn_fusion(
    project: Project,
    corpus_paths: Sequence[Path],
    *,
    jobs: int = 1,
    progress: bool = False,
    device: str = "auto",
    quick: bool = False,
    engine: Engine | None = None,
) -> TrainingSummary:
    """Update the project's trained model with the documents of ``corpus_paths``.

    ``quick``: a few bounded epochs over the new documents and a random sample of the
    original ones (the REST API's ``learn``, which a client waits for); otherwise every
    original document is replayed for up to ``max_epochs``.
    """
    pid = project.project_id
    if project.config.backend == "mean":
        raise KuoroError(f"project '{pid}' (backend 'mean') learns nothing; there is no model")
    version_dir, manifest = read_model(project.model_dir, pid, "fusion")
    model = load_torch_model(project, version_dir, manifest)
    prior_counts = load_prior(project, version_dir, int(manifest["model"]["n_concepts"]))
    table = load_table(version_dir, int(manifest["model"]["n_concepts"]))
    sources = trained_sources(project, manifest)
    params = project.config.fusion_params()
    seed = params.seed
    if quick and isinstance(params, LinearParams):
        params = dataclasses.replace(params, max_epochs=min(params.max_epochs, QUICK_EPOCHS))
    started = time.perf_counter()
    learn_path = project.datadir.learn_store_path(pid)
    with ExitStack() as stack:
        new = stack.enter_context(
            learn_store(project, sources, learn_path, corpus_paths, jobs, False, progress, engine)
        )
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kuoro-")))
        if len(new) == 0:
            raise KuoroError(f"no documents to learn from in {', '.join(map(str, corpus_paths))}")
        if not gold_counts(StorePart(new, np.arange(len(new)))).any():
            raise KuoroError(
                f"none of the {len(new)} documents to learn from has a subject in the "
                "vocabulary: there is nothing to learn from"
            )
        original = original_store(project, manifest, version_dir)
        if original is not None:
            store, split = original
            stack.enter_context(store)
            replayed = split[0]
            if quick:
                size = min(len(replayed), max(QUICK_REPLAY_MIN, QUICK_REPLAY_RATIO * len(new)))
                chosen = np.random.default_rng(seed).choice(len(replayed), size, replace=False)
                replayed = np.sort(replayed[chosen])
            train = [StorePart(store, replayed), StorePart(new, np.arange(len(new)))]
            held_out = StorePart(store, split[1])
            log.info(
                "learning from %d new documents, replaying %d of the %d trained on; choosing "
                "the epoch on the %d held out",
                len(new),
                len(replayed),
                len(split[0]),
                len(split[1]),
            )
        else:
            trained, held = split_positions(len(new), params.validation, seed)
            train, held_out = [StorePart(new, trained)], StorePart(new, held)
            log.warning(
                "the store '%s' was trained on is gone or changed: learning from the %d new "
                "documents alone, %d of them held out",
                manifest["training"].get("store"),
                len(trained),
                len(held),
            )
        # The new documents trained on join the prior (held-out ones stay out of it, as in
        # training, so that their scores do not see their own gold).
        counts = prior_counts + sum(gold_counts(part) for part in train if part.store is new)
        model, info = train_fusion_model(
            model,
            params,
            train,
            held_out,
            counts,
            seed=seed,
            progress=progress,
            device=device,
            history_path=scratch / HISTORY,
            must_improve=True,
            cooccurrence=table,
        )
        training = dict(manifest["training"])
        training["learnt"] = [
            *training.get("learnt", []),
            {
                "corpus": [str(p) for p in corpus_paths],
                "documents": len(new),
                "replayed": original is not None,
                "quick": quick,
                **info.summary(),
            },
        ]
        if original is None:
            # Later learns cannot replay a store this model no longer matches.
            training["store_fingerprints"] = None
        summary = _save(
            project, sources, model, info, training, scratch, started, new, held_out, table
        )
    if info.best_epoch == 0:
        log.warning(
            "no epoch beat the model learning started from on the held-out documents "
            "(nDCG@10 %.4f); it was kept",
            info.metrics.get("ndcg@10", float("nan")),
        )
    return summary


# -- pieces ------------------------------------------------------------------------------------


def load_torch_model(project: Project, version_dir: Path, manifest: Mapping[str, Any]) -> nn.Module:
    """The trained torch model, in eval mode."""
    pid = project.project_id
    spec = manifest["model"]
    try:
        saved = dict(manifest["params"])
        if spec["family"] == "kuoro":  # saved before concept_sources existed: trained without
            saved.setdefault("concept_sources", False)
        params = fusion_params(spec["family"], saved)
        model = build_model(
            params,
            int(spec["n_concepts"]),
            [s["weight"] for s in manifest["sources"]],
            seed=0,
        )
        state = torch.load(version_dir / WEIGHTS, map_location="cpu", weights_only=True)
        if spec["family"] == "kuoro":  # trained before the co-occurrence columns: none read
            state = widen_saved_inputs(state, len(feature_names(len(manifest["sources"]))))
        model.load_state_dict(state)
    except Exception as exc:  # a damaged file, or one written by an incompatible version
        reason = " ".join(str(exc).split())  # torch's messages run over several lines
        raise ModelError(
            f"project '{pid}': cannot load the fusion model in {version_dir}: {reason}; "
            f"retrain '{pid}'"
        ) from exc
    return model.eval()


def _calibrate(
    project: Project,
    model: NumpyFusion,
    held_out: StorePart,
    prior_counts: np.ndarray,
    table: SubjectCooccurrence | None,
) -> CalibrationChoice:
    """The calibration the project asks for, fitted on the held-out documents."""
    params = project.config.fusion_params()
    choice = calibrate_on_held_out(
        model,
        held_out.store,
        held_out.positions,
        ConceptPrior.from_counts(prior_counts),
        requested=params.calibration,
        seed=params.seed,
        cooccurrence=table,
    )
    if choice.reason:
        log.warning("project '%s': no calibration: %s", project.project_id, choice.reason)
    measured = "; ".join(
        f"{method} log-loss {values['log_loss']:.4f}, ECE {values['ece']:.4f}"
        for method, values in choice.scores.items()
    )
    log.info(
        "calibration: %s%s",
        choice.calibration.describe(),
        f" (held-out halves: {measured})" if measured else "",
    )
    return choice


def _save(
    project: Project,
    sources: Sequence[Project],
    model: nn.Module,
    info: FitInfo,
    training: dict[str, Any],
    scratch: Path,
    started: float,
    store: SuggestionStore,
    held_out: StorePart,
    table: SubjectCooccurrence | None,
) -> TrainingSummary:
    """Save the model as the project's new current version, calibrated on the ``held_out``
    documents; ``store``: what it learnt from."""
    params = project.config.fusion_params()
    # What suggesting reads: the same model as numpy arrays, so that it needs no torch.
    numpy_model = NumpyFusion.from_arrays(export_arrays(model))
    calibration = _calibrate(project, numpy_model, held_out, info.prior_counts, table)
    training = {**training, "calibration": calibration.summary()}
    seconds = time.perf_counter() - started
    metadata = {
        "project_id": project.project_id,
        "kind": "fusion",
        "backend": project.config.backend,
        "params": dict(project.config.params),
        "language": project.config.language,
        "vocabulary": {
            "name": project.vocabulary.name,
            "size": len(project.vocabulary),
            "fingerprint": project.vocabulary.fingerprint,
        },
        "sources": [
            {
                "project_id": ref.project_id,
                "weight": ref.weight,
                "fingerprint": model_fingerprint(source),
                "config": config_dict(source.config),
            }
            for ref, source in zip(project.config.sources, sources, strict=True)
        ],
        "training": {**training, "seconds": round(seconds, 3)},
        "model": {
            "family": project.config.backend,
            "n_concepts": len(info.prior_counts),
            "top_k": store.top_k,
            "members": params.members if isinstance(params, KuoroParams) else 1,
        },
        # Kuoro's and Python's versions are in every manifest already (model_files).
        "libraries": {"torch": torch.__version__, "numpy": np.__version__},
    }
    history = scratch / HISTORY

    def write_files(directory: Path) -> None:
        torch.save(model.state_dict(), directory / WEIGHTS)
        numpy_model.save(directory / NUMPY)
        if calibration.calibration.method != "none":
            calibration.calibration.save(directory / CALIBRATION)
        np.savez(directory / PRIOR, counts=info.prior_counts)
        if table is not None:
            table.save(directory / COOCCURRENCE)
        np.savez(
            directory / SPLIT, train=info.train_positions, validation=info.validation_positions
        )
        if history.is_file():
            shutil.copyfile(history, directory / HISTORY)

    model_dir = write_model(project.model_dir, metadata, write_files)
    project.last_fit = info
    project.forget_model()  # the next suggestion loads the new model
    trained = (
        "nothing to train"
        if info.best_epoch is None
        else f"{plural(info.epochs, 'epoch')}, best {info.best_epoch}"
    )
    held_out_documents = plural(info.validation_documents, "held-out document")
    report = f"{info.train_documents} training and {held_out_documents}; {trained}; " + ", ".join(
        f"{k} {v:.4f}" for k, v in info.metrics.items()
    )
    log.info("%s", report)
    return TrainingSummary(len(store), seconds, model_dir, report)
