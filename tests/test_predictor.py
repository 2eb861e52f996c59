"""``Predictor``: the errors a user reads, and the promises of RELIABILITY.md.

* bad input and bad models raise typed fastml errors that are also the builtin
  scikit-learn raises, worded like scikit-learn (the messages are API);
* one Predictor called from many threads gives exactly the serial results;
* ``backend_info`` says what runs and why; ``auto`` picks by its own timings;
* ``save()`` then ``Predictor(path)`` gives the same model back;
* the caller's array is never modified.
"""
from __future__ import annotations

import os
import pickle
import re
import threading
import warnings

import numpy as np
import pytest

from fastml import (BackendUnavailableError, FastMLError, InputError, InvalidModelError,
                    MethodUnavailableError, NotFittedError, Predictor, UnsupportedModelError)
from conftest import CASES, FLOAT32_TOL, NATIVE_TOL, assert_close, has_cuda_provider, iris, magnitude

BACKENDS = ("native", "onnxruntime")
METHODS = ("predict", "predict_proba", "decision_function")

@pytest.fixture(scope="module", params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture(scope="module")
def iris_predictors(iris_logreg):
    est, _ = iris_logreg
    return {b: Predictor(est, backend=b) for b in BACKENDS}


@pytest.fixture
def pred(iris_predictors, backend):
    return iris_predictors[backend]


def _sklearn_message(fn) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError) as info:
            fn()
    return str(info.value)


# --------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n", [3, 5])
def test_wrong_number_of_features_is_worded_like_sklearn(pred, iris_logreg, method, n):
    est, X = iris_logreg
    Xn = np.ones((2, n))
    expected = f"X has {n} features, but LogisticRegression is expecting 4 features as input."
    assert _sklearn_message(lambda: getattr(est, method)(Xn)) == expected
    with pytest.raises(InputError, match=re.escape(expected)) as info:
        getattr(pred, method)(Xn)
    assert str(info.value) == expected
    assert isinstance(info.value, ValueError)


def test_wrong_number_of_features_through_a_pipeline(zoo, backend):
    name = "StandardScaler+LogisticRegression 3 classes"
    with pytest.raises(InputError, match=r"X has 5 features, but \w+ is expecting 6 features as input\."):
        zoo.predictor(name, backend).predict(np.ones((1, 5)))


@pytest.mark.parametrize("method", METHODS)
def test_1d_input_says_reshape(pred, method):
    with pytest.raises(InputError, match=r"(?i)expected 2D array, got 1D array instead.*"
                                         r"reshape\(-1, 1\).*reshape\(1, -1\)"):
        getattr(pred, method)(np.ones(4))


@pytest.mark.parametrize("shape", [(2, 2, 4), (1, 1, 1, 4)])
def test_3d_and_higher_input(pred, shape):
    with pytest.raises(InputError, match=rf"(?i)found array with dim {len(shape)}.*expected 2D"):
        pred.predict(np.ones(shape))


def test_scalar_input(pred):
    with pytest.raises(InputError, match=r"(?i)expected 2D array, got scalar"):
        pred.predict(np.float64(1.0))


@pytest.mark.parametrize("method", METHODS)
def test_empty_batch(pred, method):
    with pytest.raises(InputError, match=r"found array with 0 sample\(s\) \(shape=\(0, 4\)\) "
                                         r"while a minimum of 1 is required"):
        getattr(pred, method)(np.empty((0, 4)))


def test_object_array_of_strings(pred):
    X = np.array([["a", 1.0, 2.0, 3.0]], dtype=object)
    with pytest.raises(InputError, match="could not convert string to float: 'a'"):
        pred.predict(X)


def test_object_array_of_numbers_is_converted(pred, iris_logreg):
    est, X = iris_logreg
    np.testing.assert_array_equal(pred.predict(X[:5].astype(object)), est.predict(X[:5]))


@pytest.mark.parametrize("X", [np.array([["1", "2", "3", "4"]]), np.array([[b"1", b"2", b"3", b"4"]]),
                               np.zeros((1, 4), dtype="datetime64[s]")],
                         ids=["str", "bytes", "datetime"])
def test_str_bytes_and_datetime_dtypes(pred, X):
    with pytest.raises(InputError, match=rf"dtype={re.escape(str(X.dtype))} is not numeric"):
        pred.predict(X)


def test_complex_dtype(pred):
    with pytest.raises(InputError, match=r"(?i)complex data not supported"):
        pred.predict(np.ones((1, 4), dtype=np.complex128))


