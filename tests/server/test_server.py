"""The REST API on a small trained workspace: Annif's shapes, Kuoro's answers, every error path."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from kuoro.cli import main
from kuoro.config.projects import ProjectConfig, load_projects
from kuoro.errors import KuoroError
from kuoro.project.datadir import DataDir
from kuoro.project.project import Project
from kuoro.server.app import create_app
from kuoro.sources.registry import source_class

from support.data import requires_shared_data
from support.workspace import ARCH, FUSION_DOCS, kuoro, make_workspace, open_project

pytestmark = [requires_shared_data, pytest.mark.usefixtures("torch_one_thread")]

TOKEN = "s3cret-token"
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
allow_learn = true

[untrained]
language = "fi"
vocab = "arch"
backend = "tfidf"

[stem-hidden]
language = "fi"
vocab = "arch"
backend = "tfidf"
analyzer = "snowball(finnish)"
min_df = 1
access = "hidden"
allow_learn = true

[stem-private]
language = "fi"
vocab = "arch"
backend = "tfidf"
analyzer = "snowball(finnish)"
min_df = 1
access = "private"
"""
PUBLIC = ["tfidf-stem", "tfidf-words", "fusion", "untrained"]
# What `python -m kuoro.cli serve` is, until cli.py registers the command itself.
SERVE = (
    "import sys; from kuoro.cli.app import cli, main; from kuoro.cli.serve import serve_command\n"
    "if 'serve' not in cli.commands: cli.add_command(serve_command)\n"
    "sys.exit(main())"
)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two trained tfidf sources, a kuoro fusion of them, and copies of a source's model."""
    work = tmp_path_factory.mktemp("server")
    make_workspace(work, PROJECTS, sources=("tfidf-stem", "tfidf-words"), fusion=["fusion"])
    # Configured like tfidf-stem, so its model serves them too.
    projects_dir = work / "data" / "projects"
    for copy in ("stem-hidden", "stem-private"):
        shutil.copytree(projects_dir / "tfidf-stem", projects_dir / copy)
    return work


def configs(work: Path) -> dict[str, ProjectConfig]:
    return load_projects(work / "projects.toml")


def make_client(work: Path, **options: Any) -> TestClient:
    return TestClient(create_app(DataDir(work / "data"), configs(work), **options))


@pytest.fixture(scope="module")
def client(workspace: Path) -> Iterator[TestClient]:
    with make_client(workspace) as served:
        yield served


@pytest.fixture(scope="module")
def texts() -> list[str]:
    lines = (ARCH / "documents.tsv").read_text(encoding="utf-8").splitlines()
    return [line.split("\t")[0] for line in lines[FUSION_DOCS + 10 : FUSION_DOCS + 16]]


def expected(
    project: Project, text: str, *, limit: int = 10, threshold: float = 0.0
) -> list[dict[str, Any]]:
    """What Kuoro's Python API ranks for a text, as the REST API should return it."""
    row = project.suggest([text])[0]
    return [dataclasses.asdict(s) for s in project.ranked(row, limit=limit, threshold=threshold)]


def assert_problem(response: httpx.Response, status: int, detail: str = "") -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["type"] == "about:blank" and body["title"]
    assert detail in body["detail"]
    return body


def copied_workspace(workspace: Path, tmp_path: Path) -> Path:
    """A copy to change (retrain, damage, learn) without touching the shared workspace."""
    work = tmp_path / "work"
    shutil.copytree(workspace, work)
    return work


# -- information about the API and its projects ----------------------------------------------


def test_api_info_and_public_project_listing(client: TestClient) -> None:
    info = client.get("/v1/").json()
    assert info["title"] == "Kuoro REST API" and info["version"]
    listed = client.get("/v1/projects").json()["projects"]
    assert [p["project_id"] for p in listed] == PUBLIC
    fusion = next(p for p in listed if p["project_id"] == "fusion")
    # Annif's Project object, plus the reason a project cannot answer (None when it can).
    assert set(fusion) == {
        "project_id", "name", "language", "backend", "vocab", "vocab_language", "is_trained",
        "modification_time", "error",
    }  # fmt: skip
    assert fusion["backend"] == {"backend_id": "kuoro"}
    assert fusion["vocab"] == {
        "vocab_id": "arch", "languages": ["en", "fi", "sv"], "size": 130, "loaded": True
    }  # fmt: skip
    assert fusion["vocab_language"] == "fi" and fusion["is_trained"] is True
    assert fusion["error"] is None
    age = time.time() - datetime.fromisoformat(fusion["modification_time"]).timestamp()
    assert 0 <= age < 3600
    assert client.get("/v1/vocabs").json() == {"vocabs": [fusion["vocab"]]}


