"""``kuoro optimize``: the limit × threshold grid equals RankingMetrics at every point, the best
point, and the command line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from kuoro.cli.app import cli, main
from kuoro.cli.evaluation import optimize_command
from kuoro.evaluation.metrics import RankingMetrics
from kuoro.evaluation.optimize import (
    DEFAULT_LIMITS,
    DEFAULT_THRESHOLDS,
    GridPoint,
    best_point,
    limit_threshold_grid,
)

from support.data import requires_shared_data
from support.workspace import kuoro, make_held_out_workspace

if "optimize" not in cli.commands:  # until cli.py registers it
    cli.add_command(optimize_command)


def random_case(seed: int, n_docs: int = 250, width: int = 60) -> tuple[sp.csr_matrix, list]:
    """Scores in steps of 0.05 (ties everywhere, and scores equal to thresholds), rows longer than
    the largest limit, empty rows, explicit zero and negative scores, documents without gold and
    gold given twice."""
    rng = np.random.default_rng(seed)
    matrix = sp.random(n_docs, width, density=0.4, format="csr", random_state=rng)
    matrix.data = (np.round(matrix.data * 24 - 2) / 20).astype(np.float32)  # -0.1 … 1.1
    empty = sp.csr_matrix((5, width), dtype=np.float32)  # five documents without suggestions
    matrix = sp.vstack([empty, matrix[5:]], format="csr")
    gold = [rng.choice(width, rng.integers(0, 6)).tolist() for _ in range(n_docs)]
    gold[7] = [*gold[7], *gold[7]]
    return matrix, gold


def direct(matrix: sp.csr_matrix, gold: list, limit: int, threshold: float) -> tuple[float, ...]:
    metrics = RankingMetrics(limit=limit, threshold=threshold)
    metrics.update(matrix, gold)
    m = metrics.compute()
    return m["Precision (doc avg)"], m["Recall (doc avg)"], m["F1 score (doc avg)"]


@pytest.mark.parametrize("seed", [0, 1])
def test_grid_equals_ranking_metrics_at_every_point_checked(seed: int) -> None:
    matrix, gold = random_case(seed)
    assert (matrix.data <= 0).any() and (matrix.data == np.float32(0.35)).any()
    assert np.diff(matrix.indptr).max() > max(DEFAULT_LIMITS)
    batches = [matrix[:100], matrix[100:101], matrix[101:]]  # batches as eval streams them
    grid = limit_threshold_grid(batches, gold)
    assert [(p.limit, p.threshold) for p in grid] == [
        (limit, threshold) for limit in DEFAULT_LIMITS for threshold in DEFAULT_THRESHOLDS
    ]
    assert {p.documents for p in grid} == {len(gold)}
    by_point = {(p.limit, p.threshold): p for p in grid}
    for limit in (1, 2, 5, 13, 20):
        for threshold in (0.0, 0.05, 0.35, 0.5, 0.95):
            p = by_point[limit, threshold]
            expected = direct(matrix, gold, limit, threshold)
            assert (p.precision, p.recall, p.f1) == pytest.approx(expected, abs=1e-12)
    # The grid moves: limits and thresholds change the numbers.
    assert len({round(p.f1, 12) for p in grid}) > 100


def test_grid_on_one_matrix_and_custom_points() -> None:
    matrix, gold = random_case(5, n_docs=40)
    grid = limit_threshold_grid(matrix, gold, limits=[3, 30], thresholds=[0.25, 0.0])
    assert [(p.limit, p.threshold) for p in grid] == [(3, 0.25), (3, 0.0), (30, 0.25), (30, 0.0)]
    for p in grid:
        assert (p.precision, p.recall, p.f1) == pytest.approx(
            direct(matrix, gold, p.limit, p.threshold), abs=1e-12
        )
    with pytest.raises(ValueError, match="40 suggestion rows for 41 documents"):
        limit_threshold_grid(matrix, [*gold, [1]])


def point(limit: int, threshold: float, p: float, r: float, f: float) -> GridPoint:
    return GridPoint(limit, threshold, p, r, f, documents=10)


def test_best_point() -> None:
    grid = [
        point(1, 0.0, 0.9, 0.1, 0.3),
        point(1, 0.5, 0.95, 0.05, 0.2),
        point(2, 0.0, 0.6, 0.4, 0.5),
        point(2, 0.5, 0.7, 0.3, 0.5),  # as good as (2, 0.0): the earlier one wins
        point(3, 0.0, 0.4, 0.6, 0.45),
    ]
    assert best_point(grid) == grid[2]
    assert best_point(grid, "precision") == grid[1]
    assert best_point(grid, "recall") == grid[4]
    with pytest.raises(ValueError, match="empty grid"):
        best_point([])


# -- the command line on a trained project ----------------------------------------------------

PROJECTS = """
[arch-tfidf]
language = "fi"
vocab = "arch"
backend = "tfidf"
analyzer = "snowball(finnish)"
"""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tfidf project trained on 2,000 archaeology titles; 300 others to tune on."""
    work = tmp_path_factory.mktemp("optimize")
    return make_held_out_workspace(work, PROJECTS, held_out="tune.tsv")


