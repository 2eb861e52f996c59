"""Read the ONNX graphs skl2onnx writes for linear models back into fastml IR.

How a graph is read
-------------------
The graph is interpreted once, node by node in its (topological) order, over a
small *abstract* domain: a tensor is described by what it means, never by
numbers computed from data.

``_Const``   an initializer or ``Constant``
``_Feat``    the graph input after preprocessing (a tuple of IR ``Scaler`` /
             ``Normalizer`` steps)
``_Cols``    score columns over one ``_Feat``: column ``j`` is
             ``f(x . w_j + b_j)`` or ``1 - f(...)``, with ``f`` a state of the
             small machine in ``_COL_UNARY`` / ``_COL_CONST`` (``id``,
             ``sigmoid``, ``mh`` for modified Huber, and their half-built
             states such as ``exp`` or ``clip``)
``_Dist``    row-normalised probabilities: ``softmax(cols)``,
             ``cols / sum(cols)``, or the same with SGDClassifier's guard that
             makes an all-zero row uniform
``_Mark``    a half-matched multi-node pattern (a row norm of the input, a row
             sum of probabilities, a step of the zero guard), tied by identity
             to the tensor it came from
``_ArgMax`` / ``_Label``   a predicted class index / class label

Every operator is one handler in ``_HANDLERS`` keyed by ``(domain, op_type)``;
elementwise operators look their argument kinds up in ``_BINARY``. Anything
absent from these tables raises :class:`~fastml.errors.UnsupportedModelError`
naming the node. At the end, the graph outputs are read: a label and a
probability (or score) tensor make a classifier, one score tensor a regressor.
ZipMap passes its input through, so graphs with and without it read the same.

Numbers are copied exactly as stored: float32 attributes and initializers are
widened to float64 without rounding. Steps read from a float32 graph carry
``Scaler.cast_params`` (the graph scales in float32).

Where the graph and scikit-learn disagree, the IR follows scikit-learn and this
reader accepts the graph only when the difference is confined to degenerate
rows: labels are the argmax of the scores (graphs that argmax tied, clipped or
saturated probabilities pick the first tied class), and rows with a zero norm
stay zero (a float64 graph's ``Div`` by the norm gives NaN). ONNX ``Normalizer``
MAX divides by the signed row maximum, not ``max |x|``: refused.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, numpy_helper

from fastml.errors import InvalidModelError, UnsupportedModelError
from fastml.ir import Linear, Normalizer, Pipeline, Scaler, TreeEnsemble

__all__ = ["from_onnx"]

_STANDARD = ("", "ai.onnx")
_ML = "ai.onnx.ml"
_CONTROL_FLOW = ("If", "Loop", "Scan", "SequenceMap")
_FLOATS = {TensorProto.FLOAT: 32, TensorProto.DOUBLE: 64}
_NORMS = {"L1": "l1", "L2": "l2", "MAX": "max"}
_POST_TRANSFORMS = ("NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO", "PROBIT")


# --------------------------------------------------------------------------- values


@dataclass(frozen=True, eq=False)
class _Const:
    value: np.ndarray
    name: str = ""


@dataclass(frozen=True, eq=False)
class _Feat:
    steps: tuple
    n: Optional[int]
    open: str = ""  # "sub" (a Div may complete the Scaler) or "mul" (an Add may)


@dataclass(frozen=True, eq=False)
class _Col:
    w: np.ndarray
    b: float
    fn: str = "id"
    comp: bool = False  # the column is 1 - fn(x . w + b)


@dataclass(frozen=True, eq=False)
class _Cols:
    cols: Tuple[_Col, ...]
    feat: _Feat
    biased: bool
    origin: str


@dataclass(frozen=True, eq=False)
class _Dist:
    of: _Cols
    kind: str  # "softmax" | "normalized" | "guarded"


@dataclass(frozen=True, eq=False)
class _Mark:
    tag: str
    ref: object


@dataclass(frozen=True, eq=False)
class _ArgMax:
    of: object


@dataclass(frozen=True, eq=False)
class _Label:
    classes: np.ndarray
    of: object


def _kind(v) -> str:
    return v.tag if isinstance(v, _Mark) else type(v).__name__[1:].lower()


# --------------------------------------------------------------------------- helpers


def _key(node) -> Tuple[str, str]:
    return ("" if node.domain in _STANDARD else node.domain, node.op_type)


def _where(node) -> str:
    return f"{node.op_type} node {node.name or '<unnamed>'!r}"


def _unsupported(node, what: str):
    return UnsupportedModelError(f"{_where(node)}: {what}")


def _invalid(node, what: str):
    return InvalidModelError(f"{_where(node)}: {what}")


def _tensor(t: TensorProto, owner: str) -> np.ndarray:
    if t.data_location == TensorProto.EXTERNAL or len(t.external_data):
        raise UnsupportedModelError(f"{owner}: tensor {t.name!r} uses external data, which is refused")
    try:
        a = numpy_helper.to_array(t)
    except Exception as e:  # malformed raw_data, unknown data_type, ...
        raise InvalidModelError(f"{owner}: tensor {t.name!r} cannot be read ({e})") from None
    if a.dtype == object:
        try:
            a = np.array([x.decode("utf-8") if isinstance(x, bytes) else x for x in a.ravel()],
                         dtype=object).reshape(a.shape)
        except UnicodeDecodeError:
            raise InvalidModelError(f"{owner}: tensor {t.name!r} holds strings that are not UTF-8") from None
    return a


def _attrs(node) -> Dict[str, AttributeProto]:
    return {a.name: a for a in node.attribute}


def _attr(node, name, kind, default=None):
    """One attribute of the expected type, or ``default`` when absent."""
    a = _attrs(node).get(name)
    if a is None:
        return default
    if a.type != kind:
        raise _invalid(node, f"attribute {name!r} has type {AttributeProto.AttributeType.Name(a.type)}, "
                             f"expected {AttributeProto.AttributeType.Name(kind)}")
    if kind == AttributeProto.FLOATS:
        # stored as float32: widening to float64 is exact
        v = np.array(a.floats, dtype=np.float32).astype(np.float64)
        if not np.all(np.isfinite(v)):
            raise _invalid(node, f"attribute {name!r} contains NaN or infinity")
        return v
    if kind == AttributeProto.INTS:
        return np.array(a.ints, dtype=np.int64)  # protobuf's containers convert in C
    try:
        if kind == AttributeProto.STRINGS:
            return [s.decode("utf-8") for s in a.strings]
        if kind == AttributeProto.STRING:
            return a.s.decode("utf-8")
    except UnicodeDecodeError:
        raise _invalid(node, f"attribute {name!r} is not UTF-8 text") from None
    if kind == AttributeProto.INT:
        return int(a.i)
    if kind == AttributeProto.FLOAT:
        return float(a.f)
    if kind == AttributeProto.TENSOR:
        return _tensor(a.t, _where(node))
    raise AssertionError(kind)


def _weights(node, value: np.ndarray, what: str) -> np.ndarray:
    if value.dtype.kind not in "fiu":
        raise _invalid(node, f"{what} has dtype {value.dtype}, expected numbers")
    v = value.astype(np.float64)  # float32 -> float64 is exact
    if not np.all(np.isfinite(v)):
        raise _invalid(node, f"{what} contains NaN or infinity")
    return v


def _scalar(node, v, what: str) -> float:
    if not isinstance(v, _Const) or v.value.size != 1:
        raise _unsupported(node, f"expected a single constant {what}")
    return float(_weights(node, v.value, what).ravel()[0])


def _ints(node, v, what: str) -> list:
    if not isinstance(v, _Const) or v.value.dtype.kind not in "iu":
        raise _unsupported(node, f"expected constant integer {what}")
    return [int(x) for x in v.value.ravel()]


def _row_vector(node, c: _Const, n: Optional[int], what: str) -> np.ndarray:
    """A per-feature constant broadcast along rows: shape (n,), (1, n) or a scalar."""
    v = _weights(node, c.value, what)
    if v.ndim > 2 or (v.ndim == 2 and v.shape[0] != 1):
        raise _unsupported(node, f"{what} of shape {v.shape} is not a per-feature vector")
    v = v.ravel()
    if v.size == 1 and n is not None:
        return np.full(n, v[0])
    if v.size == 1 and n is None:
        raise _unsupported(node, f"a scalar {what} needs a known number of input features")
    if n is not None and v.size != n:
        raise _invalid(node, f"{what} has {v.size} values for {n} features")
    return v


def _same_linear(a: _Col, b: _Col, sign: float) -> bool:
    return bool(np.array_equal(a.w, sign * b.w) and a.b == sign * b.b)


def _negate(c: _Col) -> _Col:
    return _Col(-c.w, -c.b, c.fn, c.comp)


def _positive(c0: _Col, c1: _Col) -> Optional[_Col]:
    """If two columns are ``[1 - f(s), f(s)]``, the column ``f(s)`` (uncomplemented)."""
    if c0.fn != c1.fn:
        return None
    if c0.comp != c1.comp and _same_linear(c0, c1, 1.0):
        if not c1.comp:
            return c1
        # [f(s), 1 - f(s)]: f odd-symmetric around 1/2, so 1 - f(s) = f(-s)
        return _negate(_Col(c1.w, c1.b, c1.fn)) if c1.fn in ("sigmoid", "mh") else None
    if not c0.comp and not c1.comp and _same_linear(c0, c1, -1.0):
        return c1  # [-s, s] for scores; [f(-s), f(s)] = [1 - f(s), f(s)] for sigmoid / mh
    return None


# --------------------------------------------------------------------------- reader


class _Reader:
    def __init__(self, model: onnx.ModelProto):
        self.graph = model.graph
        self.values: Dict[str, object] = {}
        self.float_bits = 64

    # ---- driver
    def read(self):
        g = self.graph
        if not len(g.node) or not len(g.output):
            raise InvalidModelError("ONNX model has an empty graph (no nodes or no outputs)")
        if len(g.sparse_initializer):
            raise UnsupportedModelError("ONNX graph uses sparse initializers, which are not supported")
        for t in g.initializer:
            self.values[t.name] = _Const(_tensor(t, f"initializer {t.name!r}"), t.name)
        self._check_nodes()
        self._read_input()
        for node in g.node:
            args = []
            for name in node.input:
                if name and name not in self.values:
                    raise _invalid(node, f"uses tensor {name!r} that no earlier node produces")
                args.append(self.values[name] if name else None)
            handler, fewest, most = _HANDLERS[_key(node)]
            if not fewest <= len(args) <= most or any(a is None for a in args[:fewest]):
                raise _invalid(node, f"has {len(args)} inputs, expected {fewest}"
                                     + ("" if most == fewest else f" to {min(most, 5)}"))
            results = handler(self, node, args)
            for name, value in zip(node.output, results):
                if name:
                    self.values[name] = value
        for o in g.output:
            if o.name not in self.values:
                raise InvalidModelError(f"graph output {o.name!r} is produced by no node")
        return self._finish([(o.name, self.values[o.name]) for o in g.output])

    def _check_nodes(self):
        for node in self.graph.node:
            domain = node.domain or ""
            if domain not in _STANDARD and domain != _ML:
                raise _unsupported(node, f"custom operator domain {domain!r} is refused")
            if node.op_type in _CONTROL_FLOW or any(
                    a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for a in node.attribute):
                raise _unsupported(node, "control flow and subgraphs are refused")
            if _key(node) not in _HANDLERS:
                raise _unsupported(node, f"operator {domain or 'ai.onnx'}::{node.op_type} is not supported "
                                         f"by fastml's ONNX reader")

    def _read_input(self):
        inits = {t.name for t in self.graph.initializer}
        inputs = [i for i in self.graph.input if i.name not in inits]
        if len(inputs) != 1:
            raise UnsupportedModelError(f"expected one graph input (the feature matrix), got {len(inputs)}: "
                                        f"{[i.name for i in inputs]}")
        x = inputs[0]
        tt = x.type.tensor_type if x.type.HasField("tensor_type") else None
        if tt is None or tt.elem_type not in _FLOATS:
            raise UnsupportedModelError(f"graph input {x.name!r} must be a float or double tensor")
        self.float_bits = _FLOATS[tt.elem_type]
        n = None
        if tt.HasField("shape"):
            dims = tt.shape.dim
            if len(dims) != 2:
                raise UnsupportedModelError(f"graph input {x.name!r} must be 2-D (rows, features), "
                                            f"got rank {len(dims)}")
            if dims[1].HasField("dim_value") and dims[1].dim_value > 0:
                n = int(dims[1].dim_value)
        self.values[x.name] = _Feat(steps=(), n=n)

    # ---- the end: outputs -> IR
    def _finish(self, outs):
        if any(_trees.is_tree_value(v) for _, v in outs):
            return _trees.finish(outs, self.graph.name)
        if any(_nn.is_nn_value(v) for _, v in outs):
            return _nn.finish(outs, self.graph.name, self.float_bits)
        if any(_svm.is_svm_value(v) for _, v in outs):
            return _svm.finish(outs, self.graph.name)
        labels = [(n, v) for n, v in outs if isinstance(v, _Label)]
        others = [(n, v) for n, v in outs if not isinstance(v, _Label)]
        if len(labels) > 1 or len(others) > 1 or not others and not labels:
            raise UnsupportedModelError(
                f"expected a label and a probability/score output, or one regression output; got "
                f"{[(n, _kind(v)) for n, v in outs]}")
        if not labels:
            return self._regressor(*others[0])
        return self._classifier(labels[0], others[0] if others else None)

    def _regressor(self, name, v):
        if not isinstance(v, _Cols) or any(c.fn != "id" or c.comp for c in v.cols):
            raise UnsupportedModelError(f"output {name!r} is {_describe(v)}, expected linear regression scores")
        est = Linear(coef=np.stack([c.w for c in v.cols]), intercept=np.array([c.b for c in v.cols]),
                     is_classifier=False, flat=len(v.cols) == 1, name=v.origin)
        return _wrap(v.feat, est, self.graph.name)

    def _classifier(self, label, probs):
        (lname, label), k = label, len(label[1].classes)
        source = label.of.of if isinstance(label.of, _ArgMax) else label.of
        rows, feat, origin, _ = _rows(source, k, f"label output {lname!r}", for_label=True)
        proba = "none"
        if probs is not None:
            pname, probs = probs
            prow, pfeat, porigin, proba = _rows(probs, k, f"output {pname!r}", for_label=False)
            if pfeat is not feat or len(prow) != len(rows) or not all(
                    _same_linear(a, b, 1.0) for a, b in zip(prow, rows)):
                raise UnsupportedModelError(f"label output {lname!r} ({origin}) and output {pname!r} ({porigin}) "
                                            f"are computed from different scores")
            origin = porigin
        est = Linear(coef=np.stack([c.w for c in rows]), intercept=np.array([c.b for c in rows]),
                     is_classifier=True, classes=label.classes, proba=proba, name=origin)
        return _wrap(feat, est, self.graph.name)


def _describe(v) -> str:
    if isinstance(v, _Cols):
        return f"{len(v.cols)} column(s) {sorted({('1-' if c.comp else '') + c.fn for c in v.cols})}"
    if isinstance(v, _Dist):
        return f"{v.kind} of {_describe(v.of)}"
    return _kind(v)


_PROBA_OF_FN = {"id": "none", "sigmoid": "logistic", "mh": "modified_huber"}
_PROBA_OF_DIST = {("softmax", "id"): "softmax", ("normalized", "sigmoid"): "logistic",
                  ("guarded", "sigmoid"): "logistic", ("guarded", "mh"): "modified_huber"}


def _rows(v, n_classes: int, out: str, for_label: bool):
    """The IR score rows behind an output, its features, origin and ``proba`` kind."""
    cols = v.of if isinstance(v, _Dist) else v
    if not isinstance(cols, _Cols):
        raise UnsupportedModelError(f"{out} is {_kind(v)}, not derived from linear scores")
    what = f"{out} ({cols.origin})"
    fns = {c.fn for c in cols.cols}
    if len(fns) != 1 or not fns <= set(_PROBA_OF_FN):
        raise UnsupportedModelError(f"{what} is {_describe(v)}, which has no IR equivalent")
    fn = fns.pop()
    cs = cols.cols
    if n_classes == 2:
        # one score s, or a pair [-s, s] / [1 - p(s), p(s)]; softmax([-s, s]) is the binary multinomial
        pos = _positive(*cs) if len(cs) == 2 else (cs[0] if len(cs) == 1 and not cs[0].comp else None)
        proba = "softmax" if isinstance(v, _Dist) and v.kind == "softmax" else _PROBA_OF_FN[fn]
        if pos is None or (isinstance(v, _Dist) and proba != "softmax"):
            raise UnsupportedModelError(f"binary classifier: {what} is {_describe(v)}, expected one score, "
                                        f"[-s, s], [1 - p, p] or softmax([-s, s])")
        if len(cs) == 1 and fn != "id" and not for_label:
            raise UnsupportedModelError(f"binary classifier: {what} has one probability column ({fn}), "
                                        f"expected [1 - p, p]")
        return [_Col(pos.w, pos.b)], cols.feat, cols.origin, proba
    if any(c.comp for c in cs) or len(cs) != n_classes:
        raise UnsupportedModelError(f"{n_classes} classes: {what} is {_describe(v)}, "
                                    f"expected {n_classes} score columns")
    if isinstance(v, _Dist):
        proba = _PROBA_OF_DIST.get((v.kind, fn))
        if proba is None and not for_label:
            raise UnsupportedModelError(f"{what}: probabilities computed as {_describe(v)} have no IR equivalent")
    else:
        proba = "none"
        if fn != "id" and not for_label:
            raise UnsupportedModelError(f"{what}: probabilities computed as {_describe(v)} (not normalised) "
                                        f"have no IR equivalent")
    return [_Col(c.w, c.b) for c in cs], cols.feat, cols.origin, proba


def _wrap(feat: _Feat, est: Linear, graph_name: str):
    if not feat.steps:
        return est.validate()
    return Pipeline(steps=feat.steps, estimator=est, name=f"onnx:{graph_name or 'graph'}").validate()


# --------------------------------------------------------------------------- features


def _feat_step(feat: _Feat, step, n: int, open_: str = "") -> _Feat:
    return _Feat(steps=feat.steps + (step,), n=n, open=open_)


def _scaler(r, offset, scale, mode, name) -> Scaler:
    # the graph computes in its input's dtype: a float32 graph scales in float32
    return Scaler(offset, scale, mode, name, cast_params=r.float_bits == 32)


def _feat_affine(r, node, feat: _Feat, c: _Const, op: str) -> _Feat:
    v = _row_vector(node, c, feat.n, f"{op} constant {c.name!r}")
    name = f"{node.op_type}:{node.name}"
    last = feat.steps[-1] if feat.steps else None
    # complete "Sub then Div" (StandardScaler, RobustScaler, MaxAbsScaler) and
    # "Mul then Add" (MinMaxScaler) into one step with the source's exact order
    if op == "Div" and feat.open == "sub":
        return _Feat(feat.steps[:-1] + (_scaler(r, last.offset, v, "sub_div", f"{last.name}+{name}"),), v.size)
    if op == "Add" and feat.open == "mul":
        return _Feat(feat.steps[:-1] + (_scaler(r, v, last.scale, "mul_add", f"{last.name}+{name}"),), v.size)
    ones, zeros = np.ones(v.size), np.zeros(v.size)
    if op == "Sub":
        return _feat_step(feat, _scaler(r, v, ones, "sub_div", name), v.size, "sub")
    if op == "Div":
        return _feat_step(feat, _scaler(r, zeros, v, "sub_div", name), v.size)
    if op == "Mul":
        return _feat_step(feat, _scaler(r, zeros, v, "mul_add", name), v.size, "mul")
    return _feat_step(feat, _scaler(r, v, ones, "mul_add", name), v.size)  # Add


def _feat_normalize(r, node, feat: _Feat, mark: _Mark) -> _Feat:
    if mark.ref is not feat:
        raise _unsupported(node, "divides the input by the norm of a different tensor")
    return _feat_step(feat, Normalizer(mark.tag[len("feat_"):], f"{node.op_type}:{node.name}", feat.n), feat.n)


# --------------------------------------------------------------------------- score columns

# elementwise state machine of one score column: (op, state) -> state
_COL_UNARY = {
    ("Sigmoid", "id"): "sigmoid",
    ("Exp", "id"): "exp",
    ("Reciprocal", "exp+1"): "sigmoid-",  # 1 / (1 + exp(t)) = sigmoid(-t)
}
# (op, state, constant) -> state
_COL_CONST = {
    ("Add", "exp", 1.0): "exp+1",
    ("Add", "clip", 1.0): "clip+1",
    ("Div", "clip+1", 2.0): "mh",
    ("Mul", "clip+1", 0.5): "mh",
}


def _map_cols(cols: _Cols, f) -> _Cols:
    return _Cols(tuple(f(c) for c in cols.cols), cols.feat, cols.biased, cols.origin)


def _cols_unary(r, node, cols: _Cols) -> _Cols:
    if node.op_type == "Abs" and all(c.fn in ("sigmoid", "mh") for c in cols.cols):
        return cols  # probabilities are >= 0; keeping the object keeps Div(p, ReduceSum(Abs(p))) matchable
    out = []
    for c in cols.cols:
        state = _COL_UNARY.get((node.op_type, c.fn))
        if state is None or c.comp:
            raise _unsupported(node, f"no pattern for {node.op_type} on score columns in state "
                                     f"{('1-' if c.comp else '') + c.fn!r}")
        out.append(_Col(-c.w, -c.b, "sigmoid") if state == "sigmoid-" else _Col(c.w, c.b, state, c.comp))
    return _Cols(tuple(out), cols.feat, cols.biased, cols.origin)


def _add_bias(node, cols: _Cols, c: _Const) -> _Cols:
    b = _weights(node, c.value, f"intercept {c.name!r}").ravel()
    k = len(cols.cols)
    if b.size not in (1, k) or (c.value.ndim == 2 and c.value.shape[0] != 1) or c.value.ndim > 2:
        raise _invalid(node, f"intercept {c.name!r} of shape {c.value.shape} does not match {k} score columns")
    b = np.broadcast_to(b, (k,))
    return _Cols(tuple(_Col(x.w, float(bj)) for x, bj in zip(cols.cols, b)), cols.feat, True, cols.origin)


def _cols_const(r, node, cols: _Cols, c: _Const) -> _Cols:
    op = node.op_type
    if op == "Add" and not cols.biased and all(x.fn == "id" and not x.comp for x in cols.cols):
        return _add_bias(node, cols, c)
    value = _scalar(node, c, "operand")
    if op == "Mul" and value == -1.0 and all(x.fn == "id" and not x.comp for x in cols.cols):
        return _map_cols(cols, _negate)
    out = []
    for x in cols.cols:
        state = _COL_CONST.get((op, x.fn, value))
        if state is None or x.comp:
            raise _unsupported(node, f"no pattern for {op} by {value!r} on score columns in state {x.fn!r}")
        out.append(_Col(x.w, x.b, state))
    return _Cols(tuple(out), cols.feat, cols.biased, cols.origin)


def _one_minus(r, node, c: _Const, cols: _Cols) -> _Cols:
    if _scalar(node, c, "operand") != 1.0 or any(x.fn not in ("sigmoid", "mh") for x in cols.cols):
        raise _unsupported(node, "only 1 - probability is supported on score columns")
    return _map_cols(cols, lambda x: _Col(x.w, x.b, x.fn, not x.comp))


def _dist(node, cols: _Cols, kind: str):
    fns = {c.fn for c in cols.cols}
    if kind == "softmax":
        if fns != {"id"} or any(c.comp for c in cols.cols):
            raise _unsupported(node, "softmax of anything but raw scores has no IR equivalent")
        return _Dist(cols, kind)
    if len(fns) != 1 or not fns <= {"sigmoid", "mh"}:
        raise _unsupported(node, f"normalises {_describe(cols)}, expected sigmoid or modified-Huber columns")
    if len(cols.cols) == 2 and _positive(*cols.cols) is not None:
        return cols  # [1 - p, p] already sums to 1
    return _Dist(cols, kind)


def _cols_div_rowsum(r, node, cols: _Cols, m: _Mark):
    if m.ref is not cols:
        raise _unsupported(node, "divides probabilities by the sum of a different tensor")
    return _dist(node, cols, "normalized")


# SGDClassifier's guard: p / sum(p), or 1/K where sum(p) == 0. Each step is a _Mark on p.
_NORM_MARKS = ("feat_l1", "feat_l2", "feat_max")
#: scikit-learn's zero-norm threshold (``_handle_zeros_in_scale``): 10 eps of the dtype
_TINY = (10 * float(np.finfo(np.float32).eps), 10 * float(np.finfo(np.float64).eps))


def _norm_small(r, node, norm: _Mark, c: _Const):
    """``Less(norm, 10 eps)``: the rows whose norm scikit-learn treats as zero."""
    if norm.tag not in _NORM_MARKS:
        raise _unsupported(node, f"no pattern for Less on {norm.tag}")
    tiny = _scalar(node, c, "zero-norm threshold")
    if not any(tiny == t or tiny == float(np.float32(t)) for t in _TINY):
        raise _unsupported(node, f"zero-norm threshold {tiny!r} is not scikit-learn's 10 * eps")
    return _Mark("small:" + norm.tag, norm)


def _h_where(r, node, args):
    """``Where(norm < 10 eps, 1, norm)``: scikit-learn's zero-norm guard, the norm it guards."""
    cond, one, norm = args
    if not (isinstance(cond, _Mark) and cond.tag.startswith("small:") and cond.ref is norm):
        raise _unsupported(node, "only the zero-norm guard Where(norm < 10 eps, 1, norm) is supported")
    if _scalar(node, one, "value for zero norms") != 1.0:
        raise _unsupported(node, "the zero-norm guard must use 1 for zero norms")
    return [norm]


