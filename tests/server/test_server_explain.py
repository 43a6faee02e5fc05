"""The REST API's ``explain=true``: each result's explanation on ``suggest`` and
``suggest-batch``; without it, the answers are Annif's to the byte."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel, TypeAdapter

from kuoro.config.projects import load_projects
from kuoro.project.datadir import DataDir
from kuoro.project.project import Project
from kuoro.server.app import create_app

from support.data import requires_shared_data
from support.workspace import ARCH, FUSION_DOCS, make_workspace, open_project

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

[fusion]
language = "fi"
vocab = "arch"
backend = "kuoro"
sources = "tfidf-stem,tfidf-words"
max_epochs = 2
hidden_size = 8
batch_size = 128
members = 2
"""


# Annif's response schema, and nothing else: what an answer without ``explain`` must be.
class AnnifResult(BaseModel):
    uri: str
    label: str | None
    notation: str | None
    score: float


class AnnifResults(BaseModel):
    results: list[AnnifResult]


class AnnifBatchResult(AnnifResults):
    document_id: str | None


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("server-explain")
    return make_workspace(work, PROJECTS, sources=("tfidf-stem", "tfidf-words"), fusion=["fusion"])


@pytest.fixture(scope="module")
def client(workspace: Path) -> Iterator[TestClient]:
    app = create_app(DataDir(workspace / "data"), load_projects(workspace / "projects.toml"))
    with TestClient(app) as served:
        yield served


@pytest.fixture(scope="module")
def texts() -> list[str]:
    lines = (ARCH / "documents.tsv").read_text(encoding="utf-8").splitlines()
    return [line.split("\t")[0] for line in lines[FUSION_DOCS + 30 : FUSION_DOCS + 34]]


def expected(project: Project, text: str, limit: int = 10) -> list[dict[str, Any]]:
    row = project.suggest([text])[0]
    return [dataclasses.asdict(s) for s in project.ranked(row, limit=limit)]


@pytest.mark.parametrize("project_id", ["fusion", "tfidf-stem"])
def test_without_explain_the_answers_are_annifs_bytes(
    client: TestClient, workspace: Path, texts: list[str], project_id: str
) -> None:
    """The bytes are those of Annif's schema serialised as the server serialises: an extra
    key (even a null one) or another formatting would differ."""
    project = open_project(workspace, project_id)
    url = f"/v1/projects/{project_id}"
    for form in ({"text": texts[0]}, {"text": texts[0], "explain": "false"}):
        response = client.post(f"{url}/suggest", data=form)
        assert response.status_code == 200
        annif = AnnifResults(results=expected(project, texts[0])).model_dump_json().encode()
        assert response.content == annif
        assert response.headers["content-type"] == "application/json"
        assert all(
            set(r) == {"uri", "label", "notation", "score"} for r in response.json()["results"]
        )
    body = {"documents": [{"text": t, "document_id": f"d{i}"} for i, t in enumerate(texts)]}
    for params in ({"limit": 5}, {"limit": 5, "explain": "false"}):
        response = client.post(f"{url}/suggest-batch", params=params, json=body)
        assert response.status_code == 200
        batch = [
            AnnifBatchResult(results=expected(project, t, limit=5), document_id=f"d{i}")
            for i, t in enumerate(texts)
        ]
        assert response.content == TypeAdapter(list[AnnifBatchResult]).dump_json(batch)


def check_fusion_explanation(result: dict[str, Any]) -> None:
    explanation = result["explanation"]
    assert explanation["kind"] == "fusion" and explanation["family"] == "kuoro"
    assert explanation["score"] == pytest.approx(result["score"], abs=1e-7)
    assert sum(explanation["parts"].values()) == pytest.approx(explanation["value"], abs=1e-6)
    assert [s["source"] for s in explanation["sources"]] == ["tfidf-stem", "tfidf-words"]
    members = explanation["members"]
    assert len(members) == 2
    for member in members:
        assert sum(member["parts"].values()) == pytest.approx(member["value"], abs=1e-6)
    # The members' mean is the model's own score; the served score is that, calibrated.
    mean_score = sum(m["score"] for m in members) / 2
    assert mean_score == pytest.approx(explanation["model_score"], abs=1e-6)


def test_suggest_with_explain_adds_each_results_explanation(
    client: TestClient, workspace: Path, texts: list[str]
) -> None:
    plain = client.post("/v1/projects/fusion/suggest", data={"text": texts[1], "limit": "5"})
    response = client.post(
        "/v1/projects/fusion/suggest", data={"text": texts[1], "limit": "5", "explain": "true"}
    )
    assert response.status_code == 200
    results = response.json()["results"]
    # The same suggestions, each with its explanation.
    stripped = [{k: v for k, v in r.items() if k != "explanation"} for r in results]
    assert stripped == plain.json()["results"] and len(results) == 5
    for result in results:
        check_fusion_explanation(result)
    assert "fusion;dur=" in response.headers["Server-Timing"]


def test_suggest_batch_with_explain(client: TestClient, texts: list[str]) -> None:
    body = {"documents": [{"text": t} for t in texts] + [{"text": "  "}]}
    response = client.post(
        "/v1/projects/fusion/suggest-batch", params={"limit": 3, "explain": "true"}, json=body
    )
    assert response.status_code == 200
    answers = response.json()
    assert len(answers) == len(texts) + 1 and answers[-1]["results"] == []
    assert sum(len(a["results"]) for a in answers) > len(texts)
    for answer in answers[:-1]:
        assert 1 <= len(answer["results"]) <= 3
        for result in answer["results"]:
            check_fusion_explanation(result)


def test_a_source_project_explains_its_score_and_rank_alone(
    client: TestClient, texts: list[str]
) -> None:
    response = client.post(
        "/v1/projects/tfidf-stem/suggest", data={"text": texts[2], "explain": "true"}
    )
    results = response.json()["results"]
    assert results
    for rank, result in enumerate(results, start=1):
        assert result["explanation"] == {
            "kind": "source",
            "source": "tfidf-stem",
            "score": result["score"],
            "rank": rank,
        }


def test_the_openapi_spec_documents_explain(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    batch = spec["paths"]["/v1/projects/{project_id}/suggest-batch"]["post"]
    assert "explain" in [p["name"] for p in batch["parameters"]]
    result = spec["components"]["schemas"]["SuggestionResult"]
    assert "explanation" in result["properties"] and "explanation" not in result["required"]
    form = json.dumps(spec["paths"]["/v1/projects/{project_id}/suggest"]["post"]["requestBody"])
    assert "explain" in form
