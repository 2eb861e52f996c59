"""from_onnx on tree ensembles, checked against ONNX Runtime running the same bytes.

Sources: skl2onnx (scikit-learn trees, forests, gradient boosting, with and
without a StandardScaler in front, with and without ZipMap), onnxmltools
(LightGBM, XGBoost) and graphs built by hand with ``onnx.helper`` for every
node mode, NaN rule, binary-classifier convention and opset-5 feature.

For each model, ``tests/reference_trees.py`` evaluates ``from_onnx(bytes)`` on
rows of the data plus rows with NaN, +-inf, -0.0 and values exactly at, just
above and just below (``np.nextafter``) up to 40 thresholds of the model
(category, category + 0.5 and category - 1 for set splits; for a pipeline,
inputs that its float32 scaler maps onto the thresholds), and is compared with
ONNX Runtime:

* labels identical; only a row whose decision margin is within the score
  tolerance may differ, and such rows must be rare (<= 2%). They are genuine
  ties: a binary forest whose votes split exactly 50/50 sums to exactly 0.5 in
  ONNX Runtime's float32 (class 0) but to 0.5 + 1e-8 in the IR's float64 sum
  of the float32-rounded vote fractions (class 1);
* probabilities within ``PROBA_TOL`` (1e-5);
* scores within ``SCORE_TOL`` (1e-5) times ``1 + |base| + sum of |leaf value|``
  along the row's path: ONNX Runtime accumulates the float32 weights in
  float32, the IR in float64, and the rounding error of a sum is proportional
  to the size of its terms.

Malformed graphs: one test per rule, each expecting a typed fastml error that
names what is wrong; a small mutation fuzzer checks that nothing else escapes.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
skl2onnx = pytest.importorskip("skl2onnx")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from sklearn.datasets import make_classification, make_regression  # noqa: E402
from sklearn.ensemble import (ExtraTreesClassifier, ExtraTreesRegressor, GradientBoostingClassifier,  # noqa: E402
                              GradientBoostingRegressor, RandomForestClassifier, RandomForestRegressor)
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.tree import (DecisionTreeClassifier, DecisionTreeRegressor, ExtraTreeClassifier,  # noqa: E402
                          ExtraTreeRegressor)

from fastml import converters  # noqa: E402
from fastml.errors import FastMLError, InvalidModelError, UnsupportedModelError  # noqa: E402
from fastml.ir import SPLIT_MEMBER, Pipeline, Scaler, TreeEnsemble, as_pipeline  # noqa: E402

from reference_trees import (tree_apply, tree_decision_function, tree_input, tree_predict,  # noqa: E402
                             tree_predict_proba, tree_raw)

from_onnx = converters.from_onnx

SCORE_TOL = 1e-5
PROBA_TOL = 1e-5
FLOAT, DOUBLE = TensorProto.FLOAT, TensorProto.DOUBLE


# --------------------------------------------------------------------------- data


def _data(kind: str, n: int = 120, seed: int = 0):
    if kind == "regression":
        X, y = make_regression(n, 6, n_informative=4, noise=1.0, random_state=seed)
    elif kind == "multioutput":
        X, y = make_regression(n, 6, n_informative=4, n_targets=2, random_state=seed)
    else:
        X, y = make_classification(n, 6, n_informative=4, n_redundant=1,
                                   n_classes=2 if kind == "binary" else 3, random_state=seed)
    return X.astype(np.float32), y


# --------------------------------------------------------------------------- running and comparing


def _run(data: bytes, X: np.ndarray):
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: X})
    if len(out) == 2 and isinstance(out[1], list):  # ZipMap: one dict per row
        keys = list(out[1][0].keys())
        out[1] = np.array([[d[k] for k in keys] for d in out[1]], dtype=np.float64)
    return out


def _estimator(model) -> TreeEnsemble:
    est = as_pipeline(model).estimator
    assert isinstance(est, TreeEnsemble)
    return est


def _probe_rows(model, X: np.ndarray, limit: int = 40, seed: int = 0) -> np.ndarray:
    """The data plus NaN / +-inf / -0.0 rows and rows at, above and below the model's thresholds."""
    rng = np.random.default_rng(seed)
    est = _estimator(model)
    dtype = X.dtype
    rows = [X]
    special = []
    for j in range(X.shape[1]):
        for v in (np.nan, np.inf, -np.inf, -0.0):
            r = X[j % len(X)].copy()
            r[j] = v
            special.append(r)
    special += [np.full(X.shape[1], np.nan), np.full(X.shape[1], np.inf), np.full(X.shape[1], -np.inf)]
    rows.append(np.array(special, dtype=dtype))
    if isinstance(model, Pipeline) and not _one_scaler(model):  # no way back to the input
        return np.concatenate(rows)
    split = np.flatnonzero(np.asarray(est.left) >= 0)
    kinds = np.zeros(est.n_nodes, np.uint8) if est.split is None else np.asarray(est.split)
    at = []
    for i in rng.permutation(split)[:limit]:
        f, base = int(est.feature[i]), X[rng.integers(len(X))]
        if kinds[i] == SPLIT_MEMBER:
            off, nw = int(est.cat_offset[i]), int(est.cat_nwords[i])
            bits = np.unpackbits(np.asarray(est.cat_bits[off:off + nw]).view(np.uint8), bitorder="little")
            cats = np.flatnonzero(bits)
            values = [c + d for c in cats[:3] for d in (0.0, 0.5, -1.0)] + [-0.0]
        else:
            t = dtype.type(est.threshold[i])
            values = [t, np.nextafter(t, dtype.type(np.inf)), np.nextafter(t, dtype.type(-np.inf))]
        if isinstance(model, Pipeline):  # the inputs the scaler maps to or next to the threshold
            values = _preimages(model.steps[0], f, values, dtype)
        for v in values:
            r = base.copy()
            r[f] = v
            at.append(r)
    if at:
        rows.append(np.array(at, dtype=dtype))
    return np.concatenate(rows)


def _one_scaler(model) -> bool:
    return len(model.steps) == 1 and isinstance(model.steps[0], Scaler) and model.steps[0].mode == "sub_mul"


def _preimages(step: Scaler, f: int, targets, dtype) -> list:
    """Inputs at and around ``t / scale + offset``: the float32 scaler maps some of them exactly onto t."""
    out = []
    for t in targets:
        up = down = dtype.type(float(t) / float(step.scale[f]) + float(step.offset[f]))
        out.append(up)
        for _ in range(3):
            up, down = np.nextafter(up, dtype.type(np.inf)), np.nextafter(down, dtype.type(-np.inf))
            out += [up, down]
    return out


