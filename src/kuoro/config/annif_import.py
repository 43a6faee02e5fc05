"""`kuoro config import`: turn an Annif projects.cfg (or projects.toml, projects.d) into Kuoro's.

Whatever cannot be carried over is dropped with a note rather than guessed at, so that the
result always loads; the notes go into the file as comments and back to the caller.
"""

from __future__ import annotations

import configparser
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

import tomli_w

from kuoro.config.annif_names import (
    ANNIF_BACKENDS,
    ANNIF_DROPPED_PARAMS,
    ANNIF_PARAM_NAMES,
    ANNIF_PARAM_UNITS,
)
from kuoro.config.backends import BACKENDS, ParamSpec, show_value
from kuoro.config.projects import ID_PATTERN, PROJECT_SETTINGS, parse_analyzer
from kuoro.errors import ConfigError, NotFoundError

_BACKEND_NOTES = {
    "nn_ensemble": "nn_ensemble becomes Kuoro's default fusion model 'kuoro'; "
    "use backend = 'linear' for the per-concept linear model",
    "pav": "Kuoro has no PAV backend; pav becomes the weighted mean 'mean'",
    "mllm": "mllm becomes Kuoro's 'lexical' source, which matches labels and ranks the matches "
    "with a small classifier learnt from the training documents",
    "stwfsa": "stwfsa becomes Kuoro's 'lexical' source, which matches labels and ranks the "
    "matches with a small classifier learnt from the training documents",
}
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")
# Annif's http backend is configured with the full suggest URL of one remote project.
_SUGGEST_URL = re.compile(r"(?P<base>.+?)/projects/(?P<project>[^/]+)/suggest/?")


@dataclass
class ImportResult:
    """The converted projects.toml text and the human-readable notes on what changed."""

    toml_text: str
    notes: list[str] = field(default_factory=list)


class _LeftOut(Exception):
    """A project that Kuoro cannot use; the message says why."""


class _CaseSensitiveParser(configparser.ConfigParser):
    """Annif's keys such as `wordNgrams` are case-sensitive; configparser lowercases by default."""

    def optionxform(self, optionstr: str) -> str:
        return optionstr


def import_annif_config(path: str | Path) -> ImportResult:
    """Convert an Annif project configuration file or directory to Kuoro's projects.toml."""
    path = Path(path)
    if not path.exists():
        raise NotFoundError(f"{path}: no such file or directory")
    sections = _read_sections(path)
    notes: list[str] = []
    tables: dict[str, dict[str, object]] = {}
    annif_sources: dict[str, str] = {}
    for project_id, section in sections.items():
        try:
            tables[project_id] = _convert_project(project_id, dict(section), notes)
        except _LeftOut as exc:
            notes.append(f"project '{project_id}': {exc}; project left out")
            continue
        sources = section.get("sources")
        if sources is not None:  # a string in projects.cfg; possibly a list in Annif's TOML
            listed = sources if isinstance(sources, list) else [sources]
            annif_sources[project_id] = ",".join(str(item) for item in listed)
    # Sources are resolved once every project is converted: they may come later in the file.
    for project_id, spec in annif_sources.items():
        table = tables[project_id]
        kept = _convert_sources(project_id, spec, table, sections, tables, notes)
        if kept:
            table["sources"] = kept
        else:
            notes.append(f"project '{project_id}': no usable sources remain; project left out")
            del tables[project_id]
    header = [f"# Kuoro projects, converted from {path} by `kuoro config import`."]
    if notes:
        header += ["# Notes:"] + [f"#   {note}" for note in notes]
    text = "\n".join(header) + "\n\n" + tomli_w.dumps(tables)
    return ImportResult(toml_text=text, notes=notes)


def _read_sections(path: Path) -> dict[str, Mapping[str, object]]:
    """Every project section of a file or of a directory's *.cfg and *.toml files, in order."""
    files = sorted([*path.glob("*.cfg"), *path.glob("*.toml")]) if path.is_dir() else [path]
    if not files:
        raise ConfigError(f"{path}: no *.cfg or *.toml project files in this directory")
    sections: dict[str, Mapping[str, object]] = {}
    origin: dict[str, Path] = {}
    for file in files:
        read = _read_toml(file) if file.suffix == ".toml" else _read_ini(file)
        for project_id, section in read.items():
            if project_id in origin:
                raise ConfigError(
                    f"{file}: project '{project_id}' is already defined in {origin[project_id]}"
                )
            origin[project_id] = file
            sections[project_id] = section
    return sections


