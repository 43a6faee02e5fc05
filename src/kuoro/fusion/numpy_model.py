"""Trained fusion models as plain numpy arrays: scoring candidates without importing torch.

``kuoro.fusion.export.export_arrays`` turns a trained torch model (``MeanFusion``,
``LinearFusion``, ``KuoroFusion``, or a ``MemberEnsemble`` of one of them) into named arrays,
with metadata arrays (format, version, family, member count, the constants of the math, the
feature columns) that make a saved ``.npz`` file self-describing. ``NumpyFusion`` reads them
back, checks every key, dtype and shape, and computes what the torch model's
``predict_scores`` computes in eval mode (dropout off), vectorised over all candidates of a
batch and all members at once, in float32.

Every parameter array has a leading member dimension (1 for a single model); members average
their scores, not their logits, as ``MemberEnsemble.predict_scores`` does. This module never
imports torch, so that serving a saved model never loads it.

``NumpyFusion.explain`` takes each member's value before the output transform (the logit;
for ``mean`` the weighted mean itself) apart into named terms that add up to it (``Parts``),
computed in float64 by the same code as the forward pass, so that the sum is exact to float64
rounding (``kuoro.fusion.explain`` turns them into per-suggestion records).
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from kuoro.errors import ModelError
from kuoro.fusion.array_reader import ArrayReader, bad_model
from kuoro.fusion.candidates import Candidates, feature_names
from kuoro.util.atomic import atomic_write

FORMAT = "kuoro-fusion-numpy"
FORMAT_VERSION = 1

# Activations per block of the MLP (float32: 1 MiB), so that they stay in the CPU's L2 cache.
MLP_BLOCK = 2**18

# Size names of array dimensions, bound by the first array that has them.
MEMBERS, SOURCES, CONCEPTS = "members", "sources", "concepts"


# --- numerics, float32 in, float32 out --------------------------------------------------------


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) without overflow: exp only ever sees -|x|."""
    e = np.exp(-np.abs(x))
    return np.asarray(np.where(x >= 0, 1 / (1 + e), e / (1 + e)))


