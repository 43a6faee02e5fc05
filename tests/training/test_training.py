"""The training API: the loop, each callback, resuming, determinism, and the ranking metrics."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kuoro.evaluation.metrics import RankingMetrics
from kuoro.fusion.candidates import build_candidates, feature_names
from kuoro.training import (
    Callback,
    Checkpoint,
    CheckpointError,
    EarlyStopping,
    F1AtK,
    History,
    MeanLoss,
    NDCGAtK,
    ProgressBar,
    Trainer,
    TrainingState,
)

from support.data import load_benchmark

pytestmark = pytest.mark.usefixtures("torch_one_thread")

synthetic = load_benchmark("synthetic")


Batch = tuple[Tensor, Tensor]


def separable(n: int = 320, d: int = 6, seed: int = 0, batch_size: int = 32) -> list[Batch]:
    """Linearly separable points with 0/1 labels, in batches."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = (x @ torch.randn(d, generator=g) > 0).float()
    return list(zip(x.split(batch_size), y.split(batch_size), strict=True))


class Shuffled:
    """Re-iterable batches in a new order each epoch, drawn from torch's global generator."""

    def __init__(self, batches: list[Batch]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[Batch]:
        return iter([self.batches[i] for i in torch.randperm(len(self.batches)).tolist()])


def bce(model: nn.Module, batch: Batch) -> Tensor:
    return F.binary_cross_entropy_with_logits(model(batch[0]).squeeze(-1), batch[1])


def logits(model: nn.Module, batch: Batch) -> Tensor:
    return model(batch[0]).squeeze(-1)


def accuracy() -> MeanLoss:
    return MeanLoss(lambda out, batch: ((out > 0).float() == batch[1]).float().mean())


def mlp(seed: int = 0, d: int = 6) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 1))


def weights(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a: dict[str, Tensor], b: dict[str, Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class Recorder(Callback):
    """Records every hook call with the epoch and step it saw."""

    def __init__(self, log: list[str], tag: str = "") -> None:
        self.log, self.tag = log, tag

    def _add(self, hook: str, state: TrainingState) -> None:
        self.log.append(f"{self.tag}{hook}:{state.epoch}:{state.step}")

    def on_fit_start(self, trainer: Trainer, state: TrainingState) -> None:
        self._add("fit_start", state)

    def on_fit_end(self, trainer: Trainer, state: TrainingState) -> None:
        self._add("fit_end", state)

    def on_epoch_start(self, trainer: Trainer, state: TrainingState) -> None:
        self._add("epoch_start", state)

    def on_epoch_end(self, trainer: Trainer, state: TrainingState) -> None:
        self._add("epoch_end", state)

    def on_batch_start(self, trainer: Trainer, state: TrainingState) -> None:
        self._add("batch_start", state)

    def on_batch_end(self, trainer: Trainer, state: TrainingState) -> None:
        self._add("batch_end", state)


class Snapshots(Callback):
    """The model's weights at the end of every epoch."""

    def __init__(self) -> None:
        self.at: dict[int, dict[str, Tensor]] = {}

    def on_epoch_end(self, trainer: Trainer, state: TrainingState) -> None:
        self.at[state.epoch] = weights(trainer.model)


class Scripted:
    """A metric whose value at the i-th validation is ``values[i]``."""

    def __init__(self, values: list[float]) -> None:
        self.values, self.calls = values, 0

    def reset(self) -> None:
        pass

    def update(self, outputs: Tensor, batch: Any) -> None:
        pass

    def compute(self) -> float:
        self.calls += 1
        return self.values[self.calls - 1]


# The loop


def test_loss_decreases_and_steps_are_counted() -> None:
    batches = separable()
    model = nn.Linear(6, 1)
    model.eval()
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.5), bce, seed=0)
    state = trainer.fit(batches, max_epochs=5)
    losses = [r["train_loss"] for r in state.history]
    assert losses[-1] < 0.5 * losses[0]
    assert all(b < a for a, b in itertools.pairwise(losses))
    assert (state.epoch, state.step, state.epoch_batches) == (5, 5 * len(batches), len(batches))
    assert state.val_loss is None and state.metrics == {}
    assert not model.training  # the mode the model had before fit


