"""Export to ONNX with fastml's conventions.

Who writes the estimator's graph (``EXPORTERS``, keyed by the top-level package
of the estimator's class, looked up along its MRO):

``sklearn``   skl2onnx, except ``HistGradientBoosting*``, written here from
              fastml's IR (:func:`tree_onnx`): skl2onnx 1.20 fails on it with
              onnx >= 1.18, which refuses the Python bools it puts into the
              integer attribute ``nodes_missing_value_tracks_true``
``lightgbm``  onnxmltools ``convert_lightgbm`` (float32 input only)
``xgboost``   onnxmltools ``convert_xgboost`` (float32 input only)

Conventions of every graph written here:

* One input ``X`` of shape ``(N, n_features)``, float32 or float64. Outputs: a
  classifier's label and probabilities (no ZipMap), or with
  ``raw_scores=True`` its label and decision scores (a binary model's scores
  may have two columns ``[-s, s]``); a regressor's values ``(N, n_targets)``;
  IsolationForest's label and ``decision_function``. The batch dimension of
  every output is symbolic (onnxmltools declares some as 1, and ONNX Runtime
  then warns on every call).
* A ``Pipeline`` is written step by step and the parts are chained, so the
  tensor the final estimator receives is known and can be exposed as an extra
  output (``features_output``): ONNX Runtime's caller checks it for the
  overflow scikit-learn refuses (a float32 StandardScaler turning 3.4e38 into
  inf).
* ``Normalizer`` is written here wherever skl2onnx is wrong: norm ``"max"``
  (ONNX ``Normalizer`` MAX divides by the signed row maximum; scikit-learn by
  ``max |x|``) and every float64 graph (skl2onnx divides by the norm with no
  zero guard: an all-zero row becomes NaN). The graph is scikit-learn's
  ``normalize``: the norm, ``Where(norm < 10 * eps, 1, norm)``
  (``_handle_zeros_in_scale``), ``Div``. float32 ``l1`` / ``l2`` keep
  skl2onnx's ``ai.onnx.ml`` ``Normalizer``, which fastml's ``from_onnx``
  reads; it differs from scikit-learn only on rows whose norm is below 1.2e-6
  (it scales them; scikit-learn does not) or overflows float32.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from fastml import ir
from fastml.errors import FastMLError, UnsupportedModelError

__all__ = ["to_onnx", "tree_onnx", "linear_scores_onnx", "normalizer_onnx", "EXPORTERS"]

_OPSET = 18          # opset of the standard-domain nodes written here (ReduceMax takes axes as an input)
_TREE_ML_OPSET = 5   # ai.onnx.ml TreeEnsemble (double thresholds, set membership)


def _onnx():
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    return onnx, TensorProto, helper, numpy_helper


def _elem_type(dtype: np.dtype) -> int:
    _, TensorProto, _, _ = _onnx()
    return {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE}[np.dtype(dtype)]


def _check_dtype(dtype) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise UnsupportedModelError(f"ONNX export supports float32 and float64 inputs, not {dt}")
    return dt


def _class_names(est) -> set:
    return {cls.__name__ for cls in type(est).__mro__}


def to_onnx(estimator, *, n_features: int | None = None, dtype=np.float32, raw_scores: bool = False,
            target_opset: int | None = None, features_output: str | None = None):
    """Convert a fitted estimator or scikit-learn Pipeline to an ``onnx.ModelProto``.

    Parameters
    ----------
    estimator : fitted scikit-learn, LightGBM or XGBoost estimator, or a Pipeline ending in one
    n_features : int, optional
        Number of input columns; defaults to ``estimator.n_features_in_``.
    dtype : np.float32 or np.float64
        Input tensor type of the graph. Raises
        :class:`~fastml.errors.UnsupportedModelError` where the converter writes
        no graph for it (onnxmltools: float32 only; skl2onnx: no float64 graph
        for LinearSVC, RidgeClassifier, IsolationForest, ...).
    raw_scores : bool
        Classifiers: the second output holds decision scores instead of probabilities.
    target_opset : int, optional
        Standard-domain opset passed to the converters.
    features_output : str, optional
        For a Pipeline: also output, under this name, the tensor the final
        estimator receives (the preprocessed features).
    """
    dt = _check_dtype(dtype)
    n = n_features if n_features is not None else getattr(estimator, "n_features_in_", None)
    if n is None:
        raise UnsupportedModelError(f"{type(estimator).__name__}: pass n_features= (no n_features_in_)")
    steps, final = _split(estimator)
    parts, width = [], int(n)
    for step in steps:
        part = _step_graph(step, width, dt, target_opset)
        width = _output_width(part, width)
        parts.append(part)
    parts.append(_exporter(final)(final, width, dt, raw_scores=raw_scores, target_opset=target_opset))
    model = _chain(parts, features_output if steps else None, dt, width)
    _symbolic_batch(model)
    return model


def _split(est) -> Tuple[list, object]:
    """A (possibly nested) Pipeline as its flat list of steps and its final estimator."""
    steps = getattr(est, "steps", None)
    if not steps:
        return [], est
    flat: list = []
    for _, step in steps:
        if step is None or (isinstance(step, str) and step == "passthrough"):
            continue
        inner, last = _split(step)
        flat += inner + [last]
    if not flat:
        raise UnsupportedModelError("Pipeline: every step is 'passthrough'")
    return flat[:-1], flat[-1]


def _exporter(est) -> Callable:
    for cls in type(est).__mro__:
        fn = EXPORTERS.get(cls.__module__.split(".")[0])
        if fn is not None:
            return fn
    raise UnsupportedModelError(f"fastml cannot export {type(est).__module__}.{type(est).__name__} to ONNX; "
                                f"supported: estimators from {', '.join(sorted(EXPORTERS))}")


def _output_width(model, default: int) -> int:
    dims = model.graph.output[0].type.tensor_type.shape.dim
    return int(dims[1].dim_value) if len(dims) == 2 and dims[1].dim_value > 0 else default


# --------------------------------------------------------------------------- skl2onnx

def _skl2onnx(est, n: int, dt: np.dtype, *, raw_scores: bool, target_opset):
    try:
        import skl2onnx
        from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType
    except ImportError as e:  # pragma: no cover - skl2onnx is a declared dependency
        raise UnsupportedModelError("exporting scikit-learn models needs skl2onnx") from e
    tensor = FloatTensorType if dt == np.float32 else DoubleTensorType
    is_classifier = hasattr(est, "classes_")
    # raw_scores is always passed explicitly: with no option at all for a final
    # classifier, skl2onnx 1.20 fails on Pipeline(..., LinearSVC()).
    wanted = {"zipmap": False, "raw_scores": bool(raw_scores)}
    kwargs = dict(initial_types=[("X", tensor([None, int(n)]))], target_opset=target_opset)
    while True:
        options = {id(est): wanted} if is_classifier and wanted else None
        try:
            return skl2onnx.convert_sklearn(est, options=options, **kwargs)
        except NameError as e:
            # skl2onnx refuses options a converter does not declare (LinearSVC has
            # no zipmap, say); drop the option it names and try again.
            unknown = [k for k in wanted if f"Option '{k}'" in str(e)]
            if not unknown:
                raise UnsupportedModelError(f"skl2onnx cannot convert {type(est).__name__}: {e}") from e
            wanted = {k: v for k, v in wanted.items() if k not in unknown}
        except Exception as e:
            raise UnsupportedModelError(f"skl2onnx cannot convert {type(est).__name__}: {e}") from e


def _sklearn_graph(est, n: int, dt: np.dtype, *, raw_scores: bool, target_opset):
    names = _class_names(est)
    node = _ir_of(est)
    if isinstance(node, (ir.Scaler, ir.Normalizer)):  # a bare transformer
        return _step_graph(est, n, dt, target_opset)
    tree = node if isinstance(node, ir.TreeEnsemble) else None
    # HistGradientBoosting: skl2onnx cannot write categorical splits or the log link; the
    # exponential loss: skl2onnx's "raw scores" graph outputs the probability
    if (names & {"HistGradientBoostingClassifier", "HistGradientBoostingRegressor"}
            or (tree is not None and tree.logistic_scale != 1.0)):
        from .sklearn_import import import_model

        tree = import_model(est)  # raises the frontend's own error where it refuses the model
        if tree.n_features != n:
            raise UnsupportedModelError(f"{type(est).__name__} expects {tree.n_features} features, not {n}")
        return tree_onnx(tree, dtype=dt, raw_scores=raw_scores)
    if dt == np.float64 and tree is not None:
        # skl2onnx declares double outputs on ai.onnx.ml tree operators, which ONNX Runtime
        # implements with float outputs only: its float64 tree graphs do not load (and it
        # spends seconds per tree on the float64 thresholds). scikit-learn's trees round
        # X to float32 themselves, so the float32 graph decides exactly as they do.
        raise UnsupportedModelError(f"skl2onnx writes no float64 {type(est).__name__} graph that ONNX "
                                    "Runtime runs (its tree operators output float32)")
    if dt == np.float64 and isinstance(node, ir.MLP) and node.multilabel:
        # skl2onnx thresholds multilabel probabilities with ai.onnx.ml Binarizer, which ONNX
        # Runtime implements for float only: the float64 graph does not load
        raise UnsupportedModelError("skl2onnx writes no float64 multilabel MLPClassifier graph that "
                                    "ONNX Runtime runs (Binarizer on doubles)")
    if tree is not None and tree.post == "isolation":
        # skl2onnx writes IsolationForest with ai.onnx.ml 3 only, and asks for it
        import skl2onnx

        target_opset = {"": target_opset or skl2onnx.get_latest_tested_opset_version(), "ai.onnx.ml": 3}
    if raw_scores and isinstance(node, ir.KernelSVM) and node.prob_a is not None:
        # skl2onnx writes the probabilities of an SVC(probability=True) even when asked for raw
        # scores; the same model without its Platt parameters writes the scores
        est = _without_probability(est)
    return _skl2onnx(est, n, dt, raw_scores=raw_scores, target_opset=target_opset)


def _without_probability(est):
    """A shallow copy of an SVC / NuSVC (or a Pipeline ending in one) with probability=False."""
    import copy

    if hasattr(est, "steps"):
        pipe = copy.copy(est)
        name, last = est.steps[-1]
        pipe.steps = list(est.steps[:-1]) + [(name, _without_probability(last))]
        return pipe
    svc = copy.copy(est)
    svc.probability = False
    svc._probA = svc._probB = np.empty(0)  # what skl2onnx reads (through probA_ / probB_)
    return svc


def _ir_of(est):
    """fastml's IR of an estimator or step, or None where fastml cannot import it."""
    from .sklearn_import import import_model

    try:
        return import_model(est)
    except FastMLError:  # the question is only "what is this?": skl2onnx may still convert it
        return None


