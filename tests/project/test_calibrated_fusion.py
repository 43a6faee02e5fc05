"""A fusion project's calibration: fitted on its held-out documents only, saved with the model,
ranking as the raw model does; a model saved before calibration predicts as it did."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kuoro.fusion.calibration import Calibration
from kuoro.fusion.candidates import ConceptPrior
from kuoro.fusion.numpy_model import NumpyFusion
from kuoro.fusion.predictor import FusionPredictor
from kuoro.project import fusion_training
from kuoro.project.datadir import DataDir
from kuoro.project.model_files import MANIFEST, read_model

from support.data import requires_shared_data
from support.workspace import ARCH, kuoro, make_workspace, open_project

pytestmark = [requires_shared_data, pytest.mark.usefixtures("torch_one_thread")]

SOURCES = """
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
min_df = 2
"""
FUSION = """
[{id}]
language = "fi"
vocab = "arch"
backend = "kuoro"
sources = "tfidf-stem,tfidf-words"
max_epochs = 2
hidden_size = 8
batch_size = 128
{extra}
"""
PROJECTS = (
    SOURCES
    + FUSION.format(id="fusion", extra="")
    + FUSION.format(id="fusion-old", extra="")
    + FUSION.format(id="fusion-held", extra='validation = "held.tsv"')
)
TEXTS = [
    "Kivikauden asuinpaikan kaivaukset ja löydöt",
    "Rautakautiset hautalöydöt Satakunnassa",
    "Keskiaikaisen kaupungin arkeologiset tutkimukset",
    "Pronssikauden röykkiöt rannikolla",
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two trained tfidf sources and a kuoro fusion of them trained on 1,200 documents, 200 of
    them held out (the floor of a fraction's split); held.tsv, 150 other documents, is the
    held-out corpus of fusion-held."""
    work = tmp_path_factory.mktemp("calibrated")
    lines = (ARCH / "documents.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    (work / "held.tsv").write_text("".join(lines[-150:]), encoding="utf-8")
    make_workspace(work, PROJECTS.replace('"held.tsv"', f'"{work / "held.tsv"}"'),
                   sources=("tfidf-stem", "tfidf-words"), fusion=["fusion"])  # fmt: skip
    return work


def candidate_scores(project_id: str, work: Path) -> tuple[FusionPredictor, Any]:
    project = open_project(work, project_id)
    predictor = project.model
    assert isinstance(predictor, FusionPredictor)
    return predictor, predictor.source_rows(TEXTS)


def test_the_model_is_saved_with_its_calibration(workspace: Path) -> None:
    project = open_project(workspace, "fusion")
    version_dir, manifest = read_model(project.model_dir, "fusion", "fusion")
    chosen = manifest["training"]["calibration"]
    assert chosen["requested"] == "auto"
    assert set(chosen["cross_validation"]) == {"none", "temperature", "platt", "isotonic"}
    losses = {m: v["log_loss"] for m, v in chosen["cross_validation"].items()}
    assert chosen["method"] == min(losses, key=losses.__getitem__)
    # The held-out documents with candidates (a document no source suggested for has none).
    held_out = manifest["training"]["validation_documents"]
    assert 0.9 * held_out <= chosen["held_out"]["documents"] <= held_out == 200
    if chosen["method"] != "none":
        assert "calibration.npz" in manifest["files"]  # checksummed like the model
        loaded = Calibration.load(version_dir / "calibration.npz")
        assert loaded.method == chosen["method"]
        assert isinstance(project.model, FusionPredictor)
        assert project.model.calibration is not None


def test_calibrated_scores_are_probabilities_ranked_as_before(workspace: Path) -> None:
    predictor, rows = candidate_scores("fusion", workspace)
    calibration = Calibration("platt", scale=1.7, shift=-0.4)  # whatever was fitted: one more
    for chosen in (predictor.calibration, calibration):
        predictor.calibration = chosen
        fused = predictor.fuse(rows)
        predictor.calibration = None
        raw = predictor.fuse(rows)
        assert fused.nnz == raw.nnz > 0
        assert np.all((fused.data > 0) & (fused.data <= 1))
        for i in range(len(TEXTS)):
            a, b = raw[i], fused[i]
            assert a.indices.tolist() == b.indices.tolist()
            before = a.indices[np.lexsort((a.indices, -a.data))]
            after = b.indices[np.lexsort((b.indices, -b.data))]
            assert before.tolist() == after.tolist(), i


def test_calibration_is_fitted_on_held_out_documents_only(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[Any, np.ndarray]] = []
    original = fusion_training.calibrate_on_held_out

    def recording(model: NumpyFusion, store: Any, positions: np.ndarray, *a: Any, **k: Any) -> Any:
        seen.append((store, np.array(positions)))
        return original(model, store, positions, *a, **k)

    monkeypatch.setattr(fusion_training, "calibrate_on_held_out", recording)
    # A split of the training corpus: calibrated on its held-out part, never the rest.
    project = open_project(workspace, "fusion")
    project.train([workspace / "fusion.tsv"], device="cpu")
    info = project.last_fit
    assert info is not None
    [(store, positions)] = seen
    assert len(store) == 1200 and np.array_equal(positions, info.validation_positions)
    assert len(positions) == 200 and not set(positions) & set(info.train_positions)
    # A separate validation corpus: calibrated on all of it, never on the training corpus.
    seen.clear()
    held = open_project(workspace, "fusion-held")
    held.train([workspace / "fusion.tsv"], device="cpu")
    [(store, positions)] = seen
    assert len(store) == 150 and positions.tolist() == list(range(150))
    _, manifest = read_model(held.model_dir, "fusion-held", "fusion")
    assert 140 <= manifest["training"]["calibration"]["held_out"]["documents"] <= 150


def test_a_model_saved_without_calibration_predicts_as_before(
    workspace: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A model from before calibration (no calibration.npz, no calibration parameter in its
    manifest) loads, gives the raw model's scores, and says how to get calibrated ones."""
    data = DataDir(workspace / "data")
    trained = data.project_dir("fusion")
    old = data.project_dir("fusion-old")
    shutil.rmtree(old, ignore_errors=True)
    shutil.copytree(trained, old)
    version = (old / "CURRENT").read_text(encoding="utf-8").strip()
    manifest = json.loads((old / version / MANIFEST).read_text(encoding="utf-8"))
    (old / version / "calibration.npz").unlink(missing_ok=True)
    manifest["files"].pop("calibration.npz", None)
    manifest["training"].pop("calibration")
    manifest["params"].pop("calibration")
    manifest["project_id"] = "fusion-old"
    (old / version / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")

    project = open_project(workspace, "fusion-old")
    with caplog.at_level(logging.WARNING, logger="kuoro.project.project"):
        predictor = project.model
    assert isinstance(predictor, FusionPredictor) and predictor.calibration is None
    assert "calibration 'none' → 'auto'" in caplog.text  # retraining calibrates it
    # Its suggestions: the numpy model's own scores, as before calibration existed.
    raw_model = NumpyFusion.load(old / version / "fusion.npz")
    prior = ConceptPrior.from_counts(np.load(old / version / "prior.npz")["counts"])
    before = FusionPredictor(
        predictor.sources, raw_model, prior, n_concepts=predictor.n_concepts,
        top_k=predictor.top_k, cooccurrence=predictor.cooccurrence,
    )  # fmt: skip
    expected = before.suggest(TEXTS)
    got = project.suggest(TEXTS)
    assert got.nnz > 0
    assert np.array_equal(got.indices, expected.indices)
    assert got.data.tobytes() == expected.data.tobytes()
    # The calibrated model (same weights) ranks alike.
    calibrated = open_project(workspace, "fusion").suggest(TEXTS)
    for i in range(len(TEXTS)):
        a, b = got[i], calibrated[i]
        assert a.indices[np.lexsort((a.indices, -a.data))].tolist() == (
            b.indices[np.lexsort((b.indices, -b.data))].tolist()
        )


def test_calibration_none_saves_no_file(workspace: Path) -> None:
    project = open_project(workspace, "fusion")
    params = {**project.config.params, "calibration": "none"}
    project.config = dataclasses.replace(project.config, params=params)
    project.train([workspace / "fusion.tsv"], device="cpu")
    version_dir, manifest = read_model(project.model_dir, "fusion", "fusion")
    assert not (version_dir / "calibration.npz").exists()
    assert manifest["training"]["calibration"]["method"] == "none"
    assert manifest["training"]["calibration"]["cross_validation"] == {}
    predictor = project.model
    assert isinstance(predictor, FusionPredictor) and predictor.calibration is None


def test_eval_prints_the_calibration_error(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from kuoro.cli import main

    capsys.readouterr()
    assert main(kuoro(workspace, "eval", "fusion", str(workspace / "fusion.tsv"), "-d", "50")) == 0
    lines = dict(line.split(":") for line in capsys.readouterr().out.splitlines())
    assert 0 <= float(lines["Expected calibration error"]) <= 1
