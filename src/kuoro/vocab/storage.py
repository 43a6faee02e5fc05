"""How a vocabulary is stored: its columns in one ``.npz`` file (numpy arrays, no pickle).

Strings are stored newline-joined as UTF-8 (500k of them decode in milliseconds); per-concept
lists (broader, related and replacing concepts; alternative and hidden labels) as offsets and
values. A file written before alternative labels, related and replacing concepts were kept
reads as a vocabulary without them.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
import zlib
from collections.abc import Sequence, Sized
from dataclasses import dataclass, fields
from pathlib import Path
from typing import IO, Any

import numpy as np

from kuoro.errors import VocabularyError
from kuoro.vocab.lists import Links, Strings

FORMAT = "kuoro-vocabulary"
FORMAT_VERSION = 1

# What the stored form cannot hold at all: it separates strings by newlines, in UTF-8.
UNSTORABLE = re.compile(r"[\n\ud800-\udfff]")
# A URI scheme ("http:", "urn:"): how a salvaged URI column tells a URI from the rest of one.
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_READ_ERRORS = (
    OSError,
    ValueError,
    KeyError,
    TypeError,
    EOFError,
    zipfile.BadZipFile,
    zlib.error,
)
_LINKS = ("broader", "related", "replaced_by")


@dataclass
class Columns:
    """Everything a vocabulary holds, column by column."""

    name: str
    uris: list[str]
    labels: dict[str, list[str]]
    notations: list[str]
    deprecated: np.ndarray
    broader: Links
    related: Links
    replaced_by: Links
    alt_labels: dict[str, Strings]
    hidden_labels: dict[str, Strings]

    def difference(self, other: Columns) -> str:
        """The first column in which ``other`` differs from these, or ''."""
        for field in fields(self):
            mine, theirs = getattr(self, field.name), getattr(other, field.name)
            same = np.array_equal(mine, theirs) if isinstance(mine, np.ndarray) else mine == theirs
            if not same:
                return f"{field.name.replace('_', ' ')} differ"
        return ""


def encode(columns: Columns, *, source: str | None) -> bytes:
    """The bytes of the ``.npz`` file that holds ``columns``."""
    languages = list(columns.labels)
    meta = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "name": columns.name,
        "languages": languages,
        "size": len(columns.uris),
        "source": source,
        "alt_languages": list(columns.alt_labels),
        "hidden_languages": list(columns.hidden_labels),
    }
    arrays: dict[str, Any] = {
        "meta": _encode([json.dumps(meta)]),
        "uris": _encode(columns.uris),
        "notations": _encode(columns.notations),
        "deprecated": columns.deprecated,
    }
    for key in _LINKS:
        links: Links = getattr(columns, key)
        arrays[f"{key}_indptr"], arrays[f"{key}_indices"] = links.indptr, links.indices
    for i, lang in enumerate(languages):
        arrays[f"labels_{i}"] = _encode(columns.labels[lang])
    for kind in ("alt", "hidden"):
        for i, strings in enumerate(getattr(columns, f"{kind}_labels").values()):
            arrays[f"{kind}_{i}_indptr"] = strings.indptr
            arrays[f"{kind}_{i}"] = _encode(strings.values)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def decode(stream: IO[bytes], where: str) -> Columns:
    """The columns of a stored vocabulary; a VocabularyError naming ``where`` if damaged."""
    try:
        with np.load(stream, allow_pickle=False) as data:
            meta = json.loads(_decode(data["meta"], 1)[0])
            if not isinstance(meta, dict) or (
                meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION
            ):
                raise VocabularyError(f"{where}: not a Kuoro vocabulary (format {meta!r})")
            size = int(meta["size"])
            columns = Columns(
                name=str(meta["name"]),
                uris=_decode(data["uris"], size),
                labels={
                    str(lang): _decode(data[f"labels_{i}"], size)
                    for i, lang in enumerate(meta["languages"])
                },
                notations=_decode(data["notations"], size),
                deprecated=np.asarray(data["deprecated"], dtype=bool),
                broader=_links(data, "broader", size),
                related=_links(data, "related", size),
                replaced_by=_links(data, "replaced_by", size),
                alt_labels=_strings(data, "alt", meta.get("alt_languages", [])),
                hidden_labels=_strings(data, "hidden", meta.get("hidden_languages", [])),
            )
    except _READ_ERRORS as exc:
        raise VocabularyError(f"{where}: damaged vocabulary file ({exc})") from exc
    problem = _problem(columns, size)
    if problem:
        raise VocabularyError(f"{where}: damaged vocabulary file ({problem})")
    return columns


def read(path: Path) -> Columns:
    try:
        with path.open("rb") as stream:
            return decode(stream, str(path))
    except FileNotFoundError:
        raise VocabularyError(f"{path}: no such vocabulary file") from None
    except OSError as exc:
        raise VocabularyError(f"{path}: cannot read vocabulary file ({exc})") from exc


def _problem(columns: Columns, size: int) -> str:
    sized: list[Sized] = [
        columns.uris,
        columns.notations,
        columns.deprecated,
        *columns.labels.values(),
    ]
    if any(len(column) != size for column in sized) or len(set(columns.uris)) != size:
        return "size does not match"
    for key in _LINKS:
        problem = getattr(columns, key).problem(size)
        if problem:
            return f"{key.replace('_', ' ')} links: {problem}"
    for kind in ("alt_labels", "hidden_labels"):
        for lang, strings in getattr(columns, kind).items():
            problem = strings.problem(size)
            if problem:
                return f"{kind.replace('_', ' ')} ({lang}): {problem}"
    return ""


def _links(data: Any, key: str, size: int) -> Links:
    if f"{key}_indptr" not in data.files:  # written before these links were kept
        return Links.empty(size)
    return Links(data[f"{key}_indptr"], data[f"{key}_indices"])


def _intact_links(data: Any, key: str, size: int) -> Links:
    """Stored links, or none where they are missing or damaged."""
    try:
        found = _links(data, key, size)
    except _READ_ERRORS:
        return Links.empty(size)
    return Links.empty(size) if found.problem(size) else found


def _strings(data: Any, kind: str, languages: Sequence[str]) -> dict[str, Strings]:
    found = {}
    for i, lang in enumerate(languages):
        indptr = data[f"{kind}_{i}_indptr"]
        found[str(lang)] = Strings(indptr, _decode(data[f"{kind}_{i}"], int(indptr[-1])))
    return found


def salvage(path: Path) -> tuple[Columns | None, str]:
    """What can be read of a damaged vocabulary file, and a note saying what that is.

    The concept ids are what matters: they are kept when the URI column can be split back into
    exactly the concepts the file lists (a URI that held a line break is rejoined, its line
    break written as %0A). Labels, notations and links are kept where their column is intact,
    else left empty (the newer file being loaded supplies them). None when not even the ids
    can be recovered.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(_decode(data["meta"], 1)[0])
            name, size = str(meta["name"]), int(meta["size"])
            languages = [str(lang) for lang in meta["languages"]]
            raw = data["uris"].tobytes().decode("utf-8", errors="replace")
            uris = _rejoin(raw.split("\n") if size else [], size)
            if uris is None:
                return None, "its concept URIs cannot be told apart"
            labels = {lang: _column(data, f"labels_{i}", size) for i, lang in enumerate(languages)}
            notations = _column(data, "notations", size)
            broader, related, replaced_by = (_intact_links(data, key, size) for key in _LINKS)
    except (*_READ_ERRORS, json.JSONDecodeError) as exc:
        return None, f"it cannot be read ({exc})"
    repaired = [i for i, uri in enumerate(uris) if UNSTORABLE.search(uri)]
    for i in repaired:
        uris[i] = UNSTORABLE.sub(_percent_encoded, uris[i])
    if len(set(uris)) != size:
        return None, "its concept URIs cannot be recovered (the same URI more than once)"
    columns = Columns(
        name,
        uris,
        labels,
        notations,
        np.zeros(size, dtype=bool),
        broader,
        related,
        replaced_by,
        alt_labels={},
        hidden_labels={},
    )
    note = f"the ids of its {size} concepts are kept"
    if repaired:
        note += (
            f"; {len(repaired)} URIs with a line break were kept with it written as %0A "
            f"(e.g. {uris[repaired[0]]})"
        )
    return columns, note


