"""Member ensembles: N members trained by vmap in one pass against N sequential trainings.

Usage: python benchmarks/members.py [--members 8] [--docs-per-batch 4 16 64] [--steps 20]
       [--vocab-size 36000] [--threads 1] [--device cpu]

For each batch size, trains N kuoro models one after the other and then as one
``MemberEnsemble`` (same seeds, same batches, dropout off so both are deterministic), and
prints the time per training step of all N members, the speed ratio, and the largest
difference between the two sets of members' logits afterwards. Synthetic data from
``benchmarks/synthetic.py``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from kuoro.fusion.candidates import build_candidates, feature_names
from kuoro.fusion.losses import mixed_loss, training_objective
from kuoro.fusion.members import MemberEnsemble
from kuoro.fusion.models import KuoroFusion, make_optimizers
from kuoro.fusion.tensors import CandidateBatch, to_batch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import synthetic

OBJECTIVE = training_objective(mixed_loss(0.5))


def make_batches(
    vocab_size: int, docs_per_batch: int, n_batches: int, device: str
) -> list[CandidateBatch]:
    n_docs = docs_per_batch * n_batches
    gold_ids, sources = next(synthetic.generate(vocab_size, n_docs, chunk_size=n_docs, seed=0))
    indptr = np.concatenate([[0], np.cumsum([len(g) for g in gold_ids])])
    ids = np.concatenate(gold_ids)
    gold = sp.csr_matrix((np.ones(len(ids), np.float32), ids, indptr), (n_docs, vocab_size))
    whole = to_batch(build_candidates(sources, gold), np.diff(indptr)).to(device)
    return [whole.documents(i, i + docs_per_batch) for i in range(0, n_docs, docs_per_batch)]


def fit(model: nn.Module, batches: list[CandidateBatch], steps: int, device: str) -> float:
    """Seconds per training step, after one warm-up step."""
    optimizers = make_optimizers(model, lr=3e-3)
    model.train()
    start = 0.0
    for step in range(steps + 1):
        if step == 1:
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
        batch = batches[step % len(batches)]
        loss = OBJECTIVE(model, batch)
        for o in optimizers:
            o.zero_grad()
        loss.backward()
        for o in optimizers:
            o.step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--docs-per-batch", type=int, nargs="+", default=[4, 16, 64])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--vocab-size", type=int, default=36_000)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n_features = len(feature_names(4))

    def factory(seed: int) -> nn.Module:
        return KuoroFusion(
            args.vocab_size, 4, n_features, hidden_size=args.hidden_size, dropout=0.0
        ).to(args.device)

    print(
        f"{args.members} kuoro members (hidden {args.hidden_size}), V = {args.vocab_size:,}, "
        f"{args.steps} steps, device {args.device}, {args.threads} thread(s)"
    )
    print(
        f"{'docs/batch':>10} {'candidates':>10} {'sequential':>12} {'vmap':>10} "
        f"{'ratio':>6} {'max |Δ logit|':>14}"
    )
    for docs in args.docs_per_batch:
        batches = make_batches(args.vocab_size, docs, 10, args.device)
        seeds = list(range(args.members))
        sequential, seconds = [], 0.0
        for seed in seeds:
            torch.manual_seed(seed)
            model = factory(seed)
            seconds += fit(model, batches, args.steps, args.device)
            sequential.append(model.eval())
        ensemble = MemberEnsemble(factory, args.members, seeds)
        seconds_vmap = fit(ensemble, batches, args.steps, args.device)
        ensemble.eval()
        with torch.no_grad():
            expected = torch.stack([m(batches[0]) for m in sequential])
            difference = (ensemble(batches[0]) - expected).abs().max().item()
        print(
            f"{docs:>10} {batches[0].n_candidates:>10} {seconds * 1e3:>9.1f} ms "
            f"{seconds_vmap * 1e3:>7.1f} ms {seconds / seconds_vmap:>5.1f}× {difference:>14.1e}"
        )


if __name__ == "__main__":
    main()