def test_none_input(pred):
    # On the native backend None reaches LinearKernel.run (kernels/_linear.pyx: ``cnp.ndarray X``
    # without ``not None``) and _layout_ok reads array fields of Py_None; see the report.
    with pytest.raises(InputError, match="expected a 2-D array-like input, got NoneType"):
        pred.predict(None)


def test_ragged_list(pred):
    with pytest.raises(InputError, match="cannot convert input to an array"):
        pred.predict([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0]])


_NONFINITE = {"NaN": (np.nan, "Input X contains NaN"),
              "+inf": (np.inf, "Input X contains infinity or a value too large for dtype"),
              "-inf": (-np.inf, "Input X contains infinity or a value too large for dtype")}


@pytest.mark.parametrize("rows,where", [(1, 0), (7, 6), (3000, 2999), (3000, 1500)],
                         ids=["1 row", "last of 7", "last of 3000", "middle of 3000"])
@pytest.mark.parametrize("kind", list(_NONFINITE))
def test_nan_and_inf_are_refused_like_sklearn(iris_logreg, pred, dtype, kind, rows, where):
    est, X = iris_logreg
    value, words = _NONFINITE[kind]
    Z = np.resize(X, (rows, 4)).astype(dtype)
    Z[where, 2] = value
    assert words in _sklearn_message(lambda: est.predict(Z))
    for method in METHODS:
        with pytest.raises(InputError, match=re.escape(words)) as info:
            getattr(pred, method)(Z)
        assert isinstance(info.value, ValueError)
        if "infinity" in words:
            assert f"dtype('{np.dtype(dtype).name}')" in str(info.value)


@pytest.mark.parametrize("name", [n for n in CASES if "+" in n])  # every pipeline
@pytest.mark.parametrize("kind", list(_NONFINITE))
def test_nan_and_inf_are_refused_through_pipelines(zoo, name, backend, kind):
    """The message names what the caller passed (a Normalizer turns inf into NaN inside)."""
    value, words = _NONFINITE[kind]
    case = zoo.case(name)
    X = case.inputs(np.float64, n=10)
    X[4, 1] = value
    assert words in _sklearn_message(lambda: case.est.predict(X))
    with pytest.raises(InputError, match=re.escape(words)), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # see test_nonfinite_input_..._runtime_warnings
        zoo.predictor(name, backend).predict(X)


def test_nonfinite_input_is_refused_without_runtime_warnings(zoo):
    X = zoo.case("Normalizer(l1)+LogisticRegression binary").inputs(np.float64, n=10)
    X[4, 1] = np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InputError, match="Input X contains infinity"):
            zoo.predictor("Normalizer(l1)+LogisticRegression binary", "native").predict(X)


@pytest.mark.parametrize("method", METHODS)
def test_overflow_inside_preprocessing_is_refused_like_sklearn(zoo, backend, method):
    case = zoo.case("SGD(modified_huber) binary")  # StandardScaler + SGDClassifier
    X = np.full((1, 6), np.finfo(np.float32).max, dtype=np.float32)
    words = "Input X contains infinity or a value too large for dtype('float32')"
    assert words in _sklearn_message(lambda: getattr(case.est, method)(X))
    with pytest.raises(InputError, match=re.escape(words)):
        getattr(zoo.predictor(case.name, backend), method)(X)


@pytest.mark.parametrize("method", METHODS)
def test_max_rows(iris_logreg, backend, method):
    est, X = iris_logreg
    p = Predictor(est, backend=backend, max_rows=10)
    assert getattr(p, method)(X[:10]).shape[0] == 10
    with pytest.raises(InputError, match=r"11 rows exceed this predictor's max_rows=10"):
        getattr(p, method)(X[:11])


# --------------------------------------------------------------------------- bad arguments and models

def test_unknown_backend_name(iris_logreg):
    with pytest.raises(ValueError, match=r"unknown backend 'tpu'; choose 'auto', 'native' or 'onnxruntime'"):
        Predictor(iris_logreg[0], backend="tpu")


def test_unknown_device_name(iris_logreg):
    with pytest.raises(ValueError, match=r"unknown device 'gpu'; choose 'cpu' or 'cuda'"):
        Predictor(iris_logreg[0], device="gpu")


