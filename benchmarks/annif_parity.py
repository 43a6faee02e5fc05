"""Kuoro's sources against Annif's, side by side on the same documents and metrics.

Usage:
    python benchmarks/annif_parity.py [--datasets protocol archaeology] [--train-lines 100000]
        [--work bench-work/parity] [--retrain]
        [--repeats 3]

Annif 1.4.3 is installed from the package index into its own virtual environment (as the
tests' Annif server is: ``.cache/annif-venv``). For each data set both tools train their four
sources with their defaults on the same training documents: Annif's ``tfidf``, ``omikuji``,
``fasttext`` and ``mllm``; Kuoro's ``tfidf``, ``omikuji``, ``fasttext`` and ``lexical``. The
analyzer is ``snowball(finnish)`` on both sides (Annif's Finnish default, ``voikko``, needs a
system library); Kuoro's lexical source uses ``simplemma(fi)``, the lemmatiser Kuoro offers in
Voikko's place. Both sides index the same test documents (``annif index`` and ``kuoro
index``, one process each, the model load included), and Kuoro's ``evaluate`` scores both
with Annif's metric definitions (limit 10). Training time and peak RSS are each ``train``
command's own (``wait4``).

Data sets:
- ``protocol``: the shared protocol's sources: trained on the first ``--train-lines`` finna.fi
  titles (the protocol uses all 1,055,704; Annif's MLLM and Omikuji take hours on that many on
  two cores), tested on kirjastonhoitaja/test.tsv (312 documents); YSO as TSV.
- ``archaeology``: the SKOS vocabulary with alternative labels; its 6,404 short texts, the
  first 1,000 for testing and the rest for training.

Prints one Markdown table per data set: per source pair nDCG@10, F1@5, training seconds, peak
RSS and documents indexed per second, and the mean of the four on each side. Omikuji's
training draws random numbers that neither tool seeds (its clustering): two trainings of
Kuoro's omikuji with the same settings on the protocol's titles scored 0.1548 and 0.1300
nDCG@10. Omikuji and fastText (whose training on several threads is not reproducible in
general) are trained ``--repeats`` times on each side (default 3) and shown as mean ± standard
deviation; tfidf, mllm and lexical are deterministic and trained once.
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from kuoro.corpus.documents import Corpus, Document
from kuoro.evaluation.evaluate import evaluate
from kuoro.vocab.formats import read_vocabulary
from kuoro.vocab.vocabulary import Vocabulary
from sources import run  # a command's wall time, peak RSS and output

from support.annif_server import ANNIF_VERSION, ensure_annif  # the tests' Annif installer

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
KUORO = [sys.executable, "-m", "kuoro.cli"]
PAIRS = (("tfidf", "tfidf"), ("omikuji", "omikuji"), ("fasttext", "fasttext"), ("mllm", "lexical"))
ANALYZER = "snowball(finnish)"
KUORO_ANALYZERS = {"lexical": "simplemma(fi)"}


@dataclass(frozen=True)
class DataSet:
    name: str
    vocab: Path
    train: Path
    test: list[Document]
    vocabulary: Vocabulary


# Sources whose training is not reproducible (Omikuji's unseeded clustering, fastText on several
# threads): their figures are the mean and spread of --repeats trainings.
RANDOM = {"omikuji", "fasttext"}


@dataclass
class Result:
    """A source's figures; one entry per training (several for a source in RANDOM)."""

    ndcg10: list[float]
    f1at5: list[float]
    train_seconds: list[float]
    peak_rss_mb: list[float]
    docs_per_second: list[float]

    def add(self, ndcg: float, f1: float, train_s: float, rss: float, docs_s: float) -> None:
        for values, value in zip(
            (self.ndcg10, self.f1at5, self.train_seconds, self.peak_rss_mb, self.docs_per_second),
            (ndcg, f1, train_s, rss, docs_s),
            strict=True,
        ):
            values.append(value)


def new_result() -> Result:
    return Result([], [], [], [], [])


