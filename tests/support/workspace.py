"""Small trained workspaces on the archaeology data, as the command-line tests use them.

``make_workspace``: the first ``fusion_docs`` documents of ``documents.tsv`` become
``fusion.tsv`` (what fusion models train on) and the rest ``sources.tsv`` (what the sources
train on), so that the fusion model learns from suggestions on documents the sources never saw.

``make_held_out_workspace``: source projects trained on the first TRAIN_DOCS documents and
the next HELD_OUT_DOCS kept apart, to evaluate or tune on.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from kuoro.cli import main
from kuoro.config.projects import load_projects
from kuoro.project.datadir import DataDir
from kuoro.project.project import Project

from support.data import SHARED_DATA

ARCH = SHARED_DATA / "archaeology"
FUSION_DOCS = 1200
TRAIN_DOCS = 2000
HELD_OUT_DOCS = 300


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


def make_held_out_workspace(
    work: Path,
    projects_toml: str,
    *,
    held_out: str,
    train: Sequence[str] = ("arch-tfidf",),
    quiet: bool = False,
) -> Path:
    """``work`` with ``projects_toml``, ``train.tsv`` (the first TRAIN_DOCS archaeology
    documents), the HELD_OUT_DOCS after them in ``held_out``, the archaeology vocabulary loaded
    as ``arch`` and the ``train`` projects trained on train.tsv (with ``-q`` if ``quiet``)."""
    (work / "projects.toml").write_text(projects_toml, encoding="utf-8")
    lines = (ARCH / "documents.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    (work / "train.tsv").write_text("".join(lines[:TRAIN_DOCS]), encoding="utf-8")
    held_out_lines = lines[TRAIN_DOCS : TRAIN_DOCS + HELD_OUT_DOCS]
    (work / held_out).write_text("".join(held_out_lines), encoding="utf-8")
    assert main(kuoro(work, "load-vocab", "arch", str(ARCH / "yso-archaeology.ttl"))) == 0
    options = ["-q"] if quiet else []
    for project_id in train:
        assert main(kuoro(work, *options, "train", project_id, str(work / "train.tsv"))) == 0
    return work
