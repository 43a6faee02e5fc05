"""Explanations: a fusion model's value taken apart into terms that add up to it, for every
family and variant, members included, and the per-suggestion records built from them."""

from __future__ import annotations

import numpy as np
import pytest

from kuoro.fusion.candidates import Candidates, ConceptPrior
from kuoro.fusion.explain import explain_candidates, explanation_lines
from kuoro.fusion.numpy_model import NumpyFusion

from support.fusion_models import (
    MODELS,
    N_SOURCES,
    WEIGHTS,
    numpy_model,
    random_candidates,
    synthetic_candidates,
)

pytestmark = pytest.mark.usefixtures("torch_one_thread")

EXACT = 1e-6  # the acceptance: the parts add up to the value within this
NAMES = [f"source-{s}" for s in range(N_SOURCES)]
# The terms each family's value is made of.
TERMS = {
    "mean": ["weighted_mean"],
    "linear": ["sources", "concept_bias", "bias"],
    "kuoro": [
        "mean_logit",
        "calibration_scale",
        "calibration_shift",
        "feature_network",
        "concept_bias",
        "concept_trust",
    ],
}


@pytest.fixture(scope="module")
def synthetic() -> tuple[Candidates, ConceptPrior]:
    return synthetic_candidates()


@pytest.fixture(scope="module", params=["synthetic", "random"])
def candidates(
    request: pytest.FixtureRequest, synthetic: tuple[Candidates, ConceptPrior]
) -> Candidates:
    built, prior = synthetic
    return built if request.param == "synthetic" else random_candidates(prior)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(1 / (1 + np.exp(-x)))


