"""What projects give back: ranked suggestions and the summary of a training run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Suggestion:
    """One suggested subject, as Kuoro prints it and the REST API returns it."""

    uri: str
    label: str | None
    notation: str | None
    score: float


@dataclass(frozen=True)
class TrainingSummary:
    """What a training run did: its documents and time, the model version it wrote, and for
    a fusion model a line on its training (held-out documents, epochs, scores). A source's
    reading of its corpus is logged as it happens, so it has no such line."""

    documents: int
    seconds: float
    model_dir: Path
    report: str | None
