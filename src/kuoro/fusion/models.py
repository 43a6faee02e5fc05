"""Fusion models: three families behind one interface, all reading candidate sets.

Every model maps a ``CandidateBatch`` to one logit per candidate (``forward``); ranking by
logit is ranking by probability, and ``predict_scores`` gives the probabilities in [0, 1].
Nothing here is documents × vocabulary: the only V-sized parameters are per-concept tables,
looked up by the batch's candidate concepts (``batch.concepts``, and nothing else) through
``nn.Embedding(sparse=True)``, so that their gradient holds the looked-up rows alone and
``torch.optim.SparseAdam`` updates only those: a training step costs the same at any V.

* ``mean``: the weighted mean of the sources' scores, the classic ensemble; nothing to train.
* ``linear``: a sparse equivalent of Annif's PyTorch ensemble: per-concept × per-source weights
  on log1p(scores), per-concept and global bias, output sigmoid(20 · z).
* ``kuoro``: the weighted mean with a per-document gate over the sources, calibrated, plus
  residual corrections (a shared MLP over the candidate features, a per-concept bias) that
  start at zero, so that an untrained model ranks exactly like ``mean``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from kuoro.fusion.candidates import SOURCE_FEATURES, feature_names
from kuoro.fusion.tensors import CandidateBatch

FAMILIES = ("mean", "linear", "kuoro")
LOGIT_EPS = 1e-6  # the mean is clamped to [eps, 1 - eps] before its logit
LINEAR_OUTPUT_SCALE = 20.0
# How Annif trains its ensemble; the linear family is meant to be trained the same way.
LINEAR_TRAINING = {"lr": 0.003, "batch_size": 256, "patience": 2, "loss": "bce", "monitor": "ndcg"}
# The document-level columns of each source that the gate reads (its confidence in a document).
GATE_FEATURES = ("top", "mass", "count")


def source_weights_tensor(weights: Sequence[float] | None, n_sources: int) -> Tensor:
    """(S,) float32 weights summing to 1; equal weights when none are given."""
    if weights is None:
        weights = [1.0] * n_sources
    if len(weights) != n_sources:
        raise ValueError(f"{len(weights)} source weights for {n_sources} sources")
    w = torch.tensor([float(x) for x in weights], dtype=torch.float32)
    if bool((w < 0).any()) or not float(w.sum()) > 0:
        raise ValueError(f"source weights must be non-negative with a positive sum: {weights}")
    return w / w.sum()


@dataclass
class ParameterGroups:
    """A model's trainable parameters, split by how the optimizer treats them."""

    decay: list[Tensor]  # dense matrices: AdamW with weight decay
    no_decay: list[Tensor]  # dense biases, scales and gate priors: AdamW without decay
    sparse: list[Tensor]  # per-concept tables with sparse gradients: SparseAdam


@runtime_checkable
class HasParameterGroups(Protocol):
    def parameter_groups(self) -> ParameterGroups: ...


def parameter_groups(model: nn.Module) -> ParameterGroups:
    """Sparse: weights of ``nn.Embedding(sparse=True)``; decay: other parameters of ≥ 2 dims."""
    sparse = [m.weight for m in model.modules() if isinstance(m, nn.Embedding) and m.sparse]
    sparse_ids = {id(p) for p in sparse}
    dense = [p for p in model.parameters() if p.requires_grad and id(p) not in sparse_ids]
    return ParameterGroups(
        decay=[p for p in dense if p.ndim >= 2],
        no_decay=[p for p in dense if p.ndim < 2],
        sparse=[p for p in sparse if p.requires_grad],
    )