def run(capsys: pytest.CaptureFixture[str], work: Path, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(kuoro(work, *args))
    out, err = capsys.readouterr()
    return code, out, err


@requires_shared_data
def test_optimize_command_agrees_with_eval(
    workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    grid_file = tmp_path / "grid.tsv"
    tune = str(workspace / "tune.tsv")
    code, out, _ = run(capsys, workspace, "optimize", "arch-tfidf", tune, "--limits", "1-8",
                       "--grid-file", str(grid_file), "--show-grid")  # fmt: skip
    assert code == 0
    header, *rows = [line.split("\t") for line in grid_file.read_text().splitlines()]
    assert header == ["limit", "threshold", "precision", "recall", "f1"]
    assert len(rows) == 8 * 20
    assert {int(r[0]) for r in rows} == set(range(1, 9))
    assert rows[1][1] == "0.05" and rows[-1][1] == "0.95"
    lines = out.splitlines()
    assert lines[0].split() == ["limit", "threshold", "precision", "recall", "f1"]
    assert [line.split() for line in lines[1 : 1 + len(rows)]] == [
        [r[0], r[1], *(f"{float(v):.4f}" for v in r[2:])] for r in rows
    ]
    best = {line.split(":")[0]: line.split(":", 1)[1].split() for line in lines if ":" in line}
    assert best["Documents evaluated"] == ["300"]
    # The best F1 is the largest F1 of the grid, and eval at its limit and threshold agrees.
    value, _, limit, _, threshold = best["Best F1 score (doc avg)"]
    assert float(value) == pytest.approx(max(float(r[4]) for r in rows), abs=5e-5)
    assert lines[-1] == f"Best F1 with: --limit {limit.rstrip(',')} --threshold {threshold}"
    code, out, _ = run(capsys, workspace, "eval", "arch-tfidf", tune,
                       "--limit", limit.rstrip(","), "--threshold", threshold)  # fmt: skip
    evaluated = {line.split(":")[0]: line.split(":")[1].strip() for line in out.splitlines()}
    assert evaluated["F1 score (doc avg)"] == value
    best_precision = best["Best Precision (doc avg)"][0]
    assert float(best_precision) == pytest.approx(max(float(r[2]) for r in rows), abs=5e-5)
    assert float(best["Best Recall (doc avg)"][0]) == pytest.approx(
        max(float(r[3]) for r in rows), abs=5e-5
    )


@requires_shared_data
def test_optimize_options(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tune = str(workspace / "tune.tsv")
    code, out, _ = run(capsys, workspace, "optimize", "arch-tfidf", tune, "--show-grid",
                       "--limits", "5,1-2", "--thresholds", "0.1-0.3:0.1,0.05")  # fmt: skip
    assert code == 0
    points = [line.split()[:2] for line in out.splitlines()[1:13]]
    assert points == [[str(limit), threshold] for limit in ("1", "2", "5")
                      for threshold in ("0.05", "0.10", "0.20", "0.30")]  # fmt: skip
    for bad in (["--limits", "0-3"], ["--limits", "a"], ["--thresholds", "0.5-1.5:0.5"],
                ["--thresholds", "0.3-0.1"]):  # fmt: skip
        code, _, err = run(capsys, workspace, "optimize", "arch-tfidf", tune, *bad)
        assert code == 2 and "Invalid value for '--" in err, bad