def _step_graph(step, n: int, dt: np.dtype, target_opset):
    node = _ir_of(step)
    if isinstance(node, ir.Normalizer) and (node.norm == "max" or dt == np.float64):
        return normalizer_onnx(node.norm, n, dtype=dt)
    if isinstance(node, ir.Scaler) and (dt == np.float64 or node.cast_params):
        # scikit-learn's own operations in the input's dtype, bit for bit (skl2onnx's
        # ai.onnx.ml Scaler multiplies by a float32 reciprocal: an ulp off, which moves
        # values across the thresholds of a tree behind the scaler)
        return scaler_onnx(node, dtype=dt)
    return _skl2onnx(step, n, dt, raw_scores=False, target_opset=target_opset)


# --------------------------------------------------------------------------- onnxmltools

def _onnxmltools(converter: str, est, n: int, dt: np.dtype, *, raw_scores: bool, target_opset, **kw):
    if dt != np.float32:
        # onnxmltools writes float32 trees (thresholds, leaf values and outputs); its
        # "double" XGBRegressor graph compares float64 input with float32 thresholds,
        # which decides differently from XGBoost near a threshold
        raise UnsupportedModelError(f"onnxmltools writes {type(est).__name__} graphs for float32 input only")
    try:
        import onnxmltools
        from onnxmltools.convert.common.data_types import FloatTensorType
    except ImportError as e:
        raise UnsupportedModelError(f"exporting {type(est).__name__} needs onnxmltools "
                                    "(pip install 'fastml[trees]')") from e
    try:
        model = getattr(onnxmltools, converter)(est, initial_types=[("X", FloatTensorType([None, int(n)]))],
                                                target_opset=target_opset, **kw)
    except Exception as e:
        raise UnsupportedModelError(f"onnxmltools cannot convert {type(est).__name__}: {e}") from e
    if raw_scores and hasattr(est, "classes_"):
        # the same trees without the sigmoid / softmax: the raw margins
        # (a binary model's second output is then [-margin, margin])
        for node in model.graph.node:
            if node.op_type == "TreeEnsembleClassifier":
                for a in node.attribute:
                    if a.name == "post_transform":
                        a.s = b"NONE"
    return model


