"""``kuoro eval``: the full metric set, the JSON metrics file and the per-subject results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kuoro.cli import main
from kuoro.cli.evaluation import EVAL_METRICS, MISSING_SUBJECTS
from kuoro.config.projects import load_projects
from kuoro.corpus.documents import Corpus
from kuoro.evaluation.metrics import RankingMetrics
from kuoro.project.datadir import DataDir
from kuoro.project.project import Project

from support.data import requires_shared_data
from support.workspace import kuoro, make_held_out_workspace

pytestmark = requires_shared_data

PROJECTS = """
[arch-tfidf]
language = "fi"
vocab = "arch"
backend = "tfidf"
analyzer = "snowball(finnish)"
"""
UNKNOWN = "<http://example.org/not-in-yso>"
COUNTS = {"True positives", "False positives", "False negatives", "Documents evaluated"}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tfidf project trained on 2,000 archaeology titles; 300 others (one with a subject the
    vocabulary lacks) to evaluate on."""
    work = make_held_out_workspace(tmp_path_factory.mktemp("eval"), PROJECTS, held_out="test.tsv")
    lines = (work / "test.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    text, subjects = lines[0].rstrip("\n").split("\t")
    held_out = [f"{text}\t{subjects} {UNKNOWN}\n", *lines[1:]]
    (work / "test.tsv").write_text("".join(held_out), encoding="utf-8")
    return work


def eval_lines(work: Path, capsys: pytest.CaptureFixture[str], *args: str) -> list[tuple[str, str]]:
    capsys.readouterr()
    assert main(kuoro(work, "eval", "arch-tfidf", str(work / "test.tsv"), *args)) == 0
    out = capsys.readouterr().out
    return [(name, value.strip()) for name, value in (ln.split(":") for ln in out.splitlines())]


def direct_metrics(work: Path, limit: int = 10, threshold: float = 0.0) -> RankingMetrics:
    """The metrics computed without the command line, from the project's suggestions."""
    projects = load_projects(work / "projects.toml")
    project = Project(projects["arch-tfidf"], DataDir(work / "data"), projects)
    documents = list(Corpus(work / "test.tsv", project.vocabulary, language="fi"))
    metrics = RankingMetrics(limit=limit, threshold=threshold)
    metrics.update(project.suggest([d.text for d in documents]), [d.subjects for d in documents])
    return metrics


def test_eval_prints_every_metric_in_order(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = eval_lines(workspace, capsys)
    names = [name for name, _ in lines]
    assert names == [*EVAL_METRICS, MISSING_SUBJECTS]
    assert names[:5] == ["Precision@1", "Precision@3", "Precision@5", "Recall@5", "F1@5"]
    values = dict(lines)
    assert values[MISSING_SUBJECTS] == "1"
    assert values["Documents evaluated"] == "300"
    expected = direct_metrics(workspace)
    for name, value in expected.compute().items():
        assert float(values[name]) == pytest.approx(value, abs=5e-5), name
        assert len(values[name].split(".")[1]) == 4, name
    for name, count in expected.counts().items():
        assert values[name] == str(count), name
    # Not degenerate: the project finds subjects, and misses some.
    assert 0.2 < float(values["NDCG@10"]) < 1
    assert 0 < int(values["False negatives"]) < int(values["True positives"]) * 10


# The keys of `annif eval --metrics-file`, in Annif's order: what pipelines (DVC) read.
ANNIF_KEYS = [
    "Precision_doc_avg", "Recall_doc_avg", "F1_score_doc_avg",
    "Precision_subj_avg", "Recall_subj_avg", "F1_score_subj_avg",
    "Precision_weighted_subj_avg", "Recall_weighted_subj_avg", "F1_score_weighted_subj_avg",
    "Precision_microavg", "Recall_microavg", "F1_score_microavg",
    "F1@5", "NDCG", "NDCG@5", "NDCG@10", "Precision@1", "Precision@3", "Precision@5",
    "True_positives", "False_positives", "False_negatives", "Documents_evaluated",
]  # fmt: skip


def test_metrics_file_is_annifs_flat_json(
    workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "out" / "metrics.json"
    lines = dict(eval_lines(workspace, capsys, "--limit", "5", "--threshold", "0.1",
                            "-M", str(path)))  # fmt: skip
    saved = json.loads(path.read_text(encoding="utf-8"))
    # Flat: every value a number, Annif's keys in Annif's order, Kuoro's extra ones among them.
    assert all(isinstance(v, int | float) and not isinstance(v, bool) for v in saved.values())
    assert [key for key in saved if key in ANNIF_KEYS] == ANNIF_KEYS
    assert set(saved) - set(ANNIF_KEYS) == {
        "Recall@1", "Recall@3", "Recall@5", "F1@1", "F1@3", "LRAP",
        "Expected_calibration_error", "Gold_subjects_not_in_vocabulary",
    }  # fmt: skip
    assert saved["Documents_evaluated"] == 300
    assert saved["Gold_subjects_not_in_vocabulary"] == 1
    expected = direct_metrics(workspace, limit=5, threshold=0.1)
    for name, value in {**expected.compute(), **expected.counts()}.items():
        key = name.replace(" ", "_").replace("(", "").replace(")", "")
        assert saved[key] == pytest.approx(value, abs=1e-12), name
        assert f"{saved[key]:.4f}" == f"{float(lines[name]):.4f}", name
    assert all(isinstance(saved[name.replace(" ", "_")], int) for name in COUNTS)


def test_results_file_has_annifs_columns(
    workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "subjects.tsv"
    values = dict(eval_lines(workspace, capsys, "-r", str(path)))
    header, *rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()]
    assert header == [
        "URI", "Label", "Support", "True_positives", "False_positives", "False_negatives",
        "Precision", "Recall", "F1_score",
    ]  # fmt: skip
    supports = [int(r[2]) for r in rows]
    assert supports == sorted(supports, reverse=True)
    tp, fp, fn = (int(values[n]) for n in ("True positives", "False positives", "False negatives"))
    assert sum(int(r[3]) for r in rows) == tp
    assert sum(int(r[4]) for r in rows) == fp
    assert sum(int(r[5]) for r in rows) == fn
    assert sum(supports) == tp + fn
    for uri, label, support, hits, false_pos, false_neg, precision, recall, f1 in rows:
        assert uri.startswith("http://www.yso.fi/onto/yso/p"), "a bare URI, as Annif writes it"
        assert label
        s, h, p = int(support), int(hits), int(hits) + int(false_pos)
        assert int(false_neg) == s - h
        assert float(precision) == pytest.approx(h / p if p else 0.0, abs=5e-5)
        assert float(recall) == pytest.approx(h / s if s else 0.0, abs=5e-5)
        assert float(f1) == pytest.approx(2 * h / (s + p), abs=5e-5)
    # The per-subject rows are what the subject average is made of (over all 130+ concepts).
    projects = load_projects(workspace / "projects.toml")
    n_concepts = len(Project(projects["arch-tfidf"], DataDir(workspace / "data")).vocabulary)
    mean_recall = sum(float(r[7]) for r in rows) / n_concepts
    assert float(values["Recall (subj avg)"]) == pytest.approx(mean_recall, abs=1e-3)


def test_eval_rejects_a_corpus_without_documents(
    workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.tsv"
    empty.write_text("", encoding="utf-8")
    capsys.readouterr()
    assert main(kuoro(workspace, "eval", "arch-tfidf", str(empty))) == 1
    err = capsys.readouterr().err
    assert "kuoro: error:" in err and "no usable documents" in err