def _magnitude(model, X) -> np.ndarray:
    """Per row: |base| + sum over trees of |leaf value| (averaged like the scores)."""
    est = _estimator(model)
    pipe = as_pipeline(model)
    leaves = tree_apply(pipe, X)
    value = np.abs(np.asarray(est.value))
    mag = np.zeros(len(X))
    for t in range(est.n_trees):
        mag += value[int(est.tree_offsets[t]) + leaves[:, t]].max(axis=1)
    if est.average:
        mag /= est.n_trees
    if est.base_score is not None:
        mag += np.abs(est.base_score).max()
    return 1.0 + mag


def _label_margin(model, X) -> np.ndarray:
    est = _estimator(model)
    if est.predict_rule in ("gt0", "ge0"):
        return np.abs(tree_raw(model, X)[:, 0])
    raw = tree_raw(model, X)
    top = np.sort(raw, axis=1)
    return top[:, -1] - top[:, -2]


def check(data: bytes, X: np.ndarray, *, rows: bool = True, max_ties: float = 0.02):
    """from_onnx(data) on the reference walker vs ONNX Runtime on ``data``; returns the IR."""
    model = from_onnx(data)
    est = _estimator(model)
    if rows:
        X = _probe_rows(model, X)
    out = _run(data, X)
    tol = SCORE_TOL * _magnitude(model, X)
    if est.is_classifier:
        label = out[0]
        ours = tree_predict(model, X)
        differ = ours != label
        near = _label_margin(model, X) <= tol
        assert not np.any(differ & ~near), f"labels differ on rows {np.flatnonzero(differ & ~near)[:10]}"
        assert differ.sum() <= max_ties * len(X)
        if len(out) > 1:
            got = np.asarray(out[1], dtype=np.float64)
            if "predict_proba" in est.methods():
                np.testing.assert_allclose(tree_predict_proba(model, X), got, rtol=0, atol=PROBA_TOL)
            else:
                d = tree_decision_function(model, X)
                want = np.column_stack([-d, d]) if d.ndim == 1 else d
                _assert_within(want, got, tol)
    else:
        got = np.asarray(out[0], dtype=np.float64)
        ours = tree_predict(model, X)
        ours = ours[:, None] if ours.ndim == 1 else ours
        _assert_within(ours, got, tol)
    return model


def _assert_within(ours, got, tol):
    assert ours.shape == got.shape, (ours.shape, got.shape)
    excess = np.abs(ours - got) - tol[:, None]
    assert not np.any(excess > 0), (f"row {np.argmax(excess.max(axis=1))}: ours "
                                    f"{ours[np.argmax(excess.max(axis=1))]} vs ONNX Runtime "
                                    f"{got[np.argmax(excess.max(axis=1))]}")


# --------------------------------------------------------------------------- scikit-learn via skl2onnx


def _skl(est, X, zipmap=False) -> bytes:
    options = {id(est): {"zipmap": zipmap}} if hasattr(est, "classes_") else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return skl2onnx.to_onnx(est, X[:1], options=options).SerializeToString()


_CLASSIFIERS = {
    "DecisionTree": lambda: DecisionTreeClassifier(max_depth=5, random_state=0),
    "ExtraTree": lambda: ExtraTreeClassifier(max_depth=5, random_state=0),
    "RandomForest": lambda: RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0),
    "ExtraTrees": lambda: ExtraTreesClassifier(n_estimators=5, max_depth=4, random_state=0),
    "GradientBoosting": lambda: GradientBoostingClassifier(n_estimators=8, max_depth=2, random_state=0),
}
_REGRESSORS = {
    "DecisionTree": lambda: DecisionTreeRegressor(max_depth=5, random_state=0),
    "ExtraTree": lambda: ExtraTreeRegressor(max_depth=5, random_state=0),
    "RandomForest": lambda: RandomForestRegressor(n_estimators=5, max_depth=4, random_state=0),
    "ExtraTrees": lambda: ExtraTreesRegressor(n_estimators=5, max_depth=4, random_state=0),
    "GradientBoosting": lambda: GradientBoostingRegressor(n_estimators=8, max_depth=2, random_state=0),
}


@pytest.mark.parametrize("kind", ["binary", "multiclass"])
@pytest.mark.parametrize("name", sorted(_CLASSIFIERS))
def test_sklearn_classifier(name, kind):
    X, y = _data(kind)
    est = _CLASSIFIERS[name]().fit(X, y)
    model = check(_skl(est, X), X)
    ir = _estimator(model)
    assert ir.compare == "float64" and ir.is_classifier and list(ir.classes) == list(est.classes_)
    assert ir.allow_nan and ir.allow_inf


@pytest.mark.parametrize("name", sorted(_REGRESSORS))
def test_sklearn_regressor(name):
    X, y = _data("regression")
    est = _REGRESSORS[name]().fit(X, y)
    model = check(_skl(est, X), X)
    assert _estimator(model).flat


def test_multioutput_forest_regressor_has_vector_leaves():
    X, y = _data("multioutput")
    est = RandomForestRegressor(n_estimators=4, max_depth=4, random_state=0).fit(X, y)
    model = check(_skl(est, X), X)
    ir = _estimator(model)
    assert ir.n_targets == 2 and np.asarray(ir.value).shape[1] == 2 and not ir.flat


def test_zipmap_and_fastml_exporter():
    X, y = _data("multiclass")
    est = RandomForestClassifier(n_estimators=3, max_depth=4, random_state=0).fit(X, y)
    check(_skl(est, X, zipmap=True), X)
    check(converters.to_onnx(est, n_features=X.shape[1]).SerializeToString(), X)


@pytest.mark.parametrize("kind", ["binary", "multiclass", "regression"])
def test_pipeline_with_standard_scaler(kind):
    X, y = _data(kind)
    final = (GradientBoostingRegressor(n_estimators=5, max_depth=3, random_state=0) if kind == "regression"
             else RandomForestClassifier(n_estimators=4, max_depth=4, random_state=0))
    pipe = make_pipeline(StandardScaler(), final).fit(X, y)
    options = {id(final): {"zipmap": False}} if kind != "regression" else None
    data = skl2onnx.to_onnx(pipe, X[:1], options=options).SerializeToString()
    model = check(data, X)
    assert isinstance(model, Pipeline) and len(model.steps) == 1
    # the probe rows do reach the thresholds through the scaler
    est, Z = tree_input(model, _probe_rows(model, X))
    split = np.flatnonzero(np.asarray(est.left) >= 0)
    on = np.isin(Z[:, est.feature[split]], est.threshold[split].astype(np.float32))
    assert on.any(axis=1).sum() >= 10


def test_apply_reports_sklearn_node_ids():
    X, y = _data("multiclass")
    est = DecisionTreeClassifier(max_depth=6, random_state=0).fit(X, y)
    model = from_onnx(_skl(est, X))
    np.testing.assert_array_equal(tree_apply(model, X)[:, 0], est.apply(X))


def _as_double_input(m):
    """The same graph with a float64 input (ONNX Runtime compares it with the float32 thresholds
    widened to float64). skl2onnx's own float64 graphs type the probabilities as double, which
    ONNX Runtime 1.31 refuses to load."""
    m.graph.input[0].type.tensor_type.elem_type = DOUBLE
    return m