def _lightgbm_graph(est, n, dt, *, raw_scores, target_opset):
    tree = _ir_of(est)
    if isinstance(tree, ir.TreeEnsemble) and tree.logistic_scale != 1.0:
        # onnxmltools ignores LightGBM's sigmoid parameter (its graph is Sigmoid(raw)): fastml's own
        if tree.n_features != n:
            raise UnsupportedModelError(f"{type(est).__name__} expects {tree.n_features} features, not {n}")
        return tree_onnx(tree, dtype=dt, raw_scores=raw_scores)
    return _onnxmltools("convert_lightgbm", est, n, dt, raw_scores=raw_scores, target_opset=target_opset,
                        zipmap=False)


def _xgboost_graph(est, n, dt, *, raw_scores, target_opset):
    return _onnxmltools("convert_xgboost", est, n, dt, raw_scores=raw_scores, target_opset=target_opset)


#: writer of the final estimator's graph, by the top-level package of its class
EXPORTERS: Dict[str, Callable] = {"sklearn": _sklearn_graph, "lightgbm": _lightgbm_graph,
                                  "xgboost": _xgboost_graph}


# --------------------------------------------------------------------------- chaining

def _chain(parts: list, features_output: Optional[str], dt: np.dtype, width: int):
    """Feed each part's first output into the next part's input; the last part keeps its names."""
    onnx, _, helper, _ = _onnx()
    if len(parts) == 1:
        return parts[0]
    nodes, inits, opsets, ir_version = [], [], {}, 0
    prev = None
    for i, part in enumerate(parts):
        g = part.graph
        last = i == len(parts) - 1
        init_names = {t.name for t in g.initializer}
        data_inputs = [x for x in g.input if x.name not in init_names]
        if len(data_inputs) != 1:
            raise UnsupportedModelError(f"pipeline step {i}: expected a graph with one input, "
                                        f"got {[x.name for x in data_inputs]}")
        if prev is None:
            first_input = data_inputs[0]
            rename: Dict[str, str] = {}
        else:
            rename = {data_inputs[0].name: prev}
        if not last:
            produced = [o for node in g.node for o in node.output if o] + list(init_names)
            for name in produced:
                rename.setdefault(name, f"fastml_step{i}_{name}")
        for t in g.initializer:
            t2 = onnx.TensorProto()
            t2.CopyFrom(t)
            t2.name = rename.get(t.name, t.name)
            inits.append(t2)
        for node in g.node:
            n2 = onnx.NodeProto()
            n2.CopyFrom(node)
            if not last:
                n2.name = f"fastml_step{i}_{node.name}"
            n2.input[:] = [rename.get(x, x) for x in node.input]
            n2.output[:] = [rename.get(x, x) for x in node.output]
            nodes.append(n2)
        for imp in part.opset_import:
            opsets[imp.domain] = max(opsets.get(imp.domain, 0), imp.version)
        ir_version = max(ir_version, part.ir_version)
        if last:
            outputs = list(g.output)
            features = prev
        prev = rename.get(g.output[0].name, g.output[0].name)
    if features_output:
        nodes.append(helper.make_node("Identity", [features], [features_output], name="fastml_features"))
        outputs.append(helper.make_tensor_value_info(features_output, _elem_type(dt), [None, width]))
    graph = helper.make_graph(nodes, parts[-1].graph.name or "fastml", [first_input], outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()],
                              producer_name=parts[-1].producer_name, producer_version=parts[-1].producer_version)
    model.ir_version = ir_version
    return model


