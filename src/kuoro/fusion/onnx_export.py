"""A trained fusion model as an ONNX graph, for runtimes other than Kuoro's (onnxruntime, …).

The graph is built node by node with ``onnx.helper`` from the arrays of the numpy model
(``NumpyFusion.to_arrays``), mirroring ``kuoro.fusion.numpy_model`` operation for operation,
so that it computes what ``NumpyFusion.predict_scores`` computes, in float32, members
included. (Not with torch's exporter: the numpy model is the one served, and a graph of
plain operators needs no torch at all.) Opset 17, IR version 8.

The layout (``INPUT_LAYOUT``, also in the model's ``doc_string``):

* input ``features``: float32 (m, F), one row per candidate, the columns of
  ``kuoro.fusion.candidates.feature_names(S)`` as ``build_candidates`` computes them (the
  metadata ``feature_names`` lists them). Rows may come in any order and from any number of
  documents: every term is a function of the row alone, since the document's columns (each
  source's ``top``, ``mass``, ``count``) are repeated on each of its rows, and the gate's
  per-document softmax and top-k are over the sources of the row. The ``prior`` column is
  not read: the graph holds the model's prior and fills it from ``concepts``. The
  ``implied``, ``implied_lift`` and ``corpus_prior`` columns depend on the document's other
  candidates: the caller computes them from the table saved with the model
  (``cooccurrence.npz``, ``SubjectCooccurrence.features``), or leaves them 0 for a model
  trained without one.
* input ``concepts``: int64 (m,), each candidate's concept id, below the metadata
  ``n_concepts`` (unused by ``mean``, which has no per-concept parameters).
* output ``scores``: float32 (m,), the fused score in [0, 1] (the members' mean);
  ``member_scores``: float32 (N, m), each member's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from kuoro.fusion.candidates import feature_names
from kuoro.fusion.numpy_model import NumpyFusion
from kuoro.util.atomic import atomic_write

__all__ = ["INPUT_LAYOUT", "OPSET", "onnx_model", "write_onnx"]

OPSET = 17
IR_VERSION = 8
# The largest protobuf is 2 GB: bigger models keep their arrays in a file beside.
EXTERNAL_DATA_BYTES = 1_800_000_000

INPUT_LAYOUT = """\
inputs:  features  float32 [m, F]  one row per candidate: the F columns of
                                   kuoro.fusion.candidates.feature_names(S), as
                                   build_candidates computes them (metadata feature_names);
                                   rows in any order, of any documents; the prior column
                                   is not read (the model fills it from concepts); the
                                   implied, implied_lift and corpus_prior columns come
                                   from the model's cooccurrence.npz (0 without one)
         concepts  int64   [m]     each candidate's concept id (< metadata n_concepts)
outputs: scores         float32 [m]     the fused score in [0, 1]
         member_scores  float32 [N, m]  each member's score (scores is their mean)"""


class _Graph:
    """Nodes and constants of a graph under construction, with unique names."""

    def __init__(self) -> None:
        import onnx  # noqa: F401 (fail here, with ImportError, when it is missing)

        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._count = 0

    def _name(self, kind: str) -> str:
        self._count += 1
        return f"{kind}_{self._count}"

    def const(self, array: np.ndarray | np.generic | float, name: str | None = None) -> str:
        from onnx import numpy_helper

        value = np.asarray(array)
        if value.dtype == np.float64:
            value = value.astype(np.float32)
        name = name or self._name("const")
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, *inputs: str, outputs: int = 1, **attributes: Any) -> Any:
        """The node's output name (a list of names when ``outputs`` > 1)."""
        from onnx import helper

        names = [self._name(op_type) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, **attributes))
        return names[0] if outputs == 1 else names

    def columns(self, matrix: str, columns: np.ndarray) -> str:
        """matrix[:, columns]: a Slice when they are evenly spaced (onnxruntime's Gather
        along columns is several times slower), else a Gather."""
        columns = np.asarray(columns, np.int64)
        steps = np.diff(columns)
        if len(columns) and (len(columns) == 1 or (steps[0] > 0 and (steps == steps[0]).all())):
            step = int(steps[0]) if len(steps) else 1
            bounds = [np.array([columns[0]]), np.array([columns[-1] + 1])]
            axes, by = np.array([1]), np.array([step])
            return str(self.op("Slice", matrix, *map(self.const, (*bounds, axes, by))))
        return str(self.op("Gather", matrix, self.const(columns), axis=1))

    def rows(self, table: np.ndarray, concepts: str, name: str) -> str:
        """table[:, concepts]: each member's rows of a per-concept table."""
        return str(self.op("Gather", self.const(table, name), concepts, axis=1))

    def sum_last(self, x: str) -> str:
        return str(self.op("ReduceSum", x, self.const(np.array([-1])), keepdims=0))


