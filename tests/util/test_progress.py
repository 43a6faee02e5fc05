"""Progress bars and messages on one terminal: units, totals, and warnings off the bars' lines."""

from __future__ import annotations

import gzip
import logging
import re
import sys
from pathlib import Path

import pytest
from tqdm import tqdm

from kuoro.cli.app import _configure_logging
from kuoro.util.progress import count_documents
from kuoro.util.wording import plural


def test_a_warning_printed_during_a_progress_bar_gets_a_line_of_its_own(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _configure_logging(0)
    with tqdm(total=10, desc="reading", file=sys.stderr, disable=False) as bar:
        bar.update(3)
        logging.getLogger("kuoro").warning("a line was skipped")
        bar.update(7)
    err = capsys.readouterr().err
    # The bar is cleared first (a carriage return), so the message starts its own line.
    assert re.search(r"(^|[\r\n])kuoro: WARNING: a line was skipped\n", err), repr(err)
    assert "10/10" in err, "the bar is drawn again after the message"


def test_plural() -> None:
    assert plural(1, "document") == "1 document"
    assert [plural(n, "document") for n in (0, 2)] == ["0 documents", "2 documents"]
    assert plural(2, "match", "matches") == "2 matches"


def test_count_documents(tmp_path: Path) -> None:
    tsv = tmp_path / "a.tsv"
    tsv.write_text("one\t<u>\ntwo\t<u>\nthree\t<u>", encoding="utf-8")  # no final newline
    gz = tmp_path / "b.tsv.gz"
    gz.write_bytes(gzip.compress(b"one\t<u>\ntwo\t<u>\n"))
    csv = tmp_path / "c.csv"
    csv.write_text("text,subject_uris\nx,<u>\n", encoding="utf-8")
    folder = tmp_path / "docs"
    folder.mkdir()
    for name in ("a.txt", "a.tsv", "b.txt", "c.key"):
        (folder / name).write_text("x", encoding="utf-8")
    assert count_documents([tsv]) == 3
    assert count_documents([tsv, gz, csv, folder]) == 3 + 2 + 1 + 2
    (tmp_path / "bad.tsv.gz").write_bytes(b"not gzip")
    assert count_documents([tmp_path / "bad.tsv.gz"]) is None