def test_double_graph_compares_in_float64():
    """A float64 input against float32 thresholds: rows between float32 neighbours decide like ORT."""
    X, y = _data("binary")
    est = DecisionTreeClassifier(max_depth=4, random_state=0).fit(X, y)
    data = _as_double_input(converters.to_onnx(est, n_features=X.shape[1])).SerializeToString()
    model = from_onnx(data)
    ir = _estimator(model)
    split = np.flatnonzero(np.asarray(ir.left) >= 0)
    rows = []
    for i in split:
        t = float(ir.threshold[i])
        for v in (t, t + abs(t) * 1e-12 + 1e-300, t - abs(t) * 1e-12 - 1e-300):
            r = X[0].astype(np.float64)
            r[int(ir.feature[i])] = v
            rows.append(r)
    X64 = np.concatenate([X.astype(np.float64), np.array(rows)])
    check(data, X64, rows=False)


# --------------------------------------------------------------------------- LightGBM / XGBoost via onnxmltools


def _gbm(kind: str, library: str):
    onnxmltools = pytest.importorskip("onnxmltools")
    from onnxmltools.convert.common.data_types import FloatTensorType
    X, y = _data(kind, n=200)
    X = X.copy()
    X[::9, 1] = np.nan  # missing values in training: the converters then track NaN per node
    types = [("input", FloatTensorType([None, X.shape[1]]))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if library == "lightgbm":
            lgb = pytest.importorskip("lightgbm")
            cls = lgb.LGBMRegressor if kind == "regression" else lgb.LGBMClassifier
            est = cls(n_estimators=6, num_leaves=8, min_child_samples=5, n_jobs=1, verbose=-1).fit(X, y)
            kw = {} if kind == "regression" else {"zipmap": False}
            data = onnxmltools.convert_lightgbm(est, initial_types=types, **kw)
        else:
            xgb = pytest.importorskip("xgboost")
            cls = xgb.XGBRegressor if kind == "regression" else xgb.XGBClassifier
            est = cls(n_estimators=6, max_depth=3, n_jobs=1).fit(X, y)
            data = onnxmltools.convert_xgboost(est, initial_types=types)
    return data.SerializeToString(), X


@pytest.mark.parametrize("kind", ["binary", "multiclass", "regression"])
@pytest.mark.parametrize("library", ["lightgbm", "xgboost"])
def test_gbm_via_onnxmltools(library, kind):
    data, X = _gbm(kind, library)
    model = check(data, X)
    ir = _estimator(model)
    if kind == "binary":  # boosting: mixed-sign weights for class id 0, LOGISTIC
        assert (ir.post, ir.predict_rule, ir.n_targets) == ("logistic", "gt0", 1)
    if kind == "multiclass":
        assert ir.post == "softmax" and ir.tree_target is not None
    if library == "lightgbm":
        assert np.asarray(ir.missing_left).any()


# --------------------------------------------------------------------------- hand-built graphs


def _graph(op: str, attrs: dict, n_features: int = 2, dtype=FLOAT, ml: int = 3, classifier: bool = None,
           extra_nodes=(), outputs=None) -> bytes:
    X = helper.make_tensor_value_info("X", dtype, [None, n_features])
    if classifier is None:
        classifier = op == "TreeEnsembleClassifier"
    if classifier:
        strings = "classlabels_strings" in attrs
        names = ["label", "probabilities"]
        outs = [helper.make_tensor_value_info("label", TensorProto.STRING if strings else TensorProto.INT64, [None]),
                helper.make_tensor_value_info("probabilities", FLOAT, [None, None])]
    else:
        names = ["variable"]
        outs = [helper.make_tensor_value_info("variable", dtype if op == "TreeEnsemble" else FLOAT, [None, None])]
    attrs = {k: v for k, v in attrs.items() if v is not None}
    node = helper.make_node(op, ["X"], names, domain="ai.onnx.ml", name="trees", **attrs)
    graph = helper.make_graph([node, *extra_nodes], "g", [X], outputs or outs)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("ai.onnx.ml", ml)])
    m.ir_version = 10
    return m.SerializeToString()


def _v3_trees(modes, thresholds, features, tracks=None, prefix="target", targets=None, weights=None, extra=()):
    """Two depth-2 trees: node 0 -> (1, 2), 1 -> leaves (3, 4), 2 -> leaves (5, 6); ``modes`` etc.
    give the three splits of tree 0 (tree 1 is LEQ x1 <= 0.25 -> leaves 1, 2). ``extra``: more weights
    as (tree, node, target, weight)."""
    n0 = dict(modes=list(modes) + ["LEAF"] * 4, values=list(thresholds) + [0.0] * 4,
              features=list(features) + [0] * 4, true=[1, 3, 5, 0, 0, 0, 0], false=[2, 4, 6, 0, 0, 0, 0])
    attrs = dict(nodes_treeids=[0] * 7 + [1] * 3, nodes_nodeids=list(range(7)) + [0, 1, 2],
                 nodes_modes=n0["modes"] + ["BRANCH_LEQ", "LEAF", "LEAF"],
                 nodes_values=n0["values"] + [0.25, 0, 0], nodes_featureids=n0["features"] + [1, 0, 0],
                 nodes_truenodeids=n0["true"] + [1, 0, 0], nodes_falsenodeids=n0["false"] + [2, 0, 0])
    if tracks is not None:
        attrs["nodes_missing_value_tracks_true"] = list(tracks) + [0] * (10 - len(tracks))
    leaves = [(0, 3), (0, 4), (0, 5), (0, 6), (1, 1), (1, 2)] + [(t, n) for t, n, _, _ in extra]
    weights = list(weights or [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]) + [w for _, _, _, w in extra]
    targets = list(targets or [0] * 6) + [c for _, _, c, _ in extra]
    attrs.update({f"{prefix}_treeids": [t for t, _ in leaves], f"{prefix}_nodeids": [n for _, n in leaves],
                  f"{prefix}_ids": targets, f"{prefix}_weights": weights})
    return attrs


def _every_leaf_weighs_every_target(n_out, tree=1):
    """Extra zero-and-small weights so that ``tree`` weighs every output column in every leaf
    (ONNX Runtime's per-row bookkeeping of scored columns then never matters)."""
    leaves = {0: (3, 4, 5, 6), 1: (1, 2)}[tree]
    return [(tree, n, c, 0.0 if (n + c) % 2 else 0.015625 * (c + 1)) for n in leaves for c in range(n_out)]


def _grid(values=(-np.inf, -1.0, -0.0, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0, np.inf, np.nan), dtype=np.float32):
    v = np.array(values, dtype=dtype)
    v = np.unique(np.concatenate([v, np.nextafter(v, dtype(np.inf)), np.nextafter(v, dtype(-np.inf))]))
    v = np.concatenate([v, [np.nan]]).astype(dtype)
    a, b = np.meshgrid(v, v)
    return np.column_stack([a.ravel(), b.ravel()])


