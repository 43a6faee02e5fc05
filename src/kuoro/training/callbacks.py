"""The training state, and callbacks that watch it: early stopping, checkpoint, progress, history.

A callback overrides any of the six hooks; each gets the Trainer (its model, optimizers,
scheduler) and the ``TrainingState``. A callback with something to carry across an interrupted
run returns it from ``state_dict()``; ``Checkpoint`` saves those with the model.
"""

from __future__ import annotations

import copy
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from tqdm import tqdm

from kuoro.util.atomic import atomic_write

if TYPE_CHECKING:
    from kuoro.training.trainer import Trainer


@dataclass
class TrainingState:
    """Where training is: what the Trainer reports to its callbacks and returns from ``fit``."""

    epoch: int = 0  # the running epoch (from 1) during its hooks; the last one run after it
    step: int = 0  # optimiser steps since training began
    max_epochs: int = 0
    epoch_batches: int | None = None  # batches in this epoch, when the batches have a len
    batch_loss: float | None = None
    train_loss: float | None = None  # mean batch loss of the epoch
    val_loss: float | None = None  # mean over the validation batches; None without them
    metrics: dict[str, float] = field(default_factory=dict)  # of the latest validation
    lr: float | None = None  # the first optimiser's learning rate during this epoch
    epoch_seconds: float | None = None
    best_epoch: int | None = None  # set by EarlyStopping
    best_value: float | None = None
    stop: bool = False  # a callback sets it to end training after the current epoch
    history: list[dict[str, Any]] = field(default_factory=list)  # one record per epoch

    def value(self, name: str) -> float:
        """The latest value of "train_loss", "val_loss" or a validation metric."""
        values: dict[str, float | None] = {"train_loss": self.train_loss}
        if self.val_loss is not None:
            values["val_loss"] = self.val_loss
        values.update(self.metrics)
        found = values.get(name)
        if found is None:
            raise ValueError(f"no value named {name!r}; available: {', '.join(values)}")
        return found

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingState:
        return cls(**data)


