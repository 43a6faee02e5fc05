"""A self-contained HTML report on a trained project and an evaluation corpus: ``kuoro report``.

One pass over the corpus gathers everything (``gather``): the metrics ``kuoro eval`` prints,
precision and recall over a grid of limits and thresholds, per-subject results, the documents
ranked worst and, for a fusion project, what each source contributes (its learnt gate
weight, its share of the final top 5, its score alone). The training curves come from the
model's ``history.jsonl``, the hyperparameter importances from the project's hyperopt storage
when a search was run. Plots are matplotlib PNGs embedded as data URIs (``plots``) in one page
(``html``): the file needs nothing else.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

from kuoro.evaluation.report.gather import WORST_DOCUMENTS, gather
from kuoro.evaluation.report.html import SECTIONS, render
from kuoro.project.batch import Engine
from kuoro.project.project import Project
from kuoro.util.atomic import atomic_write

__all__ = ["SECTIONS", "WORST_DOCUMENTS", "write_report"]

log = logging.getLogger(__name__)


def write_report(
    project: Project,
    corpus_paths: Sequence[Path],
    output: Path,
    *,
    limit: int = 10,
    jobs: int = 1,
    progress: bool = False,
    storage: Path | None = None,
    engine: Engine | None = None,
) -> Path:
    """Evaluate ``project`` on the corpora and write the HTML report to ``output``.

    ``storage``: the hyperopt storage to read (default: the project's, if it exists).
    ``engine``: what runs the project's sources (default: ``jobs`` local processes).
    """
    started = time.perf_counter()
    gathered = gather(
        project,
        corpus_paths,
        limit=limit,
        jobs=jobs,
        progress=progress,
        storage=storage,
        engine=engine,
    )
    log.info("evaluated in %.1f s", time.perf_counter() - started)
    page = render(project, gathered, corpus_paths, limit)
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(output) as out:
        out.write(page.encode("utf-8"))
    return output