def _guard_add(r, node, cols: _Cols, m: _Mark):
    if m.ref is not cols:
        raise _unsupported(node, "zero guard of a different tensor")
    return _Mark("guarded", cols)


def _guard_mul_k(r, node, m: _Mark, c: _Const):
    if _scalar(node, c, "class count") != len(m.ref.cols):
        raise _unsupported(node, "zero guard does not multiply by the number of classes")
    return _Mark("zero_ind_k", m.ref)


def _guard_sum(r, node, a: _Mark, b: _Mark):
    if a.ref is not b.ref:
        raise _unsupported(node, "zero guard of a different tensor")
    return _Mark("guarded_sum", a.ref)


def _guard_div(r, node, a: _Mark, b: _Mark):
    if a.ref is not b.ref:
        raise _unsupported(node, "zero guard of a different tensor")
    return _dist(node, a.ref, "guarded")


# (op, kind of a, kind of b) -> handler(reader, node, a, b); Add and Mul also try (b, a)
_BINARY: Dict[Tuple[str, str, str], Callable] = {
    ("Sub", "feat", "const"): lambda r, n, a, b: _feat_affine(r, n, a, b, "Sub"),
    ("Div", "feat", "const"): lambda r, n, a, b: _feat_affine(r, n, a, b, "Div"),
    ("Mul", "feat", "const"): lambda r, n, a, b: _feat_affine(r, n, a, b, "Mul"),
    ("Add", "feat", "const"): lambda r, n, a, b: _feat_affine(r, n, a, b, "Add"),
    ("Mul", "feat", "feat"): lambda r, n, a, b: _same_feat_mark(n, a, b, "feat_sq"),
    ("Div", "feat", "feat_l1"): _feat_normalize,
    ("Div", "feat", "feat_l2"): _feat_normalize,
    ("Div", "feat", "feat_max"): _feat_normalize,
    **{("Less", tag, "const"): _norm_small for tag in ("feat_l1", "feat_l2", "feat_max")},
    ("Add", "cols", "const"): _cols_const,
    ("Mul", "cols", "const"): _cols_const,
    ("Div", "cols", "const"): _cols_const,
    ("Sub", "const", "cols"): _one_minus,
    ("Div", "cols", "rowsum"): _cols_div_rowsum,
    ("Add", "cols", "zero_ind"): _guard_add,
    ("Mul", "zero_ind", "const"): _guard_mul_k,
    ("Add", "rowsum", "zero_ind_k"): _guard_sum,
    ("Div", "guarded", "guarded_sum"): _guard_div,
}


