"""ONNX ``SVMClassifier`` / ``SVMRegressor`` (ai.onnx.ml) -> ``fastml.ir.KernelSVM``.

The operators, as ONNX Runtime 1.31 evaluates them (``svmclassifier.cc``,
``svmregressor.cc``), with ``s_p = sum_k coefficients * K(x, sv_k) + rho[p]``:

* ``SVMClassifier`` outputs the label (libsvm's one-vs-one vote, ``s_p > 0`` a
  vote for the first class of the pair) and ``Z``: libsvm's pairwise-coupling
  probabilities when ``prob_a`` / ``prob_b`` are given, else the pair values
  ``s_p``, or ``[-s, s]`` for two classes.  ``rho`` is *added*, so it is
  scikit-learn's ``_intercept_`` (skl2onnx writes it so); ``coefficients`` are
  libsvm's ``(k - 1, n_sv)`` rows.
* ``SVMRegressor`` outputs ``s`` (``one_class=1``: ``+-1``, refused: it has no
  scores).  skl2onnx writes a OneClassSVM as an SVMRegressor whose label is
  ``Sign(s)`` and whose scores are ``s`` (``decision_function``; the file does not
  hold ``offset_``, so ``score_samples`` is not available).

skl2onnx appends a subgraph (Less, Neg, ArrayFeatureExtractor, Sum, Concat,
Abs, Div, ...) that turns the pair values into scikit-learn's one-vs-rest
scores.  Rather than matching that subgraph node by node, its elementwise ops
are evaluated on a fixed probe batch of pair values, and what an output
computes is recognised by comparing it with the candidate functions (the pair
values, ``[-s, s]``, scikit-learn's one-vs-rest scores, ``Sign``) on the probe.
An output that matches none is refused.

The kernel runs in float64 with the file's float32 parameters; ONNX Runtime
runs it in float32, so the two agree to float32 precision, not bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from onnx import AttributeProto, TensorProto

from fastml import ir
from fastml.errors import InvalidModelError, UnsupportedModelError

from . import onnx_import as _oi
from .onnx_import import _Const, _Feat, _Label, _attr, _invalid, _unsupported

_KERNELS = {"LINEAR": "linear", "POLY": "poly", "RBF": "rbf", "SIGMOID": "sigmoid"}
_PROBE_ROWS = 48


@dataclass(frozen=True, eq=False)
class _SvmNode:
    est: ir.KernelSVM
    feat: _Feat
    pairs: np.ndarray          # the probe batch of pair values (rows, n_pairs)


@dataclass(frozen=True, eq=False)
class _SvmProbe:
    """A tensor computed from an SVM node's output: its value on the probe batch
    (None for probabilities, which only pass through unchanged)."""

    node: _SvmNode
    value: Optional[np.ndarray]
    proba: bool = False


def is_svm_value(v) -> bool:
    return isinstance(v, _SvmProbe) or (isinstance(v, _Label) and isinstance(v.of, _SvmNode))


def _probe_pairs(n_pairs: int) -> np.ndarray:
    rng = np.random.default_rng(20261121)
    P = rng.standard_normal((_PROBE_ROWS, n_pairs)) * rng.choice([0.01, 0.5, 3.0], size=(_PROBE_ROWS, 1))
    P[P == 0] = 0.25
    return P.astype(np.float32).astype(np.float64)  # ONNX Runtime outputs float32


def _input(node, args) -> _Feat:
    if not isinstance(args[0], _Feat):
        raise _unsupported(node, f"expected features as input, got {_oi._describe(args[0])}")
    return args[0]


def _floats(node, name, required=True) -> Optional[np.ndarray]:
    v = _attr(node, name, AttributeProto.FLOATS)
    if v is None and required:
        raise _invalid(node, f"needs the attribute {name!r}")
    return v


def _kernel(node) -> dict:
    kt = _attr(node, "kernel_type", AttributeProto.STRING, "LINEAR")
    if kt not in _KERNELS:
        raise _invalid(node, f"attribute 'kernel_type' = {kt!r}, expected one of {sorted(_KERNELS)}")
    params = _floats(node, "kernel_params", required=False)
    gamma, coef0, degree = (0.0, 0.0, 0.0) if params is None else (list(params) + [0.0, 0.0, 0.0])[:3]
    if params is not None and len(params) != 3:
        raise _invalid(node, f"attribute 'kernel_params' has {len(params)} values, expected 3 (gamma, coef0, degree)")
    if kt == "POLY" and (degree != int(degree) or not 0 <= degree <= 64):
        raise _unsupported(node, f"a polynomial kernel of degree {degree} (fastml takes integer degrees 0..64)")
    pt = _attr(node, "post_transform", AttributeProto.STRING, "NONE")
    if pt != "NONE":
        raise _unsupported(node, f"post_transform {pt!r} on SVM scores has no IR equivalent")
    return dict(kernel=_KERNELS[kt], gamma=float(gamma), coef0=float(coef0), degree=int(degree))


def _vectors(node, n_sv: int) -> np.ndarray:
    sv = _floats(node, "support_vectors")
    if n_sv < 1:
        raise _unsupported(node, "has no support vectors (liblinear mode); fastml reads kernel SVMs only")
    if sv.size == 0 or sv.size % n_sv:
        raise _invalid(node, f"has {sv.size} support-vector values, not a multiple of {n_sv} vectors")
    return sv.reshape(n_sv, sv.size // n_sv)


def _h_svm_classifier(r, node, args):
    feat = _input(node, args)
    ints = _attr(node, "classlabels_ints", AttributeProto.INTS)
    strings = _attr(node, "classlabels_strings", AttributeProto.STRINGS)
    if (ints is None) == (not strings):
        raise _invalid(node, "needs exactly one of the attributes 'classlabels_ints' / 'classlabels_strings'")
    classes = ints if ints is not None else np.array(strings, dtype=object)
    k = len(classes)
    counts = _attr(node, "vectors_per_class", AttributeProto.INTS)
    if counts is None or counts.size == 0:
        raise _unsupported(node, "has no vectors_per_class (liblinear mode); fastml reads kernel SVMs only")
    if counts.size != k or np.any(counts < 0):
        raise _invalid(node, f"vectors_per_class {counts.tolist()} does not give each of the {k} classes a count")
    n_sv = int(counts.sum())
    sv = _vectors(node, n_sv)
    coef = _floats(node, "coefficients")
    if coef.size != (k - 1) * n_sv:
        raise _invalid(node, f"has {coef.size} coefficients, expected (classes - 1) x vectors = {(k - 1) * n_sv}")
    pa, pb = _floats(node, "prob_a", False), _floats(node, "prob_b", False)
    if pa is not None and pa.size == 0:
        pa = None
    if pb is not None and pb.size == 0:
        pb = None
    est = ir.KernelSVM(
        support_vectors=sv, dual_coef=coef.reshape(k - 1, n_sv), intercept=_floats(node, "rho"),
        kind="classifier", n_support=counts.astype(np.int32), classes=classes, prob_a=pa, prob_b=pb,
        name=f"SVMClassifier:{node.name}", **_kernel(node))
    try:
        est.validate()
    except InvalidModelError as e:
        raise _invalid(node, str(e)) from None
    svm = _SvmNode(est, feat, _probe_pairs(est.n_pairs))
    if pa is not None:
        return [_Label(classes, svm), _SvmProbe(svm, None, proba=True)]
    z = svm.pairs if k > 2 else np.concatenate([-svm.pairs, svm.pairs], axis=1)
    return [_Label(classes, svm), _SvmProbe(svm, z)]


def _h_svm_regressor(r, node, args):
    feat = _input(node, args)
    if _attr(node, "one_class", AttributeProto.INT, 0):
        raise _unsupported(node, "one_class=1 outputs +-1 only (no scores); fastml reads one_class=0 graphs")
    n_sv = _attr(node, "n_supports", AttributeProto.INT, 0)
    sv = _vectors(node, n_sv)
    coef = _floats(node, "coefficients")
    if coef.size != n_sv:
        raise _invalid(node, f"has {coef.size} coefficients for {n_sv} support vectors")
    est = ir.KernelSVM(support_vectors=sv, dual_coef=coef.reshape(1, n_sv), intercept=_floats(node, "rho"),
                       kind="regressor", name=f"SVMRegressor:{node.name}", **_kernel(node))
    try:
        est.validate()
    except InvalidModelError as e:
        raise _invalid(node, str(e)) from None
    svm = _SvmNode(est, feat, _probe_pairs(1))
    return [_SvmProbe(svm, svm.pairs)]


# ---- elementwise ops on probes


def _operand(node, a, svm):
    if isinstance(a, _SvmProbe):
        if a.node is not svm:
            raise _unsupported(node, "combines the outputs of two SVM nodes")
        if a.value is None:
            raise _unsupported(node, f"{node.op_type} of SVM probabilities has no IR equivalent")
        return a.value
    if isinstance(a, _Const):
        return a.value
    raise _unsupported(node, f"combines SVM scores with {_oi._describe(a)}")


def _afe(v, idx):
    return np.take(v, np.asarray(idx, dtype=np.int64).ravel(), axis=-1)


def _cast(node, v):
    to = _attr(node, "to", AttributeProto.INT)
    kinds = {TensorProto.FLOAT: np.float32, TensorProto.DOUBLE: np.float64, TensorProto.INT64: np.int64,
             TensorProto.INT32: np.int32, TensorProto.BOOL: np.bool_}
    if to not in kinds:
        raise _unsupported(node, f"casts SVM scores to type {to}")
    return v.astype(kinds[to])


_PROBE_OPS = {
    "Identity": lambda node, v: v[0],
    "Cast": lambda node, v: _cast(node, v[0]),
    "Neg": lambda node, v: -v[0],
    "Abs": lambda node, v: np.abs(v[0]),
    "Sign": lambda node, v: np.sign(v[0]),
    "Less": lambda node, v: v[0] < v[1],
    "Greater": lambda node, v: v[0] > v[1],
    "Add": lambda node, v: v[0] + v[1],
    "Sub": lambda node, v: v[0] - v[1],
    "Mul": lambda node, v: v[0] * v[1],
    "Div": lambda node, v: v[0] / v[1],
    "Sum": lambda node, v: sum(v[1:], v[0]),
    "Concat": lambda node, v: np.concatenate(v, axis=_attr(node, "axis", AttributeProto.INT, 1)),
    "ArrayFeatureExtractor": lambda node, v: _afe(v[0], v[1]),
    "Reshape": lambda node, v: v[0].reshape(v[0].shape[0], -1),
}


def _probe_handler(handler):
    def h(r, node, args):
        probes = [a for a in args if isinstance(a, _SvmProbe)]
        if not probes:
            if handler is None:
                raise _unsupported(node, f"operator {node.op_type} is read only after an SVM node")
            return handler(r, node, args)
        svm = probes[0].node
        if node.op_type in ("Identity", "Cast") and probes[0].proba:
            if node.op_type == "Cast" and _attr(node, "to", AttributeProto.INT) not in (
                    TensorProto.FLOAT, TensorProto.DOUBLE):
                raise _unsupported(node, "casts SVM probabilities to a non-float type")
            return [probes[0]]
        if node.op_type == "Reshape":
            args = args[:1]  # the row count is the probe's; the shape must keep rows
        values = [_operand(node, a, svm) for a in args]
        with np.errstate(all="ignore"):
            return [_SvmProbe(svm, _PROBE_OPS[node.op_type](node, values))]
    return h


# ---- the end: outputs -> IR


def _ovr(pairs: np.ndarray, k: int) -> np.ndarray:
    """scikit-learn's _ovr_decision_function of libsvm's pair values."""
    votes = np.zeros((pairs.shape[0], k))
    conf = np.zeros((pairs.shape[0], k))
    p = 0
    for i in range(k):
        for j in range(i + 1, k):
            conf[:, i] += pairs[:, p]
            conf[:, j] -= pairs[:, p]
            votes[:, i] += pairs[:, p] >= 0
            votes[:, j] += pairs[:, p] < 0
            p += 1
    return votes + conf / (3 * (np.abs(conf) + 1))


def _matches(value: np.ndarray, want: np.ndarray) -> bool:
    v = np.asarray(value, dtype=np.float64)
    if v.ndim == 1:
        v = v[:, None]
    return v.shape == want.shape and bool(np.allclose(v, want, rtol=1e-5, atol=1e-6))


def finish(outs, graph_name: str):
    """The IR behind a graph whose outputs come from one SVM node."""
    svm, label, scores = None, None, []
    for name, v in outs:
        node = v.of if isinstance(v, _Label) else getattr(v, "node", None)
        if not isinstance(node, _SvmNode):
            raise UnsupportedModelError(f"output {name!r} is {_oi._describe(v)}; an SVM graph may only output "
                                        "values computed from its SVM node")
        if svm is not None and node is not svm:
            raise UnsupportedModelError("the graph outputs come from different SVM nodes")
        svm = node
        if isinstance(v, _Label):
            if label is not None:
                raise UnsupportedModelError("the graph outputs two labels")
            label = v
        else:
            scores.append((name, v))
    est, P = svm.est, svm.pairs
    if est.is_classifier:
        if label is None or len(scores) > 1:
            raise UnsupportedModelError("an SVMClassifier graph must output its label and at most one score output")
        if label.classes.dtype != est.classes.dtype:  # a Cast of the label output
            est = ir.replace(est, classes=label.classes)
        if scores and not scores[0][1].proba:
            name, v = scores[0]
            k = est.n_classes
            if k > 2 and _matches(v.value, _ovr(P, k)):
                est = ir.replace(est, decision_shape="ovr")
            elif k > 2 and _matches(v.value, P):
                est = ir.replace(est, decision_shape="ovo")
            elif not (k == 2 and (_matches(v.value, np.hstack([-P, P])) or _matches(v.value, np.hstack([P, -P]))
                                  or _matches(v.value, -P))):
                raise UnsupportedModelError(f"output {name!r} computes something from the SVM pair values that "
                                            "is neither the pair values nor scikit-learn's one-vs-rest scores")
        return _oi._wrap(svm.feat, est, graph_name)
    # SVMRegressor: a regression value, or a OneClassSVM's Sign label and scores
    values = [(n, v) for n, v in scores if _matches(v.value, P)]
    signs = [(n, v) for n, v in scores if v.value.dtype.kind in "iuf" and _matches(v.value, np.sign(P))
             and not _matches(v.value, P)]
    if len(values) == 1 and len(scores) == 1:
        return _oi._wrap(svm.feat, est, graph_name)
    if len(values) == 1 and len(signs) == 1 and len(scores) == 2:
        est = ir.replace(est, kind="one_class", offset=None, name=est.name.replace("SVMRegressor", "OneClassSVM"))
        return _oi._wrap(svm.feat, est, graph_name)
    raise UnsupportedModelError(f"outputs {[n for n, _ in scores]} of an SVMRegressor graph are neither its "
                                "value nor a one-class model's Sign label and scores")


def register(handlers: dict) -> None:
    """Add the SVM handlers to :mod:`converters.onnx_import`'s table."""
    ml = _oi._ML
    handlers[(ml, "SVMClassifier")] = (_h_svm_classifier, 1, 1)
    handlers[(ml, "SVMRegressor")] = (_h_svm_regressor, 1, 1)
    arity = {"Less": (2, 2), "Greater": (2, 2), "Add": (2, 2), "Sub": (2, 2), "Mul": (2, 2), "Div": (2, 2),
             "Sum": (1, 1 << 30), "Concat": (1, 1 << 30), "Reshape": (1, 2)}
    for op in _PROBE_OPS:
        key = (ml, op) if op == "ArrayFeatureExtractor" else ("", op)
        h, lo, hi = handlers.get(key, (None,) + arity.get(op, (1, 1)))
        handlers[key] = (_probe_handler(h), lo, hi)


register(_oi._HANDLERS)
