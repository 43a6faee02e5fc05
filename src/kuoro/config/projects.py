"""projects.toml: read it, check every value where it is read, and return ProjectConfig objects."""

from __future__ import annotations

import difflib
import math
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Literal, cast

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

from kuoro.analyzers import analyzer_languages
from kuoro.config.annif_names import ANNIF_BACKENDS
from kuoro.config.backends import (
    BACKENDS,
    ParamSpec,
    check_params,
    join_errors,
    show_value,
)
from kuoro.config.params import FusionParams, fusion_params
from kuoro.errors import ConfigError, NotFoundError

ANALYZERS = ("simple", "snowball", "simplemma")
ACCESS_LEVELS = ("public", "hidden", "private")
# Which score threshold a suggestion must pass: the one given (--threshold, the REST API's
# threshold), or each concept's own, learnt by `kuoro optimize --per-concept`.
THRESHOLD_MODES = ("global", "per-concept")
DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
# A source's weight as written; weights are normalised to sum to 1.
MAX_SOURCE_WEIGHT = 1_000_000

ID_PATTERN = re.compile(r"[A-Za-z0-9_.-]+")
LANGUAGE_PATTERN = re.compile(r"[a-z]{2,3}")
_ANALYZER = re.compile(r"\s*([A-Za-z_]+)\s*(?:\(\s*([^()]*?)\s*\))?\s*")


@dataclass(frozen=True)
class SourceRef:
    """A source project of a fusion project, with its weight (a project's weights sum to 1)."""

    project_id: str
    weight: float


@dataclass(frozen=True)
class ProjectConfig:
    """One project as configured: its settings and its backend's parameters, defaults filled."""

    project_id: str
    name: str
    language: str
    vocab: str
    backend: str
    analyzer: str
    limit: int
    access: str
    allow_learn: bool
    params: Mapping[str, object]  # the backend's parameters, defaults filled, sources excepted
    sources: tuple[SourceRef, ...]  # a fusion project's sources; () for a source project
    thresholds: str = "global"  # one of THRESHOLD_MODES

    @property
    def kind(self) -> Literal["source", "fusion"]:
        return BACKENDS[self.backend].kind

    def fusion_params(self) -> FusionParams:
        """A fusion project's parameters, typed (a ConfigError for a source project)."""
        return fusion_params(self.backend, self.params, project_id=self.project_id)


def parse_analyzer(spec: str) -> tuple[str, str | None]:
    """Split 'snowball(finnish)' into ('snowball', 'finnish'); 'simple' gives ('simple', None)."""
    match = _ANALYZER.fullmatch(spec)
    if match is None:
        raise ConfigError(f"analyzer '{spec}' is malformed; write e.g. 'snowball(finnish)'")
    name, arg = match.group(1).lower(), match.group(2) or None
    if name == "voikko":
        language = arg or "fi"
        raise ConfigError(
            f"analyzer '{spec}' is not available in Kuoro; use 'simplemma({language})', "
            "a lemmatiser that needs no system library"
        )
    if name not in ANALYZERS:
        raise ConfigError(f"unknown analyzer '{spec}'. Allowed: {', '.join(ANALYZERS)}")
    if name == "simple" and arg is not None:
        raise ConfigError(f"analyzer 'simple' takes no argument, got '{spec}'")
    if name != "simple" and arg is None:
        example = "snowball(finnish)" if name == "snowball" else "simplemma(fi)"
        raise ConfigError(f"analyzer '{name}' needs a language, e.g. '{example}'")
    supported = analyzer_languages(name)
    if supported and arg not in supported:
        raise ConfigError(
            f"analyzer '{name}' does not support language '{arg}'. Allowed: {', '.join(supported)}"
        )
    return name, arg


def find_projects_file(explicit: str | Path | None, cwd: Path) -> Path:
    """The projects file or directory: explicit, else $KUORO_PROJECTS, projects.toml, projects.d."""
    if explicit is not None:
        path = cwd / explicit
        if not path.exists():
            raise NotFoundError(f"projects file {explicit} does not exist")
        return path
    from_env = os.environ.get("KUORO_PROJECTS")
    if from_env:
        path = cwd / from_env
        if not path.exists():
            raise NotFoundError(f"KUORO_PROJECTS names {from_env}, which does not exist")
        return path
    tried = [cwd / "projects.toml", cwd / "projects.d"]
    for path in tried:
        if path.exists():
            return path
    hint = ""
    if (cwd / "projects.cfg").exists():
        hint = "; found Annif's projects.cfg: convert it with `kuoro config import projects.cfg`"
    raise NotFoundError(
        f"no project configuration found; tried --projects, KUORO_PROJECTS, "
        f"{tried[0]}, {tried[1]}{hint}"
    )


