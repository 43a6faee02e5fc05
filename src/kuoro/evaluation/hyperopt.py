"""Hyperparameter search for fusion projects with Optuna: ``kuoro hyperopt``.

Every trial trains the project's fusion model on the cached suggestion store with other
hyperparameters and is scored by its nDCG@10 on the held-out split: the same documents for
every trial (the project's ``seed`` fixes the split), so trials compare fairly. Hopeless
trials are pruned after a few epochs (median rule). The first trial is the configured
parameters, the baseline the best trial is compared with.

The study lives in SQLite (``datadir/projects/ID.hyperopt.sqlite3`` by default), named after
the project: a rerun continues it. ``trials`` is the number of finished (complete or pruned)
trials the study should hold, counting earlier runs, so that rerunning an interrupted command
finishes the search and a larger ``trials`` extends it. One run per study at a time: a trial
left running by a killed run is marked failed when the next run starts (and the baseline
run again if it was that one). A study refuses to continue on other data (a retrained
source, another corpus) or with other fixed parameters (``max_epochs``, ``patience``...),
since its scores would not compare.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
    json_to_distribution,
)
from optuna.trial import TrialState
from tqdm import tqdm

from kuoro.errors import KuoroError
from kuoro.evaluation.search_results import (
    BASELINE,
    HyperoptResult,
    check_storage,
    default_storage,
    summarize,
)
from kuoro.fusion.fit import fit_fusion
from kuoro.project.batch import Engine
from kuoro.project.cooccurrence_files import table_for_training
from kuoro.project.fusion_kind import FusionKind
from kuoro.project.fusion_stores import training_context, training_stores
from kuoro.training.callbacks import Callback
from kuoro.util.wording import plural

if TYPE_CHECKING:
    from kuoro.project.project import Project
    from kuoro.training.callbacks import TrainingState
    from kuoro.training.trainer import Trainer

log = logging.getLogger(__name__)

MONITOR = "ndcg@10"
_SPACE = "kuoro_search_space"  # study attributes: the search space, fixed at creation
_CONTEXT = "kuoro_context"  # ... and what every trial shares (data, fixed parameters)


def _float(low: float, high: float, log: bool = False) -> FloatDistribution:
    return FloatDistribution(low, high, log=log)


def _int(low: int, high: int, log: bool = False) -> IntDistribution:
    return IntDistribution(low, high, log=log)


# What is searched per backend. Ranges are widened to take in the configured value when it
# lies outside; ``gate_top_k`` runs up to the number of sources. Early stopping, patience,
# max_epochs and members stay as configured: they trade time for score, not one setting
# against another.
SEARCH_SPACES: Mapping[str, Mapping[str, BaseDistribution]] = {
    "kuoro": {
        "learning_rate": _float(1e-4, 3e-2, log=True),
        "hidden_size": _int(8, 256, log=True),
        "dropout": _float(0.0, 0.5),
        "weight_decay": _float(1e-7, 1e-1, log=True),
        "concept_l2": _float(1e-6, 1e-1, log=True),
        "batch_size": _int(16, 512, log=True),
        "loss": CategoricalDistribution(("bce", "listwise", "mix")),
        "gate_top_k": _int(0, 1),
    },
    "linear": {
        "learning_rate": _float(1e-4, 1e-1, log=True),
        "batch_size": _int(16, 1024, log=True),
    },
}


def _fusion(project: Project) -> FusionKind:
    """The project's fusion side; a source project cannot be tuned here."""
    if not isinstance(project.kind, FusionKind):
        raise KuoroError(
            f"project '{project.project_id}' is a source (backend '{project.config.backend}'); "
            "hyperopt tunes fusion projects"
        )
    return project.kind


def search_space(project: Project) -> dict[str, BaseDistribution]:
    """The distributions searched for ``project``, each taking in its configured value."""
    backend = project.config.backend
    _fusion(project)
    if backend not in SEARCH_SPACES:
        tunable = ", ".join(sorted(SEARCH_SPACES))
        raise KuoroError(
            f"project '{project.project_id}' uses backend '{backend}', which has no "
            f"hyperparameters to tune (tunable backends: {tunable})"
        )
    space: dict[str, BaseDistribution] = {}
    for name, dist in SEARCH_SPACES[backend].items():
        if name == "gate_top_k":
            dist = _int(0, len(project.config.sources))
        space[name] = _take_in(dist, project.config.params.get(name))
    return space


