"""Named arrays in an ``.npz`` file: written atomically, read back without pickle."""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from kuoro.errors import ModelError
from kuoro.util.atomic import atomic_write

T = TypeVar("T")

# What reading a damaged or foreign file raises, from numpy, zipfile or the parser given.
_DAMAGED = (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile)


def save_arrays(path: Path, arrays: Mapping[str, Any]) -> None:
    """Write ``arrays`` as an uncompressed ``.npz``; the file appears whole or not at all."""
    with atomic_write(path) as out:
        np.savez(out, **arrays)


def load_arrays(path: Path, what: str, parse: Callable[[dict[str, np.ndarray]], T]) -> T:
    """``parse`` of the arrays in ``path`` (read with ``allow_pickle=False``); a missing,
    damaged or foreign file (``parse`` raising ValueError, KeyError or TypeError) is a
    ModelError naming the file and ``what`` it should hold."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        return parse(arrays)
    except FileNotFoundError as exc:
        raise ModelError(f"{path}: no {what} file there") from exc
    except _DAMAGED as exc:
        raise ModelError(f"{path}: damaged {what} file ({exc})") from exc