def spread(values: list[float], digits: int) -> str:
    """The value, or the mean ± sample standard deviation of several."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def data_sets(names: list[str], train_lines: int, work: Path) -> list[DataSet]:
    found = []
    for name in names:
        folder = work / name
        folder.mkdir(parents=True, exist_ok=True)
        if name == "protocol":
            vocab_file = SHARED / "yso-fi" / "vocab.tsv"
            train = folder / f"finna-{train_lines}.tsv"
            if not train.exists():
                with gzip.open(SHARED / "yso-fi" / "finna-titles.tsv.gz", "rt") as titles:
                    lines = [line for _, line in zip(range(train_lines), titles, strict=False)]
                train.write_text("".join(lines), encoding="utf-8")
            vocabulary = read_vocabulary(vocab_file, "fi", name="yso")
            test = list(Corpus(SHARED / "kirjastonhoitaja" / "test.tsv", vocabulary))
        else:
            vocab_file = SHARED / "archaeology" / "yso-archaeology.ttl"
            lines = (SHARED / "archaeology" / "documents.tsv").read_text("utf-8").splitlines(True)
            train, test_file = folder / "train.tsv", folder / "test.tsv"
            train.write_text("".join(lines[1000:]), encoding="utf-8")
            test_file.write_text("".join(lines[:1000]), encoding="utf-8")
            vocabulary = read_vocabulary(vocab_file, "fi", name="yso")
            test = list(Corpus(test_file, vocabulary))
        found.append(DataSet(name, vocab_file, train, test, vocabulary))
    return found


def write_test_dir(data: DataSet, folder: Path) -> Path:
    """The test documents as a full-text directory (ID.txt), what both ``index`` commands read."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for i, document in enumerate(data.test):
        (folder / f"d{i:05d}.txt").write_text(document.text, encoding="utf-8")
    return folder


def scored(data: DataSet, folder: Path, suffix: str) -> tuple[float, float]:
    """nDCG@10 and F1@5 of the suggestion files ``index`` wrote beside the test documents."""
    vocab = data.vocabulary
    rows = sp.lil_matrix((len(data.test), len(vocab)), dtype=np.float32)
    for i in range(len(data.test)):
        path = folder / f"d{i:05d}{suffix}"
        for line in path.read_text(encoding="utf-8").splitlines():
            fields = line.split("\t")
            concept = vocab.id_of(fields[0])
            if concept is not None:
                rows[i, concept] = float(fields[-1])
    result = evaluate([(data.test, rows.tocsr())], limit=10, n_concepts=len(vocab))
    return result["NDCG@10"], result["F1@5"]


def annif_with_backends() -> Path:
    """The ``annif`` command, with the optional libraries its omikuji and fasttext need."""
    annif = ensure_annif()
    python = annif.with_name("python")
    probe = subprocess.run([str(python), "-c", "import omikuji, fasttext"], check=False)
    if probe.returncode != 0:
        extras = f"annif[omikuji,fasttext]=={ANNIF_VERSION}"
        subprocess.run([str(python), "-m", "pip", "install", "-q", extras], check=True)
    return annif


def annif_side(data: DataSet, work: Path, retrain: bool, repeats: int) -> dict[str, Result]:
    annif = annif_with_backends()
    home = work / data.name / "annif"
    home.mkdir(parents=True, exist_ok=True)
    punkt = home / "nltk_data" / "tokenizers" / "punkt_tab" / "english"
    punkt.mkdir(parents=True, exist_ok=True)
    for name in ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab"):
        (punkt / name).touch()
    env = {
        **os.environ,
        "ANNIF_PROJECTS": str(home / "projects.cfg"),
        "ANNIF_DATADIR": str(home / "data"),
        "NLTK_DATA": str(home / "nltk_data"),
    }
    (home / "projects.cfg").write_text(
        "".join(
            f"[{backend}]\nname={backend}\nlanguage=fi\nbackend={backend}\nvocab=yso\n"
            f"analyzer={ANALYZER}\nlimit=100\n\n"
            for backend, _ in PAIRS
        ),
        encoding="utf-8",
    )
    run([str(annif), "load-vocab", "--language", "fi", "yso", str(data.vocab)], env)
    results = {}
    for backend, _ in PAIRS:
        results[backend] = result = new_result()
        for repeat in range(repeats if backend in RANDOM else 1):
            model = home / "data" / "projects" / backend
            train_s = rss = float("nan")
            if retrain or repeat or not model.is_dir() or not any(model.iterdir()):
                train_s, rss, _ = run([str(annif), "train", backend, str(data.train)], env)
                print(f"{data.name}: annif {backend} trained in {train_s:.0f} s", file=sys.stderr)
            folder = write_test_dir(data, work / data.name / f"test-annif-{backend}")
            index_s, _, _ = run([str(annif), "index", "--limit", "10", backend, str(folder)], env)
            result.add(*scored(data, folder, ".annif"), train_s, rss, len(data.test) / index_s)
    return results


