"""Typed parameters of the fusion backends, one dataclass per family.

The catalogue (:mod:`kuoro.config.backends`) is where every parameter is declared, with its
default and its allowed values; these dataclasses give the values a type and a name in code.
They have no defaults of their own: ``fusion_params`` fills them from a project's (checked)
parameters or from the catalogue, and a test keeps their fields and the catalogue in step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from kuoro.config.backends import BACKENDS, check_params, join_errors
from kuoro.errors import ConfigError

__all__ = ["FusionParams", "KuoroParams", "LinearParams", "MeanParams", "fusion_params"]


@dataclass(frozen=True)
class MeanParams:
    """The weighted mean of the sources: what every fusion backend has."""

    family: ClassVar[str] = "mean"

    validation: float | int | str  # a fraction, a document count, or a corpus path
    seed: int
    calibration: Literal["auto", "temperature", "platt", "isotonic", "none"]


@dataclass(frozen=True)
class LinearParams(MeanParams):
    """A trained fusion model: the optimiser and early stopping."""

    family: ClassVar[str] = "linear"

    learning_rate: float
    batch_size: int
    max_epochs: int
    early_stopping: bool
    patience: int


@dataclass(frozen=True)
class KuoroParams(LinearParams):
    """Kuoro's own model: the network over candidate features and its regularisation."""

    family: ClassVar[str] = "kuoro"

    hidden_size: int
    dropout: float
    weight_decay: float
    members: int
    loss: Literal["bce", "listwise", "mix"]
    gate_top_k: int
    concept_l2: float
    concept_sources: bool
    cooccurrence: str  # "sources", "none" or a corpus path


FusionParams = MeanParams | LinearParams | KuoroParams
FAMILIES: Mapping[str, type[MeanParams]] = {
    cls.family: cls for cls in (MeanParams, LinearParams, KuoroParams)
}


def fusion_params(
    backend: str, values: Mapping[str, object], *, project_id: str | None = None
) -> FusionParams:
    """The typed parameters of fusion backend ``backend``: ``values`` checked against the
    catalogue (errors name ``project_id``), the missing ones at their defaults. ``sources``
    is the project's, not the model's: it is left out."""
    if backend not in FAMILIES:
        raise ConfigError(
            f"'{backend}' is not a fusion backend. Allowed: {', '.join(sorted(FAMILIES))}"
        )
    given = {k: v for k, v in values.items() if k != "sources"}
    where = f"project '{project_id}'" if project_id else f"the {backend} fusion model"
    checked, problems = check_params("", backend, {"sources": [], **given}, where=where)
    if problems:
        raise ConfigError(join_errors(problems))
    cls = FAMILIES[backend]
    names = {field.name for field in dataclasses.fields(cls)}
    typed: dict[str, Any] = {k: v for k, v in checked.items() if k in names}  # checked above
    return cls(**typed)


def catalogue_names(backend: str) -> set[str]:
    """The parameters the catalogue declares for a fusion backend, ``sources`` left out."""
    return set(BACKENDS[backend].params) - {"sources"}
