"""The ``kuoro`` command line."""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

import click

from kuoro.cli.context import Context, echo_table, pass_context, progress_disabled
from kuoro.cli.evaluation import eval_command, optimize_command
from kuoro.cli.exporting import export_command
from kuoro.cli.indexing import index_command, suggest_command
from kuoro.cli.serve import serve_command
from kuoro.cli.training import learn_command, train_command
from kuoro.cli.tuning import hyperopt_command, report_command
from kuoro.config.annif_import import import_annif_config
from kuoro.corpus.stats import corpus_statistics, format_statistics
from kuoro.errors import KuoroError, VocabularyError
from kuoro.project.clear import clear_project
from kuoro.project.datadir import DataDir
from kuoro.project.model_files import CURRENT
from kuoro.util.atomic import atomic_write
from kuoro.util.progress import TqdmLoggingHandler
from kuoro.util.version import __version__
from kuoro.util.wording import plural
from kuoro.vocab.formats import read_vocabulary

log = logging.getLogger("kuoro")


# Set by the group callback so that main() knows whether to show tracebacks.
_verbosity = 0


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "-V", "--version", prog_name="kuoro")
@click.option(
    "--datadir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="KUORO_DATADIR",
    default="data",
    show_default=True,
    help="Directory of loaded vocabularies and trained models (env KUORO_DATADIR).",
)
@click.option(
    "--projects",
    "projects_path",
    type=click.Path(path_type=str),
    default=None,
    help="projects.toml file or projects.d directory "
    "(env KUORO_PROJECTS; default ./projects.toml, then ./projects.d).",
)
@click.option("-v", "--verbose", count=True, help="More output; -v also shows tracebacks.")
@click.option("-q", "--quiet", is_flag=True, help="Only errors.")
@click.pass_context
def cli(
    ctx: click.Context, datadir: Path, projects_path: str | None, verbose: int, quiet: bool
) -> None:
    """Kuoro fuses the suggestions of several subject-indexing models into one ranked list."""
    global _verbosity
    _verbosity = -1 if quiet else verbose
    _configure_logging(_verbosity)
    ctx.obj = Context(DataDir(datadir), projects_path, _verbosity)