def _read_ini(file: Path) -> dict[str, Mapping[str, object]]:
    parser = _CaseSensitiveParser(interpolation=None)
    try:
        parser.read_string(file.read_text(encoding="utf-8"), source=str(file))
    except configparser.Error as exc:
        # configparser spreads one error over several lines; the CLI prints one.
        raise ConfigError(f"{file}: invalid INI: {' '.join(str(exc).split())}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{file}: not UTF-8 text: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror}") from None
    return {name: dict(parser[name]) for name in parser.sections()}


def _read_toml(file: Path) -> dict[str, Mapping[str, object]]:
    try:
        with file.open("rb") as stream:
            data = tomllib.load(stream)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: invalid TOML: {exc}") from None
    except (UnicodeDecodeError, OSError) as exc:
        raise ConfigError(f"{file}: cannot read: {exc}") from None
    return {key: value for key, value in data.items() if isinstance(value, dict)}


def _convert_project(
    project_id: str, raw: dict[str, object], notes: list[str]
) -> dict[str, object]:
    """One Annif project as a Kuoro table (without sources); _LeftOut if Kuoro cannot use it."""
    where = f"project '{project_id}'"
    annif_backend = str(raw.pop("backend", ""))
    backend = ANNIF_BACKENDS.get(annif_backend)
    if not ID_PATTERN.fullmatch(project_id):
        raise _LeftOut("the id may only hold letters, digits, '-', '_' and '.'")
    if backend is None:
        raise _LeftOut(f"backend '{annif_backend}' has no Kuoro equivalent")
    if annif_backend in _BACKEND_NOTES:
        notes.append(f"{where}: {_BACKEND_NOTES[annif_backend]}")
    if "vocab" in raw:
        raw["vocab"] = _vocab_name(str(raw["vocab"]), notes)
    table: dict[str, object] = {}
    for key in ("name", "language", "vocab"):
        try:
            table[key] = _typed(PROJECT_SETTINGS[key], raw.pop(key))
        except KeyError:
            if key != "name":
                raise _LeftOut(f"it has no {key}") from None
        except ValueError as exc:
            raise _LeftOut(f"{key} {exc}") from None
    table["backend"] = backend
    if "analyzer" in raw:
        analyzer = _convert_analyzer(where, str(raw.pop("analyzer")), table["language"], notes)
        if analyzer is not None:
            table["analyzer"] = analyzer
    for key in ("limit", "access"):
        if key in raw:
            shown = f"{key} = {raw[key]}"
            try:
                table[key] = _typed(PROJECT_SETTINGS[key], raw.pop(key))
            except ValueError as exc:
                notes.append(f"{where}: key '{shown}': {key} {exc}; dropped (default used)")
    raw.pop("sources", None)  # resolved by the caller once every project is known
    if backend == "annif" and not _split_endpoint(where, raw, notes):
        raise _LeftOut("the remote project cannot be told from 'endpoint'")
    table.update(_convert_params(where, backend, raw, notes))
    required = [p.name for p in BACKENDS[backend].params.values() if p.required]
    missing = [name for name in required if name not in table and name != "sources"]
    if missing:
        raise _LeftOut(f"required parameter '{missing[0]}' is missing or invalid")
    return table


def _vocab_name(spec: str, notes: list[str]) -> str:
    """Annif's `yso(fi)` is vocabulary `yso` in Finnish; a Kuoro vocabulary holds every language."""
    name = spec.split("(", 1)[0].strip()
    note = f"vocab '{spec}' becomes '{name}'; the project's language picks the labels"
    if name != spec.strip() and note not in notes:
        notes.append(note)
    return name


def _convert_analyzer(where: str, spec: str, language: object, notes: list[str]) -> str | None:
    """Voikko becomes Simplemma; an analyzer Kuoro lacks is dropped, leaving 'simple'."""
    name = spec.split("(", 1)[0].strip().lower()
    if name == "voikko":
        inside = spec.partition("(")[2].rstrip(") ").strip()
        replacement = f"simplemma({inside or language})"
        notes.append(f"{where}: analyzer '{spec}' becomes '{replacement}'; Kuoro has no Voikko")
        return replacement
    try:
        parse_analyzer(spec)
    except ConfigError as exc:
        notes.append(
            f"{where}: {exc}; analyzer dropped, so the project uses 'simple' "
            f"(consider 'simplemma({language})')"
        )
        return None
    return spec.strip()