def _same_feat_mark(node, a, b, tag):
    if a is not b:
        raise _unsupported(node, "multiplies two different inputs")
    return _Mark(tag, a)


# --------------------------------------------------------------------------- handlers


def _h_binary(r, node, args):
    a, b = args
    f = _BINARY.get((node.op_type, _kind(a), _kind(b)))
    if f is None and node.op_type in ("Add", "Mul"):
        f0 = _BINARY.get((node.op_type, _kind(b), _kind(a)))
        if f0 is not None:
            a, b, f = b, a, f0
    if f is None:
        raise _unsupported(node, f"no pattern for {node.op_type}({_kind(args[0])}, {_kind(args[1])})")
    return [f(r, node, a, b)]


def _h_unary(r, node, args):
    x = args[0]
    op, k = node.op_type, _kind(x)
    if k == "cols":
        return [_cols_unary(r, node, x)]
    table = {("Abs", "feat"): "feat_abs", ("Sqrt", "feat_sumsq"): "feat_l2", ("Not", "nonzero"): "iszero"}
    tag = table.get((op, k))
    if tag is None:
        raise _unsupported(node, f"no pattern for {op} on {k}")
    return [_Mark(tag, x.ref if isinstance(x, _Mark) else x)]


def _axes(node, args) -> list:
    axes = _attr(node, "axes", AttributeProto.INTS)
    if axes is None and len(args) > 1 and args[1] is not None:
        axes = _ints(node, args[1], "axes")
    return [] if axes is None else [int(a) for a in axes]