_MODES = ["BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT", "BRANCH_EQ", "BRANCH_NEQ"]


@pytest.mark.parametrize("tracks", [None, (1, 1, 1), (0, 1, 0)])
@pytest.mark.parametrize("mode", _MODES)
def test_node_modes_and_missing_tracks(mode, tracks):
    others = _MODES[(_MODES.index(mode) + 1) % 6], _MODES[(_MODES.index(mode) + 3) % 6]
    attrs = _v3_trees([mode, *others], [1.0, 0.0, 2.0], [0, 1, 0], tracks=tracks, targets=None)
    attrs["n_targets"] = 1
    model = check(_graph("TreeEnsembleRegressor", attrs), _grid(), rows=False)
    ir = _estimator(model)
    if mode in ("BRANCH_EQ", "BRANCH_NEQ"):
        assert ir.split[0] == SPLIT_MEMBER and ir.cat_exact


def test_node_modes_classifier_with_string_labels():
    attrs = _v3_trees(["BRANCH_GTE", "BRANCH_NEQ", "BRANCH_GT"], [1.0, 0.0, 2.0], [0, 1, 0], tracks=(1, 0, 1),
                      prefix="class", targets=[0, 1, 2, 0, 1, 2], weights=[0.5, 0.2, 0.9, 0.1, 0.3, 0.6])
    attrs.update(classlabels_strings=["a", "b", "c"], base_values=[0.0, 0.0, 0.0])
    model = check(_graph("TreeEnsembleClassifier", attrs), _grid(), rows=False)
    assert list(_estimator(model).classes) == ["a", "b", "c"]


def test_double_attributes_of_opset_3():
    """*_as_tensor thresholds and weights that float32 cannot hold, with a float64 input."""
    t = np.array([0.1, 1.0 / 3, 2.0 / 3, 0, 0, 0, 0, 0.7, 0, 0])
    attrs = _v3_trees(["BRANCH_LEQ", "BRANCH_LT", "BRANCH_GT"], [0, 0, 0], [0, 1, 0])
    del attrs["nodes_values"], attrs["target_weights"]
    attrs.update(nodes_values_as_tensor=numpy_helper.from_array(t, "t"), n_targets=1,
                 target_weights_as_tensor=numpy_helper.from_array(np.array([1 + 1e-12, 2, 4, 8, 16, 32.0]), "w"),
                 base_values_as_tensor=numpy_helper.from_array(np.array([1e-9]), "b"))
    data = _graph("TreeEnsembleRegressor", attrs, dtype=DOUBLE)
    X = _grid((0.1, 1.0 / 3, 2.0 / 3, 0.7, np.float32(0.1), np.float32(1.0 / 3), np.nan), dtype=np.float64)
    model = check(data, X, rows=False)
    ir = _estimator(model)
    assert ir.threshold[0] == 0.1 and np.asarray(ir.value)[3, 0] == 1 + 1e-12 and ir.base_score[0] == 1e-9


def test_opset3_graph_rewritten_from_skl2onnx_with_double_tensors():
    X, y = _data("multiclass")
    est = GradientBoostingClassifier(n_estimators=5, max_depth=3, random_state=0).fit(X, y)
    m = _as_double_input(converters.to_onnx(est, n_features=X.shape[1]))
    node = next(n for n in m.graph.node if n.op_type == "TreeEnsembleClassifier")
    for name in ("nodes_values", "class_weights", "base_values"):
        a = next(a for a in node.attribute if a.name == name)
        values = np.asarray(list(a.floats), dtype=np.float64)
        node.attribute.remove(a)
        node.attribute.append(helper.make_attribute(name + "_as_tensor", numpy_helper.from_array(values, name)))
    for o in m.opset_import:
        if o.domain == "ai.onnx.ml":
            o.version = 3
    check(m.SerializeToString(), X.astype(np.float64))


def test_sparse_unordered_node_ids_and_apply_numbering():
    # tree id 7; root id 4 listed first, then the others by increasing id (0, 1, 2, 3 -> local 1 .. 4):
    # 4: x1 <= 0.5 ? 2 : 0;  2: x0 <= 1 ? leaf 1 : leaf 3;  0 is a leaf
    attrs = dict(nodes_treeids=[7] * 5, nodes_nodeids=[4, 3, 2, 1, 0],
                 nodes_modes=["BRANCH_LEQ", "LEAF", "BRANCH_LEQ", "LEAF", "LEAF"],
                 nodes_values=[0.5, 0, 1.0, 0, 0], nodes_featureids=[1, 0, 0, 0, 0],
                 nodes_truenodeids=[2, 0, 1, 0, 0], nodes_falsenodeids=[0, 0, 3, 0, 0],
                 target_treeids=[7] * 3, target_nodeids=[0, 1, 3], target_ids=[0] * 3,
                 target_weights=[1.0, 2.0, 4.0], n_targets=1)
    X = _grid()
    model = check(_graph("TreeEnsembleRegressor", attrs), X, rows=False)
    leaf = tree_apply(model, X)[:, 0]
    want = np.where(X[:, 1] <= 0.5, np.where(X[:, 0] <= 1, 2, 4), 1)  # ids 1, 3, 0 are local 2, 4, 1
    np.testing.assert_array_equal(leaf, want)


def test_multitarget_leaves_and_base_values():
    # a leaf of tree 0 weighs two targets: vector leaves
    extra = [(0, 3, 2, 0.25)] + _every_leaf_weighs_every_target(3)
    attrs = _v3_trees(["BRANCH_LEQ", "BRANCH_LT", "BRANCH_GT"], [1.0, 0.0, 2.0], [0, 1, 0],
                      targets=[0, 1, 2, 0, 1, 2], weights=[1.0, -2.0, 4.0, 8.0, 16.0, -32.0], extra=extra)
    attrs.update(n_targets=3, base_values=[0.5, -1.0, 100.0])
    model = check(_graph("TreeEnsembleRegressor", attrs), _grid(), rows=False)
    assert np.asarray(_estimator(model).value).shape[1] == 3


def test_multitarget_without_base_values_needs_no_coverage():
    attrs = _v3_trees(["BRANCH_LEQ", "BRANCH_LT", "BRANCH_GT"], [1.0, 0.0, 2.0], [0, 1, 0],
                      targets=[0, 1, 2, 0, 1, 2], weights=[1.0, -2.0, 4.0, 8.0, 16.0, -32.0])
    attrs.update(n_targets=3, base_values=[0.0, 0.0, 0.0])
    check(_graph("TreeEnsembleRegressor", attrs), _grid(), rows=False)


