"""Base indexing models ("sources") whose suggestions Kuoro fuses."""

from __future__ import annotations

from kuoro.sources.base import Source, rows_to_csr, top_k_rows

__all__ = ["Source", "rows_to_csr", "top_k_rows"]
