"""Fusion models on candidate sets: the mean floor, Annif's linear ensemble, the kuoro model."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from kuoro.evaluation.metrics import RankingMetrics
from kuoro.fusion.candidates import ConceptPrior, build_candidates, feature_names
from kuoro.fusion.losses import (
    bce_loss,
    listwise_softmax_loss,
    loss_by_name,
    mixed_loss,
    segment_logsumexp,
    training_objective,
)
from kuoro.fusion.models import (
    KuoroFusion,
    LinearFusion,
    MeanFusion,
    create_model,
    make_optimizers,
)
from kuoro.fusion.tensors import CandidateBatch, to_batch

from support.data import load_benchmark

pytestmark = pytest.mark.usefixtures("torch_one_thread")

N_FEATURES = len(feature_names(4))
WEIGHTS = [1.0, 0.5, 2.0, 1.5]


synthetic = load_benchmark("synthetic")


def gold_csr(gold: list[np.ndarray], n_concepts: int) -> sp.csr_matrix:
    indptr = np.zeros(len(gold) + 1, np.int64)
    np.cumsum([len(g) for g in gold], out=indptr[1:])
    ids = np.concatenate(gold).astype(np.int32)
    return sp.csr_matrix((np.ones(len(ids), np.float32), ids, indptr), (len(gold), n_concepts))


class Split:
    """Synthetic documents as candidate batches, with their gold."""

    def __init__(
        self,
        gold: sp.csr_matrix,
        sources: list[sp.csr_matrix],
        prior: ConceptPrior,
        batch_size: int,
        training: bool,
    ) -> None:
        n = gold.shape[0]
        whole = to_batch(
            build_candidates(sources, gold, prior, prior_counted_batch=training),
            np.diff(gold.indptr),
        )
        bounds = [(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
        self.batches = [whole.documents(start, stop) for start, stop in bounds]
        self.gold = [[list(gold[i].indices) for i in range(start, stop)] for start, stop in bounds]

    def ndcg_at_10(self, model: torch.nn.Module, n_concepts: int) -> float:
        """nDCG@10 by kuoro.evaluation.metrics over sparse rows made from the candidates' scores."""
        metrics = RankingMetrics(limit=10)
        model.eval()
        with torch.no_grad():
            for batch, gold in zip(self.batches, self.gold, strict=True):
                scores = model.predict_scores(batch).double().numpy()
                scores = np.maximum(scores, 1e-300)  # a score of 0 would count as no suggestion
                shape = (batch.n_docs, n_concepts)
                rows = sp.csr_matrix(
                    (scores, batch.concepts.numpy(), batch.doc_offsets.numpy()), shape
                )
                metrics.update(rows, gold)
        return metrics.compute()["NDCG@10"]


@pytest.fixture(scope="module")
def data() -> tuple[Split, Split]:
    """V = 2000, 3000 documents: 2000 to train on (batches of 16), 1000 held out."""
    n_concepts, n_docs, n_train = 2000, 3000, 2000
    gold_ids, sources = next(synthetic.generate(n_concepts, n_docs, chunk_size=n_docs, seed=3))
    gold = gold_csr(gold_ids, n_concepts)
    prior = ConceptPrior.from_counts(np.bincount(gold[:n_train].indices, minlength=n_concepts))
    train = Split(gold[:n_train], [s[:n_train] for s in sources], prior, 16, training=True)
    held_out = Split(gold[n_train:], [s[n_train:] for s in sources], prior, 500, training=False)
    return train, held_out


def tiny_batch(logits_per_doc: list[list[float]], labels: list[list[float]]) -> CandidateBatch:
    """A batch with the given candidates' labels (no features): for the losses."""
    sizes = [len(x) for x in labels]
    offsets = torch.tensor(np.concatenate([[0], np.cumsum(sizes)]), dtype=torch.int64)
    m = int(offsets[-1])
    flat = torch.tensor([y for doc in labels for y in doc], dtype=torch.float32)
    return CandidateBatch(
        features=torch.zeros(m, 1),
        scores=torch.zeros(m, 1),
        concepts=torch.arange(m),
        doc_index=torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes)),
        doc_offsets=offsets,
        labels=flat,
        n_gold=None,
        n_docs=len(sizes),
    )


def ordered_within_documents(
    batch: CandidateBatch, ranking: torch.Tensor, values: torch.Tensor, tol: float
) -> bool:
    """Whether ``values`` never increase (beyond tol) along ``ranking``'s order in each doc."""
    order = np.lexsort((-ranking.detach().numpy(), batch.doc_index.numpy()))
    v, doc = values.detach().numpy()[order], batch.doc_index.numpy()[order]
    same_doc = doc[1:] == doc[:-1]
    return bool(np.all((v[1:] - v[:-1] <= tol) | ~same_doc))