def test_hooks_are_called_in_order() -> None:
    log: list[str] = []
    batches = separable(n=96)  # 3 batches
    model = nn.Linear(6, 1)
    late = Recorder(log, "late.")
    late.order = 1  # runs after the others whatever its place in the list
    trainer = Trainer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        bce,
        callbacks=[late, Recorder(log)],
        predict_fn=logits,
    )
    trainer.fit(batches, batches[:1], max_epochs=2)
    expected = ["fit_start:0:0"]
    for epoch in (1, 2):
        step = 3 * (epoch - 1)
        expected.append(f"epoch_start:{epoch}:{step}")
        for b in range(3):
            expected += [f"batch_start:{epoch}:{step + b}", f"batch_end:{epoch}:{step + b + 1}"]
        expected.append(f"epoch_end:{epoch}:{step + 3}")
    expected.append("fit_end:2:6")
    interleaved = [e for plain in expected for e in (plain, f"late.{plain}")]
    assert log == interleaved


def test_batches_from_a_callable_get_the_epoch() -> None:
    seen: list[int] = []
    data = separable(n=64)

    def batches(epoch: int) -> list[Batch]:
        seen.append(epoch)
        return data

    model = nn.Linear(6, 1)
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), bce, predict_fn=logits)
    trainer.fit(batches, batches, max_epochs=3)
    assert seen == [1, 1, 2, 2, 3, 3]  # training then validation, each epoch


def test_a_callback_stops_training_and_bad_input_fails_loudly() -> None:
    class StopAtTwo(Callback):
        def on_batch_end(self, trainer: Trainer, state: TrainingState) -> None:
            state.stop = state.epoch == 2

    data = separable(n=64)
    model = nn.Linear(6, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    state = Trainer(model, optimizer, bce, callbacks=[StopAtTwo()]).fit(data, max_epochs=9)
    assert (state.epoch, state.step) == (2, 4)  # the epoch is finished

    trainer = Trainer(model, optimizer, bce)
    with pytest.raises(TypeError, match="re-iterable"):
        trainer.fit(iter(data), max_epochs=2)
    with pytest.raises(ValueError, match="no training batches"):
        trainer.fit([], max_epochs=1)
    with pytest.raises(FloatingPointError, match="epoch 1, step 1"):
        Trainer(model, optimizer, lambda m, b: torch.tensor(math.nan)).fit(data, max_epochs=1)
    with pytest.raises(ValueError, match="reserved"):
        Trainer(model, optimizer, bce, metrics={"val_loss": accuracy()})


def test_extra_sparse_optimiser_and_clipping() -> None:
    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bias = nn.Embedding(10, 1, sparse=True)
            self.linear = nn.Linear(6, 1)

        def forward(self, x: Tensor) -> Tensor:
            ids = torch.arange(len(x)) % 10
            return self.linear(x) + self.bias(ids)

    torch.manual_seed(0)
    model = Model()
    before = weights(model)
    dense = torch.optim.SGD(model.linear.parameters(), lr=100.0)
    sparse = torch.optim.SparseAdam(list(model.bias.parameters()), lr=0.1)
    trainer = Trainer(model, dense, bce, optimizers=[sparse], clip_grad_norm=1e-3)
    trainer.fit(separable(n=32), max_epochs=1)
    after = weights(model)
    assert not torch.equal(before["bias.weight"], after["bias.weight"])
    # One step of lr 100 on a gradient clipped to norm 1e-3 moves the weights by 0.1 at most.
    moved = torch.cat([(after[k] - before[k]).flatten() for k in ("linear.weight", "linear.bias")])
    assert 0 < moved.norm() <= 0.1 + 1e-6


def test_same_seed_gives_identical_weights() -> None:
    data = Shuffled(separable())

    def train(seed: int) -> dict[str, Tensor]:
        model = mlp(seed=5)  # the same initial weights each time
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        Trainer(model, optimizer, bce, seed=seed).fit(data, max_epochs=3)
        return weights(model)

    first = train(0)
    assert same(first, train(0))
    assert not same(first, train(1))  # the seed drives dropout and the batch order


# EarlyStopping


def fit_scripted(values: list[float], **early: Any) -> tuple[TrainingState, Snapshots, nn.Module]:
    data = separable(n=64)
    torch.manual_seed(0)
    model = nn.Linear(6, 1)
    snapshots = Snapshots()
    trainer = Trainer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.5),
        bce,
        callbacks=[EarlyStopping(monitor="score", **early), snapshots],
        metrics={"score": Scripted(values)},
        predict_fn=logits,
        seed=0,
    )
    return trainer.fit(data, data, max_epochs=len(values)), snapshots, model


