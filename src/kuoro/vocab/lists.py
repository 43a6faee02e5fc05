"""Per-concept lists in compressed sparse row form: links to other concepts (broader, related,
replaced by) and strings (alternative and hidden labels), as a vocabulary keeps them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np


@dataclass(frozen=True, eq=False)
class Links:
    """For each concept, the ids of other concepts: ``indices[indptr[i]:indptr[i + 1]]``."""

    indptr: np.ndarray  # (size + 1,) int64
    indices: np.ndarray  # (links,) int32

    @classmethod
    def empty(cls, size: int) -> Links:
        return cls(np.zeros(size + 1, np.int64), np.zeros(0, np.int32))

    @classmethod
    def of(cls, lists: Sequence[Sequence[int]] | None, size: int) -> Links:
        """Links from one list of ids per concept (None: no links)."""
        if lists is None:
            return cls.empty(size)
        if len(lists) != size:
            raise ValueError(f"links must be given for every one of the {size} concepts")
        indptr = np.zeros(size + 1, dtype=np.int64)
        indptr[1:] = np.cumsum([len(ids) for ids in lists])
        flat = (i for ids in lists for i in ids)
        return cls(indptr, np.fromiter(flat, dtype=np.int32, count=int(indptr[-1])))

    def __getitem__(self, concept: int) -> tuple[int, ...]:
        start, end = self.indptr[concept], self.indptr[concept + 1]
        return tuple(int(i) for i in self.indices[start:end])

    def lists(self) -> list[list[int]]:
        return [self.indices[a:b].tolist() for a, b in pairwise(self.indptr)]

    def inverse(self) -> Links:
        """The links the other way: for each concept, the concepts that link to it."""
        size = len(self.indptr) - 1
        sources = np.repeat(np.arange(size, dtype=np.int32), np.diff(self.indptr))
        order = np.argsort(self.indices, kind="stable")
        indptr = np.zeros(size + 1, dtype=np.int64)
        indptr[1:] = np.cumsum(np.bincount(self.indices, minlength=size))
        return Links(indptr, sources[order])

    def problem(self, size: int) -> str | None:
        """What makes these links inconsistent with a vocabulary of ``size`` concepts."""
        indptr, indices = self.indptr, self.indices
        if not all(np.issubdtype(a.dtype, np.integer) for a in (indptr, indices)):
            return "not integers"
        if indptr.ndim != 1 or indices.ndim != 1 or len(indptr) != size + 1:
            return "of the wrong shape"
        if indptr[0] != 0 or indptr[-1] != len(indices) or bool(np.any(np.diff(indptr) < 0)):
            return "inconsistent offsets"
        if len(indices) and bool(indices.min() < 0 or indices.max() >= size):
            return "an id outside the vocabulary"
        return None

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Links)
            and np.array_equal(self.indptr, other.indptr)
            and np.array_equal(self.indices, other.indices)
        )


@dataclass(frozen=True, eq=False)
class Strings:
    """For each concept, a list of strings: ``values[indptr[i]:indptr[i + 1]]``."""

    indptr: np.ndarray  # (size + 1,) int64
    values: list[str]

    @classmethod
    def empty(cls, size: int) -> Strings:
        return cls(np.zeros(size + 1, np.int64), [])

    @classmethod
    def of(cls, lists: Sequence[Sequence[str]], size: int) -> Strings:
        if len(lists) != size:
            raise ValueError(f"strings must be given for every one of the {size} concepts")
        indptr = np.zeros(size + 1, dtype=np.int64)
        indptr[1:] = np.cumsum([len(values) for values in lists])
        return cls(indptr, [value for values in lists for value in values])

    def __getitem__(self, concept: int) -> tuple[str, ...]:
        return tuple(self.values[self.indptr[concept] : self.indptr[concept + 1]])

    def lists(self) -> list[list[str]]:
        return [self.values[a:b] for a, b in pairwise(self.indptr)]

    def problem(self, size: int) -> str | None:
        indptr = self.indptr
        if not np.issubdtype(indptr.dtype, np.integer) or indptr.ndim != 1:
            return "offsets of the wrong type"
        if len(indptr) != size + 1 or indptr[0] != 0 or indptr[-1] != len(self.values):
            return "offsets that do not match"
        if bool(np.any(np.diff(indptr) < 0)):
            return "decreasing offsets"
        return None

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Strings)
            and np.array_equal(self.indptr, other.indptr)
            and self.values == other.values
        )
