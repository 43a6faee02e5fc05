"""``kuoro clear``: a project's model and what its training left go; what others use stays."""

from __future__ import annotations

from pathlib import Path

import pytest

from kuoro.cli import main
from kuoro.project.datadir import DataDir

from support.data import requires_shared_data
from support.workspace import kuoro, make_workspace

pytestmark = [requires_shared_data, pytest.mark.usefixtures("torch_one_thread")]

PROJECTS = """
[tfidf]
language = "fi"
vocab = "arch"
backend = "tfidf"

[tfidf-2]
language = "fi"
vocab = "arch"
backend = "tfidf"
min_df = 1

[linear]
language = "fi"
vocab = "arch"
backend = "linear"
sources = ["tfidf"]
max_epochs = 1

[mean]
language = "fi"
vocab = "arch"
backend = "mean"
sources = ["tfidf"]

[other]
language = "fi"
vocab = "arch"
backend = "mean"
sources = ["tfidf-2"]
"""


def run(work: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(kuoro(work, *args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """Two sources; linear and mean trained on one corpus (one shared store), other over
    another source (a store of its own)."""
    return make_workspace(
        tmp_path, PROJECTS, sources=("tfidf", "tfidf-2"), fusion=("linear", "mean", "other")
    )


def test_clear_removes_the_model_and_what_training_left(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = DataDir(workspace / "data")
    stores = data.stores()
    assert len(stores) == 2
    # What training and searching leave beside the model.
    data.hyperopt_storage("linear").write_bytes(b"")
    data.checkpoint_dir("linear").mkdir()
    data.learn_store_path("linear").mkdir()
    code, out, _ = run(workspace, capsys, "clear", "linear")
    assert code == 0, out
    assert not data.project_files("linear"), "model versions, checkpoint, search, learn store"
    assert "hyperparameter search" in out and "training checkpoint" in out
    # The shared store stays while mean's current model was trained on it.
    assert data.stores() == stores
    assert "the current model of 'mean' uses it" in out
    code, out, _ = run(workspace, capsys, "show-project", "linear")
    assert "trained:                 no" in out
    text = workspace / "doc.txt"
    text.write_text("linnavuori", encoding="utf-8")
    code, out, err = run(workspace, capsys, "suggest", "linear", str(text))
    assert code == 1 and "not trained yet" in err
    # Clearing mean too leaves the store nobody uses: it goes; other's stays.
    code, out, _ = run(workspace, capsys, "clear", "mean")
    assert code == 0 and "shared suggestion store" in out
    assert len(data.stores()) == 1
    code, out, _ = run(workspace, capsys, "list-projects")
    assert [line.split()[4] for line in out.splitlines()[1:]] == ["yes", "yes", "no", "no", "yes"]
    code, out, _ = run(workspace, capsys, "clear", "mean")
    assert code == 0 and "'mean' has nothing to clear" in out
    # A source project's model goes; stores belong to the fusion projects over it.
    code, out, _ = run(workspace, capsys, "clear", "tfidf-2")
    assert code == 0 and len(data.stores()) == 1
    assert not data.project_dir("tfidf-2").exists()


def test_clear_waits_for_no_one(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = DataDir(workspace / "data")
    with data.project_lock("mean").acquire_or_fail("test"):
        code, _, err = run(workspace, capsys, "clear", "mean")
    assert code == 1 and "project 'mean' is busy" in err
    assert data.project_dir("mean").exists()
    # A store in use by another process (read by a training, say) is kept.
    run(workspace, capsys, "clear", "linear")
    shared = data.stores()
    readers = [data.store_lock(store).acquire_waiting(shared=True) for store in shared]
    code, out, _ = run(workspace, capsys, "clear", "mean")
    for reader in readers:
        reader.release()
    assert code == 0 and "in use by another process" in out
    assert data.stores() == shared
    code, _, err = run(workspace, capsys, "clear", "nope")
    assert code == 1 and "no project 'nope'" in err