def _log1p(g: _Graph, x: str) -> str:
    """log(1 + x) without losing a small x: log(u) · x / (u - 1) with u = 1 + x (x where u
    rounds to 1), accurate to a few ulps as numpy's log1p is."""
    one = g.const(np.float32(1))
    u = g.op("Add", x, one)
    d = g.op("Sub", u, one)
    ratio = g.op("Mul", g.op("Log", u), g.op("Div", x, d))
    return str(g.op("Where", g.op("Equal", d, g.const(np.float32(0))), x, ratio))


def _mean_values(g: _Graph, a: Mapping[str, np.ndarray], scores: str) -> str:
    weights = a["weights"]  # (N, S)
    return str(
        g.op("Transpose", g.op("MatMul", scores, g.const(weights.T, "weights")), perm=[1, 0])
    )


def _linear_values(g: _Graph, a: Mapping[str, np.ndarray], scores: str, concepts: str) -> str:
    weights = g.rows(a["source_weight"], concepts, "source_weight")  # (N, m, S)
    z = g.sum_last(g.op("Mul", _log1p(g, scores), weights))
    z = g.op("Add", z, g.rows(a["concept_bias"], concepts, "concept_bias"))
    z = g.op("Add", z, g.const(a["bias"][:, None], "bias"))
    return str(g.op("Mul", g.const(np.float32(a["output_scale"])), z))


def _keep_top_k(g: _Graph, logits: str, k: int, minus_inf: str) -> str:
    """The k largest of each row over the sources, the rest -inf; ties to the lower index
    (ONNX's TopK breaks them so, as the numpy model's stable sort does)."""
    _, top = g.op("TopK", logits, g.const(np.array([k])), outputs=2, axis=-1, largest=1, sorted=1)
    zeros = g.op("ConstantOfShape", g.op("Shape", logits))  # float32 zeros by default
    ones = g.op(
        "ConstantOfShape",
        g.op("Shape", top),
        value=_tensor(np.ones(1, np.float32)),
    )
    keep = g.op("ScatterElements", zeros, top, ones, axis=-1)
    return str(g.op("Where", g.op("Greater", keep, g.const(np.float32(0.5))), logits, minus_inf))


def _tensor(array: np.ndarray) -> Any:
    from onnx import numpy_helper

    return numpy_helper.from_array(array)


def _kuoro_values(
    g: _Graph,
    a: Mapping[str, np.ndarray],
    features: str,
    scores: str,
    concepts: str,
    prior: np.ndarray | None,
    names: tuple[str, ...],
) -> str:
    minus_inf = g.const(np.float32(-np.inf))
    # The gate, per row: the document's columns are on every row of the document.
    # One product with all the feature columns, zero weights where the gate reads none:
    # onnxruntime gathers columns several times slower than it multiplies.
    n_features = len(names)
    n_members, n_sources = a["gate_prior"].shape
    gate_w = np.zeros((n_members, n_features, n_sources), np.float32)  # (N, F, S)
    gate_w[:, a["gate_columns"], :] = a["gate_weight"].transpose(0, 2, 1)
    logits = g.op("MatMul", features, g.const(gate_w, "gate_weight"))  # (N, m, S)
    logits = g.op("Add", g.const(a["gate_prior"][:, None, :], "gate_prior"), logits)
    silent = g.op("LessOrEqual", g.columns(features, a["count_columns"]), g.const(np.float32(0)))
    spoke = g.op("Cast", g.op("Not", silent), to=1)  # to float
    some_spoke = g.op(
        "Greater", g.op("ReduceMax", spoke, axes=[-1], keepdims=1), g.const(np.float32(0))
    )
    logits = g.op("Where", g.op("And", silent, some_spoke), minus_inf, logits)
    k = int(a["gate_top_k"])
    if k:
        logits = _keep_top_k(g, logits, k, minus_inf)
    gate = g.op("Softmax", logits, axis=-1)
    mean = g.sum_last(g.op("Mul", gate, scores))  # (N, m)

    eps = np.float32(a["logit_eps"])
    p = g.op("Clip", mean, g.const(eps), g.const(np.float32(1) - eps))
    mean_logit = g.op("Log", g.op("Div", p, g.op("Sub", g.const(np.float32(1)), p)))
    scale = np.exp(a["log_scale"])[:, None]  # float32, as the numpy model's
    calibrated = g.op(
        "Add",
        g.op("Mul", mean_logit, g.const(scale, "scale")),
        g.const(a["shift"][:, None], "shift"),
    )

    n_layers = int(a["mlp_layers"])
    first = a["mlp_weight_0"]  # (N, H, F + 1): the features, then the gated mean
    first_w = np.ascontiguousarray(first[:, :, :-1].transpose(0, 2, 1))  # (N, F, H)
    by_mean = g.op("Unsqueeze", mean, g.const(np.array([-1])))  # (N, m, 1)
    # Rank-one terms as products over a dimension of 1: faster than broadcasting Mul.
    extra = g.op("MatMul", by_mean, g.const(first[:, None, :, -1], "mlp_mean_weight_0"))
    if prior is not None:
        # The prior column from the model's own prior, not from the input.
        at = names.index("prior")
        prior_w = first_w[:, at : at + 1, :].copy()  # (N, 1, H)
        first_w[:, at, :] = 0
        column = g.op(
            "Unsqueeze",
            g.op("Gather", g.const(prior, "prior"), concepts, axis=0),
            g.const(np.array([1])),
        )  # (m, 1)
        by_prior = g.op("MatMul", column, g.const(prior_w, "mlp_prior_weight_0"))
        extra = g.op("Add", extra, by_prior)
    h = g.op("MatMul", features, g.const(first_w, "mlp_weight_0"))
    h = g.op("Add", h, g.op("Add", extra, g.const(a["mlp_bias_0"][:, None, :], "mlp_bias_0")))
    for i in range(1, n_layers):
        weight = np.ascontiguousarray(a[f"mlp_weight_{i}"].transpose(0, 2, 1))
        h = g.op("MatMul", g.op("Relu", h), g.const(weight, f"mlp_weight_{i}"))
        h = g.op("Add", h, g.const(a[f"mlp_bias_{i}"][:, None, :], f"mlp_bias_{i}"))
    correction = g.op("Squeeze", h, g.const(np.array([-1])))

    logits = g.op(
        "Add",
        g.op("Add", calibrated, correction),
        g.rows(a["concept_bias"], concepts, "concept_bias"),
    )
    if "concept_source" in a:
        trust = g.op("Mul", g.rows(a["concept_source"], concepts, "concept_source"), scores)
        logits = g.op("Add", logits, g.sum_last(trust))
    return str(logits)


