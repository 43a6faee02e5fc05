"""Annif itself (PyPI 1.4.3) as a client of ``kuoro serve``, through its ``http`` backend.

Kuoro serves a fusion project trained as the shared data's protocol says (sources on Finna
titles, fusion on kirjastonhoitaja/train.tsv), kept small; Annif is configured with a project
of backend ``http`` whose endpoint is Kuoro's ``suggest``. ``annif suggest`` must print what
Kuoro ranks, and ``annif eval`` must compute the same metrics as ``kuoro eval`` on the test set.
"""

from __future__ import annotations

import gzip
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from pathlib import Path

import httpx
import pytest

from kuoro.cli import main
from kuoro.config.projects import load_projects
from kuoro.project.datadir import DataDir
from kuoro.project.project import Project

from support.annif_server import (
    ANNIF_VERSION,
    AnnifProject,
    AnnifServer,
    AnnifUnavailable,
    ensure_annif,
)
from support.data import SHARED_DATA, requires_shared_data

pytestmark = [
    requires_shared_data,
    pytest.mark.slow,  # trains on YSO Finna titles and runs Annif over the test set
    pytest.mark.integration,
    pytest.mark.usefixtures("torch_one_thread"),
]

YSO = SHARED_DATA / "yso-fi"
LIBRARIAN = SHARED_DATA / "kirjastonhoitaja"
TITLES = 15_000  # Finna titles the sources learn from
FUSION_DOCS = 1200  # kirjastonhoitaja training documents the fusion model learns from
PORT = "KUORO_PORT"  # in Annif's projects.cfg until the server runs
PROJECTS = """
# Only the fusion project is served: its sources are private.
[yso-tfidf]
language = "fi"
vocab = "yso-fi"
backend = "tfidf"
analyzer = "simplemma(fi)"
access = "private"

[yso-lexical]
language = "fi"
vocab = "yso-fi"
backend = "lexical"
analyzer = "simplemma(fi)"
max_train_documents = 2000
access = "private"

[yso-fusion]
name = "YSO fusion"
language = "fi"
vocab = "yso-fi"
backend = "kuoro"
sources = "yso-tfidf,yso-lexical"
max_epochs = 3
"""
SERVE = (
    "import sys; from kuoro.cli.app import cli, main; from kuoro.cli.serve import serve_command\n"
    "if 'serve' not in cli.commands: cli.add_command(serve_command)\n"
    "sys.exit(main())"
)
TEXT = (
    "Mistä löytäisin tietoa Suomen kirjastojen historiasta ja siitä, miten lukeminen on "
    "muuttunut? Kiinnostaa erityisesti kansakoulujen kirjastot 1900-luvun alussa."
)


def kuoro(work: Path, *args: str) -> list[str]:
    return ["--datadir", str(work / "data"), "--projects", str(work / "projects.toml"), *args]


@pytest.fixture(scope="module")
def annif() -> Path:
    try:
        return ensure_annif()
    except AnnifUnavailable as exc:
        pytest.skip(f"Annif {ANNIF_VERSION} cannot be installed here: {exc}")


@pytest.fixture(scope="module")
def provisioning(
    annif: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[AnnifServer, Future[None]]]:
    """Annif's data directory, written in the background while Kuoro trains (``annif
    load-vocab`` of YSO takes half a minute): project ``kuoro`` asks Kuoro over HTTP, at a
    port filled in once the server runs."""
    endpoint = f"http://127.0.0.1:{PORT}/v1/projects/yso-fusion/suggest"
    project = AnnifProject("kuoro", "http", {"endpoint": endpoint, "project": "yso-fusion"})
    client = AnnifServer(
        tmp_path_factory.mktemp("annif"),
        [project],
        vocab_file=YSO / "vocab.tsv",
        vocab_id="yso-fi",
        language="fi",
        annif=annif,
    )
    with ThreadPoolExecutor(max_workers=1) as pool:
        yield client, pool.submit(client.provision)


