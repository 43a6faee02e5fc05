"""The synthetic suggestion generator: deterministic, streamed, shaped like real sources."""

from __future__ import annotations

import tracemalloc

import numpy as np
import scipy.sparse as sp

from support.data import load_benchmark

synthetic = load_benchmark("synthetic")


def collect(**kwargs: int) -> tuple[list[np.ndarray], list[sp.csr_matrix]]:
    """All chunks joined: gold per document and one CSR per source."""
    gold: list[np.ndarray] = []
    parts: list[list[sp.csr_matrix]] = []
    for chunk_gold, sources in synthetic.generate(**kwargs):
        gold.extend(chunk_gold)
        parts.append(sources)
    return gold, [sp.vstack(p, format="csr") for p in zip(*parts, strict=True)]


def same(
    a: tuple[list[np.ndarray], list[sp.csr_matrix]], b: tuple[list[np.ndarray], list[sp.csr_matrix]]
) -> bool:
    return (
        len(a[0]) == len(b[0])
        and all(np.array_equal(x, y) for x, y in zip(a[0], b[0], strict=True))
        and all(
            np.array_equal(x.indptr, y.indptr)
            and np.array_equal(x.indices, y.indices)
            and np.array_equal(x.data, y.data)
            for x, y in zip(a[1], b[1], strict=True)
        )
    )


def test_deterministic_by_seed_and_independent_of_chunking() -> None:
    base = collect(vocab_size=5000, n_documents=700, seed=3, chunk_size=1000)
    assert same(base, collect(vocab_size=5000, n_documents=700, seed=3, chunk_size=1000))
    assert same(base, collect(vocab_size=5000, n_documents=700, seed=3, chunk_size=97))
    assert not same(base, collect(vocab_size=5000, n_documents=700, seed=4, chunk_size=1000))
    # A document's data depends on its position only, not on how many follow it.
    prefix = collect(vocab_size=5000, n_documents=300, seed=3, chunk_size=64)
    assert same(prefix, (base[0][:300], [m[:300] for m in base[1]]))


def test_chunks_and_rows_are_well_formed() -> None:
    sizes = []
    for gold, sources in synthetic.generate(3000, 650, n_sources=3, top_k=50, chunk_size=300):
        sizes.append(len(gold))
        assert len(sources) == 3
        for g in gold:
            assert 1 <= len(g) <= 8 and g.dtype == np.int32
            assert np.all(np.diff(g) > 0) and g.min() >= 0 and g.max() < 3000
        for m in sources:
            assert isinstance(m, sp.csr_matrix) and m.shape == (len(gold), 3000)
            assert m.dtype == np.float32 and m.indices.dtype == np.int32
            assert np.diff(m.indptr).max() <= 50
            assert np.all((m.data > 0) & (m.data <= 1))
            for d in range(m.shape[0]):
                assert np.all(np.diff(m.indices[m.indptr[d] : m.indptr[d + 1]]) > 0)
    assert sizes == [300, 300, 50]
    assert list(synthetic.generate(100, 0)) == []


def test_recall_and_overlap_like_the_real_protocol() -> None:
    stats = synthetic.summary(36_000, 2000, seed=1)
    assert 4.0 <= stats["gold_per_document"] <= 5.5
    # Real protocol: one source's top 100 holds 40–55% of the gold, the union of four ~73%.
    assert all(0.35 <= r <= 0.6 for r in stats["source_recall"])
    assert 0.65 <= stats["union_recall"] <= 0.8
    # The sources share candidates: the union is far smaller than the sum of the lists.
    assert stats["candidates_per_document"] < 0.7 * stats["pairs_per_document"]
    # Three sources list exactly 100; the lexical-like one fewer.
    assert 310 <= stats["pairs_per_document"] <= 360


def test_zipf_prior_has_a_head_that_is_not_the_low_ids() -> None:
    gold, _ = collect(vocab_size=36_000, n_documents=2000, seed=0, chunk_size=1000)
    counts = np.bincount(np.concatenate(gold), minlength=36_000)
    top = np.argsort(-counts)[:20]
    assert counts[top[0]] / counts.sum() > 0.01  # a head like real subjects (~2–3%)
    assert np.median(top) > 1000  # frequent concepts are spread over the id range
    assert (counts > 0).sum() < 0.5 * counts.sum()  # a long tail used only now and then


def peak_bytes(n_documents: int) -> int:
    # A chunk size that is a multiple of the generator's block of 256 documents carries no
    # partial block over; otherwise the carried part adds a sawtooth of up to one chunk.
    tracemalloc.start()
    for _gold, _sources in synthetic.generate(36_000, n_documents, chunk_size=256, seed=2):
        pass
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_streaming_memory_does_not_grow_with_documents() -> None:
    small, large = peak_bytes(1000), peak_bytes(10_000)
    assert large < 1.1 * small
