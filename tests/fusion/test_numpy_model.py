"""NumpyFusion: the torch fusion models' scores from plain numpy, saved and served without torch."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch import nn

from kuoro.errors import ModelError
from kuoro.fusion import numpy_model as numpy_model_module
from kuoro.fusion.candidates import Candidates, ConceptPrior, build_candidates, feature_names
from kuoro.fusion.cooccurrence import SubjectCooccurrence
from kuoro.fusion.export import export_arrays
from kuoro.fusion.members import MemberEnsemble
from kuoro.fusion.models import KuoroFusion, LinearFusion, MeanFusion
from kuoro.fusion.numpy_model import NumpyFusion
from kuoro.fusion.tensors import to_batch

from support.data import load_benchmark
from support.fusion_models import with_random_parameters

pytestmark = pytest.mark.usefixtures("torch_one_thread")

N_CONCEPTS = 3000
N_SOURCES = 4
N_FEATURES = len(feature_names(N_SOURCES))
WEIGHTS = [1.0, 2.0, 1.0, 1.5]
N_DOCS = 40
TOLERANCE = 1e-5


def silence(matrix: sp.csr_matrix, documents: list[int]) -> sp.csr_matrix:
    """The source's rows with nothing suggested for ``documents``."""
    keep = np.ones(matrix.shape[0], np.float32)
    keep[documents] = 0.0
    result = sp.csr_matrix(sp.diags(keep) @ matrix)
    result.eliminate_zeros()
    return result


@pytest.fixture(scope="module")
def candidates() -> Candidates:
    """40 synthetic documents with silent sources: source 0 says nothing for documents 0-5,
    only source 2 speaks for document 6, and documents 7 and 39 have no candidates at all."""
    synthetic = load_benchmark("synthetic")
    gold, sources = next(
        synthetic.generate(N_CONCEPTS, N_DOCS, chunk_size=N_DOCS, top_k=50, seed=7)
    )
    empty = [7, N_DOCS - 1]
    sources = [
        silence(sources[0], [0, 1, 2, 3, 4, 5, 6, *empty]),
        silence(sources[1], [6, *empty]),
        silence(sources[2], empty),
        silence(sources[3], [6, *empty]),
    ]
    counts = np.bincount(np.concatenate(gold), minlength=N_CONCEPTS)
    names = feature_names(N_SOURCES)
    # The co-occurrence columns are counted on the documents' own subjects.
    table = SubjectCooccurrence.from_subject_sets(gold, N_CONCEPTS)
    c = build_candidates(
        sources, None, ConceptPrior.from_counts(counts), top_k=50, cooccurrence=table
    )
    assert (c.features[:, names.index("implied")] > 0).mean() > 0.1
    # The cases the tests are about are really in the data.
    spoke = c.features[:, [names.index(f"s{s}_count") for s in range(N_SOURCES)]] > 0
    doc = c.documents()
    assert not spoke[doc < 6, 0].any() and spoke[doc < 6, 1:].all()
    assert (spoke[doc == 6] == [False, False, True, False]).all()
    assert np.diff(c.doc_offsets)[empty].tolist() == [0, 0]
    assert len(c.concepts) > 20 * N_DOCS
    return c


def kuoro(hidden_size: int = 16, dropout: float = 0.2, gate_top_k: int = 0) -> KuoroFusion:
    return KuoroFusion(
        N_CONCEPTS,
        N_SOURCES,
        N_FEATURES,
        source_weights=WEIGHTS,
        hidden_size=hidden_size,
        dropout=dropout,
        gate_top_k=gate_top_k,
    )


def linear() -> LinearFusion:
    return LinearFusion(N_CONCEPTS, WEIGHTS)