@pytest.fixture(scope="module")
def workspace(
    provisioning: tuple[AnnifServer, Future[None]], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A kuoro fusion of a tfidf and a lexical source, trained on the shared YSO data."""
    work = tmp_path_factory.mktemp("kuoro")
    (work / "projects.toml").write_text(PROJECTS, encoding="utf-8")
    with gzip.open(YSO / "finna-titles.tsv.gz", "rt", encoding="utf-8") as titles:
        (work / "titles.tsv").write_text("".join(islice(titles, TITLES)), encoding="utf-8")
    with (LIBRARIAN / "train.tsv").open(encoding="utf-8") as train:
        (work / "fusion.tsv").write_text("".join(islice(train, FUSION_DOCS)), encoding="utf-8")
    assert main(kuoro(work, "load-vocab", "yso-fi", str(YSO / "vocab.tsv"), "-l", "fi")) == 0
    for source in ("yso-tfidf", "yso-lexical"):
        assert main(kuoro(work, "train", source, str(work / "titles.tsv"))) == 0
    assert main(kuoro(work, "train", "yso-fusion", str(work / "fusion.tsv"))) == 0
    return work


@pytest.fixture(scope="module")
def annif_client(
    provisioning: tuple[AnnifServer, Future[None]],
    workspace: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[AnnifServer]:
    """Annif, ready to ask ``kuoro serve`` (running until the module's tests are done)."""
    port = _free_port()
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-c", SERVE, *kuoro(workspace, "serve", "--port", str(port))],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while not _answers(f"http://127.0.0.1:{port}/health"):
            assert server.poll() is None, log_path.read_text(encoding="utf-8")
            assert time.monotonic() < deadline, log_path.read_text(encoding="utf-8")
            time.sleep(0.2)
        health = httpx.get(f"http://127.0.0.1:{port}/health").json()
        assert health["projects"]["yso-fusion"]["status"] == "ready", health
        client, provisioned = provisioning
        provisioned.result()
        config = client.workdir / "projects.cfg"
        config.write_text(config.read_text().replace(PORT, str(port)), encoding="utf-8")
        yield client
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def open_fusion(work: Path) -> Project:
    projects = load_projects(work / "projects.toml")
    return Project(projects["yso-fusion"], DataDir(work / "data"), projects)


def test_annif_reads_the_project_and_suggests_what_kuoro_ranks(
    annif_client: AnnifServer, workspace: Path
) -> None:
    # Annif reads is_trained and modification_time from the project's URL.
    shown = annif_client.run_annif("show-project", "kuoro")
    assert re.search(r"^Trained: +True$", shown, re.MULTILINE), shown
    assert re.search(r"^Modification time: +\d{4}-\d\d-\d\d \d\d:\d\d", shown, re.MULTILINE)
    done = subprocess.run(
        [str(annif_client.annif), "suggest", "kuoro"],
        input=TEXT,
        env=annif_client.env,
        capture_output=True,
        text=True,
        check=True,
    )
    lines = [line.split("\t") for line in done.stdout.strip().splitlines()]
    assert lines, done.stderr
    project = open_fusion(workspace)
    want = project.ranked(project.suggest([TEXT])[0], limit=10)
    assert len(lines) == len(want) == 10
    for (uri, label, score), suggestion in zip(lines, want, strict=True):
        assert uri == f"<{suggestion.uri}>" and label == suggestion.label
        assert float(score) == pytest.approx(suggestion.score, abs=5e-5)


def test_annif_eval_over_http_equals_kuoro_eval(
    annif_client: AnnifServer, workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    annif_metrics = _metrics(annif_client.run_annif("eval", "kuoro", str(LIBRARIAN / "test.tsv")))
    capsys.readouterr()
    assert main(kuoro(workspace, "eval", "yso-fusion", str(LIBRARIAN / "test.tsv"))) == 0
    kuoro_metrics = _metrics(capsys.readouterr().out)
    assert annif_metrics["Documents evaluated"] == kuoro_metrics["Documents evaluated"] == "312"
    compared = set(annif_metrics) & set(kuoro_metrics)
    expected_names = {
        "Precision@1", "Precision@3", "Precision@5", "F1@5", "NDCG", "NDCG@5", "NDCG@10",
        "Precision (doc avg)", "Recall (doc avg)", "F1 score (doc avg)",
    }  # fmt: skip
    assert expected_names <= compared
    different = {
        name: (annif_metrics[name], kuoro_metrics[name])
        for name in compared
        if abs(float(annif_metrics[name]) - float(kuoro_metrics[name])) > 1.01e-4
    }
    assert not different, different
    assert 0.2 < float(kuoro_metrics["NDCG@10"]) < 1  # a model that learnt something


def _metrics(output: str) -> dict[str, str]:
    """``Name: value`` lines as printed by ``annif eval`` and ``kuoro eval``."""
    metrics = {}
    for line in output.splitlines():
        name, colon, value = line.rpartition(":")
        if colon and value.strip():
            metrics[name.strip()] = value.strip()
    return metrics
