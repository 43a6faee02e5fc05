"""Fusion models of every family with random (trained-looking) parameters, exported to numpy,
and candidates to score: built from the synthetic benchmark's sources, or made at random.

Shared by the tests of explanations and of the ONNX export, which must hold for every family
and variant the numpy model runs.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from kuoro.fusion.candidates import (
    CANDIDATE_FEATURES,
    SOURCE_FEATURES,
    Candidates,
    ConceptPrior,
    build_candidates,
    feature_names,
)
from kuoro.fusion.export import export_arrays
from kuoro.fusion.members import MemberEnsemble
from kuoro.fusion.models import KuoroFusion, LinearFusion, MeanFusion
from kuoro.fusion.numpy_model import NumpyFusion

from support.data import load_benchmark

N_CONCEPTS = 3000
N_SOURCES = 4
WEIGHTS = [1.0, 2.0, 1.0, 1.5]


def _silence(matrix: sp.csr_matrix, documents: list[int]) -> sp.csr_matrix:
    keep = np.ones(matrix.shape[0], np.float32)
    keep[documents] = 0.0
    result = sp.csr_matrix(sp.diags(keep) @ matrix)
    result.eliminate_zeros()
    return result


def synthetic_candidates(n_docs: int = 40, seed: int = 7) -> tuple[Candidates, ConceptPrior]:
    """Candidates of the synthetic benchmark's sources for ``n_docs`` documents, with silent
    sources (source 0 says nothing for documents 0-5, only source 2 speaks for document 6,
    documents 7 and the last have no candidates), and the prior they were built with."""
    synthetic = load_benchmark("synthetic")
    gold, sources = next(
        synthetic.generate(N_CONCEPTS, n_docs, chunk_size=n_docs, top_k=50, seed=seed)
    )
    empty = [7, n_docs - 1]
    sources = [
        _silence(sources[0], [0, 1, 2, 3, 4, 5, 6, *empty]),
        _silence(sources[1], [6, *empty]),
        _silence(sources[2], empty),
        _silence(sources[3], [6, *empty]),
    ]
    prior = ConceptPrior.from_counts(np.bincount(np.concatenate(gold), minlength=N_CONCEPTS))
    return build_candidates(sources, None, prior, top_k=50), prior


def random_candidates(prior: ConceptPrior, n_docs: int = 30, seed: int = 0) -> Candidates:
    """Random candidates shaped as ``build_candidates`` shapes them: each document's columns
    (every source's top, mass and count) the same on all its rows, a source absent (score 0,
    count 0 for the document) now and then, the prior column from ``prior``."""
    rng = np.random.default_rng(seed)
    names = feature_names(N_SOURCES)
    per_doc = rng.integers(0, 12, n_docs)
    per_doc[0] = 0  # a document without candidates
    offsets = np.zeros(n_docs + 1, np.int64)
    np.cumsum(per_doc, out=offsets[1:])
    m = int(offsets[-1])
    doc = np.repeat(np.arange(n_docs), per_doc)
    concepts = np.concatenate(
        [np.sort(rng.choice(N_CONCEPTS, k, replace=False)) for k in per_doc]
    ).astype(np.int32)
    spoke = rng.random((n_docs, N_SOURCES)) < 0.8
    spoke[np.arange(n_docs), rng.integers(0, N_SOURCES, n_docs)] = True  # one speaks at least
    scores = rng.random((m, N_SOURCES)) * spoke[doc] * (rng.random((m, N_SOURCES)) < 0.7)
    scores = scores.astype(np.float32)
    features = rng.random((m, len(names))).astype(np.float32)
    for s in range(N_SOURCES):
        features[:, names.index(f"s{s}_score")] = scores[:, s]
        features[:, names.index(f"s{s}_present")] = scores[:, s] > 0
        for name in ("top", "mass", "count"):
            per_document = rng.random(n_docs).astype(np.float32) * spoke[:, s]
            features[:, names.index(f"s{s}_{name}")] = per_document[doc]
    features[:, names.index("prior")] = prior.feature(concepts)
    assert len(names) == N_SOURCES * len(SOURCE_FEATURES) + len(CANDIDATE_FEATURES)
    return Candidates(offsets, concepts, scores, features, None)


def with_random_parameters(model: nn.Module, scale: float, seed: int = 0) -> nn.Module:
    """Random values added to every parameter, as training would move them (the layers that
    start at zero would otherwise hide their terms). Returns the model in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * scale)
    return model.eval()


def kuoro(hidden_size: int = 16, gate_top_k: int = 0, concept_sources: bool = True) -> KuoroFusion:
    return KuoroFusion(
        N_CONCEPTS,
        N_SOURCES,
        len(feature_names(N_SOURCES)),
        source_weights=WEIGHTS,
        hidden_size=hidden_size,
        gate_top_k=gate_top_k,
        concept_sources=concept_sources,
    )


def linear() -> LinearFusion:
    return LinearFusion(N_CONCEPTS, WEIGHTS)


# name → (a fresh torch model, the scale of its random parameters)
MODELS: dict[str, tuple[Callable[[], nn.Module], float]] = {
    "mean": (lambda: MeanFusion(WEIGHTS), 0.0),
    "linear": (linear, 0.05),
    "linear, 3 members": (lambda: MemberEnsemble(lambda seed: linear(), 3), 0.05),
    "kuoro": (kuoro, 0.3),
    "kuoro, no concept_sources": (lambda: kuoro(concept_sources=False), 0.3),
    "kuoro, hidden 64": (lambda: kuoro(hidden_size=64), 0.2),
    "kuoro, gate top-2": (lambda: kuoro(gate_top_k=2), 0.3),
    "kuoro, gate top-4 of 4": (lambda: kuoro(gate_top_k=4), 0.3),
    "kuoro, 4 members": (lambda: MemberEnsemble(lambda seed: kuoro(), 4), 0.3),
    "kuoro, 3 members, gate top-1, no concept_sources": (
        lambda: MemberEnsemble(
            lambda seed: kuoro(gate_top_k=1, concept_sources=False), seeds=[4, 5, 6]
        ),
        0.3,
    ),
}


def numpy_model(name: str, seed: int = 0) -> NumpyFusion:
    """The model ``name`` of MODELS with random parameters, as the numpy model."""
    make, scale = MODELS[name]
    return NumpyFusion.from_arrays(export_arrays(with_random_parameters(make(), scale, seed)))