def make_optimizers(
    model: nn.Module | HasParameterGroups, lr: float, weight_decay: float = 0.01
) -> list[torch.optim.Optimizer]:
    """AdamW for the dense parameters and SparseAdam for the per-concept tables (if any)."""
    if isinstance(model, HasParameterGroups):
        groups = model.parameter_groups()
    else:
        groups = parameter_groups(model)
    optimizers: list[torch.optim.Optimizer] = []
    if groups.decay or groups.no_decay:
        optimizers.append(
            torch.optim.AdamW(
                [
                    {"params": groups.decay, "weight_decay": weight_decay},
                    {"params": groups.no_decay, "weight_decay": 0.0},
                ],
                lr=lr,
            )
        )
    if groups.sparse:
        optimizers.append(torch.optim.SparseAdam(groups.sparse, lr=lr))
    return optimizers


class FusionModel(nn.Module):
    """The interface: ``forward(batch) -> (m,)`` logits, higher ranks first."""

    def forward(self, batch: CandidateBatch) -> Tensor:
        raise NotImplementedError

    def scores_from_logits(self, logits: Tensor) -> Tensor:
        """The family's output transform of its logits (elementwise, no parameters)."""
        return torch.sigmoid(logits)

    def predict_scores(self, batch: CandidateBatch) -> Tensor:
        """(m,) scores in [0, 1]."""
        logits: Tensor = self(batch)
        return self.scores_from_logits(logits)

    def regularization(self, batch: CandidateBatch) -> Tensor:
        """A penalty to add to the loss, on the parameters this batch touches (0 by default)."""
        return batch.features.new_zeros(())

    def parameter_groups(self) -> ParameterGroups:
        return parameter_groups(self)