def _symbolic_batch(model) -> None:
    """Batch dimension symbolic everywhere; output columns too (skl2onnx declares one column
    for multi-target forests, and ONNX Runtime warns on every call where a declared size is wrong)."""
    for v in model.graph.input:
        if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape"):
            dims = v.type.tensor_type.shape.dim
            if len(dims):
                dims[0].dim_param = "N"
    for v in model.graph.output:
        if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape"):
            for i, d in enumerate(v.type.tensor_type.shape.dim):
                if i == 0 or d.dim_value > 0:
                    d.dim_param = "N" if i == 0 else f"{v.name}_{i}"


def _model(nodes, inputs, outputs, inits, opsets: Dict[str, int], name: str):
    _, _, helper, _ = _onnx()
    ids = [helper.make_opsetid(d, v) for d, v in opsets.items()]
    graph = helper.make_graph(nodes, name, inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=ids, producer_name="fastml")
    model.ir_version = helper.find_min_ir_version_for(ids)
    return model


# --------------------------------------------------------------------------- preprocessing written here

def _normalizer_nodes(norm: str, x: str, y: str, dt: np.dtype, prefix: str) -> Tuple[list, list]:
    """scikit-learn's ``normalize(X, norm)``: the row norm, 1 where it is below 10 eps, then ``X / norm``."""
    _, _, helper, numpy_helper = _onnx()
    p = prefix
    inits = [numpy_helper.from_array(np.array([1], dtype=np.int64), p + "axes"),
             numpy_helper.from_array(np.array(10 * np.finfo(dt).eps, dtype=dt), p + "tiny"),
             numpy_helper.from_array(np.array(1, dtype=dt), p + "one")]
    if norm == "l1":
        nodes = [helper.make_node("Abs", [x], [p + "abs"], name=p + "abs"),
                 helper.make_node("ReduceSum", [p + "abs", p + "axes"], [p + "norm"], name=p + "sum", keepdims=1)]
    elif norm == "l2":
        nodes = [helper.make_node("Mul", [x, x], [p + "sq"], name=p + "sq"),
                 helper.make_node("ReduceSum", [p + "sq", p + "axes"], [p + "sumsq"], name=p + "sum", keepdims=1),
                 helper.make_node("Sqrt", [p + "sumsq"], [p + "norm"], name=p + "sqrt")]
    elif norm == "max":
        nodes = [helper.make_node("Abs", [x], [p + "abs"], name=p + "abs"),
                 helper.make_node("ReduceMax", [p + "abs", p + "axes"], [p + "norm"], name=p + "max", keepdims=1)]
    else:
        raise UnsupportedModelError(f"Normalizer: unknown norm {norm!r}")
    nodes += [helper.make_node("Less", [p + "norm", p + "tiny"], [p + "small"], name=p + "small"),
              helper.make_node("Where", [p + "small", p + "one", p + "norm"], [p + "safe"], name=p + "guard"),
              helper.make_node("Div", [x, p + "safe"], [y], name=p + "div")]
    return nodes, inits


