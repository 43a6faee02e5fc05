"""`kuoro hyperopt`: Optuna search over a fusion project's hyperparameters on the cached store."""

from __future__ import annotations

import dataclasses
import math
import re
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from kuoro.cli.app import cli, main
from kuoro.cli.tuning import hyperopt_command
from kuoro.config.backends import validate_params
from kuoro.errors import KuoroError
from kuoro.evaluation.hyperopt import PruningCallback, TrialProgress, run_hyperopt, search_space
from kuoro.evaluation.search_results import (
    BASELINE,
    MIN_IMPORTANCE_TRIALS,
    default_storage,
    format_toml_snippet,
    importances,
)
from kuoro.project.project import Project
from kuoro.training.callbacks import TrainingState

from support.data import requires_shared_data
from support.workspace import kuoro, make_workspace, open_project

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

pytestmark = [requires_shared_data, pytest.mark.usefixtures("torch_one_thread")]
optuna.logging.set_verbosity(optuna.logging.WARNING)
if "hyperopt" not in cli.commands:  # until cli.py registers it
    cli.add_command(hyperopt_command)

PROJECTS = """
[tfidf-stem]
language = "fi"
vocab = "arch"
backend = "tfidf"
analyzer = "snowball(finnish)"
min_df = 1

[tfidf-words]
language = "fi"
vocab = "arch"
backend = "tfidf"
min_df = 2
ngram_max = 2

[fusion-kuoro]
language = "fi"
vocab = "arch"
backend = "kuoro"
sources = "tfidf-stem,tfidf-words"
max_epochs = 2
hidden_size = 16
batch_size = 128
weight_decay = 0.0

[fusion-linear]
language = "fi"
vocab = "arch"
backend = "linear"
sources = "tfidf-stem,tfidf-words"
max_epochs = 2

[fusion-mean]
language = "fi"
vocab = "arch"
backend = "mean"
sources = "tfidf-stem,tfidf-words"
"""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two trained tfidf sources; fusion-kuoro trained (so its store is filled)."""
    work = tmp_path_factory.mktemp("hyperopt")
    make_workspace(work, PROJECTS, sources=("tfidf-stem", "tfidf-words"))
    return work


def configured(project: Project) -> dict[str, object]:
    """The project's table of projects.toml as validate_params reads it."""
    sources = [ref.project_id for ref in project.config.sources]
    return {**project.config.params, "sources": sources}


def search(work: Path, project: Project, storage: Path, **kwargs: Any) -> Any:
    return run_hyperopt(project, [work / "fusion.tsv"], storage=storage, device="cpu", **kwargs)


def load(storage: Path, project_id: str) -> optuna.Study:
    return optuna.load_study(study_name=project_id, storage=f"sqlite:///{storage}")


@pytest.mark.integration
def test_baseline_is_the_configured_training_and_search_resumes(
    workspace: Path, tmp_path: Path
) -> None:
    project = open_project(workspace, "fusion-kuoro")
    project.train([workspace / "fusion.tsv"], device="cpu")
    trained = project.last_fit
    assert trained is not None
    storage = tmp_path / "search.sqlite3"

    first = search(workspace, project, storage, trials=2)
    assert (first.complete + first.pruned, first.trials_run) == (2, 2)
    study = load(storage, "fusion-kuoro")
    baseline = study.trials[0]
    assert baseline.user_attrs[BASELINE] is True
    configured = dict(project.config.params)
    # weight_decay 0 cannot lie on a log scale: it enters at the range's floor.
    floor = search_space(project)["weight_decay"].low  # type: ignore[attr-defined]
    assert baseline.params == {
        **{k: configured[k] for k in baseline.params},
        "weight_decay": floor,
    }
    # Same split, same seed: the baseline trial scores what `kuoro train` reported (up to the
    # weight decay floor, far below anything that moves nDCG in two epochs).
    assert baseline.value == pytest.approx(trained.metrics["ndcg@10"], abs=2e-3)
    assert first.baseline_value == baseline.value
    assert first.baseline_params == baseline.params

    # A second run continues the study: the first trials stay, one more is added.
    before = [(t.number, t.params, t.value) for t in study.trials]
    second = search(workspace, project, storage, trials=3)
    assert second.trials_run == 1 and second.complete + second.pruned == 3
    study = load(storage, "fusion-kuoro")
    assert [(t.number, t.params, t.value) for t in study.trials[:2]] == before
    assert len(study.trials) == 3
    assert sum(1 for t in study.trials if t.user_attrs.get(BASELINE)) == 1
    # The search drew something new, not the first run's draw over again.
    assert study.trials[2].params != study.trials[1].params
    # Asking for no more than it has runs nothing.
    assert search(workspace, project, storage, trials=3).trials_run == 0

    # Three trials are too few to read importances from (test_importances_need_ten_trials).
    assert second.complete >= 2 and second.importances == {}
    best = max(t.value for t in study.trials if t.state == TrialState.COMPLETE)
    assert second.best_value == best and second.best_value >= second.baseline_value