def test_early_stopping_stops_after_patience_and_restores_the_best() -> None:
    state, snapshots, model = fit_scripted([0.2, 0.5, 0.4, 0.5, 0.3, 0.9], mode="max", patience=3)
    assert state.epoch == 5 and state.stop  # epochs 3, 4 (a tie), 5 did not improve
    assert (state.best_epoch, state.best_value) == (2, 0.5)
    assert same(weights(model), snapshots.at[2])
    assert not same(snapshots.at[2], snapshots.at[5])


def test_early_stopping_without_restore_keeps_the_last_weights() -> None:
    state, snapshots, model = fit_scripted(
        [0.2, 0.5, 0.4, 0.5, 0.3], mode="max", patience=3, restore_best=False
    )
    assert state.epoch == 5 and state.best_epoch == 2
    assert same(weights(model), snapshots.at[5])


def test_early_stopping_min_delta_and_patience_zero() -> None:
    state, _, _ = fit_scripted([0.5, 0.52, 0.9], mode="max", patience=1, min_delta=0.05)
    assert (state.epoch, state.best_epoch) == (2, 1)  # +0.02 is no improvement
    state, snapshots, model = fit_scripted([3.0, 2.0, 2.5, 1.0], mode="min", patience=0)
    assert (state.epoch, state.best_epoch, state.best_value) == (3, 2, 2.0)
    assert same(weights(model), snapshots.at[2])
    state, _, _ = fit_scripted([3.0, 2.0, 2.5, 1.0, 0.5], mode="min", patience=2)
    assert (state.epoch, state.best_epoch) == (5, 5)  # improved again before patience ran out


def test_early_stopping_baseline_keeps_the_starting_weights_unless_beaten() -> None:
    torch.manual_seed(0)
    start = weights(nn.Linear(6, 1))  # what fit_scripted's model starts from
    state, snapshots, model = fit_scripted([0.5, 0.6, 0.55], mode="max", patience=2, baseline=0.7)
    # No epoch beat the baseline: training stopped after patience, the start came back.
    assert (state.epoch, state.best_epoch, state.best_value) == (2, 0, 0.7)
    assert not same(snapshots.at[2], start) and same(weights(model), start)
    state, snapshots, model = fit_scripted([0.5, 0.8, 0.6], mode="max", patience=2, baseline=0.7)
    assert (state.best_epoch, state.best_value) == (2, 0.8)
    assert same(weights(model), snapshots.at[2])


def test_early_stopping_on_a_missing_value_names_the_available_ones() -> None:
    data = separable(n=64)
    model = nn.Linear(6, 1)
    trainer = Trainer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        bce,
        callbacks=[EarlyStopping(monitor="ndcg@10", mode="max")],
        metrics={"acc": accuracy()},
        predict_fn=logits,
    )
    with pytest.raises(ValueError, match=r"'ndcg@10'; available: train_loss, val_loss, acc"):
        trainer.fit(data, data, max_epochs=2)


# History, ProgressBar


def test_history_writes_one_line_per_epoch(tmp_path: Path) -> None:
    data = separable(n=64)
    model = nn.Linear(6, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    path = tmp_path / "logs" / "history.jsonl"
    trainer = Trainer(
        model,
        optimizer,
        bce,
        callbacks=[History(path)],
        metrics={"acc": accuracy(), "empty": Scripted([math.nan] * 3)},
        predict_fn=logits,
        scheduler=torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5),
    )
    state = trainer.fit(data, data, max_epochs=3)
    records = History.read(path)
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert [r["lr"] for r in records] == [0.1, 0.05, 0.025]
    for record, kept in zip(records, state.history, strict=True):
        assert set(record) == {"epoch", "train_loss", "val_loss", "metrics", "lr", "seconds"}
        assert record["train_loss"] == kept["train_loss"]
        assert record["val_loss"] == kept["val_loss"] and record["val_loss"] > 0
        assert record["metrics"]["acc"] == kept["metrics"]["acc"]
        assert record["metrics"]["empty"] is None  # NaN is written as null
        assert record["seconds"] > 0
    trainer.metrics["empty"] = Scripted([0.0] * 2)
    trainer.fit(data, data, max_epochs=2)  # a new run starts the file again
    assert [r["epoch"] for r in History.read(path)] == [1, 2]