def _take_in(dist: BaseDistribution, value: object) -> BaseDistribution:
    """``dist`` widened to contain ``value`` (a log range cannot reach 0: its floor stands in)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return dist
    if isinstance(dist, FloatDistribution):
        if dist.log and value <= 0:
            return dist
        return _float(min(dist.low, float(value)), max(dist.high, float(value)), dist.log)
    if isinstance(dist, IntDistribution) and isinstance(value, int):
        if dist.log and value <= 0:
            return dist
        return _int(min(dist.low, value), max(dist.high, value), dist.log)
    return dist


def _entered(dist: BaseDistribution, value: object) -> object:
    """The configured ``value`` as a trial of ``dist`` can hold it."""
    if isinstance(dist, FloatDistribution | IntDistribution) and isinstance(value, int | float):
        return max(value, dist.low) if dist.log else value
    return value


def _suggest(trial: optuna.Trial, name: str, dist: BaseDistribution) -> Any:
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, log=dist.log, step=dist.step)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, log=dist.log, step=dist.step)
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    raise TypeError(f"unsupported distribution {dist!r}")


class PruningCallback(Callback):
    """A training callback that reports each epoch's held-out nDCG@10 to an Optuna trial and
    ends the trial (``optuna.TrialPruned``) when the pruner gives up on it.

    ``prune=False`` reports without ever pruning (the baseline must finish to be compared).
    """

    order = 50  # after early stopping, so that an epoch that ends training is still reported

    def __init__(self, trial: optuna.Trial, *, prune: bool = True) -> None:
        self.trial = trial
        self.prune = prune

    def on_epoch_end(self, trainer: Trainer, state: TrainingState) -> None:
        value = state.metrics.get(MONITOR)
        if value is None or not math.isfinite(value):
            return
        self.trial.report(value, state.epoch)
        if self.prune and self.trial.should_prune():
            raise optuna.TrialPruned(f"nDCG@10 {value:.4f} at epoch {state.epoch}")


class TrialProgress(Callback):
    """A progress bar per trial while it trains (on standard error, when progress is on):
    its epochs, and the held-out nDCG@10 of the latest and the best."""

    order = 40  # before PruningCallback, which may end the trial at this epoch

    def __init__(self, number: int, *, enabled: bool = True) -> None:
        self.number = number
        self.enabled = enabled
        self._bar: Any = None
        self._best = -math.inf

    def on_fit_start(self, trainer: Trainer, state: TrainingState) -> None:
        self.close()
        self._bar = tqdm(
            total=state.max_epochs,
            desc=f"trial {self.number}",
            unit="epoch",
            leave=False,
            file=sys.stderr,
            disable=not self.enabled,
            dynamic_ncols=True,
        )

    def on_epoch_end(self, trainer: Trainer, state: TrainingState) -> None:
        if self._bar is None:
            return
        value = state.metrics.get(MONITOR)
        if value is not None and math.isfinite(value):
            self._best = max(self._best, value)
            self._bar.set_postfix_str(f"nDCG@10 {value:.4f} (best {self._best:.4f})", False)
        self._bar.update(1)

    def on_fit_end(self, trainer: Trainer, state: TrainingState) -> None:
        self.close()

    def close(self) -> None:
        """Take the bar off the terminal (also when the trial is pruned or fails)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _context_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    changes = []
    if old.get("backend") != new["backend"]:
        changes.append(f"backend {old.get('backend')} → {new['backend']}")
    if old.get("sources") != new["sources"]:
        changes.append("other sources or source weights")
    before, after = old.get("parameters", {}), new["parameters"]
    for key in sorted(set(before) | set(after)):
        if before.get(key) != after.get(key):
            changes.append(f"{key} {before.get(key)!r} → {after.get(key)!r}")
    for what in ("data", "validation_data"):
        was, now = old.get(what) or {}, new[what] or {}
        for key in sorted(set(was) | set(now)):
            if was.get(key) != now.get(key):
                name = key.removeprefix("source:")
                changes.append(
                    f"source '{name}' retrained" if key.startswith("source:") else f"{key} changed"
                )
    return changes


def _open_study(
    storage: Path, project_id: str, seed: int, pruner: optuna.pruners.BasePruner
) -> optuna.Study:
    storage.parent.mkdir(parents=True, exist_ok=True)
    check_storage(storage)
    try:
        rdb = optuna.storages.RDBStorage(f"sqlite:///{storage.resolve()}")
    except Exception as exc:  # not a database, or one of another Optuna version
        raise KuoroError(f"cannot open the hyperopt storage {storage}: {exc}") from exc
    # A resumed search draws on from a fresh seed, not the first run's draws over again.
    done = sum(
        s.n_trials for s in optuna.get_all_study_summaries(rdb) if s.study_name == project_id
    )
    study = optuna.create_study(
        storage=rdb,
        study_name=project_id,
        direction="maximize",
        load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=seed + done),
        pruner=pruner,
    )
    # One run per study at a time: a trial still running was left so by a killed run.
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in stale:
        rdb.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
    if stale:
        log.info("%s of an interrupted run marked failed", plural(len(stale), "trial"))
    return study


