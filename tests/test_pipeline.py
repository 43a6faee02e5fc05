"""train → suggest → index → eval through the real command line, and model safety checks."""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

import pytest

from kuoro.cli import main
from kuoro.config.projects import ProjectConfig, load_projects
from kuoro.errors import ModelError
from kuoro.project.datadir import DataDir
from kuoro.project.project import Project
from kuoro.vocab.vocabulary import Vocabulary

from support.data import requires_shared_data
from support.workspace import ARCH, kuoro

pytestmark = [requires_shared_data, pytest.mark.integration]

PROJECTS = """
[arch-tfidf]
language = "fi"
vocab = "arch"
backend = "tfidf"
analyzer = "snowball(finnish)"
min_df = 1
"""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory with the archaeology vocabulary and a trained tfidf project."""
    work = tmp_path_factory.mktemp("pipeline")
    (work / "projects.toml").write_text(PROJECTS, encoding="utf-8")
    assert (
        main(kuoro(work, "load-vocab", "arch", str(ARCH / "yso-archaeology.ttl"), "-l", "fi")) == 0
    )
    assert main(kuoro(work, "train", "arch-tfidf", str(ARCH / "documents.tsv"))) == 0
    return work


def test_suggest_from_stdin(
    workspace: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    capsys.readouterr()
    monkeypatch.setattr("sys.stdin", io.StringIO("Kivikauden asuinpaikan kaivaukset ja löydöt"))
    assert main(kuoro(workspace, "suggest", "arch-tfidf", "--limit", "3")) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    uri, label, score = lines[0].split("\t")
    assert uri.startswith("<http://www.yso.fi/onto/yso/") and uri.endswith(">")
    assert label and 0 < float(score) <= 1 and len(score.split(".")[1]) == 4
    scores = [float(line.split("\t")[-1]) for line in lines]
    assert scores == sorted(scores, reverse=True)


def test_index_writes_beside_each_text_and_never_overwrites_silently(
    workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = shutil.copytree(ARCH / "fulltext", tmp_path / "docs")
    assert main(kuoro(workspace, "index", "arch-tfidf", str(docs), "--limit", "5")) == 0
    written = sorted(docs.glob("*.annif"))
    assert len(written) == 28
    first = written[0].read_text(encoding="utf-8").splitlines()
    assert len(first) == 5 and all(line.count("\t") == 2 for line in first)
    written[0].write_text("kept\n", encoding="utf-8")
    capsys.readouterr()
    assert main(kuoro(workspace, "index", "arch-tfidf", str(docs))) == 0
    assert written[0].read_text(encoding="utf-8") == "kept\n"
    assert "28 existing .annif files kept unchanged; use --force" in capsys.readouterr().err
    assert main(kuoro(workspace, "index", "arch-tfidf", str(docs), "--force")) == 0
    assert written[0].read_text(encoding="utf-8") != "kept\n"


def eval_output(
    workspace: Path, capsys: pytest.CaptureFixture[str], *args: str
) -> dict[str, float]:
    capsys.readouterr()
    assert main(kuoro(workspace, "eval", "arch-tfidf", str(ARCH / "fulltext"), *args)) == 0
    out = capsys.readouterr().out
    return {line.split(":")[0]: float(line.split(":")[1]) for line in out.splitlines()}


def test_eval_metrics_and_parallel_jobs_agree(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one = eval_output(workspace, capsys)
    assert one["Documents evaluated"] == 28
    for name in ["Precision@1", "Precision@3", "Precision@5", "Recall@5", "F1@5", "NDCG",
                 "NDCG@5", "NDCG@10", "F1 score (doc avg)"]:  # fmt: skip
        assert 0 <= one[name] <= 1, name
    # Trained on titles, tested on full texts of the same domain: far better than chance.
    assert one["NDCG@10"] > 0.3
    two = eval_output(workspace, capsys, "-j", "2")
    assert two == one
    limited = eval_output(workspace, capsys, "--limit", "1")
    assert limited["Precision (doc avg)"] == limited["Precision@1"]


def test_model_checks(workspace: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = load_projects(workspace / "projects.toml")["arch-tfidf"]
    data = DataDir(tmp_path / "data")
    shutil.copytree(workspace / "data", data.root)
    project = Project(config, data)
    before = project.suggest(["kivikausi ja pronssikausi"])

    # Concepts appended by a vocabulary update keep the model valid; rows widen.
    vocab = data.load_vocabulary("arch")
    newer = Vocabulary(
        "arch", [*vocab.uris, "http://example.org/new"], {"fi": [None] * (len(vocab) + 1)}
    )
    data.store_vocabulary(newer)
    after = Project(config, data).suggest(["kivikausi ja pronssikausi"])
    assert after.shape[1] == before.shape[1] + 1
    assert (after[:, : before.shape[1]] != before).nnz == 0

    # A vocabulary that reassigns ids makes the model refuse to load, saying why.
    reordered = Vocabulary("arch", list(reversed(vocab.uris)), {"fi": [None] * len(vocab)})
    reordered.save(data.vocab_path("arch"))
    with pytest.raises(ModelError, match=r"trained on vocabulary 'arch' .* now assigns different"):
        _ = Project(config, data).model
    shutil.copy(workspace / "data" / "vocabs" / "arch.npz", data.vocab_path("arch"))

    # A configuration edited after training: the trained model is used, with a warning.
    edited = dataclasses.replace(config, params={**config.params, "min_df": 3})
    with caplog.at_level(logging.WARNING):
        _ = Project(edited, data).model
    assert "changed since it was trained (min_df 1 → 3); retrain to apply" in caplog.text

    # A truncated model file is caught before any library reads it.
    version = (project.model_dir / "CURRENT").read_text()
    biggest = max((project.model_dir / version).glob("*"), key=lambda p: p.stat().st_size)
    biggest.write_bytes(biggest.read_bytes()[:10])
    with pytest.raises(ModelError, match=r"model file .* is damaged .*retrain"):
        _ = Project(config, data).model


def test_untrained_project_says_how_to_train(tmp_path: Path) -> None:
    config = load_projects_text(tmp_path, PROJECTS)["arch-tfidf"]
    with pytest.raises(ModelError, match=r"not trained yet; train it with: kuoro train arch-tfidf"):
        _ = Project(config, DataDir(tmp_path)).model


def load_projects_text(tmp_path: Path, text: str) -> dict[str, ProjectConfig]:
    path = tmp_path / "projects.toml"
    path.write_text(text, encoding="utf-8")
    return load_projects(path)
