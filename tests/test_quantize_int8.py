"""int8 linear models and MLPs: the kernel against a naive numpy int8 reference, the quantized
model against the float model (scikit-learn) on held-out rows of the demo datasets, the
onnxruntime int8 path, the report, and typed errors for bad input and malformed IR."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import fastml
from fastml import ir
from fastml.errors import InputError, InvalidModelError, InvalidOptionError, UnsupportedModelError
from fastml.ir_quant import QLinear, QMLP
from fastml.kernels import _int8
from fastml.quantize import measure, quantize_columns

f32 = np.float32


# --------------------------------------------------------------------------- naive reference

def ref_quant_rows(A, ranges=None):
    """uint8 codes, scales and zero points of rows A as fm_int8.h defines them (float32)."""
    A = A.astype(f32)
    if ranges is None:
        lo, hi = A.min(axis=1), A.max(axis=1)
    else:
        lo, hi = np.full(len(A), ranges[0], f32), np.full(len(A), ranges[1], f32)
    lo, hi = np.minimum(lo, 0).astype(f32), np.maximum(hi, 0).astype(f32)
    s = ((hi - lo) / f32(255)).astype(f32)
    s[~(s > 0)] = 1
    inv = (f32(1) / s).astype(f32)
    z = np.clip(np.rint(-lo * inv), 0, 255)
    u = np.clip(np.rint(A * inv[:, None]) + z[:, None], 0, 255)
    return u.astype(np.int64), s, z.astype(np.int64)


def ref_residual_codes(A, u, s, z):
    """The residual pass's codes, as fm_int8.h defines them: v = clip(rint(256 fma(x, 1/s, -(u - z)))
    + 128, 0, 255); the fma is computed exactly in float64 (x and 1/s are float32) and rounded once."""
    inv = (f32(1) / s).astype(f32)
    r = (A.astype(f32).astype(np.float64) * inv[:, None].astype(np.float64) - (u - z[:, None])).astype(f32)
    return np.clip(np.rint(r.astype(np.float64) * 256) + 128, 0, 255).astype(np.int64)


def ref_forward(X, Qs, scales, biases, hidden, ranges=None, residual=False):
    """The last layer's pre-activation values, layer by layer: integer sums in int64."""
    act = {"relu": lambda a: np.maximum(a, 0), "identity": lambda a: a, "tanh": np.tanh}[hidden]
    A = X
    for i, (Q, sw, b) in enumerate(zip(Qs, scales, biases)):
        u, s, z = ref_quant_rows(A, None if ranges is None else ranges[i])
        Q = Q.astype(np.int64)
        acc = (u @ Q - z[:, None] * Q.sum(axis=0)).astype(np.float64)
        if residual:
            acc += (ref_residual_codes(A, u, s, z) @ Q - 128 * Q.sum(axis=0)) / 256.0
        # the kernel's float32 epilogue: the integer sum (with the residual: (acc1 - z cs) +
        # (acc2 - 128 cs) / 256) rounded once, times (s sw) rounded to float32, plus b with one
        # rounding (a fused multiply-add)
        acc = acc.astype(f32).astype(np.float64)
        ssw = (s[:, None] * sw.astype(f32)).astype(f32).astype(np.float64)
        y = (acc * ssw + b.astype(f32)).astype(f32)
        A = act(y) if i < len(Qs) - 1 else y
    return A.astype(np.float64)