def test_hidden_projects_are_served_but_not_listed_and_private_ones_not_at_all(
    client: TestClient, workspace: Path, texts: list[str]
) -> None:
    hidden = client.get("/v1/projects/stem-hidden")
    assert hidden.status_code == 200 and hidden.json()["project_id"] == "stem-hidden"
    answer = client.post("/v1/projects/stem-hidden/suggest", data={"text": texts[0]})
    assert answer.json()["results"] == expected(open_project(workspace, "tfidf-stem"), texts[0])
    for path in ("/v1/projects/stem-private", "/v1/projects/nothing-here"):
        assert_problem(client.get(path), 404, "not found")
        assert_problem(client.post(f"{path}/suggest", data={"text": "x"}), 404, "not found")
        batch = client.post(f"{path}/suggest-batch", json={"documents": [{"text": "x"}]})
        assert_problem(batch, 404, "not found")


@pytest.mark.parametrize("lazy", [False, True])
def test_each_source_model_loads_once_though_the_fusion_project_uses_it_too(
    workspace: Path, texts: list[str], monkeypatch: pytest.MonkeyPatch, lazy: bool
) -> None:
    tfidf = source_class("tfidf")
    loaded: list[str] = []
    load_state = tfidf.load_state

    def counted(self: Any, directory: Path) -> None:
        loaded.append(Path(directory).parent.name)  # .../projects/<project>/<version>
        load_state(self, directory)

    monkeypatch.setattr(tfidf, "load_state", counted)
    with make_client(workspace, lazy=lazy) as client:
        fusion = client.post("/v1/projects/fusion/suggest", data={"text": texts[0]})
        assert fusion.json()["results"] == expected(open_project(workspace, "fusion"), texts[0])
        for project_id in ("tfidf-stem", "tfidf-words", "stem-hidden"):
            answer = client.post(f"/v1/projects/{project_id}/suggest", data={"text": texts[0]})
            assert answer.status_code == 200
    # open_project above loaded the fusion project's two sources outside the server.
    assert sorted(loaded) == [
        "stem-hidden",
        "tfidf-stem",
        "tfidf-stem",
        "tfidf-words",
        "tfidf-words",
    ]


# -- suggestions -------------------------------------------------------------------------------


@pytest.mark.parametrize("project_id", ["tfidf-stem", "fusion"])
def test_suggest_answers_what_the_python_api_ranks(
    client: TestClient, workspace: Path, texts: list[str], project_id: str
) -> None:
    project = open_project(workspace, project_id)
    for text in texts[:3]:
        # Annif's http backend sends a project field and metadata; both are accepted.
        form = {"text": text, "project": project_id, "metadata_title": "x"}
        answer = client.post(f"/v1/projects/{project_id}/suggest", data=form)
        assert answer.status_code == 200
        results = answer.json()["results"]
        assert results == expected(project, text) and len(results) == 10
        scores = [r["score"] for r in results]
        assert scores == sorted(scores, reverse=True) and scores[-1] > 0


def test_limit_and_threshold(client: TestClient, workspace: Path, texts: list[str]) -> None:
    project = open_project(workspace, "fusion")
    full = expected(project, texts[0], limit=100)
    assert len(full) > 5
    url = "/v1/projects/fusion/suggest"
    assert client.post(url, data={"text": texts[0], "limit": 3}).json()["results"] == full[:3]
    assert client.post(url, data={"text": texts[0], "limit": 0}).json()["results"] == []
    cut = (full[1]["score"] + full[2]["score"]) / 2
    above = client.post(url, data={"text": texts[0], "limit": 100, "threshold": cut})
    assert above.json()["results"] == full[:2]
    # An empty text is a valid request with nothing to suggest.
    assert client.post(url, data={"text": ""}).json() == {"results": []}


