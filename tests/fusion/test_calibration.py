"""Calibrations: probabilities in [0, 1] that rank like the raw scores, chosen by measurement,
stored without pickle."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kuoro.config.backends import BACKENDS
from kuoro.errors import ModelError
from kuoro.fusion.calibration import (
    CHOICES,
    IDENTITY,
    METHODS,
    Calibration,
    calibrate_candidates,
    choose_calibration,
    fit_calibration,
    log_loss,
)
from kuoro.util.reliability import expected_calibration_error


def overconfident(n_documents: int = 300, per_document: int = 20, seed: int = 0) -> tuple[
    np.ndarray, np.ndarray, np.ndarray
]:  # fmt: skip
    """Scores whose true probability of being correct is score³ (far from the score)."""
    rng = np.random.default_rng(seed)
    documents = np.repeat(np.arange(n_documents), per_document)
    scores = rng.uniform(0.001, 1, size=len(documents)).astype(np.float32)
    labels = (rng.uniform(size=len(documents)) < scores.astype(np.float64) ** 3).astype(float)
    return scores, labels, documents


@pytest.mark.parametrize("method", METHODS)
def test_each_method_is_strictly_increasing_within_zero_and_one(method: str) -> None:
    scores, labels, _ = overconfident()
    calibration = fit_calibration(method, scores, labels)
    grid = np.linspace(0, 1, 10001)
    out = calibration(grid)
    assert out[0] == 0.0  # no suggestion stays none
    assert np.all(out[1:] > 0) and np.all(out <= 1)
    assert np.all(np.diff(out) > 0), method


@pytest.mark.parametrize("method", METHODS)
def test_calibrated_candidates_rank_each_document_as_before(method: str) -> None:
    scores, labels, documents = overconfident()
    calibration = fit_calibration(method, scores, labels)
    # Add scores one float32 ulp apart and exact ties, where float32 rounding could tie them.
    close = np.nextafter(np.float32(0.9731), np.float32(1), dtype=np.float32)
    extra = np.array([0.9731, close, close, 0.00012, 0.00012], np.float32)
    scores = np.concatenate([scores, extra])
    documents = np.concatenate([documents, np.full(len(extra), documents.max() + 1)])
    out = calibrate_candidates(calibration, documents, scores)
    assert out.dtype == np.float32 and np.all((out > 0) & (out <= 1))
    for document in np.unique(documents):
        at = documents == document
        before = np.lexsort((np.arange(at.sum()), -scores[at]))
        after = np.lexsort((np.arange(at.sum()), -out[at]))
        assert before.tolist() == after.tolist(), document
        # Ties stay ties and nothing else becomes one.
        assert len(np.unique(scores[at])) == len(np.unique(out[at]))


def test_a_forced_tie_is_set_apart() -> None:
    # A calibration so flat there that float32 cannot tell 0.95 from the next float32.
    flat = Calibration("isotonic", knots_x=np.array([0.1, 0.5]), knots_y=np.array([0.2, 0.6]))
    raw = np.array([0.95, np.nextafter(np.float32(0.95), np.float32(0)), 0.3], np.float32)
    rounded = flat(raw.astype(np.float64)).astype(np.float32)
    assert rounded[0] == rounded[1]  # float32 cannot tell them apart once calibrated
    out = calibrate_candidates(flat, np.zeros(3, np.int64), raw)
    assert out[0] > out[1] > out[2] > 0


def test_auto_chooses_a_method_that_corrects_overconfidence() -> None:
    scores, labels, documents = overconfident()
    choice = choose_calibration(scores, labels, documents)
    assert choice.calibration.method in METHODS
    assert set(choice.scores) == {"none", *METHODS}
    best = min(choice.scores, key=lambda m: choice.scores[m]["log_loss"])
    assert choice.calibration.method == best
    assert choice.scores[best]["log_loss"] < choice.scores["none"]["log_loss"]
    # On fresh documents it is better calibrated than the raw scores by far.
    fresh, fresh_labels, _ = overconfident(seed=1)
    raw_ece = expected_calibration_error(fresh, fresh_labels)
    calibrated = choice.calibration(fresh)
    assert expected_calibration_error(calibrated, fresh_labels) < raw_ece / 3
    assert log_loss(calibrated, fresh_labels) < log_loss(fresh, fresh_labels)
    summary = choice.summary()
    assert summary["method"] == best and summary["held_out"]["documents"] == 300


def test_already_calibrated_scores_gain_little() -> None:
    rng = np.random.default_rng(3)
    scores = rng.uniform(0.01, 1, size=6000)
    labels = (rng.uniform(size=6000) < scores).astype(float)
    choice = choose_calibration(scores, labels, np.repeat(np.arange(300), 20))
    losses = [values["log_loss"] for values in choice.scores.values()]
    assert choice.scores["none"]["log_loss"] - min(losses) < 0.01


def test_asked_method_and_none() -> None:
    scores, labels, documents = overconfident()
    assert choose_calibration(scores, labels, documents, requested="platt").calibration.method == (
        "platt"
    )
    none = choose_calibration(scores, labels, documents, requested="none")
    assert none.calibration is IDENTITY and none.scores == {}
    with pytest.raises(ValueError, match="unknown calibration"):
        choose_calibration(scores, labels, documents, requested="beta")


def test_too_few_held_out_points_give_no_calibration() -> None:
    scores, labels, documents = overconfident(n_documents=10)
    choice = choose_calibration(scores, labels, documents)
    assert choice.calibration.method == "none"
    assert "too few held-out points" in choice.reason


@pytest.mark.parametrize("method", METHODS)
def test_saved_and_loaded_without_pickle(tmp_path: Path, method: str) -> None:
    scores, labels, _ = overconfident()
    calibration = fit_calibration(method, scores, labels)
    path = tmp_path / "calibration.npz"
    calibration.save(path)
    loaded = Calibration.load(path)
    grid = np.linspace(0, 1, 1001)
    assert np.array_equal(loaded(grid), calibration(grid))
    with np.load(path, allow_pickle=False) as npz:  # plain arrays only
        assert str(npz["method"]) == method


def test_damaged_or_foreign_files_are_model_errors(tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.npz"
    damaged.write_bytes(b"not a zip file")
    with pytest.raises(ModelError, match="damaged calibration file"):
        Calibration.load(damaged)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, format=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ModelError, match="damaged calibration file"):
        Calibration.load(pickled)
    with pytest.raises(ModelError, match="no calibration file"):
        Calibration.load(tmp_path / "absent.npz")
    with pytest.raises(ValueError, match="strictly increasing"):
        Calibration("isotonic", knots_x=np.array([0.1, 0.1]), knots_y=np.array([0.2, 0.3]))


def test_the_catalogue_offers_every_choice() -> None:
    for backend in ("mean", "linear", "kuoro"):
        spec = BACKENDS[backend].params["calibration"]
        assert spec.choices == CHOICES and spec.default == "auto"


SERVING = """
import sys
from pathlib import Path

import numpy as np

from kuoro.fusion.calibration import Calibration, calibrate_candidates
import kuoro.fusion.predictor  # noqa: F401  (what serving imports)

calibration = Calibration.load(Path(sys.argv[1]))
raw = np.array([0.2, 0.5, 0.9], np.float32)
out = calibrate_candidates(calibration, np.zeros(3, np.int64), raw)
assert np.all(np.diff(out) > 0)
assert "torch" not in sys.modules, "torch was imported"
assert "scipy.optimize" not in sys.modules, "scipy.optimize was imported"
"""


def test_serving_a_calibration_imports_neither_torch_nor_the_optimizer(tmp_path: Path) -> None:
    scores, labels, _ = overconfident()
    fit_calibration("platt", scores, labels).save(tmp_path / "calibration.npz")
    done = subprocess.run(
        [sys.executable, "-c", SERVING, str(tmp_path / "calibration.npz")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert done.returncode == 0, done.stderr