def _h_reduce(r, node, args):
    x = args[0]
    axes = _axes(node, args)
    if axes not in ([1], [-1]) or _attr(node, "keepdims", AttributeProto.INT, 1) != 1:
        raise _unsupported(node, f"only a row-wise reduction (axes=[1], keepdims=1) is supported, got axes={axes}")
    table = {
        ("ReduceSum", "cols"): "rowsum", ("ReduceSum", "feat_abs"): "feat_l1",
        ("ReduceSum", "feat_sq"): "feat_sumsq", ("ReduceSumSquare", "feat"): "feat_sumsq",
        ("ReduceL1", "feat"): "feat_l1", ("ReduceL2", "feat"): "feat_l2", ("ReduceMax", "feat_abs"): "feat_max",
    }
    tag = table.get((node.op_type, _kind(x)))
    if tag is None:
        raise _unsupported(node, f"no pattern for {node.op_type} on {_kind(x)}")
    if tag == "rowsum" and any(c.fn not in ("sigmoid", "mh") for c in x.cols):
        raise _unsupported(node, "sums score columns that are not probabilities")
    return [_Mark(tag, x.ref if isinstance(x, _Mark) else x)]


def _h_matmul(r, node, args):
    x, w = args
    if not isinstance(x, _Feat) or not isinstance(w, _Const):
        raise _unsupported(node, f"expected MatMul(features, constant weights), got ({_kind(x)}, {_kind(w)})")
    return [_linear(r, node, x, w, transposed=False)]


