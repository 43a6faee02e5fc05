"""The commands that tune and explain a project: ``hyperopt`` and ``report``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from kuoro.cli.context import (
    Context,
    backend_param_option,
    device_option,
    docs_limit_option,
    pass_context,
)
from kuoro.cli.options import cluster_option, open_engine
from kuoro.corpus.limited import first_documents
from kuoro.project.cluster import ClusterSpec
from kuoro.util.wording import plural

if TYPE_CHECKING:
    from kuoro.project.project import Project

log = logging.getLogger("kuoro")


def _open(obj: Context, project_id: str, backend_params: Sequence[str] = ()) -> Project:
    """The project, with every configured project at hand (a fusion project's sources) and
    the ``--backend-param`` settings applied."""
    return obj.open_project(project_id, backend_params)


@click.command("hyperopt")
@click.argument("project_id")
@click.argument("corpus", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--trials", type=click.IntRange(min=1), default=30, show_default=True,
    help="Finished trials the search should have, counting those of earlier runs.",
)  # fmt: skip
@click.option(
    "-j", "--jobs", type=click.IntRange(min=1), default=1, show_default=True,
    help="Processes for the sources when the store is built; trials trained side by side.",
)  # fmt: skip
@cluster_option
@click.option(
    "--storage", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="SQLite file of the search  [default: DATADIR/projects/PROJECT_ID.hyperopt.sqlite3]",
)  # fmt: skip
@click.option(
    "--timeout", type=click.FloatRange(min=0, min_open=True), default=None,
    help="Start no trial after this many seconds.",
)  # fmt: skip
@click.option(
    "--seed", type=click.IntRange(min=0), default=0, show_default=True,
    help="Seed of the sampler (the held-out split follows the project's seed).",
)  # fmt: skip
@device_option
@docs_limit_option
@backend_param_option
@pass_context
def hyperopt_command(
    obj: Context,
    project_id: str,
    corpus: Sequence[Path],
    trials: int,
    jobs: int,
    cluster: ClusterSpec | None,
    storage: Path | None,
    timeout: float | None,
    seed: int,
    device: str,
    docs_limit: int | None,
    backend_params: Sequence[str],
) -> None:
    """Search the hyperparameters of fusion project PROJECT_ID on CORPUS.

    Each trial trains on the cached suggestions of CORPUS and is scored by nDCG@10 on the
    held-out documents, the same for every trial. The first trial is the configured
    parameters. The search is kept in SQLite: running the command again continues it up to
    --trials. Prints the best parameters as a projects.toml snippet.

    The held-out documents are the project's `validation` corpus, or a random part of CORPUS.
    A validation corpus like the documents the project will index (e.g. the most recent
    ones) makes the gain of the best trial likelier to carry over to them.
    """
    # Optuna, and torch through the trainer: heavy, loaded only to search.
    import optuna

    from kuoro.evaluation.hyperopt import run_hyperopt
    from kuoro.evaluation.search_results import MIN_IMPORTANCE_TRIALS, format_toml_snippet

    # Optuna logs every trial at INFO; its progress bar says enough unless -v asks for more.
    optuna.logging.set_verbosity(
        optuna.logging.INFO if obj.verbosity > 0 else optuna.logging.WARNING
    )
    project = _open(obj, project_id, backend_params)
    with (
        first_documents(corpus, docs_limit, project.vocabulary, project.config.language) as paths,
        open_engine(obj, jobs, cluster) as engine,
    ):
        result = run_hyperopt(
            project,
            paths,
            trials=trials,
            jobs=jobs,
            storage=storage,
            seed=seed,
            timeout=timeout,
            progress=obj.show_progress,
            device=device,
            engine=engine,
        )
    done = result.complete + result.pruned
    if result.trials_run == 0:
        click.echo(
            f"the search already has {plural(done, 'finished trial')}; raise --trials to run more",
            err=True,
        )
    click.echo(
        f"{plural(done, 'trial')} ({result.complete} complete, {result.pruned} pruned, "
        f"{result.trials_run} run now) in {result.storage}"
    )
    lines = []
    if result.baseline_value is not None:
        lines.append(("configured parameters", f"{result.baseline_value:.4f}"))
    best = f"{result.best_value:.4f}"
    if result.improvement is not None:
        best += f" ({result.improvement:+.4f})"
    lines.append((f"best, trial {result.best_trial}", best))
    width = max(len(name) for name, _ in lines)
    for name, value in lines:
        click.echo(f"{name:<{width}}  held-out nDCG@10 {value}")
    comment = f"best of {plural(done, 'trial')}: held-out nDCG@10 {result.best_value:.4f}"
    if result.improvement is not None:
        comment += f" ({result.improvement:+.4f} over the configured parameters)"
    click.echo()
    click.echo(format_toml_snippet(project_id, result.best_params, comment=comment), nl=False)
    click.echo()
    if result.importances:
        click.echo("parameter importance (share of the variation of nDCG@10):")
        width = max(map(len, result.importances))
        for name, share in result.importances.items():
            click.echo(f"  {name:<{width}}  {share:.3f}")
    else:
        click.echo(
            "parameter importance: too few trials for importances "
            f"({plural(result.complete, 'completed trial')}; at least {MIN_IMPORTANCE_TRIALS} "
            "are needed)"
        )


@click.command("report")
@click.argument("project_id")
@click.argument("corpus", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default="report.html",
    show_default=True, help="The HTML file to write.",
)  # fmt: skip
@click.option(
    "--limit", type=click.IntRange(min=1), default=10, show_default=True,
    help="Suggestions per document for the metrics.",
)  # fmt: skip
@click.option(
    "-j", "--jobs", type=click.IntRange(min=1), default=1, show_default=True,
    help="Processes for the suggestions.",
)  # fmt: skip
@cluster_option
@click.option(
    "--storage", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="SQLite file of the hyperopt search to show, as given to hyperopt --storage  "
    "[default: DATADIR/projects/PROJECT_ID.hyperopt.sqlite3]",
)  # fmt: skip
@pass_context
def report_command(
    obj: Context,
    project_id: str,
    corpus: Sequence[Path],
    output: Path,
    limit: int,
    jobs: int,
    cluster: ClusterSpec | None,
    storage: Path | None,
) -> None:
    """Evaluate PROJECT_ID on CORPUS and write a self-contained HTML report.

    The report shows the main metrics, the training curves, precision and recall against
    the number of suggestions and the score threshold, what each source contributes, the
    subjects served worst, the hyperparameter search (if one was run) and the documents the
    project gets most wrong.
    """
    # matplotlib, Optuna and torch: heavy, loaded only to write a report.
    from kuoro.evaluation.report import write_report

    project = _open(obj, project_id)
    if storage is not None and not storage.is_file():
        raise click.BadParameter(f"no such file: {storage}", param_hint="--storage")
    with open_engine(obj, jobs, cluster) as engine:
        path = write_report(
            project,
            list(corpus),
            output,
            limit=limit,
            jobs=jobs,
            progress=obj.show_progress,
            storage=storage,
            engine=engine,
        )
    click.echo(f"wrote {path}")
