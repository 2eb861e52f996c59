"""Read the ONNX graphs skl2onnx writes for MLPs and k-means into :class:`fastml.ir.MLP` /
:class:`fastml.ir.Centroids`.

The handlers add themselves to :mod:`converters.onnx_import`'s tables (like
``onnx_trees``), so ``Scaler`` / ``Normalizer`` steps before the model and
``Cast`` / ``Identity`` / ``Reshape`` after it read as they do for linear models.

MLP graphs
----------
``MatMul`` (or ``Gemm``) + ``Add`` per layer, an activation node between layers
(``Relu``, ``Tanh``, ``Sigmoid``; none for identity), and at the end ``Softmax``
(multiclass), ``Sigmoid`` (binary: ``Concat(1 - p, p)``; multilabel:
``Binarizer(p, 0.5)`` for the labels), or nothing (regressors). The first layer
is read by the linear reader (score columns over the input); the first operator
that only a network can explain -- a second ``MatMul``, ``Tanh`` or ``Relu`` --
turns those columns into a ``_Net``, which then collects layers. Every hidden
layer must use the same activation (scikit-learn has one ``activation``).
A graph that reshapes several output columns into one (skl2onnx's
multi-output MLPRegressor writes ``Reshape(values, [-1, 1])``, so ONNX Runtime
returns ``(n * k, 1)``) has no IR equivalent and is refused.

k-means graphs
--------------
``ReduceSumSquare(X) * 0`` as Gemm's C term, ``Gemm(X, C, ., alpha=-2,
transB=1)``, ``+ ReduceSumSquare(X)``, ``+ ||c||^2``, then ``ArgMin`` (labels)
and ``Sqrt`` (``transform``). The ``||c||^2`` constant must match the centers
(within float32 rounding): another constant would be another model.

Numbers are copied exactly (float32 widens to float64 without rounding); a
float graph gives ``precision="float32"`` (ONNX Runtime computes it in float32),
a double graph ``"float64"``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import numpy as np
from onnx import AttributeProto, TensorProto

from fastml import ir
from fastml.errors import UnsupportedModelError

from . import onnx_import as _oi
from .onnx_import import (_ArgMax, _Cols, _Const, _Feat, _Mark, _attr, _describe, _invalid, _kind,
                          _scalar, _unsupported, _weights, _wrap)

_ACTS = {"Relu": "relu", "Tanh": "tanh", "Sigmoid": "logistic", "Softmax": "softmax"}


# --------------------------------------------------------------------------- values

@dataclass(frozen=True, eq=False)
class _Net:
    """Layers read so far; ``open``: the last layer's activation is not applied yet."""
    feat: _Feat
    weights: Tuple[np.ndarray, ...]
    biases: Tuple[np.ndarray, ...]
    acts: Tuple[str, ...]   # one per closed layer
    open: bool
    biased: bool

    @property
    def width(self) -> int:
        return int(self.weights[-1].shape[1])


@dataclass(frozen=True, eq=False)
class _NetComp:      # 1 - p of a one-column logistic output
    net: _Net


@dataclass(frozen=True, eq=False)
class _NetPair:      # [1 - p, p]
    net: _Net


@dataclass(frozen=True, eq=False)
class _NetLabel:
    net: _Net
    classes: np.ndarray
    rule: str        # "argmax" | "binarizer"


@dataclass(frozen=True, eq=False)
class _Sq:
    """Squared distances being built: ``-2 x.c`` (stage 1), ``+ ||x||^2`` (2), ``+ ||c||^2`` (3)."""
    feat: _Feat
    centers: np.ndarray
    stage: int


@dataclass(frozen=True, eq=False)
class _KOut:
    sq: _Sq
    what: str        # "labels" | "distances"


_NET_TYPES = (_Net, _NetComp, _NetPair, _NetLabel)
_KM_TYPES = (_Sq, _KOut)


def is_nn_value(v) -> bool:
    return isinstance(v, _NET_TYPES + _KM_TYPES) or (isinstance(v, _ArgMax) and isinstance(v.of, _NET_TYPES))


# --------------------------------------------------------------------------- MLP