def _scaler_nodes(step: "ir.Scaler", x: str, y: str, dt: np.dtype, prefix: str) -> Tuple[list, list]:
    """An IR ``Scaler`` with its parameters in ``dt``, in the source's order of operations."""
    _, _, helper, numpy_helper = _onnx()
    p = prefix
    first, second = {"sub_div": ("Sub", "Div"), "sub_mul": ("Sub", "Mul"), "mul_add": ("Mul", "Add")}[step.mode]
    a, b = (step.scale, step.offset) if step.mode == "mul_add" else (step.offset, step.scale)
    inits = [numpy_helper.from_array(np.asarray(a, dtype=dt), p + "a"),
             numpy_helper.from_array(np.asarray(b, dtype=dt), p + "b")]
    nodes = [helper.make_node(first, [x, p + "a"], [p + "mid"], name=p + "a"),
             helper.make_node(second, [p + "mid", p + "b"], [y], name=p + "b")]
    return nodes, inits


def scaler_onnx(step: "ir.Scaler", *, dtype=np.float32):
    """A graph computing an IR ``Scaler``: bit for bit the source's where ``dtype`` is float64 or
    the step casts its parameters to the input's dtype (``cast_params``)."""
    _, _, helper, _ = _onnx()
    dt = _check_dtype(dtype)
    nodes, inits = _scaler_nodes(step, "X", "variable", dt, "scaler_")
    t = _elem_type(dt)
    return _model(nodes, [helper.make_tensor_value_info("X", t, [None, step.n_features])],
                  [helper.make_tensor_value_info("variable", t, [None, step.n_features])], inits,
                  {"": _OPSET}, step.name)


def normalizer_onnx(norm: str, n_features: int, *, dtype=np.float32):
    """A graph computing scikit-learn's ``Normalizer(norm).transform`` exactly (zero rows stay zero)."""
    _, _, helper, _ = _onnx()
    dt = _check_dtype(dtype)
    nodes, inits = _normalizer_nodes(norm, "X", "variable", dt, "normalizer_")
    t = _elem_type(dt)
    return _model(nodes, [helper.make_tensor_value_info("X", t, [None, n_features])],
                  [helper.make_tensor_value_info("variable", t, [None, n_features])], inits,
                  {"": _OPSET}, f"Normalizer_{norm}")