def test_suggest_batch_answers_in_order_with_document_ids(
    client: TestClient, workspace: Path, texts: list[str]
) -> None:
    project = open_project(workspace, "fusion")
    documents: list[dict[str, Any]] = [
        {"text": texts[0], "document_id": "a"},
        {"text": texts[1]},
        {"text": "   ", "document_id": "blank"},
        {"text": texts[2], "document_id": "c", "metadata": {"title": "t"}},
    ]
    answer = client.post(
        "/v1/projects/fusion/suggest-batch?limit=5&threshold=0.01", json={"documents": documents}
    )
    assert answer.status_code == 200
    body = answer.json()
    assert [d["document_id"] for d in body] == ["a", None, "blank", "c"]
    assert body[2]["results"] == []
    rows = project.suggest([texts[0], texts[1], texts[2]])
    for got, row in zip([body[0], body[1], body[3]], rows, strict=True):
        want = [dataclasses.asdict(s) for s in project.ranked(row, limit=5, threshold=0.01)]
        assert got["results"] == want and 0 < len(want) <= 5
    assert client.post("/v1/projects/fusion/suggest-batch", json={"documents": []}).json() == []


def test_labels_in_another_language_of_the_vocabulary(
    client: TestClient, workspace: Path, texts: list[str]
) -> None:
    vocab = open_project(workspace, "fusion").vocabulary
    finnish = client.post("/v1/projects/fusion/suggest", data={"text": texts[0]}).json()
    english = client.post(
        "/v1/projects/fusion/suggest", data={"text": texts[0], "language": "en"}
    ).json()
    assert [r["uri"] for r in english["results"]] == [r["uri"] for r in finnish["results"]]
    for result in english["results"]:
        assert result["label"] == vocab.label(vocab.id_of(result["uri"]), "en")  # type: ignore[arg-type]
    assert english != finnish
    batch = client.post(
        "/v1/projects/fusion/suggest-batch?language=sv", json={"documents": [{"text": texts[0]}]}
    )
    assert batch.json()[0]["results"][0]["label"] == vocab.label(
        vocab.id_of(finnish["results"][0]["uri"]),  # type: ignore[arg-type]
        "sv",
    )


def test_server_timing_splits_sources_from_the_fusion_model(
    client: TestClient, texts: list[str]
) -> None:
    answer = client.post(
        "/v1/projects/fusion/suggest-batch", json={"documents": [{"text": t} for t in texts]}
    )
    stages = {
        name: float(duration.removeprefix("dur="))
        for name, duration in (
            part.strip().split(";") for part in answer.headers["server-timing"].split(",")
        )
    }
    assert set(stages) == {"sources", "fusion", "total"}
    assert stages["sources"] > 0 and stages["fusion"] > 0
    assert stages["sources"] + stages["fusion"] == pytest.approx(stages["total"], abs=0.01)
    source_only = client.post("/v1/projects/tfidf-stem/suggest", data={"text": texts[0]})
    assert source_only.headers["server-timing"].startswith("total;dur=")


# -- bad requests ------------------------------------------------------------------------------


def test_bad_input_is_a_400_problem(client: TestClient, texts: list[str]) -> None:
    url = "/v1/projects/fusion/suggest"
    assert_problem(client.post(url, data={"limit": 3}), 400, "text")
    assert_problem(client.post(url, json={"text": "x"}), 400, "text")  # JSON is not a form
    assert_problem(client.post(url, data={"text": "x", "limit": -1}), 400, "limit")
    assert_problem(client.post(url, data={"text": "x", "limit": "many"}), 400, "limit")
    assert_problem(client.post(url, data={"text": "x", "threshold": 1.5}), 400, "threshold")
    assert_problem(client.post(url, data={"text": "x", "language": "de"}), 400, '"de"')
    batch = "/v1/projects/fusion/suggest-batch"
    too_many = {"documents": [{"text": texts[0]}] * 33}
    assert_problem(client.post(batch, json=too_many), 400, "at most 32")
    assert client.post(batch, json={"documents": too_many["documents"][:32]}).status_code == 200
    assert_problem(client.post(batch, json=[{"text": "x"}]), 400, "body")
    assert_problem(client.post(batch, json={"documents": [{"id": "no text"}]}), 400, "text")
    malformed = client.post(batch, content=b"{not json", headers={"content-type": "text/json"})
    assert_problem(malformed, 400)
    assert_problem(client.post(f"{batch}?limit=x", json={"documents": []}), 400, "limit")
    assert_problem(client.get("/v1/no/such/path"), 404)
    assert_problem(client.delete("/v1/projects"), 405)


