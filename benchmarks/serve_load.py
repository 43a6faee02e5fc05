"""Load test of ``kuoro serve``: suggest-batch throughput, latency and where the time goes.

Usage:
    python benchmarks/serve_load.py --datadir DIR --projects projects.toml --project ID
        --corpus DOCS.tsv [--seconds 20] [--concurrency 4] [--batch 32] [--documents 3200]

Starts ``kuoro serve`` for the data directory and projects file (a child process on a free
local port) and drives ``POST /v1/projects/ID/suggest-batch`` from this process with
``concurrency`` concurrent httpx requests of ``batch`` documents each (texts from the corpus,
a TSV whose first field is the text, reused in a cycle) for ``seconds``. Prints Markdown:
documents/s, p50/p99 latency per request, and the share of the server's suggestion time spent
in the sources and in the fusion model (summed from the responses' ``Server-Timing`` headers;
the rest of the latency is HTTP, JSON and queueing). Also the start-up costs: ``kuoro suggest``
of one short text end to end, and the server's time from launch to its first answer.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from itertools import cycle, islice
from pathlib import Path

import httpx
import numpy as np

SHORT_TEXT = "Kirjastojen historia ja lukemisen muutos Suomessa"
# `kuoro serve` for a checkout where cli.py does not register the command (yet).
SERVE = (
    "import sys; from kuoro.cli.app import cli, main; from kuoro.cli.serve import serve_command\n"
    "if 'serve' not in cli.commands: cli.add_command(serve_command)\n"
    "sys.exit(main())"
)


@dataclass
class Load:
    """What the load generator saw, and what the server said it spent."""

    latencies: list[float] = field(default_factory=list)
    documents: int = 0
    failures: int = 0
    stages: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def read_texts(corpus: Path, limit: int) -> list[str]:
    with corpus.open(encoding="utf-8") as lines:
        texts = [line.split("\t", 1)[0].strip() for line in islice(lines, limit)]
    return [t for t in texts if t]


def kuoro_args(args: argparse.Namespace) -> list[str]:
    return ["--datadir", str(args.datadir), "--projects", str(args.projects)]


def engine_env(engine: str) -> dict[str, str]:
    """The environment that makes Kuoro run fusion models with ``engine`` (numpy or torch)."""
    return {**os.environ, "KUORO_FUSION_ENGINE": engine}


def time_cli_suggest(args: argparse.Namespace, engine: str = "numpy") -> float:
    """Seconds for ``kuoro suggest`` of one short text: interpreter, imports, model, answer."""
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "kuoro.cli", *kuoro_args(args), "suggest", args.project],
        input=SHORT_TEXT,
        text=True,
        check=True,
        capture_output=True,
        env=engine_env(engine),
    )
    return time.perf_counter() - started


def start_server(
    args: argparse.Namespace, port: int, engine: str = "numpy"
) -> tuple[subprocess.Popen[bytes], float]:
    """Launch ``kuoro serve``; the server and its seconds from launch to a first suggestion."""
    started = time.perf_counter()
    server = subprocess.Popen(
        [sys.executable, "-c", SERVE, *kuoro_args(args), "-q", "serve", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        env=engine_env(engine),
    )
    url = f"http://127.0.0.1:{port}/v1/projects/{args.project}/suggest"
    deadline = started + 600
    while True:
        if server.poll() is not None:
            raise SystemExit(f"kuoro serve exited with status {server.returncode}")
        try:
            if httpx.post(url, data={"text": SHORT_TEXT}, timeout=30).status_code == 200:
                return server, time.perf_counter() - started
        except httpx.TransportError:
            pass
        if time.perf_counter() > deadline:
            stop_server(server)
            raise SystemExit("kuoro serve gave no answer within 10 minutes")
        time.sleep(0.05)


def stop_server(server: subprocess.Popen[bytes]) -> None:
    server.send_signal(signal.SIGINT)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def parse_server_timing(header: str) -> dict[str, float]:
    """``sources;dur=1.2, fusion;dur=0.3, total;dur=1.5`` → seconds per stage."""
    stages = {}
    for part in header.split(","):
        name, _, duration = part.strip().partition(";dur=")
        if duration:
            stages[name] = float(duration) / 1000
    return stages


async def drive(args: argparse.Namespace, port: int, texts: list[str]) -> Load:
    """``concurrency`` workers posting batches back to back until ``seconds`` have passed."""
    url = f"http://127.0.0.1:{port}/v1/projects/{args.project}/suggest-batch"
    batches = cycle(
        [
            {"documents": [{"text": t} for t in texts[i : i + args.batch]]}
            for i in range(0, len(texts) - args.batch + 1, args.batch)
        ]
    )
    load = Load()
    limits = httpx.Limits(max_connections=args.concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        started = time.perf_counter()
        deadline = started + args.seconds

        async def worker() -> None:
            while time.perf_counter() < deadline:
                body = next(batches)
                sent = time.perf_counter()
                response = await client.post(url, json=body)
                if response.status_code != 200:
                    load.failures += 1
                    continue
                load.latencies.append(time.perf_counter() - sent)
                load.documents += len(body["documents"])
                for stage, seconds in parse_server_timing(
                    response.headers.get("server-timing", "")
                ).items():
                    load.stages[stage] = load.stages.get(stage, 0.0) + seconds

        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        load.seconds = time.perf_counter() - started
    return load


def report(
    args: argparse.Namespace,
    load: Load,
    cli_seconds: dict[str, float],
    first_answer: dict[str, float],
) -> str:
    ms = np.asarray(load.latencies) * 1000
    total = load.stages.get("total", 0.0)
    sources = load.stages.get("sources")

    def share(seconds: float | None) -> str:
        return "–" if seconds is None or not total else f"{100 * seconds / total:.0f} %"

    fusion = load.stages.get("fusion")
    overhead = ms.sum() / 1000 - total if len(ms) else 0.0
    rows = [
        "| project | concurrency | batch | requests | failed | documents/s | p50 ms | p99 ms "
        "| sources | fusion | HTTP+JSON+queue (of latency) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {args.project} | {args.concurrency} | {args.batch} | {len(ms)} | {load.failures} "
        f"| {load.documents / load.seconds:.1f} "
        f"| {np.percentile(ms, 50):.1f} | {np.percentile(ms, 99):.1f} "
        f"| {share(sources)} | {share(fusion)} "
        f"| {100 * overhead / max(ms.sum() / 1000, 1e-9):.0f} % |",
        "",
        "| start-up (fusion run by) | numpy s | torch s | numpy / torch |",
        "|---|---:|---:|---:|",
        f"| `kuoro suggest` of one short text, end to end | {cli_seconds['numpy']:.2f} "
        f"| {cli_seconds['torch']:.2f} | {cli_seconds['numpy'] / cli_seconds['torch']:.2f} |",
        f"| `kuoro serve`: launch to first answer | {first_answer['numpy']:.2f} "
        f"| {first_answer['torch']:.2f} | {first_answer['numpy'] / first_answer['torch']:.2f} |",
        "",
        "The load test runs the default (numpy) engine.",
        "",
        f"sources / fusion: shares of the server's suggestion time (Server-Timing); "
        f"{os.cpu_count()} CPUs, {args.seconds:g} s of load.",
    ]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datadir", type=Path, required=True)
    parser.add_argument("--projects", type=Path, required=True)
    parser.add_argument("--project", required=True, help="the project to load-test")
    parser.add_argument("--corpus", type=Path, required=True, help="TSV: text<TAB>...")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--batch", type=int, default=32, help="documents per request (≤ 32)")
    parser.add_argument("--documents", type=int, default=3200, help="corpus lines to use")
    args = parser.parse_args(argv)
    texts = read_texts(args.corpus, args.documents)
    if len(texts) < args.batch:
        raise SystemExit(f"{args.corpus}: fewer than {args.batch} texts")
    time_cli_suggest(args, "torch")  # a warm-up, so that both engines find the files cached
    cli_seconds = {engine: time_cli_suggest(args, engine) for engine in ("torch", "numpy")}
    first_answer = {}
    torch_server, first_answer["torch"] = start_server(args, free_port(), "torch")
    stop_server(torch_server)
    port = free_port()
    server, first_answer["numpy"] = start_server(args, port)
    try:
        load = asyncio.run(drive(args, port, texts))
    finally:
        stop_server(server)
    if not load.latencies:
        raise SystemExit(f"no request succeeded ({load.failures} failed)")
    print(report(args, load, cli_seconds, first_answer))


if __name__ == "__main__":
    main()