def _h_gemm(r, node, args):
    x, w = args[0], args[1]
    c = args[2] if len(args) > 2 else None
    if not isinstance(x, _Feat) or not isinstance(w, _Const) or (c is not None and not isinstance(c, _Const)):
        raise _unsupported(node, "expected Gemm(features, constant weights, constant bias)")
    if (_attr(node, "alpha", AttributeProto.FLOAT, 1.0) != 1.0 or _attr(node, "beta", AttributeProto.FLOAT, 1.0) != 1.0
            or _attr(node, "transA", AttributeProto.INT, 0) != 0):
        raise _unsupported(node, "only alpha=1, beta=1, transA=0 is supported")
    trans = bool(_attr(node, "transB", AttributeProto.INT, 0))
    cols = _linear(r, node, x, w, transposed=trans)
    return [cols if c is None else _add_bias(node, cols, c)]


def _linear(r, node, feat: _Feat, c: _Const, transposed: bool) -> _Cols:
    w = _weights(node, c.value, f"weight matrix {c.name!r}")
    if w.ndim == 1:
        w = w[:, None]
    if w.ndim != 2:
        raise _invalid(node, f"weight matrix must be 2-D, got shape {w.shape}")
    coef = w if transposed else w.T  # (k, n)
    if feat.n is not None and coef.shape[1] != feat.n:
        raise _invalid(node, f"weight matrix has {coef.shape[1]} rows for {feat.n} features")
    cols = tuple(_Col(np.ascontiguousarray(row), 0.0) for row in coef)
    return _Cols(cols, feat, False, f"{node.op_type}:{node.name}")


