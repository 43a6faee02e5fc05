"""The README states what the code does: its parameter table is the catalogue's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kuoro.config.backends import parameter_table

from support.data import SHARED_DATA, requires_shared_data

pytestmark = pytest.mark.integration  # the README's commands run as a user runs them

README = Path(__file__).resolve().parents[1] / "README.md"


def test_parameter_table_matches_the_catalogue() -> None:
    text = README.read_text(encoding="utf-8")
    start = text.index("<!-- parameter-table:start -->\n") + len("<!-- parameter-table:start -->\n")
    end = text.index("\n<!-- parameter-table:end -->")
    assert text[start:end] == parameter_table(), (
        "README's parameter table is out of date; regenerate it from "
        "kuoro.config.backends.parameter_table()"
    )


def test_readme_opens_with_the_two_commands() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    block = lines[lines.index("```sh") + 1 : lines.index("```", lines.index("```sh") + 1)]
    assert [line.split()[0] for line in block] == ["scripts/demo", "scripts/test"]
    root = README.parent
    assert all((root / line.split()[0]).is_file() for line in block)


def _example_session() -> list[tuple[str, list[str]]]:
    """The README's example session: each command with the output lines it shows."""
    text = README.read_text(encoding="utf-8")
    block = text[text.index("## An example session") :]
    block = block[block.index("```console\n") + len("```console\n") :]
    block = block[: block.index("```")]
    session: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            session.append((line[2:], []))
        else:
            session[-1][1].append(line)
    return session


def _shown_in(expected: list[str], output: str) -> None:
    """Each line shown is in the output; "..." in a line stands for the rest of it."""
    lines = output.splitlines()
    for shown in expected:
        if shown == "...":
            continue
        head = shown.split("...")[0]
        assert any(line == shown or ("..." in shown and line.startswith(head)) for line in lines), (
            f"README shows {shown!r}; the command printed:\n{output}"
        )


@requires_shared_data
def test_the_example_session_runs_as_written(tmp_path: Path) -> None:
    # A checkout beside ../shared, as the session expects, with the real environment.
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / ".venv").symlink_to(README.parent / ".venv")
    (checkout / "examples").symlink_to(README.parent / "examples")
    (tmp_path / "shared").symlink_to(SHARED_DATA.parent)
    session = _example_session()
    marker = "=== kuoro readme session ==="
    script = "set -e\n" + "".join(f"echo '{marker}'\n{command}\n" for command, _ in session)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUORO_")}
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=checkout,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # what a terminal shows: both, in order
        text=True,
    )
    assert done.returncode == 0, done.stdout
    outputs = done.stdout.split(marker + "\n")[1:]
    assert len(outputs) == len(session)
    for (_, expected), output in zip(session, outputs, strict=True):
        _shown_in(expected, output)


def test_the_public_api_is_what_all_lists_and_loads_lazily() -> None:
    code = (
        "import sys, kuoro; names = kuoro.__all__; "
        "assert not {'torch', 'sklearn', 'fasttext', 'omikuji'} & set(sys.modules), 'heavy'; "
        "missing = [n for n in names if getattr(kuoro, n, None) is None]; "
        "assert not missing, missing; print(len(names))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) >= 20


@requires_shared_data
def test_the_python_api_example_runs_as_written() -> None:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Python API") :]
    start = section.index("```python\n") + len("```python\n")
    code = section[start : section.index("```", start)]
    # Run from the checkout, whose neighbour ../shared/data the example reads.
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=README.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["tfidf", "lexical", "fusion"]
    scores = {line.split()[0]: float(line.split()[2]) for line in lines[1:]}
    # The fusion of the two sources is better than either alone on these test documents.
    assert scores["fusion"] > max(scores["tfidf"], scores["lexical"])
