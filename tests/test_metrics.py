"""Metrics pinned on small cases computed by hand, with Annif's definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from kuoro.metrics import RankingMetrics, ranked_predictions


def row(pairs: dict[int, float], width: int = 20) -> sp.csr_matrix:
    ids = list(pairs)
    return sp.csr_matrix(
        (np.array([pairs[i] for i in ids], np.float32), ([0] * len(ids), ids)), shape=(1, width)
    )


def evaluate(pairs: dict[int, float], gold: set[int], **kw: float) -> dict[str, float]:
    metrics = RankingMetrics(**kw)  # type: ignore[arg-type]
    metrics.update(row(pairs), [gold])
    return metrics.compute()


def test_hand_computed_document() -> None:
    m = evaluate({1: 0.9, 5: 0.8, 2: 0.7, 7: 0.6}, {1, 2, 3})
    assert m["Precision (doc avg)"] == pytest.approx(0.5)
    assert m["Recall (doc avg)"] == pytest.approx(2 / 3)
    assert m["F1 score (doc avg)"] == pytest.approx(4 / 7)
    assert m["Precision@1"] == 1.0
    assert m["Precision@3"] == pytest.approx(2 / 3)
    assert m["Precision@5"] == pytest.approx(0.5), "divides by the 4 predictions kept, not by 5"
    assert m["Recall@5"] == pytest.approx(2 / 3)
    assert m["F1@5"] == pytest.approx(4 / 7)
    ideal = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert m["NDCG"] == pytest.approx(1.5 / ideal)
    assert m["NDCG@5"] == pytest.approx(1.5 / ideal)
    assert m["NDCG@10"] == pytest.approx(1.5 / ideal)


def test_ndcg_at_k_truncates_the_ideal() -> None:
    gold = set(range(7))
    m = evaluate({i: 1 - i / 10 for i in range(5)}, gold, limit=5)
    assert m["NDCG@5"] == pytest.approx(1.0)
    assert m["NDCG"] == pytest.approx(
        sum(1 / math.log2(r + 1) for r in range(1, 6))
        / sum(1 / math.log2(r + 1) for r in range(1, 8))
    )


def test_threshold_and_limit() -> None:
    m = evaluate({1: 0.9, 5: 0.8, 2: 0.7, 7: 0.6}, {1, 2, 3}, threshold=0.75)
    assert m["Precision (doc avg)"] == pytest.approx(0.5)
    assert m["Recall (doc avg)"] == pytest.approx(1 / 3)
    m = evaluate({1: 0.9, 5: 0.8, 2: 0.7, 7: 0.6}, {1, 2, 3}, limit=1)
    assert (m["Precision (doc avg)"], m["Recall (doc avg)"]) == (1.0, pytest.approx(1 / 3))


def test_empty_cases() -> None:
    no_gold = evaluate({4: 0.5}, set())
    assert no_gold["NDCG"] == no_gold["NDCG@10"] == 1.0
    assert no_gold["Precision (doc avg)"] == no_gold["Recall (doc avg)"] == 0.0
    nothing = evaluate({}, {1})
    assert nothing["NDCG"] == nothing["Precision@1"] == nothing["F1@5"] == 0.0


def test_averages_over_documents_and_ties() -> None:
    metrics = RankingMetrics()
    batch = sp.vstack([row({1: 0.5, 2: 0.5}), row({3: 1.0})]).tocsr()
    metrics.update(batch, [{1}, {4}])
    result = metrics.compute()
    assert metrics.documents == 2
    assert result["Precision@1"] == pytest.approx(0.5), "a tie ranks the lower id first"
    order = ranked_predictions(np.array([9, 2, 5]), np.array([0.5, 0.5, 0.7]), limit=10)
    assert order.tolist() == [5, 2, 9]


def test_row_count_must_match() -> None:
    with pytest.raises(ValueError, match="2 suggestion rows for 1 documents"):
        RankingMetrics().update(sp.vstack([row({1: 1}), row({2: 1})]).tocsr(), [{1}])
