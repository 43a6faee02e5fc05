"""The file source refuses to train on a file that holds no usable suggestion (no real data
needed, unlike test_source_file.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kuoro.analyzers import make_analyzer
from kuoro.errors import SourceError
from kuoro.sources.file import FileSource
from kuoro.vocab.vocabulary import Vocabulary

VOCAB = Vocabulary("v", ["http://ex/a", "http://ex/b"], {"en": ["A", "B"]})


@pytest.mark.parametrize(
    ("content", "counts"),
    [
        ("", "in 0 lines (0 malformed, 0 with a URI not in vocabulary 'v', 0 with a score"),
        ("\n\n", "in 0 lines"),
        ("document_id\turi\tscore\n", "in 0 lines"),
        ("garbage\nd1\thttp://ex/a\tx\n", "in 2 lines (2 malformed, 0 with a URI"),
        ("d1\thttp://ex/z\t0.5\n", "in 1 lines (0 malformed, 1 with a URI not in vocabulary 'v'"),
        (
            "d1\thttp://ex/a\t0\nd2\t<http://ex/b>\t-1\n",
            "in 2 lines (0 malformed, 0 with a URI not in vocabulary 'v', 2 with a score of 0 or",
        ),
    ],
)
def test_a_file_without_a_usable_line_fails_training(
    tmp_path: Path, content: str, counts: str
) -> None:
    path = tmp_path / "suggestions.tsv"
    path.write_text(content, encoding="utf-8")
    source = FileSource(VOCAB, make_analyzer("simple"), path=str(path))
    with pytest.raises(SourceError) as caught:
        source.fit([])
    message = str(caught.value)
    assert message.startswith(f"file source: {path}: no usable suggestion {counts}")
    assert message.endswith("each line must be document_id<TAB>URI<TAB>score")


def test_one_usable_line_is_enough(tmp_path: Path) -> None:
    path = tmp_path / "suggestions.tsv"
    path.write_text("garbage\nd1\thttp://ex/b\t0.5\n", encoding="utf-8")
    source = FileSource(VOCAB, make_analyzer("simple"), path=str(path)).fit([])
    assert source.suggest(["t"], ["d1"]).indices.tolist() == [1]