# name → (a fresh model, the scale of its random parameters); the linear family's output
# multiplies its logit by 20, so that smaller values keep its scores off 0 and 1.
MODELS: dict[str, tuple[Callable[[], nn.Module], float]] = {
    "mean": (lambda: MeanFusion(WEIGHTS), 0.0),
    "linear": (linear, 0.05),
    "linear, 3 members": (lambda: MemberEnsemble(lambda seed: linear(), 3), 0.05),
    "kuoro": (kuoro, 0.3),
    "kuoro, hidden 64, no dropout": (lambda: kuoro(hidden_size=64, dropout=0.0), 0.2),
    "kuoro, gate top-2": (lambda: kuoro(gate_top_k=2), 0.3),
    "kuoro, gate top-4 of 4": (lambda: kuoro(gate_top_k=4), 0.3),
    "kuoro, 5 members": (lambda: MemberEnsemble(lambda seed: kuoro(), 5), 0.3),
    "kuoro, 3 members, gate top-1": (
        lambda: MemberEnsemble(lambda seed: kuoro(gate_top_k=1), seeds=[4, 5, 6]),
        0.3,
    ),
}


def torch_scores(model: nn.Module, c: Candidates) -> np.ndarray:
    with torch.no_grad():
        scores: torch.Tensor = model.predict_scores(to_batch(c))  # type: ignore[operator]
    return scores.numpy()


@pytest.mark.parametrize("name", MODELS)
def test_numpy_scores_equal_the_torch_scores(name: str, candidates: Candidates) -> None:
    make, scale = MODELS[name]
    torch.manual_seed(0)  # the layers' own initialisation, whatever ran before
    model = with_random_parameters(make(), scale)
    expected = torch_scores(model, candidates)
    # A comparison of scores all near 0 or 1 would say little about the logits.
    assert expected.std() > 0.05 and ((expected > 0.02) & (expected < 0.98)).mean() > 0.25

    numpy_model = NumpyFusion.from_arrays(export_arrays(model))
    scores = numpy_model.predict_scores(candidates)
    assert scores.dtype == np.float32 and scores.shape == expected.shape
    assert ((scores >= 0) & (scores <= 1)).all()
    np.testing.assert_allclose(scores, expected, rtol=0, atol=TOLERANCE)

    members = getattr(model, "n_members", 1)
    assert numpy_model.n_members == members and numpy_model.n_sources == N_SOURCES
    assert numpy_model.family == name.split(",")[0]
    assert numpy_model.n_concepts == (None if name == "mean" else N_CONCEPTS)
    if isinstance(model, MemberEnsemble):
        with torch.no_grad():
            each = model.member_scores(to_batch(candidates)).numpy()
        member_scores = numpy_model.member_scores(candidates)
        np.testing.assert_allclose(member_scores, each, rtol=0, atol=TOLERANCE)
        # The members differ, so averaging scores (not logits) is what is compared here.
        assert np.abs(each[0] - each[1]).max() > 0.05


def test_silent_sources_and_the_top_k_gate_give_the_torch_scores(
    candidates: Candidates,
) -> None:
    model = with_random_parameters(kuoro(gate_top_k=2), 0.3)
    batch = to_batch(candidates)
    with torch.no_grad():
        gate = model.gate_weights(batch).numpy()
    # The paths under test are taken: silent sources get no gate, at most two sources do,
    # and the lone speaker of document 6 gets all of it.
    assert (gate[:6, 0] == 0).all()
    assert ((gate > 0).sum(-1) <= 2).all() and ((gate > 0).sum(-1) == 2).mean() > 0.9
    np.testing.assert_allclose(gate[6], [0, 0, 1, 0])
    expected = torch_scores(model, candidates)
    scores = NumpyFusion.from_arrays(export_arrays(model)).predict_scores(candidates)
    silent_docs = slice(0, int(candidates.doc_offsets[7]))
    np.testing.assert_allclose(scores[silent_docs], expected[silent_docs], rtol=0, atol=TOLERANCE)


