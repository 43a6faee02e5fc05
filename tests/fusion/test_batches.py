"""Training batches: candidates built once and kept, or streamed when they would not fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from kuoro.fusion.batches import (
    CandidateSource,
    Epochs,
    StorePart,
    candidate_batches,
    concatenate,
    take_documents,
)
from kuoro.fusion.candidates import ConceptPrior
from kuoro.fusion.tensors import CandidateBatch
from kuoro.store.suggestion_store import SuggestionStore

from support.data import load_benchmark

N_CONCEPTS, N_DOCS = 300, 90


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> SuggestionStore:
    synthetic = load_benchmark("synthetic")
    path: Path = tmp_path_factory.mktemp("batches") / "store"
    gold, sources = next(synthetic.generate(N_CONCEPTS, N_DOCS, chunk_size=N_DOCS, seed=3))
    with SuggestionStore.create(
        path,
        source_names=[f"s{i}" for i in range(len(sources))],
        vocab_size=N_CONCEPTS,
        fingerprints={f"s{i}": "x" for i in range(len(sources))},
        top_k=100,
        chunk_size=32,
    ) as writer:
        writer.append(gold, sources)
        writer.mark_complete()
    return SuggestionStore.open(path)


def source_of(store: SuggestionStore) -> CandidateSource:
    return CandidateSource(ConceptPrior.from_counts(store.prior()))


def rows_by_document(batch: CandidateBatch) -> dict[tuple[float, ...], tuple]:
    """Each document's candidates, keyed by its first row's features (documents differ)."""
    out = {}
    for d in range(batch.n_docs):
        one = batch.documents(d, d + 1)
        if one.n_candidates:
            key = tuple(one.features[0].tolist())
            out[key] = (one.concepts.tolist(), one.features.sum().item(), one.n_gold.tolist())
    return out


def test_take_documents_and_concatenate_keep_every_document_whole(
    store: SuggestionStore,
) -> None:
    positions = np.arange(len(store))
    batches = list(candidate_batches(store, positions, 32, source_of(store), training=True))
    whole = concatenate(batches)
    assert whole.n_docs == len(store)
    assert whole.n_candidates == sum(b.n_candidates for b in batches)
    assert (whole.doc_offsets.diff() >= 0).all()
    picked = take_documents(whole, torch.tensor([5, 0, 40]))
    for i, d in enumerate([5, 0, 40]):
        a, b = picked.documents(i, i + 1), whole.documents(d, d + 1)
        assert torch.equal(a.features, b.features) and torch.equal(a.concepts, b.concepts)
        assert torch.equal(a.labels, b.labels) and torch.equal(a.n_gold, b.n_gold)
        assert (a.doc_index == 0).all()


def test_cached_epochs_hold_the_documents_streamed_epochs_do(store: SuggestionStore) -> None:
    parts = [StorePart(store, np.arange(0, 60)), StorePart(store, np.arange(70, len(store)))]
    cpu = torch.device("cpu")
    cached = Epochs(parts, 16, source_of(store), seed=1, device=cpu)
    streamed = Epochs(parts, 16, source_of(store), seed=1, device=cpu, cache_bytes=0)
    first = list(cached.epoch(0))
    assert cached._cached is not None and streamed._cached is None
    documents = rows_by_document(concatenate(first))
    assert documents == rows_by_document(concatenate(list(streamed.epoch(0))))
    assert sum(b.n_docs for b in first) <= 80 and all(b.n_docs <= 16 for b in first)
    # Another epoch: the same documents in another order; the same epoch again: the same.
    second = list(cached.epoch(1))
    assert rows_by_document(concatenate(second)) == documents
    assert [b.concepts.tolist() for b in second] != [b.concepts.tolist() for b in first]
    again = list(cached.epoch(1))
    assert [b.concepts.tolist() for b in again] == [b.concepts.tolist() for b in second]


def test_documents_outside_the_parts_are_never_read(store: SuggestionStore) -> None:
    held = np.arange(60, 70)
    parts = [StorePart(store, np.setdiff1d(np.arange(len(store)), held))]
    epochs = Epochs(parts, 16, source_of(store), seed=0, device=torch.device("cpu"))
    trained = rows_by_document(concatenate(list(epochs.epoch(0))))
    held_docs = rows_by_document(
        concatenate(list(candidate_batches(store, held, 16, source_of(store), training=True)))
    )
    assert held_docs and not set(held_docs) & set(trained)


def test_parts_too_large_to_keep_are_streamed_without_building_them_first(
    store: SuggestionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = [StorePart(store, np.arange(len(store)))]
    built: list[int] = []
    real = CandidateSource.batch

    def counting(self: CandidateSource, *args: object, **kwargs: object) -> CandidateBatch:
        batch = real(self, *args, **kwargs)  # type: ignore[arg-type]
        built.append(batch.n_docs)
        return batch

    monkeypatch.setattr(CandidateSource, "batch", counting)
    # Room for a few documents only: the first batch says they will not fit.
    small = Epochs(parts, 16, source_of(store), 0, torch.device("cpu"), cache_bytes=100_000)
    streamed = list(small.epoch(0))
    assert small._cached is None
    # One batch read to judge, then the epoch streamed in batches of 16: nothing kept.
    assert built[0] <= 256 and sum(built[1:]) == len(store)
    assert sum(b.n_docs for b in streamed) == len(store)
