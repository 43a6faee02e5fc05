"""What every ``kuoro`` subcommand shares: the global options and small output helpers."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

from kuoro.datadir import DataDir
from kuoro.errors import NotFoundError

if TYPE_CHECKING:
    from kuoro.config import ProjectConfig
    from kuoro.project import Project


@dataclass
class Context:
    """Options of the top-level command, shared by every subcommand."""

    datadir: DataDir
    projects_path: str | None
    verbosity: int

    def projects(self) -> dict[str, ProjectConfig]:
        from kuoro.config import find_projects_file, load_projects

        return load_projects(find_projects_file(self.projects_path, Path.cwd()))

    def project(self, project_id: str) -> ProjectConfig:
        projects = self.projects()
        if project_id not in projects:
            known = ", ".join(projects) or "none"
            raise NotFoundError(f"no project '{project_id}' (configured: {known})")
        return projects[project_id]

    def open_project(self, project_id: str) -> Project:
        from kuoro.project import Project

        return Project(self.project(project_id), self.datadir)

    @property
    def show_progress(self) -> bool:
        """Progress bars on stderr: on a terminal, unless --quiet."""
        return self.verbosity >= 0 and sys.stderr.isatty()


pass_context = click.make_pass_decorator(Context)
device_option = click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
    help="Where fusion models train (auto: a GPU when torch sees one).",
)  # fmt: skip


def progress_disabled(obj: Context) -> bool | None:
    # None lets tqdm decide: a bar on a terminal, nothing in logs and pipes.
    return True if obj.verbosity < 0 else None


def echo_table(rows: Sequence[Sequence[str]]) -> None:
    """Print rows as left-aligned columns; the first row is the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