def test_large_batches_run_the_mlp_in_blocks_with_the_same_scores(
    candidates: Candidates, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = with_random_parameters(MemberEnsemble(lambda seed: kuoro(), 2), 0.3)
    numpy_model = NumpyFusion.from_arrays(export_arrays(model))
    whole = numpy_model.predict_scores(candidates)
    # 2 members × 16 hidden units × 100 rows: blocks of 100 candidates, the last one partial.
    monkeypatch.setattr(numpy_model_module, "MLP_BLOCK", 2 * 16 * 100)
    assert len(candidates.concepts) % 100 != 0
    blocked = numpy_model.predict_scores(candidates)
    np.testing.assert_allclose(blocked, whole, rtol=0, atol=1e-6)
    np.testing.assert_allclose(blocked, torch_scores(model, candidates), rtol=0, atol=TOLERANCE)


def test_no_candidates_no_scores(candidates: Candidates) -> None:
    model = NumpyFusion.from_arrays(export_arrays(with_random_parameters(kuoro(), 0.3)))
    empty = Candidates(
        np.zeros(3, np.int64),
        np.zeros(0, np.int32),
        np.zeros((0, N_SOURCES), np.float32),
        np.zeros((0, N_FEATURES), np.float32),
        None,
    )
    assert model.predict_scores(empty).shape == (0,)
    assert model.member_scores(empty).shape == (1, 0)


def test_candidates_that_do_not_fit_the_model_are_refused(candidates: Candidates) -> None:
    model = NumpyFusion.from_arrays(export_arrays(with_random_parameters(kuoro(), 0.3)))
    three = build_candidates(
        [sp.csr_matrix(np.eye(2, N_CONCEPTS, dtype=np.float32))] * 3, None, top_k=5
    )
    with pytest.raises(ModelError, match="trained on 4 sources, the candidates come from 3"):
        model.predict_scores(three)
    beyond = Candidates(
        candidates.doc_offsets,
        candidates.concepts + N_CONCEPTS // 2,
        candidates.scores,
        candidates.features,
        None,
    )
    with pytest.raises(ModelError, match=f"trained with {N_CONCEPTS} concepts"):
        model.predict_scores(beyond)


def test_save_and_load_give_the_same_model(candidates: Candidates, tmp_path: Path) -> None:
    model = with_random_parameters(MemberEnsemble(lambda seed: kuoro(gate_top_k=3), 2), 0.3)
    arrays = export_arrays(model)
    path = tmp_path / "fusion.npz"
    NumpyFusion.from_arrays(arrays).save(path)
    NumpyFusion.from_arrays(arrays).save(path)  # replaces the file, leaves no temporary one
    assert list(tmp_path.iterdir()) == [path]

    loaded = NumpyFusion.load(path)
    assert loaded.to_arrays().keys() == arrays.keys()
    for key, value in loaded.to_arrays().items():
        np.testing.assert_array_equal(value, arrays[key], err_msg=key)
    expected = torch_scores(model, candidates)
    np.testing.assert_allclose(loaded.predict_scores(candidates), expected, atol=TOLERANCE)
    # Self-describing: the metadata is readable without Kuoro.
    with np.load(path, allow_pickle=False) as npz:
        assert str(npz["family"]) == "kuoro" and int(npz["n_members"]) == 2
        assert int(npz["gate_top_k"]) == 3
        assert list(npz["feature_names"]) == list(feature_names(N_SOURCES))


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    path = tmp_path / "fusion.npz"
    NumpyFusion.from_arrays(export_arrays(with_random_parameters(kuoro(), 0.3))).save(path)
    return path


def test_a_truncated_file_is_refused(saved: Path) -> None:
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match=r"fusion\.npz: damaged fusion model file"):
        NumpyFusion.load(saved)


def test_a_changed_byte_is_refused(saved: Path) -> None:
    data = bytearray(saved.read_bytes())
    # Inside the per-concept table, the largest array: the zip's checksum catches it.
    at = data.index(b"concept_bias.npy") + 2000
    data[at] ^= 0x55
    saved.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"damaged fusion model file .*CRC"):
        NumpyFusion.load(saved)


