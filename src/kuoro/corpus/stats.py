"""Statistics of a document corpus read against a vocabulary."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from kuoro.corpus.documents import CorpusReport, check_corpus_paths
from kuoro.corpus.formats import Reading, reader_for
from kuoro.errors import CorpusError
from kuoro.util.progress import DOC_UNIT, count_documents
from kuoro.vocab.vocabulary import Vocabulary


@dataclass(frozen=True)
class CorpusStatistics:
    """What a corpus holds, after reading it the way training and evaluation read it."""

    path: Path
    report: CorpusReport
    subject_assignments: int
    distinct_subjects: int
    mean_characters: float
    mean_words: float
    top_subjects: Sequence[tuple[int, int]]  # (concept id, documents) for the most frequent

    @property
    def documents(self) -> int:
        return self.report.documents

    @property
    def subjects_per_document(self) -> float:
        return self.subject_assignments / self.documents if self.documents else 0.0


def corpus_statistics(
    path: Path,
    vocab: Vocabulary,
    *,
    language: str | None = None,
    disable_progress: bool | None = None,
) -> CorpusStatistics:
    """Stream ``path`` once and count its documents, subjects and text lengths.

    It is read as training reads it (the same readers, the same skipped lines, each warned
    about with its place), but what the reading adds up to is left to the table of
    ``format_statistics``, not logged as well.
    """
    (path,) = check_corpus_paths(path)
    report = CorpusReport()
    reading = Reading(vocab, language, True, report.skipped, report.unknown_subjects)
    counts = np.zeros(len(vocab), dtype=np.int64)
    characters = words = 0
    records = reader_for(path)(path, reading)
    total = count_documents([path])
    bar = tqdm(
        records, desc=path.name, unit=DOC_UNIT, total=total, disable=disable_progress, leave=False
    )
    with bar:
        for text, ids, _, _ in bar:
            report.documents += 1
            if not ids:
                report.documents_without_subjects += 1
            counts[list(set(ids))] += 1
            characters += len(text)
            words += len(text.split())
        bar.total = bar.n  # blank and skipped lines were counted in the estimate
    n = report.documents
    if not n:
        why = report.skipped_summary() or "it holds no documents"
        raise CorpusError(f"no usable documents in {path}: {why}")
    top = np.argsort(-counts, kind="stable")[:5]
    return CorpusStatistics(
        path=path,
        report=report,
        subject_assignments=int(counts.sum()),
        distinct_subjects=int(np.count_nonzero(counts)),
        mean_characters=characters / n,
        mean_words=words / n,
        top_subjects=[(int(i), int(counts[i])) for i in top if counts[i]],
    )


def format_statistics(stats: Sequence[CorpusStatistics], vocab: Vocabulary) -> str:
    """A Markdown table of the corpora, then each corpus's reading notes and top subjects."""
    header = (
        "| corpus | documents | skipped | subjects/doc | distinct subjects | vocabulary coverage "
        "| unknown subject refs | words/doc | chars/doc |"
    )
    lines = [header, "|" + "---|" * 9]
    for s in stats:
        r = s.report
        coverage = s.distinct_subjects / max(vocab.active_count, 1)
        lines.append(
            f"| {s.path.name} | {s.documents:,} | {sum(r.skipped.values()):,} "
            f"| {s.subjects_per_document:.2f} | {s.distinct_subjects:,} | {coverage:.1%} "
            f"| {sum(r.unknown_subjects.values()):,} | {s.mean_words:.1f} "
            f"| {s.mean_characters:.0f} |"
        )
    lines.append("")
    # What the table counts is said here once, with what it cannot hold (why lines were
    # skipped, which references are unknown); the reading logged only each skipped line's place.
    for s in stats:
        notes = []
        if s.report.skipped:
            notes.append(s.report.skipped_summary())
        if s.report.unknown_subjects:
            examples = ", ".join(
                ref if ref.startswith("<") else f'"{ref}"'
                for ref, _ in s.report.unknown_subjects.most_common(3)
            )
            more = ", …" if len(s.report.unknown_subjects) > 3 else ""
            notes.append(f"unknown subjects: {examples}{more}")
        top = ", ".join(f"{vocab.label(i) or vocab.uri(i)} ({n})" for i, n in s.top_subjects)
        notes.append(f"most frequent subjects: {top or 'none'}")
        lines.append(f"{s.path.name}: {'; '.join(notes)}")
    return "\n".join(lines)
