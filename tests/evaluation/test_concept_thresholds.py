"""Per-concept thresholds: what is learnt, how it is shrunk, how it is stored and applied."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from kuoro.errors import ModelError
from kuoro.evaluation.concept_thresholds import (
    DEFAULT_MIN_SUPPORT,
    DEFAULT_SHRINKAGE,
    _Entries,
    _gains,
    learn_concept_thresholds,
)
from kuoro.evaluation.metrics import RankingMetrics
from kuoro.project.thresholds import ConceptThresholds, thresholds_for_model

V = 8


def rows_of(documents: list[dict[int, float]]) -> sp.csr_matrix:
    matrix = sp.lil_matrix((len(documents), V), dtype=np.float32)
    for i, scores in enumerate(documents):
        for concept, score in scores.items():
            matrix[i, concept] = score
    return matrix.tocsr()


def f1(rows: sp.csr_matrix, gold: list[set[int]], limit: int, threshold: float = 0.0) -> float:
    metrics = RankingMetrics(limit=limit, threshold=threshold)
    metrics.update(rows, gold)
    return metrics.compute()["F1 score (doc avg)"]


def separable(n: int = 40) -> tuple[sp.csr_matrix, list[set[int]]]:
    """Concept 3 is right when scored 0.8 and wrong when scored 0.35 (half the documents
    each); concepts 1 and 2 are always right, scored 0.9 and 0.5."""
    documents, gold = [], []
    for i in range(n):
        right = i % 2 == 0
        documents.append({1: 0.9, 2: 0.5, 3: 0.8 if right else 0.35})
        gold.append({1, 2, 3} if right else {1, 2})
    return rows_of(documents), gold


def test_a_concept_whose_best_threshold_differs_gets_it() -> None:
    rows, gold = separable()
    learnt = learn_concept_thresholds(rows, gold, limit=3, threshold=0.0, model_version="v1")
    t = learnt.thresholds
    own = dict(zip(t.concepts.tolist(), t.thresholds.tolist(), strict=True))
    # Any threshold in (0.35, 0.8] separates concept 3's right suggestions from its wrong
    # ones: of the grid's, the one nearest the global threshold 0.
    assert own[3] == pytest.approx(0.4)
    assert own[1] == own[2] == 0.0  # always right: nothing to gain
    assert t.changed() == 1 and t.global_threshold == 0.0 and t.limit == 3
    assert learnt.f1 == pytest.approx(1.0) and learnt.global_f1 < 0.95
    assert f1(t.apply(rows), gold, limit=3) == pytest.approx(learnt.f1)


def test_gains_are_the_exact_changes_of_the_document_average() -> None:
    """Each suggestion's in/out change of its document's F1 is what moving its concept's
    threshold does, measured by the metrics themselves (others at the global threshold)."""
    rng = np.random.default_rng(7)
    documents, gold = [], []
    for _ in range(60):
        concepts = rng.choice(V, size=rng.integers(1, V), replace=False)
        documents.append({int(c): float(rng.choice([0.1, 0.3, 0.5, 0.7, 0.9])) for c in concepts})
        gold.append({int(c) for c in rng.choice(V, size=rng.integers(1, 4), replace=False)})
    rows = rows_of(documents)
    for limit, threshold in [(2, 0.0), (3, 0.4), (5, 0.2)]:
        entries = _Entries.of(rows, gold)
        gain_in, gain_out = _gains(entries, limit, threshold)
        base = f1(rows, gold, limit, threshold) * len(gold)
        for concept in range(V):
            for value in (0.0, 0.2, 0.6, 0.95):
                mine = entries.concepts == concept
                inside = entries.scores[mine] >= value if value > 0 else entries.scores[mine] > 0
                predicted = np.where(inside, gain_in[mine], gain_out[mine]).sum()
                changed = ConceptThresholds(
                    "v", limit, threshold, np.array([concept]), np.array([value]),
                    np.array([1]), 1, "blend", len(gold),
                )  # fmt: skip
                actual = f1(changed.apply(rows), gold, limit) * len(gold) - base
                assert predicted == pytest.approx(actual, abs=1e-9), (limit, concept, value)


def test_shrinkage_by_support() -> None:
    rows, gold = separable(n=8)  # concept 3: gold in 4 documents
    common = {"limit": 3, "threshold": 0.0, "model_version": "v1"}
    own = learn_concept_thresholds(rows, gold, min_support=4, **common).thresholds
    assert own.of(np.array([3]))[0] == pytest.approx(0.4)
    fallback = learn_concept_thresholds(
        rows, gold, min_support=8, shrinkage="fallback", **common
    ).thresholds
    assert fallback.of(np.array([3]))[0] == 0.0  # 4 < 8 occurrences: the global threshold
    blend = learn_concept_thresholds(rows, gold, min_support=8, shrinkage="blend", **common)
    # Half the support needed: half way from the global threshold to its own.
    assert blend.thresholds.of(np.array([3]))[0] == pytest.approx(0.2)
    assert blend.thresholds.support[blend.thresholds.concepts == 3][0] == 4


def test_support_from_wrong_predictions_too() -> None:
    """A concept suggested first in every document and never right: no gold support, but
    every document is evidence for a higher threshold."""
    documents = [{0: 0.6, 1: 0.5, 2: 0.3} for _ in range(20)]
    gold = [{1, 2} if i % 2 else {1} for i in range(20)]
    rows = rows_of(documents)
    common = {"limit": 3, "threshold": 0.0, "model_version": "v1"}
    by_gold = learn_concept_thresholds(rows, gold, **common).thresholds
    assert by_gold.of(np.array([0]))[0] == 0.0
    both = learn_concept_thresholds(rows, gold, support_from="gold-or-predicted", **common)
    assert both.thresholds.of(np.array([0]))[0] > 0.6
    assert both.f1 > both.global_f1


def test_storage_round_trip(tmp_path: Path) -> None:
    rows, gold = separable()
    learnt = learn_concept_thresholds(rows, gold, limit=3, threshold=0.05, model_version="v7")
    path = tmp_path / "p.thresholds.npz"
    learnt.thresholds.save(path)
    loaded = ConceptThresholds.load(path)
    for name in ("concepts", "thresholds", "support"):
        assert np.array_equal(getattr(loaded, name), getattr(learnt.thresholds, name)), name
    assert (loaded.model_version, loaded.limit, loaded.global_threshold) == ("v7", 3, 0.05)
    assert (loaded.min_support, loaded.shrinkage, loaded.documents) == (
        DEFAULT_MIN_SUPPORT,
        DEFAULT_SHRINKAGE,
        40,
    )
    assert np.array_equal(loaded.apply(rows).toarray(), learnt.thresholds.apply(rows).toarray())
    # Tied to the model version: another version's are not applied.
    assert thresholds_for_model("p", path, "v7") is not None
    assert thresholds_for_model("p", path, "v8") is None
    with pytest.raises(ModelError, match="no per-concept thresholds were learnt"):
        thresholds_for_model("p", tmp_path / "absent.npz", "v7")
    path.write_bytes(b"damaged")
    with pytest.raises(ModelError, match="damaged per-concept thresholds"):
        ConceptThresholds.load(path)


def test_apply_keeps_what_reaches_its_concepts_threshold() -> None:
    t = ConceptThresholds(
        "v", 5, 0.3, np.array([1, 4]), np.array([0.0, 0.9]), np.array([5, 5]), 5, "blend", 1
    )
    rows = rows_of([{0: 0.2, 1: 0.1, 2: 0.3, 4: 0.85, 5: 0.95}])
    kept = t.apply(rows)
    # 0: 0.2 < global 0.3; 1: own 0 keeps any positive; 2: 0.3 ≥ 0.3; 4: 0.85 < 0.9.
    assert sorted(kept.indices.tolist()) == [1, 2, 5]
    assert rows.nnz == 5  # the input is left alone
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        ConceptThresholds("v", 5, 1.5, np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int64),
                          5, "blend", 1)  # fmt: skip