def _h_softmax(r, node, args):
    x = args[0]
    if not isinstance(x, _Cols) or _attr(node, "axis", AttributeProto.INT, -1) not in (1, -1):
        raise _unsupported(node, "expected a row-wise softmax of score columns")
    return [_dist(node, x, "softmax")]


def _h_clip(r, node, args):
    x = args[0]
    lo = args[1] if len(args) > 1 else None
    hi = args[2] if len(args) > 2 else None
    lo = _scalar(node, lo, "min") if lo is not None else _attr(node, "min", AttributeProto.FLOAT)
    hi = _scalar(node, hi, "max") if hi is not None else _attr(node, "max", AttributeProto.FLOAT)
    if not isinstance(x, _Cols) or (lo, hi) != (-1.0, 1.0) or any(c.fn != "id" or c.comp for c in x.cols):
        raise _unsupported(node, "only Clip(scores, -1, 1) (modified Huber) is supported")
    return [_map_cols(x, lambda c: _Col(c.w, c.b, "clip"))]


def _h_concat(r, node, args):
    if _attr(node, "axis", AttributeProto.INT) not in (1, -1):
        raise _unsupported(node, "only concatenation of columns (axis=1) is supported")
    if not args or not all(isinstance(a, _Cols) for a in args):
        raise _unsupported(node, f"expected score columns, got {[_kind(a) for a in args]}")
    if any(a.feat is not args[0].feat for a in args):
        raise _unsupported(node, "concatenates scores computed from different inputs")
    if len(args) == 1:
        return [args[0]]
    cols = tuple(c for a in args for c in a.cols)
    origins = {a.origin for a in args}
    origin = origins.pop() if len(origins) == 1 else f"{node.op_type}:{node.name}"
    return [_Cols(cols, args[0].feat, any(a.biased for a in args), origin)]


def _select(node, cols: _Cols, idx: list) -> _Cols:
    k = len(cols.cols)
    if any(i < 0 or i >= k for i in idx):
        raise _invalid(node, f"column index out of range: {idx} for {k} columns")
    return _Cols(tuple(cols.cols[i] for i in idx), cols.feat, cols.biased, cols.origin)


def _h_slice(r, node, args):
    x = args[0]
    if not isinstance(x, _Cols):
        raise _unsupported(node, f"expected score columns, got {_describe(x)}")
    if len(args) >= 3:
        starts, ends = _ints(node, args[1], "starts"), _ints(node, args[2], "ends")
        axes = _ints(node, args[3], "axes") if len(args) > 3 and args[3] is not None else None
        steps = _ints(node, args[4], "steps") if len(args) > 4 and args[4] is not None else [1]
    else:  # opset < 10: attributes
        starts = list(_attr(node, "starts", AttributeProto.INTS, []))
        ends = list(_attr(node, "ends", AttributeProto.INTS, []))
        axes = _attr(node, "axes", AttributeProto.INTS)
        steps = [1]
    axes = None if axes is None else [int(a) for a in axes]
    if len(starts) != 1 or len(ends) != 1 or axes not in ([1], [-1]) or steps != [1]:
        raise _unsupported(node, "only a column slice (axes=[1], steps=[1]) is supported")
    idx = list(range(len(x.cols)))[starts[0]:ends[0]]
    if not idx:
        raise _invalid(node, "selects no column")
    return [_select(node, x, idx)]


def _h_afe(r, node, args):
    data, idx = args
    if isinstance(data, _Const) and isinstance(idx, _ArgMax):
        classes = data.value.ravel()
        k = len(_score_cols(idx.of).cols)
        if classes.size != k:
            raise _invalid(node, f"{classes.size} class labels for {k} score columns")
        return [_Label(classes, idx)]
    if isinstance(data, _Cols) and isinstance(idx, _Const):
        return [_select(node, data, _ints(node, idx, "indices"))]
    raise _unsupported(node, f"no pattern for ArrayFeatureExtractor({_kind(data)}, {_kind(idx)})")


def _score_cols(v) -> _Cols:
    return v.of if isinstance(v, _Dist) else v


def _h_argmax(r, node, args):
    x = args[0]
    if not isinstance(x, (_Cols, _Dist)):
        raise _unsupported(node, f"expected ArgMax over scores or probabilities, got {_kind(x)}")
    if _attr(node, "axis", AttributeProto.INT, 0) not in (1, -1) or _attr(node, "select_last_index",
                                                                          AttributeProto.INT, 0) != 0:
        raise _unsupported(node, "only ArgMax over columns (axis=1, first index on ties) is supported")
    return [_ArgMax(x)]


def _h_cast(r, node, args):
    x = args[0]
    to = _attr(node, "to", AttributeProto.INT)
    if to is None:
        raise _invalid(node, "attribute 'to' is missing")
    if isinstance(x, _Label):
        try:
            dtype = onnx.helper.tensor_dtype_to_np_dtype(to)
        except Exception:
            raise _invalid(node, f"attribute 'to' = {to} is not a tensor type") from None
        if (x.classes.dtype == object) != (to == TensorProto.STRING):
            raise _unsupported(node, "casts class labels between strings and numbers")
        classes = x.classes if to == TensorProto.STRING else x.classes.astype(dtype)
        return [_Label(classes, x.of)]
    if isinstance(x, _Mark) and x.tag == "rowsum" and to == TensorProto.BOOL:
        return [_Mark("nonzero", x.ref)]
    if isinstance(x, _Mark) and x.tag == "iszero" and to in _FLOATS:
        return [_Mark("zero_ind", x.ref)]
    if isinstance(x, (_Feat, _Cols, _Dist)) and to in _FLOATS and _FLOATS[to] >= r.float_bits:
        return [x]  # same type or widening: exact
    raise _unsupported(node, f"no pattern for Cast of {_kind(x)} to "
                             f"{TensorProto.DataType.Name(to) if to in TensorProto.DataType.values() else to}")


