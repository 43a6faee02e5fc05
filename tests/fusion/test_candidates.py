"""Candidate features: a hand-checked example, a slow reference, and no cost per vocabulary."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp

from kuoro.fusion.candidates import (
    CANDIDATE_FEATURES,
    FEATURE_NAMES,
    SOURCE_FEATURES,
    ConceptPrior,
    build_candidates,
    candidate_recall,
    feature_names,
)
from kuoro.fusion.cooccurrence import MAX_SUBJECTS, SubjectCooccurrence


def csr(rows: list[dict[int, float]], n_concepts: int) -> sp.csr_matrix:
    """A CSR with one {concept: score} dict per document."""
    indptr, indices, data = [0], [], []
    for row in rows:
        for concept in sorted(row):
            indices.append(concept)
            data.append(row[concept])
        indptr.append(len(indices))
    return sp.csr_matrix(
        (np.asarray(data, np.float32), np.asarray(indices, np.int32), np.asarray(indptr)),
        shape=(len(rows), n_concepts),
    )


def gold_csr(rows: list[list[int]], n_concepts: int) -> sp.csr_matrix:
    return csr([dict.fromkeys(row, 1.0) for row in rows], n_concepts)


def test_feature_names_are_documented_and_source_major() -> None:
    assert len(FEATURE_NAMES) == 4 * len(SOURCE_FEATURES) + len(CANDIDATE_FEATURES)
    assert feature_names(2)[: len(SOURCE_FEATURES)] == tuple(f"s0_{n}" for n in SOURCE_FEATURES)
    assert feature_names(2)[-len(CANDIDATE_FEATURES) :] == tuple(CANDIDATE_FEATURES)
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    assert all(
        "\n" not in text for text in (*SOURCE_FEATURES.values(), *CANDIDATE_FEATURES.values())
    )


def test_hand_built_batch_every_value() -> None:
    v = 10
    # Document 0: both sources, a tie in source 1 (ranked by lower concept id);
    # document 1: only source 1; document 2: no suggestions at all.
    s0 = csr([{2: 0.8, 5: 0.4}, {}, {}], v)
    s1 = csr([{2: 0.3, 5: 0.6, 7: 0.3}, {1: 0.5}, {}], v)
    gold = gold_csr([[5, 9], [1], [3]], v)
    prior = ConceptPrior.from_counts(np.array([0, 3, 1, 0, 0, 7, 0, 0, 0, 0]))
    c = build_candidates([s0, s1], gold, prior, top_k=4)

    assert c.doc_offsets.tolist() == [0, 3, 4, 4]
    assert c.concepts.tolist() == [2, 5, 7, 1]
    assert c.concepts.dtype == np.int32 and c.features.dtype == np.float32
    np.testing.assert_array_equal(
        c.scores, np.float32([[0.8, 0.3], [0.4, 0.6], [0, 0.3], [0, 0.5]])
    )
    assert c.labels is not None and c.labels.tolist() == [0.0, 1.0, 0.0, 1.0]

    l5 = math.log(5)
    lr = [1.0, 1 - math.log(2) / l5, 1 - math.log(3) / l5]  # logrank at ranks 1, 2, 3
    #        score present rrank logrank relscore top mass count
    expected_s0 = [
        [0.8, 1, 1, lr[0], 1.0, 0.8, 1.2 / 4, 2 / 4],
        [0.4, 1, 1 / 2, lr[1], 0.5, 0.8, 1.2 / 4, 2 / 4],
        [0.0, 0, 0, 0, 0, 0.8, 1.2 / 4, 2 / 4],
        [0.0, 0, 0, 0, 0, 0, 0, 0],
    ]
    expected_s1 = [
        [0.3, 1, 1 / 2, lr[1], 0.5, 0.6, 1.2 / 4, 3 / 4],
        [0.6, 1, 1, lr[0], 1.0, 0.6, 1.2 / 4, 3 / 4],
        [0.3, 1, 1 / 3, lr[2], 0.5, 0.6, 1.2 / 4, 3 / 4],
        [0.5, 1, 1, lr[0], 1.0, 0.5, 0.5 / 4, 1 / 4],
    ]
    #          agreement mean mean_present max union_size prior (co-occurrence: none, 0)
    expected_shared = [
        [1.0, 0.55, 0.55, 0.8, 3 / 8, math.log(2) / math.log(8), 0, 0, 0],
        [1.0, 0.5, 0.5, 0.6, 3 / 8, 1.0, 0, 0, 0],
        [0.5, 0.15, 0.3, 0.3, 3 / 8, 0.0, 0, 0, 0],
        [0.5, 0.25, 0.5, 0.5, 1 / 8, 2 / 3, 0, 0, 0],
    ]
    expected = np.hstack([expected_s0, expected_s1, expected_shared])
    assert c.features.shape == (4, len(feature_names(2)))
    np.testing.assert_allclose(c.features, expected, rtol=1e-6, atol=1e-7)

    # When the prior counted these documents, each candidate's own label leaves its count:
    # concept 5 (gold in document 0) counts 6, concept 1 (gold in document 1) counts 2.
    counted = build_candidates([s0, s1], gold, prior, top_k=4, prior_counted_batch=True)
    expected[:, -4] = [math.log(k) / math.log(8) for k in (2, 7, 1, 3)]
    np.testing.assert_allclose(counted.features, expected, rtol=1e-6, atol=1e-7)

    # Gold (0, 9) and (2, 3) are no candidates: they have no row, and recall counts them.
    assert candidate_recall(c, gold) == pytest.approx(2 / 4)
    assert c.documents().tolist() == [0, 0, 0, 1]


def reference(
    sources: list[sp.csr_matrix],
    gold: sp.csr_matrix,
    counts: np.ndarray,
    top_k: int,
    corpus: list[set[int]] | None = None,
) -> tuple[list[int], list[int], list[list[float]], list[float]]:
    """One document and one candidate at a time, straight from the feature descriptions;
    ``corpus``: the subject sets the co-occurrence columns count (zeros without)."""
    n_docs = sources[0].shape[0]
    n_sources = len(sources)
    offsets, concepts, rows, labels = [0], [], [], []
    for d in range(n_docs):
        lists = []
        for m in sources:
            row = m[d]
            lists.append(
                {int(i): float(s) for i, s in zip(row.indices, row.data, strict=True) if s > 0}
            )
        gold_set = set(gold[d].indices.tolist())
        union = sorted(set().union(*lists))
        for concept in union:
            per_source: list[float] = []
            present_scores = []
            for suggested in lists:
                ranked = sorted(suggested, key=lambda i, s=suggested: (-s[i], i))
                top = max(suggested.values(), default=0.0)
                mass = sum(suggested.values()) / top_k
                count = len(suggested) / top_k
                if concept in suggested:
                    score = suggested[concept]
                    rank = ranked.index(concept) + 1
                    present_scores.append(score)
                    per_source += [
                        score,
                        1,
                        1 / rank,
                        max(1 - math.log(rank) / math.log(top_k + 1), 0),
                    ]
                    per_source += [score / top]
                else:
                    per_source += [0, 0, 0, 0, 0]
                per_source += [top, mass, count]
            shared = [
                len(present_scores) / n_sources,
                sum(present_scores) / n_sources,
                sum(present_scores) / len(present_scores),
                max(present_scores),
                len(union) / (n_sources * top_k),
                math.log1p(counts[concept] - (concept in gold_set)) / math.log1p(counts.max()),
                *co_occurrence_reference(concept, union, lists, corpus),
            ]
            concepts.append(concept)
            rows.append(per_source + shared)
            labels.append(float(concept in gold_set))
        offsets.append(len(concepts))
    return offsets, concepts, rows, labels


def co_occurrence_reference(
    concept: int, union: list[int], lists: list[dict[int, float]], corpus: list[set[int]] | None
) -> list[float]:
    """implied, implied_lift and corpus_prior of one candidate, counted on ``corpus``."""
    if corpus is None:
        return [0.0, 0.0, 0.0]
    kept = [subjects for subjects in corpus if 0 < len(subjects) <= MAX_SUBJECTS]
    weighted = total = 0.0
    for other in union:
        if other == concept:
            continue
        weight = sum(suggested.get(other, 0.0) for suggested in lists) / len(lists)
        with_other = [subjects for subjects in kept if other in subjects]
        both = sum(concept in subjects for subjects in with_other)
        weighted += weight * (both / len(with_other) if with_other else 0.0)
        total += weight
    implied = weighted / max(total, 1e-6)
    frequency = {c: sum(c in subjects for subjects in kept) for c in set().union(*kept)}
    frequency.setdefault(concept, 0)
    marginal = max(frequency[concept] / len(kept), 0.5 / len(kept))
    return [
        implied,
        math.log1p(implied / marginal) / 10,
        math.log1p(frequency[concept]) / math.log1p(max(frequency.values())),
    ]


def random_batch(
    rng: np.random.Generator, n_docs: int, n_concepts: int, n_sources: int, top_k: int
) -> tuple[list[sp.csr_matrix], sp.csr_matrix]:
    sources = []
    for _ in range(n_sources):
        rows = []
        for _ in range(n_docs):
            size = int(rng.integers(0, top_k + 1)) if rng.random() > 0.1 else 0
            ids = rng.choice(n_concepts, size, replace=False)
            # Two decimals make ties within a row common.
            rows.append(
                dict(
                    zip(ids.tolist(), np.round(rng.uniform(0.01, 1, size), 2).tolist(), strict=True)
                )
            )
        sources.append(csr(rows, n_concepts))
    gold = [
        rng.choice(n_concepts, int(rng.integers(0, 6)), replace=False).tolist()
        for _ in range(n_docs)
    ]
    return sources, gold_csr(gold, n_concepts)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_per_document_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_concepts, top_k = 60, 12
    sources, gold = random_batch(rng, 25, n_concepts, 3, top_k)
    # Gold counts of some training set that holds this batch.
    counts = rng.integers(0, 50, n_concepts) + np.bincount(gold.indices, minlength=n_concepts)
    prior = ConceptPrior.from_counts(counts)
    # A corpus whose subject sets the co-occurrence columns count; sets over MAX_SUBJECTS are
    # left out of it.
    corpus = [
        set(rng.choice(n_concepts, int(rng.integers(1, 5)), replace=False).tolist())
        for _ in range(300)
    ] + [set(range(MAX_SUBJECTS + 1))] * 3
    table = SubjectCooccurrence.from_subject_sets(corpus, n_concepts)
    c = build_candidates(
        sources, gold, prior, top_k=top_k, prior_counted_batch=True, cooccurrence=table
    )
    offsets, concepts, rows, labels = reference(sources, gold, counts, top_k, corpus)
    assert c.doc_offsets.tolist() == offsets
    assert c.concepts.tolist() == concepts
    np.testing.assert_allclose(
        c.features, np.asarray(rows).reshape(c.features.shape), rtol=2e-6, atol=1e-7
    )
    assert c.labels is not None and c.labels.tolist() == labels
    n_gold = gold.nnz
    assert candidate_recall(c, gold) == pytest.approx(sum(labels) / n_gold)


def embed(matrices: list[sp.csr_matrix], n_concepts: int) -> list[sp.csr_matrix]:
    """The same rows in a wider vocabulary."""
    return [
        sp.csr_matrix((m.data, m.indices, m.indptr), shape=(m.shape[0], n_concepts))
        for m in matrices
    ]


def test_output_and_memory_do_not_depend_on_vocabulary_size() -> None:
    rng = np.random.default_rng(7)
    sources, gold = random_batch(rng, 32, 1000, 4, 100)
    small = build_candidates(sources, gold)
    large = build_candidates(embed(sources, 1_000_000), embed([gold], 1_000_000)[0])
    for field in ("doc_offsets", "concepts", "scores", "features", "labels"):
        np.testing.assert_array_equal(getattr(small, field), getattr(large, field))

    peaks = {}
    for v in (1000, 10_000_000):
        wide, wide_gold = embed(sources, v), embed([gold], v)[0]
        prior = ConceptPrior.from_counts(np.ones(v, np.float32))  # read by index only
        tracemalloc.start()
        build_candidates(wide, wide_gold, prior)
        peaks[v] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    # One float per concept would be 40 MB at V = 10^7; the batch itself needs well under 3 MB.
    assert peaks[10_000_000] < 3_000_000
    assert peaks[10_000_000] < 1.1 * peaks[1000]


def test_empty_batch_and_documents_without_candidates() -> None:
    empty = build_candidates([sp.csr_matrix((0, 50), dtype=np.float32)] * 2, gold_csr([], 50))
    assert empty.doc_offsets.tolist() == [0]
    assert empty.features.shape == (0, len(feature_names(2)))
    assert empty.labels is not None and len(empty.labels) == 0
    silent = build_candidates(
        [sp.csr_matrix((3, 50), dtype=np.float32)], gold_csr([[1], [], [2]], 50)
    )
    assert silent.doc_offsets.tolist() == [0, 0, 0, 0]
    assert candidate_recall(silent, gold_csr([[1], [], [2]], 50)) == 0.0
    assert math.isnan(candidate_recall(silent, gold_csr([[], [], []], 50)))
    assert build_candidates([sp.csr_matrix((3, 50), dtype=np.float32)]).labels is None


def test_stored_zeros_are_no_suggestions_and_csr_arrays_work() -> None:
    m = sp.csr_matrix((np.float32([0.0, 0.5]), np.int32([3, 4]), np.array([0, 2])), shape=(1, 9))
    c = build_candidates([sp.csr_array(m)])
    assert c.concepts.tolist() == [4]
    assert c.features[0, list(feature_names(1)).index("s0_rrank")] == 1.0


def test_bad_input_is_refused() -> None:
    a = csr([{1: 0.5}], 10)
    with pytest.raises(ValueError, match="at least one source"):
        build_candidates([])
    with pytest.raises(ValueError, match="shape"):
        build_candidates([a, csr([{1: 0.5}], 11)])
    with pytest.raises(ValueError, match="prior"):
        build_candidates([a], prior=ConceptPrior.from_counts(np.zeros(3)))
    with pytest.raises(ValueError, match="gold"):
        build_candidates([a], prior=ConceptPrior.from_counts(np.ones(10)), prior_counted_batch=True)
    twice = sp.csr_matrix(
        (np.float32([0.5, 0.2]), np.int32([1, 1]), np.array([0, 2])), shape=(1, 10)
    )
    with pytest.raises(ValueError, match="twice"):
        build_candidates([twice])


def test_concept_prior() -> None:
    prior = ConceptPrior.from_counts(np.array([0, 1, 3]))
    np.testing.assert_allclose(prior.feature(np.array([2, 0, 1])), [1.0, 0.0, 0.5])
    left_out = prior.feature(np.array([2, 1]), np.float32([1, 1]))
    np.testing.assert_allclose(left_out, [math.log(3) / math.log(4), 0.0], rtol=1e-6)
    assert ConceptPrior.from_counts(np.zeros(4)).feature(np.arange(4)).tolist() == [0.0] * 4
