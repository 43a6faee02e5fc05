"""What fusion costs per document as the vocabulary grows: Kuoro's sparse models against a dense
reference, inference and one training epoch, time and peak RSS, as Markdown tables.

Usage:
    python benchmarks/fusion_cost.py [--vocab-sizes 36000 456000] [--train-documents 5000]
        [--infer-documents 2000] [--dense-batch 64] [--big-documents 250000] [--skip-big]
        [--work bench-work/fusion-cost] [--threads 1]

Inputs are synthetic (``benchmarks/synthetic.py``: 4 sources × top 100, ~4.7 gold per
document). Every measurement runs in a fresh child process, so each peak RSS is its own (a
child that only imports torch and numpy is the first row: the floor under every other).

* ``kuoro`` and ``linear``: Kuoro's models as trained and used (candidate sets, per-concept
  tables looked up sparsely); ``linear`` is the sparse equivalent of Annif's PyTorch ensemble.
* ``dense linear``: the reference, the same linear model as other tools run it: the sources'
  scores as a documents × V × S dense tensor, V × S weights, a V-wide output and top-k over
  it, AdamW on every weight at every step. Its batch size is ``--dense-batch`` (its input
  alone is batch × V × S × 4 bytes).

Inference: from each document's source rows (CSR, in memory) to its top-100 CSR row, timed
per document, sources excluded. Training: one epoch over ``--train-documents`` documents
read from a suggestion store (the sparse models through ``fit_fusion``; 200 held out).
The big run trains ``kuoro`` for one epoch at V = 456,000 on ``--big-documents`` documents.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import synthetic

N_SOURCES = 4
TOP_K = 100


# -- the dense reference ----------------------------------------------------------------------


def dense_reference(n_concepts: int, weights: list[float]) -> Any:
    """Annif's PyTorch ensemble as it runs: dense V × S weights over a dense score tensor."""
    import torch
    from torch import nn

    class DenseLinear(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            w = torch.tensor(weights) / sum(weights)
            self.weight = nn.Parameter(w.expand(n_concepts, -1).clone())
            self.concept_bias = nn.Parameter(torch.zeros(n_concepts))
            self.bias = nn.Parameter(torch.zeros(()))

        def forward(self, scores: torch.Tensor) -> torch.Tensor:  # (B, V, S) → (B, V) logits
            z = (torch.log1p(scores) * self.weight).sum(-1) + self.concept_bias
            return 20.0 * (z + self.bias)

    return DenseLinear()


def dense_input(rows: list[sp.csr_matrix], start: int, stop: int) -> Any:
    """(B, V, S) dense float32 scores of documents start:stop."""
    import torch

    return torch.from_numpy(
        np.stack([r[start:stop].toarray() for r in rows], axis=-1).astype(np.float32)
    )


# -- children: one measurement each ---------------------------------------------------------


def _in_memory(vocab_size: int, n_documents: int, seed: int) -> tuple[list[Any], list[Any]]:
    gold: list[np.ndarray] = []
    parts: list[list[sp.csr_matrix]] = []
    for chunk_gold, sources in synthetic.generate(vocab_size, n_documents, seed=seed):
        gold.extend(chunk_gold)
        parts.append(sources)
    rows = [sp.vstack([p[s] for p in parts]).tocsr() for s in range(N_SOURCES)]
    return gold, rows


def child_import() -> dict[str, Any]:
    import torch  # noqa: F401

    return {}


def child_infer(model_name: str, vocab_size: int, n_documents: int, dense_batch: int) -> dict:
    import torch

    from kuoro.config.params import fusion_params
    from kuoro.fusion.candidates import ConceptPrior, build_candidates
    from kuoro.fusion.fit import build_model
    from kuoro.fusion.predictor import top_rows
    from kuoro.fusion.tensors import to_batch

    gold, rows = _in_memory(vocab_size, n_documents, seed=1)
    weights = [1.0] * N_SOURCES
    prior = ConceptPrior.from_counts(np.bincount(np.concatenate(gold), minlength=vocab_size))
    if model_name == "dense linear":
        model = dense_reference(vocab_size, weights).eval()
        batch = dense_batch
    else:
        params = fusion_params(model_name, _params(model_name))
        model = build_model(params, vocab_size, weights, seed=0).eval()
        batch = 256
    out = []
    started = time.perf_counter()
    with torch.no_grad():
        for start in range(0, n_documents, batch):
            stop = min(start + batch, n_documents)
            if model_name == "dense linear":
                scores = torch.sigmoid(model(dense_input(rows, start, stop)))
                top = torch.topk(scores, TOP_K, dim=-1)
                n = stop - start
                out.append(
                    sp.csr_matrix(
                        (
                            top.values.flatten().numpy(),
                            top.indices.flatten().numpy(),
                            np.arange(0, n * TOP_K + 1, TOP_K),
                        ),
                        shape=(n, vocab_size),
                    )
                )
            else:
                part = [r[start:stop] for r in rows]
                candidates = build_candidates(part, None, prior, top_k=TOP_K)
                predicted = model.predict_scores(to_batch(candidates)).numpy()
                out.append(
                    top_rows(
                        candidates.documents(),
                        candidates.concepts,
                        predicted,
                        stop - start,
                        vocab_size,
                        TOP_K,
                    )
                )
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "documents": n_documents, "rows": sum(m.nnz for m in out)}


