"""`kuoro report`: one self-contained HTML file, its sections and plots, as a browser shows it."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from kuoro.cli.app import cli, main
from kuoro.cli.tuning import report_command
from kuoro.corpus.documents import Corpus
from kuoro.evaluation.hyperopt import run_hyperopt
from kuoro.evaluation.metrics import RankingMetrics
from kuoro.evaluation.report import SECTIONS, WORST_DOCUMENTS, write_report
from kuoro.project.project import Project
from kuoro.util.ranking import rank_row

from support.data import requires_shared_data
from support.workspace import ARCH, kuoro, make_workspace, open_project

pytestmark = [requires_shared_data, pytest.mark.usefixtures("torch_one_thread")]
if "report" not in cli.commands:  # until cli.py registers it
    cli.add_command(report_command)

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

[fusion-kuoro]
name = "Archaeology fusion"
language = "fi"
vocab = "arch"
backend = "kuoro"
sources = "tfidf-stem,tfidf-short"
max_epochs = 3
hidden_size = 16
batch_size = 128

[fusion-members]
language = "fi"
vocab = "arch"
backend = "kuoro"
sources = "tfidf-stem,tfidf-short"
max_epochs = 1
hidden_size = 8
members = 2
"""
PLOTTED = ("training", "limits", "calibration", "sources", "search")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two sources (one keeping only 5 suggestions), two trained fusion projects, a search."""
    work = tmp_path_factory.mktemp("report")
    sources, fusion = ("tfidf-stem", "tfidf-short"), ("fusion-kuoro", "fusion-members")
    make_workspace(work, PROJECTS, sources=sources, fusion=fusion)
    # Ten trials: enough for parameter importances (MIN_IMPORTANCE_TRIALS).
    run_hyperopt(open_project(work, "fusion-kuoro"), [work / "fusion.tsv"], trials=10, device="cpu")
    return work


@pytest.fixture(scope="module")
def report(workspace: Path) -> Path:
    output = workspace / "out" / "report.html"
    args = ["report", "fusion-kuoro", str(FULLTEXT), "-o", str(output)]
    assert main(kuoro(workspace, *args)) == 0
    return output


def section(page: str, anchor: str) -> str:
    match = re.search(rf'<section id="{anchor}">(.*?)</section>', page, re.S)
    assert match, f"no section {anchor}"
    return match.group(1)


def images(html: str) -> list[np.ndarray]:
    """The PNGs embedded in ``html``, decoded."""
    found = re.findall(r'<img [^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    return [imread(io.BytesIO(base64.b64decode(data)), format="png") for data in found]


def colourful(pixels: np.ndarray) -> np.ndarray:
    """Where pixels are clearly coloured (not white, grey or black)."""
    rgb = pixels[..., :3].astype(float)
    if rgb.max() > 1:
        rgb /= 255
    return np.asarray(rgb.max(axis=-1) - rgb.min(axis=-1) > 0.25)


def per_document_ndcg(project: Project, corpus: Path) -> list[float]:
    documents = [d for d in Corpus([corpus], project.vocabulary, language="fi") if d.subjects]
    rows = project.suggest([d.text for d in documents])
    values = []
    for i, document in enumerate(documents):
        row = rows[i]
        ids, _ = rank_row(row.indices, row.data, 10)
        values.append(RankingMetrics().document_metrics(ids, set(document.subjects))["NDCG@10"])
    return values


@pytest.mark.integration
def test_report_is_one_self_contained_file(report: Path) -> None:
    page = report.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    # Nothing is fetched: every src and href is inline data or a link within the page.
    targets = re.findall(r'(?:src|href)\s*=\s*["\']?([^"\'\s>]*)', page, re.I)
    assert targets and all(t.startswith(("data:", "#")) for t in targets), targets
    assert "<link" not in page and "@import" not in page and "url(" not in page
    for anchor, title in SECTIONS:
        assert f'href="#{anchor}"' in page
        assert f"<h2>{title}</h2>" in section(page, anchor)
    assert "<title>Kuoro report: Archaeology fusion</title>" in page


@pytest.mark.parametrize("anchor", PLOTTED)
@pytest.mark.integration
def test_plots_are_embedded_and_drawn(report: Path, anchor: str) -> None:
    pngs = images(section(report.read_text(encoding="utf-8"), anchor))
    assert pngs, f"no plot in section {anchor}"
    for pixels in pngs:
        height, width = pixels.shape[:2]
        assert width >= 600 and height >= 150
        # Lines and bars in colour over a white background: far from blank.
        assert colourful(pixels).sum() > 2000


@pytest.mark.integration
def test_headline_matches_eval(
    workspace: Path, report: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(kuoro(workspace, "eval", "fusion-kuoro", str(FULLTEXT))) == 0
    expected = {
        line.split(":")[0]: float(line.split(":")[1])
        for line in capsys.readouterr().out.splitlines()
    }
    summary = section(report.read_text(encoding="utf-8"), "summary")
    for name in ("NDCG@10", "F1@5", "Precision@5", "Recall@5"):
        match = re.search(rf'<td>{re.escape(name)}</td><td class="num">([0-9.]+)</td>', summary)
        assert match, name
        assert float(match.group(1)) == pytest.approx(expected[name], abs=1e-4), name
    assert f"{int(expected['Documents evaluated'])} documents of" in summary


@pytest.mark.integration
def test_worst_documents_are_the_lowest_ndcg(workspace: Path, report: Path) -> None:
    body = section(report.read_text(encoding="utf-8"), "documents")
    shown = [float(v) for v in re.findall(r"nDCG@10 ([0-9.]+)</span></h3>", body)]
    every = sorted(per_document_ndcg(open_project(workspace, "fusion-kuoro"), FULLTEXT))
    assert len(shown) == WORST_DOCUMENTS
    assert shown == pytest.approx(every[:WORST_DOCUMENTS], abs=5e-4)
    # Gold and suggestions side by side, hits marked in both lists.
    assert body.count("<h4>Its subjects</h4>") == WORST_DOCUMENTS
    assert "class='hit'" in body and "class='miss'" in body


@pytest.mark.integration
def test_sources_and_subjects_tables(report: Path) -> None:
    page = report.read_text(encoding="utf-8")
    sources = section(page, "sources")
    cells = {
        name: re.findall(r'<td class="num">([^<]*)</td>', row)
        for name, row in re.findall(r'<span class="name">([^<]+)</span></td>(.*?)</tr>', sources)
    }
    assert set(cells) == {"tfidf-stem", "tfidf-short"}
    gates = [float(cells[name][1]) for name in cells]
    assert sum(gates) == pytest.approx(1.0, abs=2e-3)  # a gate sums to 1 in every document
    in_top = {name: float(values[2].rstrip("%")) for name, values in cells.items()}
    # The source that keeps 5 suggestions cannot have suggested everything the fusion ranks.
    assert in_top["tfidf-short"] < in_top["tfidf-stem"] <= 100
    subjects = section(page, "subjects")
    f1 = [float(v) for v in re.findall(r'<td class="num">([0-9.]+)</td></tr>', subjects)]
    assert f1 and f1 == sorted(f1)  # worst served first
    search = section(page, "search")
    counts = re.search(r"(\d+) complete, (\d+) pruned", search)
    assert counts is not None and int(counts[1]) + int(counts[2]) == 10
    assert (
        "<code>learning_rate</code>" in search
        and "<pre># best of 10 trials: held-out nDCG@10 0." in search
    )


@pytest.mark.integration
def test_source_project_and_member_ensemble(workspace: Path, tmp_path: Path) -> None:
    source = write_report(
        open_project(workspace, "tfidf-stem"), [FULLTEXT], tmp_path / "source.html"
    )
    page = source.read_text(encoding="utf-8")
    assert "A source project has no epoch-by-epoch training history" in page
    assert "Only fusion projects combine sources" in page
    assert images(section(page, "limits")) and not images(section(page, "training"))
    members = write_report(
        open_project(workspace, "fusion-members"), [FULLTEXT], tmp_path / "members.html"
    )
    page = members.read_text(encoding="utf-8")
    assert images(section(page, "sources")) and "No hyperparameter search has been run" in page


@pytest.mark.integration
def test_report_reads_a_search_kept_elsewhere(
    workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    storage = tmp_path / "search.sqlite3"
    project = open_project(workspace, "fusion-members")
    run_hyperopt(project, [workspace / "fusion.tsv"], trials=1, device="cpu", storage=storage)
    output = tmp_path / "members.html"
    args = ["report", "fusion-members", str(FULLTEXT), "-o", str(output)]
    assert main(kuoro(workspace, *args, "--storage", str(storage))) == 0
    search = section(output.read_text(encoding="utf-8"), "search")
    assert "No hyperparameter search has been run" not in search and images(search)
    headers = re.findall(r"<th[^>]*>([^<]*)</th>", search)
    assert headers == ["Parameter", "Baseline", "Best", "Configured now", "Importance"]
    # One trial: the baseline, so the configured hidden_size (8) in all three columns.
    assert "<td><code>hidden_size</code></td><td>8</td><td>8</td><td>8</td>" in search
    capsys.readouterr()
    assert main(kuoro(workspace, *args, "--storage", str(tmp_path / "nothing.sqlite3"))) == 2
    assert "--storage" in capsys.readouterr().err


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if path := shutil.which(name):
            return path
    return None


@pytest.mark.skipif(
    find_chromium() is None,
    reason="no chromium binary on PATH (Debian/Ubuntu: apt-get install -y chromium)",
)
@pytest.mark.integration
def test_browser_renders_the_report(report: Path, tmp_path: Path) -> None:
    screenshot = tmp_path / "report.png"
    command = [
        str(find_chromium()),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        f"--screenshot={screenshot}",
        "--window-size=1280,4000",
        report.resolve().as_uri(),
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    pixels = imread(screenshot)
    assert pixels.shape[:2] == (4000, 1280)
    rgb = pixels[..., :3]
    not_white = (rgb < 0.95).any(axis=-1)
    assert not_white.mean() > 0.03, "the page looks blank"
    # Plots are bands full of colour; text and links alone are not.
    coloured = colourful(pixels)
    bands = coloured.reshape(40, 100, 1280).sum(axis=(1, 2))
    assert (bands > 3000).sum() >= 3, bands.tolist()


def test_search_plot_numbers_trials_with_integers(monkeypatch: pytest.MonkeyPatch) -> None:
    import optuna
    from optuna.trial import create_trial

    from kuoro.evaluation.report import plots as report_module
    from kuoro.evaluation.search_results import HyperoptResult

    study = optuna.create_study(direction="maximize")
    for value in (0.40, 0.45, 0.43):
        study.add_trial(create_trial(value=value))
    result = HyperoptResult(
        project_id="p", storage=Path("search.sqlite3"), best_params={}, best_value=0.45,
        best_trial=1, baseline_params={}, baseline_value=0.40, complete=3,
    )  # fmt: skip
    figures = []
    monkeypatch.setattr(report_module, "png", lambda figure, alt: figures.append(figure) or "")
    report_module.plot_search(result, study.trials)
    history, importance = figures[0].axes[:2]
    ticks = [t for t in history.get_xticks() if history.get_xlim()[0] <= t <= history.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks
    texts = [t.get_text() for t in importance.texts]
    assert texts == ["too few trials for importances\n(3 completed trials, at least 10 needed)"]
