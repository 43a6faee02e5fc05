"""Fusion of the sources' suggestions: candidates and their features, and the fusion model."""

from kuoro.fusion.candidates import (
    FEATURE_NAMES,
    Candidates,
    ConceptPrior,
    build_candidates,
    candidate_recall,
    feature_names,
)

__all__ = [
    "FEATURE_NAMES",
    "Candidates",
    "ConceptPrior",
    "build_candidates",
    "candidate_recall",
    "feature_names",
]