def _random_mlp(rng, dims):
    Qs = [rng.integers(-127, 128, (dims[i], dims[i + 1])).astype(np.int8) for i in range(len(dims) - 1)]
    scales = [rng.uniform(1e-3, 3e-3, d).astype(f32) for d in dims[1:]]
    biases = [rng.normal(0, 0.1, d).astype(f32) for d in dims[1:]]
    return Qs, scales, biases


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("n", [1, 2, 3, 8, 13, 200])
@pytest.mark.parametrize("dims", [(100, 256, 256, 10), (7, 33, 1), (64, 10), (20, 40, 17)])
def test_kernel_matches_numpy_reference(n, dims, residual):
    rng = np.random.default_rng(n)
    Qs, scales, biases = _random_mlp(rng, dims)
    X = rng.normal(0, 2, (n, dims[0])).astype(f32)
    want = ref_forward(X, Qs, scales, biases, "relu", residual=residual)
    outs = []
    for portable in (False, True):
        k = _int8.Int8Kernel(Qs, scales, biases, "relu", "identity", portable=portable, residual=residual)
        assert k.residual == (residual,) * (len(dims) - 1)
        out = np.empty((n, dims[-1]))
        assert k.run(X, out, _int8.VALUES, 2) == 0
        np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
        # float64 input is quantized from the same values
        out64 = np.empty_like(out)
        assert k.run(X.astype(np.float64), out64, _int8.VALUES, 1) == 0
        np.testing.assert_array_equal(out64, out)
        outs.append(out)
    # the VNNI and the portable paths: the same codes and integer sums, the same floats
    np.testing.assert_array_equal(outs[0], outs[1])


def test_vnni_and_portable_tiles_give_identical_results():
    rng = np.random.default_rng(1)
    Qs, scales, biases = _random_mlp(rng, (100, 256, 256, 10))
    X = rng.normal(size=(517, 100)).astype(f32)
    outs = []
    for portable in (False, True):
        k = _int8.Int8Kernel(Qs, scales, biases, "relu", "softmax", portable=portable)
        out = np.empty((517, 10))
        k.run(X, out, _int8.VALUES, 2)
        outs.append(out)
    np.testing.assert_array_equal(outs[0], outs[1])


def _static_case():
    """A small MLP, static ranges [(-3, 2.5), (0, 1.5)] as (s, z), and rows partly outside them."""
    rng = np.random.default_rng(2)
    Qs, scales, biases = _random_mlp(rng, (20, 40, 5))
    ranges = [(-3.0, 2.5), (0.0, 1.5)]
    X = rng.normal(0, 2, (50, 20)).astype(f32)  # some values outside [-3, 2.5]: clamped
    lo = np.array([r[0] for r in ranges], f32)
    hi = np.array([r[1] for r in ranges], f32)
    s = ((np.maximum(hi, 0) - np.minimum(lo, 0)) / f32(255)).astype(f32)
    z = np.clip(np.rint(-np.minimum(lo, 0) * (f32(1) / s)), 0, 255).astype(np.int32)
    return Qs, scales, biases, ranges, X, s, z


def test_static_ranges_match_reference():
    Qs, scales, biases, ranges, X, s, z = _static_case()
    k = _int8.Int8Kernel(Qs, scales, biases, "relu", "identity", input_scales=s, input_zeros=z)
    out = np.empty((50, 5))
    assert k.run(X, out, _int8.VALUES, 1) == 0
    want = ref_forward(X, Qs, scales, biases, "relu", ranges=ranges)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_rows_do_not_depend_on_their_batch():
    rng = np.random.default_rng(3)
    Qs, scales, biases = _random_mlp(rng, (30, 64, 4))
    k = _int8.Int8Kernel(Qs, scales, biases, "tanh", "softmax")
    X = rng.normal(size=(300, 30)).astype(f32)
    whole = np.empty((300, 4))
    k.run(X, whole, _int8.VALUES, 2)
    for i in (0, 7, 8, 299):
        one = np.empty((1, 4))
        k.run(X[i:i + 1], one, _int8.VALUES, 1)
        np.testing.assert_array_equal(one[0], whole[i])


@pytest.mark.parametrize("portable", [False, True])
def test_residual_codes_are_exact(portable):
    """One identity layer (Q = 127 I, scale 1/127) returns the dequantized row
    s ((u - z) + (v - 128) / 256): every code is checked to a fraction of one residual step."""
    rng = np.random.default_rng(5)
    F = 37
    Q = (127 * np.eye(F)).astype(np.int8)
    X = np.vstack([rng.normal(0, 3, (60, F)), rng.uniform(0, 1, (5, F)), -rng.uniform(0, 1, (5, F)),
                   np.zeros((1, F))]).astype(f32)
    X[0, :5] = [0.5, -0.5, 1e-9, -3.0, 7.0]
    u, s, z = ref_quant_rows(X)
    v = ref_residual_codes(X, u, s, z)
    want = s[:, None].astype(np.float64) * ((u - z[:, None]) + (v - 128) / 256.0)
    k = _int8.Int8Kernel([Q], [np.full(F, 1 / 127, f32)], [np.zeros(F, f32)], "identity", "identity",
                         portable=portable, residual=True)
    out = np.empty((len(X), F))
    assert k.run(X, out, _int8.VALUES, 1) == 0
    assert np.all(np.abs(out - want) <= s[:, None] / 1024)
    # and the residual pass brings the row within one residual step (s / 256; s / 512 unless the
    # residual code clamps at 255) of x, against s / 2 for one pass
    err = np.abs(want - X) / s[:, None]
    assert np.all(err <= 1 / 256 + 1e-6) and np.mean(err <= 1 / 512 + 1e-6) > 0.99


