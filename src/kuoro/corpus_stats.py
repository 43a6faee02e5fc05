"""Statistics of a document corpus read against a vocabulary."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from kuoro.corpus import Corpus, CorpusReport
from kuoro.vocab import Vocabulary


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
    """Stream ``path`` once and count its documents, subjects and text lengths."""
    corpus = Corpus(path, vocab, language=language)
    counts = np.zeros(len(vocab), dtype=np.int64)
    characters = words = 0
    for doc in tqdm(corpus, desc=path.name, unit=" docs", disable=disable_progress, leave=False):
        counts[list(doc.subjects)] += 1
        characters += len(doc.text)
        words += len(doc.text.split())
    n = corpus.report.documents
    top = np.argsort(-counts, kind="stable")[:5]
    return CorpusStatistics(
        path=path,
        report=corpus.report,
        subject_assignments=int(counts.sum()),
        distinct_subjects=int(np.count_nonzero(counts)),
        mean_characters=characters / n if n else 0.0,
        mean_words=words / n if n else 0.0,
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
    # Skips and unknown subjects were already reported as warnings while reading.
    for s in stats:
        top = ", ".join(f"{vocab.label(i) or vocab.uri(i)} ({n})" for i, n in s.top_subjects)
        lines.append(f"{s.path.name}: most frequent subjects: {top or 'none'}")
    return "\n".join(lines)