@pytest.mark.parametrize("name", MODELS)
def test_the_parts_add_up_to_the_value_before_the_transform(
    name: str, candidates: Candidates
) -> None:
    model = numpy_model(name)
    family = name.split(",")[0]
    parts = model.explain(candidates)
    expected_terms = TERMS[family]
    if "no concept_sources" in name:
        expected_terms = [t for t in expected_terms if t != "concept_trust"]
    assert list(parts.terms) == expected_terms
    values = model.member_values(candidates)  # the forward pass itself, in float64
    m = len(candidates.concepts)
    assert values.shape == (model.n_members, m) and values.dtype == np.float64
    total = sum(parts.terms.values())
    # float64 throughout: far inside the acceptance (EXACT); 1e-9 catches a float32 step.
    np.testing.assert_allclose(total, values, rtol=0, atol=1e-9)
    # Every term is at work (none is all zeros), so the sum is a real test.
    for term, array in parts.terms.items():
        assert np.abs(array).max() > 1e-3, term

    # The score: each member's transform of its value, averaged over the members; that is
    # the model's served float32 score, to float32 rounding.
    served = model.predict_scores(candidates)
    member_scores = values if family == "mean" else sigmoid(values)
    np.testing.assert_allclose(member_scores.mean(axis=0), served, rtol=0, atol=1e-6)
    # And the float64 value is the served model's float32 one, to float32 rounding.
    if family != "mean":
        logits32 = model._family.logits(model._checked(candidates))
        np.testing.assert_allclose(values, logits32, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_source_weights_and_shares(name: str, candidates: Candidates) -> None:
    model = numpy_model(name)
    family = name.split(",")[0]
    parts = model.explain(candidates)
    scores = candidates.scores.astype(np.float64)
    if family == "mean":
        np.testing.assert_allclose(parts.weight[0, 0], np.array(WEIGHTS) / sum(WEIGHTS))
    if family in ("mean", "kuoro"):
        # weight · score, adding up to the weighted mean (kuoro's, before its logit).
        np.testing.assert_allclose(parts.share, parts.weight * scores, atol=1e-12)
        assert parts.weighted_mean is not None
        np.testing.assert_allclose(parts.share.sum(-1), parts.weighted_mean, atol=1e-12)
    if family == "kuoro":
        # A gate per document: the weights of a candidate's sources sum to 1, and a source
        # that said nothing for the document has none.
        np.testing.assert_allclose(parts.weight.sum(-1)[:, candidates.scores.any(-1)], 1, atol=1e-9)
        np.testing.assert_allclose(
            parts.terms["mean_logit"],
            np.log(
                np.clip(parts.weighted_mean, 1e-6, 1 - 1e-6)
                / (1 - np.clip(parts.weighted_mean, 1e-6, 1 - 1e-6))
            ),
            atol=1e-6,
        )
        if "top-" in name:
            k = int(name.split("top-")[1][0])
            assert ((parts.weight > 0).sum(-1) <= k).all()
        if parts.trust is not None:
            np.testing.assert_allclose(
                parts.trust.sum(-1), parts.terms["concept_trust"], atol=1e-12
            )
    if family == "linear":
        np.testing.assert_allclose(parts.share.sum(-1), parts.terms["sources"], atol=1e-12)


@pytest.mark.parametrize("name", ["mean", "linear", "kuoro, gate top-2", "kuoro, 4 members"])
def test_records_of_chosen_candidates(
    name: str, synthetic: tuple[Candidates, ConceptPrior]
) -> None:
    candidates, _ = synthetic
    model = numpy_model(name)
    served = model.predict_scores(candidates)
    rows = np.array([57, 3, 400, 57, len(candidates.concepts) - 1])  # any order, repeats
    records = explain_candidates(model, candidates, rows, served, NAMES)
    assert len(records) == len(rows)
    values = model.member_values(candidates)
    full = model.explain(candidates)
    names = list(full.terms)
    for record, row in zip(records, rows, strict=True):
        assert record["kind"] == "fusion" and record["family"] == name.split(",")[0]
        assert record["score"] == float(served[row])
        # Explained among a few, a candidate gets what it gets among all of them.
        assert record["value"] == pytest.approx(values[:, row].mean(), abs=1e-9)
        assert list(record["parts"]) == names
        assert sum(record["parts"].values()) == pytest.approx(record["value"], abs=EXACT)
        for source, sid in zip(record["sources"], range(N_SOURCES), strict=True):
            raw = candidates.scores[row, sid]
            assert source["source"] == NAMES[sid]
            if raw > 0:
                assert source["score"] == float(raw)
                assert source["rank"] >= 1
            else:
                assert source["score"] is None and source["rank"] is None
        if model.n_members > 1:
            members = record["members"]
            assert members is not None and len(members) == model.n_members
            for member in members:
                assert sum(member["parts"].values()) == pytest.approx(member["value"], abs=EXACT)
            # Averaged parts add up to the mean value; the score is the members' mean score.
            assert np.mean([m["value"] for m in members]) == pytest.approx(record["value"])
            assert np.mean([m["score"] for m in members]) == pytest.approx(
                record["score"], abs=1e-6
            )
            # ... which is not the transform of the mean value: the members differ.
            assert abs(sigmoid(np.array(record["value"])) - record["score"]) > 1e-6
        else:
            assert record["members"] is None
    assert records[0] == records[3]


def test_ranks_are_the_sources_own(synthetic: tuple[Candidates, ConceptPrior]) -> None:
    """A source's rank of a candidate: 1 + how many of its suggestions for the document it
    scored higher (ties: lower concept id first)."""
    candidates, _ = synthetic
    model = numpy_model("mean")
    served = model.predict_scores(candidates)
    document = 10
    start, end = candidates.doc_offsets[document], candidates.doc_offsets[document + 1]
    records = explain_candidates(model, candidates, np.arange(start, end), served, NAMES)
    for s in range(N_SOURCES):
        mine = [(r["sources"][s]["score"], r["sources"][s]["rank"]) for r in records]
        listed = sorted(
            ((score, rank) for score, rank in mine if score is not None), key=lambda x: x[1]
        )
        assert [rank for _, rank in listed] == list(range(1, len(listed) + 1))
        assert [score for score, _ in listed] == sorted((x for x, _ in listed), reverse=True)


def test_the_text_of_an_explanation(synthetic: tuple[Candidates, ConceptPrior]) -> None:
    candidates, _ = synthetic
    model = numpy_model("kuoro, 4 members")
    record = explain_candidates(model, candidates, [100], model.predict_scores(candidates), NAMES)[
        0
    ]
    lines = explanation_lines(record)
    text = "\n".join(lines)
    assert lines[0].split() == ["source", "score", "rank", "weight", "share", "trust"]
    for name in (*NAMES, *record["parts"], "averaged over 4 members"):
        assert name in text
    assert f"= {record['score']:.4f}" in lines[-1]
    assert "mean over the members of sigmoid" in lines[-1]


def test_no_candidates_nothing_to_explain(synthetic: tuple[Candidates, ConceptPrior]) -> None:
    candidates, _ = synthetic
    model: NumpyFusion = numpy_model("kuoro")
    assert explain_candidates(model, candidates, [], np.zeros(0, np.float32), NAMES) == []