def _h_reshape(r, node, args):
    x = args[0]
    if isinstance(x, (_Label, _Cols, _Dist)):
        shape = _ints(node, args[1], "shape") if len(args) > 1 else list(_attr(node, "shape", AttributeProto.INTS))
        k = 1 if isinstance(x, _Label) else len(_score_cols(x).cols)
        if shape in ([-1], [0]) and k == 1 or shape in ([-1, k], [0, k]) or (shape == [-1, 1] and k == 1):
            return [x]
        raise _unsupported(node, f"reshapes {k} column(s) to {shape}")
    raise _unsupported(node, f"no pattern for Reshape of {_kind(x)}")


def _h_identity(r, node, args):
    return [args[0]]


def _h_constant(r, node, args):
    a = node.attribute[0] if len(node.attribute) == 1 else None
    if a is None:
        raise _invalid(node, "expects exactly one value attribute")
    readers = {
        "value": lambda: _tensor(a.t, _where(node)),
        "value_float": lambda: np.asarray(a.f, dtype=np.float32),
        "value_floats": lambda: np.array(a.floats, dtype=np.float32),
        "value_int": lambda: np.asarray(a.i, dtype=np.int64),
        "value_ints": lambda: np.array(a.ints, dtype=np.int64),
    }
    if a.name not in readers:
        raise _unsupported(node, f"Constant with attribute {a.name!r} is not supported")
    return [_Const(readers[a.name](), node.output[0])]


def _h_zipmap(r, node, args):
    return [args[0]]  # a ZipMap output reads as the probabilities it wraps


# ---- ai.onnx.ml


def _post_transform(node) -> str:
    pt = _attr(node, "post_transform", AttributeProto.STRING, "NONE")
    if pt not in _POST_TRANSFORMS:
        raise _invalid(node, f"attribute 'post_transform' = {pt!r}, expected one of {_POST_TRANSFORMS}")
    return pt


def _ml_rows(node, feat: _Feat, rows: int) -> np.ndarray:
    coef = _attr(node, "coefficients", AttributeProto.FLOATS)
    if coef is None or coef.size == 0:
        raise _invalid(node, "attribute 'coefficients' is missing or empty")
    if rows <= 0 or coef.size % rows:
        raise _invalid(node, f"attribute 'coefficients' has {coef.size} values, not a multiple of "
                             f"the {rows} score rows")
    coef = coef.reshape(rows, -1)
    if feat.n is not None and coef.shape[1] != feat.n:
        raise _invalid(node, f"attribute 'coefficients' has {coef.shape[1]} per row for {feat.n} features")
    return coef


def _h_linear_classifier(r, node, args):
    feat = args[0]
    if not isinstance(feat, _Feat):
        raise _unsupported(node, f"expected features as input, got {_kind(feat)}")
    ints = _attr(node, "classlabels_ints", AttributeProto.INTS)
    strings = _attr(node, "classlabels_strings", AttributeProto.STRINGS)
    if (ints is None or not len(ints)) == (strings is None or not len(strings)):
        raise _invalid(node, "needs exactly one of the attributes 'classlabels_ints' / 'classlabels_strings'")
    classes = ints if ints is not None and len(ints) else np.array(strings, dtype=object)
    intercepts = _attr(node, "intercepts", AttributeProto.FLOATS)
    rows = len(intercepts) if intercepts is not None and intercepts.size else len(classes)
    coef = _ml_rows(node, feat, rows)
    if intercepts is None or not intercepts.size:
        intercepts = np.zeros(rows)
    k = len(classes)
    if not (rows == k or (rows == 1 and k == 2)):
        raise _invalid(node, f"{k} class labels need {k} score rows, but attribute 'intercepts' gives {rows}")
    pt = _post_transform(node)
    origin = f"{node.op_type}:{node.name}"
    raw = _Cols(tuple(_Col(w, float(b)) for w, b in zip(coef, intercepts)), feat, True, origin)
    label = _Label(classes, raw)
    if rows == 1:
        if pt != "NONE":
            # ONNX Runtime writes [1 - score, score] without applying the transform
            raise _unsupported(node, f"one score row with post_transform {pt} is ambiguous; not supported")
        s = raw.cols[0]
        return [label, _Cols((_Col(s.w, s.b, "id", True), s), feat, True, origin)]
    if pt == "NONE":
        return [label, raw]
    if pt == "LOGISTIC":
        return [label, _map_cols(raw, lambda c: _Col(c.w, c.b, "sigmoid"))]
    if pt == "SOFTMAX":
        return [label, _Dist(raw, "softmax")]
    raise _unsupported(node, f"post_transform {pt} has no IR equivalent")


def _h_linear_regressor(r, node, args):
    feat = args[0]
    if not isinstance(feat, _Feat):
        raise _unsupported(node, f"expected features as input, got {_kind(feat)}")
    targets = _attr(node, "targets", AttributeProto.INT, 1)
    coef = _ml_rows(node, feat, targets)
    intercepts = _attr(node, "intercepts", AttributeProto.FLOATS)
    if intercepts is None or not intercepts.size:
        intercepts = np.zeros(targets)
    if intercepts.size != targets:
        raise _invalid(node, f"attribute 'intercepts' has {intercepts.size} values for {targets} targets")
    pt = _post_transform(node)
    if pt != "NONE":
        raise _unsupported(node, f"post_transform {pt} on a regressor has no IR equivalent")
    cols = tuple(_Col(w, float(b)) for w, b in zip(coef, intercepts))
    return [_Cols(cols, feat, True, f"{node.op_type}:{node.name}")]


def _h_scaler(r, node, args):
    feat = args[0]
    if not isinstance(feat, _Feat):
        raise _unsupported(node, f"expected features as input, got {_kind(feat)}")
    offset = _attr(node, "offset", AttributeProto.FLOATS)
    scale = _attr(node, "scale", AttributeProto.FLOATS)
    n = feat.n or max(len(offset) if offset is not None else 0, len(scale) if scale is not None else 0) or None
    if n is None:
        raise _unsupported(node, "needs a known number of input features")
    vals = []
    for name, v, default in (("offset", offset, 0.0), ("scale", scale, 1.0)):
        if v is None or v.size == 0:
            v = np.full(n, default)
        elif v.size == 1:
            v = np.full(n, v[0])
        elif v.size != n:
            raise _invalid(node, f"attribute {name!r} has {v.size} values for {n} features")
        vals.append(v)
    return [_feat_step(feat, _scaler(r, vals[0], vals[1], "sub_mul", f"{node.op_type}:{node.name}"), n)]