@pytest.mark.parametrize("backend_name", ["auto", "onnxruntime"])
def test_cuda_without_cuda_provider(iris_logreg, backend_name):
    if has_cuda_provider():
        pytest.skip("this onnxruntime has CUDAExecutionProvider")
    with pytest.raises(BackendUnavailableError, match=r"device='cuda' needs onnxruntime's "
                                                      r"CUDAExecutionProvider") as info:
        Predictor(iris_logreg[0], device="cuda", backend=backend_name)
    assert isinstance(info.value, RuntimeError)


def test_native_backend_runs_on_cpu_only(iris_logreg):
    with pytest.raises(BackendUnavailableError, match="the native backend runs on the CPU only"):
        Predictor(iris_logreg[0], device="cuda", backend="native")


@pytest.mark.cuda
def test_cuda_matches_sklearn(iris_logreg):
    est, X = iris_logreg
    p = Predictor(est, device="cuda")
    assert p.backend_info["onnxruntime"]["providers"][0] == "CUDAExecutionProvider"
    X32 = X.astype(np.float32)
    assert_close(p.predict_proba(X32), est.predict_proba(X32), FLOAT32_TOL, magnitude(est, X32))


def _unfitted():
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return {"LogisticRegression": LogisticRegression(), "Ridge": Ridge(),
            "OneVsRestClassifier": OneVsRestClassifier(LogisticRegression()),
            "StandardScaler": make_pipeline(StandardScaler(), LogisticRegression())}


@pytest.mark.parametrize("name", list(_unfitted()))
def test_unfitted_estimator(name):
    with pytest.raises(NotFittedError, match=rf"This {name} instance is not fitted yet"):
        Predictor(_unfitted()[name])


def _unsupported():
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler
    from sklearn.neighbors import KNeighborsClassifier

    X, y = iris()
    return {
        "KNeighborsClassifier": KNeighborsClassifier().fit(X, y),
        "PCA": make_pipeline(PCA(2), LogisticRegression()).fit(X, y),
        r"MinMaxScaler\(clip=True\)": make_pipeline(MinMaxScaler(clip=True), LogisticRegression()).fit(X, y),
        "object": object(),
    }


@pytest.mark.parametrize("name", list(_unsupported()))
def test_unsupported_estimator_is_named(name):
    with pytest.raises(UnsupportedModelError, match=name) as info:
        Predictor(_unsupported()[name])
    assert isinstance(info.value, TypeError)


