"""Metrics pinned on small cases computed by hand, with Annif's definitions."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from kuoro.evaluation.metrics import ANNIF_ORDER, RankingMetrics, SubjectResult, ranked_predictions


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


def two_documents(**kw: Any) -> RankingMetrics:
    """Document A: predicted 1, 5, 2 (best first), gold {1, 2, 3}; B: predicted 1, 4, gold {4}.
    Six concepts (0-5)."""
    metrics = RankingMetrics(**kw)
    batch = sp.vstack([row({1: 0.9, 5: 0.8, 2: 0.7}, 6), row({1: 0.6, 4: 0.5}, 6)]).tocsr()
    metrics.update(batch, [{1, 2, 3}, {4}])
    return metrics


def test_every_average_by_hand() -> None:
    metrics = two_documents()
    m = metrics.compute()
    # Per document: A has hits at ranks 1 and 3 (P 2/3, R 2/3, F1 2·2/(3+3) = 2/3);
    # B has a hit at rank 2 (P 1/2, R 1, F1 2·1/(2+1) = 2/3).
    assert m["Precision (doc avg)"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert m["Recall (doc avg)"] == pytest.approx((2 / 3 + 1) / 2)
    assert m["F1 score (doc avg)"] == pytest.approx(2 / 3)
    # Top 1: A hit (P 1, R 1/3, F1 2/(1+3)); B miss (0, 0, 0).
    assert m["Precision@1"] == pytest.approx(0.5)
    assert m["Recall@1"] == pytest.approx(1 / 6)
    assert m["F1@1"] == pytest.approx(0.25)
    # Top 3 = everything predicted here.
    assert (m["Precision@3"], m["Recall@3"], m["F1@3"]) == pytest.approx(
        (m["Precision (doc avg)"], m["Recall (doc avg)"], m["F1 score (doc avg)"])
    )
    # Per concept (support, predicted, hits): c0 (0,0,0), c1 (1,2,1), c2 (1,1,1), c3 (1,0,0),
    # c4 (1,1,1), c5 (0,1,0). P: c1 1/2, c2 1, c4 1; R: c1, c2, c4 1; F1: c1 2/3, c2 1, c4 1.
    assert m["Precision (subj avg)"] == pytest.approx((0.5 + 1 + 1) / 6)
    assert m["Recall (subj avg)"] == pytest.approx(3 / 6)
    assert m["F1 score (subj avg)"] == pytest.approx((2 / 3 + 1 + 1) / 6)
    # Weighted by support (c1-c4 have 1 each, total 4).
    assert m["Precision (weighted subj avg)"] == pytest.approx((0.5 + 1 + 0 + 1) / 4)
    assert m["Recall (weighted subj avg)"] == pytest.approx((1 + 1 + 0 + 1) / 4)
    assert m["F1 score (weighted subj avg)"] == pytest.approx((2 / 3 + 1 + 0 + 1) / 4)
    # Micro: 3 hits of 5 predictions and 4 gold subjects.
    assert m["Precision (microavg)"] == pytest.approx(3 / 5)
    assert m["Recall (microavg)"] == pytest.approx(3 / 4)
    assert m["F1 score (microavg)"] == pytest.approx(2 * 3 / (5 + 4))
    # LRAP: A: gold 1 at rank 1 (1/1), gold 2 at rank 3 (2/3), gold 3 missing (0), over 3 gold;
    # B: gold 4 at rank 2 (1/2).
    assert m["LRAP"] == pytest.approx(((1 + 2 / 3) / 3 + 1 / 2) / 2)
    assert metrics.counts() == {
        "True positives": 3,
        "False positives": 2,
        "False negatives": 1,
        "Documents evaluated": 2,
    }


def test_subject_results_by_hand() -> None:
    results = two_documents().subject_results()
    # Support descending, then concept id; concept 0 (never gold nor predicted) is left out.
    assert [r.concept for r in results] == [1, 2, 3, 4, 5]
    assert results[0] == SubjectResult(1, support=1, predicted=2, hits=1, precision=0.5,
                                       recall=1.0, f1=pytest.approx(2 / 3))  # fmt: skip
    assert (results[2].support, results[2].predicted, results[2].f1) == (1, 0, 0.0)
    assert (results[4].support, results[4].predicted, results[4].precision) == (0, 1, 0.0)


def test_subject_average_counts_every_concept_of_the_vocabulary() -> None:
    narrow, wide = two_documents().compute(), two_documents(n_concepts=60).compute()
    assert wide["Recall (subj avg)"] == pytest.approx(narrow["Recall (subj avg)"] / 10)
    assert wide["Recall (weighted subj avg)"] == narrow["Recall (weighted subj avg)"]


def test_batches_add_up_to_one_pass() -> None:
    rng = np.random.default_rng(4)
    width = 30
    scores = sp.random(40, width, density=0.3, format="csr", random_state=rng, dtype=np.float32)
    gold = [set(rng.choice(width, rng.integers(0, 4), replace=False).tolist()) for _ in range(40)]
    whole = RankingMetrics(limit=5, threshold=0.2)
    whole.update(scores, gold)
    parts = RankingMetrics(limit=5, threshold=0.2)
    for start in range(0, 40, 7):
        parts.update(scores[start : start + 7], gold[start : start + 7])
    assert parts.compute() == pytest.approx(whole.compute(), abs=1e-12)
    assert parts.counts() == whole.counts()
    assert parts.subject_results() == whole.subject_results()


def dense_case(seed: int, all_gold_predicted: bool) -> tuple[np.ndarray, np.ndarray]:
    """y_true (0/1) and y_score (distinct positive scores for predictions, else 0): 12 documents,
    15 concepts, one document without gold."""
    rng = np.random.default_rng(seed)
    n_docs, width = 12, 15
    y_true = np.zeros((n_docs, width), dtype=int)
    y_score = np.zeros((n_docs, width))
    for d in range(n_docs):
        predicted = rng.choice(width, 6, replace=False)
        y_score[d, predicted] = rng.permutation(np.arange(1, 7)) / 7
        pool = predicted if all_gold_predicted else np.arange(width)
        if d:
            y_true[d, rng.choice(pool, rng.integers(1, 5), replace=False)] = 1
    return y_true, y_score


def ours(y_true: np.ndarray, y_score: np.ndarray, **kw: Any) -> dict[str, float]:
    metrics = RankingMetrics(limit=y_true.shape[1], **kw)
    metrics.update(sp.csr_matrix(y_score), [np.flatnonzero(t).tolist() for t in y_true])
    return metrics.compute()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lrap_against_scikit_learn(seed: int) -> None:
    from sklearn.metrics import label_ranking_average_precision_score as lrap

    # Every gold subject predicted: the same number as scikit-learn's.
    y_true, y_score = dense_case(seed, all_gold_predicted=True)
    assert ours(y_true, y_score)["LRAP"] == pytest.approx(lrap(y_true, y_score))
    # Some not predicted: scikit-learn ties them with all V concepts at score 0, each adding
    # n_gold / V over n_gold gold subjects, that is 1/V per unpredicted subject; ours adds 0.
    y_true, y_score = dense_case(seed, all_gold_predicted=False)
    unpredicted = ((y_true > 0) & (y_score == 0)).sum(axis=1)
    assert unpredicted.sum() > 0
    expected = lrap(y_true, y_score) - (unpredicted / y_true.shape[1]).mean()
    assert ours(y_true, y_score)["LRAP"] == pytest.approx(expected)


@pytest.mark.parametrize("threshold", [0.0, 0.5])
def test_set_averages_against_scikit_learn(threshold: float) -> None:
    """Annif computes its averages with scikit-learn on dense arrays: ours agree."""
    from sklearn.metrics import f1_score, precision_score, recall_score

    y_true, y_score = dense_case(7, all_gold_predicted=False)
    m = ours(y_true, y_score, threshold=threshold)
    y_pred = y_score >= threshold if threshold else y_score > 0
    for average, name in [("samples", "doc avg"), ("macro", "subj avg"),
                          ("weighted", "weighted subj avg"), ("micro", "microavg")]:  # fmt: skip
        for score, metric in [(precision_score, "Precision"), (recall_score, "Recall"),
                              (f1_score, "F1 score")]:  # fmt: skip
            expected = score(y_true, y_pred, average=average, zero_division=0)
            assert m[f"{metric} ({name})"] == pytest.approx(expected), (metric, name)


def test_annif_order_names_every_metric_once() -> None:
    metrics = two_documents()
    assert sorted(ANNIF_ORDER) == sorted([*metrics.compute(), *metrics.counts()])
