"""Kernel SVMs: scikit-learn <-> native <-> ONNX Runtime.

Tolerances (see conftest.py for the linear family's reasoning):

* native vs scikit-learn, float32 and float64 input: ``decision_function``
  within rtol 1e-6 (the issue's bound) plus an absolute 1e-12 of the row's
  magnitude ``1 + sum_s |coef_s K(x, s)|`` (terms cancel; near a zero score
  only the absolute part is meaningful); ``predict_proba`` within 1e-6;
  ``predict`` identical.  Both compute in float64 -- scikit-learn widens
  float32 input, so does the kernel.
* ONNX Runtime (float32 kernel sums, float32 parameters) vs scikit-learn: 1e-4
  of the magnitude; labels agree except on rows whose scikit-learn margin is
  within that tolerance.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, strategies as st

import fastml
from fastml import ir
from fastml.converters import from_onnx, import_model, to_onnx
from fastml.errors import InputError, InvalidModelError, MethodUnavailableError, UnsupportedModelError

from conftest import FAST_HYPOTHESIS

sklearn_svm = pytest.importorskip("sklearn.svm")
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, make_classification  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import MinMaxScaler, StandardScaler  # noqa: E402

SVC, NuSVC, SVR, NuSVR, OneClassSVM = (sklearn_svm.SVC, sklearn_svm.NuSVC, sklearn_svm.SVR, sklearn_svm.NuSVR,
                                       sklearn_svm.OneClassSVM)


def _quiet(fn, *a, **k):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # probability=True is deprecated in scikit-learn 1.9
        return fn(*a, **k)


# --------------------------------------------------------------------------- data and models

def _data(name):
    if name == "binary":
        X, y = load_breast_cancer(return_X_y=True)
        return StandardScaler().fit_transform(X)[:, :12], y
    if name == "3 classes":
        return make_classification(n_samples=400, n_features=20, n_informative=10, n_classes=3, random_state=0)
    if name == "10 classes":
        X, y = load_digits(return_X_y=True)
        return X[:700] / 16.0, y[:700]
    if name == "string labels":
        X, y = make_classification(n_samples=300, n_features=8, n_informative=5, n_classes=4,
                                   n_clusters_per_class=1, random_state=1)
        return X, np.array(["ant", "bee", "cat", "dog"], dtype=object)[y]
    if name == "regression":
        return load_diabetes(return_X_y=True)
    raise KeyError(name)


CASES = {
    # name: (data, estimator factory)
    "SVC rbf binary": ("binary", lambda: SVC()),
    "SVC rbf 3 classes": ("3 classes", lambda: SVC(gamma="auto")),
    "SVC rbf 10 classes": ("10 classes", lambda: SVC(C=3.0)),
    "SVC linear 3 classes": ("3 classes", lambda: SVC(kernel="linear", C=0.1)),
    "SVC poly 3 classes": ("3 classes", lambda: SVC(kernel="poly", degree=3, gamma=0.05, coef0=1.0)),
    "SVC poly degree 2 binary": ("binary", lambda: SVC(kernel="poly", degree=2, gamma=0.1, coef0=0.5)),
    "SVC sigmoid 3 classes": ("3 classes", lambda: SVC(kernel="sigmoid", gamma=0.01, coef0=-0.5)),
    "SVC ovo 10 classes": ("10 classes", lambda: SVC(decision_function_shape="ovo")),
    "SVC break_ties 3 classes": ("3 classes", lambda: SVC(break_ties=True, C=0.5)),
    "SVC class_weight 3 classes": ("3 classes", lambda: SVC(class_weight="balanced", gamma=0.1)),
    "SVC string labels": ("string labels", lambda: SVC()),
    "NuSVC rbf 3 classes": ("3 classes", lambda: NuSVC(nu=0.3)),
    "NuSVC poly binary": ("binary", lambda: NuSVC(kernel="poly", nu=0.2, degree=2)),
    "SVC proba binary": ("binary", lambda: SVC(probability=True, random_state=0)),
    "SVC proba 3 classes": ("3 classes", lambda: SVC(probability=True, random_state=0)),
    "SVC proba 10 classes": ("10 classes", lambda: SVC(probability=True, random_state=0)),
    "StandardScaler+SVC 3 classes": ("3 classes", lambda: make_pipeline(StandardScaler(), SVC(gamma=0.02))),
    "MinMaxScaler+SVC proba binary": ("binary", lambda: make_pipeline(MinMaxScaler(), SVC(probability=True,
                                                                                          random_state=0))),
    "SVR rbf": ("regression", lambda: SVR(C=50.0)),
    "SVR linear": ("regression", lambda: SVR(kernel="linear", C=100.0)),
    "SVR poly": ("regression", lambda: SVR(kernel="poly", degree=3, gamma=10.0, coef0=1.0, C=10.0)),
    "SVR sigmoid": ("regression", lambda: SVR(kernel="sigmoid", gamma=0.5, C=10.0)),
    "NuSVR rbf": ("regression", lambda: NuSVR(nu=0.4, C=20.0)),
    "OneClassSVM rbf": ("3 classes", lambda: OneClassSVM(gamma=0.05, nu=0.1)),
    "OneClassSVM poly": ("binary", lambda: OneClassSVM(kernel="poly", degree=2, nu=0.2)),
}

_FITTED = {}


def fitted(name):
    if name not in _FITTED:
        data, make = CASES[name]
        X, y = _data(data)
        est = make()
        _quiet(est.fit, X) if isinstance(est, OneClassSVM) else _quiet(est.fit, X, y)
        _FITTED[name] = (est, X)
    return _FITTED[name]


def _svm_of(est):
    return est.steps[-1][1] if hasattr(est, "steps") else est


def _methods(est):
    svm = _svm_of(est)
    m = ["predict"]
    if not isinstance(svm, (SVR, NuSVR)):
        m.append("decision_function")
    if isinstance(svm, OneClassSVM):
        m.append("score_samples")
    if getattr(svm, "probability", False) is True:
        m.append("predict_proba")
    return m


def _kernel(svm, X):
    """The kernel matrix of X against the support vectors, naively in float64."""
    S, g = svm.support_vectors_, svm._gamma
    dots = X @ S.T
    if svm.kernel == "linear":
        return dots
    if svm.kernel == "poly":
        return (g * dots + svm.coef0) ** svm.degree
    if svm.kernel == "sigmoid":
        return np.tanh(g * dots + svm.coef0)
    return np.exp(-g * ((X[:, None, :] - S[None]) ** 2).sum(-1))


def _magnitude(est, X):
    """1 + sum_s |coef_s K(x, s)| per row, after the pipeline's steps."""
    Z = np.asarray(X, dtype=np.float64)
    for _, step in getattr(est, "steps", [])[:-1]:
        Z = step.transform(Z)
    svm = _svm_of(est)
    return 1.0 + np.abs(_kernel(svm, Z)) @ np.abs(svm._dual_coef_).sum(axis=0)


