"""Training a fusion model on a SuggestionStore: the held-out split, the batches, the Trainer.

The store holds every training document's source rows and gold; this module turns its
documents into candidate batches, keeps a held-out split apart for early stopping (never
trained on), and runs the Trainer. ``mean`` trains nothing but is still scored on the split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from kuoro.config.params import FusionParams, KuoroParams, LinearParams
from kuoro.errors import KuoroError
from kuoro.fusion.batches import CandidateSource, Epochs, StorePart, candidate_batches
from kuoro.fusion.candidates import ConceptPrior
from kuoro.fusion.cooccurrence import SubjectCooccurrence
from kuoro.fusion.losses import loss_by_name, training_objective
from kuoro.fusion.members import MemberEnsemble
from kuoro.fusion.models import (
    KUORO_HYPERPARAMETERS,
    LINEAR_TRAINING,
    create_model,
    make_optimizers,
)
from kuoro.fusion.tensors import CandidateBatch
from kuoro.store.suggestion_store import SuggestionStore
from kuoro.training import EarlyStopping, History, NDCGAtK, ProgressBar, Trainer
from kuoro.training.callbacks import CHECKPOINT_STATE, Callback, Checkpoint

# Bounds of a held-out split given as a fraction: enough documents for a steady nDCG, few
# enough that validating costs little next to an epoch.
MIN_VALIDATION, MAX_VALIDATION = 200, 5000
MONITOR = "ndcg@10"
# The config says "mix"; the losses module calls it "mixed".
_LOSS_NAMES = {"mix": "mixed"}


@dataclass(frozen=True)
class FitInfo:
    """What a fit did: the split, the epochs and the held-out scores of the returned model."""

    train_positions: np.ndarray  # positions trained on in the (first) training store
    validation_positions: np.ndarray  # its positions held out (empty with a separate store)
    validation_documents: int  # held-out documents scored (from either store)
    epochs: int  # epochs run (0 for mean)
    best_epoch: int | None  # the epoch whose weights were kept (0: those it started with)
    metrics: dict[str, float] = field(default_factory=dict)  # of the returned model
    prior_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    train_documents: int = 0  # documents trained on, over every training store

    def summary(self) -> dict[str, Any]:
        """The JSON-friendly part, for the model's metadata."""
        return {
            "train_documents": self.train_documents,
            "validation_documents": self.validation_documents,
            "epochs": self.epochs,
            "best_epoch": self.best_epoch,
            "metrics": {k: round(v, 6) for k, v in self.metrics.items()},
        }


def split_positions(
    n_documents: int, validation: object, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) store positions: random, disjoint, together all documents.

    A fraction becomes round(n · f) clamped to [200, 5000]; a count is taken as is. Either way
    at most half of the documents are held out, so that most are trained on.
    """
    if isinstance(validation, bool) or not isinstance(validation, int | float):
        raise ValueError(f"validation must be a fraction or a count here, not {validation!r}")
    if isinstance(validation, int):
        wanted = validation
    else:
        wanted = min(max(round(n_documents * validation), MIN_VALIDATION), MAX_VALIDATION)
    held_out = min(wanted, n_documents // 2)
    order = np.random.default_rng(seed).permutation(n_documents)
    return np.sort(order[held_out:]), np.sort(order[:held_out])


def gold_counts(part: StorePart) -> np.ndarray:
    """(V,) how often each concept is gold among the part's documents."""
    counts = np.zeros(part.store.vocab_size, np.int64)
    if len(part):
        for batch in part.store.batches(1024, positions=part.positions):
            counts += np.bincount(batch.gold.indices, minlength=part.store.vocab_size)
    return counts


