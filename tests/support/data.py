"""Where the real data sets are, a marker for tests that need them, and the benchmark scripts."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

# The repository: tests/support/data.py is two folders below it.
REPO = Path(__file__).resolve().parents[2]

# The data lives beside the checkout (../shared/data), never inside the repository.
SHARED_DATA = REPO.parent / "shared" / "data"

requires_shared_data = pytest.mark.skipif(
    not SHARED_DATA.exists(),
    reason="../shared/data not found: real-data tests need the shared data beside the checkout",
)


def load_benchmark(name: str) -> ModuleType:
    """Import a script of ``benchmarks/`` (not a package) as a module, e.g. the generator."""
    path = REPO / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