def train(model: torch.nn.Module, split: Split, steps: int, loss_name: str = "mixed") -> None:
    torch.manual_seed(0)
    objective = training_objective(loss_by_name(loss_name))
    optimizers = make_optimizers(model, lr=3e-3)
    rng = np.random.default_rng(0)
    model.train()
    for _ in range(steps):
        batch = split.batches[rng.integers(len(split.batches))]
        value = objective(model, batch)
        for o in optimizers:
            o.zero_grad()
        value.backward()
        for o in optimizers:
            o.step()


# --- tensors ------------------------------------------------------------------------------


def test_to_batch_keeps_candidates_and_counts_gold() -> None:
    sources = [
        sp.csr_matrix(np.array([[0.9, 0, 0.2, 0], [0, 0, 0, 0], [0, 0.5, 0, 0]], np.float32))
    ]
    gold = sp.csr_matrix(np.array([[0, 0, 1, 1], [1, 0, 0, 0], [0, 1, 0, 0]], np.float32))
    c = build_candidates(sources, gold)
    batch = to_batch(c, np.array([2, 1, 1]))
    assert batch.n_docs == 3 and batch.n_candidates == 3
    assert batch.doc_index.tolist() == [0, 0, 2]
    assert batch.doc_offsets.tolist() == [0, 2, 2, 3]
    assert batch.concepts.dtype == torch.int64 and batch.concepts.tolist() == [0, 2, 1]
    assert batch.labels is not None and batch.labels.tolist() == [0.0, 1.0, 1.0]
    assert batch.n_gold is not None and batch.n_gold.tolist() == [2.0, 1.0, 1.0]
    # Without n_gold, the gold among the candidates stands in.
    fallback = to_batch(c).n_gold
    assert fallback is not None and fallback.tolist() == [1.0, 0.0, 1.0]
    assert to_batch(build_candidates(sources)).n_gold is None
    with pytest.raises(ValueError, match="2 entries for 3"):
        to_batch(c, np.array([1, 1]))
    tail = batch.documents(1, 3)
    assert tail.n_docs == 2 and tail.doc_offsets.tolist() == [0, 0, 1]
    assert tail.doc_index.tolist() == [1] and tail.concepts.tolist() == [1]
    assert tail.n_gold is not None and tail.n_gold.tolist() == [1.0, 1.0]
    moved = batch.to("cpu")
    assert torch.equal(moved.features, batch.features) and moved.n_docs == 3


# --- the families -------------------------------------------------------------------------


def test_mean_fusion_is_the_weighted_mean(data: tuple[Split, Split]) -> None:
    batch = data[1].batches[0]
    model = MeanFusion(WEIGHTS)
    expected = batch.scores.numpy() @ (np.array(WEIGHTS) / sum(WEIGHTS))
    np.testing.assert_allclose(model.predict_scores(batch).numpy(), expected, rtol=1e-5)
    assert ordered_within_documents(batch, model(batch), torch.from_numpy(expected), 1e-7)
    assert make_optimizers(model, 1e-3) == []
    with pytest.raises(ValueError, match="non-negative"):
        MeanFusion([1.0, -1.0])


def test_untrained_kuoro_ranks_like_the_mean(data: tuple[Split, Split]) -> None:
    batch = data[1].batches[0]
    mean = MeanFusion(WEIGHTS).predict_scores(batch)
    for top_k in (0, 4):  # top-4 of 4 sources is no selection at all
        model = KuoroFusion(2000, 4, N_FEATURES, source_weights=WEIGHTS, gate_top_k=top_k)
        model.train()  # dropout acts before the zero last layer: it changes nothing either
        logits = model(batch)
        assert ordered_within_documents(batch, logits, mean, 1e-6)
        assert not ordered_within_documents(batch, -logits, mean, 1e-6)
    # Within a document the gated mean is the mean times a constant (silent sources' weight
    # is shared out), so the probabilities can differ across documents, not the ranking.
    silent = batch.features[:, 7::8] == 0  # each source's "count" column
    assert bool(silent.any())


def test_linear_fusion_starts_from_the_weights_in_log1p_space(data: tuple[Split, Split]) -> None:
    batch = data[1].batches[0]
    model = LinearFusion(2000, WEIGHTS)
    w = torch.tensor(WEIGHTS) / sum(WEIGHTS)
    z = torch.log1p(batch.scores) @ w
    torch.testing.assert_close(model(batch), 20.0 * z)
    torch.testing.assert_close(model.predict_scores(batch), torch.sigmoid(20.0 * z))
    bce_loss(model(batch), batch).backward()
    assert model.source_weight.weight.grad is not None
    assert model.source_weight.weight.grad.is_sparse
    assert model.bias.grad is not None and model.bias.grad.shape == ()


