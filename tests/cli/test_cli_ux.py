"""The command line as Annif users use it: the options they type, what the commands report,
and the words they use, on a small trained workspace of the archaeology data."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kuoro.cli import main
from kuoro.cli.context import Context
from kuoro.project.model_files import read_model

from support.data import requires_shared_data
from support.workspace import ARCH, kuoro, make_held_out_workspace

pytestmark = requires_shared_data

PROJECTS = """
[arch-tfidf]
language = "fi"
vocab = "arch"
backend = "tfidf"
analyzer = "snowball(finnish)"

[arch-small]
language = "fi"
vocab = "arch"
backend = "tfidf"

[arch-linear]
language = "fi"
vocab = "arch"
backend = "linear"
sources = ["arch-tfidf"]
max_epochs = 2

[arch-kuoro]
language = "fi"
vocab = "arch"
backend = "kuoro"
sources = ["arch-tfidf"]

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
    return make_held_out_workspace(work, PROJECTS, held_out="test.tsv", quiet=True)


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


def metric(out: str, name: str) -> str:
    found = re.search(rf"^{re.escape(name)}:\s+(\S+)$", out, re.M)
    assert found, out
    return found.group(1)


def test_docs_limit_on_eval_and_optimize(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    test = str(workspace / "test.tsv")
    code, out, _ = run(workspace, capsys, "eval", "arch-tfidf", test, "--docs-limit", "100")
    assert code == 0 and metric(out, "Documents evaluated") == "100"
    code, out, _ = run(workspace, capsys, "optimize", "arch-tfidf", test, "-d", "50")
    assert code == 0 and metric(out, "Documents evaluated") == "50"
    code, _, err = run(workspace, capsys, "eval", "arch-tfidf", test, "-d", "0")
    assert code == 2 and "--docs-limit" in err


@pytest.mark.integration
def test_docs_limit_on_train_learn_and_hyperopt(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train = str(workspace / "train.tsv")
    code, out, _ = run(workspace, capsys, "train", "arch-small", train, "-d", "300")
    assert code == 0 and "trained 'arch-small' on 300 documents" in out
    _, manifest = read_model(workspace / "data" / "projects" / "arch-small", "arch-small")
    assert manifest["training"]["documents"] == 300
    assert manifest["training"]["corpus"][0].endswith("first-300-of-train.tsv.jsonl")
    # A fusion project: the sources run over the first documents only.
    test = str(workspace / "test.tsv")
    code, out, _ = run(workspace, capsys, "train", "arch-linear", test, "-d", "200")
    assert code == 0 and "trained 'arch-linear' on 200 documents" in out
    code, out, err = run(workspace, capsys, "learn", "arch-linear", train, "-d", "40")
    assert code == 0, err
    assert code == 0 and "'arch-linear' learnt from 40 documents" in out
    code, out, err = run(
        workspace, capsys, "-v", "hyperopt", "arch-linear", test, "-d", "200", "--trials", "1"
    )
    assert code == 0, err
    assert "the first 200 documents of" in err
    assert out.startswith("1 trial (1 complete"), out


def test_backend_param_sets_a_parameter_for_one_run(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train = str(workspace / "train.tsv")
    code, _, err = run(
        workspace, capsys, "train", "arch-small", train, "-b", "tfidf.min_df=1",
        "--backend-param", "tfidf.ngram_max=2",
    )  # fmt: skip
    assert code == 0, err
    _, manifest = read_model(workspace / "data" / "projects" / "arch-small", "arch-small")
    assert (manifest["params"]["min_df"], manifest["params"]["ngram_max"]) == (1, 2)
    # top_k shapes what a trained source returns: it takes effect when suggesting.
    text = workspace / "doc.txt"
    text.write_text("Rautakautinen kalmisto ja linnavuori", encoding="utf-8")
    code, out, _ = run(workspace, capsys, "suggest", "arch-tfidf", str(text), "-b", "top_k=2")
    assert code == 0 and len(out.splitlines()) == 2


@pytest.mark.parametrize(
    ("project", "setting", "message"),
    [
        ("arch-small", "tfidf.min_df=0", "parameter 'min_df' must be an integer between 1 and"),
        (
            "arch-small",
            "omikuji.top_k=5",
            "project 'arch-small' has backend 'tfidf', not 'omikuji'",
        ),
        ("arch-small", "tfidf.sublinear_tf=maybe", 'must be true or false, got "maybe"'),
        ("arch-small", "min_df", "write BACKEND.PARAM=VALUE, e.g. tfidf.top_k=50"),
        ("arch-small", "tfidf.limit=5", "'limit' is a project setting, not a backend parameter"),
        # Annif's backend name stands for Kuoro's; its parameter's Kuoro name is offered.
        ("arch-kuoro", "nn_ensemble.epochs=5", "unknown parameter 'epochs' for backend 'kuoro'"),
        ("arch-kuoro", "nn_ensemble.epochs=5", "Did you mean 'max_epochs'?"),
        ("arch-kuoro", "kuoro.loss=hinge", 'must be one of "bce", "listwise", "mix", got "hinge"'),
        ("arch-kuoro", "kuoro.sources=x", "sources are set in projects.toml only"),
    ],
)
def test_backend_param_is_checked_like_projects_toml(
    workspace: Path, capsys: pytest.CaptureFixture[str], project: str, setting: str, message: str
) -> None:
    code, _, err = run(workspace, capsys, "train", project, str(workspace / "test.tsv"),
                       "-b", setting)  # fmt: skip
    assert code == 2, err
    assert err.startswith("kuoro: usage error: Invalid value for '--backend-param'")
    assert message in err and len(err.splitlines()) == 1


def test_label_language(
    workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = workspace / "doc.txt"
    text.write_text("Rautakautinen kalmisto ja linnavuori", encoding="utf-8")
    code, finnish, _ = run(workspace, capsys, "suggest", "arch-tfidf", str(text))
    assert code == 0
    code, swedish, _ = run(workspace, capsys, "suggest", "arch-tfidf", str(text), "-L", "sv")
    assert code == 0
    assert [line.split("\t")[0] for line in swedish.splitlines()] == [
        line.split("\t")[0] for line in finnish.splitlines()
    ]
    assert swedish != finnish, "the same subjects, labelled in Swedish"
    results = tmp_path / "subjects.tsv"
    test = str(workspace / "test.tsv")
    code, _, _ = run(workspace, capsys, "eval", "arch-tfidf", test, "--language", "sv",
                     "-r", str(results))  # fmt: skip
    assert code == 0
    labels = {row.split("\t")[1] for row in results.read_text(encoding="utf-8").splitlines()}
    swedish_labels = {line.split("\t")[1] for line in swedish.splitlines()}
    assert swedish_labels & labels
    code, _, err = run(workspace, capsys, "eval", "arch-tfidf", test, "-L", "de")
    assert code == 2 and "vocabulary 'arch' has no labels in 'de' (it has: " in err


def test_index_several_directories(
    workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    for folder, names in ((first, ["x", "y"]), (second, ["z"])):
        folder.mkdir()
        for name in names:
            (folder / f"{name}.txt").write_text("Rautakautinen kalmisto", encoding="utf-8")
    code, out, _ = run(workspace, capsys, "index", "arch-tfidf", str(first), str(second))
    assert code == 0 and out.strip() == f"indexed 3 documents in {first}, {second}"
    assert sorted(p.name for p in first.glob("*.annif")) == ["x.annif", "y.annif"]
    assert (second / "z.annif").read_text(encoding="utf-8").startswith("<http")
    (second / "z.annif").unlink()
    code, out, err = run(workspace, capsys, "index", "arch-tfidf", str(first), str(second))
    assert out.strip() == f"indexed 1 document in {first}, {second}"
    assert "2 existing .annif files kept unchanged" in err


def test_eval_progress_bar_has_a_total_and_counts_in_doc(
    workspace: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Context, "show_progress", property(lambda self: True))
    code, _, err = run(workspace, capsys, "eval", "arch-tfidf", str(workspace / "test.tsv"))
    assert code == 0
    assert re.search(r"evaluating: 100%.* 300/300 ", err), err
    assert "doc/s" in err and "docs" not in err
    code, _, err = run(workspace, capsys, "eval", "arch-tfidf", str(workspace / "test.tsv"),
                       "-d", "30")  # fmt: skip
    assert re.search(r"evaluating: 100%.* 30/30 ", err), err
