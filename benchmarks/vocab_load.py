"""Vocabulary storage: load time, peak RSS and bytes on disk, real YSO and synthetic sizes.

Usage: python benchmarks/vocab_load.py [--sizes 36000 456000 500000]

The baseline in each row is parsing the TSV file the stored form was made from, timed in the
same run: the stored form exists so that no run ever parses the source file again.
"""

from __future__ import annotations

import argparse
import random
import resource
import tempfile
import time
from pathlib import Path

from kuoro.vocab.formats import read_vocabulary
from kuoro.vocab.vocabulary import Vocabulary

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def synthetic_tsv(path: Path, size: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    syllables = ["ka", "lo", "mi", "ne", "su", "tä", "vö", "ri", "ja", "ho"]
    with path.open("w", encoding="utf-8") as out:
        for i in range(size):
            label = " ".join(
                "".join(rng.choices(syllables, k=rng.randint(2, 5)))
                for _ in range(rng.randint(1, 3))
            )
            out.write(f"<http://example.org/concept/{i:07d}>\t{label} {i}\n")


def best_of(runs: int, fn: object) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return min(times)


def measure(name: str, tsv: Path, workdir: Path) -> str:
    parse_s = best_of(1, lambda: read_vocabulary(tsv, "fi"))
    vocab = read_vocabulary(tsv, "fi", name=name)
    stored = workdir / f"{name}.npz"
    vocab.save(stored)
    load_s = best_of(3, lambda: Vocabulary.load(stored))
    lookup = Vocabulary.load(stored)
    assert lookup.id_of(vocab.uri(len(vocab) - 1)) == len(vocab) - 1
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return (
        f"| {name} | {len(vocab):,} | {tsv.stat().st_size / 1e6:.1f} | "
        f"{stored.stat().st_size / 1e6:.1f} | {parse_s:.2f} | {load_s:.3f} | "
        f"{load_s / parse_s:.2f} | {rss:.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[36_000, 456_000, 500_000])
    args = parser.parse_args()
    print(
        "| vocabulary | concepts | TSV MB | stored MB | parse TSV s (baseline) | load stored s "
        "| load / parse | peak RSS MB (cumulative) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        yso = SHARED_DATA / "yso-fi" / "vocab.tsv"
        if yso.exists():
            print(measure("yso-fi", yso, work), flush=True)
        for size in args.sizes:
            tsv = work / f"synthetic-{size}.tsv"
            synthetic_tsv(tsv, size)
            print(measure(f"synthetic-{size // 1000}k", tsv, work), flush=True)


if __name__ == "__main__":
    main()
