"""Trained models on disk: one directory per version, switched atomically, checked on load.

``projects/ID/`` holds version directories and a ``CURRENT`` file naming the one in use. A new
model is written into a fresh version directory with a ``manifest.json`` listing every file
and its size; only when it is complete does ``CURRENT`` switch to it (an atomic rename), so a
crash at any moment leaves the previous model loadable and no half-written one ever loads.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kuoro.errors import KuoroError, ModelError
from kuoro.util.atomic import STORAGE_ERRORS, atomic_write
from kuoro.util.hashing import file_sha256
from kuoro.util.version import __version__

MANIFEST = "manifest.json"
CURRENT = "CURRENT"
FORMAT = "kuoro-model"
FORMAT_VERSION = 1
# Files up to this size are checked against their checksum whenever a model is loaded (cheap);
# larger ones, the libraries' own model files, by their size and by the library reading them.
VERIFIED_BYTES = 16 << 20


def write_model(
    project_dir: Path, metadata: Mapping[str, Any], write_files: Callable[[Path], None]
) -> Path:
    """Write a new model version with ``write_files(directory)`` and make it current."""
    project_dir.mkdir(parents=True, exist_ok=True)
    previous = _current_name(project_dir)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    version_dir = project_dir / f"v{stamp}-{os.getpid()}-{time.monotonic_ns() % 10**6:06d}"
    version_dir.mkdir()
    try:
        write_files(version_dir)
        files = {
            str(p.relative_to(version_dir)): {"bytes": p.stat().st_size, "sha256": file_sha256(p)}
            for p in sorted(version_dir.rglob("*"))
            if p.is_file()
        }
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "kuoro_version": __version__,
            "python_version": platform.python_version(),
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **metadata,
            "files": files,
        }
        with atomic_write(version_dir / MANIFEST) as out:
            out.write(json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8"))
        _fsync_dir(version_dir)
        with atomic_write(project_dir / CURRENT) as out:
            out.write(version_dir.name.encode("utf-8"))
    except OSError as exc:
        shutil.rmtree(version_dir, ignore_errors=True)
        if exc.errno in STORAGE_ERRORS:
            where = exc.filename or version_dir
            raise KuoroError(f"cannot write the model to {where}: {exc.strerror}") from exc
        raise
    except BaseException:
        shutil.rmtree(version_dir, ignore_errors=True)
        raise
    _remove_old_versions(project_dir, keep=version_dir.name, previous=previous)
    return version_dir


def read_model(
    project_dir: Path, project_id: str, kind: str | None = None
) -> tuple[Path, dict[str, Any]]:
    """The current version directory and its manifest, after checking that it is complete.

    ``kind``: "source" or "fusion", the kind of project the model must be of; its manifest
    is then checked to hold what a model of that kind needs.
    """
    pointer = project_dir / CURRENT
    if not pointer.is_file():
        raise ModelError(
            f"project '{project_id}' is not trained yet; train it with: "
            f"kuoro train {project_id} CORPUS"
        )
    version_dir = project_dir / pointer.read_text(encoding="utf-8").strip()
    try:
        manifest = json.loads((version_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"project '{project_id}': model manifest unreadable ({exc})") from exc
    if not isinstance(manifest, dict) or (
        manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION
    ):
        raise ModelError(
            f"project '{project_id}': {version_dir} is not a Kuoro model of format version "
            f"{FORMAT_VERSION}; retrain the project"
        )
    problem = manifest_problem(manifest, kind)
    if problem is not None:
        raise ModelError(
            f"project '{project_id}': the model manifest {version_dir / MANIFEST} is damaged "
            f"({problem}); retrain the project"
        )
    for name, info in manifest["files"].items():
        path = version_dir / name
        size = path.stat().st_size if path.is_file() else None
        found = None
        if size != info["bytes"]:
            found = "missing" if size is None else f"{size} bytes, expected {info['bytes']}"
        elif size <= VERIFIED_BYTES and file_sha256(path) != info["sha256"]:
            found = "its contents changed since it was written"
        if found is not None:
            raise ModelError(
                f"project '{project_id}': model file {path} is damaged ({found}); "
                "retrain the project"
            )
    return version_dir, manifest


# What a manifest must hold for the loaders, with each value's JSON type.
_Keys = Mapping[str, type | tuple[type, ...]]
_BY_KIND: dict[str, _Keys] = {
    "source": {"backend": str, "params": dict, "vocabulary": dict, "analyzer": str},
    "fusion": {
        **{"backend": str, "params": dict, "vocabulary": dict},
        **{"sources": list, "model": dict, "training": dict},
    },
}
_VOCABULARY: _Keys = {"name": str, "size": int, "fingerprint": str}
_FILE: _Keys = {"bytes": int, "sha256": str}
_SOURCE: _Keys = {"project_id": str, "weight": (int, float), "fingerprint": str, "config": dict}
_MODEL: _Keys = {"family": str, "n_concepts": int, "top_k": int}


def _wrong_key(table: object, keys: _Keys, where: str) -> str | None:
    if not isinstance(table, dict):
        return f"'{where.rstrip('.')}' is not a table"
    for key, kind in keys.items():
        value = table.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            return f"'{where}{key}' is missing or of the wrong type"
    return None


def manifest_problem(manifest: Mapping[str, Any], kind: str | None = None) -> str | None:
    """What is wrong with a manifest's structure, or None: its file list, and with ``kind``
    what a model of that kind needs, are there and of the types the loaders expect."""
    problem = _wrong_key(manifest, {"files": dict}, "")
    if problem is not None:
        return problem
    checks = [(info, _FILE, f"files.{name}.") for name, info in manifest["files"].items()]
    if kind is not None:
        if manifest.get("kind") != kind:
            return f"'kind' is {manifest.get('kind')!r}, not {kind!r}"
        problem = _wrong_key(manifest, _BY_KIND[kind], "")
        if problem is not None:
            return problem
        checks.append((manifest["vocabulary"], _VOCABULARY, "vocabulary."))
    if kind == "fusion":
        checks.append((manifest["model"], _MODEL, "model."))
        checks += [(s, _SOURCE, f"sources[{i}].") for i, s in enumerate(manifest["sources"])]
    return next((p for check in checks if (p := _wrong_key(*check)) is not None), None)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _current_name(project_dir: Path) -> str | None:
    try:
        return (project_dir / CURRENT).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def _remove_old_versions(project_dir: Path, keep: str, previous: str | None) -> None:
    """Remove the version that was current before ``keep`` and what crashed writers left;
    never the current one, nor one that another live process may be writing."""
    current = _current_name(project_dir)
    for child in project_dir.iterdir():
        if not (child.is_dir() and child.name.startswith("v")) or child.name in (keep, current):
            continue
        if child.name == previous or not _writer_alive(child.name):
            shutil.rmtree(child, ignore_errors=True)


def _writer_alive(version: str) -> bool:
    """Whether the process that wrote version directory ``version`` (named
    v<time>-<pid>-<n>) may still be running; this process counts as not running."""
    parts = version.split("-")
    if len(parts) != 3 or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
