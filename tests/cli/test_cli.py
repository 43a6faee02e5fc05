"""The command line: every command end to end, and errors as one line without a traceback."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kuoro import __version__
from kuoro.cli import main

from support.data import SHARED_DATA, requires_shared_data

YSO = "http://www.yso.fi/onto/yso/"

PROJECTS = """
[arch-tfidf]
name = "Archaeology TF-IDF"
language = "fi"
vocab = "arch"
backend = "tfidf"
analyzer = "snowball(finnish)"
min_df = 3

[arch-fusion]
language = "fi"
vocab = "arch"
backend = "kuoro"
sources = ["arch-tfidf:2"]
hidden_size = 32
"""


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def vocab_file(tmp_path: Path) -> Path:
    path = tmp_path / "arch.tsv"
    path.write_text(f"<{YSO}p1>\tmuinaisjäännökset\n<{YSO}p2>\tarkeologia\n", encoding="utf-8")
    return path


@pytest.fixture
def projects_file(tmp_path: Path) -> Path:
    path = tmp_path / "projects.toml"
    path.write_text(PROJECTS, encoding="utf-8")
    return path


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--version")
    assert code == 0 and __version__ in out
    for command in ["load-vocab", "list-vocabs", "list-projects", "show-project", "corpus-stats"]:
        code, out, _ = run(capsys, command, "--help")
        assert code == 0 and "Usage: kuoro " + command in out
    code, out, _ = run(capsys, "config", "import", "--help")
    assert code == 0 and "Annif projects.cfg" in out


def test_load_and_list_vocabs(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, vocab_file: Path
) -> None:
    datadir = str(tmp_path / "data")
    code, out, _ = run(
        capsys, "--datadir", datadir, "load-vocab", "arch", str(vocab_file), "-l", "fi"
    )
    assert code == 0 and "vocabulary 'arch' (new): 2 concepts" in out
    vocab_file.write_text(f"<{YSO}p3>\tuusi\n<{YSO}p2>\tarkeologia\n", encoding="utf-8")
    code, out, _ = run(
        capsys, "--datadir", datadir, "load-vocab", "arch", str(vocab_file), "-l", "fi"
    )
    assert code == 0 and "updated: 1 kept, 1 added, 1 deprecated" in out
    code, out, _ = run(capsys, "--datadir", datadir, "list-vocabs")
    assert code == 0
    assert out.splitlines()[1].split()[:4] == ["arch", "3", "2", "fi"]


def test_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, vocab_file: Path
) -> None:
    code, out, err = run(capsys, "--datadir", str(tmp_path), "load-vocab", "arch", str(vocab_file))
    assert code == 1 and out == ""
    assert err.strip().count("\n") == 0
    assert "kuoro: error:" in err and "names no language" in err and "Traceback" not in err
    code, _, err = run(capsys, "-v", "--datadir", str(tmp_path), "load-vocab", "x", str(vocab_file))
    assert code == 1 and "Traceback" in err, "-v shows the traceback"
    code, _, err = run(capsys, "--datadir", str(tmp_path), "load-vocab", "x", "missing.tsv", "-lfi")
    assert code == 1 and "missing.tsv: no such file" in err


def test_bad_vocabulary_is_refused_and_damaged_one_replaced_with_force(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, vocab_file: Path
) -> None:
    from support.vocab_files import write_like_old_kuoro

    datadir = str(tmp_path / "data")
    load = ["--datadir", datadir, "load-vocab", "arch"]
    bad = tmp_path / "bad.ttl"
    bad.write_text(
        "@prefix skos: <http://www.w3.org/2004/02/skos/core#> .\n"
        '<http://ex/a\\u000Ab> a skos:Concept ; skos:prefLabel "A"@fi .\n',
        encoding="utf-8",
    )
    code, _, err = run(capsys, *load, str(bad))
    assert code == 1 and "bad.ttl:2: the URI 'http://ex/a\\nb' holds a control character" in err
    assert run(capsys, "--datadir", datadir, "list-vocabs")[0] == 0, "nothing was stored"
    assert run(capsys, *load, str(vocab_file), "-l", "fi")[0] == 0

    # A file written by an older Kuoro that let a newline through.
    write_like_old_kuoro(tmp_path / "data" / "vocabs" / "arch.npz", [f"{YSO}p1", "http://x\ny"])
    code, out, err = run(capsys, "--datadir", datadir, "list-vocabs")
    assert code == 1 and out.splitlines()[1].split() == [
        "arch",
        "-",
        "-",
        "-",
        "-",
        "-",
        "-",
        "damaged",
    ]
    assert "kuoro load-vocab NAME FILE --force" in err
    code, _, err = run(capsys, *load, str(vocab_file), "-l", "fi")
    assert code == 1 and "damaged vocabulary file" in err and "--force" in err
    code, out, err = run(capsys, *load, str(vocab_file), "-l", "fi", "--force")
    assert code == 0 and "updated: 1 kept, 1 added, 1 deprecated" in out
    assert "the ids of its 2 concepts are kept" in err
    code, out, _ = run(capsys, "--datadir", datadir, "list-vocabs")
    assert code == 0 and out.splitlines()[1].split()[:4] == ["arch", "3", "2", "en,fi"]


def test_usage_error_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "load-vocab")
    assert code == 2 and "Missing argument 'NAME'" in err


def test_projects(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, vocab_file: Path, projects_file: Path
) -> None:
    datadir = str(tmp_path / "data")
    base = ["--datadir", datadir, "--projects", str(projects_file)]
    code, out, _ = run(capsys, *base, "list-projects")
    assert code == 0
    assert out.splitlines()[1].split() == [
        "arch-tfidf", "Archaeology", "TF-IDF", "arch", "fi", "no", "-", "tfidf", "source", "no"
    ]  # fmt: skip
    run(capsys, "--datadir", datadir, "load-vocab", "arch", str(vocab_file), "-l", "fi")
    code, out, _ = run(capsys, *base, "show-project", "arch-fusion")
    assert code == 0
    lines = {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in out.splitlines()}
    assert lines["vocab"] == "arch (loaded)"
    assert lines["hidden_size"] == "32"
    assert lines["sources"] == "arch-tfidf:1"
    assert lines["max_epochs"] == "50", "defaults are shown"
    code, _, err = run(capsys, *base, "show-project", "nope")
    assert code == 1 and "no project 'nope' (configured: arch-tfidf, arch-fusion)" in err


def show(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, str]:
    code, out, _ = run(capsys, *args)
    assert code == 0
    return {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in out.splitlines()}


def test_projects_show_whether_and_when_they_were_trained(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, projects_file: Path
) -> None:
    base = ["--datadir", str(tmp_path / "data"), "--projects", str(projects_file)]
    code, out, _ = run(capsys, *base, "list-projects")
    assert code == 0
    header, tfidf, fusion = out.splitlines()
    assert header.split()[:7] == [
        "project", "name", "vocab", "language", "trained", "modification", "time"
    ]  # fmt: skip
    assert "  no  " in tfidf and "  no  " in fusion
    details = show(capsys, *base, "show-project", "arch-tfidf")
    assert (details["trained"], details["modification time"]) == ("no", "-")
    # A trained project: its model was made current (the time the REST API gives too).
    model_dir = tmp_path / "data" / "projects" / "arch-tfidf"
    model_dir.mkdir(parents=True)
    (model_dir / "CURRENT").write_text("v1", encoding="utf-8")
    os.utime(model_dir / "CURRENT", (1_700_000_000, 1_700_000_000))
    code, out, _ = run(capsys, *base, "list-projects")
    assert code == 0 and out.splitlines()[1].split()[5:7] == ["yes", "2023-11-14T22:13:20Z"]
    details = show(capsys, *base, "show-project", "arch-tfidf")
    assert details["trained"] == "yes"
    assert details["modification time"] == "2023-11-14T22:13:20Z"
    assert details["analyzer"] == "snowball(finnish)"


def test_untrained_project_names_the_command_that_trains_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, vocab_file: Path, projects_file: Path
) -> None:
    base = ["--datadir", str(tmp_path / "data"), "--projects", str(projects_file)]
    run(capsys, *base, "load-vocab", "arch", str(vocab_file), "-l", "fi")
    text = tmp_path / "doc.txt"
    text.write_text("arkeologia", encoding="utf-8")
    code, _, err = run(capsys, *base, "suggest", "arch-tfidf", str(text))
    assert code == 1
    assert "not trained yet; train it with: kuoro train arch-tfidf CORPUS" in err


def test_fusion_projects_show_no_analyzer(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, projects_file: Path
) -> None:
    details = show(capsys, "--projects", str(projects_file), "show-project", "arch-fusion")
    assert "analyzer" not in details, "a fusion project reads no text"
    assert details["sources"] == "arch-tfidf:1"


def test_bad_project_parameter_is_an_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "projects.toml"
    path.write_text(PROJECTS.replace("hidden_size = 32", "nodes = 32"), encoding="utf-8")
    code, _, err = run(capsys, "--projects", str(path), "list-projects")
    assert code == 1
    assert "arch-fusion" in err and "'nodes'" in err and "hidden_size" in err


def test_config_import(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cfg = tmp_path / "projects.cfg"
    cfg.write_text(
        "[yso-tfidf-fi]\nname=YSO TFIDF\nlanguage=fi\nbackend=tfidf\nvocab=yso-fi\n"
        "analyzer=snowball(finnish)\nlimit=100\n\n"
        "[yso-nn-fi]\nname=NN\nlanguage=fi\nbackend=nn_ensemble\nvocab=yso-fi\n"
        "sources=yso-tfidf-fi:1\nnodes=100\nepochs=10\nlmdb_map_size=1000000\n",
        encoding="utf-8",
    )
    out_path = tmp_path / "projects.toml"
    code, _, err = run(capsys, "config", "import", str(cfg), "-o", str(out_path))
    assert code == 0 and "lmdb_map_size" in err
    assert re.search(r"\(\d+ notes\)$", err.strip()), "more than one note"
    code, out, _ = run(capsys, "--projects", str(out_path), "show-project", "yso-nn-fi")
    assert code == 0 and "hidden_size:" in out and "max_epochs:" in out
    code, _, err = run(capsys, "config", "import", str(cfg), "-o", str(out_path))
    assert code == 1 and "use --force" in err


@requires_shared_data
def test_corpus_stats_on_real_data(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    datadir = str(tmp_path / "data")
    vocab = SHARED_DATA / "archaeology" / "yso-archaeology.ttl"
    assert run(capsys, "--datadir", datadir, "load-vocab", "arch", str(vocab), "-l", "fi")[0] == 0
    fulltext = SHARED_DATA / "archaeology" / "fulltext"
    tsv = SHARED_DATA / "archaeology" / "documents.tsv"
    code, out, _ = run(
        capsys, "--datadir", datadir, "corpus-stats", "--vocab", "arch", str(tsv), str(fulltext)
    )
    assert code == 0
    rows = [line.split("|") for line in out.splitlines() if line.startswith("| ")]
    assert rows[1][1].strip() == "documents.tsv" and rows[1][2].strip() == "6,404"
    assert rows[2][1].strip() == "fulltext" and rows[2][2].strip() == "28"


@requires_shared_data
def test_corpus_stats_says_what_its_table_counts_once(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    datadir = str(tmp_path / "data")
    vocab = SHARED_DATA / "archaeology" / "yso-archaeology.ttl"
    assert run(capsys, "--datadir", datadir, "load-vocab", "arch", str(vocab), "-l", "fi")[0] == 0
    corpus = tmp_path / "corpus.tsv"
    corpus.write_text(
        f"linnat\t<{YSO}p14173>\nno tab here\nkaupungit\t<http://example.org/x>\n",
        encoding="utf-8",
    )
    code, out, err = run(
        capsys, "--datadir", datadir, "corpus-stats", "--vocab", "arch", str(corpus)
    )
    assert code == 0
    row = [cell.strip() for cell in out.splitlines()[2].split("|")]
    assert row[1:4] == ["corpus.tsv", "2", "1"] and row[7] == "1"
    # The skipped line's place is a warning; what the table counts is not repeated as one.
    assert f"{corpus}:2: line without a tab; skipped" in err
    assert "documents read" not in err and "not in the vocabulary" not in err
    notes = out.splitlines()[-1]
    assert notes.startswith("corpus.tsv: skipped 1 (1 line without a tab); ")
    assert "unknown subjects: <http://example.org/x>" in notes
    assert (out + err).count("http://example.org/x") == 1


def test_one_note_is_one_note(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cfg = tmp_path / "projects.cfg"
    cfg.write_text(
        "[p]\nlanguage=fi\nbackend=tfidf\nvocab=v\nlmdb_map_size=1000000\n", encoding="utf-8"
    )
    code, _, err = run(capsys, "config", "import", str(cfg), "-o", str(tmp_path / "p.toml"))
    assert code == 0 and err.strip().endswith("(1 note)"), err


@pytest.mark.integration
def test_console_script_is_installed(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("kuoro")
    result = subprocess.run(
        [str(exe), "--datadir", str(tmp_path), "show-project", "x", "--projects", "nope.toml"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2, "an option after the command's argument is a usage error"
    result = subprocess.run(
        [str(exe), "--projects", str(tmp_path / "nope.toml"), "list-projects"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("kuoro: error:") and "nope.toml" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["optimize", "p", "c", "--limits", "1-100000000"], "100000000 is not between 1 and 1000"),
        (["optimize", "p", "c", "--limits", "1-1000:1,5"], "has more than 1000 values"),
        (["optimize", "p", "c", "--thresholds", "0-1:1e-12"], "has more than 1000 values"),
        (["optimize", "p", "c", "--thresholds", "0-1:1e-320"], "has more than 1000 values"),
        (["optimize", "p", "c", "--thresholds", "nan"], "nan is not between 0 and 1"),
        (["optimize", "p", "c", "--thresholds", "0-nan"], "nan is not between 0 and 1"),
        (["optimize", "p", "c", "--thresholds", "0-1:nan"], "a range goes up, by a positive"),
        (
            ["optimize", "p", "c", "--limits", "1-1000", "--thresholds", "0-0.999:0.001"],
            "the grid of limits up to 1000 by 1000 thresholds has 1000000 points; at most 100000",
        ),
        (
            ["optimize", "p", "c", "--thresholds", "0-0.999:0.001", "--limits", "1-1000"],
            "has 1000000 points",
        ),
        (["suggest", "p", "--threshold", "nan"], "nan is not a number between 0 and 1"),
        (["eval", "p", "c", "--threshold", "nan"], "nan is not a number between 0 and 1"),
        (["index", "p", "d", "--limit", "100000000"], "100000000 is not in the range 1<=x<=10000"),
    ],
)
def test_numeric_options_are_bounded(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, _, err = run(capsys, *args)
    assert code == 2 and message in " ".join(err.split()), err
