"""What every ``kuoro`` subcommand shares: the global options and small output helpers."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import click

from kuoro.config.overrides import with_backend_params
from kuoro.config.projects import ProjectConfig, find_projects_file, load_projects
from kuoro.errors import ConfigError, NotFoundError
from kuoro.project.datadir import DataDir
from kuoro.project.project import Project


@dataclass
class Context:
    """Options of the top-level command, shared by every subcommand."""

    datadir: DataDir
    projects_path: str | None
    verbosity: int

    def projects(self) -> dict[str, ProjectConfig]:
        return load_projects(find_projects_file(self.projects_path, Path.cwd()))

    def project(self, project_id: str) -> ProjectConfig:
        projects = self.projects()
        if project_id not in projects:
            known = ", ".join(projects) or "none"
            raise NotFoundError(f"no project '{project_id}' (configured: {known})")
        return projects[project_id]

    def open_project(self, project_id: str, backend_params: Sequence[str] = ()) -> Project:
        """The project, with every configured project at hand (a fusion project's sources)
        and ``--backend-param`` settings applied for this run."""
        projects = self.projects()
        config = self.project(project_id)
        try:
            config = with_backend_params(config, backend_params)
        except ConfigError as exc:
            raise click.BadParameter(
                str(exc), click.get_current_context(silent=True), param_hint="'--backend-param'"
            ) from None
        return Project(config, self.datadir, projects)

    @property
    def show_progress(self) -> bool:
        """Progress bars on stderr: on a terminal, unless --quiet."""
        return self.verbosity >= 0 and sys.stderr.isatty()


pass_context = click.make_pass_decorator(Context)
device_option = click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
    help="Where fusion models train (auto: a GPU when torch sees one).",
)  # fmt: skip


docs_limit_option = click.option(
    "-d", "--docs-limit", type=click.IntRange(min=1), default=None, metavar="N",
    help="Use only the first N documents of the corpus.",
)  # fmt: skip
backend_param_option = click.option(
    "-b", "--backend-param", "backend_params", multiple=True, metavar="BACKEND.PARAM=VALUE",
    help="Set a parameter of the project's backend for this run, e.g. -b kuoro.max_epochs=5 "
    "(as Annif's -b; checked like projects.toml values; may be repeated).",
)  # fmt: skip
label_language_option = click.option(
    "-L", "--language", "label_language", default=None, metavar="LANG",
    help="Language of subject labels (default: the project's).",
)  # fmt: skip


def check_label_language(project: Project, language: str | None) -> str | None:
    """``--language``, checked against the vocabulary's languages; None when not given."""
    if language is not None and language not in project.vocabulary.languages:
        raise click.BadParameter(
            f"vocabulary '{project.config.vocab}' has no labels in '{language}' "
            f"(it has: {', '.join(project.vocabulary.languages) or 'none'})",
            click.get_current_context(silent=True),
            param_hint="'--language'",
        )
    return language


def progress_disabled(obj: Context) -> bool | None:
    # None lets tqdm decide: a bar on a terminal, nothing in logs and pipes.
    return True if obj.verbosity < 0 else None


def echo_table(rows: Sequence[Sequence[str]]) -> None:
    """Print rows as left-aligned columns; the first row is the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
