"""Progress bars and log messages on one terminal: the unit bars count in, how many documents a
corpus holds (for a bar's total), and a logging handler that keeps messages off the bars."""

from __future__ import annotations

import gzip
import logging
import os
import sys
import zlib
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

# What every bar that counts documents counts in, as tqdm shows units: "120doc [00:02,
# 57.30doc/s]" (the store's bar uses it too).
DOC_UNIT = "doc"

_BLOCK = 1 << 20


class TqdmLoggingHandler(logging.Handler):
    """Writes each record to the standard error of the moment with ``tqdm.write``, which
    clears the progress bars on the terminal first and draws them again after, so that a
    message gets a line of its own instead of landing at the end of a bar's line."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


def count_documents(paths: Sequence[Path]) -> int | None:
    """About how many documents the corpus ``paths`` hold, counted without reading them as a
    corpus: a directory's ``*.txt`` names, a file's lines (less a CSV's header). Blank and
    skipped lines make it an upper bound. None when a path cannot be counted (its reader says
    why later)."""
    total = 0
    for path in paths:
        try:
            if path.is_dir():
                total += sum(1 for e in os.scandir(path) if e.name.endswith(".txt") and e.is_file())
                continue
            lines = _count_lines(path)
        except (OSError, EOFError, zlib.error):
            return None
        if path.name.lower().endswith((".csv", ".csv.gz")):
            lines -= 1
        total += max(lines, 0)
    return total


def _count_lines(path: Path) -> int:
    """Newlines in the file (gzip-compressed ones decompressed), and a last unterminated line."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    lines, last = 0, b"\n"
    with opener(path, "rb") as stream:
        for block in iter(lambda: stream.read(_BLOCK), b""):
            lines += block.count(b"\n")
            last = block[-1:]
    return lines + (last != b"\n")