def _softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis; -inf entries get 0 (each row needs one finite entry)."""
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return np.asarray(e / e.sum(axis=-1, keepdims=True))


def _logit(p: np.ndarray, eps: np.float32) -> np.ndarray:
    """log(p / (1 - p)) of p clamped to [eps, 1 - eps], as ``torch.logit(p, eps)``."""
    p = np.clip(p, eps, np.float32(1) - eps)
    return np.asarray(np.log(p / (1 - p)))


def _keep_top_k(logits: np.ndarray, k: int) -> np.ndarray:
    """The k largest of each row, the rest -inf. Ties go to the lower index (torch leaves
    them unspecified; a trained gate has none)."""
    order = np.argsort(-logits, axis=-1, kind="stable")
    keep = np.zeros(logits.shape, bool)
    np.put_along_axis(keep, order[..., :k], True, axis=-1)
    return np.where(keep, logits, np.float32(-np.inf))


# --- the families -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Parts:
    """Each member's value before the output transform, taken apart (arrays (N, m, ...)).

    ``terms`` (name → (N, m)) add up to ``Family.values``. Per source (N, m, S): its
    ``weight`` in the family's source term and its ``share`` of it: weight · score for
    ``mean`` and ``kuoro`` (the shares add up to ``weighted_mean``, which ``kuoro`` then takes
    the logit of), 20 · weight · log1p(score) for ``linear`` (they add up to the term
    ``sources``); ``trust``: ``kuoro``'s term ``concept_trust`` split over the sources.
    """

    terms: dict[str, np.ndarray]
    weight: np.ndarray
    share: np.ndarray
    weighted_mean: np.ndarray | None = None
    trust: np.ndarray | None = None


class Family:
    """One model family's arrays and forward pass; every output has the members first."""

    name: ClassVar[str]
    transform: ClassVar[str] = "sigmoid"  # the output transform of ``values``
    n_members: int
    n_sources: int
    n_features: int | None = None  # the feature columns it reads, if it reads features
    n_concepts: int | None = None  # the rows of its per-concept tables, if it has any

    def arrays(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def logits(self, c: Candidates) -> np.ndarray:
        """(N, m) each member's logits."""
        raise NotImplementedError

    def values(self, c: Candidates) -> np.ndarray:
        """(N, m) each member's value before the output transform."""
        return self.logits(c)

    def scores(self, c: Candidates) -> np.ndarray:
        """(N, m) each member's scores in [0, 1]."""
        return _sigmoid(self.logits(c))

    def explain(self, c: Candidates) -> Parts:
        """``values`` taken apart; the same arithmetic in the candidates' dtype."""
        raise NotImplementedError


class MeanFamily(Family):
    """The weighted mean of the sources' scores (``MeanFusion``)."""

    name = "mean"
    transform = "identity"

    def __init__(self, weights: np.ndarray) -> None:
        self.weights = weights  # (N, S), rows sum to 1
        self.n_members, self.n_sources = weights.shape

    @classmethod
    def read(cls, r: ArrayReader) -> MeanFamily:
        return cls(r.floats("weights", MEMBERS, SOURCES))

    def arrays(self) -> dict[str, np.ndarray]:
        return {"weights": self.weights}

    def values(self, c: Candidates) -> np.ndarray:
        return np.asarray(self.weights @ c.scores.T)

    def scores(self, c: Candidates) -> np.ndarray:
        return self.values(c)

    def explain(self, c: Candidates) -> Parts:
        share = self.weights[:, None, :] * c.scores
        mean = share.sum(-1)
        weight = np.broadcast_to(self.weights[:, None, :], share.shape)
        return Parts({"weighted_mean": mean}, weight, share, weighted_mean=mean)


class LinearFamily(Family):
    """sigmoid(scale · (Σ_s W[c, s] · log1p(score_s) + b[c] + b)) (``LinearFusion``)."""

    name = "linear"

    def __init__(
        self,
        output_scale: float,
        source_weight: np.ndarray,
        concept_bias: np.ndarray,
        bias: np.ndarray,
    ) -> None:
        self.output_scale = np.float32(output_scale)
        self.source_weight = source_weight  # (N, V, S)
        self.concept_bias = concept_bias  # (N, V)
        self.bias = bias  # (N,)
        self.n_members, self.n_concepts, self.n_sources = source_weight.shape

    @classmethod
    def read(cls, r: ArrayReader) -> LinearFamily:
        return cls(
            r.number("output_scale"),
            r.floats("source_weight", MEMBERS, CONCEPTS, SOURCES),
            r.floats("concept_bias", MEMBERS, CONCEPTS),
            r.floats("bias", MEMBERS),
        )

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "output_scale": np.asarray(self.output_scale, np.float64),
            "source_weight": self.source_weight,
            "concept_bias": self.concept_bias,
            "bias": self.bias,
        }

    def logits(self, c: Candidates) -> np.ndarray:
        weights = self.source_weight[:, c.concepts]  # (N, m, S)
        z = (np.log1p(c.scores) * weights).sum(-1) + self.concept_bias[:, c.concepts]
        return np.asarray(self.output_scale * (z + self.bias[:, None]))

    def explain(self, c: Candidates) -> Parts:
        weight = self.source_weight[:, c.concepts]
        share = self.output_scale * np.log1p(c.scores) * weight
        dtype = c.scores.dtype  # not float32's product: 20 · b rounds there
        concept = self.output_scale * self.concept_bias[:, c.concepts].astype(dtype)
        bias = np.broadcast_to(self.output_scale * self.bias[:, None].astype(dtype), concept.shape)
        return Parts(
            {"sources": share.sum(-1), "concept_bias": concept, "bias": bias}, weight, share
        )


