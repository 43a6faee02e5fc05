"""The report's reliability diagram: the calibration section and its plot."""

from __future__ import annotations

import base64
import io
import re
from types import SimpleNamespace
from typing import Any

import numpy as np
from matplotlib.image import imread

from kuoro.evaluation.report.html import SECTIONS, _calibration_section
from kuoro.evaluation.report.plots import plot_reliability
from kuoro.util.reliability import ReliabilityBins


def bins() -> ReliabilityBins:
    rng = np.random.default_rng(0)
    scores = rng.uniform(size=2000)
    found = ReliabilityBins()
    found.update(scores, rng.uniform(size=2000) < scores**2)
    return found


def gathered(reliability: ReliabilityBins | None, manifest: dict[str, Any]) -> Any:
    return SimpleNamespace(evaluation=SimpleNamespace(reliability=reliability), manifest=manifest)


def test_the_reliability_diagram_is_drawn() -> None:
    plot = plot_reliability(bins(), limit=10)
    assert plot.uri.startswith("data:image/png;base64,") and "reliability" in plot.alt
    pixels = imread(io.BytesIO(base64.b64decode(plot.uri.split(",", 1)[1])), format="png")
    rgb = pixels[..., :3].astype(float)
    assert pixels.shape[1] >= 600 and ((rgb.max(axis=-1) - rgb.min(axis=-1)) > 0.25).sum() > 2000


def test_the_section_names_the_error_and_the_calibration() -> None:
    assert ("calibration", "Scores as probabilities") in SECTIONS
    found = bins()
    manifest = {"kind": "fusion", "training": {"calibration": {"method": "platt"}}}
    html = _calibration_section(gathered(found, manifest), 10)
    assert len(re.findall(r"<img ", html)) == 1
    assert f"{found.ece():.4f}" in html and "calibrated (platt)" in html
    assert "each document's 10 best" in html
    old = _calibration_section(gathered(found, {"kind": "fusion", "training": {}}), 10)
    assert "saved without a calibration" in old
    source = _calibration_section(gathered(found, {"kind": "source"}), 10)
    assert "only fusion models are calibrated" in source
    empty = _calibration_section(gathered(ReliabilityBins(), manifest), 10)
    assert "<img" not in empty and "Nothing was suggested" in empty