def _h_normalizer(r, node, args):
    x = args[0]
    norm = _attr(node, "norm", AttributeProto.STRING, "MAX")
    if norm not in _NORMS:
        raise _invalid(node, f"attribute 'norm' = {norm!r}, expected one of {sorted(_NORMS)}")
    if isinstance(x, _Feat) and norm == "MAX":
        # ONNX (and ONNX Runtime) divide by the signed row maximum: [-4, -1, -2] -> [4, 1, 2];
        # scikit-learn and fastml's "max" divide by max |x|. Reading one as the other would
        # silently change results on rows whose largest magnitude is negative.
        raise _unsupported(node, "norm MAX divides by the signed row maximum, which has no IR equivalent "
                                 "(fastml's 'max' norm is max |x|, like scikit-learn)")
    if isinstance(x, _Feat):
        return [_feat_step(x, Normalizer(_NORMS[norm], f"{node.op_type}:{node.name}", x.n), x.n)]
    if norm == "L1" and isinstance(x, _Dist):
        return [x]  # probabilities already sum to 1
    if norm == "L1" and isinstance(x, _Cols):
        return [_dist(node, x, "normalized")]
    raise _unsupported(node, f"no pattern for Normalizer {norm} on {_describe(x)}")


def _h_lp_normalization(r, node, args):
    x = args[0]
    p = _attr(node, "p", AttributeProto.INT, 2)
    if _attr(node, "axis", AttributeProto.INT, -1) not in (1, -1) or p not in (1, 2):
        raise _unsupported(node, "only a row-wise L1 or L2 normalisation is supported")
    if isinstance(x, _Feat):
        return [_feat_step(x, Normalizer(f"l{p}", f"{node.op_type}:{node.name}", x.n), x.n)]
    if p == 1 and isinstance(x, _Cols):
        return [_dist(node, x, "normalized")]  # L1 of probabilities (>= 0) is their sum
    raise _unsupported(node, f"no pattern for LpNormalization p={p} on {_describe(x)}")


# (domain, op_type) -> (handler, fewest inputs, most inputs); the first `fewest` must be present
_HANDLERS: Dict[Tuple[str, str], Tuple[Callable, int, int]] = {
    **{("", op): (_h_binary, 2, 2) for op in ("Add", "Sub", "Mul", "Div", "Less")},
    ("", "Where"): (_h_where, 3, 3),
    **{("", op): (_h_unary, 1, 1) for op in ("Sigmoid", "Exp", "Reciprocal", "Abs", "Sqrt", "Not")},
    **{("", op): (_h_reduce, 1, 2) for op in ("ReduceSum", "ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceMax")},
    ("", "MatMul"): (_h_matmul, 2, 2),
    ("", "Gemm"): (_h_gemm, 2, 3),
    ("", "Softmax"): (_h_softmax, 1, 1),
    ("", "Clip"): (_h_clip, 1, 3),
    ("", "Concat"): (_h_concat, 1, 1 << 30),
    ("", "Slice"): (_h_slice, 1, 5),
    ("", "ArgMax"): (_h_argmax, 1, 1),
    ("", "Cast"): (_h_cast, 1, 1),
    ("", "Reshape"): (_h_reshape, 1, 2),
    ("", "Identity"): (_h_identity, 1, 1),
    ("", "Constant"): (_h_constant, 0, 0),
    ("", "LpNormalization"): (_h_lp_normalization, 1, 1),
    (_ML, "ArrayFeatureExtractor"): (_h_afe, 2, 2),
    (_ML, "LinearClassifier"): (_h_linear_classifier, 1, 1),
    (_ML, "LinearRegressor"): (_h_linear_regressor, 1, 1),
    (_ML, "Scaler"): (_h_scaler, 1, 1),
    (_ML, "Normalizer"): (_h_normalizer, 1, 1),
    (_ML, "ZipMap"): (_h_zipmap, 1, 1),
}

# tree ensembles live in their own module, which adds its handlers to these tables
from . import onnx_trees as _trees  # noqa: E402
from . import onnx_nn as _nn  # noqa: E402  (MLPs and k-means, likewise)
from . import onnx_svm as _svm  # noqa: E402


# --------------------------------------------------------------------------- entry point


def _load(model) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, (str, os.PathLike)):
        try:
            with open(model, "rb") as f:
                data = f.read()
        except OSError as e:
            raise InvalidModelError(f"cannot read ONNX file {os.fspath(model)!r}: {e.strerror or e}") from None
        where = f"ONNX file {os.fspath(model)!r}"
    elif isinstance(model, (bytes, bytearray, memoryview)):
        data, where = bytes(model), "ONNX bytes"
    else:
        raise UnsupportedModelError(f"from_onnx expects an onnx.ModelProto, bytes or a file path, "
                                    f"got {type(model).__name__}")
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except Exception as e:  # google.protobuf DecodeError and friends
        raise InvalidModelError(f"{where} is not a valid ONNX model ({type(e).__name__}: {e})") from None
    if not proto.HasField("graph"):
        raise InvalidModelError(f"{where} is not a valid ONNX model (no graph)")
    return proto


def from_onnx(model) -> Linear | TreeEnsemble | Pipeline:
    """Build fastml IR from an ONNX graph of a linear model or a tree ensemble (see ``onnx_trees``).

    Parameters
    ----------
    model : onnx.ModelProto, bytes or path-like
        A graph as skl2onnx writes it for linear classifiers and regressors,
        optionally preceded by scalers / normalizers, with float or double
        input, with or without ZipMap.

    Returns
    -------
    fastml.ir.Linear or fastml.ir.Pipeline
        Validated IR; a ``Pipeline`` when the graph preprocesses its input.

    Raises
    ------
    fastml.errors.InvalidModelError
        Unreadable bytes or file, malformed attributes or initializers.
    fastml.errors.UnsupportedModelError
        An operator, domain or graph shape this reader does not know, external
        data, control flow, or probabilities with no IR equivalent.
    """
    proto = _load(model)
    try:
        return _Reader(proto).read()
    except (InvalidModelError, UnsupportedModelError):
        raise
    except (ValueError, TypeError, IndexError, KeyError) as e:  # a shape no handler anticipated
        raise InvalidModelError(f"malformed ONNX graph: {type(e).__name__}: {e}") from None