@pytest.mark.integration
def test_pruned_trials_stop_early_and_the_baseline_is_never_pruned(
    workspace: Path, tmp_path: Path
) -> None:
    project = open_project(workspace, "fusion-kuoro")
    storage = tmp_path / "pruned.sqlite3"
    # nDCG never reaches 2: this pruner gives up on every trial at its first report.
    pruner = optuna.pruners.ThresholdPruner(lower=2.0)
    result = search(workspace, project, storage, trials=3, pruner=pruner)
    assert (result.complete, result.pruned) == (1, 2)
    assert result.baseline_value is not None and result.best_value == result.baseline_value
    study = load(storage, "fusion-kuoro")
    for trial in study.trials[1:]:
        assert trial.state == TrialState.PRUNED
        assert list(trial.intermediate_values) == [1]  # stopped after its first epoch
    assert sorted(study.trials[0].intermediate_values) == [1, 2]
    assert result.importances == {}  # one completed trial tells nothing


class FakeTrial:
    def __init__(self, prune: bool) -> None:
        self.reports: list[tuple[float, int]] = []
        self._prune = prune

    def report(self, value: float, step: int) -> None:
        self.reports.append((value, step))

    def should_prune(self) -> bool:
        return self._prune


@pytest.mark.parametrize("prune", [True, False])
def test_pruning_callback_reports_each_epoch(prune: bool) -> None:
    trial = FakeTrial(prune=True)
    callback = PruningCallback(trial, prune=prune)  # type: ignore[arg-type]
    state = TrainingState(epoch=3, metrics={"ndcg@10": 0.5})
    if prune:
        with pytest.raises(optuna.TrialPruned, match="epoch 3"):
            callback.on_epoch_end(None, state)  # type: ignore[arg-type]
    else:
        callback.on_epoch_end(None, state)  # type: ignore[arg-type]
    assert trial.reports == [(0.5, 3)]
    # Without a held-out score there is nothing to report or prune on.
    callback.on_epoch_end(None, TrainingState(epoch=4))  # type: ignore[arg-type]
    assert len(trial.reports) == 1


@pytest.mark.integration
def test_interrupted_trial_is_failed_and_replaced(workspace: Path, tmp_path: Path) -> None:
    project = open_project(workspace, "fusion-linear")
    storage = tmp_path / "killed.sqlite3"
    search(workspace, project, storage, trials=1)
    # A run killed mid-trial leaves the trial RUNNING in the storage.
    load(storage, "fusion-linear").ask()
    result = search(workspace, project, storage, trials=2)
    assert (result.failed, result.trials_run, result.complete + result.pruned) == (1, 1, 2)
    states = [t.state for t in load(storage, "fusion-linear").trials]
    assert states.count(TrialState.RUNNING) == 0 and states.count(TrialState.FAIL) == 1


@pytest.mark.integration
def test_search_refuses_other_fixed_parameters(workspace: Path, tmp_path: Path) -> None:
    project = open_project(workspace, "fusion-linear")
    storage = tmp_path / "changed.sqlite3"
    search(workspace, project, storage, trials=1)
    params = {**project.config.params, "max_epochs": 3}
    project.config = dataclasses.replace(project.config, params=params)
    with pytest.raises(KuoroError, match=r"max_epochs 2 → 3.*--storage"):
        search(workspace, project, storage, trials=2)


def test_only_trainable_fusion_projects_are_searched(workspace: Path) -> None:
    with pytest.raises(KuoroError, match="backend 'mean', which has no hyperparameters"):
        search_space(open_project(workspace, "fusion-mean"))
    with pytest.raises(KuoroError, match="is a source"):
        search_space(open_project(workspace, "tfidf-stem"))
    space = search_space(open_project(workspace, "fusion-kuoro"))
    assert space["gate_top_k"].high == 2  # type: ignore[attr-defined]  # two sources
    assert space["hidden_size"].low <= 16 <= space["hidden_size"].high  # type: ignore[attr-defined]


