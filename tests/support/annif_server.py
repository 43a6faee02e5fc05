"""A real Annif server for tests, from the pinned PyPI release in its own virtual environment.

``ensure_annif()`` installs Annif once per machine into ``$KUORO_ANNIF_VENV`` (default
``<repo>/.cache/annif-venv``, git-ignored) and reuses it while it holds the pinned version.
``AnnifServer`` writes an Annif data directory (projects.cfg, a vocabulary, trained projects)
under a temporary directory, runs ``annif run`` on a free local port and stops it at the end.
The session fixture ``annif_server`` does both, and skips only when Annif cannot be installed
because no package index is reachable.
"""

from __future__ import annotations

import fcntl
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import httpx
import pytest

from support.data import REPO, SHARED_DATA

ANNIF_VERSION = "1.4.3"
ARCHAEOLOGY = SHARED_DATA / "archaeology"

# What pip prints when it cannot reach a package index (as opposed to a broken install).
_OFFLINE = re.compile(
    r"NewConnectionError|Network is unreachable|Temporary failure in name resolution|"
    r"Name or service not known|Max retries exceeded|ProxyError|ConnectTimeout|"
    r"No matching distribution found for annif|Could not find a version that satisfies"
)


class AnnifUnavailable(RuntimeError):
    """Annif cannot be installed here because no package index is reachable."""


def _progress(message: str) -> None:
    # Straight to the terminal: pytest captures sys.stderr, and a silent minute looks stuck.
    print(f"[annif] {message}", file=sys.__stderr__, flush=True)


def annif_venv() -> Path:
    """Where Annif's virtual environment lives: ``$KUORO_ANNIF_VENV`` or ``.cache/annif-venv``."""
    return Path(os.environ.get("KUORO_ANNIF_VENV") or REPO / ".cache" / "annif-venv")