def load_projects(path: str | Path) -> dict[str, ProjectConfig]:
    """Read a projects.toml file or a projects.d directory of *.toml files and check it all.

    Every problem of every project is reported, in one ConfigError (one line each).
    """
    path = Path(path)
    if not path.exists():
        raise NotFoundError(f"{path}: no such file or directory")
    files = _project_files(path)
    errors: list[str] = []
    tables: dict[str, tuple[Path, Mapping[str, object]]] = {}
    for file in files:
        for project_id, table in _read_toml(file).items():
            if project_id in tables:
                errors.append(
                    f"{file}: project '{project_id}' is already defined in {tables[project_id][0]}"
                )
            elif not isinstance(table, dict):
                errors.append(
                    f"{file}: top-level key '{project_id}' is not a project table; "
                    f"write [{project_id}] and the project's keys below it"
                )
            else:
                tables[project_id] = (file, table)
    projects: dict[str, ProjectConfig] = {}
    checked: dict[str, _Checked] = {}
    for project_id, (file, table) in tables.items():
        checked[project_id] = _project(project_id, table, file.parent)
        errors += [f"{file}: {problem}" for problem in checked[project_id].errors]
        if checked[project_id].config is not None:
            projects[project_id] = cast(ProjectConfig, checked[project_id].config)
    # Sources may live in other files of a projects.d, so they are checked once all are read
    # (also those of projects with other errors); a source that has errors of its own is not
    # reported again.
    for project_id, result in checked.items():
        problems = _source_problems(project_id, result, projects, set(tables))
        errors += [f"{tables[project_id][0]}: {problem}" for problem in problems]
    if errors:
        raise ConfigError(join_errors(errors))
    return projects


def _project_files(path: Path) -> list[Path]:
    if path.is_file():
        if path.suffix == ".cfg":
            raise ConfigError(
                f"{path}: this is an Annif INI file; convert it with `kuoro config import {path}`"
            )
        return [path]
    files = sorted(path.glob("*.toml"))
    if not files:
        hint = ""
        if any(path.glob("*.cfg")):
            hint = "; the .cfg files there are Annif's: convert them with `kuoro config import`"
        raise ConfigError(f"{path}: no *.toml project files in this directory{hint}")
    return files


def _read_toml(file: Path) -> dict[str, object]:
    try:
        with file.open("rb") as stream:
            return tomllib.load(stream)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: invalid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{file}: not UTF-8 text: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror}") from None


def _is_id(value: object) -> bool:
    return isinstance(value, str) and ID_PATTERN.fullmatch(value) is not None


# The keys every project has, checked like backend parameters (backends.PROJECT_KEYS names them).
PROJECT_SETTINGS: Mapping[str, ParamSpec] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            ParamSpec("name", str, "", "display name (default: the project id)"),
            ParamSpec(
                "language",
                str,
                None,
                "language of the documents",
                required=True,
                accept=lambda v: isinstance(v, str) and LANGUAGE_PATTERN.fullmatch(v) is not None,
                allowed='a 2 or 3 letter lower-case language code such as "fi"',
            ),
            ParamSpec(
                "vocab",
                str,
                None,
                "the name of a vocabulary loaded with `kuoro load-vocab`",
                required=True,
                accept=_is_id,
                allowed="a vocabulary name of letters, digits, '-', '_' and '.'",
            ),
            ParamSpec("backend", str, None, "one of " + ", ".join(sorted(BACKENDS)), required=True),
            ParamSpec("analyzer", str, "simple", 'text analyzer such as "snowball(finnish)"'),
            ParamSpec(
                "limit", int, DEFAULT_LIMIT, "most suggestions returned", min=1, max=MAX_LIMIT
            ),
            ParamSpec("access", str, "public", "who may use the project", choices=ACCESS_LEVELS),
            ParamSpec("allow_learn", bool, False, "whether `kuoro learn` may update the model"),
            ParamSpec(
                "thresholds",
                str,
                "global",
                "the score threshold of suggestions: the one given (global), or each "
                "concept's own, learnt by `kuoro optimize --per-concept` (per-concept)",
                choices=THRESHOLD_MODES,
            ),
        )
    }
)