class MeanFusion(FusionModel):
    """The weighted mean of the sources' scores (absent = 0): the floor to beat."""

    weights: Tensor

    def __init__(self, source_weights: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("weights", source_weights_tensor(source_weights, len(source_weights)))

    def mean(self, batch: CandidateBatch) -> Tensor:
        return batch.scores @ self.weights

    def forward(self, batch: CandidateBatch) -> Tensor:
        return torch.logit(self.mean(batch), eps=LOGIT_EPS)

    def predict_scores(self, batch: CandidateBatch) -> Tensor:
        return self.mean(batch)


class LinearFusion(FusionModel):
    """z = Σ_s W[c, s] · log1p(score_s) + b[c] + b; output sigmoid(20 z), as Annif's ensemble.

    ``W`` starts at the source weights for every concept, the biases at 0. Where Annif keeps
    dense V × S weights that AdamW decays at every step, these are sparse tables that
    SparseAdam updates only where a batch looks them up (no weight decay on them).
    """

    def __init__(self, n_concepts: int, source_weights: Sequence[float]) -> None:
        super().__init__()
        weights = source_weights_tensor(source_weights, len(source_weights))
        self.source_weight = nn.Embedding(n_concepts, len(weights), sparse=True)
        self.concept_bias = nn.Embedding(n_concepts, 1, sparse=True)
        self.bias = nn.Parameter(torch.zeros(()))
        with torch.no_grad():
            self.source_weight.weight.copy_(weights.expand(n_concepts, -1))
            self.concept_bias.weight.zero_()

    def forward(self, batch: CandidateBatch) -> Tensor:
        w: Tensor = self.source_weight(batch.concepts)
        bias: Tensor = self.concept_bias(batch.concepts)[:, 0]
        z = (torch.log1p(batch.scores) * w).sum(-1) + bias
        # The factor 20 sits in the logit so that sigmoid(logit) is the model's output.
        return LINEAR_OUTPUT_SCALE * (z + self.bias)


def _keep_top_k(logits: Tensor, k: int) -> Tensor:
    """The k largest of each row, the rest -inf (a softmax over it renormalises the k).

    Ties go to the lower index, as in the numpy model (``torch.topk`` leaves them unspecified,
    and an untrained gate is all ties).
    """
    top = torch.argsort(logits, dim=-1, descending=True, stable=True)[..., :k]
    return torch.full_like(logits, float("-inf")).scatter(-1, top, logits.gather(-1, top))


class KuoroFusion(FusionModel):
    """The gated, calibrated weighted mean plus residual corrections that start at zero.

    logit = a · logit(Σ_s g_s · score_s) + b + mlp(features, mean) + c[concept]
            + Σ_s t[concept, s] · score_s, where
    g = softmax over sources of (log w + linear(each source's top score, mass, count in the
    document)), a = exp(log_a). The gate is the configured weights until trained, the
    calibration the identity, the last MLP layer and the concept tables zero: an untrained
    model ranks like ``MeanFusion`` (up to float rounding). ``t`` (``concept_sources``) is
    each concept's own trust in each source, learnt where the concept is seen and pulled
    towards zero with the concept biases by ``concept_l2``. A source that suggests nothing
    for a document gets no gate there (the others share its weight: the same ranking, better
    calibration).
    ``gate_top_k`` > 0 keeps each document's k largest gates (mixture-of-experts top-k).
    """

    gate_columns: Tensor
    concept_l2: Tensor

    def __init__(
        self,
        n_concepts: int,
        n_sources: int,
        n_features: int,
        *,
        source_weights: Sequence[float] | None = None,
        hidden_size: int = 64,
        dropout: float = 0.0,
        gate_top_k: int = 0,
        concept_l2: float = 1e-3,
        concept_sources: bool = True,
    ) -> None:
        super().__init__()
        if n_features != len(feature_names(n_sources)):
            raise ValueError(
                f"{n_features} features, but {n_sources} sources have "
                f"{len(feature_names(n_sources))}"
            )
        if not 0 <= gate_top_k <= n_sources:
            raise ValueError(f"gate_top_k must be in [0, {n_sources}], not {gate_top_k}")
        self.gate_top_k = gate_top_k
        per_source = len(SOURCE_FEATURES)
        offsets = [list(SOURCE_FEATURES).index(name) for name in GATE_FEATURES]
        columns = [s * per_source + j for s in range(n_sources) for j in offsets]
        self.register_buffer("gate_columns", torch.tensor(columns), persistent=False)
        self.count_offset = GATE_FEATURES.index("count")

        weights = source_weights_tensor(source_weights, n_sources)
        # A zero weight becomes a tiny gate, not -inf, so that training can still raise it.
        self.gate_prior = nn.Parameter(torch.log(weights.clamp_min(1e-9)))
        self.gate = nn.Linear(len(columns), n_sources, bias=False)
        self.log_scale = nn.Parameter(torch.zeros(()))
        self.shift = nn.Parameter(torch.zeros(()))
        self.mlp = nn.Sequential(
            nn.Linear(n_features + 1, hidden_size),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_size, hidden_size),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_size, 1),
        )
        self.concept_bias = nn.Embedding(n_concepts, 1, sparse=True)
        self.concept_sources = concept_sources
        if concept_sources:
            self.concept_source = nn.Embedding(n_concepts, n_sources, sparse=True)
        # A buffer, not a float, so that members of an ensemble may each have their own.
        self.register_buffer("concept_l2", torch.tensor(float(concept_l2)))
        with torch.no_grad():
            self.gate.weight.zero_()
            last = self.mlp[-1]
            assert isinstance(last, nn.Linear)
            last.weight.zero_()
            last.bias.zero_()
            self.concept_bias.weight.zero_()
            if concept_sources:
                self.concept_source.weight.zero_()

    def extra_repr(self) -> str:
        return f"gate_top_k={self.gate_top_k}"

    def gate_weights(self, batch: CandidateBatch) -> Tensor:
        """(n_docs, S) each document's gate over the sources (rows sum to 1)."""
        n_sources, n_columns = batch.n_sources, len(self.gate_columns)
        if batch.n_candidates:
            # The gate's columns are the same for every candidate of a document: read its first.
            first = batch.doc_offsets[:-1].clamp(max=batch.n_candidates - 1)
            doc_features = batch.features[first].index_select(-1, self.gate_columns)
        else:
            doc_features = batch.features.new_zeros(batch.n_docs, n_columns)
        logits = self.gate_prior + self.gate(doc_features)
        counts = doc_features.reshape(-1, n_sources, len(GATE_FEATURES))[..., self.count_offset]
        silent = counts <= 0
        # A document with candidates has a source that spoke; the guard is for empty ones.
        silent = silent & ~silent.all(-1, keepdim=True)
        logits = logits.masked_fill(silent, float("-inf"))
        if self.gate_top_k:
            logits = _keep_top_k(logits, self.gate_top_k)
        return torch.softmax(logits, dim=-1)

    def forward(self, batch: CandidateBatch) -> Tensor:
        gate = self.gate_weights(batch)[batch.doc_index]
        mean = (gate * batch.scores).sum(-1)
        base = torch.logit(mean, eps=LOGIT_EPS) * self.log_scale.exp() + self.shift
        correction: Tensor = self.mlp(torch.cat([batch.features, mean[:, None]], dim=-1))[:, 0]
        concept: Tensor = self.concept_bias(batch.concepts)[:, 0]
        logits = base + correction + concept
        if self.concept_sources:
            trust: Tensor = self.concept_source(batch.concepts)
            logits = logits + (trust * batch.scores).sum(-1)
        return logits

    def regularization(self, batch: CandidateBatch) -> Tensor:
        """concept_l2 · the mean squares of the batch's per-concept corrections."""
        rows: Tensor = self.concept_bias(batch.concepts)
        penalty = rows.square().mean()
        if self.concept_sources:
            penalty = penalty + self.concept_source(batch.concepts).square().mean()
        return self.concept_l2 * penalty