def _rows(X, n=200, seed=0):
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(X), size=min(n, len(X)), replace=False)
    noise = rng.standard_normal((len(idx), X.shape[1])) * X.std(axis=0) * 0.3
    return np.vstack([X[idx], X[idx] + noise])


def _check(got, want, mag, rel, absolute):
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape
    m = mag if want.ndim == 1 else mag[:, None]
    bad = np.abs(got - want) > rel * np.abs(want) + absolute * m
    assert not bad.any(), (f"{bad.sum()} values differ; worst |diff| {np.abs(got - want).max():.3g} "
                           f"at {np.argwhere(bad)[:3].tolist()}")


NAMES = list(CASES)


# --------------------------------------------------------------------------- native vs scikit-learn

def _assert_matches(est, p, Xt, mag):
    """Every method of ``p`` against scikit-learn's on Xt: labels equal (and of its dtype),
    probabilities within 1e-6 and summing to 1, scores within rtol 1e-6 of the magnitude."""
    for method in _methods(est):
        want = _quiet(getattr(est, method), Xt)
        got = getattr(p, method)(Xt)
        if method == "predict" and want.dtype.kind != "f":
            assert got.dtype == want.dtype or got.dtype.kind == want.dtype.kind == "O"
            np.testing.assert_array_equal(got, want)
        elif method == "predict_proba":
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
            np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-9)
        else:
            _check(got, want, mag, 1e-6, 1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name", NAMES)
def test_native_matches_scikit_learn(name, dtype):
    est, X = fitted(name)
    Xt = _rows(X).astype(dtype)
    p = fastml.Predictor(est, backend="native")
    mag = _magnitude(est, Xt)
    _assert_matches(est, p, Xt, mag)
    for method in {"predict_proba", "decision_function", "score_samples"} - set(_methods(est)):
        with pytest.raises(MethodUnavailableError):
            getattr(p, method)(Xt)


@pytest.mark.parametrize("name", ["SVC rbf 3 classes", "SVC proba 10 classes", "SVR rbf", "OneClassSVM rbf"])
def test_rows_equal_to_support_vectors_and_huge_norms(name):
    est, X = fitted(name)
    svm = _svm_of(est)
    S = svm.support_vectors_
    p = fastml.Predictor(est, backend="native")
    # rows that are support vectors (distance exactly 0), and the same rows scaled far away
    # (|x|^2 ~ 1e12: the cancelling |x|^2 + |s|^2 - 2 x.s form alone would be off by ~1e-4)
    for Xt in (S, S * 1e6, np.vstack([S[:5] + 1e-9, -S[:5] * 1e3])):
        mag = _magnitude(est, Xt)
        _assert_matches(est, p, Xt, mag)


@FAST_HYPOTHESIS
@given(data=st.data())
@pytest.mark.parametrize("name", ["SVC rbf 10 classes", "SVC poly 3 classes", "SVC proba binary", "SVR rbf",
                                  "StandardScaler+SVC 3 classes"])
def test_parity_on_hypothesis_rows(name, data):
    est, X = fitted(name)
    n = data.draw(st.integers(1, 40))
    F = X.shape[1]
    scale = data.draw(st.sampled_from([1e-3, 1.0, 10.0, 1e4]))
    values = st.floats(-1.0, 1.0, allow_nan=False, width=32)
    Z = np.array(data.draw(st.lists(st.lists(values, min_size=F, max_size=F), min_size=n, max_size=n)))
    rows = data.draw(st.lists(st.integers(0, len(X) - 1), min_size=n, max_size=n))
    Xt = X[rows] + Z * scale  # near the data, far from it, or exactly on it (scale 1e-3 ~ on it)
    dtype = data.draw(st.sampled_from([np.float32, np.float64]))
    Xt = Xt.astype(dtype)
    p = fastml.Predictor(est, backend="native")
    mag = _magnitude(est, Xt)
    _assert_matches(est, p, Xt, mag)


def test_threads_batches_and_layouts_give_the_same_answer():
    est, X = fitted("SVC rbf 10 classes")
    rng = np.random.default_rng(3)
    Xt = np.vstack([X] * 3) + rng.standard_normal((3 * len(X), X.shape[1])) * 0.05
    one = fastml.Predictor(est, backend="native", n_threads=1)
    two = fastml.Predictor(est, backend="native", n_threads=2)
    ref = one.decision_function(Xt)
    np.testing.assert_array_equal(two.decision_function(Xt), ref)
    np.testing.assert_array_equal(one.decision_function(np.asfortranarray(Xt)), ref)
    wide = np.zeros((len(Xt), 2 * Xt.shape[1]))
    wide[:, ::2] = Xt
    np.testing.assert_array_equal(one.decision_function(wide[:, ::2]), ref)  # strided columns
    for n in (1, 7, 8, 9, 33, 65):  # tile edges: single rows, 8-row tiles, blocks, threads
        np.testing.assert_array_equal(two.decision_function(Xt[:n]), ref[:n])
    np.testing.assert_array_equal(one.predict(Xt[5]. reshape(1, -1)), est.predict(Xt[5:6]))


# --------------------------------------------------------------------------- ONNX Runtime

FLOAT32_ABS = 1e-4


@pytest.mark.parametrize("name", NAMES)
def test_onnxruntime_matches_scikit_learn(name):
    est, X = fitted(name)
    Xt = _rows(X, n=100).astype(np.float32)
    q = _quiet(fastml.Predictor, est, backend="onnxruntime")
    mag = _magnitude(est, Xt)
    for method in _methods(est):
        want, got = _quiet(getattr(est, method), Xt), getattr(q, method)(Xt)
        if method == "predict":
            continue
        if method == "predict_proba":
            np.testing.assert_allclose(got, want, rtol=0, atol=FLOAT32_ABS)
        else:
            _check(got, want, mag, 0.0, FLOAT32_ABS)
    # labels: equal except where scikit-learn's own margin is within the float32 tolerance
    want, got = est.predict(Xt), q.predict(Xt)
    svm = _svm_of(est)
    if isinstance(svm, (SVR, NuSVR)):
        _check(got, want, mag, 0.0, FLOAT32_ABS)
        return
    close = _near_a_tie(est, Xt, mag)
    assert np.array_equal(got[~close], want[~close])


def _near_a_tie(est, X, mag):
    """Rows whose label depends on a pair value within the float32 tolerance of zero."""
    svm = _svm_of(est)
    shape = getattr(svm, "decision_function_shape", None)
    if shape is not None:
        svm.decision_function_shape = "ovo"
    try:
        d = _quiet(est.decision_function, X)
    finally:
        if shape is not None:
            svm.decision_function_shape = shape
    d = d.reshape(len(X), -1)
    return np.any(np.abs(d) <= 10 * FLOAT32_ABS * mag[:, None], axis=1)


@pytest.mark.parametrize("name", NAMES)
def test_onnx_file_runs_on_native_like_onnxruntime(name):
    # the triangle's third side: the ONNX file, read into the IR, on native kernels
    est, X = fitted(name)
    Xt = _rows(X, n=100).astype(np.float32)
    proto = _quiet(to_onnx, est, n_features=X.shape[1])
    model = from_onnx(proto)
    assert isinstance(ir.as_pipeline(model).estimator, ir.KernelSVM)
    native = fastml.Predictor(proto, backend="native")
    ort = fastml.Predictor(proto, backend="onnxruntime")
    mag = _magnitude(est, Xt)
    for method in _methods(est):
        if method == "score_samples":  # the file does not hold offset_
            with pytest.raises(MethodUnavailableError):
                native.score_samples(Xt)
            continue
        want = _quiet(getattr(est, method), Xt)
        got = getattr(native, method)(Xt)
        if method == "predict":
            close = np.zeros(len(Xt), bool) if isinstance(_svm_of(est), (SVR, NuSVR)) else _near_a_tie(est, Xt, mag)
            if got.dtype.kind == "f":
                _check(got, want, mag, 0.0, FLOAT32_ABS)
            else:
                assert np.array_equal(got[~close], want[~close])
                assert np.array_equal(got[~close], ort.predict(Xt)[~close])
        elif method == "predict_proba":
            np.testing.assert_allclose(got, want, rtol=0, atol=FLOAT32_ABS)
            np.testing.assert_allclose(got, ort.predict_proba(Xt), rtol=0, atol=FLOAT32_ABS)
        else:
            _check(got, want, mag, 0.0, FLOAT32_ABS)


def test_onnx_svm_reads_a_double_graph_and_keeps_the_scaler():
    est, X = fitted("StandardScaler+SVC 3 classes")
    proto = _quiet(to_onnx, est, n_features=X.shape[1], dtype=np.float64)
    model = from_onnx(proto)
    assert isinstance(model, ir.Pipeline) and isinstance(model.steps[0], ir.Scaler)
    assert model.estimator.decision_shape == "ovr"
    np.testing.assert_array_equal(fastml.Predictor(proto, backend="native").predict(X), est.predict(X))


# --------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("backend", ["native", "onnxruntime"])
def test_non_finite_and_malformed_input_is_refused_like_scikit_learn(backend):
    est, X = fitted("SVC rbf 3 classes")
    p = _quiet(fastml.Predictor, est, backend=backend)
    for bad, words in ((np.nan, "NaN"), (np.inf, "infinity"), (-np.inf, "infinity")):
        Xb = X[:10].copy()
        Xb[3, 2] = bad
        for method in ("predict", "decision_function"):
            with pytest.raises(InputError, match=words):
                getattr(p, method)(Xb)
            with pytest.raises(ValueError, match=words):
                getattr(est, method)(Xb)
    with pytest.raises(InputError, match="0 sample"):
        p.predict(X[:0])
    with pytest.raises(InputError, match="features"):
        p.predict(X[:, :5])
    with pytest.raises(InputError):
        p.predict(X[0])


def test_unsupported_kernels_are_named():
    X, y = _data("3 classes")
    for est in (SVC(kernel="precomputed").fit(X @ X.T, y), SVC(kernel=lambda a, b: a @ b.T).fit(X, y)):
        with pytest.raises(UnsupportedModelError, match="kernel"):
            import_model(est)


def test_probability_false_has_no_predict_proba_and_the_user_model_is_untouched():
    est, X = fitted("SVC proba binary")
    before = (est.probability, est._probA.copy())
    q = _quiet(fastml.Predictor, est, backend="onnxruntime")
    q.decision_function(X[:5])  # exports a copy without the Platt parameters
    assert est.probability is before[0] and np.array_equal(est._probA, before[1])
    est2, _ = fitted("SVC rbf binary")
    with pytest.raises(MethodUnavailableError):
        fastml.Predictor(est2, backend="native").predict_proba(X[:5])


# --------------------------------------------------------------------------- IR validation

def _good(**changes):
    kw = dict(support_vectors=np.ones((5, 3)), dual_coef=np.ones((2, 5)), intercept=np.zeros(3),
              kind="classifier", kernel="rbf", gamma=0.5, n_support=np.array([2, 2, 1]),
              classes=np.array([0, 1, 2]))
    kw.update(changes)
    return ir.KernelSVM(**kw)


BAD_IR = [
    ("support vectors with NaN", dict(support_vectors=np.full((5, 3), np.nan)), "NaN"),
    ("support vectors 1-D", dict(support_vectors=np.ones(5)), "2-D"),
    ("no features", dict(support_vectors=np.ones((5, 0))), "no features"),
    ("dual_coef columns", dict(dual_coef=np.ones((2, 4))), "4 columns for 5"),
    ("dual_coef rows", dict(dual_coef=np.ones((3, 5))), "need 2 rows"),
    ("intercept count", dict(intercept=np.zeros(2)), "need 3 intercepts"),
    ("n_support sum", dict(n_support=np.array([2, 2, 2])), "summing"),
    ("n_support negative", dict(n_support=np.array([4, 2, -1])), "summing"),
    ("n_support count", dict(n_support=np.array([3, 2])), "summing"),
    ("n_support floats", dict(n_support=np.array([2.0, 2.0, 1.0])), "integers"),
    ("one class", dict(classes=np.array([0]), n_support=np.array([5]), dual_coef=np.ones((0, 5)),
                       intercept=np.zeros(0)), "at least 2"),
    ("duplicate classes", dict(classes=np.array([0, 1, 1])), "unique"),
    ("no classes", dict(classes=None), "needs classes"),
    ("unknown kernel", dict(kernel="laplacian"), "unknown kernel"),
    ("unknown kind", dict(kind="ranker"), "unknown kind"),
    ("gamma NaN", dict(gamma=float("nan")), "gamma"),
    ("coef0 inf", dict(coef0=float("inf")), "coef0"),
    ("degree negative", dict(degree=-1), "degree"),
    ("degree float", dict(degree=2.5), "degree"),
    ("shape", dict(decision_shape="ovx"), "decision_shape"),
    ("prob_a alone", dict(prob_a=np.ones(3)), "together"),
    ("prob count", dict(prob_a=np.ones(2), prob_b=np.ones(2)), "3 values"),
    ("regressor with classes", dict(kind="regressor", dual_coef=np.ones((1, 5)), intercept=np.zeros(1)),
     "has no classes"),
    ("regressor rows", dict(kind="regressor", classes=None, n_support=None, intercept=np.zeros(1)), "one row"),
]


@pytest.mark.parametrize("changes,words", [pytest.param(c, w, id=i) for i, c, w in BAD_IR])
def test_validate_rejects_malformed_svms(changes, words):
    with pytest.raises(InvalidModelError, match=words):
        _good(**changes).validate()


def test_validate_accepts_the_good_one_and_freezes_it():
    m = _good().validate()
    assert not m.support_vectors.flags.writeable and not m.dual_coef.flags.writeable


def _svm_node(**attrs):
    from onnx import TensorProto, helper

    kw = dict(kernel_type="RBF", kernel_params=[0.5, 0.0, 3.0], support_vectors=[1.0] * 10,
              vectors_per_class=[3, 2], coefficients=[1.0] * 5, rho=[0.1], classlabels_ints=[0, 1])
    kw.update(attrs)
    kw = {k: v for k, v in kw.items() if v is not None}
    node = helper.make_node("SVMClassifier", ["X"], ["label", "scores"], name="svmc", domain="ai.onnx.ml", **kw)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 2])],
                          [helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
                           helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, 2])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("ai.onnx.ml", 1)],
                             ir_version=10)


