"""A hyperparameter search as it is kept: where, its state summed up (best and baseline
trials, parameter importances), read back without running anything, and its best parameters
as a projects.toml table."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from kuoro.errors import KuoroError

if TYPE_CHECKING:
    from kuoro.project.project import Project

# Parameter importances are read from this many completed trials on. They come from a random
# forest fitted to the trials' scores (fANOVA); below this, with up to eight parameters
# searched, any share is as good a fit as another. It is the number of trials Optuna's TPE
# sampler itself draws at random before it models the score, for the same reason.
MIN_IMPORTANCE_TRIALS = 10
BASELINE = "baseline"  # user attribute marking the trial of the configured parameters


@dataclass(frozen=True)
class HyperoptResult:
    """Where a search stands: the best trial, the baseline, and what mattered."""

    project_id: str
    storage: Path
    best_params: dict[str, Any]  # the searched parameters of the best trial
    best_value: float  # its held-out nDCG@10
    best_trial: int
    baseline_params: dict[str, Any]  # the configured values, as the search entered them
    baseline_value: float | None  # None while the baseline has not completed
    importances: dict[str, float] = field(default_factory=dict)  # parameter → share, sum 1
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    trials_run: int = 0  # by the call that returned this result

    @property
    def improvement(self) -> float | None:
        """The best value less the baseline's."""
        return None if self.baseline_value is None else self.best_value - self.baseline_value


def default_storage(project: Project) -> Path:
    """Where a project's search is kept unless ``--storage`` says otherwise."""
    return project.datadir.hyperopt_storage(project.project_id)


_SQLITE_MAGIC = b"SQLite format 3\x00"


def check_storage(storage: Path) -> None:
    """Refuse a search storage that exists but is not an SQLite database (SQLAlchemy's own
    error on such a file is a page of SQL)."""
    try:
        with storage.open("rb") as f:
            head = f.read(len(_SQLITE_MAGIC))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise KuoroError(f"cannot read the hyperopt storage {storage}: {exc.strerror}") from exc
    if head and head != _SQLITE_MAGIC:
        raise KuoroError(
            f"the hyperopt storage {storage} is not an SQLite database; give another --storage "
            "file (a new one is created)"
        )


def summarize(study: optuna.Study, storage: Path, *, seed: int = 0) -> HyperoptResult:
    """The state of ``study``: best and baseline trials, counts, parameter importances."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise KuoroError(f"no trial of the search '{study.study_name}' has completed yet")
    best = max(complete, key=lambda t: (t.value, -t.number))
    baseline = next((t for t in complete if t.user_attrs.get(BASELINE)), None)
    if baseline is None:
        queued = [t for t in study.trials if t.user_attrs.get(BASELINE)]
        baseline_params = dict(queued[0].params) if queued else {}
    else:
        baseline_params = dict(baseline.params)
    states = [t.state for t in study.get_trials(deepcopy=False)]
    return HyperoptResult(
        project_id=study.study_name,
        storage=storage,
        best_params=dict(best.params),
        best_value=float(best.value),  # type: ignore[arg-type]
        best_trial=best.number,
        baseline_params=baseline_params,
        baseline_value=None if baseline is None else float(baseline.value),  # type: ignore[arg-type]
        importances=importances(study, complete, seed=seed),
        complete=len(complete),
        pruned=states.count(TrialState.PRUNED),
        failed=states.count(TrialState.FAIL),
    )


def importances(
    study: optuna.Study, complete: Sequence[FrozenTrial] | None = None, *, seed: int = 0
) -> dict[str, float]:
    """Each parameter's share of the variation of the score (fANOVA); {} with fewer than
    ``MIN_IMPORTANCE_TRIALS`` completed trials, or when their scores do not differ."""
    if complete is None:
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < MIN_IMPORTANCE_TRIALS or len({t.value for t in complete}) < 2:
        return {}
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
    try:
        found = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (RuntimeError, ValueError):  # e.g. no parameter varied across the trials
        return {}
    return {k: float(v) for k, v in found.items() if math.isfinite(v)}


def load_search(storage: Path, project_id: str) -> tuple[HyperoptResult, list[FrozenTrial]] | None:
    """A stored search and its trials, without running anything; None if there is none."""
    if not storage.is_file():
        return None
    check_storage(storage)
    try:
        study = optuna.load_study(study_name=project_id, storage=f"sqlite:///{storage.resolve()}")
    except KeyError:
        return None
    except Exception as exc:  # a database of another Optuna version, or a damaged one
        raise KuoroError(f"cannot read the hyperopt storage {storage}: {exc}") from exc
    try:
        return summarize(study, storage), study.get_trials()
    except KuoroError:
        return None


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"TOML has no place for {value} in a projects.toml")
        shown = f"{value:.4g}"
        # TOML needs a fractional part or an exponent to read a float as one.
        return shown if any(c in shown for c in ".e") else shown + ".0"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def format_toml_snippet(
    project_id: str, params: Mapping[str, object], *, comment: str | None = None
) -> str:
    """``params`` as a projects.toml table ``[project_id]``; floats to 4 significant digits."""
    key = project_id if _BARE_KEY.fullmatch(project_id) else json.dumps(project_id)
    lines = [f"# {line}" for line in (comment.splitlines() if comment else [])]
    lines.append(f"[{key}]")
    lines.extend(f"{name} = {_toml_value(value)}" for name, value in params.items())
    return "\n".join(lines) + "\n"