def test_residual_static_ranges_match_reference_and_paths():
    Qs, scales, biases, ranges, X, s, z = _static_case()
    want = ref_forward(X, Qs, scales, biases, "relu", ranges=ranges, residual=True)
    outs = []
    for portable in (False, True):
        k = _int8.Int8Kernel(Qs, scales, biases, "relu", "identity", input_scales=s, input_zeros=z,
                             portable=portable, residual=[True, False])
        assert k.residual == (True, False)
        out = np.empty((50, 5))
        assert k.run(X, out, _int8.VALUES, 1) == 0
        outs.append(out)
    np.testing.assert_array_equal(outs[0], outs[1])
    # residual on the first layer only: the reference with the second layer in one pass
    A = X
    u, s0, z0 = ref_quant_rows(A, ranges[0])
    v = ref_residual_codes(A, u, s0, z0)
    Q = Qs[0].astype(np.int64)
    acc = (u @ Q - z0[:, None] * Q.sum(0)) + (v @ Q - 128 * Q.sum(0)) / 256.0
    h = np.maximum((acc * (s0[:, None].astype(np.float64) * scales[0]) + biases[0]).astype(f32), 0)
    want = ref_forward(h, Qs[1:], scales[1:], biases[1:], "relu", ranges=ranges[1:])
    np.testing.assert_allclose(outs[0], want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("dims", [(30, 64, 4), (100, 10), (50, 40)])
def test_residual_rows_do_not_depend_on_batch_or_threads(dims):
    rng = np.random.default_rng(3)
    Qs, scales, biases = _random_mlp(rng, dims)
    X = rng.normal(size=(300, dims[0])).astype(f32)
    for portable in (False, True):
        k = _int8.Int8Kernel(Qs, scales, biases, "tanh", "softmax", residual=True, portable=portable)
        whole, two = np.empty((300, dims[-1])), np.empty((300, dims[-1]))
        k.run(X, whole, _int8.VALUES, 1)
        k.run(X, two, _int8.VALUES, 2)
        np.testing.assert_array_equal(two, whole)
        for i in (0, 3, 7, 8, 299):
            one = np.empty((1, dims[-1]))
            k.run(X[i:i + 1], one, _int8.VALUES, 1)
            np.testing.assert_array_equal(one[0], whole[i])
        for a, b in ((0, 5), (5, 21), (21, 300)):
            part = np.empty((b - a, dims[-1]))
            k.run(X[a:b], part, _int8.VALUES, 2)
            np.testing.assert_array_equal(part, whole[a:b])


def test_linear_benchmark_workload_agrees_99_percent_by_default():
    """The benchmark's linear workload (10 near-tied classes): default int8 (residual pass) labels
    agree with scikit-learn's float model on >= 99% of held-out rows, without the guard."""
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    X, y = make_classification(n_samples=20000, n_features=100, n_informative=60, n_classes=10, random_state=0)
    est = LogisticRegression(max_iter=300).fit(X[:5000], y[:5000])
    held = X[5000:].astype(f32)
    q, report = fastml.quantize(est, "int8", calibration=held)
    assert q.residual and q.float_coef is None and report.activation_passes == 2
    assert "two passes" in report.activations
    p = fastml.Predictor(q, backend="native")
    assert np.mean(p.predict(held) == est.predict(held)) >= 0.99
    assert report.agreement >= 0.99
    # the residual pass takes the activation rounding out: the scores' error is (nearly) the weights'
    f = est.decision_function(held)
    w = held.astype(np.float64) @ q.dequantized().coef.T + q.intercept
    got = p.decision_function(held)
    assert np.sqrt(np.mean((got - f) ** 2)) <= 1.05 * np.sqrt(np.mean((w - f) ** 2))
    one, r1 = fastml.quantize(est, "int8", calibration=held, residual=False)
    assert not one.residual and r1.activation_passes == 1 and "one pass" in r1.activations
    assert r1.max_abs_diff > report.max_abs_diff


def test_quantize_columns_is_symmetric_per_column():
    W = np.array([[1.0, -0.5, 0.0], [-2.0, 0.25, 0.0]])
    Q, s = quantize_columns(W)
    np.testing.assert_allclose(s, [2 / 127, 0.5 / 127, 1.0])
    assert Q.dtype == np.int8 and Q[1, 0] == -127 and Q[0, 1] == -127 and np.all(Q[:, 2] == 0)
    assert np.max(np.abs(Q * s - W)) <= np.max(s) / 2 + 1e-12


# --------------------------------------------------------------------------- demo datasets

def _demo_models():
    from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_wine
    from sklearn.linear_model import LogisticRegression, Ridge, SGDClassifier
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler, StandardScaler
    from sklearn.svm import LinearSVC

    digits, cancer, wine, diabetes = (load_digits(return_X_y=True), load_breast_cancer(return_X_y=True),
                                      load_wine(return_X_y=True), load_diabetes(return_X_y=True))
    return {
        "LogisticRegression digits": (make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)), digits),
        "LogisticRegression breast_cancer": (make_pipeline(StandardScaler(), LogisticRegression()), cancer),
        "SGDClassifier modified_huber wine": (make_pipeline(MinMaxScaler(), SGDClassifier(
            loss="modified_huber", random_state=0)), wine),
        "LinearSVC wine": (make_pipeline(StandardScaler(), LinearSVC()), wine),
        "Ridge diabetes": (Ridge(), diabetes),
        "MLPClassifier digits": (make_pipeline(StandardScaler(), MLPClassifier((64,), max_iter=300,
                                                                               random_state=0)), digits),
        "MLPClassifier breast_cancer": (make_pipeline(StandardScaler(), MLPClassifier(
            (32, 16), max_iter=500, random_state=0)), cancer),
        "MLPRegressor diabetes": (make_pipeline(StandardScaler(), MLPRegressor(
            hidden_layer_sizes=(32,), max_iter=1000, random_state=0)), diabetes),
    }


