"""Reading a model's named arrays with checks: each one's type, shape and values, the named
sizes (members, sources, concepts, …) agreeing between arrays; every problem a ModelError."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from kuoro.errors import ModelError


def bad_model(detail: str) -> ModelError:
    return ModelError(f"damaged or incompatible fusion model: {detail}")


class ArrayReader:
    """Takes arrays out of a mapping, checking dtype and shape; named sizes bind on first use."""

    def __init__(self, arrays: Mapping[str, np.ndarray]) -> None:
        self._arrays = arrays
        self._unread = set(arrays)
        self.sizes: dict[str, int] = {}
        self._bound_by: dict[str, str] = {}  # size name → the array that set it

    def _take(self, key: str, kinds: str, dims: tuple[str | int, ...]) -> np.ndarray:
        if key not in self._arrays:
            raise bad_model(f"the array {key!r} is missing")
        self._unread.discard(key)
        array = np.asarray(self._arrays[key])
        if array.dtype.kind not in kinds:
            raise bad_model(f"the array {key!r} holds {array.dtype}")
        if array.ndim == len(dims):
            for d, n in zip(dims, array.shape, strict=True):
                if isinstance(d, str) and d not in self.sizes:
                    self.bind(d, n, key)
        expected = [self.sizes.get(d) if isinstance(d, str) else d for d in dims]
        if list(array.shape) != expected:
            spelled = ", ".join(
                f"{d}={self.sizes.get(d, '?')}" if isinstance(d, str) else str(d) for d in dims
            )
            bound = {self._bound_by[d] for d in dims if isinstance(d, str) and d in self.sizes}
            others = sorted(bound - {key})
            agree = f" to agree with {', '.join(map(repr, others))}" if others else ""
            raise bad_model(
                f"the array {key!r} has shape {array.shape}, expected ({spelled}){agree}"
            )
        return array

    def bind(self, name: str, size: int, key: str) -> None:
        """Fix a named size, as given by the array ``key``."""
        self.sizes[name], self._bound_by[name] = size, key

    def floats(self, key: str, *dims: str | int) -> np.ndarray:
        array = self._take(key, "f", dims).astype(np.float32, copy=False)
        if not np.isfinite(array).all():
            raise bad_model(f"the array {key!r} holds NaN or infinite values")
        return array

    def indices(self, key: str, *dims: str | int, below: int) -> np.ndarray:
        array = self._take(key, "iu", dims).astype(np.int64, copy=False)
        if array.size and not (array.min() >= 0 and array.max() < below):
            raise bad_model(f"the array {key!r} holds values outside [0, {below})")
        return array

    def integer(self, key: str, low: int = 0, high: int | None = None) -> int:
        value = int(self._take(key, "iu", ()))
        if value < low or (high is not None and value > high):
            raise bad_model(f"{key} = {value}, outside [{low}, {'∞' if high is None else high}]")
        return value

    def number(self, key: str) -> float:
        return float(self.floats(key))

    def has(self, key: str) -> bool:
        return key in self._arrays

    def text(self, key: str) -> str:
        return str(self._take(key, "U", ()))

    def texts(self, key: str, *dims: str | int) -> list[str]:
        return [str(t) for t in self._take(key, "U", dims)]

    def finish(self) -> None:
        """Refuse arrays no reader took: they are parts of a model this code cannot run."""
        if self._unread:
            raise bad_model(f"unknown arrays {', '.join(sorted(self._unread))}")


# --- the families: arrays and math, N members at once -----------------------------------------
