"""MLPClassifier / MLPRegressor: parity scikit-learn <-> native <-> ONNX Runtime, the IR's
validation rules, and the input contract.

Tolerances (the conftest rule: absolute errors scale with the row's magnitude, here
``1 + max |output|``):

* ``MLP_NATIVE_TOL`` (1e-10): native vs scikit-learn for models fitted on float64
  data. Both compute in float64 (float32 input widened as scikit-learn's
  ``X @ coefs_`` widens it); summation order, the vectorised exp/tanh (<= 2.5 ulp) and
  two or three layers of them leave ~1e-14 relative; 1e-10 leaves margin without
  hiding a wrong formula.
* ``MLP_F32_TOL`` (1e-4): anything computed in float32 (a model fitted on float32 data
  with float32 input, on either side; or skl2onnx's float32 graph): rounding of
  ~6e-8 per term over up to 32 terms per layer, through three layers.

Labels: float64 routes agree with scikit-learn on every row; float32 routes may
differ only on rows whose scikit-learn margin (top-two probability gap, or distance
of p from 0.5) is below 1e-4.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from fastml import InputError, InvalidModelError, MethodUnavailableError, Predictor, UnsupportedModelError, ir
from fastml.converters import from_onnx, import_model, to_onnx
from conftest import Tolerance, assert_close

MLP_NATIVE_TOL = Tolerance(rtol=1e-10, atol=1e-10)
MLP_F32_TOL = Tolerance(rtol=1e-4, atol=1e-4)
ACTIVATIONS = ("identity", "logistic", "tanh", "relu")
TASKS = ("binary", "multiclass", "multilabel", "regressor", "multioutput", "poisson")

_CACHE: dict = {}


def _data(n=240, d=9, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * rng.uniform(0.5, 3.0, d) + rng.normal(0, 1, d)
    return X


def _fit(task: str, activation: str, fit_dtype=np.float64):
    key = (task, activation, np.dtype(fit_dtype).name)
    if key in _CACHE:
        return _CACHE[key]
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    X = _data().astype(fit_dtype)
    rng = np.random.default_rng(1)
    s = X @ rng.standard_normal((X.shape[1], 3))
    kw = dict(hidden_layer_sizes=(21, 13), activation=activation, max_iter=60, random_state=0)
    if task == "binary":
        est, y = MLPClassifier(**kw), np.where(s[:, 0] > 0, "yes", "no")
    elif task == "multiclass":
        est, y = MLPClassifier(**kw), s.argmax(axis=1) * 10 + 3
    elif task == "multilabel":
        est, y = MLPClassifier(**kw), (s > 0).astype(int)
    elif task == "regressor":
        est, y = MLPRegressor(**kw), s[:, 0]
    elif task == "multioutput":
        est, y = MLPRegressor(**kw), s[:, :2]
    else:
        est, y = MLPRegressor(loss="poisson", **kw), np.exp(np.tanh(s[:, :2]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: max_iter is kept small on purpose
        est.fit(X, y)
    _CACHE[key] = est
    return est


def _queries(n=97, dtype=np.float64, seed=5):
    return _data(n, seed=seed).astype(dtype)


def _margin(est, X) -> np.ndarray:
    P = np.asarray(est.predict_proba(X.astype(np.float64)), dtype=np.float64)
    if getattr(est, "_label_binarizer", None) is not None and est._label_binarizer.y_type_ == "multilabel-indicator":
        return np.min(np.abs(P - 0.5), axis=1)
    top2 = np.sort(P, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def _check(est, pred, X, tol, exact_labels: bool, what: str):
    want = est.predict(X)
    got = pred.predict(X)
    assert got.shape == want.shape and got.dtype.kind == want.dtype.kind, what
    if hasattr(est, "predict_proba"):
        P = est.predict_proba(X)
        Q = pred.predict_proba(X)
        assert Q.dtype == np.float64 and Q.shape == P.shape
        assert_close(Q, P, tol, 1.0 + np.abs(P).max(axis=1), what=f"{what} predict_proba")
        differ = np.any((got != want).reshape(len(X), -1), axis=1)
        if exact_labels:
            assert not differ.any(), f"{what}: {differ.sum()} labels differ"
        else:
            assert not (differ & (_margin(est, X) >= 1e-4)).any(), f"{what}: labels differ on clear rows"
    else:
        with pytest.raises(MethodUnavailableError):
            pred.predict_proba(X)
        assert got.dtype == np.float64
        assert_close(got, want, tol, 1.0 + np.abs(want).reshape(len(X), -1).max(axis=1), what=f"{what} predict")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("task", TASKS)
def test_native_matches_sklearn(task, activation, dtype):
    est = _fit(task, activation)
    pred = Predictor(est, backend="native")
    assert isinstance(pred.ir, ir.MLP) and pred.ir.precision == "float64"
    _check(est, pred, _queries(dtype=dtype), MLP_NATIVE_TOL, True, f"{task}/{activation}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("activation", ("logistic", "relu"))
@pytest.mark.parametrize("task", TASKS)
def test_onnxruntime_matches_sklearn(task, activation, dtype):
    est = _fit(task, activation)
    if task == "poisson":  # skl2onnx has no converter for the exp output layer
        with pytest.raises(UnsupportedModelError, match="skl2onnx"):
            Predictor(est, backend="onnxruntime")
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pred = Predictor(est, backend="onnxruntime")
    # a float64 graph computes in float64, except multilabel (no float64 graph; see onnx_export)
    f64 = dtype == np.float64 and task != "multilabel"
    _check(est, pred, _queries(dtype=dtype), MLP_NATIVE_TOL if f64 else MLP_F32_TOL, f64, f"ort {task}")


@pytest.mark.parametrize("task", ("binary", "multiclass", "multilabel", "multioutput"))
def test_float32_fitted_model_computes_like_sklearn(task):
    """coefs_ are float32: scikit-learn computes float32 input in float32 and float64 in float64."""
    est = _fit(task, "tanh", np.float32)
    assert est.coefs_[0].dtype == np.float32
    pred = Predictor(est, backend="native")
    assert pred.ir.precision == "float32"
    _check(est, pred, _queries(dtype=np.float32), MLP_F32_TOL, False, f"{task} f32")
    _check(est, pred, _queries(dtype=np.float64), MLP_NATIVE_TOL, True, f"{task} f64")


@pytest.mark.parametrize("task", ("multiclass", "multilabel", "regressor"))
def test_onnx_file_runs_on_native_like_onnxruntime(task, tmp_path):
    """The third edge: skl2onnx's float32 graph read back into IR runs on native like ORT runs it."""
    est = _fit(task, "tanh")
    path = tmp_path / "mlp.onnx"
    Predictor(est, backend="onnxruntime").save(path)
    model = from_onnx(str(path))
    assert isinstance(model, ir.MLP) and model.precision == "float32"
    assert model.activation == "tanh" and model.multilabel == (task == "multilabel")
    native, ort = Predictor(str(path), backend="native"), Predictor(str(path), backend="onnxruntime")
    X = _queries(dtype=np.float32)
    method = "predict" if task == "regressor" else "predict_proba"
    a, b = getattr(native, method)(X), getattr(ort, method)(X)
    assert_close(a, b, MLP_F32_TOL, 1.0 + np.abs(b).reshape(len(X), -1).max(axis=1))
    assert_close(a, getattr(est, method)(X), MLP_F32_TOL, 1.0 + np.abs(b).reshape(len(X), -1).max(axis=1))
    if task != "regressor":
        assert (native.predict(X) == est.predict(X)).mean() > 0.97


