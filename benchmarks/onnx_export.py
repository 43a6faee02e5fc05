"""The ONNX export against the numpy model: file size, time to score, largest difference.

Usage: python benchmarks/onnx_export.py [--vocab-size 35999] [--documents 1000]
           [--members 1 5] [--hidden-size 64] [--repeat 3]

Builds ``kuoro`` fusion models (4 sources, ``concept_sources``) with random, trained-looking
parameters, the candidates of ``--documents`` synthetic documents (``synthetic.py``, top 100
per source), exports each model to ONNX (``kuoro.fusion.onnx_export``) and scores the
candidates with onnxruntime (one thread) and with the numpy model; each time is the median
of ``--repeat`` runs. Prints a Markdown table and the machine's load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import onnxruntime as ort
import torch

import synthetic
from kuoro.fusion.candidates import ConceptPrior, build_candidates, feature_names
from kuoro.fusion.export import export_arrays
from kuoro.fusion.members import MemberEnsemble
from kuoro.fusion.models import KuoroFusion
from kuoro.fusion.numpy_model import NumpyFusion
from kuoro.fusion.onnx_export import onnx_model

N_SOURCES = 4


def median_seconds(run: Callable[[], object], repeat: int) -> float:
    run()  # warm
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def random_model(vocab_size: int, hidden_size: int, members: int) -> NumpyFusion:
    def make(seed: int) -> KuoroFusion:
        n_features = len(feature_names(N_SOURCES))
        return KuoroFusion(vocab_size, N_SOURCES, n_features, hidden_size=hidden_size)

    model = make(0) if members == 1 else MemberEnsemble(make, members)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.2)
    return NumpyFusion.from_arrays(export_arrays(model.eval()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab-size", type=int, default=35999)
    parser.add_argument("--documents", type=int, default=1000)
    parser.add_argument("--members", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    load = os.getloadavg()[0]
    gold, sources = next(
        synthetic.generate(args.vocab_size, args.documents, chunk_size=args.documents, seed=1)
    )
    prior = ConceptPrior.from_counts(np.bincount(np.concatenate(gold), minlength=args.vocab_size))
    candidates = build_candidates(sources, None, prior, top_k=100)
    feed = {"features": candidates.features, "concepts": candidates.concepts.astype(np.int64)}
    print(
        f"{len(candidates.concepts):,} candidates of {args.documents:,} synthetic documents, "
        f"{args.vocab_size:,} concepts, {N_SOURCES} sources, hidden size {args.hidden_size}\n"
    )
    print("| members | ONNX file | onnxruntime (1 thread) | numpy | max abs difference |")
    print("|---:|---:|---:|---:|---:|")
    for members in args.members:
        model = random_model(args.vocab_size, args.hidden_size, members)
        proto = onnx_model(model, prior=prior.feature(np.arange(args.vocab_size)))
        data = proto.SerializeToString()
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        scores = session.run(["scores"], feed)[0]
        difference = float(np.abs(scores - model.predict_scores(candidates)).max())
        t_onnx = median_seconds(lambda s=session: s.run(["scores"], feed), args.repeat)
        t_numpy = median_seconds(lambda m=model: m.predict_scores(candidates), args.repeat)
        print(
            f"| {members} | {len(data) / 1e6:.2f} MB | {t_onnx * 1000:.0f} ms | "
            f"{t_numpy * 1000:.0f} ms | {difference:.2g} |"
        )
    print(f"\nload average (1 min): {load:.2f} at the start, {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