@dataclass(frozen=True)
class _Checked:
    """A project table as checked on its own: the project if it has no error, its sources and
    vocabulary as far as they could be read (for checking them against the other projects),
    and its errors."""

    config: ProjectConfig | None
    errors: list[str]
    sources: tuple[SourceRef, ...] = ()
    vocab: str | None = None


def _project(project_id: str, table: Mapping[str, object], folder: Path) -> _Checked:
    """Check one project's own keys (sources are checked against the other projects later).
    Relative paths resolve against ``folder``."""
    where = f"project '{project_id}'"
    if not ID_PATTERN.fullmatch(project_id):
        return _Checked(
            None, [f"{where}: a project id may only hold letters, digits, '-', '_' and '.'"]
        )
    raw = dict(table)
    errors: list[str] = []
    settings: dict[str, object] = {}
    for key, spec in PROJECT_SETTINGS.items():
        if key not in raw:
            if spec.required:
                errors.append(f"{where}: missing required key '{key}' ({spec.help})")
            settings[key] = spec.default
            continue
        value = raw.pop(key)
        if key == "backend" and isinstance(value, str) and value not in BACKENDS:
            errors.append(f"{where}: key 'backend': {_unknown_backend(value)}")
            continue
        try:
            settings[key] = spec.check(value)
        except ValueError as exc:
            errors.append(f"{where}: key '{key}' {exc}")
    analyzer, argument = "simple", None
    if "analyzer" in settings:  # else its type was wrong, and said so
        try:
            analyzer, argument = parse_analyzer(str(settings["analyzer"]))
        except ConfigError as exc:
            errors.append(f"{where}: key 'analyzer': {exc}")
    backend = settings.get("backend")
    if not isinstance(backend, str) or backend not in BACKENDS:
        return _Checked(None, errors)  # the backend's parameters cannot be checked

    refs: tuple[SourceRef, ...] = ()
    if "sources" in raw and BACKENDS[backend].kind == "fusion":
        try:
            refs = _parse_sources(where, raw["sources"])
        except ConfigError as exc:
            errors.append(str(exc))
            raw["sources"] = []  # reported; not again as a bad parameter
        else:
            # Validated like any parameter (it is required); kept only as ProjectConfig.sources.
            raw["sources"] = [f"{ref.project_id}:{ref.weight:.15g}" for ref in refs]
            total = math.fsum(ref.weight for ref in refs)
            refs = tuple(SourceRef(ref.project_id, ref.weight / total) for ref in refs)
    for key, value in list(raw.items()):
        if isinstance(value, dict) and key != "sources":
            errors.append(
                f"{where}: key '{key}' is a table; backend parameters go directly in "
                f"[{project_id}], like the other keys"
            )
            del raw[key]
    params, problems = check_params(project_id, backend, raw)
    errors += problems
    if isinstance(params.get("validation"), str):  # a valid value that is not a number
        try:
            params["validation"] = _existing_path(where, "validation", params["validation"], folder)
        except ConfigError as exc:
            errors.append(str(exc))
    if params.get("cooccurrence") not in (None, "sources", "none"):
        try:
            params["cooccurrence"] = _existing_path(
                where, "cooccurrence", params["cooccurrence"], folder, '"sources" or "none"'
            )
        except ConfigError as exc:
            errors.append(str(exc))
    vocab = settings["vocab"] if isinstance(settings.get("vocab"), str) else None
    if errors:
        return _Checked(None, errors, refs, cast(str | None, vocab))
    params.pop("sources", None)
    config = ProjectConfig(
        project_id=project_id,
        name=str(settings["name"]) or project_id,
        language=str(settings["language"]),
        vocab=str(settings["vocab"]),
        backend=backend,
        analyzer=analyzer if argument is None else f"{analyzer}({argument})",
        limit=cast(int, settings["limit"]),
        access=str(settings["access"]),
        allow_learn=settings["allow_learn"] is True,
        params=MappingProxyType(params),
        sources=refs,
        thresholds=str(settings["thresholds"]),
    )
    return _Checked(config, [], refs, config.vocab)