def _as_net(node, v) -> Optional[_Net]:
    """A value seen as a network, or None: ``_Cols`` of the first layer become one."""
    if isinstance(v, _Net):
        return v
    if isinstance(v, _Cols) and v.cols:
        fns = {c.fn for c in v.cols}
        if any(c.comp for c in v.cols) or len(fns) != 1 or not fns <= {"id", "sigmoid"}:
            return None
        W = np.stack([c.w for c in v.cols], axis=1)
        b = np.array([c.b for c in v.cols])
        closed = fns == {"sigmoid"}
        return _Net(v.feat, (W,), (b,), ("logistic",) if closed else (), not closed, v.biased)
    return None


def _close(net: _Net, act: str) -> _Net:
    return _Net(net.feat, net.weights, net.biases, net.acts + (act,), False, net.biased)


def _layer(node, net: _Net, w: np.ndarray, b: Optional[np.ndarray]) -> _Net:
    if net.open:
        net = _close(net, "identity")  # no activation node between two layers
    if net.acts[-1] not in ir.MLP_HIDDEN:
        raise _unsupported(node, f"a hidden layer with activation {net.acts[-1]!r} has no IR equivalent")
    if w.ndim != 2 or w.shape[0] != net.width:
        raise _invalid(node, f"weight matrix of shape {w.shape} follows a layer of width {net.width}")
    bias = np.zeros(w.shape[1]) if b is None else b
    return _Net(net.feat, net.weights + (w,), net.biases + (bias,), net.acts, True, b is not None)


def _h_matmul(r, node, args):
    net = _as_net(node, args[0])
    if net is None or not isinstance(args[1], _Const):
        raise _unsupported(node, f"expected MatMul(layer output, constant weights), got "
                                 f"({_describe(args[0])}, {_kind(args[1])})")
    return [_layer(node, net, _weights(node, args[1].value, f"weight matrix {args[1].name!r}"), None)]


def _gemm_bias(node, net_width: int, c) -> np.ndarray:
    b = _weights(node, c.value, "bias").ravel()
    if b.size == 1:
        b = np.full(net_width, b[0])
    if b.size != net_width:
        raise _invalid(node, f"bias has {b.size} values for {net_width} outputs")
    return b


def _h_gemm_net(r, node, args):
    net = _as_net(node, args[0])
    w, c = args[1], args[2] if len(args) > 2 else None
    if net is None or not isinstance(w, _Const) or (c is not None and not isinstance(c, _Const)):
        raise _unsupported(node, "expected Gemm(layer output, constant weights, constant bias)")
    if (_attr(node, "alpha", AttributeProto.FLOAT, 1.0) != 1.0 or _attr(node, "beta", AttributeProto.FLOAT, 1.0) != 1.0
            or _attr(node, "transA", AttributeProto.INT, 0) != 0):
        raise _unsupported(node, "only alpha=1, beta=1, transA=0 is supported between layers")
    W = _weights(node, w.value, f"weight matrix {w.name!r}")
    if _attr(node, "transB", AttributeProto.INT, 0):
        W = W.T
    return [_layer(node, net, W, None if c is None else _gemm_bias(node, W.shape[1], c))]


def _add_bias(r, node, net: _Net, c: _Const):
    if not net.open or net.biased:
        raise _unsupported(node, "adds a constant to a layer output that already has its bias")
    b = _gemm_bias(node, net.width, c)
    return _Net(net.feat, net.weights, net.biases[:-1] + (b,), net.acts, True, True)


def _h_activation(r, node, args):
    net = _as_net(node, args[0])
    if net is None or not net.open:
        raise _unsupported(node, f"no pattern for {node.op_type} on {_describe(args[0])}")
    if node.op_type == "Softmax" and _attr(node, "axis", AttributeProto.INT, -1) not in (1, -1):
        raise _unsupported(node, "expected a row-wise softmax")
    return [_close(net, _ACTS[node.op_type])]


def _one_minus(r, node, c: _Const, net: _Net):
    if _scalar(node, c, "minuend") != 1.0 or net.open or net.acts[-1] != "logistic" or net.width != 1:
        # skl2onnx's multilabel graph with ZipMap outputs [1 - p, p] of all k labels (2k columns),
        # which is not scikit-learn's predict_proba (k columns): no IR equivalent
        raise _unsupported(node, f"expected 1 - p of a one-column sigmoid output, got 1 - (a {net.width}-column "
                                 f"{'open' if net.open else net.acts[-1]} layer)")
    return _NetComp(net)


