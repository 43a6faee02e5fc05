"""Calibrated scores and per-concept thresholds of a fusion project, on held-out documents.

Usage:
  python benchmarks/calibration.py --datadir DIR --projects projects.toml --project ID
      --train T.tsv --validate V.tsv --test TEST.tsv [--seeds 0 1 2] [--retrain]
      [--limit 10] [--min-supports 3 5 10] [--threads 1] [--output table.md]

For each seed N the fusion project ID is trained as ``ID-seedN`` (its configuration with
``seed = N`` and ``validation = V.tsv``, in the same data directory) on T.tsv, unless such a
model trained on those corpora since calibration exists is there already (``--retrain``
trains anyway). Training calibrates the model on V.tsv (``calibration = "auto"``: the method
of the lowest log-loss on held-out halves of V.tsv; the numbers are read back from the
model's manifest).

The sources' suggestions for V.tsv and TEST.tsv come from the project's shared stores (built
once); the model fuses them as ``suggest`` does, with and without its calibration. Reported,
mean ± std over the seeds:

* the expected calibration error (10 equal-width bins over each test document's ``--limit``
  best suggestions) of the raw and of the calibrated scores;
* the document-average F1 on TEST.tsv at the best global limit and threshold chosen on
  V.tsv (``optimize``'s grid) and with per-concept thresholds learnt on V.tsv at that limit;
* how the per-concept variants (shrinkage, what counts as support, the minimum support)
  compare: by 2-fold cross-validation within V.tsv (what chooses the default, never the test
  documents) and on TEST.tsv.

The Markdown tables go to stdout (and ``--output``), progress to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from kuoro.config.projects import load_projects
from kuoro.evaluation.concept_thresholds import (
    DEFAULT_MIN_SUPPORT,
    DEFAULT_SHRINKAGE,
    DEFAULT_SUPPORT,
    SHRINKAGES,
    SUPPORTS,
    learn_concept_thresholds,
)
from kuoro.evaluation.metrics import RankingMetrics
from kuoro.evaluation.optimize import best_point, limit_threshold_grid
from kuoro.fusion.predictor import FusionPredictor
from kuoro.project.datadir import DataDir
from kuoro.project.fusion_files import trained_sources
from kuoro.project.model_files import read_model
from kuoro.project.project import Project
from kuoro.project.stores import open_shared_store

ECE = "Expected calibration error"
F1 = "F1 score (doc avg)"
Gold = list[list[int]]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datadir", required=True, type=Path)
    parser.add_argument("--projects", required=True, type=Path)
    parser.add_argument("--project", required=True, help="the fusion project to train per seed")
    parser.add_argument("--train", required=True, type=Path)
    parser.add_argument("--validate", required=True, type=Path)
    parser.add_argument("--test", required=True, type=Path)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--retrain", action="store_true", help="train even if a model is there")
    parser.add_argument("--limit", type=int, default=10, help="suggestions per document for ECE")
    parser.add_argument("--min-supports", nargs="+", type=int, default=[3, 5, 10, 20])
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training")
    parser.add_argument("--jobs", type=int, default=1, help="processes running the sources")
    parser.add_argument("--output", type=Path, help="also write the tables here")
    return parser.parse_args(argv)


# -- the models ----------------------------------------------------------------------------


def seed_project(args: argparse.Namespace, seed: int) -> Project:
    """The project ``--project`` as ``ID-seedN``: its seed N and validation corpus set."""
    configs = load_projects(args.projects)
    base = configs[args.project]
    params = {**base.params, "seed": seed, "validation": str(args.validate.resolve())}
    config = dataclasses.replace(base, project_id=f"{base.project_id}-seed{seed}", params=params)
    return Project(config, DataDir(args.datadir), configs)


def trained_as_asked(project: Project, args: argparse.Namespace) -> bool:
    """Whether the project's model was trained on ``--train``, calibrated, with its seed."""
    if not project.is_trained:
        return False
    _, manifest = read_model(project.model_dir, project.project_id, "fusion")
    training = manifest["training"]
    return (
        training.get("corpus") == [str(args.train)]
        and "calibration" in training
        and manifest["params"].get("seed") == project.config.params["seed"]
        and manifest["params"].get("validation") == project.config.params["validation"]
    )


def calibration_record(project: Project) -> dict[str, Any]:
    _, manifest = read_model(project.model_dir, project.project_id, "fusion")
    record: dict[str, Any] = manifest["training"]["calibration"]
    return record


# -- suggestions from the stores -----------------------------------------------------------


