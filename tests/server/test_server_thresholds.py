"""The REST API applies a project's per-concept thresholds, and says why it cannot when none
were learnt."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from kuoro.config.projects import load_projects
from kuoro.project.datadir import DataDir
from kuoro.project.thresholds import ConceptThresholds, current_model_version
from kuoro.server.app import create_app

from support.data import requires_shared_data
from support.workspace import make_held_out_workspace, open_project

pytestmark = requires_shared_data

PROJECTS = """
[arch-tfidf]
language = "fi"
vocab = "arch"
backend = "tfidf"
analyzer = "snowball(finnish)"

[arch-pc]
language = "fi"
vocab = "arch"
backend = "tfidf"
analyzer = "snowball(finnish)"
thresholds = "per-concept"

[arch-none]
language = "fi"
vocab = "arch"
backend = "tfidf"
analyzer = "snowball(finnish)"
thresholds = "per-concept"
"""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """arch-tfidf's model served as arch-pc (with thresholds) and arch-none (without)."""
    # The command line takes over the "kuoro" logger; later modules' caplog needs it back.
    logger = logging.getLogger("kuoro")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    work = make_held_out_workspace(tmp_path_factory.mktemp("server-thresholds"), PROJECTS,
                                   held_out="tune.tsv", quiet=True)  # fmt: skip
    logger.handlers[:], logger.level, logger.propagate = saved
    projects = work / "data" / "projects"
    for copy in ("arch-pc", "arch-none"):
        shutil.copytree(projects / "arch-tfidf", projects / copy)
    return work


def test_suggestions_are_cut_by_each_concepts_threshold(workspace: Path) -> None:
    datadir = DataDir(workspace / "data")
    texts = [line.split("\t")[0] for line in (workspace / "tune.tsv").read_text().splitlines()]
    source = open_project(workspace, "arch-tfidf")
    rows = source.suggest(texts[:50])
    frequent = np.sort(np.argsort(-np.bincount(rows.indices, minlength=rows.shape[1]))[:4])
    thresholds = ConceptThresholds(
        current_model_version(datadir, "arch-pc"), 5, 0.02, frequent.astype(np.int64),
        np.full(4, 0.7), np.full(4, 9, np.int64), 5, "blend", 50,
    )  # fmt: skip
    thresholds.save(datadir.thresholds_path("arch-pc"))
    with TestClient(create_app(datadir, load_projects(workspace / "projects.toml"))) as client:
        cut = 0
        for text in texts[:20]:
            answer = client.post("/v1/projects/arch-pc/suggest", data={"text": text, "limit": 8})
            assert answer.status_code == 200
            got = [r["uri"] for r in answer.json()["results"]]
            plain = source.ranked(source.suggest([text]), limit=8)
            expected = source.ranked(thresholds.apply(source.suggest([text])), limit=8)
            assert got == [s.uri for s in expected]
            cut += len(plain) - len(expected)
            batch = client.post(
                "/v1/projects/arch-pc/suggest-batch?limit=8", json={"documents": [{"text": text}]}
            )
            assert [r["uri"] for r in batch.json()[0]["results"]] == got
        assert cut > 0  # the thresholds did cut suggestions
        # A project asking for thresholds never learnt cannot answer, and says why.
        answer = client.post("/v1/projects/arch-none/suggest", data={"text": texts[0]})
        assert answer.status_code == 503
        assert "no per-concept thresholds were learnt" in answer.json()["detail"]
        assert client.post("/v1/projects/arch-tfidf/suggest", data={"text": texts[0]}).is_success
