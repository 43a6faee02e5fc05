"""``kuoro suggest --explain`` and ``kuoro export --onnx`` on trained archaeology projects of
every fusion family: the explanations add up, and onnxruntime scores real candidates as the
numpy model does."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from kuoro.cli import main
from kuoro.fusion.candidates import Candidates, build_candidates, feature_names
from kuoro.fusion.onnx_export import INPUT_LAYOUT
from kuoro.fusion.predictor import FusionPredictor
from kuoro.project.explaining import suggest_explained

from support.data import requires_shared_data
from support.workspace import ARCH, FUSION_DOCS, kuoro, make_workspace, open_project

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
min_df = 2
top_k = 20

[fusion-kuoro]
language = "fi"
vocab = "arch"
backend = "kuoro"
sources = "tfidf-stem:2,tfidf-words"
max_epochs = 2
hidden_size = 8
batch_size = 128
members = 2

[fusion-top1]
language = "fi"
vocab = "arch"
backend = "kuoro"
sources = "tfidf-stem,tfidf-words"
max_epochs = 1
hidden_size = 8
gate_top_k = 1
concept_sources = false

[fusion-linear]
language = "fi"
vocab = "arch"
backend = "linear"
sources = "tfidf-stem,tfidf-words"
max_epochs = 1

[fusion-mean]
language = "fi"
vocab = "arch"
backend = "mean"
sources = "tfidf-stem,tfidf-words"

[fusion-untrained]
language = "fi"
vocab = "arch"
backend = "kuoro"
sources = "tfidf-stem,tfidf-words"
"""
FUSION = ["fusion-kuoro", "fusion-top1", "fusion-linear", "fusion-mean"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("explain")
    return make_workspace(work, PROJECTS, sources=("tfidf-stem", "tfidf-words"), fusion=FUSION)


@pytest.fixture(scope="module")
def texts() -> list[str]:
    lines = (ARCH / "documents.tsv").read_text(encoding="utf-8").splitlines()
    return [line.split("\t")[0] for line in lines[FUSION_DOCS + 20 : FUSION_DOCS + 60]]


def run(work: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(kuoro(work, *args))
    out, err = capsys.readouterr()
    return code, out, err


# -- explanations -----------------------------------------------------------------------------


@pytest.mark.parametrize("project_id", FUSION)
def test_explained_rows_are_the_served_rows_and_their_parts_add_up(
    workspace: Path, texts: list[str], project_id: str
) -> None:
    project = open_project(workspace, project_id)
    rows, explainer = suggest_explained(project, texts)
    served = project.suggest(texts)
    assert (rows != served).nnz == 0 and rows.nnz > 10 * len(texts)
    family = project.config.backend
    calibration = project.model.calibration
    for i in range(len(texts)):
        row = rows[i]
        records = explainer.explain(i, row.indices.tolist())
        for record, served_score in zip(records, row.data, strict=True):
            assert record is not None and record["kind"] == "fusion"
            assert record["family"] == family and record["score"] == float(served_score)
            # The parts explain the model's own score; the served one is that, calibrated.
            score = record["model_score"]
            if calibration is None:
                assert score == pytest.approx(served_score, abs=1e-6)
            else:
                calibrated = calibration(np.float32([score]))[0]
                assert calibrated == pytest.approx(served_score, abs=1e-5)
            assert sum(record["parts"].values()) == pytest.approx(record["value"], abs=1e-6)
            if record["members"]:
                mean = np.mean([m["score"] for m in record["members"]])
                assert mean == pytest.approx(score, abs=1e-6)
                for member in record["members"]:
                    assert sum(member["parts"].values()) == pytest.approx(member["value"], abs=1e-6)
            elif family == "mean":
                assert record["value"] == pytest.approx(score, abs=1e-6)
            else:
                assert 1 / (1 + np.exp(-record["value"])) == pytest.approx(score, abs=1e-6)
            spoke = [s for s in record["sources"] if s["score"] is not None]
            assert spoke and all(s["rank"] >= 1 for s in spoke)
    # A concept that is no suggestion of the document has no explanation.
    assert explainer.explain(0, [len(project.vocabulary) + 5]) == [None]


def test_suggest_explain_prints_each_suggestion_with_its_explanation(
    workspace: Path, texts: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = []
    for i, text in enumerate(texts[:2]):
        files.append(tmp_path / f"doc{i}.txt")
        files[-1].write_text(text, encoding="utf-8")
    args = ["suggest", "fusion-kuoro", *map(str, files), "--limit", "4"]
    code, plain, _ = run(workspace, capsys, *args)
    assert code == 0
    code, explained, _ = run(workspace, capsys, *args, "--explain")
    assert code == 0
    lines = explained.splitlines()
    # The suggestion lines are those of plain `suggest`, each followed by its explanation.
    assert [ln for ln in lines if not ln.startswith(" ")] == plain.splitlines()
    blocks = re.split(r"\n(?=<|Suggestions for)", explained.strip())
    suggestions = [b for b in blocks if b.startswith("<")]
    assert len(suggestions) == 8
    for block in suggestions:
        head, *body = block.splitlines()
        score = float(head.split("\t")[-1])
        assert body[0].split() == ["source", "score", "rank", "weight", "share", "trust"]
        assert body[1].split()[0] == "tfidf-stem" and body[2].split()[0] == "tfidf-words"
        parts = [float(ln.split()[1]) for ln in body if re.match(r"\s+[a-z_]+\s+[+-]\d", ln)]
        assert len(parts) == 6  # mean_logit … concept_trust
        total = next(ln for ln in body if "= mean value" in ln)
        assert float(total.split()[3]) == pytest.approx(sum(parts), abs=6 * 5e-5)
        # The model's score, then (a calibrated model) that score calibrated: the one served.
        assert body[-1].endswith(f"= {score:.4f}")
        members = next(ln for ln in body if "mean over the members" in ln)
        model_score = float(members.rsplit("= ", 1)[1])
        if body[-1] != members:
            assert body[-1].startswith("    score = calibrated on held-out documents(")
            assert f"({model_score:.4f})" in body[-1]


def test_suggest_explain_of_a_source_project_says_there_is_nothing_to_take_apart(
    workspace: Path, texts: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = tmp_path / "doc.txt"
    doc.write_text(texts[0], encoding="utf-8")
    _, plain, _ = run(workspace, capsys, "suggest", "tfidf-stem", str(doc))
    code, out, err = run(workspace, capsys, "suggest", "tfidf-stem", str(doc), "--explain")
    assert code == 0 and out == plain
    assert len(err.splitlines()) == 1 and "source project" in err and "nothing" in err


# -- ONNX ---------------------------------------------------------------------------------------


def real_candidates(workspace: Path, project_id: str, texts: list[str]) -> Candidates:
    project = open_project(workspace, project_id)
    predictor = project.model
    assert isinstance(predictor, FusionPredictor)
    rows = predictor.source_rows(texts)
    return build_candidates(rows, None, predictor.prior, top_k=predictor.top_k)


@pytest.mark.parametrize("project_id", FUSION)
def test_exported_onnx_scores_real_candidates_as_the_numpy_model(
    workspace: Path, texts: list[str], project_id: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    path = tmp_path / f"{project_id}.onnx"
    code, out, _ = run(workspace, capsys, "export", project_id, "--onnx", str(path))
    assert code == 0 and f"exported '{project_id}'" in out and str(path) in out
    proto = onnx.load(str(path))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["project"] == project_id
    assert json.loads(meta["sources"]) == ["tfidf-stem", "tfidf-words"]
    names = json.loads(meta["feature_names"])
    assert names == list(feature_names(2))

    candidates = real_candidates(workspace, project_id, texts)
    predictor = open_project(workspace, project_id).model
    assert isinstance(predictor, FusionPredictor)
    expected = predictor.model.predict_scores(candidates)
    features = candidates.features.copy()
    features[:, names.index("prior")] = 0  # the graph fills it from the concepts
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = {"features": features, "concepts": candidates.concepts.astype(np.int64)}
    scores, members = session.run(None, inputs)
    assert len(expected) > 500 and expected.std() > 0.01
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-5)
    assert members.shape == (predictor.model.n_members, len(expected))
    # In any order: every term is a function of its row.
    order = np.random.default_rng(0).permutation(len(expected))
    shuffled = {"features": features[order], "concepts": inputs["concepts"][order]}
    np.testing.assert_allclose(session.run(["scores"], shuffled)[0], expected[order], atol=1e-5)


def test_export_refuses_source_and_untrained_projects_in_one_line(
    workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "model.onnx"
    code, _, err = run(workspace, capsys, "export", "tfidf-stem", "--onnx", str(path))
    assert code == 1 and len(err.splitlines()) == 1
    assert "source project" in err and "only fusion projects" in err
    code, _, err = run(workspace, capsys, "export", "fusion-untrained", "--onnx", str(path))
    assert code == 1 and len(err.splitlines()) == 1
    assert "not trained yet" in err and "kuoro train fusion-untrained" in err
    code, _, err = run(workspace, capsys, "export", "fusion-mean")
    assert code == 2 and "--onnx" in err
    assert not path.exists()


def test_export_help_documents_the_input_layout(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["export", "--help"])
    out = capsys.readouterr().out
    assert code == 0
    for line in INPUT_LAYOUT.splitlines():
        assert " ".join(line.split()) in " ".join(out.split())
    for name in ("features", "concepts", "scores", "member_scores", "float32", "int64"):
        assert name in out


def test_the_readmes_onnx_example_runs_as_written(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Exporting to ONNX") :]
    start = section.index("```python\n") + len("```python\n")
    code = section[start : section.index("```", start)]
    assert (
        main(kuoro(workspace, "export", "fusion-kuoro", "--onnx", str(workspace / "fusion.onnx")))
        == 0
    )
    monkeypatch.chdir(workspace)  # its projects.toml and data/, as a user's
    names: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), names)
    candidates, scores = names["candidates"], names["scores"]
    predictor = open_project(workspace, "fusion-kuoro").model
    assert isinstance(predictor, FusionPredictor) and len(scores) > 10
    # The numpy model, on the candidates Kuoro builds when suggesting (the prior column
    # filled, the co-occurrence columns from the table the model trained with).
    assert predictor.cooccurrence is not None and names["table"] is not None
    full = predictor.candidates(names["rows"])
    assert (full.concepts == candidates.concepts).all()
    np.testing.assert_allclose(scores, predictor.model.predict_scores(full), atol=1e-5)
    assert set(names["best"]) == {0, 1}
