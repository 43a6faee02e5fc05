"""Training batches from a SuggestionStore: candidates built once, shuffled every epoch.

Building a batch's candidates (decoding the store, the union of the sources, the features,
the co-occurrence lookups) costs more than the model's step on it. The candidates of a
document are the same in every epoch, so a part of a store that fits in ``CACHE_BYTES`` is
built once, as one batch of tensors, and each epoch only draws its documents in a new order;
a larger one is streamed from the store every epoch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from kuoro.errors import KuoroError
from kuoro.fusion.candidates import ConceptPrior, build_candidates
from kuoro.fusion.cooccurrence import SubjectCooccurrence
from kuoro.fusion.tensors import CandidateBatch, to_batch
from kuoro.store.suggestion_store import StoreBatch, SuggestionStore

# The most memory the training candidates may take to be kept between epochs (about 40 MB
# per 1,000 documents with four sources of 100 suggestions: some 25,000 documents).
CACHE_BYTES = 2**30
_BUILD_BATCH = 256


@dataclass(frozen=True)
class StorePart:
    """Some documents of a store: those at ``positions``."""

    store: SuggestionStore
    positions: np.ndarray

    def __len__(self) -> int:
        return len(self.positions)


@dataclass(frozen=True)
class CandidateSource:
    """What turns stored suggestions into candidates: the prior and the co-occurrence table."""

    prior: ConceptPrior
    cooccurrence: SubjectCooccurrence | None = None

    def batch(self, part: StoreBatch, top_k: int, *, training: bool) -> CandidateBatch:
        """``training``: the prior counts these documents' gold, so each candidate's own label
        is left out of its prior feature (see ``build_candidates``)."""
        candidates = build_candidates(
            part.sources,
            part.gold,
            self.prior,
            top_k=top_k,
            prior_counted_batch=training,
            cooccurrence=self.cooccurrence,
        )
        return to_batch(candidates, np.diff(part.gold.indptr))


def candidate_batches(
    store: SuggestionStore,
    positions: np.ndarray,
    batch_size: int,
    source: CandidateSource,
    *,
    training: bool,
    shuffle: bool = False,
    seed: int = 0,
) -> Iterator[CandidateBatch]:
    """The documents at ``positions`` as candidate batches."""
    for part in store.batches(batch_size, shuffle=shuffle, seed=seed, positions=positions):
        yield source.batch(part, store.top_k, training=training)


def concatenate(batches: Sequence[CandidateBatch]) -> CandidateBatch:
    """One batch of all the documents of ``batches``, in order."""
    if not batches:
        raise ValueError("nothing to concatenate")
    sizes = torch.tensor([b.n_candidates for b in batches])
    doc_shift = torch.repeat_interleave(
        torch.cumsum(torch.tensor([0] + [b.n_docs for b in batches[:-1]]), 0), sizes
    )
    row_starts = torch.cumsum(torch.cat([torch.zeros(1, dtype=torch.int64), sizes]), 0)
    offsets = [b.doc_offsets[:-1] + start for b, start in zip(batches, row_starts, strict=False)]

    def cat(name: str) -> torch.Tensor | None:
        parts = [getattr(b, name) for b in batches]
        return None if any(p is None for p in parts) else torch.cat(parts)

    return CandidateBatch(
        features=torch.cat([b.features for b in batches]),
        scores=torch.cat([b.scores for b in batches]),
        concepts=torch.cat([b.concepts for b in batches]),
        doc_index=torch.cat([b.doc_index for b in batches]) + doc_shift,
        doc_offsets=torch.cat([*offsets, row_starts[-1:]]),
        labels=cat("labels"),
        n_gold=cat("n_gold"),
        n_docs=sum(b.n_docs for b in batches),
    )


def take_documents(batch: CandidateBatch, documents: torch.Tensor) -> CandidateBatch:
    """The batch of the given documents (indices into ``batch``), in that order."""
    starts = batch.doc_offsets[documents]
    lengths = batch.doc_offsets[documents + 1] - starts
    total = int(lengths.sum())
    first_row = torch.cumsum(lengths, 0) - lengths
    rows = torch.arange(total) + torch.repeat_interleave(starts - first_row, lengths)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(lengths, 0)])
    return CandidateBatch(
        features=batch.features[rows],
        scores=batch.scores[rows],
        concepts=batch.concepts[rows],
        doc_index=torch.repeat_interleave(torch.arange(len(documents)), lengths),
        doc_offsets=offsets,
        labels=None if batch.labels is None else batch.labels[rows],
        n_gold=None if batch.n_gold is None else batch.n_gold[documents],
        n_docs=len(documents),
    )


def _bytes_per_document(batch: CandidateBatch) -> float:
    per_row = 4 * (batch.features.shape[1] + batch.scores.shape[1] + 1) + 8 * 2
    return per_row * batch.n_candidates / max(batch.n_docs, 1)


class Epochs:
    """Each epoch's training batches from one or more store parts, shuffled with
    ``seed + epoch`` (so a resumed run repeats the same epochs).

    The parts' candidates are built on the first epoch and kept when they fit in
    ``cache_bytes``; otherwise every epoch streams them from the stores, interleaving the
    parts at random.
    """

    def __init__(
        self,
        parts: Sequence[StorePart],
        batch_size: int,
        source: CandidateSource,
        seed: int,
        device: torch.device,
        cache_bytes: int = CACHE_BYTES,
    ) -> None:
        self.parts = [part for part in parts if len(part)]
        self.batch_size, self.source, self.seed, self.device = batch_size, source, seed, device
        self.cache_bytes = cache_bytes
        self._cached: CandidateBatch | None = None
        self._streaming = False

    def epoch(self, number: int) -> _CachedEpoch | _StreamedEpoch:
        """The batches of epoch ``number`` (an iterable with a length)."""
        seed = self.seed + number
        if not self._streaming and self._cached is None:
            self._cached = self._build()
            self._streaming = self._cached is None
        if self._cached is None:
            return _StreamedEpoch(self, seed)
        return _CachedEpoch(self, self._cached, seed)

    def _build(self) -> CandidateBatch | None:
        """Every part's candidates as one batch, or None when they would not fit (judged
        from the first batch, then checked as they come)."""
        built: list[CandidateBatch] = []
        size = 0.0
        documents = sum(len(part) for part in self.parts)
        for part in self.parts:
            for batch in candidate_batches(
                part.store, part.positions, _BUILD_BATCH, self.source, training=True
            ):
                if not built and _bytes_per_document(batch) * documents > self.cache_bytes:
                    return None
                built.append(batch)
                size += _bytes_per_document(batch) * batch.n_docs
                if size > self.cache_bytes:
                    return None
        return concatenate(built) if built else None


class _CachedEpoch:
    """One epoch over the kept candidates: the documents in a new order, each batch gathered
    when it is reached (so that an epoch never holds a second copy of them all)."""

    def __init__(self, epochs: Epochs, cached: CandidateBatch, seed: int) -> None:
        self.epochs, self.cached, self.seed = epochs, cached, seed

    def __len__(self) -> int:
        return math.ceil(self.cached.n_docs / self.epochs.batch_size)

    def __iter__(self) -> Iterator[CandidateBatch]:
        size = self.epochs.batch_size
        order = torch.from_numpy(np.random.default_rng(self.seed).permutation(self.cached.n_docs))
        learnt_from = 0
        for start in range(0, len(order), size):
            batch = take_documents(self.cached, order[start : start + size])
            if batch.n_candidates:  # documents no source suggested for teach nothing
                learnt_from += batch.n_docs
                yield batch.to(self.epochs.device)
        if not learnt_from:
            raise _nothing_to_learn(self.epochs.parts)


class _StreamedEpoch:
    """One epoch read from the stores (parts too large to keep), interleaved at random."""

    def __init__(self, epochs: Epochs, seed: int) -> None:
        self.epochs, self.seed = epochs, seed

    def _lengths(self) -> list[int]:
        size = self.epochs.batch_size
        return [math.ceil(len(part) / size) for part in self.epochs.parts]

    def __len__(self) -> int:
        return sum(self._lengths())

    def __iter__(self) -> Iterator[CandidateBatch]:
        e = self.epochs
        streams = [
            candidate_batches(
                part.store,
                part.positions,
                e.batch_size,
                e.source,
                training=True,
                shuffle=True,
                seed=self.seed,
            )
            for part in e.parts
        ]
        order = np.repeat(np.arange(len(streams)), self._lengths())
        np.random.default_rng(self.seed).shuffle(order)
        learnt_from = 0
        for index in order:
            batch = next(streams[index])
            if batch.n_candidates:
                learnt_from += batch.n_docs
                yield batch.to(e.device)
        if not learnt_from:
            raise _nothing_to_learn(e.parts)


def _nothing_to_learn(parts: Sequence[StorePart]) -> KuoroError:
    return KuoroError(
        f"the sources suggested nothing for any of the {sum(map(len, parts))} "
        "training documents: there is nothing to learn from (are the sources trained "
        "for this vocabulary and language?)"
    )
