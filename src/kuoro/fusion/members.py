"""Member ensembles: N fusion models trained and run in one vectorised pass, outputs averaged.

The members' parameters are stacked (``torch.func.stack_module_state``) into leaves with a
leading member dimension, and one ``torch.vmap`` of ``functional_call`` over a parameterless
copy of the model runs all members at once. One optimizer steps the stacked leaves; AdamW
and SparseAdam work elementwise, so each member follows the same path it would alone.

Per-concept tables and vmap: ``nn.Embedding(sparse=True)`` gradients cannot pass through
vmap, and a dense gradient of a stacked (N, V, D) table would cost V per step. So the table
never enters vmap: outside it, the rows of the batch's distinct concepts are gathered from
every member's table by ``_SparseRows`` (an autograd function whose backward returns the
table's gradient as a sparse tensor of those rows), the batch's concept ids are renumbered
into that gathered block, and the members see an ordinary small dense embedding. The table is
then a leaf with a sparse gradient, which ``torch.optim.SparseAdam`` updates row by row, just
as it updates each single model's table: the same arithmetic, and no V-sized work per step.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from kuoro.fusion.models import ParameterGroups, parameter_groups
from kuoro.fusion.tensors import CandidateBatch


class _SparseRows(torch.autograd.Function):
    """table[:, rows] for a stacked (N, V, D) table, with a sparse gradient for the table."""

    @staticmethod
    def forward(ctx: Any, table: Tensor, rows: Tensor) -> Tensor:
        ctx.save_for_backward(rows)
        ctx.table_shape = table.shape
        return table[:, rows]

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (rows,) = ctx.saved_tensors
        n_members, k = grad.shape[0], rows.shape[0]
        member = torch.arange(n_members, device=rows.device).repeat_interleave(k)
        indices = torch.stack([member, rows.repeat(n_members)])
        values = grad.reshape(n_members * k, *grad.shape[2:])
        # rows are distinct and sorted (torch.unique), so the indices are already coalesced.
        sparse = torch.sparse_coo_tensor(
            indices, values, ctx.table_shape, is_coalesced=True, check_invariants=False
        )
        return sparse, None


class _Call(nn.Module):
    """Calls one method of the wrapped model, so that functional_call can reach it."""

    model: nn.Module

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, method: str, batch: CandidateBatch) -> Tensor:
        result: Tensor = getattr(self.model, method)(batch)
        return result


def _key(name: str) -> str:
    """A parameter name usable as an attribute (no dots)."""
    return name.replace(".", "__")


class MemberEnsemble(nn.Module):
    """N models of one shape from ``factory(seed)``, run with vmap; outputs averaged.

    ``forward`` gives the members' logits (N, m), which the losses of ``kuoro.fusion.losses``
    sum over members; ``predict_scores`` averages the members' scores. Members may differ in
    seed and in hyperparameters kept in tensors (e.g. ``KuoroFusion.concept_l2``), not in
    shapes or plain attributes (hidden size, dropout, top-k): those must be equal.
    Per-concept tables must be ``nn.Embedding(sparse=True)`` looked up by ``batch.concepts``.
    """

    def __init__(
        self,
        factory: Callable[[int], nn.Module],
        n_members: int | None = None,
        seeds: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        seeds = list(range(n_members or 0)) if seeds is None else list(seeds)
        if n_members is not None and len(seeds) != n_members:
            raise ValueError(f"{len(seeds)} seeds for {n_members} members")
        if not seeds:
            raise ValueError("a member ensemble needs at least one member")
        members = []
        for seed in seeds:
            torch.manual_seed(seed)
            members.append(factory(seed))
        shapes = {repr(m) for m in members}
        if len(shapes) > 1:
            raise ValueError("ensemble members must have the same structure and settings")
        first = members[0]
        groups = parameter_groups(first)
        ids = {id(p): name for name, p in first.named_parameters()}
        self._sparse = {ids[id(p)] for p in groups.sparse}
        self._no_decay = {ids[id(p)] for p in groups.no_decay}
        if not ids:
            raise ValueError("the members have no parameters to train")
        params, buffers = stack_module_state(members)
        self._param_names = list(params)
        self._buffer_names = list(buffers)
        self._persistent = set(first.state_dict())
        self.stacked = nn.Module()
        for name, value in params.items():
            self.stacked.register_parameter(_key(name), nn.Parameter(value))
        for name, value in buffers.items():
            self.stacked.register_buffer(_key(name), value)
        # The members' code, without their tensors; its embeddings are dense because they
        # only ever see the gathered rows (see the module docstring).
        skeleton = copy.deepcopy(first).to("meta")
        for module in skeleton.modules():
            if isinstance(module, nn.Embedding):
                module.sparse = False
        self._skeleton = (_Call(skeleton),)  # a tuple: not a registered submodule
        self.seeds = seeds

    @property
    def template(self) -> nn.Module:
        """The members' module: their code and settings, on the meta device (no weights)."""
        model: nn.Module = self._skeleton[0].model
        return model

    @property
    def n_members(self) -> int:
        return len(self.seeds)

    def train(self, mode: bool = True) -> MemberEnsemble:
        super().train(mode)
        self._skeleton[0].train(mode)
        return self

    def parameter_groups(self) -> ParameterGroups:
        """The stacked parameters, grouped as each member's own are."""
        stacked = dict(self.stacked.named_parameters())
        by_name = {name: stacked[_key(name)] for name in self._param_names}
        return ParameterGroups(
            decay=[p for n, p in by_name.items() if n not in self._sparse | self._no_decay],
            no_decay=[p for n, p in by_name.items() if n in self._no_decay],
            sparse=[p for n, p in by_name.items() if n in self._sparse],
        )

    def _call(self, method: str, batch: CandidateBatch) -> Tensor:
        """Every member's ``method(batch)``, stacked along a new first dimension."""
        concepts, local = torch.unique(batch.concepts, return_inverse=True)
        local_batch = batch.with_concepts(local)
        stacked = dict(self.stacked.named_parameters())
        params: dict[str, Tensor] = {}
        for name in self._param_names:
            value: Tensor = stacked[_key(name)]
            if name in self._sparse:
                value = _SparseRows.apply(value, concepts)  # type: ignore[no-untyped-call]
            params["model." + name] = value
        stacked_buffers = dict(self.stacked.named_buffers())
        buffers = {"model." + n: stacked_buffers[_key(n)] for n in self._buffer_names}
        call = self._skeleton[0]

        def one(p: dict[str, Tensor], b: dict[str, Tensor]) -> Tensor:
            result: Tensor = functional_call(call, (p, b), (method, local_batch))
            return result

        out: Tensor = vmap(one, randomness="different")(params, buffers)
        return out

    def forward(self, batch: CandidateBatch) -> Tensor:
        """(N, m) the members' logits."""
        return self._call("forward", batch)

    def regularization(self, batch: CandidateBatch) -> Tensor:
        """The members' penalties, summed (as the losses sum the members' losses)."""
        return self._call("regularization", batch).sum()

    def member_scores(self, batch: CandidateBatch) -> Tensor:
        """(N, m) each member's scores in [0, 1]."""
        transform = getattr(self._skeleton[0].model, "scores_from_logits", torch.sigmoid)
        scores: Tensor = transform(self(batch))
        return scores

    def predict_scores(self, batch: CandidateBatch) -> Tensor:
        """(m,) the members' scores, averaged."""
        return self.member_scores(batch).mean(0)

    def member_state_dict(self, index: int) -> dict[str, Tensor]:
        """One member's state, loadable into a model from the factory."""
        state = {n: self.stacked.get_parameter(_key(n))[index] for n in self._param_names}
        for name in self._buffer_names:
            if name in self._persistent:
                state[name] = self.stacked.get_buffer(_key(name))[index]
        return {name: value.detach().clone() for name, value in state.items()}