def fused(project: Project, path: Path, jobs: int) -> tuple[sp.csr_matrix, sp.csr_matrix, Gold]:
    """The project's rows for the corpus's documents, raw and calibrated, and their gold;
    as ``Project.suggest`` gives them, from the sources' stored suggestions."""
    predictor = project.model
    assert isinstance(predictor, FusionPredictor)
    sources = trained_sources(project)
    store = open_shared_store(
        project.datadir,
        sources,
        [path],
        vocabulary=project.vocabulary,
        language=project.config.language,
        jobs=jobs,
        progress=True,
    )
    calibration = predictor.calibration
    raw, calibrated, gold = [], [], []
    try:
        for part in store.batches(256):
            rows = [sp.csr_matrix(r)[:, : predictor.n_concepts] for r in part.sources]
            calibrated.append(_as_suggested(project, predictor.fuse(rows)))
            predictor.calibration = None
            raw.append(_as_suggested(project, predictor.fuse(rows)))
            predictor.calibration = calibration
            gold += [part.gold[i].indices.tolist() for i in range(part.gold.shape[0])]
    finally:
        predictor.calibration = calibration
        store.close()
    return sp.vstack(raw, format="csr"), sp.vstack(calibrated, format="csr"), gold


def _as_suggested(project: Project, rows: sp.csr_matrix) -> sp.csr_matrix:
    """What ``Project.suggest`` does to the model's rows: vocabulary wide, no deprecated."""
    rows = sp.csr_matrix(rows)
    rows.resize((rows.shape[0], len(project.vocabulary)))
    deprecated = project.vocabulary.deprecated
    if rows.nnz and deprecated[rows.indices].any():
        rows.data[deprecated[rows.indices]] = 0
        rows.eliminate_zeros()
    return rows


def metrics(
    rows: sp.csr_matrix, gold: Gold, limit: int, threshold: float = 0.0
) -> dict[str, float]:
    m = RankingMetrics(limit=limit, threshold=threshold)
    m.update(rows, gold)
    return m.compute()


# -- per-concept thresholds ----------------------------------------------------------------

Variant = tuple[str, str, int]  # shrinkage, support, min_support


def variants(args: argparse.Namespace) -> list[Variant]:
    return [(sh, su, m) for sh in SHRINKAGES for su in SUPPORTS for m in args.min_supports]


def per_concept_gain(
    tune: sp.csr_matrix, tune_gold: Gold, apply: sp.csr_matrix, apply_gold: Gold, v: Variant
) -> tuple[float, float, int, tuple[int, float]]:
    """Global and per-concept F1 on ``apply`` with both chosen on ``tune``; the concepts
    given a threshold of their own; the global (limit, threshold)."""
    best = best_point(limit_threshold_grid(tune, tune_gold))
    learnt = learn_concept_thresholds(
        tune,
        tune_gold,
        limit=best.limit,
        threshold=best.threshold,
        model_version="benchmark",
        shrinkage=v[0],
        support_from=v[1],
        min_support=v[2],
    ).thresholds
    global_f1 = metrics(apply, apply_gold, best.limit, best.threshold)[F1]
    concept_f1 = metrics(learnt.apply(apply), apply_gold, best.limit)[F1]
    return global_f1, concept_f1, learnt.changed(), (best.limit, best.threshold)


