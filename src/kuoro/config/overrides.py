"""``--backend-param BACKEND.PARAM=VALUE``: a project's parameter set for one run of a command,
as Annif's ``-b`` does, checked as projects.toml values are."""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import MappingProxyType

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

from kuoro.config.annif_names import ANNIF_BACKENDS
from kuoro.config.backends import BACKENDS, check_params
from kuoro.config.projects import ProjectConfig
from kuoro.errors import ConfigError


def with_backend_params(config: ProjectConfig, settings: Sequence[str]) -> ProjectConfig:
    """``config`` with each ``BACKEND.PARAM=VALUE`` of ``settings`` set (``PARAM=VALUE`` too).

    BACKEND is the project's backend, or the Annif backend it stands for (``nn_ensemble`` for
    ``kuoro``); VALUE is read as a TOML value (``5``, ``0.01``, ``true``), else taken as a
    string (``bce``). ConfigError names the setting and what the parameter allows.
    """
    if not settings:
        return config
    params = dict(config.params)
    for text in settings:
        key, value = _parse(config, text)
        params[key] = value
    return dataclasses.replace(config, params=MappingProxyType(params))


def _parse(config: ProjectConfig, text: str) -> tuple[str, object]:
    name, equals, raw = text.partition("=")
    backend, dot, key = name.strip().rpartition(".")
    if not equals or not key:
        raise ConfigError(
            f"{text!r}: write BACKEND.PARAM=VALUE, e.g. {config.backend}.top_k=50"
            if config.kind == "source"
            else f"{text!r}: write BACKEND.PARAM=VALUE, e.g. {config.backend}.max_epochs=5"
        )
    if dot and backend != config.backend and ANNIF_BACKENDS.get(backend) != config.backend:
        raise ConfigError(
            f"{text!r}: project '{config.project_id}' has backend '{config.backend}', "
            f"not '{backend}'"
        )
    specs = BACKENDS[config.backend].params
    if key == "sources":
        raise ConfigError(f"{text!r}: a project's sources are set in projects.toml only")
    if key not in specs:
        _, errors = check_params(config.project_id, config.backend, {key: None})
        raise ConfigError(
            next(e for e in errors if f"unknown parameter '{key}'" in e).replace(
                f"project '{config.project_id}': ", f"{text!r}: project '{config.project_id}': ", 1
            )
        )
    try:
        value = specs[key].check(_value(raw))
    except ValueError as exc:
        raise ConfigError(f"{text!r}: parameter '{key}' {exc}") from None
    if key == "validation" and isinstance(value, str):  # a corpus path, from the current folder
        path = Path(os.path.abspath(value))
        if not path.exists():
            raise ConfigError(f"{text!r}: no file or directory {path}")
        value = str(path)
    return key, value


def _value(raw: str) -> object:
    """``raw`` as TOML reads a value (``5``, ``0.01``, ``true``, ``"x"``); a number TOML does
    not take (``.5``) as that number; anything else as the string it is."""
    raw = raw.strip()
    try:
        return tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError:
        pass
    try:
        return float(raw)
    except ValueError:
        return raw
