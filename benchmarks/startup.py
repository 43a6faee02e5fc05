"""Start-up time: a one-sentence ``kuoro suggest`` end to end, and ``kuoro serve`` until ready.

Usage:
    python benchmarks/startup.py --datadir DIR --projects projects.toml
        [--project ID ...] [--baseline GIT_REV] [--repeat 3]

For each project (default: every project in the projects file except Omikuji ones) it times
``python -m kuoro.cli suggest ID`` of one sentence on standard input in a fresh process
(interpreter, imports, vocabulary and model loading, the answer), and once for them all the
time from launching ``kuoro serve`` (on a free local port) until ``GET /health`` answers with
every one of them ``ready``. Each time is the median of ``--repeat`` runs. The code measured
is this checkout's ``src/`` (on PYTHONPATH); with ``--baseline REV`` the same measurements
also run, interleaved, on the ``src/`` of that git revision (extracted with ``git archive``
into a temporary directory) over the same data directory, and the table gives the ratio and
whether both printed the same suggestions.

Prints a Markdown table, with the machine's load average at the start and the end.

The data directory of the demo's projects (``examples/projects.toml``), on the first 50,000
finna.fi titles (about 5 minutes on 2 cores)::

    export KUORO_DATADIR=bench-work/startup KUORO_PROJECTS=examples/projects.toml
    data=../shared/data
    mkdir -p $KUORO_DATADIR
    gzip -dc $data/yso-fi/finna-titles.tsv.gz | head -n 50000 > $KUORO_DATADIR/finna-50k.tsv
    kuoro load-vocab yso-fi $data/yso-fi/vocab.tsv --language fi
    for p in yso-tfidf-fi yso-fasttext-fi yso-lexical-fi; do
        kuoro train $p $KUORO_DATADIR/finna-50k.tsv; done
    for p in yso-mean-fi yso-kuoro-fi; do
        kuoro train $p $data/kirjastonhoitaja/train.tsv; done
    python benchmarks/startup.py --datadir $KUORO_DATADIR --projects $KUORO_PROJECTS \\
        --baseline <revision before the change>

Models are read, never written, so a baseline revision measures the same model files (a
model written by newer code must still load in the older one: Kuoro keeps model formats
compatible both ways, and extra files are ignored).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import tomli_w

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
SENTENCE = "Kirjastojen historia ja lukemisen muutos Suomessa 1900-luvulla"


@dataclass
class Code:
    """One version of Kuoro's source: its name in the table and its ``src`` directory."""

    name: str
    src: Path
    suggest: dict[str, list[float]] = field(default_factory=dict)
    answers: dict[str, str] = field(default_factory=dict)
    serve: list[float] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(self.src)}


def selected_projects(projects_file: Path, chosen: Sequence[str]) -> dict[str, dict[str, object]]:
    """The projects to measure: ``chosen``, else every one that is not an Omikuji project."""
    with projects_file.open("rb") as f:
        tables: dict[str, dict[str, object]] = tomllib.load(f)
    if chosen:
        missing = [p for p in chosen if p not in tables]
        if missing:
            raise SystemExit(f"not in {projects_file}: {', '.join(missing)}")
        return {p: tables[p] for p in chosen}
    return {p: t for p, t in tables.items() if t.get("backend") != "omikuji"}


def kuoro(datadir: Path, projects: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "kuoro.cli", "--datadir", str(datadir),
            "--projects", str(projects), *args]  # fmt: skip