@pytest.mark.parametrize("scaler", ["StandardScaler", "MinMaxScaler", "Normalizer"])
def test_pipeline(scaler):
    import sklearn.preprocessing as pre
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline

    X = _data()
    y = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = make_pipeline(getattr(pre, scaler)(), MLPClassifier(hidden_layer_sizes=(16,), max_iter=50,
                                                                  random_state=0)).fit(X, y)
    pred = Predictor(est, backend="native")
    assert isinstance(pred.ir, ir.Pipeline) and isinstance(pred.ir.estimator, ir.MLP)
    for dtype in (np.float32, np.float64):
        _check(est, pred, _queries(dtype=dtype), MLP_NATIVE_TOL, True, f"pipeline {scaler}")


def test_batch_sizes_threads_and_layouts():
    """Blocks of 8 rows, tails, single rows and the threaded path give the same rows."""
    est = _fit("multiclass", "relu")
    one, two = Predictor(est, backend="native", n_threads=1), Predictor(est, backend="native", n_threads=2)
    X = _queries(n=600)
    full = one.predict_proba(X)
    assert np.array_equal(full, two.predict_proba(X))
    for n in (1, 2, 7, 8, 9, 17, 129):
        assert np.array_equal(one.predict_proba(X[:n]), full[:n]), n
    assert np.array_equal(one.predict_proba(X[::2]), full[::2])              # strided rows
    assert np.array_equal(one.predict_proba(np.asfortranarray(X[:50])), full[:50])
    assert np.array_equal(one.predict_proba(X[:50].tolist()), full[:50])    # a list
    Xi = np.round(X[:20]).astype(np.int64)
    assert_close(one.predict_proba(Xi), est.predict_proba(Xi), MLP_NATIVE_TOL)


