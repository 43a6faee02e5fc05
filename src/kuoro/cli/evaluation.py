"""``kuoro eval`` and ``kuoro optimize``: a project scored on documents with gold subjects."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import click

from kuoro.cli.context import (
    Context,
    backend_param_option,
    check_label_language,
    docs_limit_option,
    label_language_option,
    pass_context,
)
from kuoro.corpus.documents import Corpus
from kuoro.errors import KuoroError
from kuoro.evaluation.concept_thresholds import (
    DEFAULT_MIN_SUPPORT,
    DEFAULT_SHRINKAGE,
    DEFAULT_SUPPORT,
    SHRINKAGES,
    SUPPORTS,
    learn_concept_thresholds,
)
from kuoro.evaluation.evaluate import evaluate, suggestion_batches
from kuoro.evaluation.metrics import ANNIF_ORDER
from kuoro.evaluation.optimize import GridAccumulator, GridPoint, best_point
from kuoro.project.batch import Engine, LocalEngine
from kuoro.project.cluster import ClusterSpec
from kuoro.project.thresholds import current_model_version

if TYPE_CHECKING:
    import scipy.sparse as sp

    from kuoro.corpus.documents import Document
    from kuoro.evaluation.metrics import SubjectResult
    from kuoro.project.project import Project

from kuoro.cli.options import (
    cluster_option,
    configured_project,
    corpus_size,
    jobs_option,
    limit_option,
    open_engine,
    threshold_option,
    with_progress,
    write_text,
)

log = logging.getLogger("kuoro")


# The order `eval` prints metrics in: Kuoro's first lines, then the rest in Annif's order (names
# as `annif eval` prints them), Kuoro's extra @k ones before LRAP and the counts.
_HEADLINE = (
    "Precision@1",
    "Precision@3",
    "Precision@5",
    "Recall@5",
    "F1@5",
    "NDCG",
    "NDCG@5",
    "NDCG@10",
)


EVAL_METRICS = (*_HEADLINE, *(name for name in ANNIF_ORDER if name not in _HEADLINE))


MISSING_SUBJECTS = "Gold subjects not in vocabulary"


_NAME_WIDTH = max(map(len, [*EVAL_METRICS, MISSING_SUBJECTS])) + 2


def _scored_batches(
    obj: Context,
    project: Project,
    documents: Iterable[Document],
    engine: Engine,
    desc: str,
    total: int | None,
) -> Iterator[tuple[sp.csr_matrix, list[tuple[int, ...]]]]:
    """(suggestion rows, gold subjects) per batch; the model is loaded before this returns
    when it runs here. ``total``: about how many documents there are, for the progress bar."""
    _load_here(project, engine)
    stream = suggestion_batches(project, documents, engine=engine)
    return (
        (rows, [d.subjects for d in batch])
        for batch, rows in with_progress(stream, desc, obj.show_progress, total)
    )


def _load_here(project: Project, engine: Engine) -> None:
    """Load the model before timing when this process runs it; workers load their own."""
    if isinstance(engine, LocalEngine) and engine.jobs == 1:
        _ = project.model


def _metric_line(name: str, value: float) -> str:
    shown = str(value) if isinstance(value, int) else f"{value:.4f}"
    return f"{name + ':':<{_NAME_WIDTH}}{shown}"


@click.command("eval")
@click.argument("project_id")
@click.argument("corpus", nargs=-1, required=True, type=click.Path(path_type=Path))
@limit_option
@threshold_option
@jobs_option
@cluster_option
@click.option(
    "-M", "--metrics-file", type=click.Path(dir_okay=False, path_type=Path),
    help="Also write every metric to this JSON file, flat as `annif eval` writes it: "
    '{"Precision_doc_avg": 0.41, "NDCG@10": 0.52, ...} (spaces as _, no brackets).',
)  # fmt: skip
@click.option(
    "-r", "--results-file", type=click.Path(dir_okay=False, path_type=Path),
    help="Write per-subject results to this TSV file, with Annif's columns (URI, Label, "
    "Support, True_positives, False_positives, False_negatives, Precision, Recall, F1_score); "
    "one line per subject that was gold or suggested, by support, descending.",
)  # fmt: skip
@docs_limit_option
@label_language_option
@backend_param_option
@pass_context
def eval_command(
    obj: Context,
    project_id: str,
    corpus: Sequence[Path],
    limit: int,
    threshold: float,
    jobs: int,
    cluster: ClusterSpec | None,
    metrics_file: Path | None,
    results_file: Path | None,
    docs_limit: int | None,
    label_language: str | None,
    backend_params: Sequence[str],
) -> None:
    """Evaluate PROJECT_ID on documents with gold subjects and print the metrics.

    The metrics are those of `annif eval`, with the same names and definitions, and Kuoro's
    extra ones; among them the expected calibration error: the gap between the predictions'
    scores and the share of them that is correct, over each document's --limit best
    suggestions in 10 equal-width score bins (0: the scores are probabilities). A project
    with thresholds = "per-concept" cuts its suggestions by each concept's threshold too.
    """
    project = configured_project(obj, project_id, backend_params)
    language = check_label_language(project, label_language)
    documents = Corpus(
        list(corpus), project.vocabulary, language=language or project.config.language
    )
    total = corpus_size(corpus, docs_limit)
    with open_engine(obj, jobs, cluster) as engine:
        _load_here(project, engine)
        batches = (
            (batch, project.apply_thresholds(rows))
            for batch, rows in suggestion_batches(
                project, documents, limit=docs_limit, engine=engine
            )
        )
        evaluation = evaluate(
            with_progress(batches, "evaluating", obj.show_progress, total),
            limit=limit,
            threshold=threshold,
            n_concepts=len(project.vocabulary),
        )
    results = evaluation.metrics
    missing = sum(documents.report.unknown_subjects.values())
    for name in EVAL_METRICS:
        click.echo(_metric_line(name, results[name]))
    click.echo(_metric_line(MISSING_SUBJECTS, missing))
    log.info(
        "evaluated in %.1f s (%.1f documents/s)",
        evaluation.seconds,
        evaluation.documents / evaluation.seconds,
    )
    if metrics_file is not None:
        # Flat, every value a number, as pipelines (DVC) read Annif's file; Annif's metrics in
        # Annif's order with Kuoro's extra ones (Recall@k, F1@1, F1@3, LRAP, gold subjects not
        # in the vocabulary) as further keys of the same kind.
        flat = {metric_code(name): results[name] for name in ANNIF_ORDER}
        flat[metric_code(MISSING_SUBJECTS)] = missing
        write_text(metrics_file, json.dumps(flat, indent=2) + "\n")
        log.info("metrics written to %s", metrics_file)
    if results_file is not None:
        write_text(results_file, _subject_table(project, evaluation.subjects, language))
        log.info("per-subject results written to %s", results_file)


def metric_code(name: str) -> str:
    """A metric's key in the metrics file, as Annif writes it: "Precision (doc avg)" is
    "Precision_doc_avg", "NDCG@10" stays."""
    return name.replace(" ", "_").replace("(", "").replace(")", "")


# Annif's columns of `eval --results-file`.
RESULTS_COLUMNS = (
    "URI", "Label", "Support", "True_positives", "False_positives", "False_negatives",
    "Precision", "Recall", "F1_score",
)  # fmt: skip


def _subject_table(
    project: Project, results: Sequence[SubjectResult], language: str | None = None
) -> str:
    vocab = project.vocabulary
    if language is None and project.config.language in vocab.languages:
        language = project.config.language
    lines = ["\t".join(RESULTS_COLUMNS) + "\n"]
    for r in results:  # by support, descending, as subject_results() gives them
        label = (vocab.label(r.concept, language) or "").replace("\t", " ")
        lines.append(
            f"{vocab.uri(r.concept)}\t{label}\t{r.support}\t{r.hits}\t{r.predicted - r.hits}\t"
            f"{r.support - r.hits}\t{r.precision:.4f}\t{r.recall:.4f}\t{r.f1:.4f}\n"
        )
    return "".join(lines)


# Bounds of `optimize`'s grid: every limit up to the largest is evaluated at every threshold.
MAX_GRID_LIMIT = 1000


MAX_GRID_THRESHOLDS = 1000


MAX_GRID_POINTS = 100_000


def _number_list(text: str, kind: type[float], low: float, high: float, most: int) -> list[float]:
    """Comma-separated values and inclusive FROM-TO[:STEP] ranges: "1-20", "1,3,5", "0-0.5:0.1".

    Every value lies in [low, high] and there are at most ``most``: checked before a range is
    spelled out, so that "1-100000000" is refused at once.
    """
    numbers: list[float] = []

    def number(word: str) -> float:
        value = kind(word)
        if math.isnan(value) or not low <= value <= high:
            raise click.BadParameter(f"{word.strip()} is not between {low:g} and {high:g}")
        return value

    for item in text.split(","):
        span, _, step_text = item.strip().partition(":")
        first, dash, last = span.partition("-")
        if not dash:
            if step_text:
                raise click.BadParameter(f"{item.strip()!r}: a step needs a range, FROM-TO:STEP")
            numbers.append(number(span))
            continue
        start, stop = number(first), number(last)
        step = kind(step_text) if step_text else kind(1 if kind is int else 0.05)
        if not step > 0 or stop < start:  # `not >`: a nan step is refused too
            raise click.BadParameter(f"{item.strip()!r}: a range goes up, by a positive step")
        span_steps = (stop - start) / step  # inf for a step too small to count
        if not span_steps < most:
            raise click.BadParameter(f"{text!r} has more than {most} values")
        count = math.floor(span_steps + 1e-9) + 1
        if len(numbers) + count > most:
            raise click.BadParameter(f"{text!r} has more than {most} values")
        # Rounded, so that 0.15 is the float 0.15 and not 0.15000000000000002.
        numbers.extend(kind(round(start + i * step, 10)) for i in range(count))
    if len(numbers) > most:
        raise click.BadParameter(f"{text!r} has more than {most} values")
    return sorted(set(numbers))


def _check_grid(ctx: click.Context, limits: object, thresholds: object) -> None:
    """Refuse a grid too big to evaluate; checked by whichever option click reads second."""
    if not isinstance(limits, tuple) or not isinstance(thresholds, tuple):
        return
    points = max(limits) * len(thresholds)
    if points > MAX_GRID_POINTS:
        raise click.UsageError(
            f"the grid of limits up to {max(limits)} by {len(thresholds)} thresholds has "
            f"{points} points; at most {MAX_GRID_POINTS}: fewer thresholds or smaller limits",
            ctx,
        )


def _limits(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        limits = tuple(int(n) for n in _number_list(value, int, 1, MAX_GRID_LIMIT, MAX_GRID_LIMIT))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a list like 1-20 or 1,3,5") from None
    _check_grid(ctx, limits, ctx.params.get("thresholds"))
    return limits


def _thresholds(ctx: click.Context, param: click.Parameter, value: str) -> tuple[float, ...]:
    try:
        thresholds = tuple(_number_list(value, float, 0.0, 1.0, MAX_GRID_THRESHOLDS))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a list like 0-0.95:0.05 or 0,0.2,0.4") from None
    _check_grid(ctx, ctx.params.get("limits"), thresholds)
    return thresholds


# What `optimize` reports the best of, as `annif optimize` does.
_OPTIMIZED: tuple[tuple[Literal["precision", "recall", "f1"], str], ...] = (
    ("precision", "Precision"),
    ("recall", "Recall"),
    ("f1", "F1 score"),
)


@click.command("optimize")
@click.argument("project_id")
@click.argument("corpus", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--limits", default="1-20", show_default=True, callback=_limits,
    help="Limits to try: ranges and/or values, comma-separated (1-20, 1,3,5).",
)  # fmt: skip
@click.option(
    "--thresholds", default="0-0.95:0.05", show_default=True, callback=_thresholds,
    help="Thresholds to try: FROM-TO:STEP ranges and/or values, comma-separated.",
)  # fmt: skip
@jobs_option
@cluster_option
@click.option("--show-grid", is_flag=True, help="Also print every point of the grid.")
@click.option(
    "--grid-file", type=click.Path(dir_okay=False, path_type=Path),
    help="Write every point of the grid to this TSV file.",
)  # fmt: skip
@docs_limit_option
@click.option(
    "--per-concept", is_flag=True,
    help="Also learn a threshold per concept at the best limit and threshold, and save them "
    "with the project for its current model (applied where the project has "
    'thresholds = "per-concept").',
)  # fmt: skip
@click.option(
    "--min-support", type=click.IntRange(1, 1_000_000), default=DEFAULT_MIN_SUPPORT,
    show_default=True,
    help="With --per-concept: gold occurrences in CORPUS a concept needs for a threshold of "
    "its own; one with fewer is shrunk towards the global threshold.",
)  # fmt: skip
@click.option(
    "--shrinkage", type=click.Choice(SHRINKAGES), default=DEFAULT_SHRINKAGE, show_default=True,
    help="With --per-concept: how a concept below --min-support is shrunk: blend (towards its "
    "own in proportion to its support) or fallback (the global threshold).",
)  # fmt: skip
@click.option(
    "--support", "support_from", type=click.Choice(SUPPORTS), default=DEFAULT_SUPPORT,
    show_default=True,
    help="With --per-concept: what counts towards a concept's support: its gold occurrences, "
    "or also the documents where it is predicted wrongly (at the best limit and threshold).",
)  # fmt: skip
@backend_param_option
@pass_context
def optimize_command(
    obj: Context,
    project_id: str,
    corpus: Sequence[Path],
    limits: tuple[int, ...],
    thresholds: tuple[float, ...],
    jobs: int,
    cluster: ClusterSpec | None,
    show_grid: bool,
    grid_file: Path | None,
    docs_limit: int | None,
    per_concept: bool,
    min_support: int,
    shrinkage: str,
    support_from: str,
    backend_params: Sequence[str],
) -> None:
    """Find the limit and threshold that give PROJECT_ID its best F1 on CORPUS.

    Suggests for each document once, then evaluates document-average precision, recall and F1
    (as `annif optimize` does) at every limit and threshold.

    With --per-concept it then learns each concept's own threshold at the best limit (see the
    README, "Per-concept thresholds") and saves them in the data directory for the project's
    current model; a retrained model does not use them. Learn them on held-out documents
    (e.g. validate.tsv): the F1 printed for them is on CORPUS itself.
    """
    project = configured_project(obj, project_id, backend_params)
    documents = Corpus(list(corpus), project.vocabulary, language=project.config.language)
    grid = GridAccumulator(limits, thresholds)
    version = current_model_version(project.datadir, project_id) if per_concept else None
    kept: list[tuple[sp.csr_matrix, list[tuple[int, ...]]]] = []
    with open_engine(obj, jobs, cluster) as engine:
        batches = _scored_batches(
            obj,
            project,
            islice(documents, docs_limit),
            engine,
            "optimizing",
            corpus_size(corpus, docs_limit),
        )
        started = time.perf_counter()
        for rows, gold in batches:
            grid.update(rows, gold)
            if per_concept:
                kept.append((rows, gold))
        seconds = time.perf_counter() - started
    if not grid.documents:
        raise KuoroError("no documents to evaluate")
    log.info("evaluated in %.1f s (%.1f documents/s)", seconds, grid.documents / seconds)
    points = grid.points()
    if show_grid:
        click.echo(f"{'limit':>5}  {'threshold':>9}  {'precision':>9}  {'recall':>9}  {'f1':>9}")
        for p in points:
            click.echo(
                f"{p.limit:>5}  {_threshold(p.threshold):>9}  {p.precision:>9.4f}  "
                f"{p.recall:>9.4f}  {p.f1:>9.4f}"
            )
        click.echo()
    for metric, name in _OPTIMIZED:
        best = best_point(points, metric)
        click.echo(
            f"{f'Best {name} (doc avg):':<28}{getattr(best, metric):.4f}  "
            f"limit {best.limit}, threshold {_threshold(best.threshold)}"
        )
    click.echo(f"{'Documents evaluated:':<28}{grid.documents}")
    best = best_point(points, "f1")
    click.echo(f"Best F1 with: --limit {best.limit} --threshold {_threshold(best.threshold)}")
    if grid_file is not None:
        lines = ["limit\tthreshold\tprecision\trecall\tf1\n"] + [
            f"{p.limit}\t{_threshold(p.threshold)}\t{p.precision:.6f}\t{p.recall:.6f}\t{p.f1:.6f}\n"
            for p in points
        ]
        write_text(grid_file, "".join(lines))
        log.info("grid written to %s", grid_file)
    if version is not None:
        _learn_per_concept(
            project, kept, best, version, thresholds, min_support, shrinkage, support_from
        )


def _learn_per_concept(
    project: Project,
    scored: Sequence[tuple[sp.csr_matrix, list[tuple[int, ...]]]],
    best: GridPoint,
    version: str,
    candidates: Sequence[float],
    min_support: int,
    shrinkage: str,
    support_from: str,
) -> None:
    """Learn per-concept thresholds at the best point and save them for model ``version``."""
    import scipy.sparse as sp

    if current_model_version(project.datadir, project.project_id) != version:
        raise KuoroError(
            f"project '{project.project_id}' was trained again while it was being optimized: "
            "run optimize again"
        )
    rows = sp.vstack([r for r, _ in scored], format="csr")
    gold = [g for _, batch_gold in scored for g in batch_gold]
    learnt = learn_concept_thresholds(
        rows,
        gold,
        limit=best.limit,
        threshold=best.threshold,
        model_version=version,
        candidates=candidates,
        min_support=min_support,
        shrinkage=shrinkage,
        support_from=support_from,
    )
    found = learnt.thresholds
    path = project.datadir.thresholds_path(project.project_id)
    found.save(path)
    supported = int((found.support >= min_support).sum())
    counted = "gold occurrences" if support_from == "gold" else "gold or wrong predictions"
    click.echo(
        f"Per-concept thresholds at limit {best.limit}: {found.changed()} concepts differ from "
        f"the global {_threshold(best.threshold)} ({supported} concepts have at least "
        f"{min_support} {counted}; shrinkage {shrinkage})"
    )
    click.echo(
        f"{'F1 score (doc avg):':<28}{learnt.f1:.4f}  per-concept, "
        f"{learnt.global_f1:.4f} global (on this corpus, which they were learnt on)"
    )
    click.echo(
        f"Saved to {path} for model {version}; applied where project "
        f"'{project.project_id}' has thresholds = \"per-concept\" (use --limit {best.limit})"
    )


def _threshold(value: float) -> str:
    """0.15 as "0.15"; finer thresholds with the digits they need."""
    return f"{value:.2f}" if round(value, 2) == value else f"{value:g}"