def linear_scores_onnx(model: "ir.Model", *, dtype=np.float32):
    """A graph of a linear model's decision scores ``(N, n_targets)`` written from fastml's IR.

    Used where only the IR knows the scores: a model loaded from an ONNX file
    whose graph outputs probabilities.
    """
    _, _, helper, numpy_helper = _onnx()
    dt = _check_dtype(dtype)
    pipe = ir.as_pipeline(model)
    est = pipe.estimator
    if not isinstance(est, ir.Linear):
        raise UnsupportedModelError(f"{est.name}: linear scores of a {type(est).__name__}")
    nodes, inits, cur = [], [], "X"

    def const(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=dt), name))
        return name

    for i, step in enumerate(pipe.steps):
        out, prefix = f"step{i}_out", f"step{i}_"
        if isinstance(step, ir.Scaler):
            more, more_inits = _scaler_nodes(step, cur, out, dt, prefix)
        else:
            more, more_inits = _normalizer_nodes(step.norm, cur, out, dt, prefix)
        nodes += more
        inits += more_inits
        cur = out
    nodes += [helper.make_node("MatMul", [cur, const("coef", est.coef.T)], ["mm"], name="matmul"),
              helper.make_node("Add", ["mm", const("intercept", est.intercept)], ["scores"], name="intercept")]
    t = _elem_type(dt)
    return _model(nodes, [helper.make_tensor_value_info("X", t, [None, pipe.n_features])],
                  [helper.make_tensor_value_info("scores", t, [None, est.n_targets])], inits,
                  {"": _OPSET}, f"{est.name}_scores")


# --------------------------------------------------------------------------- trees written here

def _floor32(t: np.ndarray) -> np.ndarray:
    """Largest float32 <= t: for float32 x, ``x <= t`` iff ``x <= _floor32(t)``."""
    with np.errstate(over="ignore"):
        f = t.astype(np.float32)
    up = f.astype(np.float64) > t
    f[up] = np.nextafter(f[up], np.float32(-np.inf))
    return f


def _ceil32(t: np.ndarray) -> np.ndarray:
    """Smallest float32 >= t: for float32 x, ``x < t`` iff ``x < _ceil32(t)``."""
    with np.errstate(over="ignore"):
        f = t.astype(np.float32)
    down = f.astype(np.float64) < t
    f[down] = np.nextafter(f[down], np.float32(np.inf))
    return f


def _categories(est: ir.TreeEnsemble, node: int) -> np.ndarray:
    start = int(est.cat_offset[node])
    words = np.asarray(est.cat_bits[start:start + int(est.cat_nwords[node])], dtype=np.uint32)
    bits = np.unpackbits(words.view(np.uint8), bitorder="little")
    return np.flatnonzero(bits).astype(np.float64)


def _class_tensor(classes: np.ndarray, name: str):
    _, TensorProto, helper, numpy_helper = _onnx()
    c = np.asarray(classes)
    if c.dtype.kind in "iub" or (c.dtype.kind == "f" and np.all(c == np.round(c))):
        return numpy_helper.from_array(c.astype(np.int64), name)
    if c.dtype.kind in "UOS":
        return helper.make_tensor(name, TensorProto.STRING, [len(c)], [str(v).encode("utf-8") for v in c])
    raise UnsupportedModelError(f"classes of dtype {c.dtype} cannot be ONNX labels")