def test_progress_bar_on_stderr_when_enabled(capsys: pytest.CaptureFixture[str]) -> None:
    data = separable(n=96)

    def run(bar: ProgressBar) -> str:
        model = nn.Linear(6, 1)
        trainer = Trainer(
            model,
            torch.optim.SGD(model.parameters(), lr=0.1),
            bce,
            callbacks=[bar],
            metrics={"acc": accuracy()},
            predict_fn=logits,
        )
        trainer.fit(data, data, max_epochs=2)
        out = capsys.readouterr()
        assert out.out == ""
        return out.err

    shown = run(ProgressBar(enabled=True))
    for text in ("epoch 1/2", "epoch 2/2", "3/3", "loss=", "val_loss=", "acc="):
        assert text in shown
    assert run(ProgressBar(enabled=False)) == ""
    assert run(ProgressBar()) == ""  # stderr is not a terminal under capsys


# Checkpoint


def resumable(directory: Path, history: Path, model_seed: int) -> Trainer:
    model = mlp(seed=model_seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    return Trainer(
        model,
        optimizer,
        bce,
        callbacks=[
            Checkpoint(directory),
            EarlyStopping(monitor="val_loss", patience=10),
            History(history),
            Snapshots(),
        ],
        predict_fn=logits,
        scheduler=torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5),
        seed=0,
    )


def without_seconds(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def test_resuming_from_a_checkpoint_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    train, val = Shuffled(separable(seed=1)), separable(n=96, seed=2)
    whole = resumable(tmp_path / "a", tmp_path / "a.jsonl", model_seed=0)
    whole_state = whole.fit(train, val, max_epochs=6)

    first = resumable(tmp_path / "b", tmp_path / "b.jsonl", model_seed=0)
    first.fit(train, val, max_epochs=3)
    torch.randn(100)  # whatever happens in between must not matter
    saved = json.loads((tmp_path / "b" / "state.json").read_text())
    assert saved["state"]["epoch"] == 3
    assert [p.name for p in (tmp_path / "b").glob("*.pt")] == ["epoch-00003.pt"]

    resumed = resumable(tmp_path / "b", tmp_path / "b.jsonl", model_seed=7)  # other weights
    state = resumed.fit(train, val, max_epochs=6, resume_from=tmp_path / "b")
    assert same(weights(resumed.model), weights(whole.model))
    assert without_seconds(state.history) == without_seconds(whole_state.history)
    assert (state.step, state.best_epoch) == (whole_state.step, whole_state.best_epoch)
    assert without_seconds(History.read(tmp_path / "b.jsonl")) == without_seconds(
        History.read(tmp_path / "a.jsonl")
    )

    # Checkpoint.restore loads the last epoch's weights (saved before restoring the best).
    fresh = resumable(tmp_path / "b", tmp_path / "c.jsonl", model_seed=9)
    assert Checkpoint(tmp_path / "b").restore(fresh).epoch == 6
    whole_snapshots = next(c for c in whole.callbacks if isinstance(c, Snapshots))
    assert same(weights(fresh.model), whole_snapshots.at[6])


def test_resuming_keeps_the_early_stopping_state(tmp_path: Path) -> None:
    data = separable(n=64)

    def run(values: list[float], max_epochs: int, resume: bool) -> tuple[TrainingState, Trainer]:
        torch.manual_seed(0)
        model = nn.Linear(6, 1)
        trainer = Trainer(
            model,
            torch.optim.SGD(model.parameters(), lr=0.5),
            bce,
            # Listed first, the checkpoint still runs last: it saves this epoch's patience.
            callbacks=[Checkpoint(tmp_path), EarlyStopping("score", "max", patience=3)],
            metrics={"score": Scripted(values)},
            predict_fn=logits,
            seed=0,
        )
        state = trainer.fit(
            data, data, max_epochs=max_epochs, resume_from=tmp_path if resume else None
        )
        return state, trainer

    values = [0.9, 0.5, 0.5, 0.4, 0.95, 0.97]
    whole, whole_trainer = run(values, 6, resume=False)
    assert (whole.epoch, whole.best_epoch) == (4, 1)
    run(values[:3], 3, resume=False)
    state, trainer = run(values[3:], 6, resume=True)
    assert (state.epoch, state.best_epoch, state.best_value) == (4, 1, 0.9)
    assert same(weights(trainer.model), weights(whole_trainer.model))  # epoch 1's, restored


def test_checkpoint_every_and_errors(tmp_path: Path) -> None:
    saved: list[int] = []

    class Spy(Checkpoint):
        def save(self, trainer: Trainer, state: TrainingState) -> None:
            saved.append(state.epoch)
            super().save(trainer, state)

    data = separable(n=64)
    model = nn.Linear(6, 1)
    trainer = Trainer(
        model, torch.optim.SGD(model.parameters(), lr=0.1), bce, callbacks=[Spy(tmp_path, 2)]
    )
    trainer.fit(data, max_epochs=5)
    assert saved == [2, 4, 5]
    with pytest.raises(CheckpointError, match="no checkpoint"):
        trainer.fit(data, max_epochs=5, resume_from=tmp_path / "nothing")
    other = Trainer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        bce,
        callbacks=[EarlyStopping(monitor="train_loss")],
    )
    other.fit(data, max_epochs=1)
    Checkpoint(tmp_path / "early").save(other, other.state)
    with pytest.raises(ValueError, match="EarlyStopping"):
        trainer.fit(data, max_epochs=5, resume_from=tmp_path / "early")


