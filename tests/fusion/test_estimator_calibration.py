"""``kuoro.Fusion`` calibrates on its held-out documents, and saves and loads the calibration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import kuoro
from kuoro.fusion.calibration import calibrate_candidates
from kuoro.fusion.candidates import build_candidates

from support.data import SHARED_DATA, requires_shared_data

pytestmark = [requires_shared_data, pytest.mark.usefixtures("torch_one_thread")]
TEXTS = ["Kivikauden asuinpaikan kaivaukset", "rautakauden hautalöydöt", "linnavuoret"]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, list[Any]]:
    data = SHARED_DATA / "archaeology"
    vocab = kuoro.read_vocabulary(data / "yso-archaeology.ttl", language="fi")
    documents = list(kuoro.read_corpus(data / "documents.tsv", vocab))
    stem = kuoro.TfidfSource(vocab, kuoro.make_analyzer("snowball", "finnish"), min_df=1)
    words = kuoro.TfidfSource(vocab, kuoro.make_analyzer("simple"), ngram_max=2)
    sources = [source.fit(documents[2000:]) for source in (stem, words)]
    fusion = kuoro.Fusion(sources, max_epochs=2, hidden_size=8).fit(
        documents[:1200],
        store=tmp_path_factory.mktemp("estimator") / "train.store",
        validation_documents=documents[1200:1500],
    )
    return fusion, sources


def test_calibrated_on_the_validation_documents(fitted: Any) -> None:
    fusion, _ = fitted
    choice = fusion.calibration_
    assert 250 <= choice.documents <= 300  # the 300 held out, less any without candidates
    assert choice.calibration.method == min(
        choice.scores, key=lambda m: choice.scores[m]["log_loss"]
    )
    # Its suggestions are the model's scores, calibrated.
    predictor = fusion._predictor
    rows = predictor.source_rows(TEXTS)
    candidates = build_candidates(rows, None, predictor.prior, top_k=predictor.top_k)
    raw = fusion.numpy_model_.predict_scores(candidates)
    if choice.calibration.method != "none":
        expected = calibrate_candidates(choice.calibration, candidates.documents(), raw)
        assert np.allclose(predictor.candidate_scores(candidates), expected)


def test_saved_and_loaded_with_its_calibration(fitted: Any, tmp_path: Path) -> None:
    fusion, sources = fitted
    fusion.save(tmp_path / "model")
    has_file = (tmp_path / "model" / "calibration.npz").is_file()
    assert has_file == (fusion.calibration_.calibration.method != "none")
    loaded = kuoro.Fusion.load(tmp_path / "model", sources)
    assert (loaded.suggest(TEXTS) != fusion.suggest(TEXTS)).nnz == 0
    # A model saved before calibration existed: the raw scores.
    (tmp_path / "model" / "calibration.npz").unlink(missing_ok=True)
    raw = kuoro.Fusion.load(tmp_path / "model", sources)
    assert raw._predictor.calibration is None
    assert raw.suggest(TEXTS).nnz == fusion.suggest(TEXTS).nnz