def test_files_that_are_no_model_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no fusion model file there"):
        NumpyFusion.load(tmp_path / "missing.npz")
    text = tmp_path / "text.npz"
    text.write_text("not a model\n")
    with pytest.raises(ModelError, match="damaged fusion model file"):
        NumpyFusion.load(text)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, format=np.array([{"format": "kuoro-fusion-numpy"}], dtype=object))
    with pytest.raises(ModelError, match=r"damaged fusion model file .*pickle"):
        NumpyFusion.load(pickled)
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    with pytest.raises(ModelError, match=r"one array, not a \.npz"):
        NumpyFusion.load(single)
    other = tmp_path / "other.npz"
    np.savez(other, weights=np.zeros(3))
    with pytest.raises(ModelError, match="not a kuoro-fusion-numpy model"):
        NumpyFusion.load(other)


def changed(arrays: dict[str, np.ndarray], key: str, value: np.ndarray | None) -> None:
    if value is None:
        del arrays[key]
    else:
        arrays[key] = value


# (key, new value or None to remove it, the message expected)
DAMAGE: dict[str, tuple[str, np.ndarray | None, str]] = {
    "missing array": ("shift", None, "the array 'shift' is missing"),
    "wrong shape": (
        "gate_columns",
        np.arange(11),
        r"'gate_columns' has shape \(11,\), expected \(gate inputs=12\) "
        "to agree with 'gate_weight'",
    ),
    "wrong member count": (
        "log_scale",
        np.zeros(2, np.float32),
        r"expected \(members=1\) to agree with 'n_members'",
    ),
    "wrong rank": ("shift", np.zeros((1, 1), np.float32), r"\(1, 1\), expected \(members=1\)"),
    "integers for floats": ("shift", np.zeros(1, np.int64), "'shift' holds int64"),
    "not finite": ("concept_bias", np.full((1, N_CONCEPTS), np.nan, np.float32), "NaN"),
    "column out of range": ("gate_columns", np.arange(12) * 10, rf"outside \[0, {N_FEATURES}\)"),
    "top-k above the sources": ("gate_top_k", np.asarray(5), r"gate_top_k = 5, outside \[0, 4\]"),
    "newer format": ("format_version", np.asarray(2), "format version 2, .* reads version 1"),
    "unknown family": ("family", np.asarray("forest"), "unknown family 'forest'"),
    "unknown array": ("concept_embedding", np.zeros((1, 3), np.float32), "unknown arrays"),
    "other features": (
        "feature_names",
        np.asarray([*feature_names(N_SOURCES)[:-1], "s0_idf"]),
        "other feature columns .*differing: s0_idf",
    ),
}


@pytest.mark.parametrize("case", DAMAGE)
def test_damaged_arrays_are_refused_with_a_clear_message(case: str) -> None:
    arrays = export_arrays(with_random_parameters(kuoro(), 0.3))
    NumpyFusion.from_arrays(arrays)  # intact, they load
    key, value, message = DAMAGE[case]
    changed(arrays, key, value)
    with pytest.raises(ModelError, match="^damaged or incompatible fusion model: .*" + message):
        NumpyFusion.from_arrays(arrays)


def test_export_refuses_tensors_it_does_not_know() -> None:
    model = kuoro()
    model.concept_embedding = nn.Embedding(N_CONCEPTS, 8)
    with pytest.raises(ValueError, match=r"KuoroFusion tensors concept_embedding\.weight"):
        export_arrays(model)
    with pytest.raises(TypeError, match="cannot export a Linear"):
        export_arrays(nn.Linear(3, 1))