class Callback:
    """Hooks around fitting, each epoch and each batch; all do nothing until overridden."""

    order = 0  # callbacks run in ascending order, ties in the order given to the Trainer

    def on_fit_start(self, trainer: Trainer, state: TrainingState) -> None:
        pass

    def on_fit_end(self, trainer: Trainer, state: TrainingState) -> None:
        pass

    def on_epoch_start(self, trainer: Trainer, state: TrainingState) -> None:
        pass

    def on_epoch_end(self, trainer: Trainer, state: TrainingState) -> None:
        pass

    def on_batch_start(self, trainer: Trainer, state: TrainingState) -> None:
        pass

    def on_batch_end(self, trainer: Trainer, state: TrainingState) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs of this callback (tensors, numbers, strings, containers)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class EarlyStopping(Callback):
    """Stops when ``monitor`` has not improved for ``patience`` epochs; can restore the best.

    An epoch improves when its value beats the best by more than ``min_delta``; NaN never
    does. As in Keras and Lightning, training stops at the ``patience``-th epoch in a row
    without improvement, and patience 0 stops at the first (like patience 1).
    ``baseline``: the value the weights training starts from already reach; an epoch must beat
    it to count as an improvement, and with ``restore_best`` those starting weights come back
    when none does (the best epoch is then 0).
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        mode: Literal["min", "max"] = "min",
        patience: int = 3,
        min_delta: float = 0.0,
        restore_best: bool = True,
        baseline: float | None = None,
    ) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', not {mode!r}")
        if patience < 0 or min_delta < 0:
            raise ValueError("patience and min_delta must not be negative")
        self.monitor, self.mode, self.patience = monitor, mode, patience
        self.min_delta, self.restore_best = min_delta, restore_best
        self.baseline = baseline
        self._reset()

    def _reset(self) -> None:
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self.wait = 0
        self.best_weights: dict[str, Any] | None = None

    def on_fit_start(self, trainer: Trainer, state: TrainingState) -> None:
        if state.epoch == 0:  # a fresh run; a resumed one has had load_state_dict
            self._reset()
            if self.baseline is not None:
                self.best_value, self.best_epoch = self.baseline, 0
                if self.restore_best:
                    self.best_weights = _copy_state(trainer.model.state_dict())

    def on_epoch_end(self, trainer: Trainer, state: TrainingState) -> None:
        value = state.value(self.monitor)
        if self._improves(value):
            self.best_value, self.best_epoch, self.wait = value, state.epoch, 0
            if self.restore_best:
                self.best_weights = _copy_state(trainer.model.state_dict())
        else:
            self.wait += 1
            if self.wait >= max(self.patience, 1):
                state.stop = True
        state.best_epoch, state.best_value = self.best_epoch, self.best_value

    def on_fit_end(self, trainer: Trainer, state: TrainingState) -> None:
        if self.restore_best and self.best_weights is not None:
            trainer.model.load_state_dict(self.best_weights)

    def _improves(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.best_value is None:
            return True
        if self.mode == "max":
            return value > self.best_value + self.min_delta
        return value < self.best_value - self.min_delta

    def state_dict(self) -> dict[str, Any]:
        return {
            "best_value": self.best_value,
            "best_epoch": self.best_epoch,
            "wait": self.wait,
            "best_weights": self.best_weights,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_value, self.best_epoch = state["best_value"], state["best_epoch"]
        self.wait, self.best_weights = state["wait"], state["best_weights"]


def _copy_state(state: dict[str, Any]) -> dict[str, Any]:
    """A copy of a state dict that later training steps cannot change."""
    return {
        k: v.detach().clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v)
        for k, v in state.items()
    }


CHECKPOINT_STATE = "state.json"  # in a Checkpoint directory: the state and its weights file


class Checkpoint(Callback):
    """Saves everything a resumed run needs at the end of every ``every``-th epoch.

    The directory holds ``state.json`` (the TrainingState and the name of the weights file)
    and ``epoch-NNNNN.pt`` (model, optimisers, scheduler, callbacks, random generators). Both
    are written atomically and the JSON last, so that it always names a complete weights file;
    older weights files are removed after it. The last epoch is always saved.
    """

    order = 100  # after the other callbacks, so that what they did this epoch is saved

    def __init__(self, directory: str | Path, every: int = 1) -> None:
        if every < 1:
            raise ValueError(f"every must be at least 1, not {every}")
        self.directory = Path(directory)
        self.every = every

    def on_epoch_end(self, trainer: Trainer, state: TrainingState) -> None:
        if state.epoch % self.every == 0 or state.stop or state.epoch == state.max_epochs:
            self.save(trainer, state)

    def save(self, trainer: Trainer, state: TrainingState) -> None:
        name = f"epoch-{state.epoch:05d}.pt"
        with atomic_write(self.directory / name) as out:
            torch.save(trainer.state_dict(), out)
        record = {"weights": name, "state": state.to_dict()}
        with atomic_write(self.directory / CHECKPOINT_STATE) as out:
            out.write(json.dumps(record, indent=1).encode())
        for old in self.directory.glob("epoch-*.pt"):
            if old.name != name:
                old.unlink()

    def restore(self, trainer: Trainer) -> TrainingState:
        """Load the last checkpoint into ``trainer``; the state to continue from."""
        return load_checkpoint(self.directory, trainer)


class CheckpointError(ValueError):
    """A checkpoint is missing or cannot be loaded (damaged, or of another model)."""


def load_checkpoint(directory: str | Path, trainer: Trainer) -> TrainingState:
    """Load the checkpoint in ``directory`` into ``trainer``; the state it was saved with.

    Raises CheckpointError when it cannot; the trainer may then be partly restored, so a run
    that starts over builds a new one.
    """
    path = Path(directory) / CHECKPOINT_STATE
    if not path.exists():
        raise CheckpointError(f"no checkpoint in {directory} ({path.name} is missing)")
    try:
        record = json.loads(path.read_text())
        # On the CPU first: a run checkpointed on a GPU may resume on a machine without one.
        weights = Path(directory) / str(record["weights"])
        saved = torch.load(weights, map_location="cpu", weights_only=True)
        trainer.load_state_dict(saved)
        return TrainingState.from_dict(record["state"])
    except CheckpointError:
        raise
    except Exception as exc:  # torch, zipfile and json fail on damaged files in many ways
        raise CheckpointError(f"the checkpoint in {directory} cannot be loaded: {exc}") from exc


class ProgressBar(Callback):
    """A tqdm bar on stderr per epoch, with the loss and the latest validation metrics.

    ``enabled=None`` shows it only when stderr is a terminal (tqdm's ``disable=None``).
    """

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = enabled
        self._bar: Any = None

    def on_epoch_start(self, trainer: Trainer, state: TrainingState) -> None:
        self._close()
        self._bar = tqdm(
            total=state.epoch_batches,
            desc=f"epoch {state.epoch}/{state.max_epochs}",
            unit="batch",
            file=sys.stderr,  # looked up now, so that a redirected stderr is honoured
            disable=None if self.enabled is None else not self.enabled,
            dynamic_ncols=True,
        )

    def on_batch_end(self, trainer: Trainer, state: TrainingState) -> None:
        if self._bar is not None and not self._bar.disable:
            self._bar.set_postfix(loss=f"{state.batch_loss:.4g}", refresh=False)
            self._bar.update(1)

    def on_epoch_end(self, trainer: Trainer, state: TrainingState) -> None:
        if self._bar is not None and not self._bar.disable:
            shown = {"loss": state.train_loss, "val_loss": state.val_loss, **state.metrics}
            postfix = {k: f"{v:.4g}" for k, v in shown.items() if v is not None}
            self._bar.set_postfix(postfix, refresh=False)
        self._close()

    def on_fit_end(self, trainer: Trainer, state: TrainingState) -> None:
        self._close()

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class History(Callback):
    """One JSON line per epoch: epoch, train_loss, val_loss, metrics, lr, seconds.

    At fit start the file is rewritten with the epochs already in the state: empty for a new
    run, the completed epochs for a resumed one (so it never keeps epochs that will be redone).
    Non-finite numbers are written as null.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def on_fit_start(self, trainer: Trainer, state: TrainingState) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("w", encoding="utf-8") as out:
            out.writelines(_json_line(record) for record in state.history)

    def on_epoch_end(self, trainer: Trainer, state: TrainingState) -> None:
        with self.path.open("a", encoding="utf-8") as out:
            out.write(_json_line(state.history[-1]))

    @staticmethod
    def read(path: str | Path) -> list[dict[str, Any]]:
        """The records of a history file."""
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line]


def _json_line(record: dict[str, Any]) -> str:
    return json.dumps(_finite(record), allow_nan=False) + "\n"


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None, in nested dicts too."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