def _split_endpoint(where: str, raw: dict[str, object], notes: list[str]) -> bool:
    """Turn Annif's `.../v1/projects/ID/suggest` endpoint into Kuoro's `endpoint` and `project`."""
    match = _SUGGEST_URL.fullmatch(str(raw.get("endpoint", "")).strip())
    if match is not None:
        raw["endpoint"] = match["base"]
        raw.setdefault("project", match["project"])
        notes.append(
            f"{where}: endpoint split into endpoint = '{match['base']}' and "
            f"project = '{raw['project']}'"
        )
    return "endpoint" in raw and "project" in raw


def _convert_params(
    where: str, backend: str, raw: Mapping[str, object], notes: list[str]
) -> dict[str, object]:
    """Carry over the parameters Kuoro knows, under Kuoro's names; note everything else."""
    specs = BACKENDS[backend].params
    params: dict[str, object] = {}
    for key, value in raw.items():
        shown = f"{key} = {value}"
        name = key if key in specs else ANNIF_PARAM_NAMES.get(key, key)
        if key in ANNIF_DROPPED_PARAMS:
            notes.append(f"{where}: key '{shown}' dropped: {ANNIF_DROPPED_PARAMS[key]}")
        elif name not in specs or name == "sources":
            notes.append(f"{where}: key '{shown}' has no Kuoro equivalent; dropped")
        else:
            try:
                params[name] = _typed(specs[name], value)
            except ValueError as exc:
                notes.append(f"{where}: key '{shown}': {name} {exc}; dropped (default used)")
                continue
            if name != key:
                unit = f"; {ANNIF_PARAM_UNITS[key]}" if key in ANNIF_PARAM_UNITS else ""
                notes.append(
                    f"{where}: '{shown}' becomes '{name} = {show_value(params[name])}'{unit}"
                )
    return params


def _typed(spec: ParamSpec, value: object) -> object:
    """An INI string as the parameter's type, checked; ValueError says what is wrong."""
    if isinstance(value, str) and spec.type is not str:
        value = _parse_scalar(value.strip(), spec.type)
    return spec.check(value)


def _parse_scalar(text: str, kind: type) -> object:
    """Read INI text as `kind`; text that does not parse comes back as is, for check() to reject."""
    if kind is bool:
        lowered = text.lower()
        return lowered in _TRUE if lowered in _TRUE + _FALSE else text
    # `validation` (type object) is a count, a fraction or a corpus path.
    parsers: tuple[type[int] | type[float], ...] = (
        (int, float) if kind is object else (int,) if kind is int else (float,)
    )
    for parse in parsers:
        try:
            return parse(text)
        except ValueError:
            pass
    return text


def _is_positive_number(text: str) -> bool:
    try:
        number = float(text)
    except ValueError:
        return False
    return math.isfinite(number) and number > 0


def _convert_sources(
    project_id: str,
    spec: str,
    table: Mapping[str, object],
    sections: Mapping[str, Mapping[str, object]],
    tables: Mapping[str, Mapping[str, object]],
    notes: list[str],
) -> list[str]:
    """Annif's `a:2,b` as ["a:2", "b"], without sources that Kuoro cannot fuse (each noted)."""
    where = f"project '{project_id}'"
    kept: list[str] = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        source_id, _, weight = (s.strip() for s in item.partition(":"))
        source = tables.get(source_id)
        problem = ""
        if source_id not in sections:
            problem = "is not defined in the Annif configuration"
        elif source is None:
            problem = "was left out"
        elif any(kept_id.partition(":")[0] == source_id for kept_id in kept):
            problem = "is named twice"
        elif BACKENDS[str(source["backend"])].kind == "fusion":
            problem = "is itself an ensemble; Kuoro fuses source projects only"
        elif source["vocab"] != table["vocab"]:
            problem = f"uses vocab '{source['vocab']}', not '{table['vocab']}'"
        elif weight and not _is_positive_number(weight):
            notes.append(f"{where}: source '{item}' has an invalid weight; weight 1 used")
            weight = ""
        if problem:
            notes.append(f"{where}: source '{source_id}' {problem}; dropped")
        else:
            kept.append(f"{source_id}:{weight}" if weight else source_id)
    return kept