def test_saturated_softmax_stays_finite():
    est = _fit("multiclass", "identity")
    X = _queries(n=20) * 1e4
    P = Predictor(est, backend="native").predict_proba(X.astype(np.float32))
    assert np.all(np.isfinite(P)) and np.allclose(P.sum(axis=1), 1.0, atol=1e-12)
    assert_close(P, est.predict_proba(X.astype(np.float32)), MLP_NATIVE_TOL)


@pytest.mark.parametrize("bad, words", [(np.nan, "contains NaN"), (np.inf, "infinity"), (-np.inf, "infinity")])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_nonfinite_input_is_refused_like_sklearn(bad, words, dtype):
    est = _fit("multiclass", "relu")  # ReLU would turn a NaN into 0 if nobody looked
    X = _queries(n=40, dtype=dtype)
    X[33, 4] = bad
    pred = Predictor(est, backend="native")
    for method in ("predict", "predict_proba"):
        with pytest.raises(InputError, match=words):
            getattr(pred, method)(X)
        with pytest.raises(ValueError, match=words):
            getattr(est, method)(X)


def test_wrong_width_and_shape():
    pred = Predictor(_fit("regressor", "relu"), backend="native")
    with pytest.raises(InputError, match="X has 4 features, but MLPRegressor is expecting 9"):
        pred.predict(np.zeros((3, 4)))
    with pytest.raises(InputError, match="expected 2D array"):
        pred.predict(np.zeros(9))
    with pytest.raises(MethodUnavailableError):
        pred.transform(np.zeros((1, 9)))


# --------------------------------------------------------------------------- IR rules

def _ir(**kw):
    rng = np.random.default_rng(0)
    base = dict(weights=(rng.standard_normal((4, 5)), rng.standard_normal((5, 3))),
                biases=(rng.standard_normal(5), rng.standard_normal(3)), activation="relu",
                out_activation="softmax", is_classifier=True, classes=np.array([0, 1, 2]))
    base.update(kw)
    return ir.MLP(**base)


def test_valid_ir_passes_and_freezes():
    m = _ir().validate()
    assert m.n_features == 4 and m.n_outputs == 3 and m.methods() == {"predict", "predict_proba"}
    with pytest.raises(ValueError):
        m.weights[0][0, 0] = 1.0