@pytest.fixture(scope="module")
def demo():
    from sklearn.model_selection import train_test_split

    fitted = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, (est, (X, y)) in _demo_models().items():
            Xtr, Xte, ytr, _ = train_test_split(X, y, test_size=0.3, random_state=0)
            fitted[name] = (est.fit(Xtr, ytr), Xtr, Xte)
    return fitted


def _method(est):
    for m in ("predict_proba", "decision_function", "predict"):
        if hasattr(est, m):
            return m


@pytest.mark.parametrize("name", list(_demo_models()))
def test_int8_agrees_with_float_model_on_held_out_rows(demo, name):
    est, Xtr, Xte = demo[name]
    p = fastml.Predictor(est, quantize="int8", calibration=Xtr, backend="native")
    m = _method(est)
    want, got = getattr(est, m)(Xte), getattr(p, m)(Xte)
    assert got.shape == want.shape
    if m != "predict" or not np.issubdtype(np.asarray(est.predict(Xte)).dtype, np.floating):
        assert np.mean(p.predict(Xte) == est.predict(Xte)) >= 0.99
    # ONNX Runtime's quantization tests' tolerance, on every entry (the digits logistic
    # regression, whose rows can hold a feature with a z-score of 20-50 that sets the row's
    # activation scale, needed the linear models' residual activation pass for it)
    close = np.isclose(got, want, rtol=1e-2, atol=0.05)
    assert close.all(), np.abs(got - want).max()


