"""Document corpora: the formats Annif reads, streamed one document at a time.

A corpus path is read by its form: a directory holds full-text documents (``ID.txt`` with
subjects in ``ID.tsv`` or ``ID.key``), ``.csv`` and ``.jsonl`` (optionally gzipped) are
CSV and JSON lines corpora, and anything else is a short-text TSV corpus (``text<TAB>uris``).
Bad lines are skipped with a warning; what was skipped and which subject references the
vocabulary lacks is collected in a :class:`CorpusReport` per pass.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from types import MappingProxyType

from kuoro.corpus.formats import Reading, SubjectResolver, reader_for
from kuoro.errors import CorpusError

__all__ = ["Corpus", "CorpusReport", "Document", "SubjectResolver"]

log = logging.getLogger("kuoro.corpus.documents")

_NO_METADATA: Mapping[str, str] = MappingProxyType({})


def _no_metadata() -> Mapping[str, str]:
    return _NO_METADATA


@dataclass(frozen=True, slots=True)
class Document:
    """One document: its text and the ids of its subjects (sorted, unique)."""

    text: str
    subjects: tuple[int, ...] = ()
    document_id: str | None = None
    metadata: Mapping[str, str] = field(default_factory=_no_metadata, hash=False)

    def __post_init__(self) -> None:
        subjects = self.subjects
        if len(subjects) > 1 or type(subjects) is not tuple:
            object.__setattr__(self, "subjects", tuple(sorted(set(subjects))))
        # A read-only copy, so that a frozen document cannot change through its metadata.
        if self.metadata is not _NO_METADATA:
            object.__setattr__(self, "metadata", MappingProxyType(dict(self.metadata)))


_set_slot = {name: getattr(Document, name).__set__ for name in Document.__slots__}


def _new_document(
    text: str,
    subjects: tuple[int, ...],
    document_id: str | None,
    metadata: Mapping[str, str] | None,
) -> Document:
    # The readers' output is normalised already. Filling the slots directly skips the frozen
    # dataclass's __init__ and checks, which would double the cost of streaming big corpora.
    document = object.__new__(Document)
    _set_slot["text"](document, text)
    _set_slot["subjects"](document, subjects)
    _set_slot["document_id"](document, document_id)
    _set_slot["metadata"](document, MappingProxyType(metadata) if metadata else _NO_METADATA)
    return document


@dataclass
class CorpusReport:
    """What one pass over a corpus yielded, skipped and could not resolve."""

    documents: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    unknown_subjects: Counter[str] = field(default_factory=Counter)
    documents_without_subjects: int = 0

    def skipped_summary(self) -> str:
        """``skipped 3 (2 empty text, 1 line without a tab)``, or "" when nothing was skipped."""
        total = sum(self.skipped.values())
        if not total:
            return ""
        reasons = ", ".join(f"{n} {reason}" for reason, n in self.skipped.most_common())
        return f"skipped {total} ({reasons})"

    def summary(self) -> str:
        parts = [f"{self.documents} document{'' if self.documents == 1 else 's'} read"]
        if self.skipped:
            parts.append(self.skipped_summary())
        if self.unknown_subjects:
            total = sum(self.unknown_subjects.values())
            examples = ", ".join(
                ref if ref.startswith("<") else f'"{ref}"'  # URIs are <…>, labels are quoted
                for ref, _ in self.unknown_subjects.most_common(3)
            )
            more = ", …" if len(self.unknown_subjects) > 3 else ""
            parts.append(
                f"{total} subject reference{'' if total == 1 else 's'} not in the vocabulary "
                f"({len(self.unknown_subjects)} distinct, e.g. {examples}{more})"
            )
        without = self.documents_without_subjects
        # When no document has subjects and none were unknown, the corpus simply carries none
        # (an indexing corpus); saying so on every run would be noise.
        if without and (without < self.documents or self.unknown_subjects):
            parts.append(f"{without} document{'' if without == 1 else 's'} without known subjects")
        return "; ".join(parts)


class Corpus:
    """Iterable over Documents from one or more corpus paths, read in sequence, streamed.

    With ``subjects=True`` (training and evaluation) every document must come with subjects:
    a TSV line without a tab and a full-text document without a subject file are skipped.
    With ``subjects=False`` (indexing) subjects are read only when a resolver is given.
    ``language`` is the language of subject labels (full-text ``.key`` files, JSON labels).
    """

    report: CorpusReport

    def __init__(
        self,
        paths: str | PathLike[str] | Sequence[str | PathLike[str]],
        resolver: SubjectResolver | None = None,
        *,
        subjects: bool = True,
        language: str | None = None,
    ) -> None:
        self.paths = check_corpus_paths(paths)
        self.resolver = resolver
        self.subjects = subjects
        self.language = language
        self.report = CorpusReport()

    def __repr__(self) -> str:
        return f"Corpus({', '.join(map(str, self.paths))}, subjects={self.subjects})"

    def __iter__(self) -> Iterator[Document]:
        report = self.report = CorpusReport()
        reading = Reading(
            self.resolver, self.language, self.subjects, report.skipped, report.unknown_subjects
        )
        for path in self.paths:
            for text, ids, document_id, metadata in reader_for(path)(path, reading):
                report.documents += 1
                if not ids:
                    report.documents_without_subjects += 1
                subjects = tuple(sorted(set(ids))) if len(ids) > 1 else tuple(ids)
                yield _new_document(text, subjects, document_id, metadata)
        names = ", ".join(map(str, self.paths))
        if not report.documents:
            why = report.skipped_summary() or "it holds no documents"
            raise CorpusError(f"no usable documents in {names}: {why}")
        problems = report.skipped or report.unknown_subjects
        log.log(logging.WARNING if problems else logging.INFO, "%s: %s", names, report.summary())


def check_corpus_paths(
    paths: str | PathLike[str] | Sequence[str | PathLike[str]],
) -> tuple[Path, ...]:
    """The corpus paths, each of which must exist (a CorpusError names the first that does
    not)."""
    found = tuple(Path(p) for p in ([paths] if isinstance(paths, str | PathLike) else paths))
    if not found:
        raise CorpusError("no corpus path given")
    for path in found:
        if not path.exists():
            raise CorpusError(f"{path}: no such file or directory")
    return found