def child_train(
    model_name: str, store_path: str, dense_batch: int, validation: float | int = 200
) -> dict:
    from kuoro.config.params import fusion_params
    from kuoro.fusion.fit import fit_fusion
    from kuoro.store.suggestion_store import SuggestionStore
    from kuoro.training import History

    with SuggestionStore.open(store_path) as store:
        if model_name == "dense linear":
            return _train_dense(store, dense_batch)
        params = fusion_params(
            model_name,
            {
                **_params(model_name),
                "max_epochs": 1,
                "early_stopping": False,
                "validation": validation,
            },
        )
        history = Path(store_path).with_name(f"history-{model_name}-{time.time_ns()}.jsonl")
        started = time.perf_counter()
        _, info = fit_fusion(store, params, [1.0] * N_SOURCES, history_path=history)
        total = time.perf_counter() - started
        (epoch,) = History.read(history)
        history.unlink()
        return {
            "seconds": epoch["seconds"],
            "total_seconds": total,
            "documents": info.train_documents,
            "ndcg@10": info.metrics.get("ndcg@10"),
        }


def _train_dense(store: Any, batch_size: int) -> dict:
    """One epoch of the dense reference: BCE on every concept, AdamW on every weight."""
    import torch

    from kuoro.fusion.fit import split_positions

    train, _ = split_positions(len(store), 200, seed=0)
    vocab_size = store.vocab_size
    model = dense_reference(vocab_size, [1.0] * N_SOURCES)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.003)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    started = time.perf_counter()
    for part in store.batches(batch_size, shuffle=True, seed=0, positions=train):
        n = len(part)
        x = dense_input(list(part.sources), 0, n)
        target = torch.from_numpy(part.gold.toarray().astype(np.float32))
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), target)
        loss.backward()
        optimizer.step()
    return {"seconds": time.perf_counter() - started, "documents": len(train)}


def _params(model_name: str) -> dict[str, object]:
    """The catalogue's defaults of a fusion model."""
    from kuoro.config.params import fusion_params

    return dataclasses.asdict(fusion_params(model_name, {}))


CHILDREN = {
    "import": child_import,
    "infer": child_infer,
    "train": child_train,
}


