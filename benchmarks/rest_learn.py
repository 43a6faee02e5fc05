"""How long a client waits on the REST API's ``learn``, and what it does to the model.

Usage:
    python benchmarks/rest_learn.py --datadir DIR --projects FILE --project yso-kuoro-fi \
        --learn ../shared/data/kirjastonhoitaja/validate.tsv \
        --test ../shared/data/kirjastonhoitaja/test.tsv [--sizes 2 32]

DIR holds a trained fusion project (e.g. the data directory ``scripts/demo`` fills; the
project's sources must be trained there too). It is copied for each run, so it is never
changed. For each size N, in a fresh copy: a real ``kuoro serve`` (a subprocess, with a learn
token from the environment) answers ``POST /v1/projects/PROJECT/learn`` with the first N
documents of ``--learn``, timed from the request to the 204; then the same documents go to
``kuoro learn`` (the thorough path: every original document replayed, up to ``max_epochs``),
timed the same way, in another copy. The table gives both times, their ratio, and the test
nDCG@10 before and after each.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import tomli_w

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kuoro.config.projects import load_projects
from kuoro.corpus.documents import Corpus
from kuoro.evaluation.evaluate import evaluate, suggestion_batches
from kuoro.project.datadir import DataDir
from kuoro.project.project import Project
from startup import free_port  # a free local port

TOKEN = "benchmark-token"


def test_ndcg(datadir: Path, projects_file: Path, project_id: str, test: Path) -> float:
    projects = load_projects(projects_file)
    project = Project(projects[project_id], DataDir(datadir), projects)
    documents = Corpus([test], project.vocabulary, language=project.config.language)
    return evaluate(suggestion_batches(project, documents), limit=10)["NDCG@10"]


def documents(path: Path, count: int) -> list[dict[str, Any]]:
    """The first ``count`` documents of a short-text TSV as the REST API's learn body."""
    found = []
    for line in path.read_text(encoding="utf-8").splitlines():
        text, _, refs = line.partition("\t")
        if text.strip() and refs.strip():
            uris = [ref.strip().strip("<>") for ref in refs.split()]
            found.append({"text": text, "subjects": [{"uri": uri} for uri in uris]})
        if len(found) == count:
            break
    return found


def rest_learn(datadir: Path, projects_file: Path, project_id: str, body: list[Any]) -> float:
    """Seconds from sending the learn request to its answer, on a server that is ready."""
    port = free_port()
    env = {
        **os.environ,
        "KUORO_DATADIR": str(datadir),
        "KUORO_PROJECTS": str(projects_file),
        "KUORO_LEARN_TOKEN": TOKEN,
    }
    command = [sys.executable, "-m", "kuoro.cli", "-q", "serve", "--port", str(port)]
    server = subprocess.Popen(command, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while True:
            try:
                health = httpx.get(f"{base}/health", timeout=5).json()
                if health["projects"][project_id]["status"] == "ready":
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the server did not become ready")
            time.sleep(0.2)
        started = time.perf_counter()
        answer = httpx.post(
            f"{base}/v1/projects/{project_id}/learn",
            json=body,
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=3600,
        )
        seconds = time.perf_counter() - started
        if answer.status_code != 204:
            raise SystemExit(f"learn answered {answer.status_code}: {answer.text}")
        return seconds
    finally:
        server.terminate()
        server.wait()


def cli_learn(datadir: Path, projects_file: Path, project_id: str, corpus: Path) -> float:
    env = {**os.environ, "KUORO_DATADIR": str(datadir), "KUORO_PROJECTS": str(projects_file)}
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "kuoro.cli", "-q", "learn", project_id, str(corpus)],
        env=env,
        check=True,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datadir", type=Path, required=True)
    parser.add_argument("--projects", type=Path, required=True)
    parser.add_argument("--project", required=True)
    parser.add_argument("--learn", type=Path, required=True)
    parser.add_argument("--test", type=Path, required=True)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2, 32])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kuoro-rest-learn-") as scratch:
        work = Path(scratch)
        tables = tomllib.loads(args.projects.read_text(encoding="utf-8"))
        tables[args.project]["allow_learn"] = True
        projects_file = work / "projects.toml"
        projects_file.write_text(tomli_w.dumps(tables), encoding="utf-8")
        before = test_ndcg(args.datadir, projects_file, args.project, args.test)
        rows = []
        for size in args.sizes:
            body = documents(args.learn, size)
            corpus = work / f"learn-{size}.tsv"
            corpus.write_text(
                "".join(
                    f"{d['text']}\t{' '.join('<' + s['uri'] + '>' for s in d['subjects'])}\n"
                    for d in body
                ),
                encoding="utf-8",
            )
            result: dict[str, tuple[float, float]] = {}
            for mode in ("REST learn (quick)", "kuoro learn (thorough)"):
                copy = work / "data"
                shutil.rmtree(copy, ignore_errors=True)
                shutil.copytree(args.datadir, copy)
                if mode.startswith("REST"):
                    seconds = rest_learn(copy, projects_file, args.project, body)
                else:
                    seconds = cli_learn(copy, projects_file, args.project, corpus)
                result[mode] = (seconds, test_ndcg(copy, projects_file, args.project, args.test))
            rows.append((size, result))
    print(f"Project {args.project}; test nDCG@10 before learning: {before:.4f}\n")
    print("| documents | REST learn (quick) s | kuoro learn (thorough) s | quick / thorough "
          "| test nDCG@10 after quick | after thorough |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|")
    for size, result in rows:
        quick, thorough = result["REST learn (quick)"], result["kuoro learn (thorough)"]
        print(
            f"| {size} | {quick[0]:.1f} | {thorough[0]:.1f} | {quick[0] / thorough[0]:.2f} "
            f"| {quick[1]:.4f} | {thorough[1]:.4f} |"
        )


if __name__ == "__main__":
    main()