class KuoroFamily(Family):
    """The gated, calibrated mean plus an MLP and a per-concept correction (``KuoroFusion``).

    logit = a · logit(Σ_s g_s · score_s) + b + mlp(features, mean) + c[concept]; one method
    per term, so that a new term is one method and one line in ``logits``.
    """

    name = "kuoro"

    def __init__(
        self,
        *,
        feature_columns: list[str],
        gate_top_k: int,
        logit_eps: float,
        gate_prior: np.ndarray,
        gate_weight: np.ndarray,
        gate_columns: np.ndarray,
        count_columns: np.ndarray,
        log_scale: np.ndarray,
        shift: np.ndarray,
        mlp: list[tuple[np.ndarray, np.ndarray]],
        concept_bias: np.ndarray,
        concept_source: np.ndarray | None = None,
    ) -> None:
        self.feature_columns = feature_columns
        self.gate_top_k = gate_top_k
        self.logit_eps = np.float32(logit_eps)
        self.gate_prior = gate_prior  # (N, S)
        self.gate_weight = gate_weight  # (N, S, G) over the G document columns the gate reads
        self.gate_columns = gate_columns  # (G,) those columns
        self.count_columns = count_columns  # (S,) each source's "count" column
        self.log_scale = log_scale  # (N,)
        self.shift = shift  # (N,)
        self.mlp = mlp  # (weight (N, out, in), bias (N, out)) per linear layer, ReLU between
        self.concept_bias = concept_bias  # (N, V)
        self.concept_source = concept_source  # (N, V, S) per-concept trust in each source, or None
        self.n_members, self.n_sources = gate_prior.shape
        self.n_features = len(feature_columns)
        self.n_concepts = concept_bias.shape[1]
        # Laid out for ``x @ w`` once here rather than transposed at every call.
        self._gate_w = np.ascontiguousarray(gate_weight.transpose(0, 2, 1))  # (N, G, S)
        first_w = mlp[0][0]
        self._first_features = np.ascontiguousarray(first_w[:, :, :-1].transpose(0, 2, 1))
        self._first_mean = np.ascontiguousarray(first_w[:, :, -1])  # (N, H) weight of the mean
        self._later = [(np.ascontiguousarray(w.transpose(0, 2, 1)), b) for w, b in mlp[1:]]
        self._widest = max(w.shape[1] for w, _ in mlp)

    @classmethod
    def read(cls, r: ArrayReader) -> KuoroFamily:
        gate_prior = r.floats("gate_prior", MEMBERS, SOURCES)
        n_sources = r.sizes[SOURCES]
        columns = r.texts("feature_names", "features")
        expected = list(feature_names(n_sources))
        # A model trained before some columns existed reads its own, taken by name.
        if columns != [name for name in expected if name in columns]:
            differ = sorted(set(columns) - set(expected)) or ["their order"]
            raise bad_model(
                f"the model reads other feature columns than this Kuoro computes "
                f"(differing: {', '.join(differ[:5])})"
            )
        n_features = len(columns)
        n_layers = r.integer("mlp_layers", low=1)
        mlp: list[tuple[np.ndarray, np.ndarray]] = []
        inputs = n_features + 1  # the first layer also reads the gated mean
        for i in range(n_layers):
            outputs: str | int = 1 if i == n_layers - 1 else f"hidden{i}"
            weight = r.floats(f"mlp_weight_{i}", MEMBERS, outputs, inputs)
            mlp.append((weight, r.floats(f"mlp_bias_{i}", MEMBERS, outputs)))
            inputs = weight.shape[1]
        return cls(
            feature_columns=columns,
            gate_top_k=r.integer("gate_top_k", high=n_sources),
            logit_eps=r.number("logit_eps"),
            gate_prior=gate_prior,
            gate_weight=r.floats("gate_weight", MEMBERS, SOURCES, "gate inputs"),
            gate_columns=r.indices("gate_columns", "gate inputs", below=n_features),
            count_columns=r.indices("count_columns", SOURCES, below=n_features),
            log_scale=r.floats("log_scale", MEMBERS),
            shift=r.floats("shift", MEMBERS),
            mlp=mlp,
            concept_bias=r.floats("concept_bias", MEMBERS, CONCEPTS),
            concept_source=(
                r.floats("concept_source", MEMBERS, CONCEPTS, SOURCES)
                if r.has("concept_source")
                else None
            ),
        )

    def arrays(self) -> dict[str, np.ndarray]:
        arrays = {
            "feature_names": np.asarray(self.feature_columns),
            "gate_top_k": np.asarray(self.gate_top_k, np.int64),
            "logit_eps": np.asarray(self.logit_eps, np.float64),
            "gate_prior": self.gate_prior,
            "gate_weight": self.gate_weight,
            "gate_columns": self.gate_columns,
            "count_columns": self.count_columns,
            "log_scale": self.log_scale,
            "shift": self.shift,
            "mlp_layers": np.asarray(len(self.mlp), np.int64),
            "concept_bias": self.concept_bias,
        }
        if self.concept_source is not None:
            arrays["concept_source"] = self.concept_source
        for i, (weight, bias) in enumerate(self.mlp):
            arrays[f"mlp_weight_{i}"] = weight
            arrays[f"mlp_bias_{i}"] = bias
        return arrays

    def gate_weights(self, c: Candidates) -> np.ndarray:
        """(N, n_docs, S) each document's gate over the sources; rows sum to 1."""
        # The gate's columns are the same for every candidate of a document: read its first.
        first = np.minimum(c.doc_offsets[:-1], len(c.concepts) - 1)
        doc_features = c.features[first]
        logits = self.gate_prior[:, None, :] + doc_features[:, self.gate_columns] @ self._gate_w
        # A source that suggested nothing for a document gets no gate there; the guard is
        # for documents without candidates, where every source is silent.
        silent = doc_features[:, self.count_columns] <= 0
        silent &= ~silent.all(axis=-1, keepdims=True)
        logits = np.where(silent, np.float32(-np.inf), logits)
        if self.gate_top_k:
            logits = _keep_top_k(logits, self.gate_top_k)
        return _softmax(logits)

    def gated_mean(self, c: Candidates) -> np.ndarray:
        """(N, m) the gated weighted mean of each candidate's source scores."""
        gate = self.gate_weights(c)[:, c.documents()]  # (N, m, S)
        return np.asarray((gate * c.scores).sum(-1))

    def calibrated(self, mean: np.ndarray) -> np.ndarray:
        """(N, m) a · logit(mean) + b."""
        scale = np.exp(self.log_scale)[:, None]
        return np.asarray(_logit(mean, self.logit_eps) * scale + self.shift[:, None])

    def mlp_correction(self, c: Candidates, mean: np.ndarray) -> np.ndarray:
        """(N, m) the MLP over [features, mean], a block of candidates at a time: their
        activations then stay in the CPU's cache, which halves the time of large batches."""
        out = np.empty(mean.shape, mean.dtype)  # float64 when explaining
        block = max(MLP_BLOCK // (self.n_members * self._widest), 1)
        for start in range(0, mean.shape[1], block):
            rows = slice(start, start + block)
            out[:, rows] = self._mlp(c.features[rows], mean[:, rows])
        return out

    def _mlp(self, features: np.ndarray, mean: np.ndarray) -> np.ndarray:
        # The mean's column is added apart, so that the features' product is one matmul
        # shared by all members, with no concatenation.
        first_bias = self.mlp[0][1]
        h = features @ self._first_features  # (N, rows, H)
        h += mean[:, :, None] * self._first_mean[:, None, :] + first_bias[:, None, :]
        for weight, bias in self._later:
            h = np.maximum(h, 0) @ weight + bias[:, None, :]
        return np.asarray(h[:, :, 0])

    def concept_correction(self, c: Candidates) -> np.ndarray:
        """(N, m) the per-concept bias."""
        return np.asarray(self.concept_bias[:, c.concepts])

    def source_trust(self, c: Candidates) -> np.ndarray:
        """(N, m) each candidate's source scores weighted by its concept's trust in them."""
        assert self.concept_source is not None
        return np.asarray((self.concept_source[:, c.concepts, :] * c.scores).sum(-1))

    def logits(self, c: Candidates) -> np.ndarray:
        mean = self.gated_mean(c)
        logits: np.ndarray = (
            self.calibrated(mean) + self.mlp_correction(c, mean) + self.concept_correction(c)
        )
        if self.concept_source is not None:
            logits = logits + self.source_trust(c)
        return logits

    def explain(self, c: Candidates) -> Parts:
        """a · logit(mean) + b as logit(mean) + (a - 1) · logit(mean) + b, then the rest."""
        gate = self.gate_weights(c)[:, c.documents()]
        share = gate * c.scores
        mean = share.sum(-1)
        mean_logit = _logit(mean, self.logit_eps)
        scale = np.exp(self.log_scale).astype(mean.dtype)[:, None]  # as ``calibrated``
        terms = {
            "mean_logit": mean_logit,
            "calibration_scale": (scale - 1) * mean_logit,
            "calibration_shift": np.broadcast_to(self.shift[:, None], mean.shape),
            "feature_network": self.mlp_correction(c, mean),
            "concept_bias": self.concept_correction(c),
        }
        trust = None
        if self.concept_source is not None:
            trust = self.concept_source[:, c.concepts, :] * c.scores
            terms["concept_trust"] = trust.sum(-1)
        return Parts(terms, gate, share, weighted_mean=mean, trust=trust)


_FAMILIES: dict[str, type[MeanFamily] | type[LinearFamily] | type[KuoroFamily]] = {
    f.name: f for f in (MeanFamily, LinearFamily, KuoroFamily)
}


# --- the public model -------------------------------------------------------------------------


class NumpyFusion:
    """A trained fusion model in numpy: the torch model's ``predict_scores``, without torch."""

    def __init__(self, family: Family) -> None:
        self._family = family

    @property
    def family(self) -> str:
        return self._family.name

    @property
    def n_members(self) -> int:
        return self._family.n_members

    @property
    def n_sources(self) -> int:
        return self._family.n_sources

    @property
    def n_concepts(self) -> int | None:
        """The concept ids it knows (0 … n - 1); None for the mean, which knows any."""
        return self._family.n_concepts

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> NumpyFusion:
        """Check arrays from ``export_arrays`` (``kuoro.fusion.export``) or a file and build
        the model; ModelError names what is missing, malformed or unknown."""
        r = ArrayReader(arrays)
        if "format" not in arrays or r.text("format") != FORMAT:
            raise bad_model(f"not a {FORMAT} model")
        version = r.integer("format_version")
        if version != FORMAT_VERSION:
            raise bad_model(
                f"format version {version}, but this Kuoro reads version {FORMAT_VERSION}; "
                "train or export the model again"
            )
        name = r.text("family")
        if name not in _FAMILIES:
            raise bad_model(f"unknown family {name!r}; known: {', '.join(_FAMILIES)}")
        r.bind(MEMBERS, r.integer("n_members", low=1), "n_members")
        family = _FAMILIES[name].read(r)
        r.finish()
        return cls(family)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The arrays ``from_arrays`` reads: metadata and parameters."""
        return {
            "format": np.asarray(FORMAT),
            "format_version": np.asarray(FORMAT_VERSION, np.int64),
            "family": np.asarray(self.family),
            "n_members": np.asarray(self.n_members, np.int64),
            **self._family.arrays(),
        }

    def save(self, path: Path) -> None:
        """Write an uncompressed ``.npz`` atomically (uncompressed: it loads faster)."""
        with atomic_write(path) as out:
            arrays: dict[str, Any] = self.to_arrays()  # (typed so: savez's own keywords)
            np.savez(out, **arrays)

    @classmethod
    def load(cls, path: Path) -> NumpyFusion:
        """Read a file written by ``save``; ModelError if it is missing, damaged or foreign."""
        try:
            loaded = np.load(path, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                raise ModelError(f"{path}: not a fusion model file (one array, not a .npz)")
            with loaded as npz:
                arrays = {name: npz[name] for name in npz.files}
        except FileNotFoundError as exc:
            raise ModelError(f"{path}: no fusion model file there") from exc
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise ModelError(f"{path}: damaged fusion model file ({exc})") from exc
        try:
            return cls.from_arrays(arrays)
        except ModelError as exc:
            raise ModelError(f"{path}: {exc}") from exc

    def member_scores(self, candidates: Candidates) -> np.ndarray:
        """(N, m) each member's float32 scores in [0, 1]."""
        c = self._checked(candidates)
        if len(c.concepts) == 0:
            return np.zeros((self.n_members, 0), np.float32)
        return self._family.scores(c)

    def predict_scores(self, candidates: Candidates) -> np.ndarray:
        """(m,) float32 scores in [0, 1]: the members' scores, averaged."""
        return np.asarray(self.member_scores(candidates).mean(axis=0), dtype=np.float32)

    @property
    def transform(self) -> str:
        """The output transform of the members' values: "sigmoid", or "identity" (mean)."""
        return self._family.transform

    def member_values(self, candidates: Candidates) -> np.ndarray:
        """(N, m) float64 each member's value before the output transform (its logit; the
        weighted mean for ``mean``), computed in float64: what ``explain``'s terms add up to."""
        return np.asarray(self._family.values(self._checked(candidates, np.float64)))

    def explain(self, candidates: Candidates) -> Parts:
        """Each member's value before the output transform, taken apart into named terms that
        add up to it (``Parts``), in float64; the score is the members' mean of the transform
        of their values."""
        return self._family.explain(self._checked(candidates, np.float64))

    def gate_weights(self, candidates: Candidates) -> np.ndarray | None:
        """(N, n_docs, S) each member's gate over the sources for each document (rows sum to
        1), or None for a family without a gate (mean, linear)."""
        family = self._family
        if not isinstance(family, KuoroFamily):
            return None
        return family.gate_weights(self._checked(candidates))

    def _checked(self, c: Candidates, dtype: type[np.floating[Any]] = np.float32) -> Candidates:
        """The candidates in the dtype the math runs in (float32; float64 to explain), after
        checking that they fit the model."""
        f = self._family
        if c.scores.shape[1] != f.n_sources:
            raise ModelError(
                f"the fusion model was trained on {f.n_sources} sources, "
                f"the candidates come from {c.scores.shape[1]}"
            )
        if f.n_features is not None and c.features.shape[1] != f.n_features:
            c = _older_columns(f, c)
        if f.n_concepts is not None and len(c.concepts) and int(c.concepts.max()) >= f.n_concepts:
            raise ModelError(
                f"concept id {int(c.concepts.max())} is unknown to the fusion model, "
                f"which was trained with {f.n_concepts} concepts"
            )
        if c.scores.dtype != dtype or c.features.dtype != dtype:
            c = replace(c, scores=c.scores.astype(dtype), features=c.features.astype(dtype))
        return c


def _older_columns(family: Family, c: Candidates) -> Candidates:
    """The candidates with the columns a model trained before some feature columns existed
    reads, taken by name from today's columns; ModelError when they cannot be found."""
    columns = getattr(family, "feature_columns", None)
    current = feature_names(c.scores.shape[1])
    if columns is None or c.features.shape[1] != len(current) or not set(columns) <= set(current):
        raise ModelError(
            f"the fusion model reads {family.n_features} features, "
            f"the candidates have {c.features.shape[1]}"
        )
    return replace(c, features=c.features[:, [current.index(name) for name in columns]])
