"""Exporting a trained torch fusion model to the arrays of ``kuoro.fusion.numpy_model``.

``export_arrays`` turns a ``MeanFusion``, ``LinearFusion`` or ``KuoroFusion``, or a
``MemberEnsemble`` of one of them, into the named arrays that ``NumpyFusion.from_arrays``
reads. Training imports this module; serving never does, so that it never loads torch.
"""

from __future__ import annotations

from itertools import chain

import numpy as np
import torch
from torch import Tensor, nn

from kuoro.fusion.candidates import feature_names
from kuoro.fusion.members import MemberEnsemble
from kuoro.fusion.models import (
    LINEAR_OUTPUT_SCALE,
    LOGIT_EPS,
    KuoroFusion,
    LinearFusion,
    MeanFusion,
)
from kuoro.fusion.numpy_model import Family, KuoroFamily, LinearFamily, MeanFamily, NumpyFusion

__all__ = ["export_arrays"]

# Tensors a model holds that do not take part in its predictions.
TRAINING_ONLY = frozenset({"concept_l2"})


def export_arrays(model: nn.Module) -> dict[str, np.ndarray]:
    """The arrays of a trained torch fusion model, for ``NumpyFusion.from_arrays``; they
    predict as the model does in eval mode, whatever its mode now.

    Raises TypeError for a model that is no fusion model, and ValueError for one holding a
    tensor this export does not know (a new component: extend this module for it).
    """
    tensors: dict[str, Tensor]
    if isinstance(model, MemberEnsemble):
        # The members' code, with their tensors on "meta"; read for its class and settings.
        template: nn.Module = model.template
        stacked = chain(model.stacked.named_parameters(), model.stacked.named_buffers())
        # Undo members._key: the stacked names are the member's with "." spelt "__".
        tensors = {name.replace("__", "."): t for name, t in stacked}
    else:
        template = model
        named = chain(model.named_parameters(), model.named_buffers())
        tensors = {name: t[None] for name, t in named}

    used: set[str] = set()

    def take(name: str, dtype: torch.dtype = torch.float32) -> np.ndarray:
        used.add(name)
        array: np.ndarray = tensors[name].detach().to("cpu", dtype).numpy().copy()
        return array

    if isinstance(template, MeanFusion):
        family: Family = MeanFamily(take("weights"))
    elif isinstance(template, LinearFusion):
        family = LinearFamily(
            LINEAR_OUTPUT_SCALE,
            take("source_weight.weight"),
            take("concept_bias.weight")[:, :, 0],
            take("bias"),
        )
    elif isinstance(template, KuoroFusion):
        kinds = [type(m).__name__ for m in template.mlp if not isinstance(m, nn.Dropout)]
        n_layers = sum(isinstance(m, nn.Linear) for m in template.mlp)
        if kinds != ["Linear"] + ["ReLU", "Linear"] * (n_layers - 1):
            raise ValueError(f"export_arrays knows MLPs of Linear and ReLU layers, not {kinds}")
        mlp = [
            (take(f"mlp.{i}.weight"), take(f"mlp.{i}.bias"))
            for i, m in enumerate(template.mlp)
            if isinstance(m, nn.Linear)
        ]
        n_sources = tensors["gate_prior"].shape[1]
        gate_columns = take("gate_columns", torch.int64)[0]  # the same for every member
        per_document = len(gate_columns) // n_sources
        family = KuoroFamily(
            feature_columns=list(feature_names(n_sources)),
            gate_top_k=template.gate_top_k,
            logit_eps=LOGIT_EPS,
            gate_prior=take("gate_prior"),
            gate_weight=take("gate.weight"),
            gate_columns=gate_columns,
            count_columns=gate_columns.reshape(n_sources, per_document)[:, template.count_offset],
            log_scale=take("log_scale"),
            shift=take("shift"),
            mlp=mlp,
            concept_bias=take("concept_bias.weight")[:, :, 0],
            concept_source=(take("concept_source.weight") if template.concept_sources else None),
        )
    else:
        raise TypeError(f"export_arrays cannot export a {type(template).__name__}")

    unknown = set(tensors) - used - TRAINING_ONLY
    if unknown:
        raise ValueError(
            f"export_arrays does not know the {type(template).__name__} tensors "
            f"{', '.join(sorted(unknown))}: the numpy model would ignore them"
        )
    return NumpyFusion(family).to_arrays()