def test_average_with_base_values():
    attrs = _v3_trees(["BRANCH_LEQ", "BRANCH_LEQ", "BRANCH_LEQ"], [1.0, 0.0, 2.0], [0, 1, 0])
    attrs.update(n_targets=1, aggregate_function="AVERAGE", base_values=[10.0])
    model = check(_graph("TreeEnsembleRegressor", attrs), _grid(), rows=False)
    ir = _estimator(model)
    assert ir.average and ir.base_score[0] == 20.0  # the IR divides the base too


def test_trees_addressing_one_target_each_get_scalar_leaves():
    attrs = _v3_trees(["BRANCH_LEQ", "BRANCH_LEQ", "BRANCH_LEQ"], [1.0, 0.0, 2.0], [0, 1, 0],
                      targets=[1, 1, 1, 1, 0, 0])
    attrs.update(n_targets=2)
    ir = _estimator(check(_graph("TreeEnsembleRegressor", attrs), _grid(), rows=False))
    assert np.asarray(ir.value).shape[1] == 1 and list(ir.tree_target) == [1, 0]


def _binary(weights, post="NONE", base=None, labels=(5, 7), ids=None, keep=None):
    attrs = _v3_trees(["BRANCH_LEQ", "BRANCH_LT", "BRANCH_GT"], [1.0, 0.0, 2.0], [0, 1, 0], prefix="class",
                      targets=ids or [0] * 6, weights=list(weights))
    if keep is not None:  # weights for these leaves only
        for k in ("class_treeids", "class_nodeids", "class_ids", "class_weights"):
            attrs[k] = [attrs[k][i] for i in keep]
    attrs.update(classlabels_int64s=list(labels), post_transform=post)
    if base is not None:
        attrs["base_values"] = list(base)
    return _graph("TreeEnsembleClassifier", attrs)


_POSITIVE = [0.1, 0.3, 0.2, 0.35, 0.05, 0.4]
_MIXED = [0.1, -0.3, 0.2, -0.35, 0.05, -0.4]


@pytest.mark.parametrize("weights,post,base,expect", [
    (_POSITIVE, "NONE", None, ("proba", "argmax", 2)),
    (_POSITIVE, "SOFTMAX", None, ("proba", "argmax", 2)),  # ORT ignores SOFTMAX here
    (_POSITIVE, "NONE", [0.125], ("proba", "argmax", 2)),
    (_MIXED, "LOGISTIC", None, ("logistic", "gt0", 1)),
    (_MIXED, "LOGISTIC", [0.25], ("logistic", "gt0", 1)),
    (_MIXED, "NONE", None, ("none", "gt0", 1)),  # ORT writes [-s, s]
    (_MIXED, "SOFTMAX", [-0.1], ("none", "gt0", 1)),
])
def test_binary_classifier_conventions(weights, post, base, expect):
    model = check(_binary(weights, post, base), _grid(), rows=False)
    ir = _estimator(model)
    assert (ir.post, ir.predict_rule, ir.n_targets) == expect
    assert list(ir.classes) == [5, 7]


@pytest.mark.parametrize("post,weights,base", [
    ("NONE", _MIXED, None), ("NONE", _POSITIVE, None), ("LOGISTIC", _MIXED, None),
    ("SOFTMAX", _MIXED, [0.0, 1.0, -1.0]),
])
def test_multiclass_conventions(post, weights, base):
    attrs = _v3_trees(["BRANCH_LEQ", "BRANCH_LT", "BRANCH_GT"], [1.0, 0.0, 2.0], [0, 1, 0], prefix="class",
                      targets=[0, 1, 2, 0, 1, 2], weights=weights, extra=_every_leaf_weighs_every_target(3))
    attrs.update(classlabels_int64s=[1, 2, 3], post_transform=post)
    if base is not None:
        attrs["base_values"] = base
    model = check(_graph("TreeEnsembleClassifier", attrs), _grid(), rows=False)
    ir = _estimator(model)
    positive = post == "NONE" and weights is _POSITIVE
    assert ir.post == {"NONE": "proba" if positive else "none", "LOGISTIC": "logistic", "SOFTMAX": "softmax"}[post]


def test_label_and_score_pass_through_cast_identity_reshape_mul():
    attrs = _v3_trees(["BRANCH_LEQ", "BRANCH_LT", "BRANCH_GT"], [1.0, 0.0, 2.0], [0, 1, 0], prefix="class",
                      weights=_MIXED)
    attrs.update(classlabels_int64s=[0, 1], post_transform="LOGISTIC")
    X = helper.make_tensor_value_info("X", FLOAT, [None, 2])
    node = helper.make_node("TreeEnsembleClassifier", ["X"], ["l0", "p0"], domain="ai.onnx.ml", **attrs)
    extra = [helper.make_node("Cast", ["l0"], ["l1"], to=TensorProto.INT32),
             helper.make_node("Identity", ["p0"], ["p1"]),
             helper.make_node("Cast", ["p1"], ["p2"], to=DOUBLE),
             helper.make_node("Reshape", ["p2", "shape"], ["p3"]),
             helper.make_node("Mul", ["p3", "one"], ["probabilities"]),
             helper.make_node("Identity", ["l1"], ["label"])]
    inits = [numpy_helper.from_array(np.array([-1, 2], np.int64), "shape"),
             numpy_helper.from_array(np.array([1.0]), "one")]
    graph = helper.make_graph([node, *extra], "g", [X],
                              [helper.make_tensor_value_info("label", TensorProto.INT32, [None]),
                               helper.make_tensor_value_info("probabilities", DOUBLE, [None, 2])], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("ai.onnx.ml", 3)])
    m.ir_version = 10
    model = check(m.SerializeToString(), _grid(), rows=False)
    assert _estimator(model).classes.dtype == np.int32


# ---- opset 5


def _tensor(values, dtype=np.float32):
    return numpy_helper.from_array(np.asarray(values, dtype=dtype))