def _h_concat(r, node, args):
    if (len(args) == 2 and isinstance(args[0], _NetComp) and isinstance(args[1], _Net)
            and args[0].net is args[1] and _attr(node, "axis", AttributeProto.INT) in (1, -1)):
        return [_NetPair(args[1])]
    raise _unsupported(node, f"no pattern for Concat of {[_kind(a) for a in args]}")


def _h_argmax(r, node, args):
    x = args[0]
    if _attr(node, "axis", AttributeProto.INT, 0) not in (1, -1) or _attr(
            node, "select_last_index", AttributeProto.INT, 0) != 0:
        raise _unsupported(node, "only ArgMax over columns (axis=1, first index on ties) is supported")
    if isinstance(x, _NetPair) or (isinstance(x, _Net) and not x.open and x.acts[-1] == "softmax"):
        return [_ArgMax(x)]
    raise _unsupported(node, f"no pattern for ArgMax of {_describe(x)}")


def _h_afe(r, node, args):
    data, idx = args
    if not isinstance(data, _Const) or not isinstance(idx.of, (_Net, _NetPair)):
        raise _unsupported(node, "expected ArrayFeatureExtractor(class labels, ArgMax of probabilities)")
    net = idx.of.net if isinstance(idx.of, _NetPair) else idx.of
    classes = data.value.ravel()
    k = 2 if isinstance(idx.of, _NetPair) else net.width
    if classes.size != k:
        raise _invalid(node, f"{classes.size} class labels for {k} probability columns")
    return [_NetLabel(net, classes, "argmax")]


def _h_binarizer(r, node, args):
    net = args[0]
    if (not isinstance(net, _Net) or net.open or net.acts[-1] != "logistic"
            or _attr(node, "threshold", AttributeProto.FLOAT, 0.0) != 0.5):
        raise _unsupported(node, "expected Binarizer(sigmoid outputs, threshold=0.5) (multilabel labels)")
    return [_NetLabel(net, np.arange(net.width), "binarizer")]


def _h_cast_label(r, node, args):
    x = args[0]
    to = _attr(node, "to", AttributeProto.INT)
    if isinstance(x, _NetLabel):
        if x.classes.dtype == object or to == TensorProto.STRING:
            if (x.classes.dtype == object) != (to == TensorProto.STRING):
                raise _unsupported(node, "casts class labels between strings and numbers")
            return [x]
        import onnx

        return [_NetLabel(x.net, x.classes.astype(onnx.helper.tensor_dtype_to_np_dtype(to)), x.rule)]
    if isinstance(x, (_Net, _NetPair)) and to in _oi._FLOATS and _oi._FLOATS[to] >= r.float_bits:
        return [x]  # same type or widening: exact
    raise _unsupported(node, f"no pattern for Cast of {_describe(x)}")


def _h_reshape(r, node, args):
    x = args[0]
    shape = _oi._ints(node, args[1], "shape") if len(args) > 1 else list(
        _attr(node, "shape", AttributeProto.INTS, []))
    k = 1 if isinstance(x, _NetLabel) and x.rule == "argmax" else (
        x.net.width if isinstance(x, _NetLabel) else (2 if isinstance(x, _NetPair) else x.width))
    if shape in ([-1, k], [0, k]) or (k == 1 and shape in ([-1], [0], [-1, 1])):
        return [x]
    raise _unsupported(node, f"reshapes {k} output column(s) to {shape}, which has no IR equivalent")


# --------------------------------------------------------------------------- k-means

