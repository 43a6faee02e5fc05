"""The ONNX export: onnxruntime scores candidates as the numpy model does, for every family and
variant, members included, on candidates built from sources and on random ones."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from kuoro.fusion import onnx_export
from kuoro.fusion.candidates import Candidates, ConceptPrior, feature_names
from kuoro.fusion.export import export_arrays
from kuoro.fusion.numpy_model import NumpyFusion
from kuoro.fusion.onnx_export import IR_VERSION, OPSET, onnx_model, write_onnx

from support.fusion_models import (
    MODELS,
    N_CONCEPTS,
    N_SOURCES,
    kuoro,
    numpy_model,
    random_candidates,
    synthetic_candidates,
)

pytestmark = pytest.mark.usefixtures("torch_one_thread")

TOLERANCE = 1e-5
PRIOR_COLUMN = feature_names(N_SOURCES).index("prior")


@pytest.fixture(scope="module")
def synthetic() -> tuple[Candidates, ConceptPrior]:
    return synthetic_candidates()


@pytest.fixture(scope="module", params=["synthetic", "random"])
def candidates(
    request: pytest.FixtureRequest, synthetic: tuple[Candidates, ConceptPrior]
) -> Candidates:
    built, prior = synthetic
    return built if request.param == "synthetic" else random_candidates(prior, seed=3)


def prior_table(synthetic: tuple[Candidates, ConceptPrior]) -> np.ndarray:
    return synthetic[1].feature(np.arange(N_CONCEPTS))


def session(proto: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


def run(sess: ort.InferenceSession, c: Candidates) -> tuple[np.ndarray, np.ndarray]:
    feed = {"features": c.features, "concepts": c.concepts.astype(np.int64)}
    scores, members = sess.run(["scores", "member_scores"], feed)
    return scores, members


@pytest.mark.parametrize("name", MODELS)
def test_onnxruntime_scores_as_the_numpy_model(
    name: str, candidates: Candidates, synthetic: tuple[Candidates, ConceptPrior]
) -> None:
    model = numpy_model(name)
    expected = model.predict_scores(candidates)
    # Scores spread over (0, 1): a comparison of saturated ones would say little.
    assert expected.std() > 0.02
    scores, members = run(session(onnx_model(model, prior=prior_table(synthetic))), candidates)
    assert scores.dtype == np.float32 and scores.shape == expected.shape
    np.testing.assert_allclose(scores, expected, rtol=0, atol=TOLERANCE)
    assert members.shape == (model.n_members, len(expected))
    np.testing.assert_allclose(members, model.member_scores(candidates), rtol=0, atol=TOLERANCE)


def test_the_max_difference_is_float32_rounding(
    candidates: Candidates, synthetic: tuple[Candidates, ConceptPrior]
) -> None:
    worst = 0.0
    for name in MODELS:
        model = numpy_model(name, seed=1)
        scores, _ = run(session(onnx_model(model, prior=prior_table(synthetic))), candidates)
        worst = max(worst, float(np.abs(scores - model.predict_scores(candidates)).max()))
    assert worst < 1e-6


@pytest.mark.parametrize("top_k", [1, 2, 3])
def test_an_untrained_top_k_gate_breaks_ties_as_the_numpy_model(
    top_k: int, synthetic: tuple[Candidates, ConceptPrior]
) -> None:
    """Untrained, every gate logit of a document ties: both keep the lowest sources."""
    candidates, _ = synthetic
    model = NumpyFusion.from_arrays(export_arrays(kuoro(gate_top_k=top_k).eval()))
    scores, _ = run(session(onnx_model(model, prior=prior_table(synthetic))), candidates)
    np.testing.assert_allclose(scores, model.predict_scores(candidates), rtol=0, atol=TOLERANCE)


def test_the_prior_column_comes_from_the_model_unless_none_is_given(
    synthetic: tuple[Candidates, ConceptPrior],
) -> None:
    candidates, _ = synthetic
    model = numpy_model("kuoro")
    expected = model.predict_scores(candidates)
    features = candidates.features.copy()
    features[:, PRIOR_COLUMN] = 0.0
    zeroed = Candidates(
        candidates.doc_offsets, candidates.concepts, candidates.scores, features, None
    )
    filled, _ = run(session(onnx_model(model, prior=prior_table(synthetic))), zeroed)
    np.testing.assert_allclose(filled, expected, rtol=0, atol=TOLERANCE)
    # Without a prior the graph reads the column, as the numpy model does.
    read = session(onnx_model(model))
    np.testing.assert_allclose(run(read, candidates)[0], expected, rtol=0, atol=TOLERANCE)
    as_given, _ = run(read, zeroed)
    np.testing.assert_allclose(as_given, model.predict_scores(zeroed), rtol=0, atol=TOLERANCE)
    assert np.abs(as_given - expected).max() > 1e-3  # the column matters to this model


def test_no_candidates_no_scores(synthetic: tuple[Candidates, ConceptPrior]) -> None:
    empty = Candidates(
        np.zeros(3, np.int64),
        np.zeros(0, np.int32),
        np.zeros((0, N_SOURCES), np.float32),
        np.zeros((0, len(feature_names(N_SOURCES))), np.float32),
        None,
    )
    for name in ("mean", "linear", "kuoro, gate top-2", "kuoro, 4 members"):
        model = numpy_model(name)
        scores, members = run(session(onnx_model(model, prior=prior_table(synthetic))), empty)
        assert scores.shape == (0,) and members.shape == (model.n_members, 0)


def test_the_file_describes_itself(
    tmp_path: Path, synthetic: tuple[Candidates, ConceptPrior]
) -> None:
    model = numpy_model("kuoro, 4 members")
    path = tmp_path / "model.onnx"
    write_onnx(onnx_model(model, prior=prior_table(synthetic), metadata={"project": "p"}), path)
    proto = onnx.load(str(path))
    assert proto.ir_version == IR_VERSION
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", OPSET)]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["family"] == "kuoro" and meta["members"] == "4" and meta["project"] == "p"
    assert meta["n_concepts"] == str(N_CONCEPTS) and meta["prior_column"] == "ignored"
    assert json.loads(meta["feature_names"]) == list(feature_names(N_SOURCES))
    inputs = {i.name: i.type.tensor_type for i in proto.graph.input}
    assert set(inputs) == {"features", "concepts"}
    assert inputs["features"].elem_type == onnx.TensorProto.FLOAT
    assert inputs["concepts"].elem_type == onnx.TensorProto.INT64
    assert [o.name for o in proto.graph.output] == ["scores", "member_scores"]
    assert "features" in proto.doc_string and "member_scores" in proto.doc_string


def test_a_model_over_the_protobuf_limit_keeps_its_arrays_beside(
    tmp_path: Path,
    synthetic: tuple[Candidates, ConceptPrior],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    candidates, _ = synthetic
    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_BYTES", 10_000)
    model = numpy_model("linear, 3 members")
    path = tmp_path / "big.onnx"
    write_onnx(onnx_model(model), path)
    assert (tmp_path / "big.onnx.data").stat().st_size > path.stat().st_size
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    scores, _ = run(sess, candidates)
    np.testing.assert_allclose(scores, model.predict_scores(candidates), rtol=0, atol=TOLERANCE)


def test_building_the_graph_needs_no_torch() -> None:
    code = (
        "import sys, numpy as np\n"
        "from kuoro.fusion.numpy_model import NumpyFusion\n"
        "from kuoro.fusion.onnx_export import onnx_model\n"
        "arrays = {'format': np.asarray('kuoro-fusion-numpy'), 'format_version': np.asarray(1),"
        " 'family': np.asarray('mean'), 'n_members': np.asarray(1),"
        " 'weights': np.full((1, 2), 0.5, np.float32)}\n"
        "onnx_model(NumpyFusion.from_arrays(arrays))\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
