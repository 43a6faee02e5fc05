"""Shared test helpers: where the real data sets are, and a marker for tests that need them."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

# The data lives beside the checkout (../shared/data), never inside the repository.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

requires_shared_data = pytest.mark.skipif(
    not SHARED_DATA.exists(),
    reason="../shared/data not found: real-data tests need the shared data beside the checkout",
)


def load_benchmark(name: str) -> ModuleType:
    """Import a script of ``benchmarks/`` (not a package) as a module, e.g. the generator."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def torch_one_thread() -> Iterator[None]:
    """Run a module's torch work on one thread: its tensors are tiny, and on a busy 2-core
    machine torch's thread pool costs many times the work itself."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