def _prepare_study(
    study: optuna.Study,
    project: Project,
    space: dict[str, BaseDistribution],
    context: dict[str, Any],
) -> dict[str, BaseDistribution]:
    """Check (or record) the study's context and search space; enqueue the baseline if due.

    The search space is the one the study was created with: distributions must not change
    within a study, and the configured values the first run took in stay taken in.
    """
    attrs = study.user_attrs
    if _SPACE in attrs:
        changes = _context_changes(attrs[_CONTEXT], context)
        if changes:
            raise KuoroError(
                f"the hyperparameter search of '{project.project_id}' in its storage was run "
                f"with other data or settings ({'; '.join(changes)}); its scores would not "
                "compare: remove the storage file or pass --storage to start a new search"
            )
        space = {k: json_to_distribution(v) for k, v in attrs[_SPACE].items()}
    else:
        study.set_user_attr(_SPACE, {k: distribution_to_json(v) for k, v in space.items()})
        study.set_user_attr(_CONTEXT, context)
    baseline_states = (TrialState.COMPLETE, TrialState.WAITING, TrialState.RUNNING)
    if not any(t.user_attrs.get(BASELINE) for t in study.get_trials(states=baseline_states)):
        params = {k: _entered(d, project.config.params.get(k)) for k, d in space.items()}
        study.enqueue_trial(params, user_attrs={BASELINE: True})
    return space


def run_hyperopt(
    project: Project,
    corpus_paths: Sequence[Path],
    *,
    trials: int,
    jobs: int = 1,
    storage: Path | None = None,
    seed: int = 0,
    timeout: float | None = None,
    progress: bool = False,
    device: str = "auto",
    pruner: optuna.pruners.BasePruner | None = None,
    engine: Engine | None = None,
) -> HyperoptResult:
    """Search the fusion hyperparameters of ``project`` until its study has ``trials``
    finished trials (or ``timeout`` seconds have passed); see the module docstring.

    ``jobs``: processes for the sources when the store is built, and trials trained side by
    side (threads; they share the global random generators, so such runs do not repeat
    exactly). ``engine``: what runs the sources when the store is built, instead of ``jobs``
    local processes. ``seed`` seeds the sampler; the held-out split follows the project's
    ``seed``.
    """
    if trials < 1:
        raise KuoroError(f"--trials must be at least 1, not {trials}")
    space = search_space(project)
    storage = storage or default_storage(project)
    params = project.config.fusion_params()
    weights = [ref.weight for ref in project.config.sources]
    if pruner is None:
        pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2)

    sources = _fusion(project).sources()
    stores = training_stores(
        project,
        sources,
        corpus_paths,
        jobs=jobs,
        progress=progress,
        engine=engine,
    )
    with stores as (store, held_out):
        study = _open_study(storage, project.project_id, seed, pruner)
        context = training_context(project, store, held_out, exclude=space)
        table = table_for_training(project, sources, store.vocab_size)
        space = _prepare_study(study, project, space, context)

        def objective(trial: optuna.Trial) -> float:
            searched = {name: _suggest(trial, name, dist) for name, dist in space.items()}
            baseline = bool(trial.user_attrs.get(BASELINE))
            shown = TrialProgress(trial.number, enabled=progress)
            try:
                _, info = fit_fusion(
                    store,
                    dataclasses.replace(params, **searched),  # the split follows params.seed
                    weights,
                    device=device,
                    validation_store=held_out,
                    callbacks=[PruningCallback(trial, prune=not baseline), shown],
                    cooccurrence=table,
                )
            finally:
                shown.close()
            trial.set_user_attr("epochs", info.epochs)
            trial.set_user_attr("best_epoch", info.best_epoch)
            if MONITOR not in info.metrics:
                raise KuoroError("no held-out documents to score the trials on")
            return info.metrics[MONITOR]

        before = _finished(study)
        remaining = trials - before
        queued = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if remaining > 0 and jobs > 1 and queued:
            # Parallel workers can both take a queued trial (the baseline) from the SQLite
            # storage, and the second to finish fails ("Cannot tell a COMPLETE trial"): run
            # the queued ones alone first.
            study.optimize(
                objective,
                n_trials=len(queued),
                timeout=timeout,
                n_jobs=1,
                show_progress_bar=progress,
                gc_after_trial=False,
            )
            remaining = trials - _finished(study)
        if remaining > 0:
            study.optimize(
                objective,
                n_trials=remaining,
                timeout=timeout,
                n_jobs=jobs,
                show_progress_bar=progress,
                gc_after_trial=False,
            )
    return replace(summarize(study, storage, seed=seed), trials_run=_finished(study) - before)


def _finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
