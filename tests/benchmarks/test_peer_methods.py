"""The peer methods of benchmarks/peers.py on hand-made cases and small synthetic stores."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from kuoro.evaluation.metrics import RankingMetrics
from kuoro.store.suggestion_store import StoreBatch, SuggestionStore

from support.data import load_benchmark

pytestmark = pytest.mark.usefixtures("torch_one_thread")

peer_methods = load_benchmark("peer_methods")
synthetic = load_benchmark("synthetic")


def rows(v: int, *documents: dict[int, float]) -> sp.csr_matrix:
    """A CSR with one row per document, from {concept: score}."""
    matrix = sp.lil_matrix((len(documents), v), dtype=np.float32)
    for i, document in enumerate(documents):
        for concept, value in document.items():
            matrix[i, concept] = value
    return sp.csr_matrix(matrix)


def batch(v: int, gold: Sequence[Sequence[int]], *sources: sp.csr_matrix) -> StoreBatch:
    gold_rows = rows(v, *({c: 1.0 for c in g} for g in gold))
    return StoreBatch(np.arange(len(gold), dtype=np.int64), gold_rows, tuple(sources))


def as_dict(matrix: sp.csr_matrix, row: int = 0) -> dict[int, float]:
    start, end = matrix.indptr[row], matrix.indptr[row + 1]
    return dict(
        zip(matrix.indices[start:end].tolist(), matrix.data[start:end].tolist(), strict=True)
    )


def write_store(
    path: Path, parts: Sequence[tuple[Sequence[np.ndarray], Sequence[sp.csr_matrix]]], v: int
) -> SuggestionStore:
    """A complete store of the given (gold, source rows) parts, opened for reading."""
    n_sources = len(parts[0][1])
    with SuggestionStore.create(
        path,
        source_names=[f"s{i}" for i in range(n_sources)],
        vocab_size=v,
        fingerprints={"corpus": path.name},
        top_k=100,
        chunk_size=64,
    ) as store:
        for gold, sources in parts:
            store.append(gold, sources)
        store.mark_complete()
    return SuggestionStore.open(path)


def ndcg10(method: object, store: SuggestionStore) -> float:
    metrics = RankingMetrics(limit=10)
    for part in store.batches(128):
        metrics.update(method.rank(part), peer_methods.gold_sets(part.gold))  # type: ignore[attr-defined]
    return metrics.compute()["NDCG@10"]


class RandomOrder(peer_methods.PeerMethod):  # type: ignore[misc, name-defined]
    """The sources' union in random order: what any learnt method must beat."""

    def rank(self, part: StoreBatch) -> sp.csr_matrix:
        candidates = peer_methods.build_candidates(part.sources)
        scores = np.random.default_rng(0).random(len(candidates.concepts)) + 0.01
        return peer_methods.rows_from_scores(candidates, scores, part.gold.shape[1])


@pytest.fixture(scope="module")
def synthetic_stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SuggestionStore]:
    """train 400, validate 100, test 100 documents of one synthetic corpus at V = 2000."""
    root = tmp_path_factory.mktemp("peers")
    chunks = list(synthetic.generate(2000, 600, seed=3, chunk_size=100))
    stores = {
        "train": write_store(root / "train", chunks[:4], 2000),
        "validate": write_store(root / "validate", chunks[4:5], 2000),
        "test": write_store(root / "test", chunks[5:], 2000),
    }
    yield stores
    for store in stores.values():
        store.close()


def test_reciprocal_rank_fusion_by_hand() -> None:
    a = rows(5, {0: 0.9, 1: 0.5})
    b = rows(5, {1: 0.8, 2: 0.3, 4: 0.1})
    ranked = as_dict(peer_methods.ReciprocalRankFusion(k=60).rank(batch(5, [[1]], a, b)))
    expected = {0: 1 / 61, 1: 1 / 62 + 1 / 61, 2: 1 / 62, 4: 1 / 63}
    assert ranked.keys() == expected.keys()
    for concept, value in expected.items():
        assert ranked[concept] == pytest.approx(value, rel=1e-6)


def test_combmnz_by_hand() -> None:
    a = rows(6, {0: 0.9, 1: 0.5, 3: 0.1}, {5: 0.4})
    b = rows(6, {1: 0.8, 2: 0.3, 3: 0.55}, {})
    ranked = peer_methods.CombMNZ().rank(batch(6, [[1], [5]], a, b))
    # a: 0 → 1, 1 → 0.5, 3 → 0; b: 1 → 1, 3 → 0.5, 2 → 0. Sums × number of voters.
    assert as_dict(ranked, 0) == pytest.approx({0: 1.0, 1: 3.0, 3: 1.0})
    # A lone suggestion normalises to 1.
    assert as_dict(ranked, 1) == pytest.approx({5: 1.0})


def test_mean_is_the_plain_mean_with_absent_as_zero() -> None:
    a = rows(4, {0: 0.8, 1: 0.2})
    b = rows(4, {1: 0.6, 3: 0.4})
    ranked = as_dict(peer_methods.Mean().rank(batch(4, [[0]], a, b)))
    assert ranked == pytest.approx({0: 0.4, 1: 0.4, 3: 0.2})


def test_reciprocal_ranks_keep_the_order_within_each_document() -> None:
    documents = np.array([0, 0, 0, 1, 1])
    scores = np.array([-30.0, 40.0, 40.0 + 1e-9, -2.0, -1.0])
    ranks = peer_methods.reciprocal_ranks(documents, scores)
    assert ranks.tolist() == pytest.approx([1 / 3, 1 / 2, 1.0, 1 / 2, 1.0])


