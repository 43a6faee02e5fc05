"""The cost of a fusion training epoch on a real suggestion store, before and after.

Usage:
    python benchmarks/fusion_epoch.py --train STORE --validate STORE
        [--cooccurrence TABLE.npz] [--epochs 4] [--threads 2] [--seed 0]

Trains Kuoro's default ``kuoro`` model for ``--epochs`` epochs (early stopping off) in each
configuration below, one after another in this process, and prints a Markdown table: the
first epoch (which builds the cached candidates), the later epochs' mean, both per training
document (the held-out scoring after each epoch included), and the time to the end of
training. Rows:

* ``streamed, dropout 0.1``: the batches' candidates built from the store in every epoch,
  as every Kuoro before the cache did, with the dropout default of then;
* ``streamed + co-occurrence``: the same, with the co-occurrence columns computed per batch;
* ``cached + co-occurrence, dropout 0.1`` and ``… dropout 0``: candidates built once and kept.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import kuoro.fusion.batches as batches
from kuoro.config.params import fusion_params
from kuoro.fusion.cooccurrence import SubjectCooccurrence
from kuoro.fusion.fit import fit_fusion
from kuoro.store.suggestion_store import SuggestionStore
from kuoro.training.callbacks import Callback


class EpochClock(Callback):
    """The wall time of every epoch."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def on_epoch_start(self, trainer: Any, state: Any) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, trainer: Any, state: Any) -> None:
        self.times.append(time.perf_counter() - self._start)


def one_run(
    train: SuggestionStore,
    validate: SuggestionStore,
    table: SubjectCooccurrence | None,
    *,
    cached: bool,
    dropout: float,
    epochs: int,
    seed: int,
) -> dict[str, float]:
    params = fusion_params(
        "kuoro",
        {"seed": seed, "max_epochs": epochs, "early_stopping": False, "dropout": dropout},
    )
    clock = EpochClock()
    saved = batches.CACHE_BYTES
    batches.CACHE_BYTES = saved if cached else 0
    try:
        started = time.perf_counter()
        _, info = fit_fusion(
            train,
            params,
            [1.0] * len(train.source_names),
            validation_store=validate,
            callbacks=[clock],
            cooccurrence=table,
        )
        total = time.perf_counter() - started
    finally:
        batches.CACHE_BYTES = saved
    n = len(train)
    return {
        "first_ms": 1e3 * clock.times[0] / n,
        "later_ms": 1e3 * float(np.mean(clock.times[1:])) / n if len(clock.times) > 1 else 0,
        "total_s": total,
        "ndcg": info.metrics.get("ndcg@10", float("nan")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--validate", type=Path, required=True)
    parser.add_argument("--cooccurrence", type=Path)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    train, validate = SuggestionStore.open(args.train), SuggestionStore.open(args.validate)
    table = SubjectCooccurrence.load(args.cooccurrence) if args.cooccurrence else None
    runs = [
        ("streamed, dropout 0.1 (before)", None, False, 0.1),
        ("streamed + co-occurrence, dropout 0.1", table, False, 0.1),
        ("cached + co-occurrence, dropout 0.1", table, True, 0.1),
        ("cached + co-occurrence, dropout 0", table, True, 0.0),
    ]
    rows = []
    for label, t, cached, dropout in runs:
        if t is None and label.startswith(("streamed +", "cached")) and table is None:
            continue
        print(f"{label} …", file=sys.stderr)
        rows.append(
            (
                label,
                one_run(
                    train,
                    validate,
                    t,
                    cached=cached,
                    dropout=dropout,
                    epochs=args.epochs,
                    seed=args.seed,
                ),
            )
        )
    base = rows[0][1]["later_ms"]
    print(
        "| configuration | first epoch ms/doc | later epochs ms/doc | × before | "
        f"{args.epochs} epochs s | held-out nDCG@10 |\n|---|---:|---:|---:|---:|---:|"
    )
    for label, r in rows:
        print(
            f"| {label} | {r['first_ms']:.2f} | {r['later_ms']:.2f} | "
            f"{r['later_ms'] / base:.2f} | {r['total_s']:.1f} | {r['ndcg']:.4f} |"
        )
    print(
        f"\nStore {args.train} ({len(train):,} training documents), held out {args.validate} "
        f"({len(validate):,}); torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"seed {args.seed}; load average before {load_before:.2f}, after "
        f"{os.getloadavg()[0]:.2f}."
    )


if __name__ == "__main__":
    main()
