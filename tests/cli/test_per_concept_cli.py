"""Per-concept thresholds from the command line: learnt by ``optimize --per-concept``, applied by
``suggest``, ``index`` and ``eval`` where the project says ``thresholds = "per-concept"``,
invalidated by retraining, and an error where none were learnt."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from kuoro.cli import main
from kuoro.config.projects import load_projects
from kuoro.corpus.documents import Corpus
from kuoro.errors import ConfigError
from kuoro.evaluation.metrics import RankingMetrics
from kuoro.project.datadir import DataDir
from kuoro.project.thresholds import ConceptThresholds, current_model_version

from support.data import requires_shared_data
from support.workspace import kuoro, make_held_out_workspace, open_project

pytestmark = requires_shared_data

PROJECTS = """
[arch-tfidf]
language = "fi"
vocab = "arch"
backend = "tfidf"
analyzer = "snowball(finnish)"

[arch-pc]
language = "fi"
vocab = "arch"
backend = "tfidf"
analyzer = "snowball(finnish)"
thresholds = "per-concept"
"""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """arch-tfidf trained on 2,000 archaeology titles, 300 others to tune on; arch-pc the
    same model (copied) configured to apply per-concept thresholds."""
    work = make_held_out_workspace(tmp_path_factory.mktemp("per-concept"), PROJECTS,
                                   held_out="tune.tsv")  # fmt: skip
    projects = work / "data" / "projects"
    shutil.copytree(projects / "arch-tfidf", projects / "arch-pc")
    return work


def run(capsys: pytest.CaptureFixture[str], work: Path, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(kuoro(work, *args))
    out, err = capsys.readouterr()
    return code, out, err


def tune_documents(work: Path) -> list[tuple[str, tuple[int, ...]]]:
    vocabulary = DataDir(work / "data").load_vocabulary("arch")
    return [(d.text, d.subjects) for d in Corpus(work / "tune.tsv", vocabulary, language="fi")]


def strict_thresholds(work: Path) -> ConceptThresholds:
    """Thresholds for arch-pc's model that cut the suggestions it makes most often."""
    source = open_project(work, "arch-tfidf")
    rows = source.suggest([text for text, _ in tune_documents(work)[:100]])
    frequent = np.argsort(-np.bincount(rows.indices, minlength=rows.shape[1]))[:5]
    return ConceptThresholds(
        model_version=current_model_version(DataDir(work / "data"), "arch-pc"),
        limit=5,
        global_threshold=0.05,
        concepts=np.sort(frequent).astype(np.int64),
        thresholds=np.full(5, 0.6),
        support=np.full(5, 10, np.int64),
        min_support=5,
        shrinkage="blend",
        documents=100,
    )


def test_the_key_is_validated(tmp_path: Path) -> None:
    assert load_projects(_projects(tmp_path, ""))["p"].thresholds == "global"
    assert load_projects(_projects(tmp_path, 'thresholds = "per-concept"'))["p"].thresholds == (
        "per-concept"
    )
    with pytest.raises(ConfigError) as caught:
        load_projects(_projects(tmp_path, 'thresholds = "perconcept"'))
    message = str(caught.value)
    assert "project 'p'" in message and "'thresholds'" in message
    assert '"global", "per-concept"' in message


def _projects(folder: Path, line: str) -> Path:
    path = folder / "projects.toml"
    path.write_text(f'[p]\nlanguage = "fi"\nvocab = "v"\nbackend = "tfidf"\n{line}\n')
    return path


