"""Stream a corpus end to end and report throughput and peak memory as a Markdown table.

    python benchmarks/corpus_stream.py --vocab ../shared/data/yso-fi/vocab.tsv --language fi \\
        ../shared/data/yso-fi/finna-titles.tsv.gz
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import time
from pathlib import Path

from kuoro.corpus.documents import Corpus
from kuoro.errors import KuoroError
from kuoro.vocab.formats import read_vocabulary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", nargs="+", type=Path, help="corpus paths, read in sequence")
    parser.add_argument("--vocab", type=Path, help="vocabulary file to resolve subjects with")
    parser.add_argument("--language", help="vocabulary language (needed for TSV vocabularies)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")

    try:
        vocab = read_vocabulary(args.vocab, args.language) if args.vocab else None
        corpus = Corpus(args.corpus, vocab, subjects=vocab is not None, language=args.language)
        start = time.perf_counter()
        resolved = sum(len(document.subjects) for document in corpus)
        seconds = time.perf_counter() - start
    except KuoroError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    report = corpus.report
    unknown = sum(report.unknown_subjects.values())
    # ru_maxrss is in kilobytes on Linux (bytes on macOS).
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale
    names = ", ".join(path.name for path in args.corpus)
    print(
        "| corpus | documents | subject refs | unknown | wall time (s) | docs/s | peak RSS (MB) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {names} | {report.documents:,} | {resolved + unknown:,} | {unknown:,} "
        f"| {seconds:.2f} | {report.documents / seconds:,.0f} | {peak_mb:.0f} |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
