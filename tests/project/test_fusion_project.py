"""Fusion projects end to end: train from the store, save, load, suggest and eval via the CLI."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from kuoro.cli import main
from kuoro.errors import KuoroError, ModelError
from kuoro.fusion.fit import split_positions
from kuoro.project.datadir import DataDir
from kuoro.project.model_files import read_model
from kuoro.project.project import Project

from support.data import requires_shared_data
from support.workspace import ARCH, kuoro, make_workspace, open_project

pytestmark = [requires_shared_data, pytest.mark.usefixtures("torch_one_thread")]

FUSION_DOCS = 1500  # the first documents train the fusion models, the rest the sources
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
min_df = 2
ngram_max = 2
sublinear_tf = false

[fusion-mean]
language = "fi"
vocab = "arch"
backend = "mean"
sources = "tfidf-stem:2,tfidf-words"

[fusion-kuoro]
language = "fi"
vocab = "arch"
backend = "kuoro"
sources = "tfidf-stem,tfidf-words"
max_epochs = 4
hidden_size = 16
batch_size = 128
patience = 2

[fusion-resume]
language = "fi"
vocab = "arch"
backend = "kuoro"
sources = "tfidf-stem,tfidf-words"
max_epochs = 12
hidden_size = 16
batch_size = 32
patience = 20

[fusion-linear]
language = "fi"
vocab = "arch"
backend = "linear"
sources = "tfidf-stem,tfidf-words"
max_epochs = 2

[fusion-members]
language = "fi"
vocab = "arch"
backend = "kuoro"
sources = "tfidf-stem,tfidf-words"
max_epochs = 2
hidden_size = 8
members = 3
early_stopping = false
validation = 100
"""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two trained tfidf sources and a trained kuoro fusion project."""
    work = tmp_path_factory.mktemp("fusion")
    sources, fusion = ("tfidf-stem", "tfidf-words"), ["fusion-kuoro"]
    make_workspace(work, PROJECTS, sources=sources, fusion=fusion, fusion_docs=FUSION_DOCS)
    return work


def eval_metrics(
    work: Path, capsys: pytest.CaptureFixture[str], project_id: str
) -> dict[str, float]:
    capsys.readouterr()
    assert main(kuoro(work, "eval", project_id, str(ARCH / "fulltext"))) == 0
    out = capsys.readouterr().out
    return {line.split(":")[0]: float(line.split(":")[1]) for line in out.splitlines()}


def test_eval_fusion_projects_on_full_texts(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(kuoro(workspace, "train", "fusion-mean", str(workspace / "fusion.tsv"))) == 0
    results = {
        pid: eval_metrics(workspace, capsys, pid)
        for pid in ("tfidf-stem", "tfidf-words", "fusion-mean", "fusion-kuoro")
    }
    for pid, metrics in results.items():
        assert metrics["Documents evaluated"] == 28, pid
        assert 0 < metrics["NDCG@10"] <= 1, pid
    # The two sources rank differently, so the fusion has something to combine.
    assert results["tfidf-stem"] != results["tfidf-words"]
    # Fusing the sources keeps what the better source finds (with slack for 28 documents).
    best_source = max(results[s]["NDCG@10"] for s in ("tfidf-stem", "tfidf-words"))
    assert results["fusion-mean"]["NDCG@10"] > 0.8 * best_source
    assert results["fusion-kuoro"]["NDCG@10"] > 0.8 * best_source


def test_trained_model_metadata_and_reload(workspace: Path) -> None:
    project = open_project(workspace, "fusion-kuoro")
    version = (project.model_dir / "CURRENT").read_text(encoding="utf-8")
    manifest = (project.model_dir / version / "manifest.json").read_text(encoding="utf-8")
    meta = json.loads(manifest)
    assert meta["kind"] == "fusion" and meta["model"]["family"] == "kuoro"
    assert meta["params"]["hidden_size"] == 16 and meta["params"]["max_epochs"] == 4
    assert [s["project_id"] for s in meta["sources"]] == ["tfidf-stem", "tfidf-words"]
    training = meta["training"]
    assert training["documents"] == FUSION_DOCS
    # 10 % of 1500 is below the floor of 200 held-out documents.
    assert training["validation_documents"] == 200
    assert training["train_documents"] == FUSION_DOCS - 200
    assert 1 <= training["epochs"] <= 4 and 1 <= training["best_epoch"] <= training["epochs"]
    assert 0 < training["metrics"]["ndcg@10"] <= 1
    assert {"torch", "numpy"} <= set(meta["libraries"])
    assert meta["kuoro_version"] and meta["python_version"], "every manifest records these"
    assert (project.model_dir / version / "history.jsonl").is_file()

    rows = project.suggest(["Kivikauden asuinpaikan kaivaukset ja löydöt"])
    assert rows.shape == (1, len(project.vocabulary)) and 0 < rows.nnz <= 100
    assert np.all((rows.data > 0) & (rows.data <= 1))
    # Without the projects file, the source configurations saved with the model serve.
    alone = Project(project.config, project.datadir).suggest(
        ["Kivikauden asuinpaikan kaivaukset ja löydöt"]
    )
    assert (alone != rows).nnz == 0


@pytest.mark.parametrize("project_id", ["fusion-linear", "fusion-members"])
def test_linear_and_member_ensembles_train_and_reload(workspace: Path, project_id: str) -> None:
    project = open_project(workspace, project_id)
    summary = project.train([workspace / "fusion.tsv"], device="cpu")
    assert summary.documents == FUSION_DOCS
    info = project.last_fit
    assert info is not None and info.epochs == 2
    if project_id == "fusion-members":  # no early stopping: the last epoch's weights are kept
        assert info.validation_documents == 100 and info.best_epoch == 2
    else:
        assert info.best_epoch in (1, 2)
    # A fresh load gives what the trained project gives.
    texts = ["Kivikauden asuinpaikan kaivaukset", "rautakauden hautalöydöt"]
    rows = open_project(workspace, project_id).suggest(texts)
    assert rows.shape == (2, len(project.vocabulary)) and rows.nnz > 0
    assert (rows != project.suggest(texts)).nnz == 0


def test_validation_corpus_path_is_held_out_whole(workspace: Path, tmp_path: Path) -> None:
    lines = (workspace / "fusion.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    (tmp_path / "train.tsv").write_text("".join(lines[:1000]), encoding="utf-8")
    (tmp_path / "held.tsv").write_text("".join(lines[1000:1300]), encoding="utf-8")
    data = DataDir(tmp_path / "data")
    shutil.copytree(workspace / "data", data.root)
    stores_before = set(data.stores())
    project = open_project(workspace, "fusion-mean", data)
    params = {**project.config.params, "validation": str(tmp_path / "held.tsv")}
    project.config = dataclasses.replace(project.config, params=params)
    summary = project.train([tmp_path / "train.tsv"])
    assert "1000 training and 300 held-out documents; nothing to train; ndcg@10 " in summary.report
    info = project.last_fit
    assert info is not None and info.train_documents == 1000
    assert info.validation_documents == 300 and len(info.validation_positions) == 0
    _, manifest = read_model(project.model_dir, "fusion-mean")
    # Two new shared stores: the training corpus's and the held-out corpus's.
    assert len(set(data.stores()) - stores_before) == 2
    assert data.root / manifest["training"]["store"] in set(data.stores()) - stores_before


def test_validation_split_is_disjoint_and_complete() -> None:
    train, held = split_positions(1500, 0.1, seed=3)
    assert len(held) == 200 and len(train) == 1300
    assert not set(train) & set(held) and set(train) | set(held) == set(range(1500))
    train, held = split_positions(300, 0.5, seed=0)
    assert len(held) == 150  # never more than half
    train, held = split_positions(100_000, 0.1, seed=0)
    assert len(held) == 5000
    train, held = split_positions(1000, 37, seed=0)
    assert len(held) == 37 and len(train) == 963


def test_training_never_reads_held_out_documents(
    workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kuoro.store.suggestion_store import SuggestionStore

    data = DataDir(tmp_path / "data")
    shutil.copytree(workspace / "data", data.root)
    project = open_project(workspace, "fusion-kuoro", data)
    reads: list[np.ndarray] = []
    original = SuggestionStore.batches

    def spy(self: SuggestionStore, batch_size: int, **kwargs: object):  # type: ignore[no-untyped-def]
        for part in original(self, batch_size, **kwargs):  # type: ignore[arg-type]
            reads.append(part.positions)
            yield part

    monkeypatch.setattr(SuggestionStore, "batches", spy)
    project.train([workspace / "fusion.tsv"], device="cpu")
    info = project.last_fit
    assert info is not None
    train, held = set(info.train_positions), set(info.validation_positions)
    assert len(held) == 200 and not train & held and train | held == set(range(FUSION_DOCS))
    # Every read is of held-out documents alone (scoring) or of training documents alone.
    scored = [set(p.tolist()) for p in reads if set(p.tolist()) <= held]
    trained_on = [set(p.tolist()) for p in reads if not set(p.tolist()) <= held]
    assert scored and trained_on
    assert set().union(*trained_on) == train


def test_retrained_source_makes_fusion_model_refuse(
    workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = DataDir(tmp_path / "data")
    shutil.copytree(workspace / "data", data.root)
    work = tmp_path
    shutil.copy(workspace / "projects.toml", work / "projects.toml")
    # --cached reuse: the store is complete and matches, so the sources do not run again.
    capsys.readouterr()
    assert main(kuoro(work, "-v", "train", "fusion-kuoro", str(workspace / "fusion.tsv"))) == 0
    log = capsys.readouterr().err
    assert "reusing store" in log and "documents written" not in log
    assert main(kuoro(work, "train", "tfidf-words", str(workspace / "sources.tsv"))) == 0
    with pytest.raises(
        ModelError,
        match=r"source 'tfidf-words' was retrained after this model was trained .*; "
        r"retrain 'fusion-kuoro'",
    ):
        _ = open_project(work, "fusion-kuoro", data).model
    # Retraining notices the change and rebuilds the store.
    capsys.readouterr()
    assert main(kuoro(work, "-v", "train", "fusion-kuoro", str(workspace / "fusion.tsv"))) == 0
    log = capsys.readouterr().err
    assert "source 'tfidf-words' was retrained since the store was built" in log
    assert open_project(work, "fusion-kuoro", data).suggest(["kivikausi"]).shape[0] == 1


def test_untrained_source_is_named(workspace: Path, tmp_path: Path) -> None:
    project = open_project(workspace, "fusion-mean", DataDir(tmp_path / "empty"))
    message = (
        r"source .tfidf-stem. of fusion project .fusion-mean. is not trained yet; train it first"
    )
    with pytest.raises(KuoroError, match=message + r" with: kuoro train tfidf-stem"):
        project.train([workspace / "fusion.tsv"])


@pytest.mark.integration
def test_source_projects_do_not_import_torch(workspace: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from kuoro.config.projects import load_projects; "
        "from kuoro.project.datadir import DataDir; from kuoro.project.project import Project; "
        "import kuoro.cli.indexing; "
        f"w = Path({str(workspace)!r}); p = load_projects(w / 'projects.toml'); "
        "Project(p['tfidf-stem'], DataDir(w / 'data'), p).suggest(['kivikausi']); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _copied_workspace(workspace: Path, tmp_path: Path) -> Path:
    """A copy of the workspace that a test may change (learning replaces the current model)."""
    shutil.copytree(workspace / "data", tmp_path / "data")
    shutil.copy(workspace / "projects.toml", tmp_path / "projects.toml")
    return tmp_path


def trained_version(project: Project) -> str:
    return (project.model_dir / "CURRENT").read_text(encoding="utf-8").strip()


def _manifest(project: Project) -> dict[str, object]:
    version = trained_version(project)
    manifest: dict[str, object] = json.loads(
        (project.model_dir / version / "manifest.json").read_text(encoding="utf-8")
    )
    return manifest


def test_learn_replays_the_training_store_and_never_loses_held_out_quality(
    workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = _copied_workspace(workspace, tmp_path)
    lines = (workspace / "sources.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    (work / "new.tsv").write_text("".join(lines[:300]), encoding="utf-8")
    before = open_project(work, "fusion-kuoro")
    trained = _manifest(before)["training"]
    assert isinstance(trained, dict)
    with np.load(before.model_dir / trained_version(before) / "prior.npz") as prior:
        counts_before = prior["counts"]

    capsys.readouterr()
    assert main(kuoro(work, "learn", "fusion-kuoro", str(work / "new.tsv"))) == 0
    assert "learnt from 300 documents" in capsys.readouterr().out
    after = open_project(work, "fusion-kuoro")
    training = _manifest(after)["training"]
    assert isinstance(training, dict)
    (learnt,) = training["learnt"]
    assert learnt["documents"] == 300 and learnt["replayed"] is True
    # The original training documents were replayed beside the new ones, held out the same.
    assert learnt["train_documents"] == trained["train_documents"] + 300
    assert learnt["validation_documents"] == trained["validation_documents"]
    # Scored on the same held-out documents, the learnt model is never worse than before.
    assert learnt["metrics"]["ndcg@10"] >= trained["metrics"]["ndcg@10"] - 1e-6
    with np.load(after.model_dir / trained_version(after) / "prior.npz") as prior:
        added = prior["counts"] - counts_before
    new_gold = sum(len(line.split("\t")[1].split()) for line in lines[:300])
    assert added.min() >= 0 and 0 < added.sum() <= new_gold
    assert after.suggest(["Kivikauden asuinpaikan kaivaukset"]).nnz > 0


def test_learn_without_the_training_store_uses_the_new_documents_alone(
    workspace: Path, tmp_path: Path
) -> None:
    work = _copied_workspace(workspace, tmp_path)
    lines = (workspace / "sources.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    (work / "new.tsv").write_text("".join(lines[:400]), encoding="utf-8")
    project = open_project(work, "fusion-kuoro")
    shutil.rmtree(work / "data" / _manifest(project)["training"]["store"])  # type: ignore[index]
    project.learn([work / "new.tsv"])
    info = project.last_fit
    assert info is not None
    # 10 % of 400 is below the floor of 200; at most half the documents are held out.
    assert info.validation_documents == 200 and info.train_documents == 200
    (learnt,) = _manifest(open_project(work, "fusion-kuoro"))["training"]["learnt"]  # type: ignore[index]
    assert learnt["replayed"] is False


def test_learn_is_refused_where_there_is_nothing_to_update(workspace: Path) -> None:
    with pytest.raises(KuoroError, match=r"'tfidf-stem' \(backend 'tfidf'\) does not support"):
        open_project(workspace, "tfidf-stem").learn([workspace / "fusion.tsv"])
    with pytest.raises(KuoroError, match=r"'fusion-mean' \(backend 'mean'\) learns nothing"):
        open_project(workspace, "fusion-mean").learn([workspace / "fusion.tsv"])


@pytest.mark.integration
def test_suggesting_reads_the_numpy_model_without_torch_and_matches_torch(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = open_project(workspace, "fusion-kuoro")
    version_dir, manifest = read_model(project.model_dir, project.project_id)
    assert (version_dir / "fusion.npz").is_file()
    texts = ["Kivikauden asuinpaikan kaivaukset ja löydöt", "rautakauden hautalöydöt", ""]
    numpy_rows = project.kind.load(version_dir, manifest).suggest(texts)
    monkeypatch.setenv("KUORO_FUSION_ENGINE", "torch")
    torch_rows = project.kind.load(version_dir, manifest).suggest(texts)
    monkeypatch.delenv("KUORO_FUSION_ENGINE")
    assert numpy_rows.nnz > 0 and np.array_equal(numpy_rows.indptr, torch_rows.indptr)
    assert np.array_equal(numpy_rows.indices, torch_rows.indices)
    assert np.allclose(numpy_rows.data, torch_rows.data, atol=1e-5, rtol=0)
    code = (
        "import sys; from pathlib import Path; from kuoro.config.projects import load_projects; "
        "from kuoro.project.datadir import DataDir; from kuoro.project.project import Project; "
        f"w = Path({str(workspace)!r}); p = load_projects(w / 'projects.toml'); "
        "rows = Project(p['fusion-kuoro'], DataDir(w / 'data'), p).suggest(['kivikausi']); "
        "assert rows.nnz > 0; assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_fusion_engine_is_chosen_by_environment(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUORO_FUSION_ENGINE", "torch")
    predictor = open_project(workspace, "fusion-kuoro").model
    assert type(predictor.model).__name__ == "KuoroFusion"  # type: ignore[attr-defined]
    monkeypatch.setenv("KUORO_FUSION_ENGINE", "numpy")
    predictor = open_project(workspace, "fusion-kuoro").model
    assert type(predictor.model).__name__ == "NumpyFusion"  # type: ignore[attr-defined]
    monkeypatch.setenv("KUORO_FUSION_ENGINE", "jax")
    with pytest.raises(KuoroError, match=r"KUORO_FUSION_ENGINE is 'jax'; allowed: numpy, torch"):
        _ = open_project(workspace, "fusion-kuoro").model


def _weights(project: Project) -> dict[str, torch.Tensor]:
    version_dir, _ = read_model(project.model_dir, project.project_id)
    state: dict[str, torch.Tensor] = torch.load(version_dir / "model.pt", weights_only=True)
    return state


@pytest.mark.integration
def test_an_interrupted_training_resumes_after_its_last_epoch(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = str(workspace / "fusion.tsv")
    project = open_project(workspace, "fusion-resume")
    checkpoints = project.datadir.checkpoint_dir("fusion-resume")
    assert main(kuoro(workspace, "train", "fusion-resume", corpus)) == 0
    uninterrupted = _weights(project)
    assert not checkpoints.exists()  # a finished training leaves no checkpoint behind

    # A real training process, killed once it has saved two epochs. One torch thread, as
    # in this process, so that the resumed run adds up its floats in the same order.
    command = [
        sys.executable,
        "-m",
        "kuoro.cli",
        *kuoro(workspace, "train", "fusion-resume", corpus),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    epoch = 0
    while epoch < 2:
        assert process.poll() is None, "the training finished before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint within two minutes"
        with contextlib.suppress(OSError, ValueError):  # not written yet, or being replaced
            epoch = json.loads((checkpoints / "state.json").read_text())["state"]["epoch"]
        time.sleep(0.02)
    process.kill()
    process.wait()
    stopped_at = json.loads((checkpoints / "state.json").read_text())["state"]["epoch"]
    assert 2 <= stopped_at < 12

    capsys.readouterr()
    assert main(kuoro(workspace, "train", "fusion-resume", corpus)) == 0
    assert f"resuming the interrupted training of 'fusion-resume' after epoch {stopped_at}" in (
        capsys.readouterr().err
    )
    resumed = _weights(project)
    assert resumed.keys() == uninterrupted.keys()
    for name, tensor in uninterrupted.items():
        assert torch.equal(resumed[name], tensor), name
    version_dir, manifest = read_model(project.model_dir, "fusion-resume")
    assert manifest["training"]["epochs"] == 12
    assert len((version_dir / "history.jsonl").read_text().splitlines()) == 12
    assert not checkpoints.exists()


def test_a_checkpoint_of_other_parameters_is_not_resumed(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = open_project(workspace, "fusion-resume")
    checkpoints = project.datadir.checkpoint_dir("fusion-resume")
    checkpoints.mkdir(parents=True, exist_ok=True)
    run = {"backend": "kuoro", "params": {"hidden_size": 99}}
    (checkpoints / "run.json").write_text(json.dumps(run))
    (checkpoints / "state.json").write_text(json.dumps({"weights": "x.pt", "state": {"epoch": 3}}))
    capsys.readouterr()
    assert main(kuoro(workspace, "train", "fusion-resume", str(workspace / "fusion.tsv"))) == 0
    assert "resuming" not in capsys.readouterr().err
    _, manifest = read_model(project.model_dir, "fusion-resume")
    assert manifest["training"]["epochs"] == 12
    assert not checkpoints.exists()


def test_sources_record_which_subjects_go_together_and_the_fusion_model_reads_it(
    workspace: Path,
) -> None:
    from kuoro.fusion.candidates import feature_names
    from kuoro.fusion.cooccurrence import MAX_SUBJECTS, SubjectCooccurrence
    from kuoro.project.cooccurrence_files import COOCCURRENCE

    stem = open_project(workspace, "tfidf-stem")
    version_dir, _ = read_model(stem.model_dir, "tfidf-stem", "source")
    recorded = SubjectCooccurrence.load(version_dir / COOCCURRENCE)
    # Counted on the source's own training corpus (sources.tsv), sets of ≤ 10 subjects.
    vocabulary = stem.vocabulary
    subject_sets = []
    for line in (workspace / "sources.tsv").read_text(encoding="utf-8").splitlines():
        ids = {vocabulary.id_of(u.strip("<>")) for u in line.split("\t")[1].split()}
        ids.discard(None)
        if 0 < len(ids) <= MAX_SUBJECTS:
            subject_sets.append(ids)
    assert recorded.documents == len(subject_sets) > 1000
    expected = np.zeros(len(vocabulary), np.int64)
    for ids in subject_sets:
        expected[list(ids)] += 1
    assert recorded.counts.tolist() == expected.tolist()

    # Both sources were trained on the same corpus: the fusion model counts it once.
    fusion = open_project(workspace, "fusion-kuoro")
    fusion_dir, manifest = read_model(fusion.model_dir, "fusion-kuoro", "fusion")
    used = SubjectCooccurrence.load(fusion_dir / COOCCURRENCE)
    assert used.documents == recorded.documents == manifest["training"]["cooccurrence_documents"]
    assert (used.conditional != recorded.conditional).nnz == 0

    # Suggesting reads it: the candidates' co-occurrence columns are filled.
    predictor = fusion.model
    rows = predictor.source_rows(["Arkeologiset kaivaukset ja löydöt"])
    candidates = predictor.candidates(rows)
    names = feature_names(2)
    assert candidates.features[:, names.index("corpus_prior")].max() > 0
    assert candidates.features[:, names.index("implied")].max() > 0


def test_cooccurrence_none_or_a_corpus_path(workspace: Path, tmp_path: Path) -> None:
    from kuoro.project.cooccurrence_files import COOCCURRENCE

    shutil.copytree(workspace / "data", tmp_path / "data")
    shutil.copy(workspace / "fusion.tsv", tmp_path / "fusion.tsv")
    common = 'language = "fi"\nvocab = "arch"\nbackend = "kuoro"\nmax_epochs = 1\n'
    common += 'sources = "tfidf-stem,tfidf-words"\nhidden_size = 8\n'
    extra = (
        f'\n[fusion-none]\n{common}cooccurrence = "none"\n'
        # A relative path is taken from the projects file's folder.
        f'\n[fusion-path]\n{common}cooccurrence = "fusion.tsv"\n'
    )
    text = (workspace / "projects.toml").read_text(encoding="utf-8")
    (tmp_path / "projects.toml").write_text(text + extra, encoding="utf-8")
    for pid in ("fusion-none", "fusion-path"):
        assert main(kuoro(tmp_path, "-q", "train", pid, str(tmp_path / "fusion.tsv"))) == 0
    none_dir, _ = read_model(tmp_path / "data" / "projects" / "fusion-none", "fusion-none")
    assert not (none_dir / COOCCURRENCE).exists()
    path_dir, manifest = read_model(tmp_path / "data" / "projects" / "fusion-path", "fusion-path")
    assert (path_dir / COOCCURRENCE).is_file()
    assert 0 < manifest["training"]["cooccurrence_documents"] <= FUSION_DOCS
    # The corpus is counted once and kept for the next training.
    assert len(list((tmp_path / "data" / "stores").glob("cooccurrence-*.npz"))) == 1


def test_a_model_trained_before_the_co_occurrence_columns_suggests_and_learns(
    workspace: Path, tmp_path: Path
) -> None:
    from kuoro.fusion.candidates import feature_names
    from kuoro.fusion.numpy_model import NumpyFusion
    from kuoro.project.cooccurrence_files import COOCCURRENCE
    from kuoro.util.hashing import file_sha256

    shutil.copytree(workspace / "data", tmp_path / "data")
    shutil.copy(workspace / "projects.toml", tmp_path / "projects.toml")
    project_dir = tmp_path / "data" / "projects" / "fusion-kuoro"
    version = project_dir / (project_dir / "CURRENT").read_text(encoding="utf-8").strip()
    names = list(feature_names(2))
    old_names = names[:-3]  # the three co-occurrence columns came last
    # As a model saved before them: the torch weights and the numpy arrays one layer narrower.
    state = torch.load(version / "model.pt", weights_only=True)
    w = state["mlp.0.weight"]
    state["mlp.0.weight"] = torch.cat([w[:, : len(old_names)], w[:, -1:]], dim=1)
    torch.save(state, version / "model.pt")
    with np.load(version / "fusion.npz", allow_pickle=False) as saved:
        arrays = {k: saved[k] for k in saved.files}
    first = arrays["mlp_weight_0"]
    arrays["mlp_weight_0"] = np.concatenate([first[..., : len(old_names)], first[..., -1:]], -1)
    arrays["feature_names"] = np.asarray(old_names)
    NumpyFusion.from_arrays(arrays).save(version / "fusion.npz")
    (version / COOCCURRENCE).unlink()
    manifest = json.loads((version / "manifest.json").read_text(encoding="utf-8"))
    manifest["files"].pop(COOCCURRENCE)
    for name in ("model.pt", "fusion.npz"):
        size, digest = (version / name).stat().st_size, file_sha256(version / name)
        manifest["files"][name] = {"bytes": size, "sha256": digest}
    manifest["params"].pop("cooccurrence")
    (version / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")

    project = open_project(tmp_path, "fusion-kuoro")
    texts = ["Arkeologiset kaivaukset ja löydöt", "Kivikauden asuinpaikat"]
    assert project.suggest(texts).nnz > 0
    lines = (workspace / "fusion.tsv").read_text(encoding="utf-8").splitlines(True)
    (tmp_path / "more.tsv").write_text("".join(lines[:300]), encoding="utf-8")
    project.learn([tmp_path / "more.tsv"], device="cpu")
    learnt, _ = read_model(project_dir, "fusion-kuoro", "fusion")
    assert learnt != version
    assert NumpyFusion.load(learnt / "fusion.npz")._family.n_features == len(names)
    assert open_project(tmp_path, "fusion-kuoro").suggest(texts).nnz > 0