def kuoro_side(data: DataSet, work: Path, retrain: bool, repeats: int) -> dict[str, Result]:
    home = work / data.name / "kuoro"
    home.mkdir(parents=True, exist_ok=True)
    projects = home / "projects.toml"
    projects.write_text(
        "".join(
            f'[{backend}]\nlanguage = "fi"\nvocab = "yso"\nbackend = "{backend}"\n'
            f'analyzer = "{KUORO_ANALYZERS.get(backend, ANALYZER)}"\n\n'
            for _, backend in PAIRS
        ),
        encoding="utf-8",
    )
    env = {**os.environ, "KUORO_DATADIR": str(home / "data"), "KUORO_PROJECTS": str(projects)}
    run([*KUORO, "-q", "load-vocab", "yso", str(data.vocab), "--language", "fi"], env)
    results = {}
    for _, backend in PAIRS:
        results[backend] = result = new_result()
        for repeat in range(repeats if backend in RANDOM else 1):
            model = home / "data" / "projects" / backend / "CURRENT"
            train_s = rss = float("nan")
            if retrain or repeat or not model.is_file():
                train_s, rss, _ = run([*KUORO, "-q", "train", backend, str(data.train)], env)
                print(f"{data.name}: kuoro {backend} trained in {train_s:.0f} s", file=sys.stderr)
            folder = write_test_dir(data, work / data.name / f"test-kuoro-{backend}")
            index = [*KUORO, "-q", "index", "--limit", "10", backend, str(folder)]
            index_s, _, _ = run(index, env)
            result.add(*scored(data, folder, ".annif"), train_s, rss, len(data.test) / index_s)
    return results


def table(
    data: DataSet, annif: dict[str, Result], kuoro: dict[str, Result], lines: int, repeats: int
) -> str:
    train = f"first {lines:,} finna.fi titles" if data.name == "protocol" else "5,404 texts"
    out = [
        f"### {data.name}: trained on {train}, tested on {len(data.test)} documents\n",
        f"omikuji and fasttext: mean ± std of {repeats} trainings each (their training is not "
        "reproducible in general); the others train once (deterministic). Time, RSS, docs/s: "
        "means.\n",
        "| Annif | Kuoro | nDCG@10 Annif | nDCG@10 Kuoro | F1@5 Annif | F1@5 Kuoro "
        "| train s Annif | train s Kuoro | peak RSS MB Annif | peak RSS MB Kuoro "
        "| index docs/s Annif | index docs/s Kuoro |",
        "|---|---|" + "---:|" * 10,
    ]
    for a, k in PAIRS:
        ra, rk = annif[a], kuoro[k]
        mean = statistics.mean
        out.append(
            f"| {a} | {k} | {spread(ra.ndcg10, 4)} | {spread(rk.ndcg10, 4)} "
            f"| {spread(ra.f1at5, 4)} | {spread(rk.f1at5, 4)} "
            f"| {mean(ra.train_seconds):.0f} | {mean(rk.train_seconds):.0f} "
            f"| {mean(ra.peak_rss_mb):.0f} | {mean(rk.peak_rss_mb):.0f} "
            f"| {mean(ra.docs_per_second):.1f} | {mean(rk.docs_per_second):.1f} |"
        )
    mean_a = [
        statistics.mean(statistics.mean(getattr(annif[a], m)) for a, _ in PAIRS)
        for m in ("ndcg10", "f1at5")
    ]
    mean_k = [
        statistics.mean(statistics.mean(getattr(kuoro[k], m)) for _, k in PAIRS)
        for m in ("ndcg10", "f1at5")
    ]
    out.append(
        f"| **mean of the four** | | {mean_a[0]:.4f} | {mean_k[0]:.4f} | {mean_a[1]:.4f} "
        f"| {mean_k[1]:.4f} | | | | | | |"
    )
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["protocol", "archaeology"])
    parser.add_argument("--train-lines", type=int, default=100_000)
    parser.add_argument("--work", type=Path, default=Path("bench-work/parity"))
    parser.add_argument("--retrain", action="store_true")
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="trainings of each randomised source (omikuji, fasttext) on each side",
    )
    args = parser.parse_args()
    work = args.work.resolve()
    for data in data_sets(args.datasets, args.train_lines, work):
        annif = annif_side(data, work, args.retrain, args.repeats)
        kuoro = kuoro_side(data, work, args.retrain, args.repeats)
        print(table(data, annif, kuoro, args.train_lines, args.repeats), flush=True)


if __name__ == "__main__":
    main()
