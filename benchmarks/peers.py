"""Kuoro against what a practitioner would run instead, on the very same source outputs.

Usage:
  python benchmarks/peers.py --datadir DIR --projects projects.toml --sources a,b,c
      --vocab VOCAB --language fi --train T.tsv --validate V.tsv --test TEST.tsv
      [--seeds 0 1 2] [--work bench-work/peers] [--methods ...] [--output table.md] [--jobs 2]

The trained source projects are run once over each corpus into a SuggestionStore under
``--work/stores`` (reused while the sources, vocabulary and corpus are unchanged). Every method
(benchmarks/peer_methods.py) then trains on the ensemble-training store, uses the validation
store for its choices and early stopping, and ranks the test store; each is scored with
``RankingMetrics(limit=10)``, Annif's metric definitions. Training time is the fit alone;
fusion time per document goes from the stored suggestions to the ranked rows (the sources
excluded). A (method, seed) result is kept in ``--work/results`` as JSON and reused by a
later run on the same stores unless ``--fresh``. The Markdown table goes to stdout (and
``--output``), progress to stderr.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import scipy.sparse as sp
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kuoro.config.projects import load_projects
from kuoro.errors import KuoroError
from kuoro.evaluation.metrics import RankingMetrics, ranked_predictions
from kuoro.fusion.candidates import build_candidates, candidate_recall
from kuoro.fusion.cooccurrence import SubjectCooccurrence
from kuoro.project.datadir import DataDir
from kuoro.project.project import Project
from kuoro.project.stores import build_source_store
from kuoro.store.suggestion_store import StoreBatch, SuggestionStore
from peer_methods import (
    CombMNZ,
    DensePeer,
    KuoroModel,
    LambdaMART,
    Mean,
    Oracle,
    PeerMethod,
    ReciprocalRankFusion,
    SourceAlone,
    WeightedMean,
    gold_sets,
)

COLUMNS = ("NDCG@10", "NDCG", "F1@5", "Precision@5")
RESULT_VERSION = 2  # bump when a change makes the cached results stale
TEST_BATCH = 256

# Method keys for --methods, in table order; "sources" stands for every source alone.
METHOD_KEYS = (
    "sources",
    "mean",
    "weighted-mean",
    "rrf",
    "combmnz",
    "lambdamart",
    "dense",
    "kuoro-linear",
    "kuoro-kuoro",
    "kuoro-kuoro-m5",
    "oracle",
)
LABELS = {
    "mean": "mean of sources (Kuoro `mean`)",
    "weighted-mean": "weighted mean, weights tuned on validation",
    "rrf": "reciprocal rank fusion (k=60)",
    "combmnz": "CombMNZ (per-document min-max per source)",
    "lambdamart": "LightGBM LambdaMART over Kuoro's candidate features",
    "dense": "dense Keras-era `nn_ensemble` (PyTorch)",
    "kuoro-linear": "Kuoro `linear`",
    "kuoro-kuoro": "**Kuoro `kuoro` (default, members 1)**",
    "kuoro-kuoro-m5": "Kuoro `kuoro`, members 5",
    "oracle": "oracle: perfect reordering of the sources' union",
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datadir", required=True, type=Path)
    parser.add_argument("--projects", required=True, type=Path)
    parser.add_argument("--sources", required=True, help="source project ids, comma-separated")
    parser.add_argument("--vocab", required=True)
    parser.add_argument("--language", required=True)
    parser.add_argument("--train", required=True, nargs="+", type=Path)
    parser.add_argument("--validate", required=True, nargs="+", type=Path)
    parser.add_argument("--test", required=True, nargs="+", type=Path)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--work", type=Path, default=Path("bench-work/peers"))
    parser.add_argument("--methods", nargs="+", choices=METHOD_KEYS, default=list(METHOD_KEYS))
    parser.add_argument("--output", type=Path, help="also write the table and notes here")
    parser.add_argument("--jobs", type=int, default=1, help="processes running the sources")
    parser.add_argument("--threads", type=int, default=2, help="torch and LightGBM threads")
    parser.add_argument(
        "--dense-max-vocab",
        type=int,
        default=100_000,
        help="run the dense peer only up to this vocabulary size (its cost grows with V × S)",
    )
    parser.add_argument("--fresh", action="store_true", help="recompute cached results")
    parser.add_argument(
        "--cooccurrence",
        type=Path,
        help="a corpus (the sources' training corpus) whose subject co-occurrence the Kuoro "
        "and LambdaMART rows read as candidate features, as a fusion project with "
        'cooccurrence = "sources" does; without it those columns are 0',
    )
    parser.add_argument(
        "--kuoro-params",
        type=json.loads,
        default={},
        help="JSON object of parameters for the Kuoro rows, e.g. '{\"dropout\": 0}'",
    )
    return parser.parse_args(argv)


def cooccurrence_table(args: argparse.Namespace, n_concepts: int) -> SubjectCooccurrence | None:
    """The table of --cooccurrence, counted once and kept in the work directory."""
    if args.cooccurrence is None:
        return None
    digest = hashlib.sha256(
        f"{args.cooccurrence.resolve()}:{args.cooccurrence.stat().st_size}:{args.vocab}".encode()
    ).hexdigest()[:16]
    cached = args.work / f"cooccurrence-{digest}.npz"
    if cached.is_file():
        return SubjectCooccurrence.load(cached)
    print(f"counting subject co-occurrence in {args.cooccurrence}", file=sys.stderr)
    vocabulary = DataDir(args.datadir).load_vocabulary(args.vocab)
    table = SubjectCooccurrence.from_corpus(
        args.cooccurrence, vocabulary, language=args.language
    ).resized(n_concepts)
    table.save(cached)
    return table


# -- the stores ----------------------------------------------------------------------------


def build_stores(args: argparse.Namespace) -> dict[str, SuggestionStore]:
    """The train, validation and test stores, filled by the sources where not cached."""
    configs = load_projects(args.projects)
    datadir = DataDir(args.datadir)
    names = [name.strip() for name in args.sources.split(",") if name.strip()]
    missing = [name for name in names if name not in configs]
    if missing:
        raise KuoroError(f"no source project {', '.join(missing)} in {args.projects}")
    # Sorted by id: a store's fingerprints are read back in sorted order, and build_store
    # compares them in the order given, so another order would rebuild the stores every run.
    projects = [Project(configs[name], datadir, configs) for name in sorted(names)]
    vocabulary = datadir.load_vocabulary(args.vocab)
    stores = {}
    for split in ("train", "validate", "test"):
        print(f"store {split}: {', '.join(map(str, getattr(args, split)))}", file=sys.stderr)
        stores[split] = build_source_store(
            args.work / "stores" / split,
            projects,
            getattr(args, split),
            vocabulary=vocabulary,
            language=args.language,
            jobs=args.jobs,
            progress=True,
        )
    return stores


# -- running and scoring a method ----------------------------------------------------------


class Plan(NamedTuple):
    """One row of the table: a key for the cache, its label and how to make the method."""

    key: str
    label: str
    make: Callable[[], PeerMethod]


def plans(
    args: argparse.Namespace,
    source_names: Sequence[str],
    order: Sequence[str],
    table: SubjectCooccurrence | None = None,
) -> list[Plan]:
    """The rows asked for by --methods, in table order; sources in the --sources order."""
    threads, out = args.threads, []
    extra = args.kuoro_params
    for key in METHOD_KEYS:
        if key not in args.methods:
            continue
        if key == "sources":
            for name in order:
                index = list(source_names).index(name)
                out.append(
                    Plan(f"source-{name}", f"{name} alone", partial(SourceAlone, index, name))
                )
            continue
        makers: dict[str, Callable[[], PeerMethod]] = {
            "mean": Mean,
            "weighted-mean": WeightedMean,
            "rrf": ReciprocalRankFusion,
            "combmnz": CombMNZ,
            "lambdamart": lambda: LambdaMART(n_jobs=threads, cooccurrence=table),
            "dense": lambda: DensePeer(progress=True),
            "kuoro-linear": lambda: KuoroModel("linear", progress=True),
            "kuoro-kuoro": lambda: KuoroModel(
                "kuoro", progress=True, cooccurrence=table, params=extra
            ),
            "kuoro-kuoro-m5": lambda: KuoroModel(
                "kuoro", members=5, progress=True, cooccurrence=table, params=extra
            ),
            "oracle": Oracle,
        }
        out.append(Plan(key, LABELS[key], makers[key]))
    return out


def score(
    rows: sp.csr_matrix, batch: StoreBatch, metrics: RankingMetrics, union: list[int]
) -> None:
    """Add a batch's ranked rows to ``metrics``; count top-10 picks outside the sources' union.

    ``union`` accumulates [top-10 picks, picks outside the union, of those correct].
    """
    gold = gold_sets(batch.gold)
    metrics.update(rows, gold)
    n_concepts = batch.gold.shape[1]
    candidates = build_candidates(batch.sources)
    keys = set((candidates.documents() * n_concepts + candidates.concepts).tolist())
    for i in range(rows.shape[0]):
        start, end = rows.indptr[i], rows.indptr[i + 1]
        top = ranked_predictions(rows.indices[start:end], rows.data[start:end], metrics.limit)
        outside = [c for c in top.tolist() if i * n_concepts + c not in keys]
        union[0] += len(top)
        union[1] += len(outside)
        union[2] += len(set(outside) & set(gold[i].tolist()))


def run_method(
    method: PeerMethod,
    stores: dict[str, SuggestionStore],
    test_batches: Sequence[StoreBatch],
    seed: int,
) -> dict[str, Any]:
    """Fit, rank the test documents, score: the record cached per (method, seed)."""
    started = time.perf_counter()
    notes = method.fit(stores["train"], stores["validate"], seed)
    train_seconds = time.perf_counter() - started
    ranked, fusion_seconds = [], 0.0
    for batch in test_batches:
        started = time.perf_counter()
        ranked.append(method.rank(batch))
        fusion_seconds += time.perf_counter() - started
    metrics, union = RankingMetrics(limit=10), [0, 0, 0]
    for rows, batch in zip(ranked, test_batches, strict=True):
        score(rows, batch, metrics, union)
    values = metrics.compute()
    n_docs = sum(len(b) for b in test_batches)
    return {
        "metrics": {name: values[name] for name in COLUMNS},
        "train_seconds": train_seconds,
        "fusion_ms_per_document": 1e3 * fusion_seconds / max(n_docs, 1),
        "top10": union[0],
        "outside_union": union[1],
        "outside_union_correct": union[2],
        "notes": notes,
    }


def cache_key(stores: dict[str, SuggestionStore], key: str, method: PeerMethod, seed: int) -> str:
    """Identifies what a cached result was computed from."""
    described = {
        "version": RESULT_VERSION,
        "stores": {split: store.fingerprints for split, store in stores.items()},
        "method": key,
        "settings": method.settings(),
        "seed": seed,
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]


def results_for(
    plan: Plan,
    stores: dict[str, SuggestionStore],
    test_batches: Sequence[StoreBatch],
    seeds: Sequence[int],
    args: argparse.Namespace,
) -> list[dict[str, Any]]:
    """The plan's result per seed (one run when its method has no seed), cached in --work."""
    folder = args.work / "results"
    folder.mkdir(parents=True, exist_ok=True)
    first = plan.make()
    out: list[dict[str, Any]] = []
    for seed in seeds if first.seeded else [seeds[0]]:
        method = first if not out else plan.make()
        key = cache_key(stores, plan.key, method, seed)
        path = (
            folder / f"{plan.key}-seed{seed}.json" if first.seeded else folder / f"{plan.key}.json"
        )
        if path.is_file() and not args.fresh:
            cached = json.loads(path.read_text())
            if cached.get("key") == key:
                out.append({**cached, "reused": True})
                continue
        tqdm.write(f"{plan.key} seed {seed}: fitting", file=sys.stderr)
        record = {"key": key, "seed": seed if first.seeded else None}
        record.update(run_method(method, stores, test_batches, seed))
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1))
        os.replace(tmp, path)
        out.append(record)
    return out


