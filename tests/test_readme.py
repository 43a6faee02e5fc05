"""The README states what the code does: its parameter table is the catalogue's."""

from __future__ import annotations

from pathlib import Path

from kuoro.backends import parameter_table

README = Path(__file__).resolve().parents[1] / "README.md"


def test_parameter_table_matches_the_catalogue() -> None:
    text = README.read_text(encoding="utf-8")
    start = text.index("<!-- parameter-table:start -->\n") + len("<!-- parameter-table:start -->\n")
    end = text.index("\n<!-- parameter-table:end -->")
    assert text[start:end] == parameter_table(), (
        "README's parameter table is out of date; regenerate it from "
        "kuoro.backends.parameter_table()"
    )


def test_readme_opens_with_the_two_commands() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    block = lines[lines.index("```sh") + 1 : lines.index("```", lines.index("```sh") + 1)]
    assert [line.split()[0] for line in block] == ["scripts/demo", "scripts/test"]
    root = README.parent
    assert all((root / line.split()[0]).is_file() for line in block)
