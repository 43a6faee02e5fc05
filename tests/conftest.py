"""Shared test helpers: where the real data sets are, and a marker for tests that need them."""

from __future__ import annotations

from pathlib import Path

import pytest

# The data lives beside the checkout (../shared/data), never inside the repository.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

requires_shared_data = pytest.mark.skipif(
    not SHARED_DATA.exists(),
    reason="../shared/data not found: real-data tests need the shared data beside the checkout",
)