def build_model(
    params: FusionParams,
    n_concepts: int,
    source_weights: Sequence[float],
    seed: int,
) -> nn.Module:
    """A fresh model of the parameters' family; ``members`` > 1 gives a MemberEnsemble of
    seeds seed, seed + 1, …"""

    def one(member_seed: int) -> nn.Module:
        torch.manual_seed(member_seed)
        hyper: dict[str, float | int | bool] = {}
        if isinstance(params, KuoroParams):
            hyper = {name: getattr(params, name) for name in KUORO_HYPERPARAMETERS}
        return create_model(
            params.family,
            n_concepts=n_concepts,
            n_sources=len(source_weights),
            source_weights=source_weights,
            **hyper,
        )

    if not isinstance(params, KuoroParams) or params.members <= 1:
        return one(seed)
    return MemberEnsemble(one, seeds=[seed + i for i in range(params.members)])


def _predict(model: nn.Module, batch: CandidateBatch) -> Tensor:
    scores: Tensor = model.predict_scores(batch)  # type: ignore[operator]
    return scores


def evaluate(model: nn.Module, batches: Sequence[CandidateBatch]) -> dict[str, float]:
    """The model's held-out nDCG@10 over ``batches``."""
    metric = NDCGAtK(10)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for batch in batches:
            metric.update(_predict(model, batch), batch)  # type: ignore[arg-type]  # has labels
    model.train(was_training)
    return {MONITOR: metric.compute()} if batches else {}


def fit_fusion(
    store: SuggestionStore,
    params: FusionParams,
    source_weights: Sequence[float],
    *,
    progress: bool = False,
    device: str = "cpu",
    validation_store: SuggestionStore | None = None,
    history_path: Path | None = None,
    callbacks: Sequence[Callback] = (),
    checkpoint_dir: Path | None = None,
    cooccurrence: SubjectCooccurrence | None = None,
) -> tuple[nn.Module, FitInfo]:
    """Train a fusion model of the parameters' family on the store's documents (seeded with
    ``params.seed``); the model is on the CPU.

    The held-out documents are ``validation_store``'s, or a random split of ``store`` as the
    ``validation`` parameter says; they are scored, never trained on, and not in the prior.
    ``callbacks`` run after the built-in ones (early stopping, history, progress bar).
    ``checkpoint_dir``: every epoch is saved there, and a run it holds is resumed (the caller
    makes sure it is a run of the same data and parameters).
    ``cooccurrence``: the subject co-occurrence table the candidates' features read.
    """
    if len(store) == 0:
        raise KuoroError(f"the suggestion store {store.path} holds no documents to train on")
    if validation_store is not None:
        train = StorePart(store, np.arange(len(store), dtype=np.int64))
        held_out = StorePart(validation_store, np.arange(len(validation_store), dtype=np.int64))
    else:
        train_positions, held_positions = split_positions(
            len(store), params.validation, params.seed
        )
        train, held_out = StorePart(store, train_positions), StorePart(store, held_positions)
    seed = params.seed
    torch.manual_seed(seed)
    model = build_model(params, store.vocab_size, source_weights, seed)
    return train_fusion_model(
        model,
        params,
        [train],
        held_out,
        gold_counts(train),
        seed=seed,
        progress=progress,
        device=device,
        history_path=history_path,
        callbacks=callbacks,
        checkpoint_dir=checkpoint_dir,
        cooccurrence=cooccurrence,
    )


