"""The commands that train projects and use them: ``train``, ``suggest``, ``index``, ``eval``."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from kuoro.cli_context import Context, pass_context
from kuoro.errors import KuoroError

if TYPE_CHECKING:
    import scipy.sparse as sp

    from kuoro.corpus import Document
    from kuoro.project import Project

log = logging.getLogger("kuoro")

# The order `eval` prints metrics in; names as `annif eval` prints them.
EVAL_METRICS = (
    "Precision@1",
    "Precision@3",
    "Precision@5",
    "Recall@5",
    "F1@5",
    "NDCG",
    "NDCG@5",
    "NDCG@10",
    "Precision (doc avg)",
    "Recall (doc avg)",
    "F1 score (doc avg)",
)

jobs_option = click.option(
    "-j", "--jobs", type=click.IntRange(min=1), default=1, show_default=True,
    help="Parallel jobs (processes for suggestion, threads where a library trains with them).",
)  # fmt: skip
limit_option = click.option(
    "--limit", type=click.IntRange(min=1), default=10, show_default=True,
    help="Suggestions per document.",
)  # fmt: skip
threshold_option = click.option(
    "--threshold", type=click.FloatRange(0, 1), default=0.0, show_default=True,
    help="Minimum score of a suggestion.",
)  # fmt: skip


def _open(obj: Context, project_id: str) -> Project:
    """The project, with every configured project at hand (a fusion project's sources)."""
    from kuoro.project import Project

    projects = obj.projects()
    return Project(obj.project(project_id), obj.datadir, projects)


@click.command("train")
@click.argument("project_id")
@click.argument("corpus", nargs=-1, required=True, type=click.Path(path_type=Path))
@jobs_option
@click.option(
    "--cached/--no-cached", default=True, show_default=True,
    help="Fusion: reuse the sources' stored suggestions while sources and corpus are unchanged.",
)  # fmt: skip
@click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
    help="Fusion: where the model trains (auto: a GPU when torch sees one).",
)  # fmt: skip
@pass_context
def train_command(
    obj: Context, project_id: str, corpus: Sequence[Path], jobs: int, cached: bool, device: str
) -> None:
    """Train PROJECT_ID on one or more CORPUS paths (read in sequence).

    A fusion project runs its trained sources over the corpus (once: their suggestions are
    stored and reused) and trains its model on them.
    """
    project = _open(obj, project_id)
    summary = project.train(
        list(corpus), jobs=jobs, progress=obj.show_progress, cached=cached, device=device
    )
    click.echo(
        f"trained '{project_id}' on {summary.documents} documents in {summary.seconds:.1f} s "
        f"-> {summary.model_dir}"
    )
    if project.config.kind == "fusion":
        click.echo(summary.report)


@click.command("suggest")
@click.argument("project_id")
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@limit_option
@threshold_option
@pass_context
def suggest_command(
    obj: Context, project_id: str, files: Sequence[Path], limit: int, threshold: float
) -> None:
    """Suggest subjects for the text on standard input, or for each of FILES.

    Prints one suggestion per line: <uri>, label, [notation,] score, tab-separated.
    """
    project = _open(obj, project_id)
    if files:
        texts = [f.read_text(encoding="utf-8", errors="replace") for f in files]
    else:
        texts = [sys.stdin.read()]
    rows = project.suggest(texts)
    for i, text_file in enumerate(files or [None]):
        if text_file is not None and len(files) > 1:
            click.echo(f"Suggestions for {text_file}")
        for s in project.ranked(rows[i], limit=limit, threshold=threshold):
            click.echo(_suggestion_line(s.uri, s.label, s.notation, s.score))


def _with_progress(
    stream: Iterator[tuple[list[Document], sp.csr_matrix]], desc: str, enabled: bool
) -> Iterator[tuple[list[Document], sp.csr_matrix]]:
    from tqdm import tqdm

    with tqdm(desc=desc, unit=" docs", disable=not enabled) as bar:
        for batch, rows in stream:
            yield batch, rows
            bar.update(len(batch))


def _suggestion_line(uri: str, label: str | None, notation: str | None, score: float) -> str:
    fields = [f"<{uri}>", label or ""]
    if notation:
        fields.append(notation)
    fields.append(f"{score:.4f}")
    return "\t".join(fields)


@click.command("index")
@click.argument("project_id")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--suffix", default=".annif", show_default=True, help="Suffix of the output files.")
@click.option("--force", is_flag=True, help="Overwrite existing suggestion files.")
@limit_option
@threshold_option
@jobs_option
@pass_context
def index_command(
    obj: Context,
    project_id: str,
    directory: Path,
    suffix: str,
    force: bool,
    limit: int,
    threshold: float,
    jobs: int,
) -> None:
    """Write suggestions for each ID.txt in DIRECTORY to ID.annif beside it."""
    from kuoro.atomic import atomic_write
    from kuoro.batch_suggest import suggest_corpus
    from kuoro.corpus import Corpus

    project = _open(obj, project_id)
    corpus = Corpus(directory, None, subjects=False)
    kept = written = 0

    def wanted() -> Iterator[Document]:
        nonlocal kept
        for doc in corpus:
            if not force and (directory / f"{doc.document_id}{suffix}").exists():
                kept += 1
                continue
            yield doc

    stream = suggest_corpus(project, wanted(), jobs=jobs)
    for batch, rows in _with_progress(stream, "indexing", obj.show_progress):
        for i, doc in enumerate(batch):
            lines = [
                _suggestion_line(s.uri, s.label, s.notation, s.score) + "\n"
                for s in project.ranked(rows[i], limit=limit, threshold=threshold)
            ]
            with atomic_write(directory / f"{doc.document_id}{suffix}") as out:
                out.write("".join(lines).encode("utf-8"))
            written += 1
    if kept:
        log.warning(
            "%d existing %s files kept unchanged; use --force to overwrite them", kept, suffix
        )
    click.echo(f"indexed {written} documents in {directory}")


@click.command("eval")
@click.argument("project_id")
@click.argument("corpus", nargs=-1, required=True, type=click.Path(path_type=Path))
@limit_option
@threshold_option
@jobs_option
@pass_context
def eval_command(
    obj: Context,
    project_id: str,
    corpus: Sequence[Path],
    limit: int,
    threshold: float,
    jobs: int,
) -> None:
    """Evaluate PROJECT_ID on documents with gold subjects and print the metrics."""
    from kuoro.batch_suggest import suggest_corpus
    from kuoro.corpus import Corpus
    from kuoro.metrics import RankingMetrics

    project = _open(obj, project_id)
    documents = Corpus(list(corpus), project.vocabulary, language=project.config.language)
    metrics = RankingMetrics(limit=limit, threshold=threshold)
    if jobs == 1:
        _ = project.source  # load the model before timing; workers load their own copy
    started = time.perf_counter()
    stream = suggest_corpus(project, documents, jobs=jobs)
    for batch, rows in _with_progress(stream, "evaluating", obj.show_progress):
        metrics.update(rows, [d.subjects for d in batch])
    seconds = time.perf_counter() - started
    if not metrics.documents:
        raise KuoroError("no documents to evaluate")
    results = metrics.compute()
    for name in EVAL_METRICS:
        click.echo(f"{name + ':':<26}{results[name]:.4f}")
    click.echo(f"{'Documents evaluated:':<26}{metrics.documents}")
    log.info("evaluated in %.1f s (%.1f documents/s)", seconds, metrics.documents / seconds)