def run_child(kind: str, *args: Any, threads: int) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter; its result with its peak RSS in MB."""
    code = (
        "import json, resource, sys, torch; "
        f"torch.set_num_threads({threads}); "
        f"sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); "
        "import fusion_cost as b; "
        f"r = b.CHILDREN[{kind!r}](*{list(args)!r}); "
        "r['peak_rss_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024; "
        "print(json.dumps(r))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr else "failed"}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# -- the parent: stores, runs, tables -------------------------------------------------------


def write_store(path: Path, vocab_size: int, n_documents: int) -> Path:
    """A synthetic suggestion store (reused when complete with the same shape)."""
    from kuoro.store.suggestion_store import SuggestionStore

    if path.exists():
        with SuggestionStore.open(path) as store:
            if store.complete and len(store) == n_documents and store.vocab_size == vocab_size:
                return path
        import shutil

        shutil.rmtree(path)
    started = time.perf_counter()
    with SuggestionStore.create(
        path,
        source_names=[f"s{i}" for i in range(N_SOURCES)],
        vocab_size=vocab_size,
        fingerprints={"synthetic": f"{vocab_size}-{n_documents}"},
        top_k=TOP_K,
        chunk_size=256,
    ) as store:
        for gold, sources in synthetic.generate(vocab_size, n_documents, seed=0):
            store.append(gold, sources)
        store.mark_complete()
    print(f"wrote {path} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return path


def _ms(result: dict[str, Any], key: str = "seconds") -> str:
    if "error" in result:
        return f"failed: {result['error'][:60]}"
    return f"{1000 * result[key] / result['documents']:.3f}"


def _mb(result: dict[str, Any]) -> str:
    return f"{result['peak_rss_mb']:,.0f}" if "peak_rss_mb" in result else "–"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab-sizes", type=int, nargs="+", default=[36000, 456000])
    parser.add_argument("--train-documents", type=int, default=5000)
    parser.add_argument("--infer-documents", type=int, default=2000)
    parser.add_argument("--dense-batch", type=int, default=64)
    parser.add_argument("--big-documents", type=int, default=250000)
    parser.add_argument("--skip-big", action="store_true")
    parser.add_argument("--work", type=Path, default=Path("bench-work/fusion-cost"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--models", nargs="+", default=["kuoro", "linear", "dense linear"],
        choices=["kuoro", "linear", "dense linear"],
    )  # fmt: skip
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    models = tuple(args.models)

    floor = run_child("import", threads=args.threads)
    infer: dict[tuple[str, int], dict[str, Any]] = {}
    train: dict[tuple[str, int], dict[str, Any]] = {}
    for vocab_size in args.vocab_sizes:
        store = write_store(args.work / f"v{vocab_size}-n{args.train_documents}.store",
                            vocab_size, args.train_documents)  # fmt: skip
        for model in models:
            print(f"V={vocab_size:,} {model}", file=sys.stderr)
            infer[model, vocab_size] = run_child(
                "infer", model, vocab_size, args.infer_documents, args.dense_batch,
                threads=args.threads,
            )  # fmt: skip
            train[model, vocab_size] = run_child(
                "train", model, str(store), args.dense_batch, threads=args.threads
            )

    small, large = min(args.vocab_sizes), max(args.vocab_sizes)
    print(
        f"\nInference: {args.infer_documents:,} documents, sources excluded; "
          f"training: one epoch over {args.train_documents - 200:,} documents; "
          f"{args.threads} torch thread(s); import-only child: {_mb(floor)} MB peak RSS.\n"
    )  # fmt: skip
    print("| model | V | inference ms/doc | inference peak RSS MB | epoch ms/doc "
          "| training peak RSS MB |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|")
    for model in models:
        for vocab_size in args.vocab_sizes:
            i, t = infer[model, vocab_size], train[model, vocab_size]
            print(f"| {model} | {vocab_size:,} | {_ms(i)} | {_mb(i)} | {_ms(t)} | {_mb(t)} |")
    print(f"\nTime per document at V={large:,} over V={small:,} (inference; epoch):\n")
    print("| model | inference ratio | epoch ratio |")
    print("|---|---:|---:|")
    for model in models:
        ratios = []
        for table in (infer, train):
            a, b = table[model, small], table[model, large]
            ok = "error" not in a and "error" not in b
            ratios.append(f"{(b['seconds'] / b['documents']) / (a['seconds'] / a['documents']):.2f}"
                          if ok else "–")  # fmt: skip
        print(f"| {model} | {ratios[0]} | {ratios[1]} |")
    if {"kuoro", "dense linear"} <= set(models):
        k, d = infer["kuoro", large], infer["dense linear", large]
        print(f"\nAt V={large:,} the dense reference takes "
              f"{(d['seconds'] / d['documents']) / (k['seconds'] / k['documents']):.1f}× "
              f"kuoro's inference time per document.")  # fmt: skip

    if not args.skip_big:
        store = write_store(args.work / f"v456000-n{args.big_documents}.store", 456000,
                            args.big_documents)  # fmt: skip
        big = run_child("train", "kuoro", str(store), args.dense_batch, 0.1, threads=args.threads)
        print(f"\nTraining kuoro at V=456,000 on {args.big_documents:,} documents "
              "(one epoch, 5,000 held out):\n")  # fmt: skip
        print("| documents trained | epoch s | epoch + validation s | peak RSS MB |")
        print("|---:|---:|---:|---:|")
        if "error" in big:
            print(f"| failed: {big['error']} | | | |")
        else:
            print(f"| {big['documents']:,} | {big['seconds']:.0f} | {big['total_seconds']:.0f} "
                  f"| {_mb(big)} |")  # fmt: skip


if __name__ == "__main__":
    main()
