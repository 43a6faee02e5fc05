"""Sources on the shared protocol: train on finna-titles, evaluate on kirjastonhoitaja/test.

Each source is trained and evaluated through the real `kuoro` command in a child process, so
that wall time and peak RSS are the command's own. Prints one Markdown table.

Usage:
    python benchmarks/sources.py [--sources tfidf omikuji fasttext lexical]
        [--train PATH] [--train-lines N] [--test PATH] [--workdir DIR] [--retrain]
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import subprocess
import sys
import time
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
KUORO = [sys.executable, "-m", "kuoro.cli"]

PROJECTS = {
    "tfidf": 'backend = "tfidf"\nanalyzer = "snowball(finnish)"\n',
    # min_df 2 as in examples/projects.toml: on all finna.fi titles a word seen once is noise.
    "omikuji": 'backend = "omikuji"\nanalyzer = "snowball(finnish)"\nmin_df = 2\n',
    "fasttext": 'backend = "fasttext"\nanalyzer = "snowball(finnish)"\n',
    "lexical": 'backend = "lexical"\nanalyzer = "simplemma(fi)"\n',
}
METRICS = ("NDCG@10", "NDCG", "F1@5", "Precision@5", "Recall@5", "Precision@1")


def run(args: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Run a command; return its wall seconds, its own peak RSS in MB, and its output."""
    started = time.perf_counter()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = proc.stdout.read().decode("utf-8", "replace") if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(args)}\n{output}")
    return seconds, usage.ru_maxrss / 1024, output


def subset(source: Path, lines: int, target: Path) -> Path:
    if target.exists():
        return target
    with gzip.open(source, "rt", encoding="utf-8") as inp, target.open("w") as out:
        for i, line in enumerate(inp):
            if i >= lines:
                break
            out.write(line)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", nargs="*", default=list(PROJECTS))
    parser.add_argument("--train", type=Path, default=SHARED_DATA / "yso-fi/finna-titles.tsv.gz")
    parser.add_argument("--train-lines", type=int, default=0, help="only the first N documents")
    parser.add_argument("--test", type=Path, default=SHARED_DATA / "kirjastonhoitaja/test.tsv")
    parser.add_argument(
        "--throughput", type=Path, default=SHARED_DATA / "kirjastonhoitaja/train.tsv",
        help="corpus for suggestion throughput",
    )  # fmt: skip
    parser.add_argument(
        "--one-text", type=Path, default=SHARED_DATA / "archaeology/fulltext/385445.txt",
        help="the text for the start-up measurement",
    )  # fmt: skip
    parser.add_argument("--vocab", type=Path, default=SHARED_DATA / "yso-fi/vocab.tsv")
    parser.add_argument("--workdir", type=Path, default=Path("bench-work/sources"))
    parser.add_argument("--retrain", action="store_true", help="train even if a model exists")
    args = parser.parse_args()

    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    train = args.train
    if args.train_lines:
        train = subset(train, args.train_lines, work / f"train-{args.train_lines}.tsv")
    projects = work / "projects.toml"
    projects.write_text(
        "".join(
            f'[bench-{name}]\nlanguage = "fi"\nvocab = "yso-fi"\n{PROJECTS[name]}\n'
            for name in PROJECTS
        )
    )
    env = {**os.environ, "KUORO_DATADIR": str(work / "data"), "KUORO_PROJECTS": str(projects)}
    run([*KUORO, "-q", "load-vocab", "yso-fi", str(args.vocab), "-l", "fi"], env)

    print(f"train: {args.train.name}{f' (first {args.train_lines})' if args.train_lines else ''}; "
          f"test: {args.test}; machine: {os.cpu_count()} cores", file=sys.stderr)  # fmt: skip
    header = ["source", "train s", "train peak RSS MB", "model MB", "suggest 1 text s"]
    header += ["docs/s -j1", "docs/s -j2"]
    rows = [header + list(METRICS)]
    for name in args.sources:
        pid = f"bench-{name}"
        model_dir = work / "data" / "projects" / pid
        if args.retrain or not (model_dir / "CURRENT").exists():
            train_s, rss, _ = run([*KUORO, "-q", "train", pid, str(train), "-j", "2"], env)
        else:
            train_s, rss = float("nan"), float("nan")
        size = sum(p.stat().st_size for p in model_dir.rglob("*") if p.is_file()) / 1e6
        _, _, out = run([*KUORO, "eval", pid, str(args.test)], env)
        metrics = {m: float(v) for m, v in re.findall(r"^([\w@ ()]+):\s+([\d.]+)$", out, re.M)}
        # Start-up: one short text end to end (Python, imports, model load, suggestion).
        first_s, _, _ = run([*KUORO, "suggest", pid, str(args.one_text)], env)
        speeds = []
        for jobs in (1, 2):
            # Throughput over a bigger corpus: -j1 excludes the model load, -j2 includes the
            # workers' start-up (each loads its own copy of the model).
            _, _, out = run([*KUORO, "-v", "eval", pid, str(args.throughput), "-j", str(jobs)], env)
            speed = re.search(r"\(([\d.]+) documents/s\)", out)
            speeds.append(float(speed.group(1)) if speed else float("nan"))
        rows.append(
            [name, f"{train_s:.0f}", f"{rss:.0f}", f"{size:.3g}", f"{first_s:.1f}"]
            + [f"{s:.1f}" for s in speeds]
            + [f"{metrics.get(m, float('nan')):.4f}" for m in METRICS]
        )
        print(f"done: {name}", file=sys.stderr, flush=True)
    print("| " + " | ".join(rows[0]) + " |")
    print("|" + "---|" * len(rows[0]))
    for row in rows[1:]:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