def time_suggest(code: Code, datadir: Path, projects: Path, project: str) -> None:
    started = time.perf_counter()
    done = subprocess.run(
        kuoro(datadir, projects, "suggest", project, "--limit", "10"),
        input=SENTENCE,
        capture_output=True,
        text=True,
        env=code.env(),
        cwd=ROOT,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{code.name}: kuoro suggest {project} failed:\n{done.stderr}")
    code.suggest.setdefault(project, []).append(seconds)
    code.answers[project] = done.stdout


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def time_serve(code: Code, datadir: Path, projects: Path, expected: Sequence[str]) -> None:
    """Seconds from launching ``kuoro serve`` until /health says every project is ready."""
    port = free_port()
    started = time.perf_counter()
    server = subprocess.Popen(
        kuoro(datadir, projects, "-q", "serve", "--port", str(port)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=code.env(),
        cwd=ROOT,
    )
    try:
        while True:
            if server.poll() is not None:
                error = server.stderr.read().decode() if server.stderr else ""
                raise SystemExit(f"{code.name}: kuoro serve exited:\n{error}")
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/health", timeout=30)
                states = answer.json()["projects"] if answer.status_code == 200 else {}
            except httpx.TransportError:
                states = {}
            if states and all(states.get(p, {}).get("status") == "ready" for p in expected):
                code.serve.append(time.perf_counter() - started)
                return
            if states:
                raise SystemExit(f"{code.name}: kuoro serve is up, but not all ready: {states}")
            if time.perf_counter() - started > 600:
                raise SystemExit(f"{code.name}: kuoro serve not ready within 10 minutes")
            time.sleep(0.02)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@contextmanager
def source_of_revision(revision: str) -> Iterator[Path]:
    """The ``src`` directory of a git revision of this repository, in a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="kuoro-baseline-") as scratch:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", revision, "src"], capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", scratch], input=archive.stdout, check=True)
        yield Path(scratch) / "src"


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


def table(codes: Sequence[Code], projects: Sequence[str]) -> list[str]:
    base, now = (codes[0], codes[-1]) if len(codes) == 2 else (None, codes[0])
    header = ["what", *(f"{c.name} (s)" for c in codes)]
    if base is not None:
        header += ["ratio", "same answer"]
    rows = [header, ["---"] + ["---:"] * (len(header) - 1)]

    def row(what: str, times: Sequence[Sequence[float]], same: str = "") -> list[str]:
        medians = [statistics.median(t) for t in times]
        cells = [what, *(f"{m:.2f}" for m in medians)]
        if base is not None:
            cells += [f"{medians[-1] / medians[0]:.2f}", same]
        return cells

    for project in projects:
        same = ""
        if base is not None:
            same = "yes" if base.answers[project] == now.answers[project] else "**no**"
        rows.append(row(f"`suggest {project}`", [c.suggest[project] for c in codes], same))
    rows.append(row(f"`serve`: {len(projects)} projects ready", [c.serve for c in codes]))
    return ["| " + " | ".join(r) + " |" for r in rows]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datadir", type=Path, required=True)
    parser.add_argument("--projects", type=Path, required=True, help="projects.toml")
    parser.add_argument(
        "--project", action="append", default=[], help="a project to measure (repeatable)"
    )
    parser.add_argument("--baseline", metavar="GIT_REV", help="also measure this revision")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measurement")
    args = parser.parse_args(argv)

    chosen = selected_projects(args.projects, args.project)
    print(f"{load()} at the start; {args.repeat} runs each, median", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="kuoro-startup-") as scratch, (
        source_of_revision(args.baseline) if args.baseline else _no_source()
    ) as baseline_src:  # fmt: skip
        projects_file = Path(scratch) / "projects.toml"
        projects_file.write_text(tomli_w.dumps(chosen), encoding="utf-8")
        codes = [Code("now", ROOT / "src")]
        if baseline_src is not None:
            codes.insert(0, Code(f"baseline {args.baseline}", baseline_src))
        for run in range(args.repeat):
            for project in chosen:
                for code in codes:  # interleaved, so that a change of load hits both alike
                    time_suggest(code, args.datadir, projects_file, project)
            for code in codes:
                time_serve(code, args.datadir, projects_file, list(chosen))
            print(f"run {run + 1} of {args.repeat} done", file=sys.stderr)
    print("\n".join(table(codes, list(chosen))))
    print(f"\n{load()} at the end.")


@contextmanager
def _no_source() -> Iterator[None]:
    yield None


if __name__ == "__main__":
    main()