@pytest.mark.parametrize("attrs,error,words", [
    (dict(), None, None),
    (dict(coefficients=[1.0] * 4), InvalidModelError, "4 coefficients"),
    (dict(support_vectors=[1.0] * 9), InvalidModelError, "not a multiple"),
    (dict(vectors_per_class=[3]), InvalidModelError, "vectors_per_class"),
    (dict(vectors_per_class=None), UnsupportedModelError, "liblinear"),
    (dict(rho=[0.1, 0.2]), InvalidModelError, "intercepts"),
    (dict(kernel_type="CUBIC"), InvalidModelError, "kernel_type"),
    (dict(kernel_params=[0.5, 0.0]), InvalidModelError, "kernel_params"),
    (dict(kernel_type="POLY", kernel_params=[0.5, 0.0, 2.5]), UnsupportedModelError, "degree"),
    (dict(post_transform="LOGISTIC"), UnsupportedModelError, "post_transform"),
    (dict(prob_a=[1.0]), InvalidModelError, "together"),
], ids=["good", "coefficients", "vectors", "counts", "liblinear", "rho", "kernel", "params", "degree",
        "post_transform", "prob_a alone"])
def test_malformed_onnx_svms_name_the_node(attrs, error, words):
    proto = _svm_node(**attrs)
    if error is None:
        model = from_onnx(proto)
        X = np.random.default_rng(0).standard_normal((20, 2)).astype(np.float32)
        ort = fastml.Predictor(proto, backend="onnxruntime")
        np.testing.assert_array_equal(fastml.Predictor(model, backend="native").predict(X), ort.predict(X))
        return
    with pytest.raises(error, match=words) as info:
        from_onnx(proto)
    assert "'svmc'" in str(info.value)


