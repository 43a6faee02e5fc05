"""Member ensembles by vmap: the same as training the members one by one, in one pass."""

from __future__ import annotations

import time

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch import nn

from kuoro.fusion.candidates import build_candidates, feature_names
from kuoro.fusion.losses import bce_loss, mixed_loss, training_objective
from kuoro.fusion.members import MemberEnsemble
from kuoro.fusion.models import KuoroFusion, LinearFusion, MeanFusion, make_optimizers
from kuoro.fusion.tensors import CandidateBatch, to_batch

from support.data import load_benchmark

pytestmark = pytest.mark.usefixtures("torch_one_thread")

N_CONCEPTS = 5000
N_FEATURES = len(feature_names(4))


@pytest.fixture(scope="module")
def batches() -> list[CandidateBatch]:
    """Ten batches of 8 synthetic documents (about 1400 candidates each)."""
    synthetic = load_benchmark("synthetic")
    gold_ids, sources = next(synthetic.generate(N_CONCEPTS, 80, chunk_size=80, seed=5))
    indptr = np.concatenate([[0], np.cumsum([len(g) for g in gold_ids])])
    ids = np.concatenate(gold_ids)
    gold = sp.csr_matrix((np.ones(len(ids), np.float32), ids, indptr), (80, N_CONCEPTS))
    whole = to_batch(build_candidates(sources, gold), np.diff(indptr))
    return [whole.documents(i, i + 8) for i in range(0, 80, 8)]


def kuoro(seed: int) -> nn.Module:
    return KuoroFusion(N_CONCEPTS, 4, N_FEATURES, hidden_size=32, dropout=0.0, concept_l2=0.1)


OBJECTIVE = training_objective(mixed_loss(0.5))


def fit(model: nn.Module, batches: list[CandidateBatch], steps: int) -> float:
    """Train with the same batch order every time; the seconds it took."""
    optimizers = make_optimizers(model, lr=3e-3)
    model.train()
    start = time.perf_counter()
    for step in range(steps):
        batch = batches[step % len(batches)]
        loss = OBJECTIVE(model, batch)
        for o in optimizers:
            o.zero_grad()
        loss.backward()
        for o in optimizers:
            o.step()
    return time.perf_counter() - start


def test_eight_members_by_vmap_equal_eight_sequential_trainings(
    batches: list[CandidateBatch],
) -> None:
    seeds = list(range(8))
    steps = 30
    sequential = []
    seconds_sequential = 0.0
    for seed in seeds:
        torch.manual_seed(seed)
        model = kuoro(seed)
        seconds_sequential += fit(model, batches, steps)
        sequential.append(model)
    ensemble = MemberEnsemble(kuoro, 8, seeds)
    seconds_vmap = fit(ensemble, batches, steps)
    print(
        f"\n8 members × {steps} steps on ~{batches[0].n_candidates} candidates: sequential "
        f"{seconds_sequential:.2f} s, vmap {seconds_vmap:.2f} s, "
        f"ratio {seconds_sequential / seconds_vmap:.1f}×"
    )
    ensemble.eval()
    with torch.no_grad():
        for batch in batches[:3]:
            expected = torch.stack([m.eval()(batch) for m in sequential])
            logits = ensemble(batch)
            assert logits.shape == (8, batch.n_candidates)
            print(f"largest difference: {(logits - expected).abs().max().item():.2e}")
            torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
            scores = torch.stack([m.predict_scores(batch) for m in sequential]).mean(0)
            torch.testing.assert_close(ensemble.predict_scores(batch), scores)
    # Training moved the per-concept corrections, and the members apart from each other.
    table = ensemble.member_state_dict(0)["concept_bias.weight"]
    torch.testing.assert_close(
        table, sequential[0].state_dict()["concept_bias.weight"], rtol=1e-4, atol=1e-5
    )
    assert table.abs().max() > 0.01
    first, second = ensemble.member_state_dict(0), ensemble.member_state_dict(1)
    assert not torch.equal(first["mlp.0.weight"], second["mlp.0.weight"])


def test_a_member_state_loads_into_a_single_model(batches: list[CandidateBatch]) -> None:
    # With dropout (each member draws its own masks) and a top-2 gate under vmap.
    def factory(seed: int) -> nn.Module:
        return KuoroFusion(N_CONCEPTS, 4, N_FEATURES, hidden_size=16, gate_top_k=2)

    ensemble = MemberEnsemble(factory, seeds=[3, 4])
    fit(ensemble, batches, 5)
    ensemble.eval()
    for index in range(2):
        member = factory(0)
        member.load_state_dict(ensemble.member_state_dict(index))
        member.eval()
        with torch.no_grad():
            torch.testing.assert_close(ensemble(batches[0])[index], member(batches[0]))
            gate = member.gate_weights(batches[0])
        assert ((gate > 0).sum(-1) <= 2).all()


def test_the_per_concept_table_gets_a_sparse_gradient_of_the_batch_rows(
    batches: list[CandidateBatch],
) -> None:
    ensemble = MemberEnsemble(lambda seed: LinearFusion(N_CONCEPTS, [1.0, 2.0, 1.0, 1.0]), 3)
    batch = batches[0]
    bce_loss(ensemble(batch), batch).backward()
    groups = ensemble.parameter_groups()
    assert len(groups.sparse) == 2 and len(groups.no_decay) == 1 and not groups.decay
    distinct = len(torch.unique(batch.concepts))
    for table in groups.sparse:
        assert table.shape[:2] == (3, N_CONCEPTS)
        assert table.grad is not None and table.grad.is_sparse
        assert table.grad.coalesce().indices().shape == (2, 3 * distinct)
    # The gradient is that of each member alone.
    single = LinearFusion(N_CONCEPTS, [1.0, 2.0, 1.0, 1.0])
    bce_loss(single(batch), batch).backward()
    assert single.source_weight.weight.grad is not None
    expected = single.source_weight.weight.grad.to_dense()
    by_vmap = ensemble.stacked.get_parameter("source_weight__weight").grad
    assert by_vmap is not None
    for member in range(3):
        torch.testing.assert_close(by_vmap.to_dense()[member], expected)


def test_members_may_differ_in_tensor_hyperparameters_only() -> None:
    ensemble = MemberEnsemble(
        lambda seed: KuoroFusion(100, 4, N_FEATURES, concept_l2=0.1 * (seed + 1)), seeds=[0, 1]
    )
    assert ensemble.stacked.get_buffer("concept_l2").tolist() == pytest.approx([0.1, 0.2])
    with pytest.raises(ValueError, match="same structure"):
        MemberEnsemble(lambda seed: KuoroFusion(100, 4, N_FEATURES, hidden_size=8 + seed), 2)
    with pytest.raises(ValueError, match="no parameters"):
        MemberEnsemble(lambda seed: MeanFusion([1.0] * 4), 2)
    with pytest.raises(ValueError, match="3 seeds for 2 members"):
        MemberEnsemble(kuoro, 2, [0, 1, 2])
