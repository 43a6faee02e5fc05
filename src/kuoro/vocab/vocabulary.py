"""A controlled vocabulary: concept URIs mapped to dense integer ids, with labels per language.

Concept ids are positions. They never change once given: reloading a newer version of a
vocabulary keeps the id of every URI it already had, marks URIs that disappeared as
deprecated and appends new ones, so that trained models stay valid across updates.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from kuoro.errors import VocabularyError
from kuoro.util.atomic import atomic_write
from kuoro.vocab import storage
from kuoro.vocab.lists import Links, Strings
from kuoro.vocab.storage import Columns, check_storable

# What no URI, notation or label of a vocabulary file may hold: C0 and C1 control characters
# (newline, carriage return, tab, ...), the Unicode line and paragraph separators, and lone
# surrogates (not encodable as UTF-8).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


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
    """Concepts of one vocabulary, addressed by dense integer ids ``0 .. len(vocab) - 1``.

    Each concept has a URI, a preferred label per language, and may have alternative and
    hidden labels per language (SKOS ``altLabel``, ``hiddenLabel``), a notation, broader and
    related concepts, and, when deprecated, the concepts that replace it.
    """

    def __init__(
        self,
        name: str,
        uris: Sequence[str],
        labels: Mapping[str, Sequence[str | None]],
        *,
        notations: Sequence[str | None] | None = None,
        deprecated: Sequence[bool] | np.ndarray | None = None,
        broader: Sequence[Sequence[int]] | None = None,
        alt_labels: Mapping[str, Sequence[Sequence[str]]] | None = None,
        hidden_labels: Mapping[str, Sequence[Sequence[str]]] | None = None,
        related: Sequence[Sequence[int]] | None = None,
        replaced_by: Sequence[Sequence[int]] | None = None,
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
        try:
            self._alt = {lang: Strings.of(v, size) for lang, v in (alt_labels or {}).items()}
            self._hidden = {lang: Strings.of(v, size) for lang, v in (hidden_labels or {}).items()}
            self._broader = Links.of(broader, size)
            self._related = Links.of(related, size)
            self._replaced_by = Links.of(replaced_by, size)
        except ValueError as exc:
            raise VocabularyError(f"vocabulary '{name}': {exc}") from exc
        check_storable(name, "URI", self._uris)
        check_storable(name, "notation", self._notations)
        for lang, column in self._labels.items():
            check_storable(name, f"label ({lang})", column)
        for kind, lists in (("alternative label", self._alt), ("hidden label", self._hidden)):
            for lang, strings in lists.items():
                check_storable(name, f"{kind} ({lang})", strings.values)
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

    def alt_labels(self, concept_id: int, language: str | None = None) -> tuple[str, ...]:
        """The alternative labels in ``language`` (default: the first language)."""
        found = self._alt.get(self._language(language))
        return () if found is None else found[concept_id]

    def hidden_labels(self, concept_id: int, language: str | None = None) -> tuple[str, ...]:
        """The hidden labels (misspellings, old forms: matched, never shown) in ``language``."""
        found = self._hidden.get(self._language(language))
        return () if found is None else found[concept_id]

    def notation(self, concept_id: int) -> str | None:
        return self._notations[concept_id] or None

    def broader(self, concept_id: int) -> tuple[int, ...]:
        return self._broader[concept_id]

    def narrower(self, concept_id: int) -> tuple[int, ...]:
        """The concepts whose broader concept this one is."""
        return self._narrower[concept_id]

    @cached_property
    def _narrower(self) -> Links:
        return self._broader.inverse()

    def related(self, concept_id: int) -> tuple[int, ...]:
        return self._related[concept_id]

    def replaced_by(self, concept_id: int) -> tuple[int, ...]:
        """The concepts that replace a deprecated one (``dct:isReplacedBy``)."""
        return self._replaced_by[concept_id]

    def current(self, concept_id: int) -> tuple[int, ...]:
        """What a reference to the concept means now: a deprecated concept replaced by others
        (``dct:isReplacedBy``, followed through chains) means them; any other, itself."""
        seen, pending, found = {concept_id}, [concept_id], []
        while pending:
            concept = pending.pop(0)
            replacements = self._replaced_by[concept] if self.deprecated[concept] else ()
            if not replacements:
                found.append(concept)
            for replacement in replacements:
                if replacement not in seen:
                    seen.add(replacement)
                    pending.append(replacement)
        return tuple(sorted(found))

    def label_counts(self) -> dict[str, int]:
        """How many labels of each kind the vocabulary holds, over all languages."""
        return {
            "preferred": sum(
                sum(1 for label in column if label) for column in self._labels.values()
            ),
            "alternative": sum(len(s.values) for s in self._alt.values()),
            "hidden": sum(len(s.values) for s in self._hidden.values()),
        }

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
        new_to_merged = [index[u] for u in newer.uris]

        def merged(old: list[Any], new: Sequence[Any] | None, empty: Any) -> list[Any]:
            """A column of the merged vocabulary: the newer version's value for every concept
            it has, the old one's (or ``empty``) for the rest."""
            column = old + [empty] * (size - len(old))
            for new_id, merged_id in enumerate(new_to_merged):
                column[merged_id] = new[new_id] if new is not None else empty
            return column

        def ids(links: Links) -> list[list[int]]:
            return [[new_to_merged[i] for i in ids] for ids in links.lists()]

        def label_lists(
            old: Mapping[str, Strings], new: Mapping[str, Strings]
        ) -> dict[str, list[list[str]]]:
            return {
                lang: merged(
                    old[lang].lists() if lang in old else [[] for _ in range(len(self))],
                    new[lang].lists() if lang in new else None,
                    [],
                )
                for lang in dict.fromkeys([*old, *new])
            }

        languages = list(dict.fromkeys([*self.languages, *newer.languages]))
        deprecated = np.ones(size, dtype=bool)  # URIs missing from the newer version
        deprecated[new_to_merged] = newer.deprecated
        return Vocabulary(
            newer.name,
            uris,
            {
                lang: merged(
                    list(self._labels.get(lang, [""] * len(self))), newer._labels.get(lang), ""
                )
                for lang in languages
            },
            notations=merged(list(self._notations), newer._notations, ""),
            deprecated=deprecated,
            broader=merged(self._broader.lists(), ids(newer._broader), []),
            alt_labels=label_lists(self._alt, newer._alt),
            hidden_labels=label_lists(self._hidden, newer._hidden),
            related=merged(self._related.lists(), ids(newer._related), []),
            replaced_by=merged(self._replaced_by.lists(), ids(newer._replaced_by), []),
        )

    # -- storage (the file format: kuoro.vocab.storage) ------------------------------------

    def columns(self) -> Columns:
        """Everything the vocabulary holds, column by column, as it is stored."""
        return Columns(
            self.name,
            self._uris,
            self._labels,
            self._notations,
            self.deprecated,
            self._broader,
            self._related,
            self._replaced_by,
            self._alt,
            self._hidden,
        )

    @classmethod
    def from_columns(cls, columns: Columns) -> Vocabulary:
        """The vocabulary of stored columns (already checked by the reader)."""
        vocab = cls.__new__(cls)
        vocab.name = columns.name
        vocab._uris = columns.uris
        vocab._index = {uri: i for i, uri in enumerate(columns.uris)}
        vocab._labels = columns.labels
        vocab._notations = columns.notations
        vocab.deprecated = columns.deprecated
        vocab._broader, vocab._related = columns.broader, columns.related
        vocab._replaced_by = columns.replaced_by
        vocab._alt, vocab._hidden = columns.alt_labels, columns.hidden_labels
        vocab._label_index = {}
        return vocab

    def save(self, path: str | Path, *, source: str | None = None) -> None:
        """Write the vocabulary to ``path`` (.npz, no pickle), atomically.

        The bytes are read back and compared with this vocabulary before they replace the old
        file: a file that would not read back as this vocabulary is never written.
        """
        path = Path(path)
        data = storage.encode(self.columns(), source=source)
        try:
            problem = self.columns().difference(storage.decode(io.BytesIO(data), str(path)))
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
        return cls.from_columns(storage.read(Path(path)))

    @classmethod
    def salvage(cls, path: str | Path) -> tuple[Vocabulary | None, str]:
        """What can be read of a damaged vocabulary file, and a note saying what that is (see
        :func:`kuoro.vocab.storage.salvage`)."""
        columns, note = storage.salvage(Path(path))
        if columns is None:
            return None, note
        try:
            for what, strings in (("URI", columns.uris), ("notation", columns.notations)):
                check_storable(columns.name, what, strings)
        except VocabularyError as exc:
            return None, f"its concept URIs cannot be recovered ({exc})"
        return cls.from_columns(columns), note