def _configure_logging(verbosity: int) -> None:
    level = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    # Through tqdm, so that a message printed while a progress bar is shown gets its own line.
    handler = TqdmLoggingHandler()
    handler.setFormatter(logging.Formatter("kuoro: %(levelname)s: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


# -- vocabularies ----------------------------------------------------------------------------


@cli.command("load-vocab")
@click.argument("name")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-l", "--language", help="Language of the labels (needed for TSV; default for SKOS/CSV)."
)
@click.option(
    "--force",
    is_flag=True,
    help="Replace a stored vocabulary NAME that is damaged, keeping the concept ids that can "
    "be recovered from it.",
)
@pass_context
def load_vocab(obj: Context, name: str, file: Path, language: str | None, force: bool) -> None:
    """Load a vocabulary FILE (TSV, CSV or SKOS) and store it as NAME.

    Loading a newer version of a vocabulary keeps the ids of concepts it already had.
    """
    vocab = read_vocabulary(file, language, name=name)
    stored, update = obj.datadir.store_vocabulary(vocab, source=str(file), force=force)
    if update.repaired is not None:
        log.warning("vocabulary '%s': %s", name, update.repaired)
    if update.replaced_existing and update.kept + update.deprecated == 0 and update.repaired:
        change = "replaced the damaged version, new ids"
    elif update.replaced_existing:
        change = (
            f"updated: {update.kept} kept, {update.added} added, {update.deprecated} deprecated"
        )
    else:
        change = "new"
    click.echo(
        f"vocabulary '{name}' ({change}): {plural(len(stored), 'concept')}, "
        f"{stored.active_count} active, "
        f"languages {', '.join(stored.languages)} -> {obj.datadir.vocab_path(name)}"
    )


@cli.command("list-vocabs")
@pass_context
def list_vocabs(obj: Context) -> None:
    """List the vocabularies loaded in the data directory.

    A damaged one is listed as such and makes the exit status non-zero.
    """
    names = obj.datadir.vocabulary_names()
    if not names:
        click.echo(f"no vocabularies in {obj.datadir.root}; load one with: kuoro load-vocab")
        return
    header = ("name", "concepts", "active", "languages", "labels", "alt labels", "hidden labels")
    rows: list[tuple[str, ...]] = [(*header, "fingerprint")]
    damaged: list[str] = []
    for name in names:
        try:
            vocab = obj.datadir.load_vocabulary(name)
        except VocabularyError as exc:
            log.error("%s", exc)
            damaged.append(name)
            rows.append((name, "-", "-", "-", "-", "-", "-", "damaged"))
            continue
        langs = ",".join(vocab.languages)
        counts = vocab.label_counts()
        labels = (counts["preferred"], counts["alternative"], counts["hidden"])
        sizes = (len(vocab), vocab.active_count)
        rows.append((name, *map(str, sizes), langs, *map(str, labels), vocab.fingerprint))
    echo_table(rows)
    if damaged:
        raise VocabularyError(
            f"damaged vocabularies: {', '.join(damaged)}; replace each with: "
            "kuoro load-vocab NAME FILE --force"
        )


# -- projects --------------------------------------------------------------------------------


@cli.command("list-projects")
@pass_context
def list_projects(obj: Context) -> None:
    """List the configured projects: Annif's columns (id, name, vocabulary, language, whether
    the project is trained and when its model was made current), then backend and kind."""
    rows = [
        ("project", "name", "vocab", "language", "trained", "modification time", "backend",
         "kind", "vocab loaded"),
    ]  # fmt: skip
    loaded = set(obj.datadir.vocabulary_names())
    for p in obj.projects().values():
        modified = _modification_time(obj.datadir, p.project_id)
        rows.append(
            (p.project_id, p.name, p.vocab, p.language, "no" if modified is None else "yes",
             modified or "-", p.backend, p.kind, "yes" if p.vocab in loaded else "no")
        )  # fmt: skip
    echo_table(rows)


def _modification_time(datadir: DataDir, project_id: str) -> str | None:
    """When the project's current model became current (UTC), or None if it is not trained:
    the time the REST API gives as ``modification_time``."""
    try:
        stamp = (datadir.project_dir(project_id) / CURRENT).stat().st_mtime
    except OSError:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))


@cli.command("show-project")
@click.argument("project_id")
@pass_context
def show_project(obj: Context, project_id: str) -> None:
    """Show a project's configuration, every parameter with its effective value, and whether
    and when it was trained."""
    p = obj.project(project_id)
    loaded = p.vocab in obj.datadir.vocabulary_names()
    modified = _modification_time(obj.datadir, p.project_id)
    rows = [
        ("project", p.project_id),
        ("name", p.name),
        ("backend", f"{p.backend} ({p.kind})"),
        ("language", p.language),
        ("vocab", f"{p.vocab} ({'loaded' if loaded else 'not loaded'})"),
        ("trained", "no" if modified is None else "yes"),
        ("modification time", modified or "-"),
    ]
    if p.kind == "source":  # a fusion project reads no text: it has no analyzer
        rows.append(("analyzer", p.analyzer))
    rows += [
        ("limit", str(p.limit)),
        ("access", p.access),
        ("allow_learn", str(p.allow_learn).lower()),
        ("thresholds", p.thresholds),
    ]
    if p.sources:
        rows.append(("sources", ", ".join(f"{s.project_id}:{s.weight:.3g}" for s in p.sources)))
    rows += [(key, _format_value(value)) for key, value in sorted(p.params.items())]
    for key, value in rows:
        click.echo(f"{key + ':':<24} {value}")