def _existing_path(
    where: str, key: str, value: object, folder: Path, other: str = "a number"
) -> str:
    """``value`` as an absolute path (a relative one taken from ``folder``, the projects file's
    folder); ConfigError when nothing is there (``other``: what else the value could be)."""
    path = Path(os.path.abspath(folder / str(value)))
    if not path.exists():
        raise ConfigError(
            f"{where}: key '{key}': {show_value(value)} is not {other} and no file or "
            f"directory {path} exists (a relative path is taken from the folder of the "
            "projects file)"
        )
    return str(path)


def _unknown_backend(backend: str) -> str:
    allowed = sorted(BACKENDS)
    hint = ""
    if backend in ANNIF_BACKENDS:
        hint = f" Annif's '{backend}' is Kuoro's '{ANNIF_BACKENDS[backend]}'."
    elif close := difflib.get_close_matches(backend, allowed, n=1):
        hint = f" Did you mean '{close[0]}'?"
    return f"unknown backend '{backend}'.{hint} Allowed: {', '.join(allowed)}"


def _parse_sources(where: str, value: object) -> tuple[SourceRef, ...]:
    """Read sources from ["a:2", "b"], {a = 2, b = 1} or "a:2,b"; weights as written."""
    pairs: list[tuple[str, object]] = []
    if isinstance(value, str):
        value = [part for part in value.split(",") if part.strip()]
    if isinstance(value, dict):
        pairs = list(value.items())
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        for item in value:
            project_id, _, weight = item.strip().partition(":")
            pairs.append((project_id.strip(), weight.strip() or 1.0))
    else:
        raise ConfigError(
            f'{where}: key \'sources\' must be a list such as ["proj-a:2", "proj-b"], '
            f'a table such as {{proj-a = 2, proj-b = 1}} or a string such as "proj-a:2,proj-b", '
            f"got {show_value(value)}"
        )
    if not pairs:
        raise ConfigError(f"{where}: key 'sources' is empty; a fusion project needs a source")
    refs: list[SourceRef] = []
    for project_id, weight in pairs:
        if not ID_PATTERN.fullmatch(project_id):
            raise ConfigError(
                f"{where}: key 'sources' names an invalid project id {show_value(project_id)}"
            )
        if any(ref.project_id == project_id for ref in refs):
            raise ConfigError(f"{where}: key 'sources' names '{project_id}' twice")
        refs.append(SourceRef(project_id, _weight(where, project_id, weight)))
    return tuple(refs)


def _weight(where: str, project_id: str, weight: object) -> float:
    number: float | None = None
    if isinstance(weight, int | float | str) and not isinstance(weight, bool):
        try:
            number = float(weight)
        except (ValueError, OverflowError):  # not a number; an int too big for a float
            number = None
    if number is None or not math.isfinite(number) or not 0 < number <= MAX_SOURCE_WEIGHT:
        raise ConfigError(
            f"{where}: key 'sources': the weight of '{project_id}' must be a number greater "
            f"than 0 and at most {MAX_SOURCE_WEIGHT}, got {show_value(weight)}"
        )
    return number


def _source_problems(
    project_id: str,
    checked: _Checked,
    projects: Mapping[str, ProjectConfig],
    defined: set[str],
) -> list[str]:
    """Every source must exist, be a source-kind project and share the fusion project's vocab.

    A source in ``defined`` but not in ``projects`` has errors of its own, reported already.
    """
    where = f"project '{project_id}'"
    errors: list[str] = []
    for ref in checked.sources:
        source = projects.get(ref.project_id)
        if source is None:
            if ref.project_id in defined:
                continue
            close = difflib.get_close_matches(ref.project_id, list(defined), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            errors.append(
                f"{where}: key 'sources' names project '{ref.project_id}', which is not "
                f"defined.{hint}"
            )
        elif source.kind != "source":
            errors.append(
                f"{where}: key 'sources' names project '{ref.project_id}', which is a fusion "
                f"project (backend '{source.backend}'); only source projects can be fused"
            )
        elif checked.vocab is not None and source.vocab != checked.vocab:
            errors.append(
                f"{where}: key 'sources': project '{ref.project_id}' uses vocab "
                f"'{source.vocab}' but '{project_id}' uses '{checked.vocab}'; "
                "fused projects must share one vocabulary"
            )
    return errors
