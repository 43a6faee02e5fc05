"""Readers for the corpus formats; :mod:`kuoro.corpus.documents` makes Documents of what they yield.

Each reader yields ``(text, subject ids, document id, metadata)`` per usable document and
records what it skipped, and which subject references it could not resolve, in a
:class:`Reading` that lives for one pass over the corpus.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import os
import re
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from kuoro.errors import CorpusError

log = logging.getLogger("kuoro.corpus.documents")

# Per file and reason; the rest are counted and mentioned once at the end of the file.
MAX_WARNINGS = 10

_BUFFER_SIZE = 1 << 20

_URI_LIKE = re.compile(r"(?:[A-Za-z][A-Za-z0-9+.-]*://|urn:)\S+", re.IGNORECASE)

Record = tuple[str, list[int], str | None, Mapping[str, str] | None]


class SubjectResolver(Protocol):
    """Maps subject references to concept ids; :class:`kuoro.vocab.vocabulary.Vocabulary` is one."""

    def id_of(self, uri: str) -> int | None: ...

    def id_of_label(self, label: str, language: str | None = None) -> int | None: ...

    def current(self, concept_id: int) -> tuple[int, ...]: ...


class Reading:
    """One pass over a corpus: subject resolution with caches, skip counts and warnings."""

    def __init__(
        self,
        resolver: SubjectResolver | None,
        language: str | None,
        subjects: bool,
        skipped: Counter[str],
        unknown: Counter[str],
    ) -> None:
        self.resolver = resolver
        self.language = language
        self.subjects = subjects
        self.skipped = skipped
        self.unknown = unknown
        # Reference as written -> the ids it means now (none when unknown). Bounded by the
        # distinct references.
        self._uri_ids: dict[str, tuple[int, ...]] = {}
        self._label_ids: dict[str, int] = {}
        # Warnings per reason in the file being read.
        self._warned: Counter[str] = Counter()

    # -- subjects ------------------------------------------------------------------------------

    def uri_ids(self, refs: list[str]) -> list[int]:
        """The ids of URIs (bare or in angle brackets), a deprecated concept's replacements in
        its place; unknown ones are counted, not returned."""
        cache = self._uri_ids
        ids: list[int] = []
        for ref in refs:
            found = cache.get(ref)
            if found is None:
                found = cache[ref] = self._lookup_uri(ref)
            if found:
                ids.extend(found)
            else:
                self.unknown[f"<{_strip_brackets(ref)}>"] += 1
        return ids

    def label_id(self, label: str) -> int | None:
        found = self._label_ids.get(label)
        if found is None:
            assert self.resolver is not None
            resolved = self.resolver.id_of_label(label, self.language)
            found = self._label_ids[label] = -1 if resolved is None else resolved
        if found < 0:
            self.unknown[label] += 1
            return None
        return found

    def _lookup_uri(self, ref: str) -> tuple[int, ...]:
        assert self.resolver is not None
        found = self.resolver.id_of(_strip_brackets(ref))
        return () if found is None else self.resolver.current(found)

    # -- problems ------------------------------------------------------------------------------

    def skip(self, where: Path, lineno: int | None, reason: str, detail: str = "") -> None:
        """Count a skipped line or document, warning about the first few per file and reason."""
        self.skipped[reason] += 1
        self._warned[reason] += 1
        if self._warned[reason] <= MAX_WARNINGS:
            location = where if lineno is None else f"{where}:{lineno}"
            log.warning("%s: %s%s; skipped", location, reason, detail)

    def finish_file(self, path: Path) -> None:
        """Mention the warnings that were held back while reading ``path``."""
        for reason, count in self._warned.items():
            if count > MAX_WARNINGS:
                log.warning("%s: … and %d more skipped (%s)", path, count - MAX_WARNINGS, reason)
        self._warned.clear()


def _strip_brackets(ref: str) -> str:
    return ref[1:-1] if ref[:1] == "<" and ref[-1:] == ">" else ref


def reader_for(path: Path) -> Callable[[Path, Reading], Iterator[Record]]:
    """The reader for a corpus path: full-text directory, CSV, JSON lines, else short-text TSV."""
    if path.is_dir():
        return read_fulltext_dir
    name = path.name.lower()
    if name.endswith((".csv", ".csv.gz")):
        return read_csv
    if name.endswith((".jsonl", ".jsonl.gz")):
        return read_jsonl
    return read_tsv


def _lines(path: Path, reading: Reading) -> Iterator[tuple[int, str]]:
    """Numbered lines decoded one by one, so that invalid UTF-8 costs one line, not the file."""
    offset = 0
    try:
        with _open_binary(path) as stream:
            for lineno, raw in enumerate(stream, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    at = f" at byte {offset + exc.start} of the file"
                    reading.skip(path, lineno, "invalid UTF-8", at)
                else:
                    if lineno == 1:
                        line = line.removeprefix("\ufeff")
                    yield lineno, line
                offset += len(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise CorpusError(f"{path}: cannot read: {exc}") from exc
    reading.finish_file(path)


def _open_binary(path: Path) -> BinaryIO:
    # GzipFile's own line iteration is slow; a large buffer in front of it halves the time.
    if path.name.lower().endswith(".gz"):
        return io.BufferedReader(gzip.open(path, "rb"), _BUFFER_SIZE)
    return path.open("rb", buffering=_BUFFER_SIZE)


def read_tsv(path: Path, reading: Reading) -> Iterator[Record]:
    """Short-text TSV: ``text<TAB>uri uri …``, split on the first tab."""
    resolve = reading.resolver is not None
    required = reading.subjects
    for lineno, line in _lines(path, reading):
        text, tab, refs = line.rstrip("\r\n").partition("\t")
        if not tab:
            if not text.strip():
                continue  # blank lines, e.g. at the end of a file, are not documents
            if required:
                reading.skip(path, lineno, "line without a tab")
                continue
        text = text.strip()
        if not text:
            reading.skip(path, lineno, "empty text")
            continue
        yield text, reading.uri_ids(refs.split()) if resolve and refs else [], None, None


def read_csv(path: Path, reading: Reading) -> Iterator[Record]:
    """CSV with a header: ``text``, ``subject_uris``, optional ``document_id``, metadata."""
    lineno = 0

    def physical_lines() -> Iterator[str]:
        nonlocal lineno
        for lineno, line in _lines(path, reading):  # noqa: B007 - lineno is read by the caller
            yield line

    rows = csv.reader(physical_lines())
    try:
        header = [name.strip() for name in next(rows, [])]
    except csv.Error as exc:
        raise CorpusError(f"{path}: malformed CSV header: {exc}") from exc
    if not header:
        return
    if "text" not in header:
        raise CorpusError(f"{path}: the CSV header has no 'text' column (it has: {header})")
    if reading.subjects and "subject_uris" not in header:
        raise CorpusError(f"{path}: the CSV header has no 'subject_uris' column")
    text_at = header.index("text")
    uris_at = header.index("subject_uris") if "subject_uris" in header else None
    id_at = header.index("document_id") if "document_id" in header else None
    extra = [(i, name) for i, name in enumerate(header) if i not in (text_at, uris_at, id_at)]
    resolve = reading.resolver is not None and uris_at is not None
    while True:
        start = lineno + 1
        try:
            row = next(rows)
        except StopIteration:
            return
        except csv.Error as exc:
            reading.skip(path, start, "malformed CSV", f" ({exc})")
            continue
        if not any(value.strip() for value in row):
            continue
        if len(row) > len(header):
            reading.skip(path, start, "more fields than the header")
            continue
        row += [""] * (len(header) - len(row))
        text = row[text_at].strip()
        if not text:
            reading.skip(path, start, "empty text")
            continue
        ids = reading.uri_ids(row[uris_at].split()) if resolve and uris_at is not None else []
        document_id = (row[id_at].strip() or None) if id_at is not None else None
        yield text, ids, document_id, {name: row[i] for i, name in extra} if extra else None


def read_jsonl(path: Path, reading: Reading) -> Iterator[Record]:
    """JSON lines: ``{"document_id", "text", "metadata", "subjects": [{"uri"|"label"}]}``."""
    for lineno, line in _lines(path, reading):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            reading.skip(path, lineno, "invalid JSON", f" ({exc.msg} at column {exc.colno})")
            continue
        except RecursionError:
            reading.skip(path, lineno, "invalid JSON", " (nested too deeply)")
            continue
        problem = _jsonl_problem(obj, reading.subjects)
        if problem:
            reading.skip(path, lineno, problem)
            continue
        text = obj["text"].strip()
        if not text:
            reading.skip(path, lineno, "empty text")
            continue
        ids: list[int] = []
        if reading.resolver is not None:
            for subject in obj.get("subjects") or ():
                uri, label = subject.get("uri", "").strip(), subject.get("label", "").strip()
                if uri:
                    ids += reading.uri_ids([uri])
                elif label and (found := reading.label_id(label)) is not None:
                    ids.append(found)
        document_id = obj.get("document_id")
        metadata = obj.get("metadata")
        if metadata:
            metadata = {
                str(key): value if isinstance(value, str) else json.dumps(value)
                for key, value in metadata.items()
            }
        yield text, ids, None if document_id is None else str(document_id), metadata


def _jsonl_problem(obj: Any, subjects_required: bool) -> str | None:
    """Why a decoded JSON line is not a document, or None when it is one."""
    if not isinstance(obj, dict):
        return "not a JSON object"
    if not isinstance(obj.get("text"), str):
        return "no text string"
    if subjects_required and "subjects" not in obj:
        return "no subjects"
    subjects = obj.get("subjects")
    if subjects is not None and not (
        isinstance(subjects, list)
        and all(
            isinstance(s, dict)
            and isinstance(s.get("uri", ""), str)
            and isinstance(s.get("label", ""), str)
            and ("uri" in s or "label" in s)
            for s in subjects
        )
    ):
        return 'invalid subjects (expected a list of {"uri": …} or {"label": …})'
    if not isinstance(obj.get("document_id", ""), (str, int)):
        return "invalid document_id"
    if not isinstance(obj.get("metadata") or {}, dict):
        return "invalid metadata (expected an object)"
    return None


def read_fulltext_dir(path: Path, reading: Reading) -> Iterator[Record]:
    """A directory of ``ID.txt`` documents with subjects in ``ID.tsv`` (preferred) or ``ID.key``."""
    # Listing names is unavoidable for a sorted order; it is names, not documents.
    try:
        names = {entry.name for entry in os.scandir(path) if entry.is_file()}
    except OSError as exc:
        raise CorpusError(f"{path}: cannot read: {exc}") from exc
    for name in sorted(n for n in names if n.endswith(".txt")):
        stem = name[:-4]
        subject_file = next(
            (f"{stem}{ext}" for ext in (".tsv", ".key") if f"{stem}{ext}" in names), None
        )
        if subject_file is None and reading.subjects:
            reading.skip(path / name, None, "missing subject file", f" ({stem}.tsv or {stem}.key)")
            continue
        try:
            text = (path / name).read_text(encoding="utf-8-sig", errors="replace").strip()
            ids = (
                _subject_file_ids(path / subject_file, reading)
                if subject_file and reading.resolver is not None
                else []
            )
        except OSError as exc:
            raise CorpusError(f"{path / name}: cannot read: {exc}") from exc
        if not text:
            reading.skip(path / name, None, "empty text")
            continue
        yield text, ids, stem, None
    reading.finish_file(path)


def _subject_file_ids(path: Path, reading: Reading) -> list[int]:
    """Subjects of one full-text document: a ``<uri>`` field, else the first field as label."""
    ids: list[int] = []
    with path.open(encoding="utf-8-sig", errors="replace") as lines:
        for line in lines:
            fields = [f.strip() for f in line.split("\t")]
            uri = next((f for f in fields if f[:1] == "<" and f[-1:] == ">"), None)
            if uri is None and _URI_LIKE.fullmatch(fields[0]):
                uri = fields[0]
            if uri is not None:
                ids += reading.uri_ids([uri])
            elif fields[0]:
                found = reading.label_id(fields[0])
                if found is not None:
                    ids.append(found)
    return ids