@pytest.mark.parametrize("change, words", [
    (dict(weights=()), "at least one layer"),
    (dict(biases=(np.zeros(5),)), "one bias per weight matrix"),
    (dict(weights=(np.zeros((4, 5)), np.zeros((6, 3)))), r"expects 6 inputs but layer 0 outputs 5"),
    (dict(biases=(np.zeros(4), np.zeros(3))), "biases\\[0\\] has 4 values"),
    (dict(weights=(np.zeros((4, 0)), np.zeros((0, 3)))), "empty dimension"),
    (dict(weights=(np.zeros(4), np.zeros((5, 3)))), "must be 2-D"),
    (dict(weights=(np.zeros((4, 5), np.float32), np.zeros((5, 3)))), "must be float64"),
    (dict(weights=(np.full((4, 5), np.nan), np.zeros((5, 3)))), "NaN or infinity"),
    (dict(activation="softplus"), "unknown activation"),
    (dict(out_activation="tanh"), "unknown out_activation"),
    (dict(classes=np.array([0, 1])), "2 classes with out_activation 'softmax' and 3 outputs"),
    (dict(classes=np.array([0, 0, 1])), "unique"),
    (dict(classes=None), "needs classes"),
    (dict(out_activation="logistic"), "3 classes with out_activation 'logistic'"),
    (dict(out_activation="identity"), "logistic or softmax output layer"),
    (dict(flat=True), "regressors only"),
    (dict(is_classifier=False), "a regressor has no classes"),
    (dict(is_classifier=False, classes=None), "'identity' or 'exp'"),
    (dict(is_classifier=False, classes=None, out_activation="identity", flat=True), "exactly one output"),
    (dict(multilabel=True), "3 logistic outputs"),
    (dict(precision="float16"), "unknown precision"),
    (dict(precision="float32"), "not exactly representable in float32"),
])
def test_invalid_ir_is_refused(change, words):
    with pytest.raises(InvalidModelError, match=words):
        _ir(**change).validate()


def test_float32_precision_accepts_float32_values():
    m = _ir()
    m32 = ir.replace(m, weights=tuple(w.astype(np.float32).astype(np.float64) for w in m.weights),
                     biases=tuple(b.astype(np.float32).astype(np.float64) for b in m.biases),
                     precision="float32")
    assert m32.validate().precision == "float32"


def test_frontend_copies_and_never_mutates():
    est = _fit("multiclass", "tanh")
    before = [w.copy() for w in est.coefs_]
    m = import_model(est)
    assert all(np.array_equal(a, b) for a, b in zip(m.weights, est.coefs_))
    assert all(a is not b for a, b in zip(m.weights, est.coefs_))
    assert all(np.array_equal(a, b) for a, b in zip(before, est.coefs_)) and est.coefs_[0].flags.writeable