def test_report_is_measured_on_calibration_rows(demo):
    est, Xtr, _ = demo["MLPClassifier digits"]
    p = fastml.Predictor(est, quantize="int8", calibration=Xtr, backend="native")
    r = p.quantization_report
    assert r.rows == len(Xtr) and r.compared == "predict_proba" and r.data == "calibration rows"
    P = p.predict_proba(Xtr)
    R = est.predict_proba(Xtr)
    assert r.max_abs_diff == pytest.approx(np.abs(P - R).max(), abs=1e-6)
    assert r.agreement == pytest.approx(np.mean(p.predict(Xtr) == est.predict(Xtr)))
    assert 3.5 < r.size_ratio < 4.0  # int8 weights; float32 scales and biases stay
    assert "labels agree" in str(r)
    # without rows: sizes only
    p2 = fastml.Predictor(est, quantize="int8", backend="native")
    assert p2.quantization_report.rows == 0 and p2.quantization_report.agreement is None
    assert "not measured" in str(p2.quantization_report)


def test_quantize_function_and_measure_on_held_out_rows(demo):
    est, Xtr, Xte = demo["LogisticRegression breast_cancer"]
    qmodel, report = fastml.quantize(est, "int8")
    assert isinstance(ir.as_pipeline(qmodel).estimator, QLinear)
    held = fastml.quantize.measure(est, qmodel, Xte, data="held-out rows")
    assert held.rows == len(Xte) and held.agreement >= 0.99
    # a quantized IR runs in a Predictor like any other model
    p = fastml.Predictor(qmodel, backend="native")
    np.testing.assert_array_equal(p.predict(Xte), fastml.Predictor(est, quantize="int8",
                                                                    backend="native").predict(Xte))


def test_static_activations(demo):
    est, Xtr, Xte = demo["MLPClassifier digits"]
    p = fastml.Predictor(est, quantize="int8-static", calibration=Xtr, backend="native")
    assert ir.as_pipeline(p.ir).estimator.input_ranges is not None
    assert p.quantization_report.agreement >= 0.99
    assert np.mean(p.predict(Xte) == est.predict(Xte)) >= 0.99


@pytest.mark.parametrize("scheme", ["int8", "int8-static"])
def test_onnxruntime_int8_runs(demo, scheme):
    pytest.importorskip("onnxruntime.quantization")
    est, Xtr, Xte = demo["MLPClassifier digits"]
    p = fastml.Predictor(est, quantize=scheme, calibration=Xtr, backend="onnxruntime")
    assert "quantize_" + ("static" if scheme == "int8-static" else "dynamic") in p.backend_info["onnxruntime"]["graph"]
    P = p.predict_proba(Xte)
    assert P.shape == (len(Xte), 10)
    np.testing.assert_allclose(P.sum(axis=1), 1, atol=1e-5)
    assert np.mean(p.predict(Xte) == est.predict(Xte)) >= 0.99
    # a linear model too (skl2onnx writes LinearClassifier, which ORT does not quantize:
    # fastml writes MatMul + Add)
    est, Xtr, Xte = demo["LogisticRegression digits"]
    p = fastml.Predictor(est, quantize=scheme, calibration=Xtr, backend="onnxruntime")
    assert np.mean(p.predict(Xte) == est.predict(Xte)) >= 0.98


def test_auto_has_both_int8_backends(demo):
    pytest.importorskip("onnxruntime.quantization")
    est, _, Xte = demo["MLPClassifier breast_cancer"]
    p = fastml.Predictor(est, quantize="int8", n_threads=1)
    assert set(p._backends) == {"native", "onnxruntime"}
    assert p.predict_proba(Xte).shape == (len(Xte), 2)


# --------------------------------------------------------------------------- errors

@pytest.fixture(scope="module")
def small_q():
    rng = np.random.default_rng(5)
    W = [rng.normal(size=(6, 8)), rng.normal(size=(8, 3))]
    mlp = ir.MLP(weights=tuple(W), biases=(np.zeros(8), np.zeros(3)), out_activation="softmax",
                 is_classifier=True, classes=np.array([0, 1, 2])).validate()
    return mlp, fastml.Predictor(mlp, quantize="int8", backend="native")


