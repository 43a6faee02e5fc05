"""``kuoro suggest`` and ``kuoro index``: a project's suggestions for texts and directories."""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

import click

from kuoro.cli.context import (
    Context,
    backend_param_option,
    check_label_language,
    label_language_option,
    pass_context,
)
from kuoro.corpus.documents import Corpus, Document
from kuoro.project.batch import suggest_corpus
from kuoro.project.cluster import ClusterSpec
from kuoro.util.atomic import atomic_write
from kuoro.util.progress import count_documents
from kuoro.util.wording import plural

if TYPE_CHECKING:
    import scipy.sparse as sp

    from kuoro.project.project import Project, Suggestion

from kuoro.cli.options import (
    cluster_option,
    configured_project,
    jobs_option,
    limit_option,
    open_engine,
    threshold_option,
    with_progress,
)

log = logging.getLogger("kuoro")


@click.command("suggest")
@click.argument("project_id")
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@limit_option
@threshold_option
@jobs_option
@cluster_option
@label_language_option
@backend_param_option
@click.option(
    "--explain", is_flag=True,
    help="After each suggestion of a fusion project, why it scored so: each source's score, "
    "rank and weight, and the model's value before its output transform taken apart into "
    "terms that add up to it (computed here: -j and --cluster do not apply).",
)  # fmt: skip
@pass_context
def suggest_command(
    obj: Context,
    project_id: str,
    files: Sequence[Path],
    limit: int,
    threshold: float,
    jobs: int,
    cluster: ClusterSpec | None,
    label_language: str | None,
    backend_params: Sequence[str],
    explain: bool,
) -> None:
    """Suggest subjects for the text on standard input, or for each of FILES.

    Prints one suggestion per line: <uri>, label, [notation,] score, tab-separated. With
    several FILES each file's lines follow a line "Suggestions for FILE", in the order given;
    -j or --cluster spread the files over processes or a cluster.
    """
    project = configured_project(obj, project_id, backend_params)
    language = check_label_language(project, label_language)
    named: deque[Path | None] = deque(files) if files else deque([None])

    def documents() -> Iterator[Document]:
        for text_file in files:  # read as they are needed, not all at once
            yield Document(text_file.read_text(encoding="utf-8", errors="replace"))
        if not files:
            yield Document(sys.stdin.read())

    if explain:
        _print_explained(project, documents(), named, len(files) > 1, limit, threshold, language)
        return
    with open_engine(obj, jobs, cluster) as engine:
        for batch, rows in suggest_corpus(project, documents(), engine=engine):
            for i in range(len(batch)):
                text_file = named.popleft()
                if text_file is not None and len(files) > 1:
                    click.echo(f"Suggestions for {text_file}")
                for s in _ranked(project, rows[i], limit, threshold, language):
                    click.echo(_suggestion_line(s.uri, s.label, s.notation, s.score))


def _ranked(
    project: Project, row: sp.csr_matrix, limit: int, threshold: float, language: str | None
) -> list[Suggestion]:
    """``project.ranked``, with the labels in ``language`` when one is given."""
    suggestions = project.ranked(row, limit=limit, threshold=threshold)
    if language is None:
        return suggestions
    vocab = project.vocabulary
    return [
        dataclasses.replace(s, label=vocab.label(cast(int, vocab.id_of(s.uri)), language))
        for s in suggestions
    ]


def _print_explained(
    project: Project,
    documents: Iterator[Document],
    named: deque[Path | None],
    headed: bool,
    limit: int,
    threshold: float,
    language: str | None,
) -> None:
    """``suggest --explain``: each suggestion's line, then its explanation, indented."""
    from kuoro.fusion.explain import explanation_lines
    from kuoro.project.batch import batches
    from kuoro.project.explaining import suggest_explained

    if project.config.kind != "fusion":
        log.warning(
            "'%s' is a source project: its scores are its model's own, there is nothing to "
            "take apart (--explain explains fusion projects)",
            project.project_id,
        )
    vocab = project.vocabulary
    for batch in batches(documents):
        rows, explainer = suggest_explained(project, [d.text for d in batch])
        for i in range(len(batch)):
            text_file = named.popleft()
            if text_file is not None and headed:
                click.echo(f"Suggestions for {text_file}")
            suggestions = _ranked(project, rows[i], limit, threshold, language)
            concepts = [cast(int, vocab.id_of(s.uri)) for s in suggestions]
            records = explainer.explain(i, concepts)
            for s, record in zip(suggestions, records, strict=True):
                click.echo(_suggestion_line(s.uri, s.label, s.notation, s.score))
                if record is not None and record["kind"] == "fusion":
                    click.echo("\n".join(explanation_lines(record)))


def _suggestion_line(uri: str, label: str | None, notation: str | None, score: float) -> str:
    fields = [f"<{uri}>", label or ""]
    if notation:
        fields.append(notation)
    fields.append(f"{score:.4f}")
    return "\t".join(fields)


@click.command("index")
@click.argument("project_id")
@click.argument(
    "directories", nargs=-1, required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
)  # fmt: skip
@click.option("--suffix", default=".annif", show_default=True, help="Suffix of the output files.")
@click.option("--force", is_flag=True, help="Overwrite existing suggestion files.")
@limit_option
@threshold_option
@jobs_option
@cluster_option
@label_language_option
@backend_param_option
@pass_context
def index_command(
    obj: Context,
    project_id: str,
    directories: Sequence[Path],
    suffix: str,
    force: bool,
    limit: int,
    threshold: float,
    jobs: int,
    cluster: ClusterSpec | None,
    label_language: str | None,
    backend_params: Sequence[str],
) -> None:
    """Write suggestions for each ID.txt in each of DIRECTORIES to ID.annif beside it."""
    project = configured_project(obj, project_id, backend_params)
    language = check_label_language(project, label_language)
    kept = written = 0
    targets: deque[Path] = deque()  # of the documents handed on, in order

    def wanted() -> Iterator[Document]:
        nonlocal kept
        for directory in directories:
            for doc in Corpus(directory, None, subjects=False):
                target = directory / f"{doc.document_id}{suffix}"
                if not force and target.exists():
                    kept += 1
                    continue
                targets.append(target)
                yield doc

    total = count_documents(directories)
    with open_engine(obj, jobs, cluster) as engine:
        stream = suggest_corpus(project, wanted(), engine=engine)
        for batch, rows in with_progress(stream, "indexing", obj.show_progress, total):
            for i in range(len(batch)):
                lines = [
                    _suggestion_line(s.uri, s.label, s.notation, s.score) + "\n"
                    for s in _ranked(project, rows[i], limit, threshold, language)
                ]
                with atomic_write(targets.popleft()) as out:
                    out.write("".join(lines).encode("utf-8"))
                written += 1
    if kept:
        log.warning(
            "%s kept unchanged; use --force to overwrite them",
            plural(kept, f"existing {suffix} file"),
        )
    where = ", ".join(map(str, directories))
    click.echo(f"indexed {plural(written, 'document')} in {where}")
