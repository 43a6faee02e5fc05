"""A controlled vocabulary: concept URIs mapped to dense integer ids, with labels per language.

Concept ids are positions. They never change once given: reloading a newer version of a
vocabulary keeps the id of every URI it already had, marks URIs that disappeared as
deprecated and appends new ones, so that trained models stay valid across updates.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
import zlib
from collections.abc import Mapping, Sequence, Sized
from pathlib import Path
from typing import IO, Any

import numpy as np

from kuoro.errors import VocabularyError
from kuoro.util.atomic import atomic_write

_FORMAT = "kuoro-vocabulary"
_FORMAT_VERSION = 1

# What no URI, notation or label of a vocabulary file may hold: C0 and C1 control characters
# (newline, carriage return, tab, ...), the Unicode line and paragraph separators, and lone
# surrogates (not encodable as UTF-8).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
# What the stored form cannot hold at all: it separates strings by newlines, in UTF-8.
_UNSTORABLE = re.compile(r"[\n\ud800-\udfff]")
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


def normalize_uri(uri: str) -> str:
    """Strip whitespace and the angle brackets that Annif formats put around URIs."""
    uri = uri.strip()
    if uri.startswith("<") and uri.endswith(">"):
        uri = uri[1:-1].strip()
    return uri


def control_character(text: str) -> str | None:
    """The first control character in ``text`` as ``U+000A``, or None when it has none.

    URIs and notations are identifiers: one that holds a line break, a tab or another control
    character is a mistake in the vocabulary file, and changing it silently would change which
    concept it names, so readers reject it.
    """
    found = _CONTROL.search(text)
    return None if found is None else f"U+{ord(found.group()):04X}"


def clean_label(label: str) -> str:
    """A label as one line: each run of whitespace or control characters becomes one space.

    Labels are display text: a line break or a tab in one is layout, not meaning, so it becomes
    a space rather than making the whole vocabulary unreadable.
    """
    return " ".join(_CONTROL.sub(" ", label).split())


class Vocabulary:
    """Concepts of one vocabulary, addressed by dense integer ids ``0 .. len(vocab) - 1``."""

    def __init__(
        self,
        name: str,
        uris: Sequence[str],
        labels: Mapping[str, Sequence[str | None]],
        *,
        notations: Sequence[str | None] | None = None,
        deprecated: Sequence[bool] | np.ndarray | None = None,
        broader: Sequence[Sequence[int]] | None = None,
    ) -> None:
        size = len(uris)
        self.name = name
        self._uris = list(uris)
        self._index = {uri: i for i, uri in enumerate(self._uris)}
        if len(self._index) != size:
            raise VocabularyError(f"vocabulary '{name}' lists the same URI more than once")
        self._labels = {lang: [lbl or "" for lbl in values] for lang, values in labels.items()}
        self._notations = [n or "" for n in notations] if notations is not None else [""] * size
        self.deprecated = (
            np.asarray(deprecated, dtype=bool) if deprecated is not None else np.zeros(size, bool)
        )
        lengths = [len(v) for v in self._labels.values()]
        lengths += [len(self._notations), len(self.deprecated)]
        if any(n != size for n in lengths):
            raise VocabularyError(f"vocabulary '{name}': label, notation and flag columns differ")
        _check_storable(name, "URI", self._uris)
        _check_storable(name, "notation", self._notations)
        for lang, column in self._labels.items():
            _check_storable(name, f"label ({lang})", column)
        self._broader_indptr, self._broader_indices = _to_csr(broader, size)
        self._label_index: dict[str, dict[str, int]] = {}

    # -- lookups ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._uris)

    def __repr__(self) -> str:
        return (
            f"Vocabulary(name={self.name!r}, size={len(self)}, active={self.active_count}, "
            f"languages={list(self.languages)!r})"
        )

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(self._labels)

    @property
    def active_count(self) -> int:
        """Number of concepts that are not deprecated."""
        return int(len(self) - self.deprecated.sum())

    @property
    def uris(self) -> Sequence[str]:
        return self._uris

    def id_of(self, uri: str) -> int | None:
        """The id of a URI (bare or in angle brackets), or None when it is not in the vocabulary."""
        found = self._index.get(uri)
        if found is None:
            found = self._index.get(normalize_uri(uri))
        return found

    def uri(self, concept_id: int) -> str:
        return self._uris[concept_id]

    def label(self, concept_id: int, language: str | None = None) -> str | None:
        """The preferred label in ``language`` (default: the first language), or None."""
        return self._labels[self._language(language)][concept_id] or None

    def notation(self, concept_id: int) -> str | None:
        return self._notations[concept_id] or None

    def broader(self, concept_id: int) -> tuple[int, ...]:
        start, end = self._broader_indptr[concept_id], self._broader_indptr[concept_id + 1]
        return tuple(int(i) for i in self._broader_indices[start:end])

    def id_of_label(self, label: str, language: str | None = None) -> int | None:
        """The id of the active concept whose preferred label is exactly ``label``."""
        lang = self._language(language)
        index = self._label_index.get(lang)
        if index is None:
            # Built on first use: most runs never look up labels.
            index = {}
            for i, lbl in enumerate(self._labels[lang]):
                if lbl and not self.deprecated[i]:
                    index.setdefault(lbl, i)
            self._label_index[lang] = index
        return index.get(label.strip())

    def _language(self, language: str | None) -> str:
        if language is None:
            if not self._labels:
                raise VocabularyError(f"vocabulary '{self.name}' has no labels")
            return next(iter(self._labels))
        if language not in self._labels:
            raise VocabularyError(
                f"vocabulary '{self.name}' has no labels in language '{language}'; "
                f"it has: {', '.join(self._labels) or 'none'}"
            )
        return language

    @property
    def fingerprint(self) -> str:
        """Identifies the id → URI assignment; models trained on one vocabulary check it."""
        return self.prefix_fingerprint(len(self))

    def prefix_fingerprint(self, size: int) -> str:
        """The fingerprint of the first ``size`` concepts: an updated vocabulary (concepts
        appended) keeps the fingerprint of the version a model was trained on."""
        digest = hashlib.sha256("\n".join(self._uris[:size]).encode("utf-8"))
        return digest.hexdigest()[:16]

    # -- updating --------------------------------------------------------------------------

    def updated_with(self, newer: Vocabulary) -> Vocabulary:
        """This vocabulary updated to ``newer``'s content, keeping every existing concept's id."""
        uris = list(self._uris)
        index = dict(self._index)
        for uri in newer.uris:
            if uri not in index:
                index[uri] = len(uris)
                uris.append(uri)
        size = len(uris)
        # Where the newer version maps to in the merged id space.
        new_to_merged = np.array([index[u] for u in newer.uris], dtype=np.int64)

        languages = list(dict.fromkeys([*self.languages, *newer.languages]))
        labels: dict[str, list[str]] = {}
        for lang in languages:
            column = list(self._labels.get(lang, [""] * len(self)))
            column += [""] * (size - len(column))
            new_column = newer._labels.get(lang)
            for new_id, merged_id in enumerate(new_to_merged):
                column[merged_id] = new_column[new_id] if new_column is not None else ""
            labels[lang] = column
        notations = list(self._notations) + [""] * (size - len(self))
        deprecated = np.ones(size, dtype=bool)  # URIs missing from the newer version
        broader: list[list[int]] = [list(self.broader(i)) for i in range(len(self))]
        broader += [[] for _ in range(size - len(self))]
        for new_id, merged_id in enumerate(new_to_merged):
            notations[merged_id] = newer._notations[new_id]
            deprecated[merged_id] = bool(newer.deprecated[new_id])
            broader[merged_id] = [int(new_to_merged[b]) for b in newer.broader(new_id)]
        return Vocabulary(
            newer.name,
            uris,
            labels,
            notations=notations,
            deprecated=deprecated,
            broader=broader,
        )

    # -- storage ---------------------------------------------------------------------------

    def save(self, path: str | Path, *, source: str | None = None) -> None:
        """Write the vocabulary to ``path`` (.npz, no pickle), atomically.

        The bytes are read back and compared with this vocabulary before they replace the old
        file: a file that would not read back as this vocabulary is never written.
        """
        path = Path(path)
        meta = {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "name": self.name,
            "languages": list(self.languages),
            "size": len(self),
            "source": source,
        }
        arrays: dict[str, Any] = {
            "meta": _encode([json.dumps(meta)]),
            "uris": _encode(self._uris),
            "notations": _encode(self._notations),
            "deprecated": self.deprecated,
            "broader_indptr": self._broader_indptr,
            "broader_indices": self._broader_indices,
        }
        for i, lang in enumerate(self.languages):
            arrays[f"labels_{i}"] = _encode(self._labels[lang])
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        data = buffer.getvalue()
        try:
            problem = self._difference(Vocabulary._read(io.BytesIO(data), str(path)))
        except VocabularyError as exc:
            problem = str(exc)
        if problem:
            raise VocabularyError(
                f"{path}: not written: vocabulary '{self.name}' would not read back as "
                f"written ({problem})"
            )
        with atomic_write(path) as out:
            out.write(data)

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        """Read a vocabulary written by :meth:`save`."""
        path = Path(path)
        try:
            with path.open("rb") as stream:
                return cls._read(stream, str(path))
        except FileNotFoundError:
            raise VocabularyError(f"{path}: no such vocabulary file") from None
        except OSError as exc:
            raise VocabularyError(f"{path}: cannot read vocabulary file ({exc})") from exc

    @classmethod
    def _read(cls, stream: IO[bytes], where: str) -> Vocabulary:
        try:
            with np.load(stream, allow_pickle=False) as data:
                meta = json.loads(_decode(data["meta"], 1)[0])
                if not isinstance(meta, dict) or (
                    meta.get("format") != _FORMAT or meta.get("version") != _FORMAT_VERSION
                ):
                    raise VocabularyError(f"{where}: not a Kuoro vocabulary (format {meta!r})")
                languages = list(meta["languages"])
                vocab = cls.__new__(cls)
                vocab.name = str(meta["name"])
                size = int(meta["size"])
                vocab._uris = _decode(data["uris"], size)
                vocab._index = {uri: i for i, uri in enumerate(vocab._uris)}
                vocab._labels = {
                    str(lang): _decode(data[f"labels_{i}"], size)
                    for i, lang in enumerate(languages)
                }
                vocab._notations = _decode(data["notations"], size)
                vocab.deprecated = np.asarray(data["deprecated"], dtype=bool)
                vocab._broader_indptr = data["broader_indptr"]
                vocab._broader_indices = data["broader_indices"]
                vocab._label_index = {}
        except _READ_ERRORS as exc:
            raise VocabularyError(f"{where}: damaged vocabulary file ({exc})") from exc
        columns: list[Sized] = [
            vocab._uris,
            vocab._notations,
            vocab.deprecated,
            *vocab._labels.values(),
        ]
        if any(len(column) != size for column in columns) or len(vocab._index) != size:
            raise VocabularyError(f"{where}: damaged vocabulary file (size does not match)")
        if _csr_problem(vocab._broader_indptr, vocab._broader_indices, size):
            raise VocabularyError(f"{where}: damaged vocabulary file (broader links)")
        return vocab

    def _difference(self, other: Vocabulary) -> str:
        """The first way ``other`` differs from this vocabulary, or ''."""
        if (other.name, other.languages) != (self.name, self.languages):
            return "name or languages differ"
        if other._uris != self._uris:
            return "URIs differ"
        if other._notations != self._notations:
            return "notations differ"
        if any(other._labels[lang] != self._labels[lang] for lang in self.languages):
            return "labels differ"
        if not np.array_equal(other.deprecated, self.deprecated):
            return "deprecation flags differ"
        if not (
            np.array_equal(other._broader_indptr, self._broader_indptr)
            and np.array_equal(other._broader_indices, self._broader_indices)
        ):
            return "broader links differ"
        return ""

    @classmethod
    def salvage(cls, path: str | Path) -> tuple[Vocabulary | None, str]:
        """What can be read of a damaged vocabulary file, and a note saying what that is.

        The concept ids are what matters: they are kept when the URI column can be split back
        into exactly the concepts the file lists (a URI that held a line break is rejoined, its
        line break written as %0A). Labels, notations and broader links are kept where their
        column is intact, else left empty (the newer file being loaded supplies them). None
        when not even the ids can be recovered.
        """
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(_decode(data["meta"], 1)[0])
                name, size = str(meta["name"]), int(meta["size"])
                languages = [str(lang) for lang in meta["languages"]]
                raw = data["uris"].tobytes().decode("utf-8", errors="replace")
                uris = _rejoin(raw.split("\n") if size else [], size)
                if uris is None:
                    return None, "its concept URIs cannot be told apart"
                labels = {
                    lang: _column(data, f"labels_{i}", size) for i, lang in enumerate(languages)
                }
                notations = _column(data, "notations", size)
                indptr, indices = data["broader_indptr"], data["broader_indices"]
        except (*_READ_ERRORS, json.JSONDecodeError) as exc:
            return None, f"it cannot be read ({exc})"
        broader: list[list[int]] | None = None
        if not _csr_problem(indptr, indices, size):
            broader = [indices[indptr[i] : indptr[i + 1]].tolist() for i in range(size)]
        repaired = [i for i, uri in enumerate(uris) if _UNSTORABLE.search(uri)]
        for i in repaired:
            uris[i] = _UNSTORABLE.sub(_percent_encoded, uris[i])
        try:
            vocab = cls(name, uris, labels, notations=notations, broader=broader)
        except VocabularyError as exc:
            return None, f"its concept URIs cannot be recovered ({exc})"
        note = f"the ids of its {size} concepts are kept"
        if repaired:
            note += (
                f"; {len(repaired)} URIs with a line break were kept with it written as %0A "
                f"(e.g. {uris[repaired[0]]})"
            )
        return vocab, note


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


def _check_storable(name: str, what: str, strings: Sequence[str]) -> None:
    """Refuse strings that the stored form cannot hold (checked as one string: fast)."""
    if not _UNSTORABLE.search("".join(strings)):
        return
    index, bad = next((i, s) for i, s in enumerate(strings) if _UNSTORABLE.search(s))
    raise VocabularyError(
        f"vocabulary '{name}': the {what} of concept {index} ({bad!r}) holds a line break or "
        "a character that is not valid Unicode text"
    )


def _csr_problem(indptr: np.ndarray, indices: np.ndarray, size: int) -> bool:
    """Whether stored broader links are inconsistent with a vocabulary of ``size`` concepts."""
    if not all(np.issubdtype(a.dtype, np.integer) for a in (indptr, indices)):
        return True
    if indptr.ndim != 1 or indices.ndim != 1 or len(indptr) != size + 1:
        return True
    if indptr[0] != 0 or indptr[-1] != len(indices) or bool(np.any(np.diff(indptr) < 0)):
        return True
    return bool(len(indices)) and bool(indices.min() < 0 or indices.max() >= size)


def _encode(strings: Sequence[str]) -> np.ndarray:
    # Newline-joined UTF-8 decodes 500k strings in milliseconds; readers strip newlines.
    return np.frombuffer("\n".join(strings).encode("utf-8"), dtype=np.uint8)


def _decode(blob: np.ndarray, count: int) -> list[str]:
    # A blob of one empty string and of no strings are both empty: the count tells them apart.
    return blob.tobytes().decode("utf-8").split("\n") if count else []


def _to_csr(broader: Sequence[Sequence[int]] | None, size: int) -> tuple[np.ndarray, np.ndarray]:
    if broader is None:
        return np.zeros(size + 1, dtype=np.int64), np.zeros(0, dtype=np.int32)
    if len(broader) != size:
        raise VocabularyError("broader links must be given for every concept")
    indptr = np.zeros(size + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(b) for b in broader])
    indices = np.fromiter((i for b in broader for i in b), dtype=np.int32, count=int(indptr[-1]))
    return indptr, indices