def cross_validated(rows: sp.csr_matrix, gold: Gold, v: Variant, seed: int) -> float:
    """Per-concept minus global F1, 2-fold by document within the tuning corpus."""
    n = rows.shape[0]
    half = np.zeros(n, bool)
    half[np.random.default_rng(seed).permutation(n)[: n // 2]] = True
    gains = []
    for tune in (half, ~half):
        a, b = np.flatnonzero(tune), np.flatnonzero(~tune)
        g, c, _, _ = per_concept_gain(
            rows[a], [gold[i] for i in a], rows[b], [gold[i] for i in b], v
        )
        gains.append(c - g)
    return float(np.mean(gains))


# -- the run ---------------------------------------------------------------------------------


def run_seed(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    project = seed_project(args, seed)
    if args.retrain or not trained_as_asked(project, args):
        print(f"seed {seed}: training {project.project_id} on {args.train}", file=sys.stderr)
        project.train([args.train], jobs=args.jobs, progress=True, device="cpu")
        project.forget_model()
    record = calibration_record(project)
    _, val_cal, val_gold = fused(project, args.validate, args.jobs)
    test_raw, test_cal, test_gold = fused(project, args.test, args.jobs)
    raw_m = metrics(test_raw, test_gold, args.limit)
    cal_m = metrics(test_cal, test_gold, args.limit)
    out: dict[str, Any] = {
        "seed": seed,
        "calibration": record,
        "ece_raw": raw_m[ECE],
        "ece_calibrated": cal_m[ECE],
        "ndcg_raw": raw_m["NDCG@10"],
        "ndcg_calibrated": cal_m["NDCG@10"],
        "variants": {},
    }
    for v in variants(args):
        global_f1, concept_f1, changed, point = per_concept_gain(
            val_cal, val_gold, test_cal, test_gold, v
        )
        out["global_f1"], out["global_point"] = global_f1, point
        out["variants"][v] = {
            "test_f1": concept_f1,
            "changed": changed,
            "cv_gain": cross_validated(val_cal, val_gold, v, seed),
        }
    print(f"seed {seed}: {out['calibration']['method']}, ECE {out['ece_raw']:.4f} → "
          f"{out['ece_calibrated']:.4f}, F1 {out['global_f1']:.4f}", file=sys.stderr)  # fmt: skip
    return out


def mean_std(values: Sequence[float], digits: int = 4) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def tables(args: argparse.Namespace, results: Sequence[dict[str, Any]]) -> str:
    default: Variant = (DEFAULT_SHRINKAGE, DEFAULT_SUPPORT, DEFAULT_MIN_SUPPORT)
    seeds = ", ".join(str(r["seed"]) for r in results)
    lines = [
        f"Fusion project `{args.project}` trained on `{args.train.name}`, calibrated and tuned "
        f"on `{args.validate.name}`, measured on `{args.test.name}`; mean ± std over seeds "
        f"{seeds}.",
        "",
        f"| on {args.test.name} | raw scores | calibrated |",
        "|---|---|---|",
        f"| expected calibration error (10 bins, top {args.limit}) | "
        f"{mean_std([r['ece_raw'] for r in results])} | "
        f"{mean_std([r['ece_calibrated'] for r in results])} |",
        f"| NDCG@10 (unchanged: calibration keeps the ranking) | "
        f"{mean_std([r['ndcg_raw'] for r in results])} | "
        f"{mean_std([r['ndcg_calibrated'] for r in results])} |",
        "",
        f"| doc-average F1 on {args.test.name} (calibrated scores) | F1 |",
        "|---|---|",
        f"| best global limit and threshold (chosen on {args.validate.name}) | "
        f"{mean_std([r['global_f1'] for r in results])} |",
        f"| per-concept thresholds (learnt on {args.validate.name}; {default[0]}, support "
        f"{default[1]}, min {default[2]}) | "
        f"{mean_std([r['variants'][default]['test_f1'] for r in results])} |",
        "",
        "Global points chosen: "
        + ", ".join(
            f"seed {r['seed']}: limit {r['global_point'][0]}, threshold {r['global_point'][1]:.2f}"
            for r in results
        )
        + ".",
        "",
        "Calibration chosen by log-loss on held-out halves of the validation documents "
        "(2-fold, fitted on one half, scored on the other):",
        "",
        "| method | log-loss | ECE | chosen for seeds |",
        "|---|---|---|---|",
    ]
    methods = list(results[0]["calibration"].get("cross_validation", {}))
    for method in methods:
        cv = [r["calibration"]["cross_validation"][method] for r in results]
        chosen = [str(r["seed"]) for r in results if r["calibration"]["method"] == method]
        lines.append(
            f"| {method} | {mean_std([c['log_loss'] for c in cv])} | "
            f"{mean_std([c['ece'] for c in cv])} | {', '.join(chosen) or '–'} |"
        )
    lines += [
        "",
        "Per-concept variants: F1 gain over the global threshold (per-concept − global), "
        f"2-fold within {args.validate.name} and on {args.test.name}; concepts with a "
        "threshold of their own (learnt on all of validate):",
        "",
        "| shrinkage | support | min support | gain, validate 2-fold | gain, test | concepts |",
        "|---|---|---|---|---|---|",
    ]
    for v in variants(args):
        cv = [r["variants"][v]["cv_gain"] for r in results]
        test = [r["variants"][v]["test_f1"] - r["global_f1"] for r in results]
        changed = [float(r["variants"][v]["changed"]) for r in results]
        lines.append(
            f"| {v[0]} | {v[1]} | {v[2]} | {mean_std(cv, 4)} | {mean_std(test, 4)} | "
            f"{mean_std(changed, 1)} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    results = [run_seed(args, seed) for seed in args.seeds]
    text = tables(args, results)
    print(text)
    if args.output is not None:
        args.output.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