def test_simplex_grid_covers_the_simplex() -> None:
    grid = list(peer_methods.simplex_grid(3, 10))
    assert len(grid) == 66  # C(12, 2)
    assert all(w.min() >= 0 and w.sum() == pytest.approx(1.0) for w in grid)
    assert len({tuple(np.round(w, 3)) for w in grid}) == 66


def test_weighted_mean_finds_the_better_source(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    v, parts = 60, []
    for _ in range(3):
        gold, good, noise = [], [], []
        for _ in range(40):
            g = rng.choice(v, size=3, replace=False)
            distractors = rng.choice(np.setdiff1d(np.arange(v), g), size=6, replace=False)
            gold.append(np.sort(g))
            # The good source puts the gold first; the noisy one scores everything at random.
            good.append({**{int(c): 0.9 for c in g}, **{int(c): 0.5 for c in distractors}})
            noise.append({int(c): float(rng.uniform(0.1, 1.0)) for c in [*g, *distractors]})
        parts.append((gold, [rows(v, *good), rows(v, *noise)]))
    train = write_store(tmp_path / "train", parts[:1], v)
    validation = write_store(tmp_path / "validate", parts[1:2], v)
    test = write_store(tmp_path / "test", parts[2:], v)
    method = peer_methods.WeightedMean(step=0.1)
    notes = method.fit(train, validation, seed=0)
    assert method.weights[0] > method.weights[1]
    assert notes["validation NDCG@10"] == pytest.approx(1.0)
    assert ndcg10(method, test) > ndcg10(peer_methods.Mean(), test)
    for store in (train, validation, test):
        store.close()


def test_oracle_is_perfect_when_the_union_holds_all_gold() -> None:
    a = rows(8, {0: 0.2, 1: 0.9, 2: 0.5}, {4: 0.3, 5: 0.7})
    b = rows(8, {3: 0.1, 6: 0.8}, {7: 0.6})
    part = batch(8, [[0, 3], [4]], a, b)
    metrics = RankingMetrics(limit=10)
    metrics.update(peer_methods.Oracle().rank(part), peer_methods.gold_sets(part.gold))
    assert metrics.compute()["NDCG@10"] == pytest.approx(1.0)


def test_oracle_bounds_every_method(synthetic_stores: dict[str, SuggestionStore]) -> None:
    test = synthetic_stores["test"]
    oracle = ndcg10(peer_methods.Oracle(), test)
    assert oracle < 1.0  # the synthetic union misses gold
    names = synthetic_stores["train"].source_names
    others = [
        peer_methods.Mean(),
        peer_methods.ReciprocalRankFusion(),
        peer_methods.CombMNZ(),
        *(peer_methods.SourceAlone(i, name) for i, name in enumerate(names)),
    ]
    for method in others:
        assert ndcg10(method, test) <= oracle


def test_lambdamart_beats_random_order(synthetic_stores: dict[str, SuggestionStore]) -> None:
    method = peer_methods.LambdaMART(n_estimators=40, early_stopping=10, n_jobs=1)
    notes = method.fit(synthetic_stores["train"], synthetic_stores["validate"], seed=0)
    assert 1 <= notes["best_iteration"] <= 40
    test = synthetic_stores["test"]
    assert ndcg10(method, test) > ndcg10(RandomOrder(), test) + 0.05


def test_dense_peer_beats_random_order(synthetic_stores: dict[str, SuggestionStore]) -> None:
    method = peer_methods.DensePeer(hidden=16, epochs=2)
    method.fit(synthetic_stores["train"], synthetic_stores["validate"], seed=0)
    test = synthetic_stores["test"]
    assert ndcg10(method, test) > ndcg10(RandomOrder(), test) + 0.05
    # Its rows are its top 100 over the whole vocabulary, every score positive.
    part = next(test.batches(50))
    ranked = method.rank(part)
    assert ranked.shape == part.gold.shape
    assert np.diff(ranked.indptr).max() <= 100 and (ranked.data > 0).all()


def test_dense_inputs_flatten_concept_major() -> None:
    a = rows(3, {2: 0.25})
    b = rows(3, {0: 0.64, 2: 1.0})
    flat, mean = peer_methods.DensePeer.inputs([a, b])
    dense = flat.to_dense().numpy()[0]
    # Index concept · S + source; values are square roots.
    assert dense == pytest.approx([0.0, 0.8, 0.0, 0.0, 0.5, 1.0])
    assert mean.numpy()[0] == pytest.approx([0.4, 0.0, 0.75])


def test_scoring_counts_top10_picks_outside_the_sources_union() -> None:
    peers = load_benchmark("peers")
    a = rows(6, {0: 0.9, 1: 0.5})
    part = batch(6, [[1, 4]], a)
    # Picks 4 (gold) and 5 (wrong) lie outside the union {0, 1}.
    ranked = rows(6, {0: 0.9, 4: 0.8, 5: 0.7, 1: 0.1})
    metrics, union = RankingMetrics(limit=10), [0, 0, 0]
    peers.score(ranked, part, metrics, union)
    assert union == [4, 2, 1]
    assert metrics.compute()["Precision@5"] == pytest.approx(0.5)


def test_spread_shows_mean_and_sample_std_over_seeds() -> None:
    peers = load_benchmark("peers")
    assert peers.spread([0.5], 3) == "0.500"
    assert peers.spread([0.4, 0.5, 0.6], 3) == "0.500 ± 0.100"