def _h_gemm_km(r, node, args):
    x, w = args[0], args[1]
    c = args[2] if len(args) > 2 else None
    if (not isinstance(w, _Const) or _attr(node, "alpha", AttributeProto.FLOAT, 1.0) != -2.0
            or _attr(node, "beta", AttributeProto.FLOAT, 1.0) != 1.0 or _attr(node, "transA", AttributeProto.INT, 0)
            or not (c is None or (isinstance(c, _Mark) and c.tag == "km_zero" and c.ref is x))):
        raise _unsupported(node, "expected the k-means Gemm(X, centers, 0, alpha=-2)")
    C = _weights(node, w.value, f"centers {w.name!r}")
    if not _attr(node, "transB", AttributeProto.INT, 0):
        C = C.T
    if C.ndim != 2 or (x.n is not None and C.shape[1] != x.n):
        raise _invalid(node, f"centers of shape {C.shape} for {x.n} features")
    return [_Sq(x, C, 1)]


def _zero_rows(r, node, m: _Mark, c: _Const):
    if _scalar(node, c, "factor") != 0.0:
        raise _unsupported(node, "multiplies a row norm by a constant other than 0")
    return _Mark("km_zero", m.ref)


def _add_xx(r, node, sq: _Sq, m: _Mark):
    if sq.stage != 1 or m.ref is not sq.feat:
        raise _unsupported(node, "expected ||x||^2 + (-2 x.c) of the same input")
    return _Sq(sq.feat, sq.centers, 2)


def _add_cc(r, node, sq: _Sq, c: _Const):
    cc = _weights(node, c.value, "||c||^2").ravel()
    want = np.einsum("ij,ij->i", sq.centers, sq.centers)
    if sq.stage != 2 or cc.shape != want.shape or np.any(np.abs(cc - want) > 1e-5 * (1.0 + want)):
        raise _unsupported(node, "the constant added to the distances is not ||c||^2 of the centers")
    return _Sq(sq.feat, sq.centers, 3)


def _h_argmin(r, node, args):
    sq = args[0]
    if (not isinstance(sq, _Sq) or sq.stage != 3 or _attr(node, "axis", AttributeProto.INT, 0) not in (1, -1)
            or _attr(node, "keepdims", AttributeProto.INT, 1) != 0
            or _attr(node, "select_last_index", AttributeProto.INT, 0) != 0):
        raise _unsupported(node, "expected ArgMin(squared distances, axis=1, keepdims=0)")
    return [_KOut(sq, "labels")]


def _h_sqrt(r, node, args):
    sq = args[0]
    if not isinstance(sq, _Sq) or sq.stage != 3:
        raise _unsupported(node, f"no pattern for Sqrt of {_describe(sq)}")
    return [_KOut(sq, "distances")]


# --------------------------------------------------------------------------- the end

def finish(outs, graph_name: str, float_bits: int):
    """The IR behind a graph whose outputs are an MLP's or a k-means model's."""
    precision = "float32" if float_bits == 32 else "float64"
    if any(isinstance(v, _KM_TYPES) for _, v in outs):
        srcs = {id(v.sq) for _, v in outs if isinstance(v, _KOut)}
        if len(srcs) != 1 or not all(isinstance(v, _KOut) for _, v in outs):
            raise UnsupportedModelError(f"expected k-means labels and distances of one model, got "
                                        f"{[(n, _describe(v)) for n, v in outs]}")
        sq = outs[0][1].sq
        est = ir.Centroids(centers=np.ascontiguousarray(sq.centers), precision=precision,
                           name=f"onnx:{graph_name or 'KMeans'}")
        return _wrap(sq.feat, est, graph_name)
    labels = [v for _, v in outs if isinstance(v, _NetLabel)]
    values = [v for _, v in outs if not isinstance(v, _NetLabel)]
    if len(labels) > 1 or len(values) != 1 or not isinstance(values[0], (_Net, _NetPair)):
        raise UnsupportedModelError(f"expected an MLP's label and probabilities, or its values; got "
                                    f"{[(n, _describe(v)) for n, v in outs]}")
    v = values[0]
    net = v.net if isinstance(v, _NetPair) else v
    if labels and labels[0].net is not net:
        raise UnsupportedModelError("the label and probability outputs come from different networks")
    acts = net.acts + (("identity",) if net.open else ())
    hidden = set(acts[:-1])
    if len(hidden) > 1:
        raise UnsupportedModelError(f"hidden layers use different activations {sorted(hidden)}; "
                                    "scikit-learn's MLPs (and the IR) have one")
    fields = dict(weights=tuple(np.ascontiguousarray(w) for w in net.weights), biases=net.biases,
                  activation=hidden.pop() if hidden else "identity", out_activation=acts[-1],
                  precision=precision, name=f"onnx:MLP{'Classifier' if labels else 'Regressor'}")
    if not labels:
        if acts[-1] != "identity":
            raise UnsupportedModelError(f"an MLP output without labels must be linear values, got {acts[-1]!r}")
        est = ir.MLP(is_classifier=False, flat=net.width == 1, **fields)
    else:
        lab = labels[0]
        binary = isinstance(v, _NetPair)
        if lab.rule == "argmax" and not binary and acts[-1] != "softmax":
            raise UnsupportedModelError("expected softmax probabilities for a multiclass MLP")
        est = ir.MLP(is_classifier=True, classes=lab.classes, multilabel=lab.rule == "binarizer", **fields)
    return _wrap(net.feat, est, graph_name)


