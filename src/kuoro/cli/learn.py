"""``kuoro learn``: update a trained fusion model with new documents."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click

from kuoro.cli.context import (
    Context,
    backend_param_option,
    device_option,
    docs_limit_option,
    pass_context,
)
from kuoro.corpus.limited import first_documents
from kuoro.util.wording import plural


@click.command("learn")
@click.argument("project_id")
@click.argument("corpus", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-j", "--jobs", type=click.IntRange(min=1), default=1, show_default=True,
    help="Parallel jobs running the sources over the new documents.",
)  # fmt: skip
@device_option
@docs_limit_option
@backend_param_option
@pass_context
def learn_command(
    obj: Context,
    project_id: str,
    corpus: Sequence[Path],
    jobs: int,
    device: str,
    docs_limit: int | None,
    backend_params: Sequence[str],
) -> None:
    """Update the trained fusion project PROJECT_ID with the documents of CORPUS.

    Training goes on from the current model over the new documents and, while its suggestion
    store is still the one it was trained on, the original training documents too; the epoch
    kept is chosen on the original held-out documents, and the current model stays unless an
    epoch beats it there.
    """
    project = obj.open_project(project_id, backend_params)
    with first_documents(corpus, docs_limit, project.vocabulary, project.config.language) as paths:
        summary = project.learn(paths, jobs=jobs, progress=obj.show_progress, device=device)
    click.echo(
        f"'{project_id}' learnt from {plural(summary.documents, 'document')} in "
        f"{summary.seconds:.1f} s -> {summary.model_dir}"
    )
    click.echo(summary.report)