# Metrics


@dataclass(frozen=True)
class CandidateBatch:
    """A RankingBatch with features, as a fusion model would get it."""

    features: Tensor
    doc_offsets: Tensor
    labels: Tensor
    n_gold: Tensor
    concepts: Tensor


def candidate_batches(
    n_docs: int, vocab_size: int = 3000, seed: int = 0, batch_docs: int = 100
) -> tuple[list[CandidateBatch], list[np.ndarray]]:
    """Synthetic candidate batches, and the gold ids of every document."""
    batches, golds = [], []
    for gold, sources in synthetic.generate(
        vocab_size, n_docs, top_k=20, seed=seed, chunk_size=batch_docs
    ):
        indptr = np.concatenate([[0], np.cumsum([len(g) for g in gold])])
        gold_csr = sp.csr_matrix(
            (np.ones(indptr[-1], np.float32), np.concatenate(gold), indptr),
            shape=(len(gold), vocab_size),
        )
        c = build_candidates(sources, gold_csr, top_k=20)
        assert c.labels is not None
        batches.append(
            CandidateBatch(
                torch.from_numpy(c.features),
                torch.from_numpy(c.doc_offsets),
                torch.from_numpy(c.labels),
                torch.tensor([len(g) for g in gold]),
                torch.from_numpy(c.concepts.astype(np.int64)),
            )
        )
        golds.extend(gold)
    return batches, golds


def reference(
    batches: list[CandidateBatch], scores: list[Tensor], golds: list[np.ndarray], **kw: Any
) -> dict[str, float]:
    """kuoro.evaluation.metrics (Annif's definitions) on the same scored candidates."""
    metrics = RankingMetrics(limit=10, **kw)
    start = 0
    for batch, s in zip(batches, scores, strict=True):
        n = len(batch.doc_offsets) - 1
        suggestions = sp.csr_matrix(
            (s.numpy(), batch.concepts.numpy(), batch.doc_offsets.numpy()), shape=(n, 3000)
        )
        metrics.update(suggestions, [g.tolist() for g in golds[start : start + n]])
        start += n
    return metrics.compute()


