"""Calibrated scores: a strictly increasing map from a fusion model's score to the probability
that the subject is correct, fitted on held-out documents (numpy and scipy, no torch).

Methods (each maps 0 to 0 and (0, 1] into (0, 1]):

* ``temperature``: sigmoid(logit(p) / T), one parameter;
* ``platt``: sigmoid(a · logit(p) + b) with a > 0;
* ``isotonic``: the pool-adjacent-violators fit, interpolated linearly between the means of
  its blocks (flat beyond them) and blended with the identity, (1 − ε) · iso(p) + ε · p with
  ε = ``ISOTONIC_BLEND``, so that it is strictly increasing: a step function would tie
  scores and change rankings.

``choose_calibration`` measures them: it splits the held-out documents in two halves, fits
each method on one half and scores it on the other (both ways round), and keeps the method of
the lowest held-out log-loss (no calibration is a candidate too); the chosen method is then
fitted on all held-out documents. The points are each held-out document's
``CALIBRATION_DEPTH`` best candidates: the suggestions that limits and thresholds act on.

Scores are mapped in float64 and returned in float32, where two scores very close together
could round to one value; ``calibrate_candidates`` separates such new ties again, so that the
calibrated scores rank every document's candidates exactly as the raw ones do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from kuoro.util.array_files import load_arrays, save_arrays
from kuoro.util.reliability import expected_calibration_error

METHODS = ("temperature", "platt", "isotonic")
CHOICES = ("auto", *METHODS, "none")
# Each held-out document's best candidates the calibration is fitted on: the deepest limit
# `optimize` tries by default, so that every suggestion a limit or threshold acts on is covered.
CALIBRATION_DEPTH = 20
ISOTONIC_BLEND = 1e-3
# Too few held-out points make any fit a guess: below these, no calibration.
MIN_DOCUMENTS, MIN_POSITIVES = 20, 20
LOG_LOSS_EPS = 1e-15
FORMAT, FORMAT_VERSION = "kuoro-calibration", 1


# --- the calibration --------------------------------------------------------------------------


@dataclass(frozen=True)
class Calibration:
    """A fitted calibration: ``method`` and its parameters (``scale``, ``shift`` for the
    sigmoid methods; the isotonic knots ``knots_x`` → ``knots_y``, both strictly increasing)."""

    method: str
    scale: float = 1.0
    shift: float = 0.0
    knots_x: np.ndarray = field(default_factory=lambda: np.zeros(0))
    knots_y: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self) -> None:
        if self.method not in (*METHODS, "none"):
            raise ValueError(f"unknown calibration method {self.method!r}")
        if self.method in ("temperature", "platt") and not (
            np.isfinite(self.scale) and self.scale > 0 and np.isfinite(self.shift)
        ):
            raise ValueError(f"{self.method}: the scale must be positive, the shift finite")
        if self.method == "isotonic":
            x, y = self.knots_x, self.knots_y
            if x.ndim != 1 or x.shape != y.shape or len(x) < 1:
                raise ValueError("isotonic: knots_x and knots_y are one-dimensional, same length")
            if not (np.all(np.diff(x) > 0) and np.all(np.diff(y) > 0)):
                raise ValueError("isotonic: the knots must be strictly increasing")
            if not (np.all(np.isfinite(x)) and y.min() >= 0 and y.max() <= 1):
                raise ValueError("isotonic: the knots' values must lie in [0, 1]")

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        """The calibrated scores (float64): 0 stays 0, (0, 1] maps into (0, 1], strictly
        increasing."""
        p = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
        if self.method == "none":
            return p
        if self.method == "isotonic":
            iso = np.interp(p, self.knots_x, self.knots_y)
            out = (1 - ISOTONIC_BLEND) * iso + ISOTONIC_BLEND * p
        else:
            out = _sigmoid(self.scale * _logit(p) + self.shift)
        # A score of 0 is no suggestion: it stays one.
        return np.where(p > 0, np.clip(out, 0.0, 1.0), 0.0)

    def describe(self) -> str:
        if self.method == "temperature":
            return f"temperature T = {1 / self.scale:.4g}"
        if self.method == "platt":
            return f"platt a = {self.scale:.4g}, b = {self.shift:.4g}"
        if self.method == "isotonic":
            return f"isotonic, {len(self.knots_x)} knots"
        return "none"

    # -- files ------------------------------------------------------------------------------

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "format": np.asarray(FORMAT),
            "format_version": np.asarray(FORMAT_VERSION, np.int64),
            "method": np.asarray(self.method),
            "scale": np.asarray(self.scale, np.float64),
            "shift": np.asarray(self.shift, np.float64),
            "knots_x": np.asarray(self.knots_x, np.float64),
            "knots_y": np.asarray(self.knots_y, np.float64),
        }

    def save(self, path: Path) -> None:
        """Write the calibration as an uncompressed ``.npz`` of plain arrays, atomically."""
        save_arrays(path, self.to_arrays())

    @classmethod
    def load(cls, path: Path) -> Calibration:
        """Read a file ``save`` wrote (never with pickle); ModelError if it is not one."""
        return load_arrays(path, "calibration", cls.from_arrays)

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> Calibration:
        if str(arrays["format"]) != FORMAT:
            raise ValueError(f"not a {FORMAT} file")
        version = int(arrays["format_version"])
        if version != FORMAT_VERSION:
            raise ValueError(f"format version {version}; this Kuoro reads {FORMAT_VERSION}")
        return cls(
            str(arrays["method"]),
            float(arrays["scale"]),
            float(arrays["shift"]),
            np.asarray(arrays["knots_x"], np.float64),
            np.asarray(arrays["knots_y"], np.float64),
        )


IDENTITY = Calibration("none")
_TINY = np.float32(np.finfo(np.float32).smallest_subnormal)


def calibrate_candidates(
    calibration: Calibration, documents: np.ndarray, scores: np.ndarray
) -> np.ndarray:
    """(m,) float32 calibrated scores of candidates (``documents``: each one's document),
    ranking each document's candidates exactly as ``scores`` do: equal raw scores stay equal,
    and two that float32 rounding made equal (or reversed) are set apart by one ulp (down to
    the smallest positive float32, below which a positive score is never taken)."""
    raw = np.asarray(scores, dtype=np.float32)
    # A suggestion stays one: no positive score underflows to 0 (which drops it).
    out = np.where(raw > 0, np.maximum(calibration(raw), _TINY), 0.0).astype(np.float32)
    if len(raw) < 2:
        return out
    order = np.lexsort((-raw, documents))  # by document, then score descending
    r, c, d = raw[order], out[order], documents[order]
    broken = (d[1:] == d[:-1]) & (r[1:] < r[:-1]) & (c[1:] >= c[:-1])
    if not broken.any():
        return out
    # Rare (scores a few ulps apart): walk the affected documents' candidates in order.
    for document in np.unique(d[1:][broken]):
        at = np.flatnonzero(d == document)
        for i, j in pairwise(at):
            if r[j] == r[i]:
                c[j] = c[i]
            elif c[j] >= c[i]:
                c[j] = max(np.nextafter(c[i], np.float32(0)), _TINY)
    out[order] = c
    return out


# --- fitting ----------------------------------------------------------------------------------


def _logit(p: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.asarray(np.log(p) - np.log1p(-p))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(z))
    return np.asarray(np.where(z >= 0, 1 / (1 + e), e / (1 + e)))


def log_loss(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The mean negative log-likelihood of 0/1 ``labels`` (probabilities clipped off 0, 1)."""
    p = np.clip(np.asarray(probabilities, np.float64), LOG_LOSS_EPS, 1 - LOG_LOSS_EPS)
    y = np.asarray(labels, np.float64)
    return float(-(y * np.log(p) + (1 - y) * np.log1p(-p)).mean())


def _fit_sigmoid(scores: np.ndarray, labels: np.ndarray, *, shift: bool) -> tuple[float, float]:
    """(a, b) of sigmoid(a · logit(p) + b) of the least log-loss; b = 0 unless ``shift``.
    a = exp(α) keeps the map increasing; logits are bounded to what float32 scores reach."""
    from scipy.optimize import minimize  # only to fit: serving never loads it

    z = np.clip(_logit(np.asarray(scores, np.float64)), -104.0, 17.0)
    y = np.asarray(labels, np.float64)

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        a, b = np.exp(theta[0]), theta[1] if shift else 0.0
        t = a * z + b
        # log(1 + e^t) - y·t, stably; its gradient is (sigmoid(t) - y) · dt.
        value = np.logaddexp(0.0, t) - y * t
        residual = _sigmoid(t) - y
        grad = np.array([(residual * z).mean() * a, residual.mean() if shift else 0.0])
        return float(value.mean()), grad

    found = minimize(loss, np.zeros(2), jac=True, method="L-BFGS-B")
    a, b = float(np.exp(found.x[0])), float(found.x[1]) if shift else 0.0
    return a, b


def _pool_adjacent_violators(
    x: np.ndarray, y: np.ndarray, w: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Blocks of the isotonic fit of y on ascending distinct x (weights w): each block's
    weighted mean x and y, both strictly increasing (equal neighbours are merged too)."""
    sums_w: list[float] = []
    sums_x: list[float] = []
    sums_y: list[float] = []
    for xi, yi, wi in zip(x.tolist(), y.tolist(), w.tolist(), strict=True):
        sums_w.append(wi)
        sums_x.append(xi * wi)
        sums_y.append(yi * wi)
        while len(sums_w) > 1 and sums_y[-2] * sums_w[-1] >= sums_y[-1] * sums_w[-2]:
            tail_w, tail_x, tail_y = sums_w.pop(), sums_x.pop(), sums_y.pop()
            sums_w[-1] += tail_w
            sums_x[-1] += tail_x
            sums_y[-1] += tail_y
    weights = np.asarray(sums_w)
    return np.asarray(sums_x) / weights, np.asarray(sums_y) / weights


def fit_calibration(method: str, scores: np.ndarray, labels: np.ndarray) -> Calibration:
    """Fit ``method`` ("temperature", "platt", "isotonic" or "none") to (score, 0/1 label)
    points; the scores are positive (suggestions)."""
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels, np.float64)
    if method == "none":
        return IDENTITY
    if method in ("temperature", "platt"):
        a, b = _fit_sigmoid(scores, labels, shift=method == "platt")
        return Calibration(method, scale=a, shift=b)
    if method != "isotonic":
        raise ValueError(f"unknown calibration method {method!r}; choose one of {CHOICES}")
    values, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    hits = np.bincount(inverse, weights=labels, minlength=len(values))
    knots_x, knots_y = _pool_adjacent_violators(values, hits / counts, counts.astype(float))
    return Calibration("isotonic", knots_x=knots_x, knots_y=np.clip(knots_y, 0.0, 1.0))


@dataclass(frozen=True)
class CalibrationChoice:
    """The calibration chosen, and the measurements that chose it: each candidate method's
    log-loss and ECE on held-out halves it was not fitted on (averaged over both ways)."""

    calibration: Calibration
    requested: str
    scores: dict[str, dict[str, float]]
    points: int
    positives: int
    documents: int
    reason: str = ""

    def summary(self) -> dict[str, Any]:
        """JSON for the model's manifest."""
        return {
            "method": self.calibration.method,
            "requested": self.requested,
            "fitted": self.calibration.describe(),
            "held_out": {
                "documents": self.documents,
                "points": self.points,
                "positives": self.positives,
                "depth": CALIBRATION_DEPTH,
            },
            "cross_validation": {
                method: {k: round(v, 6) for k, v in values.items()}
                for method, values in self.scores.items()
            },
            **({"reason": self.reason} if self.reason else {}),
        }


def choose_calibration(
    scores: np.ndarray,
    labels: np.ndarray,
    documents: np.ndarray,
    *,
    requested: str = "auto",
    seed: int = 0,
) -> CalibrationChoice:
    """The calibration of held-out points (score, 0/1 label, document): ``requested`` as
    given, or with "auto" the one of the lowest log-loss in 2-fold cross-validation by
    document (see the module's docstring); too few points give none."""
    if requested not in CHOICES:
        raise ValueError(f"unknown calibration {requested!r}; choose one of {', '.join(CHOICES)}")
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels, np.float64)
    documents = np.asarray(documents, np.int64)
    distinct = np.unique(documents)
    counts = (len(scores), int(labels.sum()), len(distinct))
    if requested == "none":
        return CalibrationChoice(IDENTITY, requested, {}, *counts)
    if len(distinct) < MIN_DOCUMENTS or labels.sum() < MIN_POSITIVES or labels.all():
        reason = (
            f"too few held-out points to calibrate on ({len(distinct)} documents, "
            f"{int(labels.sum())} correct of {len(scores)} candidates; at least "
            f"{MIN_DOCUMENTS} and {MIN_POSITIVES} are needed)"
        )
        return CalibrationChoice(IDENTITY, requested, {}, *counts, reason=reason)
    rng = np.random.default_rng(seed)
    half = np.isin(documents, rng.permutation(distinct)[: len(distinct) // 2])
    candidates = ("none", *METHODS) if requested == "auto" else (requested,)
    measured: dict[str, dict[str, float]] = {}
    for method in candidates:
        losses, errors = [], []
        for fit_on in (half, ~half):
            calibration = fit_calibration(method, scores[fit_on], labels[fit_on])
            predicted = calibration(scores[~fit_on])
            losses.append(log_loss(predicted, labels[~fit_on]))
            errors.append(expected_calibration_error(predicted, labels[~fit_on]))
        measured[method] = {"log_loss": float(np.mean(losses)), "ece": float(np.mean(errors))}
    best = min(candidates, key=lambda m: measured[m]["log_loss"])
    return CalibrationChoice(fit_calibration(best, scores, labels), requested, measured, *counts)
