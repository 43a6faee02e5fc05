"""The command line as Annif users use it: the options they type, what the commands report,
and the words they use, on a small trained workspace of the archaeology data."""

from __future__ import annotations

from pathlib import Path

import pytest

from kuoro.cli import main

from arch_workspace import ARCH, kuoro
from conftest import requires_shared_data

pytestmark = requires_shared_data

PROJECTS = """
[arch-tfidf]
language = "fi"
vocab = "arch"
backend = "tfidf"
analyzer = "snowball(finnish)"

[arch-lexical]
language = "fi"
vocab = "arch"
backend = "lexical"
analyzer = "snowball(finnish)"
max_train_documents = 50
"""
UNKNOWN = "<http://example.org/not-in-yso>"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """arch-tfidf trained on 2,000 archaeology titles; 300 others to evaluate on."""
    work = tmp_path_factory.mktemp("ux")
    (work / "projects.toml").write_text(PROJECTS, encoding="utf-8")
    lines = (ARCH / "documents.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    (work / "train.tsv").write_text("".join(lines[:2000]), encoding="utf-8")
    (work / "test.tsv").write_text("".join(lines[2000:2300]), encoding="utf-8")
    assert main(kuoro(work, "load-vocab", "arch", str(ARCH / "yso-archaeology.ttl"))) == 0
    assert main(kuoro(work, "-q", "train", "arch-tfidf", str(work / "train.tsv"))) == 0
    return work


def run(work: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(kuoro(work, *args))
    out, err = capsys.readouterr()
    return code, out, err


def test_lexical_reports_the_documents_it_trained_on(
    workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 80 documents, of which 10 among the first 50 have no subject the vocabulary knows.
    lines = (ARCH / "documents.tsv").read_text(encoding="utf-8").splitlines(keepends=True)[:80]
    lines[5:15] = [f"{line.split(chr(9))[0]}\t{UNKNOWN}\n" for line in lines[5:15]]
    corpus = tmp_path / "lexical.tsv"
    corpus.write_text("".join(lines), encoding="utf-8")
    code, out, _ = run(workspace, capsys, "train", "arch-lexical", str(corpus))
    assert code == 0
    assert "trained 'arch-lexical' on 50 documents" in out, "max_train_documents = 50"
