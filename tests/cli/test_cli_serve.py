"""``kuoro serve``'s options: the access log, and the learn token kept off the command line."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

import kuoro.server.app
from kuoro.cli import main

from support.data import REPO

README = REPO / "README.md"


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    """What `kuoro serve` hands uvicorn, without serving."""
    import uvicorn

    seen: dict[str, Any] = {}
    monkeypatch.setattr(kuoro.server.app, "create_app", lambda *args, **kwargs: "app")
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: seen.update(kwargs))
    (tmp_path / "projects.toml").write_text("", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return seen


def test_access_log_is_on_by_default(served: dict[str, Any]) -> None:
    assert main(["serve"]) == 0
    assert served["access_log"] is True and served["log_level"] == "info"
    assert main(["serve", "--no-access-log"]) == 0
    assert served["access_log"] is False


def test_learn_token_is_read_from_the_environment(
    served: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(kuoro.server.app, "create_app", lambda *args, **kwargs: seen.update(kwargs))
    monkeypatch.setenv("KUORO_LEARN_TOKEN", "s3cret")
    assert main(["serve"]) == 0
    assert seen["learn_token"] == "s3cret"
    capsys.readouterr()
    assert main(["serve", "--help"]) == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "KUORO_LEARN_TOKEN" in help_text and "(ps)" in help_text


def test_readme_never_puts_a_learn_token_on_the_command_line() -> None:
    text = README.read_text(encoding="utf-8")
    assert "KUORO_LEARN_TOKEN" in text
    # `--learn-token` may be named, never given a value in an example.
    assert not re.search(r"--learn-token[ =](?!\))[^\s`|\]]", text), "a token in `ps`"