def test_gate_top_k_keeps_the_k_largest_gates() -> None:
    torch.manual_seed(0)
    m, n_sources = 50, 4
    features = torch.rand(m, N_FEATURES)
    features[:5, 7 + 8 * 3] = 0.0  # source 3 silent for the first five candidates' document
    batch = CandidateBatch(
        features=features,
        scores=torch.rand(m, n_sources),
        concepts=torch.arange(m),
        doc_index=torch.arange(m),
        doc_offsets=torch.arange(m + 1),
        labels=None,
        n_gold=None,
        n_docs=m,
    )
    full = KuoroFusion(100, n_sources, N_FEATURES, gate_top_k=0)
    top2 = KuoroFusion(100, n_sources, N_FEATURES, gate_top_k=2)
    with torch.no_grad():
        full.gate.weight.normal_()  # a gate that depends on the documents
        top2.gate.weight.copy_(full.gate.weight)
    g_full, g_top = full.gate_weights(batch), top2.gate_weights(batch)
    assert (g_full[:5, 3] == 0).all() and (g_full[5:] > 0).all()
    torch.testing.assert_close(g_full.sum(-1), torch.ones(m))
    assert ((g_top > 0).sum(-1) == 2).all()
    torch.testing.assert_close(g_top.sum(-1), torch.ones(m))
    kept = g_top > 0
    # The two kept are the two largest of the full gate, renormalised.
    assert torch.equal(kept, g_full >= g_full.topk(2, dim=-1).values[:, 1:])
    renormalised = g_full * kept / (g_full * kept).sum(-1, keepdim=True)
    torch.testing.assert_close(g_top, renormalised)
    with pytest.raises(ValueError, match="gate_top_k"):
        KuoroFusion(100, n_sources, N_FEATURES, gate_top_k=5)


def test_create_model_by_name() -> None:
    assert isinstance(create_model("mean", n_concepts=10, n_sources=4), MeanFusion)
    assert isinstance(create_model("linear", n_concepts=10, n_sources=4), LinearFusion)
    kuoro = create_model("kuoro", n_concepts=10, n_sources=4, hidden_size=8, gate_top_k=2)
    assert isinstance(kuoro, KuoroFusion) and kuoro.gate_top_k == 2
    with pytest.raises(ValueError, match="unknown fusion model"):
        create_model("deep", n_concepts=10, n_sources=4)
    with pytest.raises(ValueError, match="no hyperparameter hidden_size"):
        create_model("linear", n_concepts=10, n_sources=4, hidden_size=8)
    with pytest.raises(ValueError, match=f"{N_FEATURES} features"):
        KuoroFusion(10, 3, N_FEATURES)


# --- losses -------------------------------------------------------------------------------


def test_losses_on_a_hand_checked_case() -> None:
    # Document 0: three candidates, two gold; document 1: no gold candidate; document 2: none.
    batch = tiny_batch([[2.0, 0.0, -1.0], [0.5, -0.5], []], [[1, 0, 1], [0, 0], []])
    logits = torch.tensor([2.0, 0.0, -1.0, 0.5, -0.5], requires_grad=True)

    def softplus(x: float) -> float:
        return math.log1p(math.exp(x))

    expected_bce = (
        softplus(-2.0) + softplus(0.0) + softplus(1.0) + softplus(0.5) + softplus(-0.5)
    ) / 5
    assert bce_loss(logits, batch).item() == pytest.approx(expected_bce, rel=1e-6)
    lse = math.log(math.exp(2.0) + 1.0 + math.exp(-1.0))
    expected_listwise = lse - (0.5 * 2.0 + 0.5 * -1.0)  # only document 0 counts
    listwise = listwise_softmax_loss(logits, batch)
    assert listwise.item() == pytest.approx(expected_listwise, rel=1e-6)
    assert mixed_loss(0.25)(logits, batch).item() == pytest.approx(
        0.25 * expected_listwise + 0.75 * expected_bce, rel=1e-6
    )
    listwise.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    # A document without gold gets no gradient from the listwise loss.
    assert logits.grad[3:].abs().max().item() == 0.0
    # Members' losses add up: two members, the second with shifted logits for document 0.
    stacked = torch.stack([logits.detach(), logits.detach() + 3.0])
    assert listwise_softmax_loss(stacked, batch).item() == pytest.approx(
        2 * expected_listwise, rel=1e-6
    )
    assert bce_loss(stacked, batch).item() > 2 * expected_bce
    with pytest.raises(ValueError, match="unknown loss"):
        loss_by_name("hinge")


def test_segment_logsumexp_handles_large_values_and_empty_segments() -> None:
    values = torch.tensor([[1000.0, 1000.0, -5.0]])
    out = segment_logsumexp(values, torch.tensor([0, 0, 2]), 3)
    assert out[0, 0].item() == pytest.approx(1000.0 + math.log(2.0))
    assert out[0, 1].item() == float("-inf")
    assert out[0, 2].item() == pytest.approx(-5.0)


