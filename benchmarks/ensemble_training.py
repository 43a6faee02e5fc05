"""Kuoro's whole ensemble training against Annif's ``nn_ensemble``, side by side in one run.

Usage:
    python benchmarks/ensemble_training.py [--work bench-work/parity] [--train-lines 100000]

Each tool trains its ensemble over its own four sources as ``benchmarks/annif_parity.py``
trained them on the shared protocol (the first ``--train-lines`` finna.fi titles; run that
benchmark first): Annif 1.4.3's Keras ``nn_ensemble`` over tfidf, omikuji, fasttext and mllm
(its defaults: 100 nodes, dropout 0.2, 10 epochs), Kuoro's ``kuoro`` fusion over tfidf,
omikuji, fasttext and lexical (its defaults; validate.tsv for early stopping; the subject
co-occurrence of the sources' training titles, counted in the timed run). The ensemble
training corpus is kirjastonhoitaja/train.tsv (2,625 documents). The timed command is each
tool's ``train`` from scratch: running the sources over the documents (Annif's LMDB, Kuoro's
suggestion store, both deleted first), then fitting. Both then index the test documents
(kirjastonhoitaja/test.tsv) and Kuoro's ``evaluate`` scores both with Annif's metric
definitions. Run it on a quiet machine: it prints the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from annif_parity import (  # the same data sets, test directories and scoring
    KUORO,
    SHARED,
    annif_with_backends,
    data_sets,
    scored,
    write_test_dir,
)
from sources import run  # a command's wall time, peak RSS and output

ANNIF_SOURCES = ("tfidf", "omikuji", "fasttext", "mllm")
KUORO_SOURCES = ("tfidf", "omikuji", "fasttext", "lexical")


def annif_ensemble(home: Path, train: Path, test_dir: Path, data: object) -> dict[str, float]:
    annif = annif_with_backends()
    projects = home / "projects-nn.cfg"
    projects.write_text(
        (home / "projects.cfg").read_text(encoding="utf-8")
        + "\n[nn]\nname=nn\nlanguage=fi\nbackend=nn_ensemble\nvocab=yso\nlimit=100\n"
        f"sources={','.join(ANNIF_SOURCES)}\n",
        encoding="utf-8",
    )
    env = {
        **os.environ,
        "ANNIF_PROJECTS": str(projects),
        "ANNIF_DATADIR": str(home / "data"),
        "NLTK_DATA": str(home / "nltk_data"),
    }
    shutil.rmtree(home / "data" / "projects" / "nn", ignore_errors=True)
    seconds, rss, _ = run([str(annif), "train", "nn", str(train)], env)
    print(f"annif nn_ensemble trained in {seconds:.0f} s", file=sys.stderr)
    run([str(annif), "index", "--limit", "10", "nn", str(test_dir)], env)
    ndcg, f1 = scored(data, test_dir, ".annif")  # type: ignore[arg-type]
    return {"seconds": seconds, "rss": rss, "ndcg": ndcg, "f1": f1}


def kuoro_ensemble(
    home: Path, train: Path, titles: Path, test_dir: Path, data: object
) -> dict[str, float]:
    validate = SHARED / "kirjastonhoitaja" / "validate.tsv"
    projects = home / "projects-ensemble.toml"
    projects.write_text(
        (home / "projects.toml").read_text(encoding="utf-8")
        + '\n[ensemble]\nlanguage = "fi"\nvocab = "yso"\nbackend = "kuoro"\n'
        f'sources = "{",".join(KUORO_SOURCES)}"\nvalidation = "{validate.resolve()}"\n'
        f'cooccurrence = "{titles.resolve()}"\n',
        encoding="utf-8",
    )
    env = {
        **os.environ,
        "KUORO_DATADIR": str(home / "data"),
        "KUORO_PROJECTS": str(projects),
        "OMP_NUM_THREADS": "2",
    }
    shutil.rmtree(home / "data" / "projects" / "ensemble", ignore_errors=True)
    shutil.rmtree(home / "data" / "stores", ignore_errors=True)  # the store and the table
    seconds, rss, _ = run([*KUORO, "-q", "train", "ensemble", str(train)], env)
    print(f"kuoro ensemble trained in {seconds:.0f} s", file=sys.stderr)
    run([*KUORO, "-q", "index", "--limit", "10", "ensemble", str(test_dir)], env)
    ndcg, f1 = scored(data, test_dir, ".annif")  # type: ignore[arg-type]
    return {"seconds": seconds, "rss": rss, "ndcg": ndcg, "f1": f1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("bench-work/parity"))
    parser.add_argument("--train-lines", type=int, default=100_000)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}", file=sys.stderr)
    data = data_sets(["protocol"], args.train_lines, args.work)[0]
    train = SHARED / "kirjastonhoitaja" / "train.tsv"
    folder = args.work / "protocol"
    for side in ("annif", "kuoro"):
        if not (folder / side / "data" / "projects").is_dir():
            raise SystemExit(
                f"no {side} sources in {folder / side}: run benchmarks/annif_parity.py first"
            )
    annif = annif_ensemble(folder / "annif", train, write_test_dir(data, folder / "ens-a"), data)
    kuoro = kuoro_ensemble(
        folder / "kuoro", train, data.train, write_test_dir(data, folder / "ens-k"), data
    )
    load_after = os.getloadavg()[0]
    print(
        "| ensemble | training wall s (store + fit) | × Annif | peak RSS MB | nDCG@10 | F1@5 |\n"
        "|---|---:|---:|---:|---:|---:|"
    )
    for name, r in (("Annif 1.4.3 `nn_ensemble`", annif), ("Kuoro `kuoro`", kuoro)):
        print(
            f"| {name} | {r['seconds']:.1f} | {r['seconds'] / annif['seconds']:.2f} | "
            f"{r['rss']:.0f} | {r['ndcg']:.4f} | {r['f1']:.4f} |"
        )
    print(
        f"\nEnsemble training corpus {train} (2,625 documents), sources trained on the first "
        f"{args.train_lines:,} finna.fi titles, test kirjastonhoitaja/test.tsv "
        f"({len(data.test)} documents); load average after: {load_after:.2f}."
    )


if __name__ == "__main__":
    main()
