"""Every error a user can cause is one line that names what is wrong, never an internal error.

The cases are those a hostile tester found answered with "internal error" or several lines:
usage errors, a missing corpus of a fusion project, tampered model files, a search storage that
is not SQLite, a JSONL line nested too deeply, a full disk.
"""

from __future__ import annotations

import hashlib
import json
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from kuoro.cli import main
from kuoro.corpus.documents import Corpus
from kuoro.vocab.vocabulary import Vocabulary

from support.data import requires_shared_data
from support.workspace import kuoro, make_workspace

PROJECTS = """
[tfidf]
language = "fi"
vocab = "arch"
backend = "tfidf"
analyzer = "snowball(finnish)"
min_df = 1

[fusion]
language = "fi"
vocab = "arch"
backend = "kuoro"
sources = "tfidf"
max_epochs = 2
hidden_size = 8
"""


def run(work: Path, *args: str, **options: object) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "kuoro.cli", *kuoro(work, *args)]
    return subprocess.run(
        command, input="kivikausi", capture_output=True, text=True, check=False, **options
    )  # type: ignore[call-overload]


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    lines = [
        line for line in result.stderr.strip().splitlines() if not line.startswith("kuoro: WARN")
    ]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("kuoro: ") and "internal error" not in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ("train",),
            "kuoro: usage error: Missing argument 'PROJECT_ID' (see 'kuoro train --help')",
        ),
        (("eval", "x", "y", "--bogus"), "No such option '--bogus'"),
        (("bogus",), "kuoro: usage error: No such command 'bogus' (see 'kuoro --help')"),
        (("eval", "x", "y", "--limit", "0"), "Invalid value for '--limit'"),
    ],
)
def test_usage_errors_are_one_line(
    args: tuple[str, ...], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(list(args)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err


def test_a_jsonl_line_nested_too_deeply_is_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    vocab = Vocabulary("v", ["http://x/a"], {"en": ["a"]})
    deep = '{"text": "x", "subjects": ' + "[" * 200_000 + "]" * 200_000 + "}"
    good = json.dumps({"text": "a text", "subjects": [{"uri": "http://x/a"}]})
    (tmp_path / "c.jsonl").write_text(f"{deep}\n{good}\n", encoding="utf-8")
    corpus = Corpus(tmp_path / "c.jsonl", vocab)
    assert [d.text for d in corpus] == ["a text"]
    assert corpus.report.skipped == {"invalid JSON": 1}
    assert "c.jsonl:1: invalid JSON (nested too deeply); skipped" in caplog.text


@requires_shared_data
@pytest.mark.integration
class TestOnATrainedWorkspace:
    @pytest.fixture(scope="class")
    def workspace(self, tmp_path_factory: pytest.TempPathFactory) -> Path:
        work = tmp_path_factory.mktemp("errors")
        return make_workspace(work, PROJECTS, sources=("tfidf",), fusion=("fusion",))

    @pytest.fixture
    def work(self, workspace: Path, tmp_path: Path) -> Path:
        shutil.copytree(workspace, tmp_path / "w")
        return tmp_path / "w"

    def test_a_missing_corpus_is_named(self, work: Path) -> None:
        for project_id in ("tfidf", "fusion"):
            line = one_error_line(run(work, "train", project_id, str(work / "nope.tsv")))
            assert line == f"kuoro: error: {work / 'nope.tsv'}: no such file or directory"

    def test_a_search_storage_that_is_not_sqlite_is_refused(self, work: Path) -> None:
        storage = work / "notes.txt"
        storage.write_text("my notes, not a database\n")
        for args in (
            ("hyperopt", "fusion", str(work / "fusion.tsv"), "--trials", "1"),
            ("report", "fusion", str(work / "fusion.tsv"), "-o", str(work / "r.html")),
        ):
            line = one_error_line(run(work, *args, "--storage", str(storage)))
            assert f"the hyperopt storage {storage} is not an SQLite database" in line
        assert storage.read_text() == "my notes, not a database\n"

    def test_a_full_disk_names_the_path_and_keeps_the_model(self, work: Path) -> None:
        pointer = work / "data" / "projects" / "tfidf" / "CURRENT"
        before = pointer.read_text()

        def small_files() -> None:  # as a full disk does, writes past 20 kB fail
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

        result = run(work, "train", "tfidf", str(work / "sources.tsv"), preexec_fn=small_files)
        line = one_error_line(result)
        assert "cannot write the model to " + str(pointer.parent) in line
        assert line.endswith("File too large")
        assert pointer.read_text() == before
        assert run(work, "suggest", "tfidf").returncode == 0

    @pytest.mark.parametrize(
        ("case", "message"),
        [
            ("manifest without model", "'model' is missing or of the wrong type"),
            ("manifest vocabulary", "'vocabulary' is missing or of the wrong type"),
            ("manifest source", "'sources[0].weight' is missing or of the wrong type"),
            ("manifest files", "'files' is missing or of the wrong type"),
            ("same size, other bytes", "is damaged (its contents changed since it was written)"),
            ("prior shape", "prior.npz: counts of shape (3, 3)"),
            ("fusion array rank", "the array 'concept_bias' has shape (7, 3, 2), expected"),
            ("split positions", "split.npz: positions outside the store's"),
        ],
    )
    def test_tampered_model_files_are_one_clear_line(
        self, work: Path, case: str, message: str
    ) -> None:
        version = work / "data" / "projects" / "fusion"
        version /= (version / "CURRENT").read_text().strip()
        manifest = json.loads((version / "manifest.json").read_text())
        TAMPERING[case](version, manifest)
        (version / "manifest.json").write_text(json.dumps(manifest))
        command = ["learn", "fusion", str(work / "sources.tsv")]
        if not case.startswith("split"):
            command = ["suggest", "fusion"]
        assert message in one_error_line(run(work, *command))


def _rewrite(version: Path, manifest: dict, name: str, write: Callable[[Path], None]) -> None:
    """Replace a model file and record it in the manifest, as a careful tamperer would."""
    write(version / name)
    data = (version / name).read_bytes()
    manifest["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _new_fusion_npz(version: Path, manifest: dict) -> None:
    with np.load(version / "fusion.npz") as npz:
        arrays = dict(npz)
    arrays["concept_bias"] = np.zeros((7, 3, 2), np.float32)
    _rewrite(version, manifest, "fusion.npz", lambda p: np.savez(p, **arrays))


def _flip_bytes(version: Path, manifest: dict) -> None:
    path = version / "fusion.npz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


TAMPERING: dict[str, Callable[[Path, dict], None]] = {
    "manifest without model": lambda v, m: m.pop("model"),
    "manifest vocabulary": lambda v, m: m.update(vocabulary="yso"),
    "manifest source": lambda v, m: m["sources"][0].pop("weight"),
    "manifest files": lambda v, m: m.update(files=[]),
    "same size, other bytes": _flip_bytes,
    "prior shape": lambda v, m: _rewrite(
        v, m, "prior.npz", lambda p: np.savez(p, counts=np.zeros((3, 3)))
    ),
    "fusion array rank": _new_fusion_npz,
    "split positions": lambda v, m: _rewrite(
        v, m, "split.npz", lambda p: np.savez(p, train=np.array([10**9]), validation=[-5])
    ),
}
