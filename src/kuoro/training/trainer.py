"""The training loop: a Trainer runs epochs of batches and calls its callbacks around each step.

The Trainer knows nothing of the model or of the batches: ``loss_fn(model, batch)`` returns the
scalar to minimise, ``predict_fn(model, batch)`` the outputs that validation metrics read.
Batches come from a re-iterable (a list, or an object whose ``__iter__`` may reshuffle each
epoch) or from a callable ``epoch -> iterable``. For a resumed run to repeat an uninterrupted
one exactly, the order of the batches must follow from the epoch or from the global random
generators (which checkpoints save), not from a generator of the iterable's own.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence, Sized
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from kuoro.training.callbacks import Callback, TrainingState, load_checkpoint
from kuoro.training.metrics import Metric

Batches = Iterable[Any] | Callable[[int], Iterable[Any]]
RESERVED_NAMES = ("train_loss", "val_loss")


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global random generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _epoch_batches(batches: Batches, epoch: int) -> Iterable[Any]:
    """The batches of one epoch."""
    if isinstance(batches, Iterable):
        if iter(batches) is batches:  # a generator would be empty from the second epoch on
            raise TypeError(
                "batches must be re-iterable (a list, an object whose __iter__ returns a new "
                "iterator, or a callable epoch -> iterable), not a one-shot iterator"
            )
        return batches
    return batches(epoch)


class Trainer:
    """Fits ``model`` by minimising ``loss_fn`` with the given optimisers; see ``fit``."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: Optimizer,
        loss_fn: Callable[[nn.Module, Any], Tensor],
        *,
        callbacks: Sequence[Callback] = (),
        metrics: Mapping[str, Metric] | None = None,
        predict_fn: Callable[[nn.Module, Any], Tensor] | None = None,
        optimizers: Sequence[Optimizer] = (),
        scheduler: LRScheduler | None = None,
        clip_grad_norm: float | None = None,
        seed: int | None = None,
    ) -> None:
        self.model = model
        self.optimizers = [optimizer, *optimizers]  # e.g. a second one for sparse parameters
        self.loss_fn = loss_fn
        self.predict_fn = predict_fn or (lambda m, batch: m(batch))
        self.metrics = dict(metrics or {})
        clash = [name for name in RESERVED_NAMES if name in self.metrics]
        if clash:
            raise ValueError(f"metric names {clash} are reserved for the losses")
        self.callbacks = sorted(callbacks, key=lambda c: c.order)  # stable: ties keep order
        self.scheduler = scheduler  # stepped once per epoch, after validation
        self.clip_grad_norm = clip_grad_norm
        self.seed = seed
        self.state = TrainingState()

    def fit(
        self,
        train_batches: Batches,
        val_batches: Batches | None = None,
        *,
        max_epochs: int,
        resume_from: str | Path | None = None,
    ) -> TrainingState:
        """Train until ``max_epochs`` or until a callback sets ``state.stop``; the final state.

        ``resume_from``: a Checkpoint directory; training goes on after its last epoch as if
        it had never stopped.
        """
        if max_epochs < 0:
            raise ValueError(f"max_epochs must not be negative, not {max_epochs}")
        was_training = self.model.training
        if self.seed is not None:
            seed_everything(self.seed)
        self.state = TrainingState()
        if resume_from is not None:
            self.state = load_checkpoint(resume_from, self)  # restores the generators too
        self.state.max_epochs = max_epochs
        self._call("on_fit_start")
        while not self.state.stop and self.state.epoch < max_epochs:
            self._run_epoch(train_batches, val_batches)
        self._call("on_fit_end")
        self.model.train(was_training)
        return self.state

    def _run_epoch(self, train_batches: Batches, val_batches: Batches | None) -> None:
        state = self.state
        started = time.perf_counter()
        state.epoch += 1
        batches = _epoch_batches(train_batches, state.epoch)
        state.epoch_batches = len(batches) if isinstance(batches, Sized) else None
        state.lr = float(self.optimizers[0].param_groups[0]["lr"])
        self._call("on_epoch_start")
        self.model.train()
        total, count = 0.0, 0
        for batch in batches:
            self._call("on_batch_start")
            state.batch_loss = self._step(batch)
            state.step += 1
            total, count = total + state.batch_loss, count + 1
            self._call("on_batch_end")
        if count == 0:
            raise ValueError(f"epoch {state.epoch} had no training batches")
        state.train_loss = total / count
        state.val_loss, state.metrics = None, {}
        if val_batches is not None:
            state.val_loss, state.metrics = self._validate(val_batches)
        self._step_scheduler()
        state.epoch_seconds = time.perf_counter() - started
        state.history.append(
            {
                "epoch": state.epoch,
                "train_loss": state.train_loss,
                "val_loss": state.val_loss,
                "metrics": dict(state.metrics),
                "lr": state.lr,
                "seconds": state.epoch_seconds,
            }
        )
        self._call("on_epoch_end")

    def _step(self, batch: Any) -> float:
        """One optimisation step on ``batch``; its loss."""
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.model, batch)
        value = float(loss.detach())
        if not np.isfinite(value):
            raise FloatingPointError(
                f"loss is {value} at epoch {self.state.epoch}, step {self.state.step + 1}"
            )
        torch.autograd.backward(loss)
        if self.clip_grad_norm is not None:
            # Sparse gradients (embeddings for a sparse optimiser) have no norm to clip here.
            dense = [
                p for p in self.model.parameters() if p.grad is not None and not p.grad.is_sparse
            ]
            torch.nn.utils.clip_grad_norm_(dense, self.clip_grad_norm)
        for optimizer in self.optimizers:
            optimizer.step()
        return value

    def _validate(self, val_batches: Batches) -> tuple[float, dict[str, float]]:
        """The mean validation loss over batches and every metric, in eval mode."""
        for metric in self.metrics.values():
            metric.reset()
        self.model.eval()
        total, count = 0.0, 0
        with torch.no_grad():
            for batch in _epoch_batches(val_batches, self.state.epoch):
                total += float(self.loss_fn(self.model, batch))
                count += 1
                outputs = self.predict_fn(self.model, batch)
                for metric in self.metrics.values():
                    metric.update(outputs, batch)
        if count == 0:
            raise ValueError("there are no validation batches")
        return total / count, {name: float(m.compute()) for name, m in self.metrics.items()}

    def _step_scheduler(self) -> None:
        if isinstance(self.scheduler, ReduceLROnPlateau):
            has_val = self.state.val_loss is not None
            self.scheduler.step(self.state.value("val_loss" if has_val else "train_loss"))
        elif self.scheduler is not None:
            self.scheduler.step()

    def _call(self, hook: str) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self, self.state)

    def _callback_keys(self) -> list[str]:
        """A name for each callback that survives adding or removing callbacks of other kinds."""
        seen: dict[str, int] = {}
        keys = []
        for callback in self.callbacks:
            name = type(callback).__name__
            seen[name] = seen.get(name, 0) + 1
            keys.append(name if seen[name] == 1 else f"{name}.{seen[name] - 1}")
        return keys

    def state_dict(self) -> dict[str, Any]:
        """Everything but the TrainingState that a resumed run needs (no pickled objects)."""
        numpy_state = np.random.get_state(legacy=False)
        states = zip(self._callback_keys(), [c.state_dict() for c in self.callbacks], strict=True)
        callbacks = {key: state for key, state in states if state}
        return {
            "model": self.model.state_dict(),
            "optimizers": [o.state_dict() for o in self.optimizers],
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "callbacks": callbacks,
            "rng": {
                "python": random.getstate(),
                "numpy": {
                    "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
                    "pos": numpy_state["state"]["pos"],
                    "has_gauss": numpy_state["has_gauss"],
                    "gauss": numpy_state["gauss"],
                },
                "torch": torch.get_rng_state(),
            },
        }

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned, into this trainer's model and optimisers."""
        if len(saved["optimizers"]) != len(self.optimizers):
            raise ValueError(
                f"the checkpoint has {len(saved['optimizers'])} optimisers, "
                f"this trainer {len(self.optimizers)}"
            )
        self.model.load_state_dict(saved["model"])
        for optimizer, state in zip(self.optimizers, saved["optimizers"], strict=True):
            optimizer.load_state_dict(state)
        if (saved["scheduler"] is None) != (self.scheduler is None):
            raise ValueError("the checkpoint and this trainer differ in having a scheduler")
        if self.scheduler is not None:
            self.scheduler.load_state_dict(saved["scheduler"])
        by_key = dict(zip(self._callback_keys(), self.callbacks, strict=True))
        missing = [key for key in saved["callbacks"] if key not in by_key]
        if missing:
            raise ValueError(f"the checkpoint has callback states this trainer lacks: {missing}")
        for key, state in saved["callbacks"].items():
            by_key[key].load_state_dict(state)
        rng = saved["rng"]
        random.setstate(rng["python"])
        numpy_state = rng["numpy"]
        np.random.set_state(
            {
                "bit_generator": "MT19937",
                "state": {
                    "key": numpy_state["key"].numpy().astype(np.uint32),
                    "pos": numpy_state["pos"],
                },
                "has_gauss": numpy_state["has_gauss"],
                "gauss": numpy_state["gauss"],
            }
        )
        torch.set_rng_state(rng["torch"])
