"""Vocabulary files as older Kuoro versions wrote them, for the tests of reading them back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def write_like_old_kuoro(path: Path, uris: list[str], notations: list[str] | None = None) -> None:
    """A stored vocabulary as Kuoro wrote it before control characters were refused: strings
    newline-joined without a check, so a URI or notation with a newline damages the file."""
    size = len(uris)
    meta = {"format": "kuoro-vocabulary", "version": 1, "name": path.stem}
    meta |= {"languages": ["en"], "size": size, "source": None}

    def blob(strings: list[str]) -> np.ndarray:
        return np.frombuffer("\n".join(strings).encode("utf-8"), dtype=np.uint8)

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        np.savez_compressed(
            out,
            meta=blob([json.dumps(meta)]),
            uris=blob(uris),
            notations=blob(notations or [""] * size),
            deprecated=np.zeros(size, bool),
            broader_indptr=np.zeros(size + 1, np.int64),
            broader_indices=np.zeros(0, np.int32),
            labels_0=blob([u.rsplit("/", 1)[-1].upper() for u in uris]),
        )