class _Tripwire:
    """Unpickling this creates a file: proof that a pickle was (not) executed."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("suffix", [".pkl", ".pickle", ".joblib"])
def test_pickle_files_are_refused_unread(tmp_path, suffix):
    marker = tmp_path / "pickle-was-executed"
    path = tmp_path / f"model{suffix}"
    path.write_bytes(pickle.dumps(_Tripwire(str(marker))))
    with pytest.raises(UnsupportedModelError, match=r"fastml does not unpickle files \(unpickling runs code\)"):
        Predictor(str(path))
    with pytest.raises(UnsupportedModelError, match="does not unpickle"):
        Predictor(path)  # os.PathLike too
    assert not marker.exists()


def test_pickle_bytes_are_not_an_onnx_model(tmp_path):
    marker = tmp_path / "pickle-was-executed"
    data = pickle.dumps(_Tripwire(str(marker)))
    with pytest.raises(InvalidModelError, match="not a valid ONNX model|no nodes"):
        Predictor(data)
    (tmp_path / "model.onnx").write_bytes(data)
    with pytest.raises(InvalidModelError, match="not a valid ONNX model|no nodes"):
        Predictor(str(tmp_path / "model.onnx"))
    assert not marker.exists()


@pytest.mark.parametrize("backend_name", ["auto", "native", "onnxruntime"])
@pytest.mark.parametrize("data,words", [(b"\x00garbage\xff" * 10, "not a valid ONNX model"),
                                        (b"", "the ONNX graph has no nodes")], ids=["garbage", "empty"])
def test_garbage_onnx_bytes_and_files(tmp_path, backend_name, data, words):
    with pytest.raises(InvalidModelError, match=f"bytes: {words}"):
        Predictor(data, backend=backend_name)
    path = tmp_path / "model.onnx"
    path.write_bytes(data)
    with pytest.raises(InvalidModelError, match=re.escape(str(path)) + f": {words}") as info:
        Predictor(str(path), backend=backend_name)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("backend_name", ["auto", "native", "onnxruntime"])
def test_missing_onnx_file(tmp_path, backend_name):
    path = str(tmp_path / "nope.onnx")
    with pytest.raises(InvalidModelError, match=rf"cannot read ONNX file '{re.escape(path)}'.*No such file"):
        Predictor(path, backend=backend_name)


@pytest.mark.parametrize("method", ["predict_proba", "decision_function"])
def test_regressor_has_no_classifier_methods(zoo, backend, method):
    p = zoo.predictor("Ridge", backend)
    words = {"predict_proba": "Ridge has no predict_proba",
             "decision_function": "Ridge is a regressor and has no decision_function"}[method]
    with pytest.raises(MethodUnavailableError, match=words) as info:
        getattr(p, method)(np.ones((1, 6)))
    assert isinstance(info.value, AttributeError)
    with pytest.raises(MethodUnavailableError, match="not a classifier"):
        p.classes_


def test_classifier_without_probabilities(zoo, backend):
    with pytest.raises(MethodUnavailableError, match="LinearSVC has no predict_proba"):
        zoo.predictor("LinearSVC binary", backend).predict_proba(np.ones((1, 6), dtype=np.float32))


# --------------------------------------------------------------------------- error types

def _error_cases():
    """(what the user did, the builtins scikit-learn raises there, known bug or None)."""
    X, _ = iris()

    def est():
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(max_iter=1000).fit(*iris())

    def ridge():
        from sklearn.linear_model import Ridge

        return Ridge().fit(*iris())

    def call(backend, method, Z):
        return lambda: getattr(Predictor(est(), backend=backend), method)(Z)

    nan = X.copy()
    nan[0, 0] = np.nan
    cases = {
        "unknown backend": (lambda: Predictor(est(), backend="tpu"), (ValueError,), None),
        "unknown device": (lambda: Predictor(est(), device="gpu"), (ValueError,), None),
        "unfitted": (lambda: Predictor(_unfitted()["LogisticRegression"]), (ValueError, AttributeError), None),
        "unsupported": (lambda: Predictor(_unsupported()["KNeighborsClassifier"]), (TypeError,), None),
        "pickle": (lambda: Predictor("model.pkl"), (TypeError,), None),
        "garbage": (lambda: Predictor(b"\x00garbage\xff"), (ValueError,), None),
        "missing file": (lambda: Predictor("/nonexistent/model.onnx"), (ValueError,), None),
        "no cuda": (lambda: Predictor(est(), device="cuda", backend="native"), (RuntimeError,), None),
        "no method": (lambda: Predictor(ridge(), backend="native").predict_proba(np.ones((1, 4))),
                      (AttributeError,), None),
    }
    for backend in BACKENDS:
        cases.update({
            f"{backend} wrong width": (call(backend, "predict", X[:, :3]), (ValueError,), None),
            f"{backend} 1-D": (call(backend, "predict", X[0]), (ValueError,), None),
            f"{backend} NaN": (call(backend, "predict_proba", nan), (ValueError,), None),
            f"{backend} strings": (call(backend, "predict", np.array([["a"] * 4])), (ValueError,), None),
            f"{backend} ragged list": (call(backend, "predict", [[1.0] * 4, [1.0]]), (ValueError,), None),
            f"{backend} dict": (call(backend, "predict", {"a": 1}), (ValueError,), None),
            f"{backend} scalar": (call(backend, "predict", np.float64(1.0)), (ValueError,), None),
        })
    return cases


_ERRORS = _error_cases()


@pytest.mark.parametrize("what", list(_ERRORS))
def test_every_error_is_a_fastml_error_and_the_sklearn_builtin(what, request):
    fn, builtins, bug = _ERRORS[what]
    if bug:
        request.applymarker(pytest.mark.xfail(strict=True, reason=bug))
    with pytest.raises(Exception) as info:
        fn()
    assert isinstance(info.value, FastMLError), f"{type(info.value).__name__}: {info.value}"
    for b in builtins:
        assert isinstance(info.value, b), f"{type(info.value).__name__} is not a {b.__name__}"


# --------------------------------------------------------------------------- threads

_THREAD_CASES = ("StandardScaler+LogisticRegression 3 classes", "LogisticRegression 10 classes",
                 "SGD(modified_huber) binary", "Lasso 5 targets")


@pytest.mark.parametrize("backend_name", ["native", "onnxruntime", "auto"])
@pytest.mark.parametrize("name", _THREAD_CASES)
def test_threads_give_the_serial_results(zoo, name, backend_name):
    """8 threads x 200 calls, batches of 1, 7 and 3000 rows, every method, float32 and float64.

    The Predictor is new, so the threads also race to create onnxruntime's
    lazily built sessions.
    """
    case = zoo.case(name)
    p = Predictor(case.est, backend=backend_name)
    methods = [m for m in METHODS if hasattr(case.est, m)]
    batches = [case.inputs(dt, n=n, seed=n) for n in (1, 7, 3000) for dt in (np.float32, np.float64)]
    jobs = [(m, b) for m in methods for b in range(len(batches))]
    # auto: another Predictor could route a batch size to the other backend, so the
    # serial reference comes from p itself (its onnxruntime sessions then exist already)
    serial_p = p if backend_name == "auto" else Predictor(case.est, backend=backend_name)
    expected = {(m, b): getattr(serial_p, m)(batches[b]) for m, b in jobs}

    n_threads, n_calls = 8, 200
    barrier = threading.Barrier(n_threads)
    differences, errors = [], []

    def worker(t):
        try:
            barrier.wait()
            for i in range(n_calls):
                m, b = jobs[(t * 7 + i) % len(jobs)]
                got = getattr(p, m)(batches[b])
                if not np.array_equal(got, expected[m, b]):
                    differences.append((t, i, m, batches[b].shape, batches[b].dtype))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hangs"
    assert not errors, errors[:3]
    assert not differences, f"{len(differences)} of {n_threads * n_calls} calls differ: {differences[:3]}"


# --------------------------------------------------------------------------- backend_info

def test_backend_info_for_a_requested_backend(iris_logreg, backend):
    p = Predictor(iris_logreg[0], backend=backend)
    info = p.backend_info
    assert info["backend"] == p.backend == backend
    assert info["requested"] == backend
    assert info["reason"] == f"{backend!r} requested"
    assert backend in info and "measured_us" not in info
    if backend == "onnxruntime":
        assert info["onnxruntime"]["providers"] == ["CPUExecutionProvider"]
    assert repr(p) == f"Predictor(LogisticRegression, backend={backend!r})"


def test_auto_picks_the_faster_backend_by_its_own_timings(iris_logreg):
    est, X = iris_logreg
    p = Predictor(est)
    info = p.backend_info
    measured = info["measured_us"]
    assert set(measured) == {"native", "onnxruntime"}
    labels = set(measured["native"])
    assert "batch 1" in labels and set(measured["onnxruntime"]) == labels
    for timings in measured.values():
        assert all(isinstance(t, float) and t > 0 for t in timings.values())
    sizes = sorted(int(label.split()[1]) for label in labels)
    winner = {n: min(measured, key=lambda b: measured[b][f"batch {n}"]) for n in sizes}
    assert p.backend == winner[1]  # single rows run on the faster backend at batch 1
    if hasattr(p, "backend_for"):
        assert {n: p.backend_for(n) for n in sizes} == winner
    if len(set(winner.values())) == 1:
        assert info["backend"] == winner[1]
    else:
        assert set(info["backend"].values()) == set(winner.values())
    assert info["reason"].startswith("auto: fastest predict_proba measured on this machine")
    assert info["unavailable"] == {}
    assert_close(p.predict_proba(X), est.predict_proba(X), FLOAT32_TOL, magnitude(est, X))


def test_auto_says_why_a_backend_is_unavailable(tmp_path):
    # fastml's native backend has no naive Bayes; ONNX Runtime runs skl2onnx's GaussianNB graph
    import skl2onnx
    from sklearn.naive_bayes import GaussianNB

    X, y = iris()
    path = tmp_path / "nb.onnx"
    path.write_bytes(skl2onnx.to_onnx(GaussianNB().fit(X, y), X[:1].astype(np.float32),
                                      options={"zipmap": False}).SerializeToString())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = Predictor(str(path))
    info = p.backend_info
    assert p.backend == info["backend"] == "onnxruntime"
    assert info["reason"] == "auto: only 'onnxruntime' is used (see 'unavailable' for the others)"
    assert info["unavailable"]["native"].startswith("UnsupportedModelError")
    assert "not supported by fastml's ONNX reader" in info["unavailable"]["native"]


# --------------------------------------------------------------------------- save / load

_SAVE_CASES = ("LogisticRegression binary", "LogisticRegression 10 classes", "LinearSVC binary",
               "SGD(modified_huber) 3 classes", "Lasso 5 targets", "LinearRegression",
               "StandardScaler+Normalizer(l2)+LogisticRegression 10 classes", "RobustScaler+Lasso 3 targets")


@pytest.mark.parametrize("name", _SAVE_CASES)
def test_save_then_load_round_trip(zoo, name, tmp_path, backend):
    import onnx

    case = zoo.case(name)
    original = Predictor(case.est, backend="native")
    path = tmp_path / "model.onnx"
    original.save(path)
    loaded = Predictor(str(path), backend=backend)
    assert loaded.n_features_in_ == case.n_features
    if case.is_classifier:
        np.testing.assert_array_equal(loaded.classes_, case.est.classes_)
    X = case.inputs(np.float32)
    scale = magnitude(case.est, X)
    for method in ("predict_proba",) if case.is_classifier else ("predict",):
        if hasattr(case.est, method):
            assert_close(getattr(loaded, method)(X), getattr(original, method)(X), FLOAT32_TOL, scale,
                         what=method)
    if case.is_classifier:
        agree = np.mean(loaded.predict(X) == original.predict(X))
        assert agree >= 0.97, f"only {agree:.1%} of labels survive the round trip"
    # bytes and ModelProto load the same model, and re-saving writes the same bytes
    data = path.read_bytes()
    proto = onnx.load_from_string(data)
    for source in (data, proto):
        np.testing.assert_array_equal(Predictor(source, backend=backend).predict(X), loaded.predict(X))
    loaded.save(tmp_path / "again.onnx")
    assert (tmp_path / "again.onnx").read_bytes() == data
    assert proto.SerializeToString() == data  # not mutated by loading


def test_save_needs_a_source(iris_logreg, tmp_path):
    from fastml.converters import import_model

    p = Predictor(import_model(iris_logreg[0]), backend="native")
    with pytest.raises(UnsupportedModelError, match="saving a model built from fastml IR alone"):
        p.save(tmp_path / "x.onnx")
    assert not os.path.exists(tmp_path / "x.onnx")


# --------------------------------------------------------------------------- the caller's array

def _layouts(X):
    wide = np.zeros((X.shape[0], 2 * X.shape[1]), dtype=X.dtype)
    wide[:, ::2] = X
    return {"C": np.ascontiguousarray(X), "F": np.asfortranarray(X), "strided": wide[:, ::2]}


@pytest.mark.parametrize("backend_name", ["native", "onnxruntime", "auto"])
@pytest.mark.parametrize("name", [n for n in CASES if "+" in n or n == "LogisticRegression binary"])
def test_input_is_never_modified(zoo, name, backend_name, dtype):
    case = zoo.case(name)
    p = Predictor(case.est, backend=backend_name) if backend_name == "auto" else zoo.predictor(name, backend_name)
    for n in (1, 100):
        for layout, X in _layouts(case.inputs(dtype, n=n, seed=3)).items():
            before = X.copy(order="K")
            base_before = X.base.copy() if X.base is not None else None
            for method in METHODS:
                if hasattr(case.est, method):
                    getattr(p, method)(X)
            assert X.tobytes() == before.tobytes(), f"{layout} input modified"  # -0.0 too
            if base_before is not None:
                np.testing.assert_array_equal(X.base, base_before)


@pytest.mark.parametrize("name", ["LogisticRegression binary", "MinMaxScaler+Ridge 3 targets"])
def test_read_only_input_is_accepted(zoo, name, backend, dtype):
    case = zoo.case(name)
    X = case.inputs(dtype, n=20)
    writable = X.copy()
    X.flags.writeable = False
    p = zoo.predictor(name, backend)
    np.testing.assert_array_equal(p.predict(X), p.predict(writable))


def test_results_are_fresh_arrays(zoo):
    p = zoo.predictor("LogisticRegression 3 classes", "native")
    X = zoo.case("LogisticRegression 3 classes").inputs(np.float64, n=5)
    first = p.predict_proba(X)
    first[:] = -1.0
    assert np.all(p.predict_proba(X) >= 0)
    assert not np.shares_memory(p.predict_proba(X), p.predict_proba(X))


def test_native_results_match_sklearn_exactly_enough(iris_logreg):
    """A quick guard for the tolerance constants themselves: native sits far inside NATIVE_TOL."""
    est, X = iris_logreg
    p = Predictor(est, backend="native")
    assert_close(p.decision_function(X), est.decision_function(X), NATIVE_TOL, magnitude(est, X))
    np.testing.assert_array_equal(p.predict(X), est.predict(X))