def test_export_roundtrip_reads_every_activation():
    for activation in ACTIVATIONS:
        est = _fit("binary", activation)
        m = from_onnx(to_onnx(est))
        assert isinstance(m, ir.MLP) and m.activation == activation and list(m.classes) == ["no", "yes"]
        np.testing.assert_array_equal(m.weights[0], est.coefs_[0].astype(np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("task", ("binary", "multiclass", "regressor"))
def test_onnx_graph_reads_back_as_the_same_network(task, dtype):
    est = _fit(task, "relu")
    m = from_onnx(to_onnx(est, dtype=dtype))
    assert m.precision == ("float32" if dtype == np.float32 else "float64")
    assert m.activation == "relu" and m.out_activation == est.out_activation_ and m.n_layers == 3
    for got, want in zip(m.weights + m.biases, est.coefs_ + est.intercepts_):
        np.testing.assert_array_equal(got, want.astype(dtype))


def test_onnx_multioutput_regressor_graph_is_refused():
    """skl2onnx reshapes its (n, 2) values to (n * 2, 1): no IR expresses that output."""
    with pytest.raises(UnsupportedModelError, match=r"reshapes 2 output column\(s\) to \[-1, 1\]"):
        from_onnx(to_onnx(_fit("multioutput", "relu")))


def _edit_graph(proto, **changes):
    import onnx
    from onnx import numpy_helper

    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    for name, fn in changes.items():
        for t in proto.graph.initializer:
            if t.name == name:
                t.CopyFrom(numpy_helper.from_array(fn(numpy_helper.to_array(t)), name))
    return proto


def test_malformed_onnx_networks_get_typed_errors():
    import onnx

    proto = to_onnx(_fit("multiclass", "tanh"))
    with pytest.raises(InvalidModelError, match="weight matrix of shape"):
        from_onnx(_edit_graph(proto, coefficient1=lambda w: w[:-1]))
    with pytest.raises(InvalidModelError, match="bias has"):
        from_onnx(_edit_graph(proto, intercepts1=lambda b: b[:, :-1]))
    with pytest.raises(InvalidModelError, match="NaN or infinity"):
        from_onnx(_edit_graph(proto, coefficient=lambda w: np.full_like(w, np.nan)))
    bad = onnx.ModelProto.FromString(proto.SerializeToString())
    next(n for n in bad.graph.node if n.op_type == "Tanh").op_type = "Relu"  # two hidden activations
    with pytest.raises(UnsupportedModelError, match="different activations"):
        from_onnx(bad)


def test_concurrent_calls_match_serial_calls():
    """One Predictor, many Python threads, batches that run on OpenMP threads too."""
    from concurrent.futures import ThreadPoolExecutor

    est = _fit("multiclass", "tanh")
    pred = Predictor(est, backend="native", n_threads=2)
    batches = [_queries(n=n, seed=s) for s, n in enumerate((1, 9, 200, 700) * 4)]
    serial = [pred.predict_proba(X) for X in batches]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(3):
            got = list(pool.map(pred.predict_proba, batches))
            assert all(np.array_equal(a, b) for a, b in zip(got, serial))


@pytest.mark.parametrize("task", ("binary", "multiclass"))
def test_float32_probabilities_stay_finite_on_huge_logits(task, tmp_path):
    """RELIABILITY: softmax / sigmoid finite for logits of +-1e4 and rows summing to 1 (float32)."""
    path = tmp_path / "m.onnx"
    Predictor(_fit(task, "identity"), backend="onnxruntime").save(path)
    X = _queries(n=50, dtype=np.float32) * np.float32(1e4)
    P = Predictor(str(path), backend="native").predict_proba(X)
    assert np.all(np.isfinite(P)) and np.all(np.abs(P.sum(axis=1) - 1.0) <= 1e-6)
    assert_close(P, Predictor(str(path), backend="onnxruntime").predict_proba(X), MLP_F32_TOL)


# --------------------------------------------------------------------------- the kernel against the reference

@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("out", ["softmax", "logistic1", "multilabel", "identity", "exp"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_kernel_matches_the_numpy_reference(activation, out, precision):
    """IR built by hand (odd widths: panel padding, 8-row blocks and their tails) against
    ``reference_nn``; float32 arithmetic is compared with float32 numpy."""
    from reference_nn import reference_mlp_predict, reference_mlp_predict_proba

    rng = np.random.default_rng(hash((activation, out, precision)) % 2**32)
    widths = (13, 37, 5, {"softmax": 4, "logistic1": 1, "multilabel": 3, "identity": 2, "exp": 1}[out])
    ws = tuple(rng.standard_normal((a, b)) / np.sqrt(a) for a, b in zip(widths[:-1], widths[1:]))
    bs = tuple(rng.standard_normal(b) for b in widths[1:])
    if precision == "float32":
        ws = tuple(w.astype(np.float32).astype(np.float64) for w in ws)
        bs = tuple(b.astype(np.float32).astype(np.float64) for b in bs)
    kw = dict(weights=ws, biases=bs, activation=activation, precision=precision)
    if out == "softmax":
        m = ir.MLP(out_activation="softmax", is_classifier=True, classes=np.array([3, 1, 4, 5]), **kw)
    elif out == "logistic1":
        m = ir.MLP(out_activation="logistic", is_classifier=True, classes=np.array(["n", "y"]), **kw)
    elif out == "multilabel":
        m = ir.MLP(out_activation="logistic", is_classifier=True, classes=np.arange(3), multilabel=True, **kw)
    else:
        m = ir.MLP(out_activation=out, flat=widths[-1] == 1, **kw)
    pred = Predictor(m.validate(), backend="native", n_threads=2)
    for dtype in (np.float32, np.float64):
        X = rng.standard_normal((203, 13)).astype(dtype)
        f32 = precision == "float32" and dtype == np.float32
        tol = Tolerance(rtol=2e-5, atol=2e-5) if f32 else MLP_NATIVE_TOL
        if m.is_classifier:
            assert_close(pred.predict_proba(X), reference_mlp_predict_proba(m, X), tol)
        got, want = pred.predict(X), reference_mlp_predict(m, X)
        if m.is_classifier and f32:
            assert (np.asarray(got) == np.asarray(want)).mean() > 0.98
        elif m.is_classifier:
            assert np.array_equal(got, want)
        else:
            assert_close(got, want, tol)


def _magnitude(est, X) -> np.ndarray:
    """Per row, a bound on the terms every layer sums: |x| pushed through |W| and |b|."""
    m = np.abs(np.asarray(X, dtype=np.float64))
    for W, b in zip(est.coefs_, est.intercepts_):
        m = m @ np.abs(W) + np.abs(b)
    return 1.0 + m.max(axis=1)


def test_extreme_finite_inputs_match_sklearn():
    """hypothesis rows: +-1e6, -0.0, subnormals, exact zeros; float32 and float64."""
    from hypothesis import given, strategies as st
    from hypothesis.extra.numpy import arrays
    from conftest import FAST_HYPOTHESIS

    specials = st.sampled_from([0.0, -0.0, 5e-324, -1e6, 1e6, 1e-300, 1.0])
    values = st.one_of(st.floats(-1e6, 1e6, allow_nan=False), specials)
    clf, reg = _fit("multiclass", "tanh"), _fit("regressor", "relu")
    pc, pr = Predictor(clf, backend="native"), Predictor(reg, backend="native")

    @FAST_HYPOTHESIS
    @given(arrays(np.float64, (3, 9), elements=values), st.sampled_from([np.float32, np.float64]))
    def check(X, dtype):
        X = X.astype(dtype)
        assert_close(pc.predict_proba(X), clf.predict_proba(X), MLP_NATIVE_TOL)
        assert_close(pr.predict(X), reg.predict(X), MLP_NATIVE_TOL, _magnitude(reg, X))

    check()


def test_skl2onnx_default_graphs_with_zipmap():
    """skl2onnx.to_onnx with its defaults (ZipMap) reads like the zipmap-free graphs, except
    for two-label multilabel models: skl2onnx then outputs [1 - p, p] of both labels (4
    columns, not scikit-learn's 2), which no IR expresses: refused."""
    import skl2onnx
    from sklearn.neural_network import MLPClassifier

    X = _queries(dtype=np.float32)
    for task in ("binary", "multiclass", "multilabel"):
        est = _fit(task, "relu")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            proto = skl2onnx.to_onnx(est, X[:1])
        pred = Predictor(proto.SerializeToString(), backend="native")
        assert_close(pred.predict_proba(X), est.predict_proba(X), MLP_F32_TOL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        two = MLPClassifier(hidden_layer_sizes=(5,), max_iter=20, random_state=0).fit(
            _data(), (_data()[:, :2] > 0).astype(int))
        proto = skl2onnx.to_onnx(two, X[:1])
    with pytest.raises(UnsupportedModelError, match="1 - \\(a 2-column logistic layer\\)"):
        from_onnx(proto)