# -- the table -----------------------------------------------------------------------------


def spread(values: Sequence[float], digits: int) -> str:
    """ "mean ± std" (sample std) over seeds, or the one value."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def table(rows: Sequence[tuple[Plan, list[dict[str, Any]]]]) -> str:
    header = "| method | nDCG@10 | nDCG | F1@5 | Precision@5 | training (s) | fusion (ms/doc) |"
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|"]
    for plan, results in rows:
        cells = [spread([r["metrics"][c] for r in results], 3) for c in COLUMNS]
        cells.append(spread([r["train_seconds"] for r in results], 1))
        cells.append(spread([r["fusion_ms_per_document"] for r in results], 3))
        lines.append(f"| {plan.label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# What rows do beyond their labels, printed when a row whose key is or starts with
# "KEY-" is in the table.
METHOD_NOTES = {
    "combmnz": "CombMNZ normalisation: per source and document, (score − min) / (max − min) "
    "over that source's suggestions (1 when all equal), summed over sources, × the number of "
    "sources that suggested the concept.",
    "lambdamart": "LambdaMART: LGBMRanker(objective='lambdarank'), ≤ 500 trees, lr 0.05, 31 "
    "leaves, min_child_samples 20, bagging 0.8 of rows and features per tree, early stopping "
    "after 50 rounds without gain in validation NDCG@10; the prior counted on the training "
    "store with each training candidate's own label left out.",
    "dense": "Dense peer: output = mean of the S sqrt-scores + Dense(V) delta, BCE on the "
    "output clipped to [1e-7, 1 − 1e-7] (Keras's binary_crossentropy on probabilities), Adam "
    "lr 0.001 (eps 1e-7), batch 32, 10 epochs, no early stopping; suggestions are its top 100 "
    "over the whole vocabulary.",
    "kuoro": "Kuoro rows: fit_fusion with the family's default parameters and the "
    "validation store for early stopping; test candidates scored with the prior counted on "
    "the training store.",
}


def notes(rows: Sequence[tuple[Plan, list[dict[str, Any]]]], recall: float) -> list[str]:
    keys = {plan.key for plan, _ in rows}
    out = [
        f"- Candidate recall: the sources' union holds {100 * recall:.1f}% of the test "
        "documents' gold subjects (the oracle's ceiling).",
        *(
            f"- {text}"
            for key, text in METHOD_NOTES.items()
            if any(k == key or k.startswith(f"{key}-") for k in keys)
        ),
    ]
    for plan, results in rows:
        top10 = sum(r["top10"] for r in results)
        outside = sum(r["outside_union"] for r in results)
        if outside or plan.key == "dense":
            correct = sum(r["outside_union_correct"] for r in results)
            out.append(
                f"- {plan.key}: {100 * outside / max(top10, 1):.1f}% of its top-10 suggestions "
                f"lie outside the sources' union ({outside} of {top10} over all seeds); "
                f"{100 * correct / max(outside, 1):.1f}% of those are correct ({correct})."
            )
    for plan, results in rows:
        details = [
            (f"seed {r['seed']}: " if r["seed"] is not None else "") + _short(r["notes"])
            for r in results
            if r["notes"]
        ]
        if details:
            out.append(f"- {plan.key}: " + "; ".join(details))
    return out


def _short(values: dict[str, Any]) -> str:
    return ", ".join(
        f"{k} {json.dumps(v) if isinstance(v, dict) else v}" for k, v in values.items()
    )


def union_recall(test_batches: Sequence[StoreBatch]) -> float:
    """The share of the test gold (document, concept) pairs inside the sources' union."""
    found = total = 0.0
    for batch in test_batches:
        gold_pairs = batch.gold.nnz
        if gold_pairs:
            found += candidate_recall(build_candidates(batch.sources), batch.gold) * gold_pairs
            total += gold_pairs
    return found / total if total else float("nan")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    stores = build_stores(args)
    train, test = stores["train"], stores["test"]
    for split, store in stores.items():
        if store.source_names != train.source_names or store.vocab_size != train.vocab_size:
            raise KuoroError(f"the {split} store's sources or vocabulary differ from train's")
    test_batches = list(test.batches(TEST_BATCH))
    order = [name.strip() for name in args.sources.split(",") if name.strip()]
    pairs = cooccurrence_table(args, train.vocab_size)
    chosen = plans(args, train.source_names, order, pairs)
    too_big = train.vocab_size > args.dense_max_vocab
    skipped = [p.key for p in chosen if p.key == "dense" and too_big]
    chosen = [p for p in chosen if p.key not in skipped]

    rows = []
    for plan in tqdm(chosen, desc="methods", unit="method", file=sys.stderr):
        rows.append((plan, results_for(plan, stores, test_batches, args.seeds, args)))
    elapsed = time.perf_counter() - started
    results = [r for _, per_seed in rows for r in per_seed]
    fresh = sum(not r.get("reused") for r in results)

    command = shlex.join(["python", "benchmarks/peers.py", *(argv or sys.argv[1:])])
    counts = ", ".join(f"{split} {len(store):,}" for split, store in stores.items())
    lines = [
        table(rows),
        "",
        f"Command: `{command}`",
        "",
        f"Data: train {' '.join(map(str, args.train))}, validate "
        f"{' '.join(map(str, args.validate))}, test {' '.join(map(str, args.test))} "
        f"(documents: {counts}); vocabulary {args.vocab} (V = {train.vocab_size:,}); sources "
        f"{', '.join(order)} (top {train.top_k} each).",
        f"Seeds: {' '.join(map(str, args.seeds))} (mean ± sample std over them for the seeded "
        "rows: LambdaMART, dense, Kuoro; the others are deterministic and run once).",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs (shared with other jobs during "
        f"the run), torch {torch.__version__} with {torch.get_num_threads()} threads, Python "
        f"{platform.python_version()}; LightGBM n_jobs {args.threads}. Metrics: "
        "RankingMetrics(limit=10) (Annif's definitions). This run: "
        f"{elapsed / 60:.1f} min, {fresh} of {len(results)} (method, seed) results computed "
        "in it, the others read from its cache.",
        "",
        "Notes:",
        *notes(rows, union_recall(test_batches)),
    ]
    if pairs is not None:
        lines.append(
            f"- co-occurrence (Kuoro and LambdaMART rows): subject sets of {args.cooccurrence} "
            f"({pairs.documents:,} documents of at most 10 subjects, "
            f"{pairs.conditional.nnz:,} concept pairs)."
        )
    if args.kuoro_params:
        lines.append(f"- Kuoro rows' parameters: {json.dumps(args.kuoro_params)}.")
    if skipped:
        lines.append(
            f"- dense peer skipped: V = {train.vocab_size:,} > --dense-max-vocab "
            f"{args.dense_max_vocab:,}."
        )
    text = "\n".join(lines)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    for store in stores.values():
        store.close()


if __name__ == "__main__":
    main()
