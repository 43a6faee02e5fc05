"""Serving speed: a fusion model's numpy export against the torch model it came from.

Usage: python benchmarks/numpy_inference.py [--members 1 5] [--docs-per-call 1 16 256]
       [--documents 256] [--vocab-size 36000] [--hidden-size 64] [--repeats 5] [--threads 1]

A ``KuoroFusion`` (4 sources, random parameters in place of training) scores the candidates of
synthetic documents (``benchmarks/synthetic.py``), ``docs-per-call`` documents per call, once
with torch (``to_batch`` + ``predict_scores`` under ``no_grad``, as the torch predictor does)
and once with ``NumpyFusion.predict_scores``. Building the candidates is the same for both and
is not timed. Prints a Markdown table: the median over repeats of the time per document, the
ratio numpy / torch, and the largest score difference between the two. Both run on
``--threads`` threads (torch's pool and numpy's BLAS): a server scales by worker processes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import nn

from kuoro.fusion.candidates import Candidates, ConceptPrior, build_candidates, feature_names
from kuoro.fusion.export import export_arrays
from kuoro.fusion.members import MemberEnsemble
from kuoro.fusion.models import KuoroFusion
from kuoro.fusion.numpy_model import NumpyFusion
from kuoro.fusion.tensors import to_batch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import synthetic

N_SOURCES = 4


def make_calls(vocab_size: int, n_documents: int, docs_per_call: int) -> list[Candidates]:
    """The candidates of each call: ``docs_per_call`` synthetic documents at a time."""
    gold, sources = next(
        synthetic.generate(vocab_size, n_documents, chunk_size=n_documents, seed=0)
    )
    prior = ConceptPrior.from_counts(np.bincount(np.concatenate(gold), minlength=vocab_size))
    return [
        build_candidates([s[start : start + docs_per_call] for s in sources], None, prior)
        for start in range(0, n_documents, docs_per_call)
    ]


def make_model(vocab_size: int, hidden_size: int, members: int) -> nn.Module:
    """A kuoro model whose zero-initialised layers hold random values, as after training."""

    def one(seed: int) -> nn.Module:
        return KuoroFusion(
            vocab_size, N_SOURCES, len(feature_names(N_SOURCES)), hidden_size=hidden_size
        )

    model = one(0) if members == 1 else MemberEnsemble(one, members)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.3)
    return model.eval()


def seconds(predict: Callable[[Candidates], np.ndarray], calls: list[Candidates]) -> float:
    """One pass over all calls."""
    start = time.perf_counter()
    for c in calls:
        predict(c)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--docs-per-call", type=int, nargs="+", default=[1, 16, 256])
    parser.add_argument("--documents", type=int, default=256)
    parser.add_argument("--vocab-size", type=int, default=36_000)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    calls_by_size = {d: make_calls(args.vocab_size, args.documents, d) for d in args.docs_per_call}
    n_candidates = sum(len(c.concepts) for c in calls_by_size[args.docs_per_call[0]])
    print(
        f"KuoroFusion, {N_SOURCES} sources, hidden {args.hidden_size}, V = {args.vocab_size:,}, "
        f"{args.documents} documents ({n_candidates / args.documents:.0f} candidates each), "
        f"{args.threads} thread(s), median of {args.repeats} passes\n"
    )
    print("| members | docs/call | torch µs/doc | numpy µs/doc | numpy/torch | max abs diff |")
    print("|--------:|----------:|-------------:|-------------:|------------:|-------------:|")
    for members in args.members:
        model = make_model(args.vocab_size, args.hidden_size, members)
        numpy_model = NumpyFusion.from_arrays(export_arrays(model))

        def by_torch(c: Candidates, model: nn.Module = model) -> np.ndarray:
            with torch.no_grad():
                scores: torch.Tensor = model.predict_scores(to_batch(c))  # type: ignore[operator]
            return scores.numpy()

        for docs, calls in calls_by_size.items():
            difference = max(
                float(np.abs(numpy_model.predict_scores(c) - by_torch(c)).max(initial=0.0))
                for c in calls
            )
            with threadpool_limits(args.threads):
                # Interleaved, so that a busy machine slows both alike.
                times = [
                    (seconds(by_torch, calls), seconds(numpy_model.predict_scores, calls))
                    for _ in range(args.repeats)
                ]
            torch_s = statistics.median(t for t, _ in times) / args.documents
            numpy_s = statistics.median(n for _, n in times) / args.documents
            print(
                f"| {members} | {docs} | {torch_s * 1e6:,.0f} | {numpy_s * 1e6:,.0f} "
                f"| {numpy_s / torch_s:.2f} | {difference:.1e} |"
            )


if __name__ == "__main__":
    main()