def widen_saved_inputs(state: dict[str, Tensor], n_features: int) -> dict[str, Tensor]:
    """A saved ``KuoroFusion`` (or member ensemble) state from before feature columns were
    appended, with zero weights on them: the first MLP layer reads the features, then the
    gated mean, so the new columns go in before the mean's. The model predicts as it did."""
    widened = dict(state)
    for key, weight in state.items():
        if not key.endswith(("mlp.0.weight", "mlp__0__weight")):
            continue
        missing = n_features + 1 - weight.shape[-1]
        if missing > 0:
            zeros = weight.new_zeros((*weight.shape[:-1], missing))
            widened[key] = torch.cat([weight[..., :-1], zeros, weight[..., -1:]], dim=-1)
    return widened


KUORO_HYPERPARAMETERS = (
    "hidden_size",
    "dropout",
    "gate_top_k",
    "concept_l2",
    "concept_sources",
)


def create_model(
    family: str,
    *,
    n_concepts: int,
    n_sources: int,
    source_weights: Sequence[float] | None = None,
    **hyperparameters: float,
) -> FusionModel:
    """A model of ``family`` ("mean", "linear", "kuoro") with the standard feature columns."""
    if family not in FAMILIES:
        raise ValueError(f"unknown fusion model {family!r}; choose one of {', '.join(FAMILIES)}")
    weights = list(source_weights) if source_weights is not None else [1.0] * n_sources
    known = KUORO_HYPERPARAMETERS if family == "kuoro" else ()
    unknown = sorted(set(hyperparameters) - set(known))
    if unknown:
        raise ValueError(f"the {family} model has no hyperparameter {', '.join(unknown)}")
    if family == "mean":
        return MeanFusion(weights)
    if family == "linear":
        return LinearFusion(n_concepts, weights)
    return KuoroFusion(
        n_concepts,
        n_sources,
        len(feature_names(n_sources)),
        source_weights=weights,
        hidden_size=int(hyperparameters.get("hidden_size", 64)),
        dropout=float(hyperparameters.get("dropout", 0.0)),
        gate_top_k=int(hyperparameters.get("gate_top_k", 0)),
        concept_l2=float(hyperparameters.get("concept_l2", 1e-3)),
        concept_sources=bool(hyperparameters.get("concept_sources", True)),
    )