def _v5_attrs(dtype=np.float32, **changes):
    """Tree 0: n0 x0 <= 1 ? n1 : n2; n1: x1 in {0, 2, 5} ? leaf0 : leaf1; n2: x0 != 3 ? leaf2 : n3;
    n3: x1 > 0.5 ? leaf3 : leaf4. Tree 1: n4 x1 < 1.5 ? leaf5 : leaf6 (targets mixed).
    Tree 2: a single leaf (n5's branches both reach leaf7)."""
    a = dict(nodes_modes=_tensor([0, 6, 5, 3, 1, 0], np.uint8), nodes_splits=_tensor([1, 0, 3, 0.5, 1.5, 0], dtype),
             nodes_featureids=[0, 1, 0, 1, 1, 0], nodes_truenodeids=[1, 0, 2, 3, 5, 7],
             nodes_trueleafs=[0, 1, 1, 1, 1, 1], nodes_falsenodeids=[2, 1, 3, 4, 6, 7],
             nodes_falseleafs=[0, 1, 0, 1, 1, 1], nodes_missing_value_tracks_true=[0, 1, 0, 1, 0, 0],
             membership_values=_tensor([0, 2, 5, np.nan], dtype), leaf_targetids=[0, 1, 0, 1, 0, 1, 1, 0],
             leaf_weights=_tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype), tree_roots=[0, 4, 5], n_targets=2)
    a.update(changes)
    return a


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("aggregate", [1, 0])
def test_tree_ensemble_opset5(aggregate, dtype):
    attrs = _v5_attrs(dtype, aggregate_function=aggregate)
    data = _graph("TreeEnsemble", attrs, dtype=FLOAT if dtype == np.float32 else DOUBLE, ml=5)
    X = _grid((-np.inf, -1.4e-45, -0.0, 0, 0.5, 1, 1.5, 2, 3, 5, 5.5, np.inf, np.nan), dtype=dtype)
    model = check(data, X, rows=False)
    ir = _estimator(model)
    assert ir.n_trees == 3 and ir.average == (aggregate == 0) and ir.cat_exact
    # preorder numbering, true branch first: tree 0 is n0, n1, leaf0, leaf1, n2, leaf2, n3, leaf3, leaf4
    assert ir.tree_offsets.tolist() == [0, 9, 12, 13]
    leaves = tree_apply(model, np.array([[0, 2], [0, 1], [4, 1], [3, 1], [3, 0]], dtype))[:, 0]
    assert leaves.tolist() == [2, 3, 5, 7, 8]


def test_opset5_single_target_and_trailing_nan_optional():
    attrs = _v5_attrs(n_targets=1, leaf_targetids=[0] * 8, membership_values=_tensor([0, 2, 5]))
    check(_graph("TreeEnsemble", attrs, ml=5), _grid((0, 1, 2, 3, 5, np.nan)), rows=False)


@pytest.mark.parametrize("members", [[0, 2, 35], list(range(31))])
def test_opset5_big_member_set_truncates_like_onnxruntime(members):
    """ONNX Runtime tests a set with a member above 30 or with 31+ members on trunc(x): 2.5 is in {2},
    -0.5 in {0}. For small sets (and EQ) it tests equality. The IR's cat_exact=False is that rule."""
    attrs = _v5_attrs(nodes_modes=_tensor([0, 6, 1, 3, 1, 0], np.uint8), membership_values=_tensor(members + [np.nan]))
    X = _grid((-1.0, -0.5, -1.4e-45, 0, 0.5, 1, 2, 2.5, 3, 30.5, 34.9, 35, 35.5, 36, np.inf, np.nan))
    model = check(_graph("TreeEnsemble", attrs, ml=5), X, rows=False)
    assert not _estimator(model).cat_exact


# --------------------------------------------------------------------------- refusals


def _reg(**changes):
    attrs = _v3_trees(["BRANCH_LEQ", "BRANCH_LT", "BRANCH_GT"], [1.0, 0.0, 2.0], [0, 1, 0])
    attrs["n_targets"] = 1
    attrs.update(changes)
    return {k: v for k, v in attrs.items() if v is not None}


@pytest.mark.parametrize("data,match", [
    (lambda: _graph("TreeEnsembleRegressor", _reg(aggregate_function="MIN")), "aggregate_function MIN"),
    (lambda: _graph("TreeEnsembleRegressor", _reg(aggregate_function="MAX")), "aggregate_function MAX"),
    (lambda: _graph("TreeEnsembleRegressor", _reg(post_transform="LOGISTIC")), "post_transform LOGISTIC"),
    (lambda: _binary(_MIXED, "SOFTMAX_ZERO"), "SOFTMAX_ZERO"),
    (lambda: _binary(_MIXED, "PROBIT"), "PROBIT"),
    (lambda: _binary(_POSITIVE, "LOGISTIC"), "score > 0.5"),
    (lambda: _binary(_MIXED, "LOGISTIC", base=[0.1, 0.2]), "2 base_values"),
    (lambda: _binary(_MIXED, ids=[0, 1, 0, 1, 0, 1]), r"class ids \[0, 1\]"),
    (lambda: _binary(_POSITIVE, ids=[1] * 6), r"class ids \[1\]"),
    (lambda: _graph("TreeEnsembleRegressor", _reg(nodes_modes=["BRANCH_EQ", "BRANCH_LT", "BRANCH_GT"] + ["LEAF"] * 4
                                                  + ["BRANCH_LEQ", "LEAF", "LEAF"],
                                                  nodes_values=[1.5, 0, 2] + [0] * 4 + [0.25, 0, 0])), "1.5"),
    (lambda: _graph("TreeEnsembleRegressor", _reg(nodes_modes=["BRANCH_NEQ", "BRANCH_LT", "BRANCH_GT"] + ["LEAF"] * 4
                                                  + ["BRANCH_LEQ", "LEAF", "LEAF"],
                                                  nodes_values=[-1.0, 0, 2] + [0] * 4 + [0.25, 0, 0])), "-1.0"),
    (lambda: _graph("TreeEnsemble", _v5_attrs(membership_values=_tensor([0, 2.5, np.nan])), ml=5), "2.5"),
    (lambda: _graph("TreeEnsemble", _v5_attrs(post_transform=1), ml=5), "SOFTMAX"),
    (lambda: _graph("TreeEnsemble", _v5_attrs(post_transform=2), ml=5), "LOGISTIC"),
    (lambda: _graph("TreeEnsemble", _v5_attrs(post_transform=4), ml=5), "PROBIT"),
    (lambda: _graph("TreeEnsemble", _v5_attrs(aggregate_function=3), ml=5), "MAX"),
    (lambda: _graph("TreeEnsemble", _v5_attrs(membership_values=_tensor([0, 2, 35])), ml=5), r"trunc\(x\)"),
    (lambda: _graph("TreeEnsembleRegressor", _reg(target_nodeids=[3, 6, 5, 6, 1, 2])), "uses only the first"),
    (lambda: _graph("TreeEnsembleRegressor", _reg(  # leaf 4 has no weight
        target_treeids=[0, 0, 0, 1, 1], target_nodeids=[3, 5, 6, 1, 2], target_ids=[0] * 5,
        target_weights=[1.0, 4.0, 8.0, 16.0, 32.0], nodes_values=[1.0, 0, 2, 0, 7.0, 0, 0, 0.25, 0, 0])),
     "nodes_values 7.0"),
    (lambda: _graph("TreeEnsembleRegressor", _reg(n_targets=2, base_values=[0.0, 1.0])), "target 1 gets no weight"),
    (lambda: _binary(_MIXED, base=[0.25], keep=[0, 1, 2, 4]), "drops base_values"),
])
def test_unsupported_is_refused_with_a_reason(data, match):
    with pytest.raises(UnsupportedModelError, match=match) as e:
        from_onnx(data())
    assert "trees" in str(e.value)  # names the node


