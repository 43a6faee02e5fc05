"""The report's worst documents, each suggestion with its explanation (fusion projects)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kuoro.corpus.documents import Corpus
from kuoro.evaluation.report import WORST_DOCUMENTS, write_report
from kuoro.evaluation.report.explanations import explanation_html
from kuoro.evaluation.report.gather import Worst, explain_worst
from kuoro.project.explaining import suggest_explained

from support.data import requires_shared_data
from support.workspace import ARCH, make_workspace, open_project

pytestmark = [requires_shared_data, pytest.mark.usefixtures("torch_one_thread")]

FULLTEXT = ARCH / "fulltext"
PROJECTS = """
[tfidf-stem]
language = "fi"
vocab = "arch"
backend = "tfidf"
analyzer = "snowball(finnish)"
min_df = 1

[tfidf-short]
language = "fi"
vocab = "arch"
backend = "tfidf"
top_k = 5

[fusion-members]
language = "fi"
vocab = "arch"
backend = "kuoro"
sources = "tfidf-stem,tfidf-short"
max_epochs = 1
hidden_size = 8
members = 2
"""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("report-explain")
    return make_workspace(
        work, PROJECTS, sources=("tfidf-stem", "tfidf-short"), fusion=["fusion-members"]
    )


def documents_section(page: str) -> str:
    match = re.search(r'<section id="documents">(.*?)</section>', page, re.S)
    assert match
    return match.group(1)


def test_each_worst_documents_suggestion_is_explained(workspace: Path, tmp_path: Path) -> None:
    project = open_project(workspace, "fusion-members")
    page = write_report(project, [FULLTEXT], tmp_path / "report.html").read_text("utf-8")
    body = documents_section(page)
    documents = body.split('<div class="doc">')[1:]
    assert len(documents) == WORST_DOCUMENTS
    explained = 0
    for document in documents:
        items = re.findall(r"<ol>(.*?)</ol>", document, re.S)[0].split("</li>")[:-1]
        for item in items:
            if "nothing suggested" in item:
                continue
            shown = float(re.search(r"<span class='score'>([0-9.]+)</span>", item)[1])
            assert '<summary class="note">why</summary>' in item
            assert "tfidf-stem" in item and "tfidf-short" in item
            assert "averaged over 2 members" in item and "mean over the members" in item
            parts = [float(v) for v in re.findall(r"</code></td><td[^>]*>([+-][0-9.]+)</td>", item)]
            value = float(re.search(r"<strong>([+-][0-9.]+)</strong>", item)[1])
            assert len(parts) == 6 and sum(parts) == pytest.approx(value, abs=6 * 5e-5)
            score = float(re.search(r"\) = ([0-9.]+)</div>", item)[1])
            assert score == pytest.approx(shown, abs=0.0055)  # both rounded: 2 and 3 decimals
            # A calibrated model: its own score (what the parts make), then that calibrated.
            calibrated = re.search(r"calibrated on held-out documents\(([0-9.]+)\)", item)
            if calibrated:
                own = float(re.search(r"model score = .*?\) = ([0-9.]+)<br>", item)[1])
                assert own == float(calibrated[1])
            explained += 1
    assert explained >= WORST_DOCUMENTS
    assert "<em>why</em>" in body


def test_a_source_projects_report_has_nothing_to_take_apart(
    workspace: Path, tmp_path: Path
) -> None:
    project = open_project(workspace, "tfidf-stem")
    page = write_report(project, [FULLTEXT], tmp_path / "source.html").read_text("utf-8")
    assert "<details" not in documents_section(page)


def test_explain_worst_explains_what_was_predicted(workspace: Path) -> None:
    project = open_project(workspace, "fusion-members")
    docs = list(Corpus([FULLTEXT], project.vocabulary, language="fi"))[:3]
    rows, _ = suggest_explained(project, [d.text for d in docs])
    worst = []
    for i, d in enumerate(docs):
        row = rows[i]
        predicted = list(zip(row.indices.tolist(), row.data.tolist(), strict=True))[:4]
        worst.append(Worst(-0.1, -i, d, predicted))
    explain_worst(project, worst)
    for entry in worst:
        assert entry.explanations is not None
        assert len(entry.explanations) == len(entry.predicted)
        for (_, score), record in zip(entry.predicted, entry.explanations, strict=True):
            assert record["score"] == pytest.approx(score, abs=1e-7)
            assert explanation_html(record).startswith("<details")
    assert explanation_html(None) == ""