def test_too_large_requests_get_413(workspace: Path) -> None:
    with make_client(workspace, lazy=True, max_request_bytes=2000) as small:
        url = "/v1/projects/tfidf-stem/suggest"
        assert small.post(url, data={"text": "kivikausi " * 150}).status_code == 200
        assert_problem(small.post(url, data={"text": "kivikausi " * 250}), 413, "2000 bytes")

        def chunks() -> Iterator[bytes]:  # no Content-Length: the size shows only as it streams
            yield b"text="
            for _ in range(300):
                yield b"kivikausi+"

        streamed = small.post(
            url, content=chunks(), headers={"content-type": "application/x-www-form-urlencoded"}
        )
        assert_problem(streamed, 413)


# -- projects that cannot answer ---------------------------------------------------------------


def test_a_broken_model_fails_alone_and_recovers_when_retrained(
    workspace: Path, tmp_path: Path, texts: list[str]
) -> None:
    work = copied_workspace(workspace, tmp_path)
    fusion_dir = work / "data" / "projects" / "fusion"
    good = fusion_dir / (fusion_dir / "CURRENT").read_text(encoding="utf-8")
    backup = tmp_path / "good-model"
    shutil.copytree(good, backup)
    for weights in ("model.pt", "fusion.npz", "prior.npz"):  # same sizes, garbage inside
        if (good / weights).is_file():
            (good / weights).write_bytes(b"\0" * (good / weights).stat().st_size)

    with make_client(work) as damaged:
        problem = assert_problem(
            damaged.post("/v1/projects/fusion/suggest", data={"text": texts[0]}), 503, "fusion"
        )
        health = damaged.get("/health").json()
        assert health["status"] == "degraded"  # (untrained is broken too)
        assert health["projects"]["fusion"] == {"status": "error", "error": problem["detail"]}
        assert health["projects"]["tfidf-stem"] == {"status": "ready", "error": None}
        assert damaged.get("/v1/projects/fusion").json()["error"] == problem["detail"]
        # The other projects answer as before.
        stem = damaged.post("/v1/projects/tfidf-stem/suggest", data={"text": texts[0]})
        assert stem.json()["results"] == expected(open_project(workspace, "tfidf-stem"), texts[0])

        # A new model becoming current (as `kuoro train` makes it) is loaded on the next request.
        repaired = fusion_dir / "v-repaired"
        shutil.copytree(backup, repaired)
        (fusion_dir / "CURRENT").write_text(repaired.name, encoding="utf-8")
        again = damaged.post("/v1/projects/fusion/suggest", data={"text": texts[0]})
        assert again.json()["results"] == expected(open_project(workspace, "fusion"), texts[0])
        assert damaged.get("/health").json()["projects"]["fusion"]["status"] == "ready"


def test_an_untrained_project_answers_503_and_says_why(client: TestClient) -> None:
    assert_problem(
        client.post("/v1/projects/untrained/suggest", data={"text": "x"}), 503, "not trained"
    )
    info = client.get("/v1/projects/untrained").json()
    assert info["is_trained"] is False and info["modification_time"] is None
    assert "kuoro train untrained CORPUS" in info["error"]
    health = client.get("/health").json()
    # A project not trained yet is no fault of the server's: it says how to train it.
    assert health["status"] == "ok"
    assert health["projects"]["untrained"] == {"status": "not trained", "error": info["error"]}
    assert "stem-private" not in health["projects"] and "stem-hidden" in health["projects"]


def test_lazy_loading_loads_a_model_on_its_first_request(workspace: Path, texts: list[str]) -> None:
    with make_client(workspace, lazy=True) as lazy:
        states = lazy.get("/health").json()
        assert states["status"] == "ok"
        assert {s["status"] for s in states["projects"].values()} == {"not loaded"}
        answer = lazy.post("/v1/projects/tfidf-words/suggest", data={"text": texts[0]})
        assert answer.json()["results"] == expected(
            open_project(workspace, "tfidf-words"), texts[0]
        )
        assert_problem(lazy.post("/v1/projects/untrained/suggest", data={"text": "x"}), 503)
        states = lazy.get("/health").json()["projects"]
        assert states["tfidf-words"]["status"] == "ready"
        assert states["untrained"]["status"] == "not trained"
        assert states["fusion"]["status"] == "not loaded"