def ensure_annif(venv: Path | None = None) -> Path:
    """The ``annif`` command of a virtual environment holding Annif ANNIF_VERSION, installed
    there first if needed (one install per machine; concurrent callers wait for each other)."""
    venv = venv or annif_venv()
    annif = venv / "bin" / "annif"
    marker = venv / ".kuoro-annif-version"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with (venv.parent / f"{venv.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if annif.is_file() and marker.is_file() and marker.read_text().strip() == ANNIF_VERSION:
            return annif
        _install(venv)
        # Written last, so that an interrupted install is redone rather than trusted.
        marker.write_text(ANNIF_VERSION + "\n")
    return annif


def _install(venv: Path) -> None:
    started = time.monotonic()
    _progress(f"installing annif=={ANNIF_VERSION} into {venv} (once per machine, about a minute)")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    command = [
        str(venv / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--progress-bar",
        "off",
        f"annif=={ANNIF_VERSION}",
    ]
    output: list[str] = []
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as pip:
        assert pip.stdout is not None
        for line in pip.stdout:
            output.append(line)
            if line.startswith(("Collecting", "Installing", "Successfully")):
                _progress(line.strip()[:120])
    if pip.returncode != 0:
        text = "".join(output)
        tail = "\n".join(text.strip().splitlines()[-15:])
        if _OFFLINE.search(text):
            raise AnnifUnavailable(f"no package index reachable ({tail.splitlines()[-1]})")
        raise RuntimeError(f"installing annif=={ANNIF_VERSION} failed:\n{tail}")
    _progress(f"annif installed in {time.monotonic() - started:.0f} s")


@dataclass(frozen=True)
class AnnifProject:
    """One project of the server: Annif backend, projects.cfg keys, and a corpus to train on
    (None leaves it untrained, so that the server answers 503 for it)."""

    project_id: str
    backend: str
    params: Mapping[str, str] = field(default_factory=dict)
    train: Path | None = None


ARCHAEOLOGY_PROJECTS = (
    AnnifProject(
        "arch-tfidf", "tfidf", {"analyzer": "simple", "limit": "100"}, ARCHAEOLOGY / "documents.tsv"
    ),
    AnnifProject("arch-dummy", "dummy"),
    AnnifProject("arch-untrained", "tfidf", {"analyzer": "simple"}),
)


class AnnifServer:
    """A provisioned Annif data directory and, between start() and stop(), a running server."""

    def __init__(
        self,
        workdir: Path,
        projects: Sequence[AnnifProject] = ARCHAEOLOGY_PROJECTS,
        *,
        vocab_file: Path = ARCHAEOLOGY / "subjects.tsv",
        vocab_id: str = "arch",
        language: str = "fi",
        annif: Path | None = None,
    ) -> None:
        self.workdir = workdir
        self.projects = tuple(projects)
        self.vocab_file = vocab_file
        self.vocab_id = vocab_id
        self.language = language
        self.annif = annif or ensure_annif()
        self.log_path = workdir / "server.log"
        self.port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        """The API's base URL, e.g. ``http://127.0.0.1:PORT/v1``."""
        if self.port is None:
            raise RuntimeError("the Annif server is not running")
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "ANNIF_PROJECTS": str(self.workdir / "projects.cfg"),
            "ANNIF_DATADIR": str(self.workdir / "data"),
            "NLTK_DATA": str(self.workdir / "nltk_data"),
        }

    def run_annif(self, *args: str) -> str:
        """Run an ``annif`` command on this data directory; its output, or an error with it."""
        done = subprocess.run(
            [str(self.annif), *args], env=self.env, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"annif {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
        return done.stdout

    def provision(self) -> None:
        """Write projects.cfg, load the vocabulary and train the projects that have a corpus."""
        started = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_punkt_parameters()
        sections = []
        for p in self.projects:
            keys = {
                "name": p.project_id,
                "language": self.language,
                "backend": p.backend,
                "vocab": self.vocab_id,
                **p.params,
            }
            sections.append(f"[{p.project_id}]\n" + "".join(f"{k}={v}\n" for k, v in keys.items()))
        (self.workdir / "projects.cfg").write_text("\n".join(sections), encoding="utf-8")
        self.run_annif(
            "load-vocab", "--language", self.language, self.vocab_id, str(self.vocab_file)
        )
        for p in self.projects:
            if p.train is not None:
                self.run_annif("train", p.project_id, str(p.train))
        _progress(
            f"provisioned {len(self.projects)} projects in {time.monotonic() - started:.0f} s"
        )

    def _write_punkt_parameters(self) -> None:
        # Annif's analyzers insist on NLTK's "punkt_tab" sentence tokenizer data and would
        # download it, which is impossible offline. Empty parameters are a valid, untrained
        # Punkt model (no known abbreviations): tokenising works, sentence splits are naive.
        english = self.workdir / "nltk_data" / "tokenizers" / "punkt_tab" / "english"
        english.mkdir(parents=True, exist_ok=True)
        for name in (
            "collocations.tab",
            "sent_starters.txt",
            "abbrev_types.txt",
            "ortho_context.tab",
        ):
            (english / name).touch()

    def start(self, timeout: float = 60.0) -> None:
        """Start ``annif run`` on a free port and wait until ``GET /v1/projects`` answers."""
        self.port = _free_port()
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [str(self.annif), "run", "--host", "127.0.0.1", "--port", str(self.port)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"annif run exited with {self._process.returncode}:\n{self.log()}"
                )
            try:
                if httpx.get(f"{self.base_url}/projects", timeout=2).is_success:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"annif run did not answer within {timeout:g} s:\n{self.log()}")
            time.sleep(0.2)

    def stop(self) -> None:
        """Stop the server (the data directory stays, so start() can run it again)."""
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        self.port = None

    def log(self) -> str:
        """The end of the server's output, for error messages."""
        if not self.log_path.is_file():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-3000:]

    def __enter__(self) -> AnnifServer:
        self.provision()
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def annif_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnnifServer]:
    """A running Annif server with the archaeology projects of ARCHAEOLOGY_PROJECTS."""
    if not ARCHAEOLOGY.exists():
        pytest.skip("../shared/data not found: the Annif server is trained on archaeology data")
    try:
        annif = ensure_annif()
    except AnnifUnavailable as exc:
        pytest.skip(f"Annif {ANNIF_VERSION} cannot be installed here: {exc}")
    with AnnifServer(tmp_path_factory.mktemp("annif"), annif=annif) as server:
        yield server