NO_TORCH = """
import sys
from pathlib import Path

import numpy as np

from kuoro.fusion.candidates import Candidates
from kuoro.fusion.numpy_model import NumpyFusion

model = NumpyFusion.load(Path(sys.argv[1]))
with np.load(sys.argv[2], allow_pickle=False) as c:
    candidates = Candidates(c["doc_offsets"], c["concepts"], c["scores"], c["features"], None)
np.save(sys.argv[3], model.predict_scores(candidates))
assert "torch" not in sys.modules, "torch was imported"
"""


@pytest.mark.integration
def test_a_saved_model_predicts_without_importing_torch(
    candidates: Candidates, tmp_path: Path
) -> None:
    model = with_random_parameters(MemberEnsemble(lambda seed: kuoro(gate_top_k=2), 2), 0.3)
    NumpyFusion.from_arrays(export_arrays(model)).save(tmp_path / "fusion.npz")
    np.savez(
        tmp_path / "candidates.npz",
        doc_offsets=candidates.doc_offsets,
        concepts=candidates.concepts,
        scores=candidates.scores,
        features=candidates.features,
    )
    args = [str(tmp_path / name) for name in ("fusion.npz", "candidates.npz", "scores.npy")]
    done = subprocess.run(
        [sys.executable, "-c", NO_TORCH, *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    scores = np.load(tmp_path / "scores.npy", allow_pickle=False)
    np.testing.assert_allclose(scores, torch_scores(model, candidates), rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("gate_top_k", [1, 2])
def test_an_untrained_top_k_gate_breaks_ties_as_the_numpy_model_does(
    candidates: Candidates, gate_top_k: int
) -> None:
    # Equal source weights and a zero gate: every gate logit ties, as until the gate learns.
    model = KuoroFusion(
        N_CONCEPTS, N_SOURCES, N_FEATURES, source_weights=[1.0] * N_SOURCES, gate_top_k=gate_top_k
    ).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if not name.startswith("gate"):
                parameter.add_(0.3 * torch.randn_like(parameter))
        gate = model.gate_weights(to_batch(candidates)).numpy()
    exported = NumpyFusion.from_arrays(export_arrays(model))
    numpy_gate = exported._family.gate_weights(candidates)  # type: ignore[attr-defined]
    np.testing.assert_allclose(numpy_gate[0], gate, rtol=0, atol=TOLERANCE)
    scores = exported.predict_scores(candidates)
    np.testing.assert_allclose(scores, torch_scores(model, candidates), rtol=0, atol=TOLERANCE)


def test_a_model_saved_before_the_co_occurrence_columns_reads_its_own_columns(
    candidates: Candidates, tmp_path: Path
) -> None:
    """A model trained before a feature column existed is served from today's candidates:
    its columns are taken by name (here: the three co-occurrence columns it never read)."""
    torch.manual_seed(0)
    model = with_random_parameters(kuoro(), 0.3)
    arrays = export_arrays(model)
    names = list(feature_names(N_SOURCES))
    new = [names.index(n) for n in ("implied", "implied_lift", "corpus_prior")]
    # Today's model with no weight on the new columns predicts what the old one did.
    arrays["mlp_weight_0"][:, :, new] = 0
    expected = NumpyFusion.from_arrays(arrays).predict_scores(candidates)
    old = dict(arrays)
    keep = [i for i in range(len(names)) if i not in new]
    old["feature_names"] = np.asarray([names[i] for i in keep])
    old["mlp_weight_0"] = arrays["mlp_weight_0"][:, :, [*keep, len(names)]]  # + the mean
    NumpyFusion.from_arrays(old).save(tmp_path / "old.npz")
    loaded = NumpyFusion.load(tmp_path / "old.npz")
    assert loaded._family.n_features == len(names) - 3
    np.testing.assert_allclose(loaded.predict_scores(candidates), expected, atol=1e-6)
    # Columns it cannot find today are an error, not a silent misreading.
    renamed = dict(old, feature_names=np.asarray(["unknown", *old["feature_names"][1:]]))
    with pytest.raises(ModelError, match=r"other feature columns .*differing: unknown"):
        NumpyFusion.from_arrays(renamed)