def test_bad_input_gets_typed_errors(small_q):
    _, p = small_q
    X = np.ones((4, 6))
    X[2, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        p.predict_proba(X)
    X[2, 3] = np.inf
    with pytest.raises(InputError, match="infinity"):
        p.predict(X)
    with pytest.raises(InputError, match="features"):
        p.predict(np.ones((2, 5)))
    with pytest.raises(InputError, match="2D"):
        p.predict(np.ones(6))
    # non-contiguous and integer input are converted, not refused
    Xg = np.asfortranarray(np.random.default_rng(0).normal(size=(5, 6)))
    np.testing.assert_array_equal(p.predict_proba(Xg), p.predict_proba(np.ascontiguousarray(Xg)))
    assert p.predict(np.ones((2, 6), dtype=int)).shape == (2,)


def test_bad_options_and_models(small_q):
    mlp, _ = small_q
    with pytest.raises(InvalidOptionError, match="unknown quantization"):
        fastml.quantize(mlp, "int4")
    with pytest.raises(InvalidOptionError, match="calibration"):
        fastml.quantize(mlp, "int8-static")
    with pytest.raises(InputError, match="NaN"):
        fastml.quantize(mlp, "int8", calibration=np.full((3, 6), np.nan))
    with pytest.raises(InputError, match="features"):
        fastml.quantize(mlp, "int8", calibration=np.ones((3, 4)))
    km = ir.Centroids(centers=np.ones((2, 3))).validate()
    with pytest.raises(UnsupportedModelError, match="no quantized form"):
        fastml.quantize(km)


def test_malformed_quantized_ir_is_refused(small_q):
    mlp, p = small_q
    q = ir.as_pipeline(p.ir).estimator
    bad = [
        ({"weights_q": (q.weights_q[0].astype(np.int16), q.weights_q[1])}, "int8"),
        ({"weights_q": (np.full((6, 8), -128, np.int8), q.weights_q[1])}, "-128"),
        ({"weight_scales": (q.weight_scales[0], -q.weight_scales[1])}, "> 0"),
        ({"weight_scales": (q.weight_scales[0],)}, "scale arrays"),
        ({"weights_q": (q.weights_q[0], q.weights_q[1][:5])}, "expects"),
        ({"input_ranges": np.array([[1.0, 0.0], [0.0, 1.0]])}, "input_ranges"),
    ]
    for change, words in bad:
        with pytest.raises(InvalidModelError, match=words):
            ir.replace(q, **change).validate()
    lin = QLinear(coef_q=np.ones((1, 3), np.int8), coef_scale=np.ones(2), intercept=np.zeros(1),
                  is_classifier=True, classes=np.array([0, 1]))
    with pytest.raises(InvalidModelError, match="coef_scale"):
        lin.validate()


def test_dequantized_model_is_the_int8_weights():
    rng = np.random.default_rng(6)
    mlp = ir.MLP(weights=(rng.normal(size=(5, 4)),), biases=(np.zeros(4),)).validate()
    q, _ = fastml.quantize(mlp)
    assert isinstance(q, QMLP)
    np.testing.assert_array_equal(q.dequantized().weights[0], q.weights_q[0] * q.weight_scales[0])
    assert np.max(np.abs(q.dequantized().weights[0] - mlp.weights[0])) <= np.max(q.weight_scales[0]) / 2 + 1e-12
    # the report on rows: a regressor has no label agreement
    X = rng.normal(size=(20, 5))
    r = measure(mlp, q, X)
    assert r.agreement is None and r.compared == "predict" and r.max_abs_diff < 0.1


# --------------------------------------------------------------------------- exact-argmax guard

def _near_tied():
    """10 near-tied classes (the benchmark workload's recipe, smaller): plain int8 flips labels."""
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    X, y = make_classification(n_samples=6000, n_features=100, n_informative=60, n_classes=10, random_state=0)
    est = LogisticRegression(max_iter=300).fit(X[:3000], y[:3000])
    return est, X[3000:]


@pytest.fixture(scope="module")
def near_tied():
    return _near_tied()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scheme", ["int8", "int8-static"])
def test_guard_gives_the_float_labels_on_every_row(near_tied, dtype, scheme):
    est, X = near_tied
    X = X.astype(dtype)
    flt = fastml.Predictor(est, backend="native", n_threads=2)
    q, rep = fastml.quantize(est, scheme, calibration=X[:500], exact_argmax=True)
    plain, _ = fastml.quantize(est, scheme, calibration=X[:500])   # the default: no guard
    p, p0 = fastml.Predictor(q, backend="native", n_threads=2), fastml.Predictor(plain, backend="native")
    want = flt.predict(X)
    assert np.mean(p0.predict(X) == want) < 1.0  # without the guard int8 flips some labels here
    np.testing.assert_array_equal(p.predict(X), want)
    np.testing.assert_array_equal(p.predict_proba(X).argmax(axis=1), flt.predict_proba(X).argmax(axis=1))
    np.testing.assert_array_equal(p.decision_function(X).argmax(axis=1), want)
    # single rows take the same decisions
    for i in range(0, 300, 7):
        assert p.predict(X[i:i + 1])[0] == want[i]
    # rechecked rows are the float kernel's output; the others the plain int8 kernel's
    P, P0, PF = p.predict_proba(X), p0.predict_proba(X), flt.predict_proba(X)
    redo = np.any(P != P0, axis=1)
    # (static ranges from 500 rows clamp many held-out rows: most are rechecked)
    assert 0 < redo.mean() < (0.8 if scheme == "int8" else 1.0)
    assert np.all(P0.argmax(axis=1)[~redo] == want[~redo])
    np.testing.assert_allclose(P[redo], PF[redo], rtol=1e-12, atol=1e-15)


def test_guard_on_binary_and_regressors(demo):
    for name in ("LogisticRegression breast_cancer", "LinearSVC wine", "Ridge diabetes",
                 "SGDClassifier modified_huber wine"):
        est, Xtr, Xte = demo[name]
        X = np.vstack([Xtr, Xte])
        flt = fastml.Predictor(est, backend="native")
        q, rep = fastml.quantize(est, "int8", calibration=Xtr, exact_argmax=True)
        p = fastml.Predictor(q, backend="native")
        if name.startswith("Ridge"):
            assert rep.recheck_labels is None
            continue
        np.testing.assert_array_equal(p.predict(X), flt.predict(X))
        assert rep.agreement == 1.0


@pytest.mark.parametrize("name", [n for n in _demo_models() if not n.startswith("MLP")])
def test_guard_with_tolerance_certifies_values(demo, name):
    est, Xtr, Xte = demo[name]
    m = _method(est)
    q, rep = fastml.quantize(est, "int8", calibration=Xtr, exact_argmax=True, tolerance=(1e-2, 0.05))
    p = fastml.Predictor(q, backend="native")
    got, want = getattr(p, m)(Xte), getattr(est, m)(Xte)
    np.testing.assert_allclose(got, want, rtol=1e-2, atol=0.05)
    assert 0 <= rep.recheck_values <= 1


def test_guard_bound_holds_on_adversarial_rows():
    """Random models and rows built to sit near ties (two classes with nearly equal weights,
    a feature of large range): the guarded predict must equal the float kernel's."""
    rng = np.random.default_rng(11)
    for trial in range(6):
        F, T = rng.integers(3, 90), rng.integers(2, 40)
        W = rng.normal(size=(T, F))
        W[1] = W[0] + rng.normal(0, 1e-3, F)
        b = rng.normal(size=T) * 0.1
        lin = ir.Linear(coef=W, intercept=b, is_classifier=True, classes=np.arange(T), proba="softmax").validate()
        X = rng.normal(size=(2000, F)) * rng.choice([1e-3, 1.0, 1e3], size=(1, F))
        X[::3, 0] *= 50
        q, _ = fastml.quantize(lin, exact_argmax=True)
        for dt in (np.float32, np.float64):
            Xd = X.astype(dt)
            flt = fastml.Predictor(lin, backend="native", n_threads=2)
            p = fastml.Predictor(q, backend="native", n_threads=2)
            np.testing.assert_array_equal(p.predict(Xd), flt.predict(Xd))


def test_report_shows_guard_and_sizes(near_tied):
    est, X = near_tied
    q, rep = fastml.quantize(est, "int8", calibration=X, exact_argmax=True)
    k, f = 10, 100
    assert rep.bytes_guard == 8 * (k * f + k) and rep.bytes_quantized == k * f + 8 * k + rep.bytes_guard
    assert rep.agreement == 1.0 and 0 < rep.recheck_labels < 1 and rep.recheck_values is not None
    native = fastml.Predictor(q, backend="native")._backends["native"]
    assert rep.recheck_labels == native.rechecked(X, "predict") / len(X)
    assert "guard" in str(rep) and "recomputed in float" in str(rep)
    q0, rep0 = fastml.quantize(est, "int8", calibration=X)   # the default: no guard
    assert rep0.guard == "off" and rep0.recheck_labels is None and rep0.bytes_guard == 0
    assert rep0.agreement < 1.0 and rep0.size_ratio > 3.5
    assert ir.as_pipeline(q0).estimator.float_coef is None


def test_guard_options_and_ir_are_checked(near_tied):
    est, _ = near_tied
    with pytest.raises(InvalidOptionError, match="exact_argmax"):
        fastml.quantize(est, "int8", exact_argmax="yes")
    with pytest.raises(InvalidOptionError, match="needs exact_argmax"):
        fastml.quantize(est, "int8", exact_argmax=False, tolerance=(0.01, 0.05))
    with pytest.raises(InvalidOptionError, match="finite"):
        fastml.quantize(est, "int8", exact_argmax=True, tolerance=(-1, 0.05))
    with pytest.raises(InvalidOptionError, match="rtol, atol"):
        fastml.quantize(est, "int8", exact_argmax=True, tolerance="tight")
    q, _ = fastml.quantize(est, "int8", exact_argmax=True)
    with pytest.raises(InvalidModelError, match="float_coef"):
        ir.replace(q, float_coef=q.float_coef[:, :5]).validate()
    with pytest.raises(InvalidModelError, match="tolerance needs float_coef"):
        ir.replace(q, float_coef=None, tolerance=(0.01, 0.05)).validate()
    with pytest.raises(InvalidModelError, match="tolerance"):
        ir.replace(q, tolerance=(0.01, float("nan"))).validate()


# --------------------------------------------------------------------------- save

@pytest.mark.parametrize("name", ["LogisticRegression digits", "MLPClassifier digits", "LinearSVC wine"])
@pytest.mark.parametrize("scheme", ["int8", "int8-static"])
def test_save_writes_the_onnxruntime_int8_graph(demo, tmp_path, name, scheme):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxruntime.quantization")
    est, Xtr, Xte = demo[name]
    p = fastml.Predictor(est, quantize=scheme, calibration=Xtr, backend="onnxruntime")
    path = tmp_path / "int8.onnx"
    p.save(path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert any(n.op_type in ("DynamicQuantizeLinear", "QuantizeLinear", "MatMulInteger", "DequantizeLinear")
               for n in __import__("onnx").load(str(path)).graph.node)
    X = Xte.astype(np.float32)
    got = sess.run(["values"], {"X": X})[0].astype(np.float64)
    np.testing.assert_array_equal(got, p._backends["onnxruntime"]._values(X))
    if scheme == "int8":  # a native-only Predictor writes the same graph
        pn = fastml.Predictor(est, quantize=scheme, calibration=Xtr, backend="native")
        pn.save(tmp_path / "n.onnx")
        np.testing.assert_array_equal(ort.InferenceSession(str(tmp_path / "n.onnx"), providers=[
            "CPUExecutionProvider"]).run(["values"], {"X": X})[0], got.astype(np.float32))
    else:
        with pytest.raises(UnsupportedModelError, match="calibration"):
            fastml.Predictor(est, quantize=scheme, calibration=Xtr, backend="native").save(tmp_path / "s.onnx")


def test_save_refuses_quantized_trees_and_svms(tmp_path):
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.svm import SVC

    X, y = load_iris(return_X_y=True)
    for est in (RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y), SVC().fit(X, y)):
        p = fastml.Predictor(est, quantize="int8", backend="native")
        with pytest.raises(UnsupportedModelError, match="no ONNX representation"):
            p.save(tmp_path / "q.onnx")
        assert not (tmp_path / "q.onnx").exists()
