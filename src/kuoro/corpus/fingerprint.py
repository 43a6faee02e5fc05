"""A corpus's fingerprint: what identifies it by content, wherever it lies."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

from kuoro.corpus.documents import check_corpus_paths


def corpus_fingerprint(paths: Sequence[str | PathLike[str]], *, language: str) -> str:
    """Identifies a corpus by its content (each file's bytes; a directory's files by relative
    name and bytes) and the options it is read with."""
    digest = hashlib.sha256(json.dumps({"language": language}).encode("utf-8"))
    for path in check_corpus_paths(paths):
        if path.is_dir():
            digest.update(b"dir\0")
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                digest.update(file.relative_to(path).as_posix().encode("utf-8") + b"\0")
                _hash_file(digest, file)
        else:
            digest.update(b"file\0")
            _hash_file(digest, path)
    return digest.hexdigest()[:16]


def _hash_file(digest: Any, path: Path) -> None:
    digest.update(str(path.stat().st_size).encode("ascii") + b"\0")
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
