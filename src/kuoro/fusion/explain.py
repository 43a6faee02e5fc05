"""Why a fusion model scored a suggestion as it did: one record per suggestion.

A record (``Explanation``, plain JSON data) gives each source's raw score for the concept
and its rank in that source's list for the document (None where the source did not suggest
it), the weight the model gave each source, and the model's value before its output
transform taken apart into terms (``NumpyFusion.explain``) that add up to it:

* ``mean``: ``weighted_mean`` = Σ_s weight_s · score_s, which is the score itself;
* ``linear``: ``sources`` (20 · Σ_s W[c, s] · log1p(score_s)), ``concept_bias``, ``bias``,
  adding up to the logit;
* ``kuoro``: ``mean_logit`` (the logit of the gated weighted mean Σ_s gate_s · score_s),
  ``calibration_scale`` ((a − 1) · mean_logit) and ``calibration_shift`` (b), so that the three
  make a · logit(mean) + b, then ``feature_network`` (the MLP's correction), ``concept_bias``
  and ``concept_trust`` (Σ_s t[c, s] · score_s, with ``concept_sources``), adding up to the logit.

Members (``members`` > 1) average their scores, not their logits: each member's terms add up
to that member's value (``members``), and the score is the mean over members of the output
transform of those values. The record's ``parts``, ``value``, source weights and shares are
averaged over the members; the averaged parts add up to the averaged value, whose transform
is the score only for one member. The terms are computed in float64 and add up to float64
rounding; ``score`` is the model's served float32 score.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, TypedDict

import numpy as np

from kuoro.fusion.candidates import Candidates, feature_names
from kuoro.fusion.numpy_model import NumpyFusion, Parts

__all__ = [
    "Explanation",
    "MemberExplanation",
    "SourceExplanation",
    "SourceProjectExplanation",
    "explain_candidates",
    "explanation_lines",
    "source_explanation",
]


class SourceExplanation(TypedDict):
    """One source's part in a suggestion."""

    source: str
    score: float | None  # its raw score for the concept; None when it did not suggest it
    rank: int | None  # the concept's rank in its list for the document (1 = its best)
    weight: float  # its weight in the source term (kuoro: its gate for the document)
    share: float  # what it adds: weight · score (linear: 20 · weight · log1p(score))
    trust: float | None  # kuoro: t[concept, source] · score, its part of concept_trust


class MemberExplanation(TypedDict):
    """One member of an ensemble: its terms add up to its value."""

    value: float
    score: float
    parts: dict[str, float]


class Explanation(TypedDict):
    """A fusion model's suggestion taken apart (see the module's docstring)."""

    kind: Literal["fusion"]
    family: str
    transform: str  # "sigmoid", or "identity" (mean): how the value becomes the score
    score: float  # as served: the model's score, calibrated where the model has a calibration
    model_score: float  # the model's own score, before any calibration
    value: float  # the value before the transform (members: their mean)
    parts: dict[str, float]  # add up to ``value``
    weighted_mean: float | None  # mean, kuoro: Σ_s weight_s · score_s
    sources: list[SourceExplanation]
    members: list[MemberExplanation] | None  # per member, when there are several


class SourceProjectExplanation(TypedDict):
    """A source project's suggestion: its model's own score, nothing to take apart."""

    kind: Literal["source"]
    source: str
    score: float
    rank: int


def source_explanation(source: str, score: float, rank: int) -> SourceProjectExplanation:
    return {"kind": "source", "source": source, "score": score, "rank": rank}