def check_storable(name: str, what: str, strings: Sequence[str]) -> None:
    """Refuse strings that the stored form cannot hold (checked as one string: fast)."""
    if not UNSTORABLE.search("".join(strings)):
        return
    index, bad = next((i, s) for i, s in enumerate(strings) if UNSTORABLE.search(s))
    raise VocabularyError(
        f"vocabulary '{name}': the {what} of concept {index} ({bad!r}) holds a line break or "
        "a character that is not valid Unicode text"
    )


def _rejoin(pieces: list[str], size: int) -> list[str] | None:
    """The ``size`` URIs that newline-joined gave ``pieces``, or None if that is ambiguous.

    A URI that held a line break is split in two; the part after the break does not start
    with a URI scheme, so such parts are joined back onto the piece before them.
    """
    if len(pieces) == size:
        return pieces
    if len(pieces) < size:
        return None
    joined: list[str] = []
    for piece in pieces:
        if joined and not _SCHEME.match(piece):
            joined[-1] += "\n" + piece
        else:
            joined.append(piece)
    return joined if len(joined) == size else None


def _column(data: Any, key: str, size: int) -> list[str]:
    """A stored string column, or ``size`` empty strings where it is missing or damaged."""
    try:
        column = _decode(data[key], size)
    except _READ_ERRORS:
        column = []
    return column if len(column) == size else [""] * size


def _percent_encoded(match: re.Match[str]) -> str:
    return "".join(f"%{byte:02X}" for byte in match.group().encode("utf-8", "surrogatepass"))


def _encode(strings: Sequence[str]) -> np.ndarray:
    # Newline-joined UTF-8 decodes 500k strings in milliseconds; readers strip newlines.
    return np.frombuffer("\n".join(strings).encode("utf-8"), dtype=np.uint8)


def _decode(blob: np.ndarray, count: int) -> list[str]:
    # A blob of one empty string and of no strings are both empty: the count tells them apart.
    return blob.tobytes().decode("utf-8").split("\n") if count else []
