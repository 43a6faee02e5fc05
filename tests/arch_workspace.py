"""A small trained workspace on the archaeology data, as the CLI tests of fusion projects use.

The first ``fusion_docs`` documents of ``documents.tsv`` become ``fusion.tsv`` (what fusion
models train on) and the rest ``sources.tsv`` (what the sources train on), so that the fusion
model learns from suggestions on documents the sources never saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from kuoro.cli import main
from kuoro.config.projects import load_projects
from kuoro.project.datadir import DataDir
from kuoro.project.project import Project

from conftest import SHARED_DATA

ARCH = SHARED_DATA / "archaeology"
FUSION_DOCS = 1200


def kuoro(work: Path, *args: str) -> list[str]:
    """Command-line arguments for ``main`` that run ``args`` in the workspace ``work``."""
    return ["--datadir", str(work / "data"), "--projects", str(work / "projects.toml"), *args]


def open_project(work: Path, project_id: str, data: DataDir | None = None) -> Project:
    projects = load_projects(work / "projects.toml")
    return Project(projects[project_id], data or DataDir(work / "data"), projects)


def make_workspace(
    work: Path,
    projects_toml: str,
    *,
    sources: Sequence[str],
    fusion: Sequence[str] = (),
    fusion_docs: int = FUSION_DOCS,
) -> Path:
    """``work`` with ``projects_toml``, the archaeology vocabulary loaded as ``arch``, the
    ``sources`` trained on sources.tsv and then the ``fusion`` projects on fusion.tsv."""
    (work / "projects.toml").write_text(projects_toml, encoding="utf-8")
    lines = (ARCH / "documents.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    (work / "fusion.tsv").write_text("".join(lines[:fusion_docs]), encoding="utf-8")
    (work / "sources.tsv").write_text("".join(lines[fusion_docs:]), encoding="utf-8")
    vocab = str(ARCH / "yso-archaeology.ttl")
    assert main(kuoro(work, "load-vocab", "arch", vocab, "-l", "fi")) == 0
    for project_id in sources:
        assert main(kuoro(work, "train", project_id, str(work / "sources.tsv"))) == 0
    for project_id in fusion:
        assert main(kuoro(work, "train", project_id, str(work / "fusion.tsv"))) == 0
    return work