def train_fusion_model(
    model: nn.Module,
    params: FusionParams,
    train: Sequence[StorePart],
    held_out: StorePart,
    prior_counts: np.ndarray,
    *,
    seed: int,
    progress: bool = False,
    device: str = "cpu",
    history_path: Path | None = None,
    callbacks: Sequence[Callback] = (),
    must_improve: bool = False,
    checkpoint_dir: Path | None = None,
    cooccurrence: SubjectCooccurrence | None = None,
) -> tuple[nn.Module, FitInfo]:
    """Train ``model`` (fresh or already trained) on the ``train`` parts; it ends on the CPU.

    ``held_out`` documents choose the epoch to keep; ``prior_counts`` is the concept prior the
    model reads, counted on the training documents. ``must_improve``: the model as given is
    scored first, and kept unless an epoch beats it on the held-out documents (``learn``).
    ``checkpoint_dir`` and ``cooccurrence``: as in ``fit_fusion``.
    """
    if not prior_counts.any():
        raise KuoroError(
            f"none of the {sum(len(part) for part in train)} training documents has a subject "
            "in the vocabulary: there is nothing to learn from"
        )
    source = CandidateSource(ConceptPrior.from_counts(prior_counts), cooccurrence)
    target = torch.device(_device(device))
    val_batches = [
        b.to(target)
        for b in candidate_batches(held_out.store, held_out.positions, 256, source, training=False)
    ]
    if val_batches and not any(bool(b.n_gold.any()) for b in val_batches if b.n_gold is not None):
        raise KuoroError(
            f"none of the {len(held_out)} held-out documents has a subject in the vocabulary: "
            "they cannot score the model"
        )
    model = model.to(target)
    baseline = evaluate(model, val_batches).get(MONITOR) if must_improve else None
    epochs, best_epoch = 0, None
    if isinstance(params, LinearParams):  # a model that trains
        resume = checkpoint_dir is not None and (checkpoint_dir / CHECKPOINT_STATE).is_file()
        if checkpoint_dir is not None:
            callbacks = [*callbacks, Checkpoint(checkpoint_dir)]
        trainer = _trainer(
            model,
            params,
            val_batches,
            progress,
            history_path,
            seed,
            callbacks,
            baseline=baseline,
        )
        epochs_of = Epochs(train, params.batch_size, source, seed, target)
        state = trainer.fit(
            epochs_of.epoch,
            val_batches or None,
            max_epochs=params.max_epochs,
            resume_from=checkpoint_dir if resume else None,
        )
        epochs = state.epoch
        best_epoch = state.best_epoch if state.best_epoch is not None else state.epoch
    metrics = evaluate(model, val_batches)
    model = model.to("cpu").eval()
    first = train[0] if train else StorePart(held_out.store, np.zeros(0, np.int64))
    same_store = held_out.store is first.store
    info = FitInfo(
        first.positions,
        held_out.positions if same_store else np.zeros(0, np.int64),
        len(held_out),
        epochs,
        best_epoch,
        metrics,
        prior_counts,
        train_documents=sum(len(part) for part in train),
    )
    return model, info


def _trainer(
    model: nn.Module,
    params: LinearParams,
    val_batches: Sequence[CandidateBatch],
    progress: bool,
    history_path: Path | None,
    seed: int,
    extra_callbacks: Sequence[Callback] = (),
    *,
    baseline: float | None = None,
) -> Trainer:
    """The Trainer for ``model``."""
    loss_name: str = str(LINEAR_TRAINING["loss"])  # Annif's ensemble: plain BCE
    weight_decay = 0.0  # and no weight decay
    if isinstance(params, KuoroParams):
        loss_name, weight_decay = params.loss, params.weight_decay
    loss = loss_by_name(_LOSS_NAMES.get(loss_name, loss_name))
    optimizers = make_optimizers(model, params.learning_rate, weight_decay)
    callbacks: list[Callback] = []
    if params.early_stopping and val_batches:
        callbacks.append(
            EarlyStopping(monitor=MONITOR, mode="max", patience=params.patience, baseline=baseline)
        )
    if history_path is not None:
        callbacks.append(History(history_path))
    if progress:
        callbacks.append(ProgressBar(enabled=True))
    callbacks.extend(extra_callbacks)
    return Trainer(
        model,
        optimizers[0],
        training_objective(loss),
        optimizers=optimizers[1:],
        callbacks=callbacks,
        metrics={MONITOR: NDCGAtK(10)},
        predict_fn=_predict,
        seed=seed,
    )


def _device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise KuoroError("--device cuda was asked for, but torch sees no CUDA device")
    return name
