"""Does ``kuoro learn`` help? Train a fusion project, learn from more documents, compare on test.

Usage:
    python benchmarks/learn.py --datadir DIR --projects FILE --project bench-kuoro
        --train kirjastonhoitaja/train.tsv --learn kirjastonhoitaja/validate.tsv
        --test kirjastonhoitaja/test.tsv [--seeds 0 1 2]

For each seed: train the project on ``--train`` (its store is reused after the first seed),
evaluate on ``--test``, ``learn`` from ``--learn``, evaluate again. The project's model is
replaced by each step: point it at a copy of a data directory you can spare. Prints one
Markdown table: test nDCG@10 and F1@5 before and after, the held-out (validation) nDCG@10
before and after, and the epochs learning ran and kept.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

import torch

from kuoro.config.projects import load_projects
from kuoro.corpus.documents import Corpus
from kuoro.evaluation.evaluate import Evaluation, evaluate, suggestion_batches
from kuoro.project.datadir import DataDir
from kuoro.project.project import Project


def test_scores(project: Project, corpus: Path) -> Evaluation:
    documents = Corpus([corpus], project.vocabulary, language=project.config.language)
    return evaluate(suggestion_batches(project, documents), limit=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datadir", type=Path, required=True)
    parser.add_argument("--projects", type=Path, required=True)
    parser.add_argument("--project", required=True)
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--learn", type=Path, required=True)
    parser.add_argument("--test", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    projects = load_projects(args.projects)
    rows = []
    for seed in args.seeds:
        config = projects[args.project]
        config = dataclasses.replace(config, params={**config.params, "seed": seed})
        project = Project(config, DataDir(args.datadir), projects)
        project.train([args.train])
        trained = project.last_fit
        before = test_scores(project, args.test)
        started = time.perf_counter()
        project.learn([args.learn])
        seconds = time.perf_counter() - started
        learnt = project.last_fit
        after = test_scores(project, args.test)
        assert trained is not None and learnt is not None
        rows.append(
            {
                "seed": seed,
                "val_before": trained.metrics["ndcg@10"],
                "val_after": learnt.metrics["ndcg@10"],
                "ndcg_before": before["NDCG@10"],
                "ndcg_after": after["NDCG@10"],
                "f1_before": before["F1@5"],
                "f1_after": after["F1@5"],
                "epochs": f"{learnt.epochs} (kept {learnt.best_epoch})",
                "seconds": seconds,
            }
        )
        print(rows[-1], flush=True)
    print(
        f"\n`{args.project}` trained on {args.train.name}, learning from {args.learn.name}, "
        f"tested on {args.test.name}:\n"
    )
    print(
        "| seed | held-out nDCG@10 before → after | test nDCG@10 before → after "
        "| test F1@5 before → after | learn epochs | learn s |"
    )
    print("|---:|---|---|---|---|---:|")
    for r in rows:
        print(
            f"| {r['seed']} | {r['val_before']:.4f} → {r['val_after']:.4f} "
            f"| {r['ndcg_before']:.4f} → {r['ndcg_after']:.4f} "
            f"| {r['f1_before']:.4f} → {r['f1_after']:.4f} | {r['epochs']} | {r['seconds']:.0f} |"
        )
    gains = [r["ndcg_after"] - r["ndcg_before"] for r in rows]
    spread = statistics.stdev(gains) if len(gains) > 1 else 0.0
    print(f"\nTest nDCG@10 change: {statistics.mean(gains):+.4f} ± {spread:.4f} over the seeds.")


if __name__ == "__main__":
    main()