def test_listwise_loss_without_any_gold_is_zero() -> None:
    batch = tiny_batch([[1.0, 2.0]], [[0, 0]])
    logits = torch.tensor([1.0, 2.0], requires_grad=True)
    loss = listwise_softmax_loss(logits, batch)
    loss.backward()
    assert loss.item() == 0.0 and logits.grad is not None and not logits.grad.any()


# --- training -----------------------------------------------------------------------------


def test_trained_kuoro_beats_the_mean_on_held_out_documents(data: tuple[Split, Split]) -> None:
    train_split, held_out = data
    mean = held_out.ndcg_at_10(MeanFusion([1.0] * 4), 2000)
    model = KuoroFusion(2000, 4, N_FEATURES, hidden_size=32)
    untrained = held_out.ndcg_at_10(model, 2000)
    assert untrained == pytest.approx(mean, abs=1e-3)
    train(model, train_split, 200)
    trained = held_out.ndcg_at_10(model, 2000)
    linear = LinearFusion(2000, [1.0] * 4)
    train(linear, train_split, 200, loss_name="bce")
    print(
        f"\nnDCG@10 held out: mean {mean:.4f}, kuoro {trained:.4f}, "
        f"linear {held_out.ndcg_at_10(linear, 2000):.4f}"
    )
    assert trained > mean + 0.05


# --- cost independent of the vocabulary size ----------------------------------------------


def _step_seconds(model: torch.nn.Module, batch: CandidateBatch, repeats: int = 7) -> float:
    """The fastest of ``repeats`` training steps (forward, backward, optimizer step)."""
    optimizers = make_optimizers(model, lr=1e-3)
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        loss = mixed_loss(0.5)(model(batch), batch) + model.regularization(batch)
        for o in optimizers:
            o.zero_grad()
        loss.backward()
        for o in optimizers:
            o.step()
        times.append(time.perf_counter() - start)
    return min(times[1:])  # the first step allocates the optimizer state (V-sized, once)


@pytest.mark.parametrize("family", ["kuoro", "linear"])
def test_training_step_cost_does_not_grow_with_the_vocabulary(
    data: tuple[Split, Split], family: str
) -> None:
    batch = data[0].batches[0]
    seconds = {}
    for n_concepts in (36_000, 456_000):
        torch.manual_seed(0)
        model = create_model(family, n_concepts=n_concepts, n_sources=4)
        model.train()
        seconds[n_concepts] = _step_seconds(model, batch)
        loss = bce_loss(model(batch), batch) + model.regularization(batch)
        model.zero_grad()
        loss.backward()
        groups = model.parameter_groups()
        for p in groups.sparse:
            assert p.shape[0] == n_concepts
            assert p.grad is not None and p.grad.is_sparse
            touched = p.grad.coalesce().indices()[0]
            assert len(touched) == len(torch.unique(batch.concepts))
        for p in groups.decay + groups.no_decay:
            assert p.grad is not None and n_concepts not in p.grad.shape
    ratio = seconds[456_000] / seconds[36_000]
    print(
        f"\n{family} step on {batch.n_candidates} candidates: "
        f"V=36k {seconds[36_000] * 1e3:.1f} ms, V=456k {seconds[456_000] * 1e3:.1f} ms"
    )
    assert ratio < 2.0


def test_a_state_saved_before_columns_were_appended_loads_and_predicts_as_before() -> None:
    from kuoro.fusion.members import MemberEnsemble
    from kuoro.fusion.models import widen_saved_inputs

    torch.manual_seed(0)
    single = KuoroFusion(20, 4, N_FEATURES, hidden_size=8)
    ensemble = MemberEnsemble(lambda seed: KuoroFusion(20, 4, N_FEATURES, hidden_size=8), 2)
    for model in (single, ensemble):
        state = {k: v.clone() for k, v in model.state_dict().items()}
        key = next(k for k in state if k.endswith(("mlp.0.weight", "mlp__0__weight")))
        # As saved three feature columns ago: the first layer without the last three features.
        with torch.no_grad():
            state[key].normal_()
        old = dict(state)
        old[key] = torch.cat([state[key][..., : N_FEATURES - 3], state[key][..., -1:]], dim=-1)
        widened = widen_saved_inputs(old, N_FEATURES)
        assert widened[key].shape == state[key].shape
        assert (widened[key][..., N_FEATURES - 3 : N_FEATURES] == 0).all()
        assert torch.equal(widened[key][..., : N_FEATURES - 3], state[key][..., : N_FEATURES - 3])
        assert torch.equal(widened[key][..., -1], state[key][..., -1])
        model.load_state_dict(widened)  # loads: the shapes are today's
        # A current state is left as it is.
        assert torch.equal(widen_saved_inputs(state, N_FEATURES)[key], state[key])
