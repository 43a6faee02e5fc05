"""Schemathesis fuzzes every operation of the REST API against the app's own OpenAPI spec.

No answer may be a server error or break the spec (status, content type, headers, body schema).
The app runs in process over ASGI; the project ids come mostly from the configured projects
(public, hidden and private) so that the fuzzed requests reach the suggestion code.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

from kuoro.cli import main
from kuoro.config.projects import load_projects
from kuoro.project.datadir import DataDir
from kuoro.server.app import create_app

from support.data import SHARED_DATA, requires_shared_data

pytestmark = pytest.mark.integration  # fuzzes every operation: hundreds of requests

ARCH = SHARED_DATA / "archaeology"
PROJECTS = """
[arch-tfidf]
language = "fi"
vocab = "arch"
backend = "tfidf"
min_df = 1

[arch-hidden]
language = "fi"
vocab = "arch"
backend = "tfidf"
analyzer = "snowball(finnish)"
access = "hidden"
allow_learn = true

[arch-private]
language = "fi"
vocab = "arch"
backend = "tfidf"
access = "private"
"""
# What the fuzzer uses as project ids, mostly: (an untrained project would rightly answer 503,
# which test_server.py covers; here every 5xx is a failure).
SERVED = ["arch-tfidf", "arch-hidden", "arch-private"]
EXAMPLES = 25  # per operation and mode: 8 operations, two modes, well under a minute


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> schemathesis.BaseSchema:
    work = tmp_path_factory.mktemp("schema")
    (work / "projects.toml").write_text(PROJECTS, encoding="utf-8")
    lines = (ARCH / "documents.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    (work / "train.tsv").write_text("".join(lines[:1000]), encoding="utf-8")
    base = ["--datadir", str(work / "data"), "--projects", str(work / "projects.toml")]
    assert main([*base, "load-vocab", "arch", str(ARCH / "yso-archaeology.ttl"), "-l", "fi"]) == 0
    for project_id in SERVED:
        assert main([*base, "train", project_id, str(work / "train.tsv")]) == 0
    # A token the fuzzer does not know: learn answers 403 (or 400/404 before that).
    app = create_app(
        DataDir(work / "data"),
        load_projects(work / "projects.toml"),
        learn_token="not-guessable",
    )
    config = schemathesis.Config.from_dict(
        {
            "seed": 1,
            "dictionaries": {
                "projects": {"values": SERVED},
                "languages": {"values": ["fi", "en", "sv"]},
            },
            "parameters": {
                "path.project_id": {"dictionary": "projects", "probability": 0.8},
                # A language the vocabulary lacks is rightly a 400 (test_server.py checks it),
                # which the fuzzer would take for valid input rejected.
                "query.language": {"dictionary": "languages"},
                "body.language": {"dictionary": "languages"},
            },
        }
    )
    return schemathesis.openapi.from_asgi("/openapi.json", app, config=config)


# One generated request per example: valid ones (positive) and deliberately invalid ones
# (negative, which must get a 4xx). schemathesis.pytest.from_fixture would do this loop, but it
# needs a private attribute of pytest that pytest 9 no longer has.
MODES = [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]


@requires_shared_data
@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
def test_api_conforms_to_its_spec(
    api_schema: schemathesis.BaseSchema, mode: schemathesis.GenerationMode
) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) == 8
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate()

        try:
            check()
        except Unsatisfiable:
            # No invalid request exists: no input (GET /health) or only a string in the path.
            assert mode == schemathesis.GenerationMode.NEGATIVE, operation.label
        except Exception as exc:
            exc.add_note(f"operation: {operation.label} ({mode.value})")
            raise


@requires_shared_data
def test_the_spec_documents_problems_and_no_422(api_schema: schemathesis.BaseSchema) -> None:
    spec = api_schema.raw_schema
    suggest = spec["paths"]["/v1/projects/{project_id}/suggest"]["post"]["responses"]
    assert set(suggest) == {"200", "400", "404", "413", "503"}
    assert set(suggest["404"]["content"]) == {"application/problem+json"}
    batch = spec["paths"]["/v1/projects/{project_id}/suggest-batch"]["post"]
    body = batch["requestBody"]["content"]["application/json"]["schema"]["$ref"].split("/")[-1]
    assert spec["components"]["schemas"][body]["properties"]["documents"]["maxItems"] == 32
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    learn = spec["paths"]["/v1/projects/{project_id}/learn"]["post"]
    assert "403" in learn["responses"] and learn["security"]


def test_nothing_here_needs_the_network(tmp_path: Path) -> None:
    # The app is reached over ASGI in process: creating one needs no model and no port.
    app = create_app(DataDir(tmp_path), {})
    assert schemathesis.openapi.from_asgi("/openapi.json", app).raw_schema["paths"]