# --------------------------------------------------------------------------- registration

def _dispatch(handler: Callable, ours: Callable, test: Callable) -> Callable:
    """``ours`` where ``test(node, args)`` says the node is part of an MLP / k-means graph."""
    def h(r, node, args):
        return ours(r, node, args) if test(node, args) else handler(r, node, args)
    return h


def _first_is(*types):
    return lambda node, args: bool(args) and isinstance(args[0], types)


def register(handlers: dict, binary: dict) -> None:
    """Add the MLP and k-means handlers to :mod:`converters.onnx_import`'s tables."""
    ml = _oi._ML
    # a MatMul / Gemm whose input is already a layer's output is the next layer
    h, lo, hi = handlers[("", "MatMul")]
    handlers[("", "MatMul")] = (_dispatch(h, _h_matmul, lambda n, a: not isinstance(a[0], _Feat)), lo, hi)
    h, lo, hi = handlers[("", "Gemm")]
    gemm_km = _dispatch(h, _h_gemm_km, lambda n, a: isinstance(a[0], _Feat)
                        and _attr(n, "alpha", AttributeProto.FLOAT, 1.0) == -2.0)
    handlers[("", "Gemm")] = (_dispatch(gemm_km, _h_gemm_net, lambda n, a: not isinstance(a[0], _Feat)), lo, hi)
    for op in ("Relu", "Tanh"):
        handlers[("", op)] = (_h_activation, 1, 1)
    for op in ("Sigmoid", "Softmax"):
        h, lo, hi = handlers[("", op)]
        handlers[("", op)] = (_dispatch(h, _h_activation, _first_is(_Net)), lo, hi)
    h, lo, hi = handlers[("", "Sqrt")]
    handlers[("", "Sqrt")] = (_dispatch(h, _h_sqrt, _first_is(_Sq)), lo, hi)
    handlers[("", "ArgMin")] = (_h_argmin, 1, 1)
    for key, ours, types in ((("", "Concat"), _h_concat, (_NetComp,)),
                             (("", "ArgMax"), _h_argmax, (_Net, _NetPair)),
                             (("", "Cast"), _h_cast_label, (_NetLabel, _Net, _NetPair)),
                             (("", "Reshape"), _h_reshape, (_NetLabel, _Net, _NetPair))):
        h, lo, hi = handlers[key]
        handlers[key] = (_dispatch(h, ours, _first_is(*types)), lo, hi)
    h, lo, hi = handlers[(ml, "ArrayFeatureExtractor")]
    handlers[(ml, "ArrayFeatureExtractor")] = (
        _dispatch(h, _h_afe, lambda n, a: len(a) == 2 and isinstance(a[1], _ArgMax)
                  and isinstance(a[1].of, (_Net, _NetPair))), lo, hi)
    handlers[(ml, "Binarizer")] = (_h_binarizer, 1, 1)
    binary[("Add", "net", "const")] = _add_bias
    binary[("Sub", "const", "net")] = _one_minus
    binary[("Mul", "feat_sumsq", "const")] = _zero_rows
    binary[("Add", "sq", "feat_sumsq")] = _add_xx
    binary[("Add", "sq", "const")] = _add_cc


register(_oi._HANDLERS, _oi._BINARY)
