"""A controlled vocabulary: concept URIs mapped to dense integer ids, with labels per language.

Concept ids are positions. They never change once given: reloading a newer version of a
vocabulary keeps the id of every URI it already had, marks URIs that disappeared as
deprecated and appends new ones, so that trained models stay valid across updates.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Mapping, Sequence, Sized
from pathlib import Path
from typing import Any

import numpy as np

from kuoro.atomic import atomic_write
from kuoro.errors import VocabularyError

_FORMAT = "kuoro-vocabulary"
_FORMAT_VERSION = 1


def normalize_uri(uri: str) -> str:
    """Strip whitespace and the angle brackets that Annif formats put around URIs."""
    uri = uri.strip()
    if uri.startswith("<") and uri.endswith(">"):
        uri = uri[1:-1].strip()
    return uri


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
        """Write the vocabulary to ``path`` (.npz, no pickle), atomically."""
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
        with atomic_write(path) as out:
            np.savez_compressed(out, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        """Read a vocabulary written by :meth:`save`."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(_decode(data["meta"], 1)[0])
                if meta.get("format") != _FORMAT or meta.get("version") != _FORMAT_VERSION:
                    raise VocabularyError(f"{path}: not a Kuoro vocabulary (format {meta!r})")
                languages = meta["languages"]
                vocab = cls.__new__(cls)
                vocab.name = meta["name"]
                size = int(meta["size"])
                vocab._uris = _decode(data["uris"], size)
                vocab._index = {uri: i for i, uri in enumerate(vocab._uris)}
                vocab._labels = {
                    lang: _decode(data[f"labels_{i}"], size) for i, lang in enumerate(languages)
                }
                vocab._notations = _decode(data["notations"], size)
                vocab.deprecated = data["deprecated"]
                vocab._broader_indptr = data["broader_indptr"]
                vocab._broader_indices = data["broader_indices"]
                vocab._label_index = {}
        except FileNotFoundError:
            raise VocabularyError(f"{path}: no such vocabulary file") from None
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
            raise VocabularyError(f"{path}: damaged vocabulary file ({exc})") from exc
        columns: list[Sized] = [
            vocab._uris,
            vocab._notations,
            vocab.deprecated,
            *vocab._labels.values(),
        ]
        if any(len(column) != size for column in columns) or len(vocab._index) != size:
            raise VocabularyError(f"{path}: damaged vocabulary file (size does not match)")
        return vocab


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