def explain_candidates(
    model: NumpyFusion,
    candidates: Candidates,
    rows: Sequence[int] | np.ndarray,
    scores: np.ndarray,
    source_names: Sequence[str],
) -> list[Explanation]:
    """The records of the candidates at ``rows`` (indices into ``candidates``); ``scores``:
    the model's scores of all the candidates, as served."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 0:
        return []
    order = np.argsort(rows, kind="stable")
    picked = _take(candidates, rows[order])
    parts = model.explain(picked)
    values = model.member_values(picked)
    ranks = _ranks(picked, len(source_names))
    records: list[Explanation] = [
        _record(model, parts, values, picked, ranks, j, float(scores[rows[k]]), source_names)
        for j, k in enumerate(order)
    ]
    # Back in the order asked for.
    result: list[Explanation] = [records[0]] * len(rows)
    for j, k in enumerate(order):
        result[int(k)] = records[j]
    return result


def _take(c: Candidates, rows: np.ndarray) -> Candidates:
    """The candidates at ``rows`` (ascending), still grouped by document: every term is a
    function of the candidate's own row (the gate reads its document's columns, which every
    row of the document repeats), so they score as they did among all the others."""
    per_doc = np.bincount(c.documents()[rows], minlength=c.n_documents)
    offsets = np.zeros(c.n_documents + 1, np.int64)
    np.cumsum(per_doc, out=offsets[1:])
    return Candidates(offsets, c.concepts[rows], c.scores[rows], c.features[rows], None)


def _ranks(c: Candidates, n_sources: int) -> np.ndarray:
    """(m, S) each source's rank of each candidate, 0 where it did not suggest it: read back
    from the ``rrank`` feature (1 / rank), which is what the model saw."""
    names = feature_names(n_sources)
    rrank = c.features[:, [names.index(f"s{s}_rrank") for s in range(n_sources)]]
    with np.errstate(divide="ignore"):
        return np.where(rrank > 0, np.rint(1.0 / rrank), 0).astype(np.int64)


def _transform(name: str, values: np.ndarray) -> np.ndarray:
    if name == "identity":
        return values
    return np.asarray(1.0 / (1.0 + np.exp(-values)))


def _record(
    model: NumpyFusion,
    parts: Parts,
    values: np.ndarray,
    c: Candidates,
    ranks: np.ndarray,
    j: int,
    score: float,
    names: Sequence[str],
) -> Explanation:
    n_members = model.n_members
    member_scores = _transform(model.transform, values[:, j])
    sources: list[SourceExplanation] = []
    for s, name in enumerate(names):
        present = bool(c.scores[j, s] > 0)
        sources.append(
            {
                "source": name,
                "score": float(c.scores[j, s]) if present else None,
                "rank": int(ranks[j, s]) if present else None,
                "weight": float(parts.weight[:, j, s].mean()),
                "share": float(parts.share[:, j, s].mean()),
                "trust": None if parts.trust is None else float(parts.trust[:, j, s].mean()),
            }
        )
    members: list[MemberExplanation] | None = None
    if n_members > 1:
        members = [
            {
                "value": float(values[n, j]),
                "score": float(member_scores[n]),
                "parts": {name: float(t[n, j]) for name, t in parts.terms.items()},
            }
            for n in range(n_members)
        ]
    mean = parts.weighted_mean
    return {
        "kind": "fusion",
        "family": model.family,
        "transform": model.transform,
        "score": score,
        "model_score": float(member_scores.mean()),
        "value": float(values[:, j].mean()),
        "parts": {name: float(t[:, j].mean()) for name, t in parts.terms.items()},
        "weighted_mean": None if mean is None else float(mean[:, j].mean()),
        "sources": sources,
        "members": members,
    }


# -- as text, for the command line ------------------------------------------------------------

PART_WORDS = {
    "weighted_mean": "the weighted mean of the sources' scores",
    "sources": "20 · Σ weight · log1p(score)",
    "mean_logit": "logit of the weighted mean",
    "calibration_scale": "(scale - 1) · logit of the mean",
    "calibration_shift": "calibration shift",
    "feature_network": "the feature network's correction",
    "concept_bias": "the concept's bias",
    "concept_trust": "the concept's own trust in the sources",
    "bias": "the global bias",
}


def _number(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def explanation_lines(record: Explanation | dict[str, Any], indent: str = "    ") -> list[str]:
    """A record as lines of text: a table of the sources, then the parts and their sum."""
    sources = record["sources"]
    trust = any(s["trust"] is not None for s in sources)
    header = ["source", "score", "rank", "weight", "share", *(["trust"] if trust else [])]
    rows = [header]
    for s in sources:
        row = [s["source"], _number(s["score"]), "-" if s["rank"] is None else str(s["rank"])]
        row += [_number(s["weight"]), _number(s["share"])]
        if trust:
            row.append(_number(s["trust"]))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [
        indent
        + "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    members = record["members"]
    averaged = f" (averaged over {len(members)} members)" if members else ""
    if record["weighted_mean"] is not None and record["family"] != "mean":
        lines.append(f"{indent}weighted mean {_number(record['weighted_mean'])}{averaged}")
    width = max(len(name) for name in record["parts"])
    for name, value in record["parts"].items():
        words = PART_WORDS.get(name, "")
        lines.append(f"{indent}{name.ljust(width)}  {value:+.4f}  {words}".rstrip())
    what = "mean value" if members else "value"
    lines.append(f"{indent}{'= ' + what:<{width}}  {record['value']:+.4f}{averaged}")
    model_score = record.get("model_score", record["score"])
    calibrated = abs(model_score - record["score"]) > 5e-7
    name = "model score" if calibrated else "score"
    if members:
        each = ", ".join(f"{m['value']:+.4f}" for m in members)
        lines.append(
            f"{indent}{name} = mean over the members of {record['transform']}"
            f"({each}) = {model_score:.4f}"
        )
    elif record["transform"] == "identity":
        lines.append(f"{indent}{name} = value = {model_score:.4f}")
    else:
        lines.append(f"{indent}{name} = {record['transform']}(value) = {model_score:.4f}")
    if calibrated:
        lines.append(
            f"{indent}score = calibrated on held-out documents({model_score:.4f}) = "
            f"{record['score']:.4f}"
        )
    return lines