def onnx_model(
    model: NumpyFusion,
    *,
    prior: np.ndarray | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Any:
    """The ONNX ``ModelProto`` of ``model`` (see the module's docstring for its layout).

    ``prior``: (n_concepts,) float32 the prior feature of every concept
    (``ConceptPrior.feature``), which the graph puts in the ``prior`` column; None reads the
    column from the input. ``metadata``: more ``metadata_props`` (project, sources, …).
    Raises ImportError when the ``onnx`` package is missing.
    """
    from onnx import TensorProto, checker, helper

    a = model.to_arrays()
    n_sources, n_members = model.n_sources, model.n_members
    # A kuoro model reads the columns it was trained with (older models: fewer of them).
    names = (
        tuple(str(name) for name in a["feature_names"])
        if "feature_names" in a
        else feature_names(n_sources)
    )
    g = _Graph()
    features, concepts = "features", "concepts"
    score_columns = np.array([names.index(f"s{s}_score") for s in range(n_sources)])
    scores = g.columns(features, score_columns)  # (m, S): the sources' raw scores
    family = model.family
    if family == "mean":
        values = _mean_values(g, a, scores)
        member_scores = g.op("Identity", values)
    else:
        if family == "linear":
            values = _linear_values(g, a, scores, concepts)
        else:
            if prior is not None and model.n_concepts is not None:
                prior = np.asarray(prior, np.float32)
                if prior.shape != (model.n_concepts,):
                    raise ValueError(
                        f"prior of shape {prior.shape}, the model has {model.n_concepts} concepts"
                    )
            values = _kuoro_values(g, a, features, scores, concepts, prior, names)
        member_scores = g.op("Sigmoid", values)
    g.nodes.append(helper.make_node("Identity", [member_scores], ["member_scores"]))
    g.nodes.append(
        helper.make_node("ReduceMean", ["member_scores"], ["scores"], axes=[0], keepdims=0)
    )

    graph = helper.make_graph(
        g.nodes,
        f"kuoro_{family}",
        [
            helper.make_tensor_value_info(features, TensorProto.FLOAT, ["candidates", len(names)]),
            helper.make_tensor_value_info(concepts, TensorProto.INT64, ["candidates"]),
        ],
        [
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["candidates"]),
            helper.make_tensor_value_info(
                "member_scores", TensorProto.FLOAT, [n_members, "candidates"]
            ),
        ],
        initializer=g.initializers,
    )
    from kuoro.util.version import __version__

    proto = helper.make_model(
        graph,
        producer_name="kuoro",
        producer_version=__version__,
        doc_string=f"Kuoro fusion model ({family}, {n_members} member(s)).\n{INPUT_LAYOUT}",
        opset_imports=[helper.make_opsetid("", OPSET)],
    )
    proto.ir_version = IR_VERSION
    props = {
        "family": family,
        "members": str(n_members),
        "n_sources": str(n_sources),
        "n_concepts": "" if model.n_concepts is None else str(model.n_concepts),
        "feature_names": json.dumps(list(names)),
        "prior_column": "read" if family == "kuoro" and prior is None else "ignored",
        **(metadata or {}),
    }
    helper.set_model_props(proto, props)
    checker.check_model(proto)
    return proto


def write_onnx(proto: Any, path: Path) -> None:
    """Write the model atomically; one over protobuf's 2 GB limit keeps its arrays in
    ``PATH.data`` beside it."""
    import onnx

    if proto.ByteSize() < EXTERNAL_DATA_BYTES:
        with atomic_write(path) as out:
            out.write(proto.SerializeToString())
        return
    onnx.save_model(
        proto,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=f"{path.name}.data",
        size_threshold=1024,
    )