def test_one_class_onnx_regressor_with_one_class_flag_is_refused():
    from onnx import TensorProto, helper

    node = helper.make_node("SVMRegressor", ["X"], ["y"], name="oc", domain="ai.onnx.ml", kernel_type="RBF",
                            kernel_params=[0.5, 0.0, 3.0], support_vectors=[1.0, 2.0], n_supports=1,
                            coefficients=[1.0], rho=[0.0], one_class=1)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])])
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("ai.onnx.ml", 1)],
                              ir_version=10)
    with pytest.raises(UnsupportedModelError, match="one_class"):
        from_onnx(proto)


def test_a_model_fitted_on_sparse_input_runs_on_dense_rows():
    sparse = pytest.importorskip("scipy.sparse")
    X, y = _data("3 classes")
    X = np.where(np.abs(X) < 0.8, 0.0, X)  # mostly zeros
    est = SVC(gamma=0.05).fit(sparse.csr_matrix(X), y)
    p = fastml.Predictor(est, backend="native")
    np.testing.assert_array_equal(p.predict(X), est.predict(X))
    _check(p.decision_function(X), est.decision_function(X), 1.0 + np.abs(_kernel_sparse(est, X)), 1e-6, 1e-12)


def _kernel_sparse(est, X):
    S = est.support_vectors_.toarray()
    K = np.exp(-est._gamma * ((X[:, None, :] - S[None]) ** 2).sum(-1))
    return K @ np.abs(est._dual_coef_.toarray()).sum(axis=0)


def test_concurrent_calls_equal_serial_calls():
    from concurrent.futures import ThreadPoolExecutor

    est, X = fitted("SVC proba 3 classes")
    p = fastml.Predictor(est, backend="native", n_threads=2)
    rng = np.random.default_rng(5)
    batches = [X[rng.integers(0, len(X), n)] for n in (1, 7, 64, 300) * 4]
    want = [(p.predict(b), p.decision_function(b), p.predict_proba(b)) for b in batches]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda b: (p.predict(b), p.decision_function(b), p.predict_proba(b)), batches))
    for (a, b, c), (d, e, f) in zip(got, want):
        np.testing.assert_array_equal(a, d)
        np.testing.assert_array_equal(b, e)
        np.testing.assert_array_equal(c, f)


def test_max_rows_is_enforced():
    est, X = fitted("SVR rbf")
    p = fastml.Predictor(est, backend="native", max_rows=10)
    with pytest.raises(InputError, match="max_rows"):
        p.predict(X[:11])
    assert p.predict(X[:10]).shape == (10,)
