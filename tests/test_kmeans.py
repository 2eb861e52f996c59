"""KMeans / MiniBatchKMeans: ``predict`` and ``transform`` parity scikit-learn <-> native <->
ONNX Runtime, ties, the IR's validation rules and the input contract.

What "the same" means here:

* Labels of float64 models (centers fitted on float64 data): native assigns in float64
  like scikit-learn (first minimum of ``||c||^2 - 2 x.c``); the two sums run in
  different orders, so rows may differ only where the two nearest centers are within
  ``TIE_REL`` (1e-9 of ``||x||^2 + ||c||^2``) of each other -- on the test data none are.
* Labels of float32 models with float32 input: both sides assign in float32 (~6e-8 per
  term over 64 terms), so rows may differ where the gap is below 1e-5 of the scale.
* Exact ties (duplicate centers, symmetric points) go to the lowest index on every route.
* ``transform``: float64 on native (scikit-learn upcasts float32 too), compared with
  rtol/atol 1e-9 of ``sqrt(||x||^2 + ||c||^2)``; ONNX Runtime's float32 graph with 1e-4
  of the squared scale under the root (it computes squares in float32).
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from fastml import InputError, InvalidModelError, Predictor, ir
from fastml.converters import from_onnx, import_model

TIE_REL = 1e-9
_CACHE: dict = {}


def _blobs(n=400, d=16, k=12, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 4, (k, d))
    return (centers[rng.integers(0, k, n)] + rng.standard_normal((n, d))).astype(dtype)


def _fit(kind="KMeans", dtype=np.float64, k=12):
    key = (kind, np.dtype(dtype).name, k)
    if key not in _CACHE:
        import sklearn.cluster as cl

        est = getattr(cl, kind)(n_clusters=k, random_state=0, n_init=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _CACHE[key] = est.fit(_blobs(dtype=dtype))
    return _CACHE[key]


def _gap(C, X):
    """(gap between the two smallest squared distances, scale) per row, in float64."""
    C, X = C.astype(np.float64), X.astype(np.float64)
    d = ((X[:, None, :] - C[None, :, :]) ** 2).sum(axis=2)
    s = np.sort(d, axis=1)
    gap = s[:, 1] - s[:, 0] if s.shape[1] > 1 else np.full(len(s), np.inf)
    return gap, (X ** 2).sum(axis=1) + (C ** 2).sum(axis=1).max()


def _labels_agree(got, want, C, X, rel):
    gap, scale = _gap(C, X)
    differ = got != want
    assert not (differ & (gap > rel * scale)).any(), f"{differ.sum()} labels differ on clear rows"


def _distances_close(got, want, X, C, rel):
    scale = np.sqrt((X.astype(np.float64) ** 2).sum(axis=1)[:, None] + (C ** 2).sum(axis=1)[None, :])
    err = np.abs(got.astype(np.float64) - want.astype(np.float64))
    assert np.all(err <= rel * scale + rel * np.abs(want)), err.max()


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("kind", ["KMeans", "MiniBatchKMeans"])
def test_native_matches_sklearn(kind, dtype):
    est = _fit(kind)
    pred = Predictor(est, backend="native")
    assert isinstance(pred.ir, ir.Centroids) and pred.ir.precision == "float64"
    X = _blobs(n=300, seed=3, dtype=dtype)
    # scikit-learn 1.9 refuses float32 X with float64 centers (a Cython dtype mismatch);
    # fastml widens X, which is what the float64 call computes
    X64 = X.astype(np.float64)
    got, want = pred.predict(X), est.predict(X64)
    assert got.dtype == want.dtype == np.int32
    _labels_agree(got, want, est.cluster_centers_, X, TIE_REL)
    assert np.array_equal(got, want)
    D = pred.transform(X)
    assert D.dtype == np.float64
    _distances_close(D, est.transform(X64), X, est.cluster_centers_, 1e-9)


def test_float32_fitted_model_assigns_like_sklearn():
    est = _fit("KMeans", np.float32)
    assert est.cluster_centers_.dtype == np.float32
    pred = Predictor(est, backend="native")
    assert pred.ir.precision == "float32"
    X = _blobs(n=500, seed=4, dtype=np.float32)
    _labels_agree(pred.predict(X), est.predict(X), est.cluster_centers_, X, 1e-5)
    D, W = pred.transform(X), est.transform(X)
    assert D.dtype == W.dtype == np.float32
    _distances_close(D, W, X, est.cluster_centers_, 1e-6)
    # float64 input is assigned in float64 (scikit-learn refuses the mix; its float64 call agrees)
    X64 = X.astype(np.float64)
    C64 = est.cluster_centers_.astype(np.float64)
    ref = np.argmin((C64 ** 2).sum(axis=1) - 2 * X64 @ C64.T, axis=1)
    _labels_agree(pred.predict(X64), ref, C64, X64, TIE_REL)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_onnxruntime_matches_sklearn(dtype):
    est = _fit("KMeans")
    pred = Predictor(est, backend="onnxruntime")
    X = _blobs(n=300, seed=3, dtype=dtype)
    X64 = X.astype(np.float64)
    got = pred.predict(X)
    assert got.dtype == np.int32
    _labels_agree(got, est.predict(X64), est.cluster_centers_, X, 1e-5 if dtype == np.float32 else TIE_REL)
    D = pred.transform(X)
    assert D.dtype == np.float64 and np.all(np.isfinite(D))
    _distances_close(D, est.transform(X64), X, est.cluster_centers_, 1e-4 if dtype == np.float32 else 1e-9)


def test_transform_clamps_at_zero_on_every_route():
    """A query equal to a center: scikit-learn clamps the rounding-negative square to 0."""
    est = _fit("KMeans")
    X = est.cluster_centers_[:5].copy()
    for backend in ("native", "onnxruntime"):
        D = Predictor(est, backend=backend).transform(X)
        assert np.all(np.isfinite(D)) and np.all(D >= 0)
        assert np.allclose(np.diag(D[:, :5]), 0.0, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_exact_ties_go_to_the_lowest_index(dtype):
    """Duplicate centers and points halfway between two centers, as scikit-learn decides."""
    from sklearn.cluster import KMeans

    C = np.array([[1.0, 0, 0], [-1, 0, 0], [1, 0, 0], [0, 3, 0], [0, -3, 0]], dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate centers: fewer distinct clusters
        est = KMeans(n_clusters=5, init=C, n_init=1, max_iter=1).fit(C)
    est.cluster_centers_ = C.copy()  # exactly these centers (fit may move them)
    X = np.array([[0.0, 0, 0], [1, 0, 0], [0, 0, 5], [0.5, 0, 0], [0, 0, -2]], dtype=dtype)
    want = est.predict(X)
    assert list(want) == [0, 0, 0, 0, 0]
    for backend in ("native", "onnxruntime"):
        got = Predictor(est, backend=backend).predict(X)
        assert np.array_equal(got, want), backend
        # the same rows inside a batch that runs the register-blocked path
        big = np.repeat(X, 40, axis=0)
        assert np.array_equal(Predictor(est, backend=backend).predict(big), np.repeat(want, 40)), backend


@pytest.mark.parametrize("scaler", ["StandardScaler", "MinMaxScaler", "Normalizer"])
def test_pipeline(scaler):
    import sklearn.preprocessing as pre
    from sklearn.cluster import KMeans
    from sklearn.pipeline import make_pipeline

    est = make_pipeline(getattr(pre, scaler)(), KMeans(n_clusters=7, random_state=0, n_init=1)).fit(_blobs())
    pred = Predictor(est, backend="native")
    assert isinstance(pred.ir, ir.Pipeline) and isinstance(pred.ir.estimator, ir.Centroids)
    X = _blobs(n=200, seed=9)
    assert np.array_equal(pred.predict(X), est.predict(X))
    C = est[-1].cluster_centers_
    _distances_close(pred.transform(X), est.transform(X), est[:-1].transform(X), C, 1e-9)


def test_batch_sizes_threads_and_layouts():
    est = _fit("KMeans", k=40)
    one, two = Predictor(est, backend="native", n_threads=1), Predictor(est, backend="native", n_threads=2)
    X = _blobs(n=700, seed=6)
    lab, D = one.predict(X), one.transform(X)
    assert np.array_equal(lab, two.predict(X)) and np.array_equal(D, two.transform(X))
    for n in (1, 2, 7, 8, 9, 65, 129):
        assert np.array_equal(one.predict(X[:n]), lab[:n]) and np.array_equal(one.transform(X[:n]), D[:n])
    assert np.array_equal(one.predict(X[::3]), lab[::3])
    assert np.array_equal(one.predict(np.asfortranarray(X[:30])), lab[:30])
    assert np.array_equal(one.predict(X[:30].tolist()), lab[:30])
    assert np.array_equal(lab, est.predict(X))


@pytest.mark.parametrize("bad, words", [(np.nan, "contains NaN"), (np.inf, "infinity")])
@pytest.mark.parametrize("method", ["predict", "transform"])
def test_nonfinite_input_is_refused_like_sklearn(bad, words, method):
    est = _fit("KMeans")
    X = _blobs(n=50, seed=1)
    X[41, 2] = bad
    with pytest.raises(InputError, match=words):
        getattr(Predictor(est, backend="native"), method)(X)
    with pytest.raises(ValueError, match=words):
        getattr(est, method)(X)


def test_methods_and_errors():
    pred = Predictor(_fit("KMeans"), backend="native")
    with pytest.raises(InputError, match="X has 3 features, but KMeans is expecting 16"):
        pred.predict(np.zeros((2, 3)))
    for method in ("predict_proba", "decision_function"):
        with pytest.raises(AttributeError, match=method):
            getattr(pred, method)(np.zeros((1, 16)))


def test_onnx_file_runs_on_native(tmp_path):
    est = _fit("KMeans")
    path = tmp_path / "km.onnx"
    Predictor(est, backend="onnxruntime").save(path)
    m = from_onnx(str(path))
    assert isinstance(m, ir.Centroids) and m.precision == "float32" and m.n_clusters == 12
    np.testing.assert_array_equal(m.centers, est.cluster_centers_.astype(np.float32))
    native, ort = Predictor(str(path), backend="native"), Predictor(str(path), backend="onnxruntime")
    X = _blobs(n=300, seed=3, dtype=np.float32)
    _labels_agree(native.predict(X), ort.predict(X), m.centers, X, 1e-5)
    _distances_close(native.transform(X), ort.transform(X), X, m.centers, 1e-4)


# --------------------------------------------------------------------------- IR rules

def test_valid_ir_and_frontend_copy():
    est = _fit("KMeans")
    m = import_model(est)
    assert m.methods() == {"predict", "transform"} and not m.is_classifier
    assert m.centers is not est.cluster_centers_ and est.cluster_centers_.flags.writeable
    with pytest.raises(ValueError):
        m.centers[0, 0] = 1.0


@pytest.mark.parametrize("centers, kw, words", [
    (np.zeros(4), {}, "must be 2-D"),
    (np.zeros((0, 3)), {}, "empty dimension"),
    (np.zeros((3, 0)), {}, "empty dimension"),
    (np.full((2, 2), np.nan), {}, "NaN or infinity"),
    (np.zeros((2, 2), np.float32), {}, "must be float64"),
    (np.full((2, 2), 0.1), {"precision": "float32"}, "not exactly representable"),
    (np.zeros((2, 2)), {"precision": "half"}, "unknown precision"),
    (np.full((2, 2), 1e200), {}, "too large"),
    (np.full((2, 2), 2.0 ** 64), {"precision": "float32"}, "too large"),
])
def test_invalid_ir_is_refused(centers, kw, words):
    with pytest.raises(InvalidModelError, match=words):
        ir.Centroids(centers=centers, **kw).validate()


def test_onnx_graphs_read_back_and_refuse_other_constants():
    from onnx import numpy_helper
    import onnx
    from fastml.converters import to_onnx

    est = _fit("KMeans")
    proto = to_onnx(est, dtype=np.float64)
    m = from_onnx(proto)
    assert m.precision == "float64"
    np.testing.assert_array_equal(m.centers, est.cluster_centers_)
    bad = onnx.ModelProto.FromString(proto.SerializeToString())
    for t in bad.graph.initializer:
        if t.name == "Ad_Addcst":  # ||c||^2, as skl2onnx names it
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) + 1.0, t.name))
    with pytest.raises(Exception, match="not \\|\\|c\\|\\|\\^2 of the centers") as info:
        from_onnx(bad)
    assert type(info.value).__name__ == "UnsupportedModelError"


def test_concurrent_calls_match_serial_calls():
    from concurrent.futures import ThreadPoolExecutor

    pred = Predictor(_fit("KMeans"), backend="native", n_threads=2)
    batches = [_blobs(n=n, seed=s) for s, n in enumerate((1, 9, 300, 900) * 4)]
    serial = [(pred.predict(X), pred.transform(X)) for X in batches]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(3):
            got = list(pool.map(lambda X: (pred.predict(X), pred.transform(X)), batches))
            assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(got, serial))


def test_auto_serves_kmeans_and_says_which_kernel():
    pred = Predictor(_fit("KMeans"))
    assert set(pred.backend_info["unavailable"]) == set()
    assert "argmin" in pred.backend_info["native"]["kernel"]
    X = _blobs(n=64, seed=2)
    assert np.array_equal(pred.predict(X), _fit("KMeans").predict(X))
    assert pred.transform(X).shape == (64, 12)


@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("k, d", [(1, 3), (5, 1), (17, 9), (33, 70)])
def test_kernel_matches_the_numpy_reference(k, d, precision):
    """Odd sizes (padded panels, one cluster, one feature) against ``reference_nn``."""
    from reference_nn import reference_kmeans_predict, reference_kmeans_transform

    rng = np.random.default_rng(k * 100 + d)
    C = rng.normal(0, 2, (k, d))
    if precision == "float32":
        C = C.astype(np.float32).astype(np.float64)
    m = ir.Centroids(centers=C, precision=precision).validate()
    pred = Predictor(m, backend="native", n_threads=2)
    for dtype in (np.float32, np.float64):
        X = rng.normal(0, 2, (301, d)).astype(dtype)
        rel = 1e-5 if precision == "float32" and dtype == np.float32 else TIE_REL
        _labels_agree(pred.predict(X), reference_kmeans_predict(m, X), C, X, rel)
        D = pred.transform(X)  # float32 for float32 input and centers, like scikit-learn
        _distances_close(D, reference_kmeans_transform(m, X), X, C, 1e-6 if D.dtype == np.float32 else 1e-9)


def test_extreme_finite_inputs_match_sklearn():
    """hypothesis rows: +-1e6, -0.0, subnormals, rows equal to a center; float64 model."""
    from hypothesis import given, strategies as st
    from hypothesis.extra.numpy import arrays
    from conftest import FAST_HYPOTHESIS

    est = _fit("KMeans")
    pred = Predictor(est, backend="native")
    C = est.cluster_centers_
    specials = st.sampled_from([0.0, -0.0, 5e-324, -1e6, 1e6, 1e-300, float(C[3, 0])])
    values = st.one_of(st.floats(-1e6, 1e6, allow_nan=False), specials)

    @FAST_HYPOTHESIS
    @given(arrays(np.float64, (4, 16), elements=values), st.booleans())
    def check(X, on_center):
        if on_center:
            X[0] = C[5]
        _labels_agree(pred.predict(X), est.predict(X), C, X, TIE_REL)
        _distances_close(pred.transform(X), est.transform(X), X, C, 1e-9)

    check()