def test_multiclass_where_a_class_can_miss_its_score_is_refused():
    """ORT leaves a class without weight on the row out of the argmax (it would pick class 2 here)."""
    attrs = _v3_trees(["BRANCH_LEQ", "BRANCH_LT", "BRANCH_GT"], [1.0, 0.0, 2.0], [0, 1, 0], prefix="class",
                      targets=[0, 1, 0, 1, 0, 1], weights=[-0.5] * 6)
    attrs.update(classlabels_int64s=[5, 6, 7])
    with pytest.raises(UnsupportedModelError, match="class 5 .id 0. gets no weight"):
        from_onnx(_graph("TreeEnsembleClassifier", attrs))
    attrs["base_values"] = [0.0, 0.0, 0.0]  # base values give every class a score
    check(_graph("TreeEnsembleClassifier", attrs), _grid(), rows=False)


# --------------------------------------------------------------------------- malformed graphs


def _bad_v3(**changes):
    return _graph("TreeEnsembleRegressor", _reg(**changes))


_N = 10  # nodes in _v3_trees


@pytest.mark.parametrize("data,match", [
    (lambda: _bad_v3(nodes_featureids=[0] * (_N - 1)), "nodes_featureids.*9 values, expected 10"),
    (lambda: _bad_v3(nodes_modes=["BRANCH_LEQ"] * 3 + ["LEAF"] * 4 + ["BRANCH_LEQ", "LEAF"]), "nodes_modes"),
    (lambda: _bad_v3(nodes_values=[1.0] * 9), "nodes_values.*9 values"),
    (lambda: _bad_v3(nodes_missing_value_tracks_true=[1, 0]), "nodes_missing_value_tracks_true"),
    (lambda: _bad_v3(nodes_missing_value_tracks_true=[2] + [0] * 9), r"tracks_true'\[0\] = 2"),
    (lambda: _bad_v3(nodes_modes=["BRANCH_LE"] + ["BRANCH_LT", "BRANCH_GT"] + ["LEAF"] * 4
                     + ["BRANCH_LEQ", "LEAF", "LEAF"]), "BRANCH_LE"),
    (lambda: _bad_v3(nodes_truenodeids=[9, 3, 5, 0, 0, 0, 0, 1, 0, 0]), "true node id 9"),
    (lambda: _bad_v3(nodes_truenodeids=[0, 3, 5, 0, 0, 0, 0, 1, 0, 0]), "reached twice"),  # self loop
    (lambda: _bad_v3(nodes_falsenodeids=[2, 0, 6, 0, 0, 0, 0, 2, 0, 0]), "reached twice"),  # cycle 1 -> 0
    (lambda: _bad_v3(nodes_falsenodeids=[2, 5, 6, 0, 0, 0, 0, 2, 0, 0]), "reached twice"),  # shared child
    (lambda: _bad_v3(nodes_nodeids=[0, 1, 2, 3, 4, 5, 5, 0, 1, 2]), "node id 5 twice"),
    (lambda: _bad_v3(nodes_treeids=[0] * 6 + [1, 0, 1, 1]), "not listed together"),
    (lambda: _bad_v3(nodes_nodeids=[0, 1, 2, 3, 4, 5, 6, 1, 0, 2],  # leaf 1 listed first: root unreachable
                     nodes_modes=["BRANCH_LEQ", "BRANCH_LT", "BRANCH_GT"] + ["LEAF"] * 5 + ["BRANCH_LEQ", "LEAF"],
                     nodes_truenodeids=[1, 3, 5, 0, 0, 0, 0, 0, 1, 0],
                     nodes_falsenodeids=[2, 4, 6, 0, 0, 0, 0, 0, 2, 0]), "unreachable"),
    (lambda: _bad_v3(nodes_nodeids=[0, 1, 2, 3, 4, 5, 6, 0, 1, 2],
                     nodes_modes=["BRANCH_LEQ", "LEAF", "BRANCH_GT"] + ["LEAF"] * 4 + ["BRANCH_LEQ", "LEAF", "LEAF"]),
     "unreachable"),
    (lambda: _bad_v3(nodes_featureids=[-1, 1, 0] + [0] * 7), "feature id -1"),
    (lambda: _bad_v3(nodes_featureids=[5, 1, 0] + [0] * 7), "feature id 5 out of range"),
    (lambda: _bad_v3(nodes_values=[np.nan] + [0.0] * 9), "threshold is NaN"),
    (lambda: _bad_v3(nodes_nodeids=[0, 1, 2, 3, 4, 5, -6, 0, 1, 2]), "negative"),
    (lambda: _bad_v3(n_targets=None), "n_targets"),
    (lambda: _bad_v3(n_targets=0), "n_targets"),
    (lambda: _bad_v3(base_values=[1.0, 2.0]), "base_values"),
    (lambda: _bad_v3(base_values=[np.inf]), "base_values"),
    (lambda: _bad_v3(target_ids=[0, 0, 0, 0, 0, 1]), "target_ids.*out of range"),
    (lambda: _bad_v3(target_nodeids=[3, 4, 5, 6, 1, 9]), "tree 1 node 9, which does not exist"),
    (lambda: _bad_v3(target_weights=[1.0] * 5), "target_weights"),
    (lambda: _bad_v3(target_weights=[1.0] * 5 + [np.nan]), "target_weights"),
    (lambda: _bad_v3(target_ids=None), "target_"),
    (lambda: _bad_v3(nodes_values_as_tensor=_tensor([0.0] * _N, np.float64)), "both set"),
    (lambda: _bad_v3(nodes_truenodeids=[1.5]), "nodes_truenodeids"),  # FLOATS where INTS belong
])
def test_malformed_regressor(data, match):
    with pytest.raises(InvalidModelError, match=match):
        from_onnx(data())


def _bad_cls(**changes):
    attrs = _v3_trees(["BRANCH_LEQ", "BRANCH_LT", "BRANCH_GT"], [1.0, 0.0, 2.0], [0, 1, 0], prefix="class",
                      targets=[0, 1, 2, 0, 1, 2])
    attrs.update(classlabels_int64s=[0, 1, 2], base_values=[0, 0, 0])
    attrs.update(changes)
    return _graph("TreeEnsembleClassifier", {k: v for k, v in attrs.items() if v is not None})


@pytest.mark.parametrize("data,match", [
    (lambda: _bad_cls(classlabels_int64s=None), "classlabels"),
    (lambda: _bad_cls(classlabels_strings=["a", "b", "c"]), "exactly one"),
    (lambda: _bad_cls(classlabels_int64s=[1]), "at least 2"),
    (lambda: _bad_cls(classlabels_int64s=[1, 1, 2]), "not unique"),
    (lambda: _bad_cls(class_ids=[0, 1, 2, 0, 1, 3]), r"class_ids\[5\] = 3"),
    (lambda: _bad_cls(class_nodeids=[3, 4]), "class_nodeids"),
    (lambda: _bad_cls(base_values=[0, 0]), "base_values"),
    (lambda: _bad_cls(post_transform="SIGMOID"), "post_transform"),
])
def test_malformed_classifier(data, match):
    with pytest.raises(InvalidModelError, match=match):
        from_onnx(data())