def test_the_event_loop_answers_while_a_suggestion_runs(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(DataDir(workspace / "data"), configs(workspace), lazy=True)
    original = Project.suggest

    def slow(self: Project, *args: Any, **kwargs: Any) -> Any:
        time.sleep(1.0)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Project, "suggest", slow)

    async def both() -> tuple[float, float]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            started = time.perf_counter()

            async def suggestion() -> float:
                await http.post("/v1/projects/tfidf-words/suggest", data={"text": "kivikausi"})
                return time.perf_counter() - started

            async def health() -> float:
                await asyncio.sleep(0.2)
                await http.get("/health")
                return time.perf_counter() - started

            return await asyncio.gather(suggestion(), health())  # type: ignore[return-value]

    slow_seconds, health_seconds = asyncio.run(both())
    assert slow_seconds >= 1.0 and health_seconds < slow_seconds


# -- learning ----------------------------------------------------------------------------------


def test_learning_needs_the_token_and_allow_learn(workspace: Path) -> None:
    documents = [{"text": "kivikausi", "subjects": [{"uri": "http://www.yso.fi/onto/yso/p1"}]}]
    url = "/v1/projects/{}/learn"
    with make_client(workspace, lazy=True) as no_token:
        answer = no_token.post(
            url.format("fusion"), json=documents, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert_problem(answer, 403, "disabled")
    with make_client(workspace, lazy=True, learn_token=TOKEN) as served:
        # Without a token: 401 and how to authenticate; with a wrong one: 403.
        for header in ({}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": "Bearer "}):
            answer = served.post(url.format("fusion"), json=documents, headers=header)
            assert_problem(answer, 401, "Authorization: Bearer <token>")
            assert answer.headers["www-authenticate"] == "Bearer"
        answer = served.post(
            url.format("fusion"), json=documents, headers={"Authorization": f"Bearer {TOKEN}x"}
        )
        assert_problem(answer, 403, "not the server's learn token")
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert_problem(
            served.post(url.format("tfidf-stem"), json=documents, headers=auth),
            403,
            "not configured to allow learning",
        )
        for missing in ("stem-private", "nothing-here"):
            assert_problem(served.post(url.format(missing), json=documents, headers=auth), 404)
        # A source project may allow learning, but cannot learn.
        assert_problem(
            served.post(url.format("stem-hidden"), json=documents, headers=auth),
            400,
            "does not support learning",
        )
        assert_problem(served.post(url.format("fusion"), json={"a": 1}, headers=auth), 400)


def test_learn_hands_an_annif_tsv_corpus_to_the_project(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    received: list[str] = []

    def learn(self: Project, corpus_paths: list[Path], **options: Any) -> None:
        (path,) = corpus_paths
        received.append(path.read_text(encoding="utf-8"))
        if "fail" in received[-1]:
            raise KuoroError("the corpus says fail")

    monkeypatch.setattr(Project, "learn", learn)
    uri = "http://www.yso.fi/onto/yso/p{}".format
    documents = [
        {"text": "Kivikauden\tasuinpaikka\nkaivettiin", "subjects": [{"uri": uri(1)}]},
        {"text": "no subjects", "subjects": []},
        {"subjects": [{"uri": uri(2)}]},
        {"text": "  ", "subjects": [{"uri": uri(3)}]},
        {"text": "kaksi", "subjects": [{"uri": f"<{uri(4)}>", "label": "x"}, {"uri": uri(5)}]},
    ]
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with make_client(workspace, lazy=True, learn_token=TOKEN) as served:
        answer = served.post("/v1/projects/fusion/learn", json=documents, headers=auth)
        assert answer.status_code == 204 and answer.content == b""
        assert received == [
            f"Kivikauden asuinpaikka kaivettiin\t<{uri(1)}>\nkaksi\t<{uri(4)}> <{uri(5)}>\n"
        ]
        # The model was loaded again after learning.
        assert served.get("/health").json()["projects"]["fusion"]["status"] == "ready"
        nothing = served.post("/v1/projects/fusion/learn", json=documents[1:4], headers=auth)
        assert_problem(nothing, 400, "no document")
        bad_uri = [{"text": "x", "subjects": [{"uri": "http://a b"}]}]
        assert_problem(
            served.post("/v1/projects/fusion/learn", json=bad_uri, headers=auth), 400, "malformed"
        )
        failing = [{"text": "fail", "subjects": [{"uri": uri(1)}]}]
        assert_problem(
            served.post("/v1/projects/fusion/learn", json=failing, headers=auth),
            400,
            "the corpus says fail",
        )
    assert len(received) == 2  # requests refused before learning never reached the project


def test_learn_updates_a_fusion_model_and_serves_the_new_one(
    workspace: Path, tmp_path: Path, texts: list[str]
) -> None:
    work = copied_workspace(workspace, tmp_path)
    lines = (work / "sources.tsv").read_text(encoding="utf-8").splitlines()[:150]
    documents = [
        {
            "text": text,
            "subjects": [{"uri": ref.strip("<>")} for ref in refs.split()],
        }
        for text, refs in (line.split("\t") for line in lines)
    ]
    fusion_dir = work / "data" / "projects" / "fusion"
    before = (fusion_dir / "CURRENT").read_text(encoding="utf-8")
    with make_client(work, learn_token=TOKEN) as served:
        answer = served.post(
            "/v1/projects/fusion/learn",
            json=documents,
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert answer.status_code == 204, answer.text
        after = (fusion_dir / "CURRENT").read_text(encoding="utf-8")
        assert after != before
        now = served.post("/v1/projects/fusion/suggest", data={"text": texts[0]}).json()
        assert now["results"] == expected(open_project(work, "fusion"), texts[0])
    # A quick update: a few epochs over the new documents and a sample of the original ones.
    manifest = json.loads((fusion_dir / after / "manifest.json").read_text(encoding="utf-8"))
    (learnt,) = manifest["training"]["learnt"]
    assert learnt["quick"] is True and learnt["replayed"] is True and learnt["epochs"] <= 3
    original = manifest["training"]["train_documents"]
    assert learnt["train_documents"] == len(documents) + min(original, max(256, 4 * 150))


def test_learn_while_the_project_is_trained_elsewhere_is_a_conflict(
    workspace: Path, tmp_path: Path
) -> None:
    work = copied_workspace(workspace, tmp_path)
    line = (work / "sources.tsv").read_text(encoding="utf-8").splitlines()[0]
    text, refs = line.split("\t")
    documents = [{"text": text, "subjects": [{"uri": r.strip("<>")} for r in refs.split()]}]
    auth = {"Authorization": f"Bearer {TOKEN}"}
    before = (work / "data" / "projects" / "fusion" / "CURRENT").read_text()
    with make_client(work, learn_token=TOKEN) as served:
        # As `kuoro train fusion` holds it (another open file, so another lock owner).
        with DataDir(work / "data").project_lock("fusion").acquire_or_fail(""):
            answer = served.post("/v1/projects/fusion/learn", json=documents, headers=auth)
            assert_problem(answer, 409, "project 'fusion' is busy")
        assert (work / "data" / "projects" / "fusion" / "CURRENT").read_text() == before
        answer = served.post("/v1/projects/fusion/learn", json=documents, headers=auth)
        assert answer.status_code == 204, answer.text


def test_learn_with_a_damaged_store_fails_alone(
    workspace: Path, tmp_path: Path, texts: list[str]
) -> None:
    work = copied_workspace(workspace, tmp_path)
    (store,) = DataDir(work / "data").stores()
    os.truncate(store / "data.mdb", (store / "data.mdb").stat().st_size // 2)
    line = (work / "sources.tsv").read_text(encoding="utf-8").splitlines()[0]
    text, refs = line.split("\t")
    documents = [{"text": text, "subjects": [{"uri": r.strip("<>")} for r in refs.split()]}]
    with make_client(work, learn_token=TOKEN) as served:
        answer = served.post(
            "/v1/projects/fusion/learn",
            json=documents,
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        problem = assert_problem(answer, 503, "is truncated")
        assert str(work) not in problem["detail"]  # no absolute paths of the server's disk
        for project_id in ("fusion", "tfidf-stem"):
            again = served.post(f"/v1/projects/{project_id}/suggest", data={"text": texts[0]})
            assert again.status_code == 200 and again.json()["results"]


def test_a_retrained_model_is_served_once_loaded_and_its_time_shown(
    workspace: Path, tmp_path: Path, texts: list[str]
) -> None:
    work = copied_workspace(workspace, tmp_path)
    url = "/v1/projects/tfidf-words/suggest"
    with make_client(work) as served:
        trained_at = served.get("/v1/projects/tfidf-words").json()["modification_time"]
        old = served.post(url, data={"text": texts[0]}).json()["results"]
        # Retrained on other documents, as `kuoro train` does beside the running server.
        assert main(kuoro(work, "train", "tfidf-words", str(work / "fusion.tsv"))) == 0
        new = expected(open_project(work, "tfidf-words"), texts[0])
        assert new != old
        # The old model answers until the new one is loaded, and its time is the one shown.
        info = served.get("/v1/projects/tfidf-words").json()
        assert info["modification_time"] == trained_at
        deadline = time.monotonic() + 30
        while (answer := served.post(url, data={"text": texts[0]})).json()["results"] != new:
            assert answer.status_code == 200 and answer.json()["results"] == old
            assert time.monotonic() < deadline, "the retrained model was never served"
            time.sleep(0.05)
        now = served.get("/v1/projects/tfidf-words").json()["modification_time"]
        pointer = work / "data" / "projects" / "tfidf-words" / "CURRENT"
        shown = datetime.fromisoformat(now.replace("Z", "+00:00")).timestamp()
        assert now != trained_at and abs(shown - pointer.stat().st_mtime) < 1e-3


# -- kuoro serve -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_serve_options_reach_the_app_and_uvicorn(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn
    from click.testing import CliRunner

    from kuoro.cli.app import cli
    from kuoro.cli.serve import serve_command
    from kuoro.server import app as server_module

    if "serve" not in cli.commands:
        monkeypatch.setitem(cli.commands, "serve", serve_command)
    seen: dict[str, Any] = {}
    create = server_module.create_app

    def recording_create_app(*args: Any, **options: Any) -> Any:
        seen["app_options"] = options
        return create(*args, **options)

    monkeypatch.setattr(server_module, "create_app", recording_create_app)
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: seen.update(run=options))
    runner = CliRunner()
    done = runner.invoke(cli, kuoro(workspace, "serve", "--lazy"), env={"KUORO_LEARN_TOKEN": TOKEN})
    assert done.exit_code == 0, done.output
    assert seen["app_options"]["lazy"] is True and seen["app_options"]["learn_token"] == TOKEN
    assert seen["run"]["host"] == "127.0.0.1" and seen["run"]["port"] == 5000
    done = runner.invoke(cli, kuoro(workspace, "serve", "--host", "0.0.0.0", "--port", "8080"))
    assert done.exit_code == 0, done.output
    assert seen["app_options"]["lazy"] is False and seen["app_options"]["learn_token"] is None
    assert seen["run"]["host"] == "0.0.0.0" and seen["run"]["port"] == 8080


@pytest.mark.integration
def test_kuoro_serve_runs_uvicorn_and_stops_cleanly(
    workspace: Path, tmp_path: Path, texts: list[str]
) -> None:
    port = free_port()
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-c", SERVE, *kuoro(workspace, "serve", "--port", str(port))],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, log_path.read_text(encoding="utf-8")
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log_path.read_text(encoding="utf-8")
            time.sleep(0.2)
        listed = httpx.get(f"{base}/v1/projects").json()["projects"]
        assert [p["project_id"] for p in listed] == PUBLIC
        answer = httpx.post(f"{base}/v1/projects/fusion/suggest", data={"text": texts[0]})
        assert answer.json()["results"] == expected(open_project(workspace, "fusion"), texts[0])
        spec = httpx.get(f"{base}/openapi.json").json()
        assert "/v1/projects/{project_id}/suggest-batch" in spec["paths"]
    finally:
        server.send_signal(signal.SIGINT)
        code = server.wait(timeout=20)
    output = log_path.read_text(encoding="utf-8")
    assert code == 0, output
    assert f"Uvicorn running on http://127.0.0.1:{port}" in output
    assert "Finished server process" in output and "Traceback" not in output


def test_the_api_documentation_loads_nothing_from_elsewhere(client: TestClient) -> None:
    page = client.get("/v1/ui")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "/v1/ui/static/swagger-ui-bundle.js" in page.text
    assert "http" not in page.text.replace("http-equiv", ""), "an absolute URL: a CDN"
    script = client.get("/v1/ui/static/swagger-ui-bundle.js")
    assert script.status_code == 200 and len(script.content) > 100_000
    assert client.get("/v1/ui/static/swagger-ui.css").status_code == 200