def tree_onnx(est: ir.TreeEnsemble, *, dtype=np.float32, raw_scores: bool = False):
    """Write a TreeEnsemble IR as an ONNX graph (``ai.onnx.ml`` ``TreeEnsemble``, opset 5).

    Decisions are exactly the IR's: a float32 graph compares with thresholds
    moved to the nearest float32 on the correct side (``x <= t`` becomes
    ``x <= largest float32 <= t``, exact for every float32 ``x``); a model that
    compares in float32 (``compare="float32"``) casts float64 input to float32
    first, as its source does. NaN follows ``missing_left``. Outputs follow
    :func:`to_onnx`'s conventions; labels are chosen by ``predict_rule``.
    """
    _, TensorProto, helper, numpy_helper = _onnx()
    dt = _check_dtype(dtype)
    if est.post == "isolation":
        raise UnsupportedModelError(f"{est.name}: IsolationForest graphs are written by skl2onnx")
    tdt = np.dtype(np.float32) if dt == np.float32 or est.compare == "float32" else np.dtype(np.float64)
    split = np.zeros(est.n_nodes, np.uint8) if est.split is None else np.asarray(est.split)
    if np.any(split == ir.SPLIT_MEMBER) and not est.cat_exact:
        raise UnsupportedModelError(f"{est.name}: categorical splits that truncate x to an integer "
                                    "have no ONNX equivalent")
    thr = np.asarray(est.threshold, dtype=np.float64)
    if tdt == np.float32:
        thr = np.where(split == ir.SPLIT_LT, _ceil32(thr), _floor32(thr)).astype(np.float32)
    left, right = np.asarray(est.left, np.int64), np.asarray(est.right, np.int64)
    feature, missing = np.asarray(est.feature, np.int64), np.asarray(est.missing_left)
    value = np.asarray(est.value)
    K = int(est.n_targets)
    vector = value.shape[1] > 1
    cols: Dict[str, list] = {k: [] for k in ("feat", "mode", "split", "true", "trueleaf", "false", "falseleaf",
                                              "missing", "leaf_target", "leaf_weight", "roots")}
    members: List[float] = []
    n_nodes = n_leaves = 0
    for t in range(est.n_trees):
        sl = est.tree_nodes(t)
        lo = sl.start
        is_leaf = left[sl] < 0
        node_id = np.cumsum(~is_leaf) - 1 + n_nodes   # internal nodes, numbered in order
        for k in range(K if vector else 1):
            leaf_id = np.cumsum(is_leaf) - 1 + n_leaves
            if is_leaf[0]:  # a lone leaf: one split whose branches both reach it
                lone = dict(roots=n_nodes, feat=0, mode=0, split=0.0, true=int(leaf_id[0]), trueleaf=1,
                            false=int(leaf_id[0]), falseleaf=1, missing=0)
                for key, v in lone.items():
                    cols[key].append(v)
                n_nodes += 1
            else:
                cols["roots"].append(int(node_id[0]))
                inner = np.flatnonzero(~is_leaf)
                lc, rc = left[lo + inner], right[lo + inner]
                cols["feat"] += feature[lo + inner].tolist()
                cols["mode"] += np.where(split[lo + inner] == ir.SPLIT_MEMBER, 6,
                                         np.where(split[lo + inner] == ir.SPLIT_LT, 1, 0)).tolist()
                cols["split"] += np.where(split[lo + inner] == ir.SPLIT_MEMBER, 0.0, thr[lo + inner]).tolist()
                cols["true"] += np.where(is_leaf[lc], leaf_id[lc], node_id[lc]).tolist()
                cols["trueleaf"] += is_leaf[lc].astype(np.int64).tolist()
                cols["false"] += np.where(is_leaf[rc], leaf_id[rc], node_id[rc]).tolist()
                cols["falseleaf"] += is_leaf[rc].astype(np.int64).tolist()
                cols["missing"] += missing[lo + inner].astype(np.int64).tolist()
                for g in lo + inner[split[lo + inner] == ir.SPLIT_MEMBER]:
                    members += _categories(est, int(g)).tolist() + [np.nan]
                n_nodes += int(inner.size)
                node_id = node_id + int(inner.size)  # the next replica's ids
            leaves = lo + np.flatnonzero(is_leaf)
            target = k if vector else (int(est.tree_target[t]) if est.tree_target is not None else 0)
            cols["leaf_target"] += [target] * leaves.size
            cols["leaf_weight"] += value[leaves, k if vector else 0].tolist()
            n_leaves += int(leaves.size)
    attrs = dict(
        nodes_featureids=cols["feat"], nodes_truenodeids=cols["true"], nodes_trueleafs=cols["trueleaf"],
        nodes_falsenodeids=cols["false"], nodes_falseleafs=cols["falseleaf"],
        nodes_missing_value_tracks_true=cols["missing"], leaf_targetids=cols["leaf_target"],
        tree_roots=cols["roots"], n_targets=K, aggregate_function=1, post_transform=0,
        nodes_modes=numpy_helper.from_array(np.array(cols["mode"], np.uint8)),
        nodes_splits=numpy_helper.from_array(np.array(cols["split"], tdt)),
        leaf_weights=numpy_helper.from_array(np.array(cols["leaf_weight"], tdt)))
    if members:
        attrs["membership_values"] = numpy_helper.from_array(np.array(members, tdt))
    nodes, inits = [], []

    def const(name, v, dtype=dt):
        inits.append(numpy_helper.from_array(np.asarray(v, dtype=dtype), name))
        return name

    x = "X"
    if tdt != dt:
        nodes.append(helper.make_node("Cast", ["X"], ["X32"], name="to_float32", to=TensorProto.FLOAT))
        x = "X32"
    nodes.append(helper.make_node("TreeEnsemble", [x], ["sum_t"], name="trees", domain="ai.onnx.ml", **attrs))
    raw = "sum_t"
    if tdt != dt:
        nodes.append(helper.make_node("Cast", [raw], ["sum"], name="to_input_type", to=_elem_type(dt)))
        raw = "sum"
    if est.base_score is not None:
        nodes.append(helper.make_node("Add", [raw, const("base_score", est.base_score)], ["raw_b"], name="base"))
        raw = "raw_b"
    if est.average:
        nodes.append(helper.make_node("Div", [raw, const("n_trees", est.n_trees)], ["raw_avg"], name="average"))
        raw = "raw_avg"
    t = _elem_type(dt)
    if not est.is_classifier:
        if est.post == "exp":  # the inverse of a log link
            nodes.append(helper.make_node("Exp", [raw], ["raw_exp"], name="inverse_link"))
            raw = "raw_exp"
        nodes.append(helper.make_node("Identity", [raw], ["variable"], name="values"))
        outputs = [helper.make_tensor_value_info("variable", t, [None, K])]
        return _model(nodes, [helper.make_tensor_value_info("X", t, [None, est.n_features])], outputs, inits,
                      {"": 21, "ai.onnx.ml": _TREE_ML_OPSET}, est.name)
    proba = raw
    if est.post == "logistic":
        z = raw
        if est.logistic_scale != 1.0:  # s = sigmoid(c raw)
            nodes.append(helper.make_node("Mul", [raw, const("scale", est.logistic_scale)], ["raw_c"], name="scale"))
            z = "raw_c"
        nodes.append(helper.make_node("Sigmoid", [z], ["sig"], name="sigmoid"))
        proba = "sig"
        if K == 1:
            nodes += [helper.make_node("Sub", [const("one", 1.0), "sig"], ["sig0"], name="complement"),
                      helper.make_node("Concat", ["sig0", "sig"], ["proba2"], name="two_columns", axis=1)]
            proba = "proba2"
    elif est.post == "softmax":
        nodes.append(helper.make_node("Softmax", [raw], ["softmax"], name="softmax", axis=1))
        proba = "softmax"
    rule = est.predict_rule
    if rule in ("ge0", "gt0"):
        nodes += [helper.make_node("GreaterOrEqual" if rule == "ge0" else "Greater", [raw, const("zero", 0.0)],
                                   ["positive"], name="sign"),
                  helper.make_node("Cast", ["positive"], ["positive_i"], name="as_index", to=TensorProto.INT64),
                  helper.make_node("Reshape", ["positive_i", const("flat", [-1], np.int64)], ["index"],
                                   name="flatten")]
    else:
        nodes.append(helper.make_node("ArgMax", [proba if rule == "argmax_proba" else raw], ["index"],
                                      name="argmax", axis=1, keepdims=0))
    classes = _class_tensor(est.classes, "classes")
    inits.append(classes)
    nodes.append(helper.make_node("Gather", ["classes", "index"], ["label"], name="label", axis=0))
    second = raw if raw_scores or est.post in ("none", "proba") else proba
    name2 = "scores" if raw_scores else "probabilities"
    nodes.append(helper.make_node("Identity", [second], [name2], name=name2))
    width = K if raw_scores or est.post != "logistic" or K > 1 else 2
    outputs = [helper.make_tensor_value_info("label", classes.data_type, [None]),
               helper.make_tensor_value_info(name2, t, [None, width])]
    return _model(nodes, [helper.make_tensor_value_info("X", t, [None, est.n_features])], outputs, inits,
                  {"": 21, "ai.onnx.ml": _TREE_ML_OPSET}, est.name)