def _bad_v5(**changes):
    return _graph("TreeEnsemble", _v5_attrs(**changes), ml=5)


@pytest.mark.parametrize("data,match", [
    (lambda: _bad_v5(nodes_modes=_tensor([0, 6, 5, 3, 1, 7], np.uint8)), r"nodes_modes\[5\] = 7"),
    (lambda: _bad_v5(nodes_modes=_tensor([0, 6, 5, 3, 1, 0], np.float32)), "uint8"),
    (lambda: _bad_v5(nodes_splits=_tensor([1, 0, 3])), "nodes_splits"),
    (lambda: _bad_v5(nodes_truenodeids=[1, 0, 2, 3, 9, 7]), r"nodes_truenodeids\[4\] = 9"),
    (lambda: _bad_v5(nodes_falsenodeids=[2, 1, 6, 4, 6, 7]), r"nodes_falsenodeids\[2\] = 6"),
    (lambda: _bad_v5(nodes_falsenodeids=[2, 1, 0, 4, 6, 7], nodes_falseleafs=[0, 1, 0, 1, 1, 1]), "reached twice"),
    (lambda: _bad_v5(nodes_truenodeids=[1, 0, 2, 1, 5, 7]), "reached twice"),  # leaf 1 shared
    (lambda: _bad_v5(tree_roots=[0, 4, 2]), "reached twice"),  # n2 in two trees
    (lambda: _bad_v5(tree_roots=[0, 6]), r"tree_roots\[1\] = 6"),
    (lambda: _bad_v5(tree_roots=None), "tree_roots"),
    (lambda: _bad_v5(nodes_trueleafs=[0, 1, 2, 1, 1, 1]), "nodes_trueleafs"),
    (lambda: _bad_v5(membership_values=_tensor([0, np.nan, 2, np.nan])), "2 NaN-separated set"),
    (lambda: _bad_v5(membership_values=_tensor([np.nan])), "empty set"),
    (lambda: _bad_v5(membership_values=None), "membership_values"),
    (lambda: _bad_v5(leaf_weights=_tensor([1, 2, 3])), "leaf_weights"),
    (lambda: _bad_v5(leaf_targetids=[0, 1, 0, 1, 0, 1, 1, 2]), r"leaf_targetids\[7\] = 2"),
    (lambda: _bad_v5(n_targets=None), "n_targets"),
    (lambda: _bad_v5(aggregate_function=7), "aggregate_function"),
    (lambda: _bad_v5(post_transform=9), "post_transform"),
])
def test_malformed_opset5(data, match):
    with pytest.raises(InvalidModelError, match=match):
        from_onnx(data())


def _fuzz_bases():
    cls = _v3_trees(["BRANCH_LEQ", "BRANCH_NEQ", "BRANCH_GT"], [1.0, 0.0, 2.0], [0, 1, 0], prefix="class",
                    targets=[0, 1, 2, 0, 1, 2], weights=_MIXED, tracks=(1, 0, 1))
    cls.update(classlabels_int64s=[0, 1, 2], base_values=[0.0, 0.5, -0.5], post_transform="SOFTMAX")
    v5 = {k: v for k, v in _v5_attrs().items() if k not in ("nodes_modes", "nodes_splits")}
    v5.update(nodes_modes=_tensor([0, 6, 2, 3, 1, 0], np.uint8), nodes_splits=_tensor([1, 0, 3, 0.5, 1.5, 0]))
    return {"regressor": ("TreeEnsembleRegressor", _reg(), 3),
            "classifier": ("TreeEnsembleClassifier", cls, 3),
            "opset5": ("TreeEnsemble", v5, 5)}


@pytest.mark.parametrize("base", ["regressor", "classifier", "opset5"])
def test_mutation_fuzz_raises_only_typed_errors_and_agrees_with_ort(base):
    """Random edits of a valid graph's list attributes: from_onnx either reads the graph (and then
    agrees with ONNX Runtime whenever ORT loads it too) or raises a fastml error, nothing else."""
    op, attrs0, ml = _fuzz_bases()[base]
    rng = np.random.default_rng(1)
    X = _grid((-1, 0, 0.25, 1, 2, 3, np.nan))
    outcomes = {"read": 0, "refused": 0, "compared": 0}
    for _ in range(120):
        attrs = {k: (list(v) if isinstance(v, list) else v) for k, v in attrs0.items()}
        for _ in range(rng.integers(1, 3)):
            key = rng.choice([k for k, v in attrs.items() if isinstance(v, list) and v])
            v = attrs[key]
            i = int(rng.integers(len(v)))
            if rng.integers(4) == 0:
                v.pop(i)
            elif isinstance(v[0], str):
                v[i] = str(rng.choice(_MODES + ["LEAF"]))
            elif isinstance(v[0], float):
                v[i] = float(rng.choice([np.nan, np.inf, -2.0, 0.5, 3.0]))
            else:
                v[i] = int(rng.integers(-2, 12))
        data = _graph(op, attrs, ml=ml)
        try:
            from_onnx(data)
        except FastMLError:
            outcomes["refused"] += 1
            continue
        outcomes["read"] += 1
        try:
            _run(data, X)
        except Exception:  # ONNX Runtime refuses some graphs fastml reads (node ids >= node count)
            continue
        check(data, X, rows=False)
        outcomes["compared"] += 1
    assert outcomes["compared"] > 5 and outcomes["refused"] > 30, outcomes


def test_not_a_tree_input_and_mixed_outputs_are_refused():
    attrs = _reg()
    X = helper.make_tensor_value_info("X", FLOAT, [None, 2])
    trees = helper.make_node("TreeEnsembleRegressor", ["X"], ["v"], domain="ai.onnx.ml", name="trees", **attrs)
    lin = helper.make_node("LinearRegressor", ["X"], ["w"], domain="ai.onnx.ml", coefficients=[1.0, 2.0])
    graph = helper.make_graph([trees, lin], "g", [X], [helper.make_tensor_value_info("v", FLOAT, [None, 1]),
                                                       helper.make_tensor_value_info("w", FLOAT, [None, 1])])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("ai.onnx.ml", 3)])
    with pytest.raises(UnsupportedModelError, match="output 'w'"):
        from_onnx(m)
    trees2 = helper.make_node("TreeEnsembleRegressor", ["v"], ["u"], domain="ai.onnx.ml", name="second", **attrs)
    graph = helper.make_graph([trees, trees2], "g", [X], [helper.make_tensor_value_info("u", FLOAT, [None, 1])])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("ai.onnx.ml", 3)])
    with pytest.raises(UnsupportedModelError, match="second.*expected features"):
        from_onnx(m)
