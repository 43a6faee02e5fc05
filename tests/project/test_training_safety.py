"""Training never loses a model or a store: concurrent runs, bad corpora, damaged files.

Each test here reproduces a failure a hostile tester found on the real command line: two
trains of one project at once deleting its model, a corpus with no known subject replacing a
good model, documents without suggestions crashing training, a damaged checkpoint blocking
every later train, a truncated store killing the process with SIGBUS.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from kuoro.cli import main
from kuoro.project.datadir import DataDir
from kuoro.project.model_files import read_model

from support.data import requires_shared_data
from support.workspace import kuoro, make_workspace, open_project

pytestmark = [requires_shared_data, pytest.mark.usefixtures("torch_one_thread")]

PROJECTS = """
[tfidf-stem]
language = "fi"
vocab = "arch"
backend = "tfidf"
analyzer = "snowball(finnish)"
min_df = 1

[tfidf-words]
language = "fi"
vocab = "arch"
backend = "tfidf"
analyzer = "simple"

[fusion-mean]
language = "fi"
vocab = "arch"
backend = "mean"
sources = "tfidf-stem,tfidf-words"

[fusion-kuoro]
language = "fi"
vocab = "arch"
backend = "kuoro"
sources = "tfidf-stem,tfidf-words"
max_epochs = 3
hidden_size = 8
batch_size = 128
"""
UNKNOWN_SUBJECT = "<http://example.org/not-in-the-vocabulary>"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("safety")
    return make_workspace(
        work, PROJECTS, sources=("tfidf-stem", "tfidf-words"), fusion=("fusion-kuoro",)
    )


@pytest.fixture
def work(workspace: Path, tmp_path: Path) -> Path:
    """A copy of the workspace that a test may break."""
    shutil.copytree(workspace / "data", tmp_path / "data")
    for name in ("projects.toml", "fusion.tsv", "sources.tsv"):
        shutil.copy(workspace / name, tmp_path / name)
    return tmp_path


def _cli(work: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "kuoro.cli", *kuoro(work, *args)]


def _current(work: Path, project_id: str) -> str:
    return (work / "data" / "projects" / project_id / "CURRENT").read_text().strip()


def _model_loads(work: Path, project_id: str) -> bool:
    project = open_project(work, project_id)
    try:
        read_model(project.model_dir, project_id)
        return project.suggest(["Kivikauden asuinpaikan kaivaukset"]).shape[0] == 1
    except Exception:
        return False


# -- concurrent runs -----------------------------------------------------------------------------


def _train_twice_at_once(work: Path, *args: str) -> list[tuple[int, str]]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = [
        subprocess.Popen(_cli(work, *args), env=env, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    return [(run.wait(), run.stderr.read() if run.stderr else "") for run in runs]


@pytest.mark.integration
def test_two_trains_of_one_project_at_once_never_lose_its_model(work: Path) -> None:
    corpus = str(work / "sources.tsv")
    refused = 0
    for _ in range(10):
        results = _train_twice_at_once(work, "train", "tfidf-stem", corpus)
        for status, err in results:
            # Each run trains, or is refused at once with a message naming who holds the project.
            assert status == 0 or "project 'tfidf-stem' is busy: process" in err, err
        assert any(status == 0 for status, _ in results)
        refused += sum(status != 0 for status, _ in results)
        versions = [p.name for p in (work / "data/projects/tfidf-stem").iterdir() if p.is_dir()]
        assert versions == [_current(work, "tfidf-stem")]  # one version, the current one
        assert _model_loads(work, "tfidf-stem")
    assert refused > 0  # the runs did overlap


@pytest.mark.integration
def test_two_uncached_fusion_trains_at_once_keep_model_and_store(work: Path) -> None:
    corpus = str(work / "fusion.tsv")
    for _ in range(2):
        results = _train_twice_at_once(work, "train", "fusion-kuoro", corpus, "--no-cached")
        assert any(status == 0 for status, _ in results), results
        for status, err in results:
            assert status == 0 or "project 'fusion-kuoro' is busy" in err, err
        assert _model_loads(work, "fusion-kuoro")
        (store,) = DataDir(work / "data").stores()
        assert (store / "data.mdb").is_file()


@pytest.mark.integration
def test_a_lock_left_by_a_killed_process_does_not_block(work: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from kuoro.project.datadir import DataDir; "
            f"DataDir({str(work / 'data')!r}).project_lock('tfidf-stem').acquire_or_fail('');"
            "print('locked', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    status = subprocess.run(
        _cli(work, "train", "tfidf-stem", str(work / "sources.tsv")),
        stderr=subprocess.PIPE,
        text=True,
    )
    assert status.returncode == 1 and "project 'tfidf-stem' is busy" in status.stderr
    assert len(status.stderr.strip().splitlines()) == 1
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert main(kuoro(work, "train", "tfidf-stem", str(work / "sources.tsv"))) == 0


# -- corpora that give nothing to learn from -------------------------------------------------


@pytest.mark.parametrize("project_id", ["fusion-mean", "fusion-kuoro"])
def test_a_corpus_without_known_subjects_is_refused_and_the_model_kept(
    work: Path, project_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(kuoro(work, "train", project_id, str(work / "fusion.tsv"))) == 0
    before = _current(work, project_id)
    texts = [line.split("\t")[0] for line in (work / "fusion.tsv").read_text().splitlines()]
    (work / "unknown.tsv").write_text("".join(f"{t}\t{UNKNOWN_SUBJECT}\n" for t in texts[:400]))
    capsys.readouterr()
    assert main(kuoro(work, "train", project_id, str(work / "unknown.tsv"))) == 1
    err = capsys.readouterr().err
    assert "has a subject in the vocabulary: there is nothing to learn from" in err
    assert _current(work, project_id) == before and _model_loads(work, project_id)


def _unsuggestable(count: int, subject: str) -> str:
    """Documents of words no source knows, so that no source suggests anything for them."""
    return "".join(f"qxzv{i} zzkq{i}\t{subject}\n" for i in range(count))


def test_documents_without_suggestions_train_and_learn(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = (work / "fusion.tsv").read_text().splitlines(keepends=True)
    subject = lines[0].split("\t")[1].split()[0]
    mixed = lines[:600] + _unsuggestable(300, subject).splitlines(keepends=True)
    (work / "mixed.tsv").write_text("".join(mixed[::2] + mixed[1::2]))
    assert main(kuoro(work, "train", "fusion-kuoro", str(work / "mixed.tsv"))) == 0
    (work / "new.tsv").write_text("".join(lines[600:700]) + _unsuggestable(50, subject))
    assert main(kuoro(work, "learn", "fusion-kuoro", str(work / "new.tsv"))) == 0
    assert _model_loads(work, "fusion-kuoro")

    before = _current(work, "fusion-kuoro")
    (work / "nothing.tsv").write_text(_unsuggestable(400, subject))
    capsys.readouterr()
    assert main(kuoro(work, "train", "fusion-kuoro", str(work / "nothing.tsv"))) == 1
    assert "the sources suggested nothing for any of the" in capsys.readouterr().err
    assert _current(work, "fusion-kuoro") == before


# -- damaged files ---------------------------------------------------------------------------


@pytest.mark.integration
def test_a_damaged_checkpoint_is_discarded_with_a_warning(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = str(work / "fusion.tsv")
    checkpoints = DataDir(work / "data").checkpoint_dir("fusion-kuoro")
    assert main(kuoro(work, "train", "fusion-kuoro", corpus)) == 0
    # What an interrupted run of the same data and parameters leaves, with its weights damaged.
    process = subprocess.Popen(_cli(work, "train", "fusion-kuoro", corpus, "--no-cached"))
    state = checkpoints / "state.json"
    while not state.is_file():
        assert process.poll() is None, "the training ended before it saved an epoch"
    process.kill()
    process.wait()
    weights = checkpoints / json.loads(state.read_text())["weights"]
    weights.write_bytes(weights.read_bytes()[:100])
    capsys.readouterr()
    for _ in range(2):  # the damaged checkpoint blocked every later train
        assert main(kuoro(work, "train", "fusion-kuoro", corpus)) == 0
    err = capsys.readouterr().err
    assert "cannot be loaded" in err and "discarding it and training from the start" in err
    assert not checkpoints.exists()


def _truncate_store(work: Path) -> Path:
    (store,) = DataDir(work / "data").stores()
    data_file = store / "data.mdb"
    os.truncate(data_file, data_file.stat().st_size // 2)
    return store


@pytest.mark.integration
def test_a_truncated_store_is_an_error_not_a_crash(work: Path) -> None:
    _truncate_store(work)
    learn = subprocess.run(
        _cli(work, "learn", "fusion-kuoro", str(work / "sources.tsv")),
        stderr=subprocess.PIPE,
        text=True,
    )
    assert learn.returncode == 1, learn.stderr  # not -SIGBUS
    (line,) = learn.stderr.strip().splitlines()[-1:]
    assert "is truncated" in line and "--no-cached" in line
    # Training again notices the damage and rebuilds the store.
    train = subprocess.run(
        _cli(work, "-v", "train", "fusion-kuoro", str(work / "fusion.tsv")),
        stderr=subprocess.PIPE,
        text=True,
    )
    assert train.returncode == 0, train.stderr
    assert "cannot be read" in train.stderr and "rebuilding" in train.stderr
    assert _model_loads(work, "fusion-kuoro")


# -- shared stores ---------------------------------------------------------------------------


def test_fusion_projects_over_the_same_sources_and_corpus_share_one_store(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = DataDir(work / "data")
    (store,) = data.stores()  # fusion-kuoro's, from the workspace
    capsys.readouterr()
    assert main(kuoro(work, "-v", "train", "fusion-mean", str(work / "fusion.tsv"))) == 0
    assert f"reusing store {store}" in capsys.readouterr().err
    assert data.stores() == [store]
    _, manifest = read_model(data.project_dir("fusion-mean"), "fusion-mean")
    assert data.root / manifest["training"]["store"] == store


def test_a_store_of_a_project_trained_before_sharing_is_adopted(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = DataDir(work / "data")
    (store,) = data.stores()
    legacy = data.legacy_store_path("fusion-kuoro")
    os.rename(store, legacy)  # where main kept it before
    capsys.readouterr()
    assert main(kuoro(work, "-v", "train", "fusion-kuoro", str(work / "fusion.tsv"))) == 0
    err = capsys.readouterr().err
    assert f"moved the store {legacy} to {store}" in err and "reusing store" in err
    assert not legacy.exists() and data.stores() == [store]


def test_a_validation_corpus_equal_to_the_training_corpus_gets_a_warning(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (work / "projects.toml").read_text()
    copy = work / "same.tsv"
    shutil.copy(work / "fusion.tsv", copy)  # the same documents under another name
    (work / "projects.toml").write_text(
        text.replace("[fusion-mean]\n", f'[fusion-mean]\nvalidation = "{copy}"\n')
    )
    capsys.readouterr()
    assert main(kuoro(work, "train", "fusion-mean", str(work / "fusion.tsv"))) == 0
    err = capsys.readouterr().err
    assert f"the validation corpus {copy} is the training corpus" in err
    assert len(DataDir(work / "data").stores()) == 1  # one store, opened once
