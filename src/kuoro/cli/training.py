"""``kuoro train`` and ``kuoro learn``: a project trained on documents, or updated with new ones."""

from __future__ import annotations

import logging
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
from kuoro.cli.options import cluster_option, configured_project, jobs_option, open_engine
from kuoro.corpus.limited import first_documents
from kuoro.project.cluster import ClusterSpec
from kuoro.util.wording import plural

log = logging.getLogger("kuoro")


@click.command("learn")
@click.argument("project_id")
@click.argument("corpus", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-j", "--jobs", type=click.IntRange(min=1), default=1, show_default=True,
    help="Parallel jobs running the sources over the new documents.",
)  # fmt: skip
@cluster_option
@device_option
@docs_limit_option
@backend_param_option
@pass_context
def learn_command(
    obj: Context,
    project_id: str,
    corpus: Sequence[Path],
    jobs: int,
    cluster: ClusterSpec | None,
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
    with (
        first_documents(corpus, docs_limit, project.vocabulary, project.config.language) as paths,
        open_engine(obj, jobs, cluster) as engine,
    ):
        summary = project.learn(
            paths, jobs=jobs, progress=obj.show_progress, device=device, engine=engine
        )
    click.echo(
        f"'{project_id}' learnt from {plural(summary.documents, 'document')} in "
        f"{summary.seconds:.1f} s -> {summary.model_dir}"
    )
    click.echo(summary.report)


@click.command("train")
@click.argument("project_id")
@click.argument("corpus", nargs=-1, required=True, type=click.Path(path_type=Path))
@jobs_option
@cluster_option
@click.option(
    "--cached/--no-cached", default=True, show_default=True,
    help="Fusion: reuse the sources' stored suggestions while sources and corpus are unchanged, "
    "and resume an interrupted training of the same data and parameters.",
)  # fmt: skip
@device_option
@docs_limit_option
@backend_param_option
@pass_context
def train_command(
    obj: Context,
    project_id: str,
    corpus: Sequence[Path],
    jobs: int,
    cluster: ClusterSpec | None,
    cached: bool,
    device: str,
    docs_limit: int | None,
    backend_params: Sequence[str],
) -> None:
    """Train PROJECT_ID on one or more CORPUS paths (read in sequence).

    A fusion project runs its trained sources over the corpus (once: their suggestions are
    stored and reused) and trains its model on them.
    """
    project = configured_project(obj, project_id, backend_params)
    if cluster is not None and project.config.kind != "fusion":
        log.info(
            "'%s' is a source project: it trains here (--cluster runs sources over the "
            "documents of a fusion project's store, index, eval and suggest)",
            project_id,
        )
        cluster = None
    with (
        first_documents(corpus, docs_limit, project.vocabulary, project.config.language) as paths,
        open_engine(obj, jobs, cluster) as engine,
    ):
        summary = project.train(
            paths,
            jobs=jobs,
            progress=obj.show_progress,
            cached=cached,
            device=device,
            engine=engine,
        )
    click.echo(
        f"trained '{project_id}' on {plural(summary.documents, 'document')} in "
        f"{summary.seconds:.1f} s -> {summary.model_dir}"
    )
    if summary.report:
        click.echo(summary.report)