def test_asking_for_thresholds_never_learnt_is_an_error(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    DataDir(workspace / "data").thresholds_path("arch-pc").unlink(missing_ok=True)
    text = workspace / "text.txt"
    text.write_text("Arkeologiset kaivaukset Pohjanmaalla", encoding="utf-8")
    code, _, err = run(capsys, workspace, "suggest", "arch-pc", str(text))
    assert code != 0
    assert "no per-concept thresholds were learnt" in err
    assert "kuoro optimize arch-pc CORPUS --per-concept" in " ".join(err.split())
    assert run(capsys, workspace, "suggest", "arch-tfidf", str(text))[0] == 0


def test_optimize_learns_and_saves_them_for_the_current_model(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tune = str(workspace / "tune.tsv")
    code, out, _ = run(capsys, workspace, "optimize", "arch-pc", tune, "--per-concept",
                       "--min-support", "3")  # fmt: skip
    assert code == 0, out
    best = next(line for line in out.splitlines() if line.startswith("Best F1 with:")).split()
    limit, threshold = int(best[4]), float(best[6])
    saved = ConceptThresholds.load(DataDir(workspace / "data").thresholds_path("arch-pc"))
    assert saved.model_version == current_model_version(DataDir(workspace / "data"), "arch-pc")
    assert (saved.limit, saved.global_threshold) == (limit, threshold)
    assert (saved.min_support, saved.documents) == (3, 300)
    assert f"Per-concept thresholds at limit {limit}:" in out
    assert f"Saved to {DataDir(workspace / 'data').thresholds_path('arch-pc')}" in out
    # The F1 printed for them is theirs on the corpus.
    project = open_project(workspace, "arch-pc")
    documents = tune_documents(workspace)
    metrics = RankingMetrics(limit=limit)
    metrics.update(
        saved.apply(project.suggest([t for t, _ in documents])), [g for _, g in documents]
    )
    printed = next(line for line in out.splitlines() if "per-concept," in line).split()
    assert float(printed[4]) == pytest.approx(metrics.compute()["F1 score (doc avg)"], abs=5e-5)


def test_suggest_index_and_eval_apply_them(
    workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    thresholds = strict_thresholds(workspace)
    thresholds.save(DataDir(workspace / "data").thresholds_path("arch-pc"))
    source = open_project(workspace, "arch-tfidf")
    documents = tune_documents(workspace)
    texts = [text for text, _ in documents]
    # suggest: arch-tfidf's suggestions, less those below their concept's threshold.
    text_file = tmp_path / "doc.txt"
    for text in texts[:20]:
        text_file.write_text(text, encoding="utf-8")
        code, out, _ = run(capsys, workspace, "suggest", "arch-pc", str(text_file))
        assert code == 0
        expected = [
            f"<{s.uri}>" for s in source.ranked(thresholds.apply(source.suggest([text])), limit=10)
        ]
        assert [line.split("\t")[0] for line in out.splitlines()] == expected
    # Something was cut: the plain project suggests more.
    plain = sum(len(source.ranked(source.suggest([t]), limit=10)) for t in texts[:20])
    cut = sum(
        len(source.ranked(thresholds.apply(source.suggest([t])), limit=10)) for t in texts[:20]
    )
    assert cut < plain
    # index writes the same lines.
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text(texts[0], encoding="utf-8")
    assert run(capsys, workspace, "index", "arch-pc", str(folder))[0] == 0
    indexed = [line.split("\t")[0] for line in (folder / "a.annif").read_text().splitlines()]
    expected = [f"<{s.uri}>" for s in source.ranked(thresholds.apply(source.suggest(texts[:1])),
                                                    limit=10)]  # fmt: skip
    assert indexed == expected
    # eval scores the cut suggestions.
    code, out, _ = run(capsys, workspace, "eval", "arch-pc", str(workspace / "tune.tsv"))
    values = {line.split(":")[0]: float(line.split(":")[1]) for line in out.splitlines()}
    metrics = RankingMetrics(limit=10)
    metrics.update(thresholds.apply(source.suggest(texts)), [g for _, g in documents])
    expected_metrics = metrics.compute()
    for name in ("F1 score (doc avg)", "Precision (doc avg)", "Expected calibration error"):
        assert values[name] == pytest.approx(expected_metrics[name], abs=5e-5), name


def test_retraining_invalidates_them_with_a_warning(
    workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    thresholds = strict_thresholds(workspace)
    thresholds.save(DataDir(workspace / "data").thresholds_path("arch-pc"))
    assert run(capsys, workspace, "train", "arch-pc", str(workspace / "train.tsv"))[0] == 0
    text = tune_documents(workspace)[0][0]
    text_file = tmp_path / "doc.txt"
    text_file.write_text(text, encoding="utf-8")
    code, out, err = run(capsys, workspace, "suggest", "arch-pc", str(text_file))
    assert code == 0
    warning = " ".join(err.split())
    assert f"were learnt for model version {thresholds.model_version}" in warning
    assert "trained since" in warning and "kuoro optimize arch-pc CORPUS --per-concept" in warning
    # Not applied: the retrained model's suggestions (the same as arch-tfidf's) uncut.
    source = open_project(workspace, "arch-tfidf")
    expected = [f"<{s.uri}>" for s in source.ranked(source.suggest([text]), limit=10)]
    assert [line.split("\t")[0] for line in out.splitlines()] == expected