@pytest.mark.parametrize("threshold", [0.0, 0.3])
def test_ranking_metrics_equal_kuoro_metrics(threshold: float) -> None:
    batches, golds = candidate_batches(300)
    rng = np.random.default_rng(1)
    # Scores in steps of 0.05, so that ties are common; some negative (no prediction).
    scores = [
        torch.from_numpy(np.round(rng.uniform(-0.3, 1.0, len(b.labels)) * 20) / 20) for b in batches
    ]
    ours = {
        "NDCG@10": NDCGAtK(10, threshold),
        "NDCG@5": NDCGAtK(5, threshold),
        "F1@5": F1AtK(5, threshold),
        "F1@1": F1AtK(1, threshold),
    }
    for batch, s in zip(batches, scores, strict=True):
        for metric in ours.values():
            metric.update(s, batch)
    expected = reference(batches, scores, golds, threshold=threshold)
    for name, metric in ours.items():
        assert metric.compute() == pytest.approx(expected[name], abs=1e-12), name
    assert 0.1 < expected["NDCG@10"] < 0.9  # neither trivial nor degenerate


def test_ranking_metrics_by_hand() -> None:
    # doc 0: gold {a, b, x}, x not a candidate; doc 1: no candidates, no gold;
    # doc 2: one gold candidate, scored below 0.
    batch = CandidateBatch(
        features=torch.zeros(5, 1),
        doc_offsets=torch.tensor([0, 3, 3, 5]),
        labels=torch.tensor([0.0, 1.0, 1.0, 1.0, 0.0]),
        n_gold=torch.tensor([3, 0, 1]),
        concepts=torch.arange(5),
    )
    scores = torch.tensor([0.9, 0.1, 0.5, -1.0, 0.0])
    d = 1 / math.log2(3), 1 / math.log2(4)
    ndcg, f1 = NDCGAtK(10), F1AtK(5)
    ndcg.update(scores, batch)
    f1.update(scores, batch)
    assert ndcg.compute() == pytest.approx(((d[0] + d[1]) / (1 + d[0] + d[1]) + 1 + 0) / 3)
    assert f1.compute() == pytest.approx((4 / 6 + 0 + 0) / 3)
    logit = NDCGAtK(10, threshold=None)  # every candidate ranks: doc 2's gold is second
    logit.update(scores, batch)
    assert logit.compute() == pytest.approx(((d[0] + d[1]) / (1 + d[0] + d[1]) + 1 + d[0]) / 3)
    ndcg.reset()
    assert math.isnan(ndcg.compute())

    with pytest.raises(ValueError, match="more gold candidates"):
        NDCGAtK(10).update(scores, CandidateBatch(**{**batch.__dict__, "n_gold": torch.ones(3)}))
    with pytest.raises(ValueError, match="4 outputs"):
        F1AtK(5).update(scores[:4], batch)
    with pytest.raises(TypeError, match="RankingBatch"):
        F1AtK(5).update(scores, (scores, scores))


def test_fusion_shaped_training_with_ranking_metrics(tmp_path: Path) -> None:
    train, _ = candidate_batches(400, seed=3)
    val, _ = candidate_batches(200, seed=4)
    mean_score = NDCGAtK(10)  # the plain mean of the sources' scores
    for b in val:
        mean_score.update(b.features[:, feature_names(4).index("mean")], b)
    n_features = train[0].features.shape[1]
    torch.manual_seed(0)
    model = nn.Linear(n_features, 1)

    def loss(m: nn.Module, b: CandidateBatch) -> Tensor:
        return F.binary_cross_entropy_with_logits(m(b.features).squeeze(-1), b.labels)

    trainer = Trainer(
        model,
        torch.optim.Adam(model.parameters(), lr=0.05),
        loss,
        callbacks=[
            EarlyStopping(monitor="ndcg@10", mode="max", patience=3),
            History(tmp_path / "h.jsonl"),
        ],
        metrics={"ndcg@10": NDCGAtK(10, threshold=None), "f1@5": F1AtK(5, threshold=None)},
        predict_fn=lambda m, b: m(b.features).squeeze(-1),
        seed=0,
    )
    state = trainer.fit(train, val, max_epochs=8)
    values = [r["metrics"]["ndcg@10"] for r in state.history]
    assert state.best_value == max(values) and values[(state.best_epoch or 0) - 1] == max(values)
    assert max(values) > mean_score.compute() + 0.05 > values[0]  # it learnt to rank
    # The restored best model scores the best value again.
    again = NDCGAtK(10, threshold=None)
    with torch.no_grad():
        for b in val:
            again.update(model(b.features).squeeze(-1), b)
    assert again.compute() == pytest.approx(state.best_value, abs=1e-12)