def test_toml_snippet_parses_and_validates(workspace: Path) -> None:
    project = open_project(workspace, "fusion-kuoro")
    best = {
        "learning_rate": 0.0031622776601683794,
        "hidden_size": 94,
        "dropout": 0.0,
        "weight_decay": 1.2345e-07,
        "concept_l2": 2.0,
        "batch_size": 21,
        "loss": "listwise",
        "gate_top_k": 1,
    }
    snippet = format_toml_snippet("fusion-kuoro", best, comment="best of 3\ntrials")
    parsed = tomllib.loads(snippet)
    assert list(parsed) == ["fusion-kuoro"]
    values = parsed["fusion-kuoro"]
    assert values.keys() == best.keys()
    for key, value in best.items():
        assert type(values[key]) is type(value), key
        if isinstance(value, float):
            assert values[key] == pytest.approx(value, rel=1e-3), key
        else:
            assert values[key] == value, key
    checked = validate_params("fusion-kuoro", "kuoro", {**configured(project), **values})
    assert checked["loss"] == "listwise" and checked["concept_l2"] == 2.0
    # An id that is no bare TOML key is quoted.
    assert tomllib.loads(format_toml_snippet("yso fusion.fi", {"seed": 1})) == {
        "yso fusion.fi": {"seed": 1}
    }


@pytest.mark.integration
def test_cli_prints_scores_snippet_and_importances(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = str(workspace / "fusion.tsv")
    capsys.readouterr()
    assert main(kuoro(workspace, "hyperopt", "fusion-linear", corpus, "--trials", "3")) == 0
    out = capsys.readouterr().out
    project = open_project(workspace, "fusion-linear")
    assert default_storage(project).is_file()
    assert re.search(r"^configured parameters  held-out nDCG@10 0\.\d{4}$", out, re.M)
    assert re.search(r"^best, trial \d +held-out nDCG@10 0\.\d{4} \([+-]0\.\d{4}\)$", out, re.M)
    snippet = out[out.index("# best of 3 trials") : out.index("parameter importance")]
    values = tomllib.loads(snippet)["fusion-linear"]
    assert set(values) == {"learning_rate", "batch_size"}
    validate_params("fusion-linear", "linear", {**configured(project), **values})
    complete = re.search(r"\((\d) complete", out)
    assert complete is not None
    assert (
        f"parameter importance: too few trials for importances ({complete.group(1)} completed "
        f"trial{'' if complete.group(1) == '1' else 's'}; at least 10 are needed)"
    ) in out


def test_importances_need_ten_trials() -> None:
    """fANOVA's shares come from a forest fitted to the trials: from ten of them on (what
    Optuna's TPE draws at random before it models the score), not before."""
    assert MIN_IMPORTANCE_TRIALS == 10
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(0))

    def objective(trial: optuna.Trial) -> float:
        return trial.suggest_float("matters", 0, 1) + 0.01 * trial.suggest_float("noise", 0, 1)

    study.optimize(objective, n_trials=9)
    assert importances(study) == {}
    study.optimize(objective, n_trials=1)
    found = importances(study)
    assert set(found) == {"matters", "noise"} and math.isclose(sum(found.values()), 1.0)
    assert found["matters"] > found["noise"]


@pytest.mark.integration
def test_each_trial_shows_its_epochs(
    workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bar = TrialProgress(7)
    bar.on_fit_start(None, TrainingState(max_epochs=3))  # type: ignore[arg-type]
    bar.on_epoch_end(None, TrainingState(epoch=1, metrics={"ndcg@10": 0.5}))  # type: ignore[arg-type]
    bar.on_epoch_end(None, TrainingState(epoch=2, metrics={"ndcg@10": 0.4}))  # type: ignore[arg-type]
    assert bar._bar is not None and (bar._bar.n, bar._bar.total) == (2, 3)
    assert bar._bar.postfix == "nDCG@10 0.4000 (best 0.5000)"
    bar.close()
    assert bar._bar is None
    # A search with progress on draws a bar for each trial while it trains.
    capsys.readouterr()
    project = open_project(workspace, "fusion-linear")
    search(workspace, project, tmp_path / "shown.sqlite3", trials=1, progress=True)
    err = capsys.readouterr().err
    assert re.search(r"trial 0: +\d+%.*\d/2 ", err), err
    search(workspace, project, tmp_path / "quiet.sqlite3", trials=1)
    assert "trial 0:" not in capsys.readouterr().err
