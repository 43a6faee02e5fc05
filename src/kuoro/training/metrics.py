"""Metrics watched while training: objects that take batches and reduce to one number.

A metric is anything with ``reset()``, ``update(outputs, batch)`` and ``compute() -> float``;
the Trainer resets every metric before validation, updates it with each validation batch's
``predict_fn`` outputs and reads ``compute()`` at the end.

The ranking metrics score candidate batches (see ``RankingBatch``) with the definitions of
``kuoro.evaluation.metrics`` (Annif's), so that the number early stopping watches is the one
``kuoro eval`` reports:

* a document's predictions are its candidates scoring > 0 (with ``threshold`` t > 0: ≥ t),
  best first, ties to the earlier candidate (candidates are sorted by concept id within a
  document, so that is Annif's tie-break by lower id); ``threshold=None`` counts every
  candidate, for models that output logits;
* gold subjects that are not among the candidates still count: in the ideal DCG and in
  recall, through each document's ``n_gold``;
* nDCG@k: binary gains, discount 1/log2(rank + 1), ideal DCG from min(n_gold, k) hits; a
  document without gold scores 1;
* F1@k: 2·hits / (min(k, number of predictions) + n_gold), that is precision over the
  predictions kept rather than over k, as Annif does; 0 when both are 0.

Both are averaged over documents and computed in float64, vectorised over the batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class Metric(Protocol):
    """What the Trainer needs of a validation metric."""

    def reset(self) -> None: ...

    def update(self, outputs: Tensor, batch: Any) -> None: ...

    def compute(self) -> float: ...


class RankingBatch(Protocol):
    """A batch of candidates grouped by document, as the ranking metrics read it."""

    @property
    def doc_offsets(self) -> Tensor:
        """(n + 1,) int64: document i's candidates are rows [i] : [i + 1]."""
        ...

    @property
    def labels(self) -> Tensor:
        """(m,): nonzero where the candidate is a gold subject of its document."""
        ...

    @property
    def n_gold(self) -> Tensor:
        """(n,): each document's number of gold subjects, candidates or not."""
        ...


class MeanLoss:
    """The mean over validation batches of ``fn(outputs, batch)``, a scalar per batch."""

    def __init__(self, fn: Callable[[Tensor, Any], Tensor]) -> None:
        self.fn = fn
        self.reset()

    def reset(self) -> None:
        self._total = 0.0
        self._batches = 0

    def update(self, outputs: Tensor, batch: Any) -> None:
        self._total += float(self.fn(outputs, batch))
        self._batches += 1

    def compute(self) -> float:
        """The mean; NaN before any batch."""
        return self._total / self._batches if self._batches else math.nan


class _Ranked:
    """A batch's candidates sorted best first within each document, with what both metrics need."""

    def __init__(self, outputs: Tensor, batch: RankingBatch, threshold: float | None) -> None:
        for name in ("doc_offsets", "labels", "n_gold"):
            if not hasattr(batch, name):
                raise TypeError(
                    f"ranking metrics need a batch with doc_offsets, labels and n_gold "
                    f"(RankingBatch); {type(batch).__name__} has no {name}"
                )
        offsets = batch.doc_offsets.to(torch.int64)
        scores = outputs.detach().to(torch.float64).reshape(-1)
        m = int(offsets[-1])
        if scores.numel() != m or batch.labels.numel() != m:
            raise ValueError(
                f"{scores.numel()} outputs and {batch.labels.numel()} labels "
                f"for {m} candidates (doc_offsets[-1])"
            )
        device = scores.device
        self.n_documents = n = offsets.numel() - 1
        self.n_gold = batch.n_gold.to(device=device, dtype=torch.float64).reshape(-1)
        self.doc = torch.repeat_interleave(torch.arange(n, device=device), offsets.diff())
        if threshold is None:
            predicted = torch.ones(m, dtype=torch.bool, device=device)
        elif threshold > 0:
            predicted = scores >= threshold
        else:
            predicted = scores > 0
        # Two stable sorts: by score (non-predictions last), then by document; what ties in
        # both keeps its position in the batch.
        key = torch.where(predicted, scores, -math.inf)
        by_score = torch.argsort(-key, stable=True)
        order = by_score[torch.argsort(self.doc[by_score], stable=True)]
        # Sorting by document leaves every document's rows where they were: doc is unchanged.
        self.rank = torch.arange(m, device=device) - offsets[:-1].to(device)[self.doc]
        self.hit = (batch.labels.to(device).reshape(-1)[order] != 0) & predicted[order]
        self.predicted = predicted
        n_labels = self.per_document(batch.labels.to(device).reshape(-1) != 0)
        if bool((n_labels > self.n_gold).any()):
            raise ValueError("a document has more gold candidates than n_gold says it has")

    def per_document(self, values: Tensor) -> Tensor:
        """(n,) float64: the sum of ``values`` (one per candidate) over each document."""
        out = torch.zeros(self.n_documents, dtype=torch.float64, device=values.device)
        return out.index_add_(0, self.doc, values.to(torch.float64))


class _RankingMetric:
    """Sums a per-document value over the documents seen; ``compute`` is their mean."""

    def __init__(self, k: int, threshold: float | None = 0.0) -> None:
        if k < 1:
            raise ValueError(f"k must be at least 1, not {k}")
        self.k = k
        self.threshold = threshold
        self.reset()

    def reset(self) -> None:
        self._total = 0.0
        self._documents = 0

    def update(self, outputs: Tensor, batch: RankingBatch) -> None:
        values = self._per_document(_Ranked(outputs, batch, self.threshold))
        self._total += float(values.sum())
        self._documents += values.numel()

    def compute(self) -> float:
        """The document average; NaN before any document."""
        return self._total / self._documents if self._documents else math.nan

    def _per_document(self, ranked: _Ranked) -> Tensor:
        raise NotImplementedError


class NDCGAtK(_RankingMetric):
    """nDCG@k with Annif's definition (see the module docstring)."""

    def _per_document(self, ranked: _Ranked) -> Tensor:
        device = ranked.rank.device
        discount = 1.0 / torch.log2(torch.arange(self.k, device=device, dtype=torch.float64) + 2)
        in_top = ranked.hit & (ranked.rank < self.k)
        gains = torch.where(in_top, discount[ranked.rank.clamp(max=self.k - 1)], 0.0)
        dcg = ranked.per_document(gains)
        ideal_at = torch.cat([discount.new_zeros(1), discount.cumsum(0)])  # [j]: j hits on top
        ideal = ideal_at[ranked.n_gold.clamp(max=self.k).to(torch.int64)]
        return torch.where(ranked.n_gold > 0, dcg / ideal.clamp(min=1e-300), 1.0)


class F1AtK(_RankingMetric):
    """F1@k with Annif's definition: precision over min(k, predictions) (module docstring)."""

    def _per_document(self, ranked: _Ranked) -> Tensor:
        hits = ranked.per_document(ranked.hit & (ranked.rank < self.k))
        n_predicted = ranked.per_document(ranked.predicted).clamp(max=self.k)
        denominator = n_predicted + ranked.n_gold
        return torch.where(denominator > 0, 2 * hits / denominator.clamp(min=1.0), 0.0)