@cli.command("clear")
@click.argument("project_id")
@pass_context
def clear(obj: Context, project_id: str) -> None:
    """Remove PROJECT_ID's trained model and what training it left, as `annif clear` does.

    Removes its model versions, learn store, training checkpoint and hyperparameter search,
    and the shared suggestion stores that are its own (the one its model was trained on and,
    for a fusion project, those over exactly its sources) unless another project's current
    model was trained on one or a process is using it. Refused while the project trains.
    """
    config = obj.project(project_id)
    cleared = clear_project(obj.datadir, config)
    for path, what in cleared.removed:
        click.echo(f"removed {path} ({what})")
    for path, why in cleared.kept:
        click.echo(f"kept {path}: {why}")
    if cleared.removed:
        click.echo(f"cleared '{project_id}': it is not trained now")
    else:
        click.echo(f"'{project_id}' has nothing to clear: it is not trained")


def _format_value(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


@cli.group("config")
def config_group() -> None:
    """Work with project configuration files."""


@config_group.command("import")
@click.argument("annif_config", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the projects.toml here instead of standard output.",
)
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
def config_import(annif_config: Path, output: Path | None, force: bool) -> None:
    """Convert an Annif projects.cfg into the equivalent Kuoro projects.toml."""
    result = import_annif_config(annif_config)
    for note in result.notes:
        log.warning("%s", note)
    if output is None:
        click.echo(result.toml_text, nl=False)
        return
    if output.exists() and not force:
        raise KuoroError(f"{output} exists; use --force to overwrite it")
    with atomic_write(output) as out:
        out.write(result.toml_text.encode("utf-8"))
    click.echo(f"wrote {output} ({plural(len(result.notes), 'note')})", err=True)


# -- corpora ---------------------------------------------------------------------------------


@cli.command("corpus-stats")
@click.argument("corpus", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--vocab", "vocab_name", required=True, help="Name of a loaded vocabulary.")
@click.option("-l", "--language", help="Language of subject labels (default: the vocabulary's).")
@pass_context
def corpus_stats(
    obj: Context, corpus: Sequence[Path], vocab_name: str, language: str | None
) -> None:
    """Read each CORPUS against a vocabulary and print statistics of its documents and subjects."""
    vocab = obj.datadir.load_vocabulary(vocab_name)
    stats = [
        corpus_statistics(path, vocab, language=language, disable_progress=progress_disabled(obj))
        for path in corpus
    ]
    click.echo(format_statistics(stats, vocab))


for _command in (
    train_command,
    learn_command,
    suggest_command,
    index_command,
    eval_command,
    optimize_command,
    hyperopt_command,
    report_command,
    serve_command,
    export_command,
):
    cli.add_command(_command)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; errors become one line on stderr and a non-zero exit status."""
    try:
        result = cli.main(args=argv, prog_name="kuoro", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("kuoro: interrupted", err=True)
        return 130
    except click.UsageError as exc:
        # One line, as every other error: what is wrong and where to read how to do it.
        command = exc.ctx.command_path if exc.ctx is not None else "kuoro"
        message = exc.format_message().rstrip(".")
        click.echo(f"kuoro: usage error: {message} (see '{command} --help')", err=True)
        return exc.exit_code
    except click.ClickException as exc:
        click.echo(f"kuoro: error: {exc.format_message()}", err=True)
        return exc.exit_code
    except KuoroError as exc:
        return _report(exc, "error")
    except KeyboardInterrupt:
        click.echo("kuoro: interrupted", err=True)
        return 130
    except OSError as exc:  # the machine's, not Kuoro's: a full disk, a permission, a device
        where = f": {exc.filename}" if exc.filename else ""
        return _report(exc, "error", message=f"{exc.strerror or exc}{where}")
    except Exception as exc:
        return _report(exc, "internal error", hint=True)
    return result if isinstance(result, int) else 0


def _report(
    exc: BaseException, kind: str, *, hint: bool = False, message: str | None = None
) -> int:
    if _verbosity > 0:
        traceback.print_exception(exc)
    message = message or str(exc) or type(exc).__name__
    suffix = " (run with -v for the traceback)" if hint and _verbosity <= 0 else ""
    click.echo(f"kuoro: {kind}: {message}{suffix}", err=True)
    return 1
