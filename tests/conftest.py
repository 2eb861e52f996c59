"""Shared fixtures for fastml's tests: fitted estimators, cached predictors, tolerances.

Tolerances, stated once
-----------------------
A score is a sum of terms ``x_j * w_kj``; rounding in such a sum is
proportional to the size of the terms, not to the size of the result (they
can cancel). Every absolute tolerance below is therefore multiplied by the
row's *magnitude* ``1 + max_k sum_j |x_j * w_kj|`` (``x`` after the pipeline's
preprocessing, see :func:`magnitude`); on the test data that is 1-100.

``NATIVE_TOL`` (rtol 1e-12, atol 1e-12): native vs scikit-learn for models
fitted on float64 data, on scores and probabilities. Both sides use the same
float64 coefficients and accumulate in float64 (float32 input is widened
before it is multiplied, as numpy does for scikit-learn); only summation
order and libm's ``exp`` differ, a few ulps.

``FLOAT32_TOL`` (rtol 1e-4, atol 1e-4): ONNX Runtime running a float32 graph
vs scikit-learn, on scores and probabilities, and native running a float32
ONNX file. skl2onnx stores weights, intercepts and scaler parameters as
float32, each rounded by up to 6e-8 relative, and ONNX Runtime accumulates in
float32, another 6e-8 per term; with up to 64 features that is ~1e-5 of the
magnitude, and 1e-4 leaves a margin without hiding a wrong formula (those are
off by > 1e-2). Probabilities move less than the scores they come from
(sigmoid and softmax have slope <= 1/2), so the same bound holds for them.

Labels: native predicts exactly scikit-learn's labels. A float32 route may
flip a row whose scikit-learn decision margin (binary: ``|score|``;
multiclass: best minus second-best score) is within the score tolerance;
such rows are counted, every other row must agree.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# --------------------------------------------------------------------------- tolerances


@dataclass(frozen=True)
class Tolerance:
    rtol: float
    atol: float  # multiplied by the row magnitude


NATIVE_TOL = Tolerance(rtol=1e-12, atol=1e-12)
FLOAT32_TOL = Tolerance(rtol=1e-4, atol=1e-4)

#: hypothesis settings for fastml's tests: modest example counts (the parity
#: suite must stay well under 90 s on 2 cores) and no example database (tests
#: must not write into the working tree).
FAST_HYPOTHESIS = settings(max_examples=25, deadline=None, database=None,
                           suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def has_cuda_provider() -> bool:
    try:
        import onnxruntime
    except ImportError:  # pragma: no cover
        return False
    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def pytest_collection_modifyitems(config, items):
    if has_cuda_provider():
        return
    skip = pytest.mark.skip(reason="onnxruntime has no CUDAExecutionProvider on this machine")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


# --------------------------------------------------------------------------- data

def _affine(X: np.ndarray, seed: int) -> np.ndarray:
    """Give columns different scales and offsets, so that scalers have work to do."""
    rng = np.random.default_rng(seed)
    return X * rng.uniform(0.5, 5.0, X.shape[1]) + rng.uniform(-3.0, 3.0, X.shape[1])


def _classification(n_classes: int, n_features: int, seed: int, labels=None):
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=300, n_features=n_features, n_informative=min(n_features, 8),
                               n_redundant=0, n_classes=n_classes, n_clusters_per_class=1,
                               random_state=seed)
    return _affine(X, seed), (y if labels is None else np.asarray(labels)[y])


def _regression(n_targets: int, seed: int):
    from sklearn.datasets import make_regression

    X, y = make_regression(n_samples=200, n_features=6, n_targets=n_targets, noise=1.0, random_state=seed)
    return _affine(X, seed), y


DATASETS: Dict[str, Callable[[], Tuple[np.ndarray, np.ndarray]]] = {
    # string labels for binary, non-contiguous negative ints for 3 classes
    "binary": lambda: _classification(2, 6, 0, ["neg", "pos"]),
    "3 classes": lambda: _classification(3, 6, 1, [-1, 2, 7]),
    "10 classes": lambda: _classification(10, 12, 2),
    "regression": lambda: _regression(1, 3),
    "3 targets": lambda: _regression(3, 4),
    "5 targets": lambda: _regression(5, 5),
}


def iris():
    from sklearn.datasets import load_iris

    return load_iris(return_X_y=True)


# --------------------------------------------------------------------------- estimators

def _sk():
    """scikit-learn's names, imported on first use (collection stays fast)."""
    from sklearn import linear_model as lm, multiclass, pipeline, preprocessing as pp, svm

    return lm, multiclass, pipeline, pp, svm


def _make(name: str):
    lm, multiclass, pipeline, pp, svm = _sk()
    mp = pipeline.make_pipeline
    std = pp.StandardScaler
    sgd = lambda **kw: lm.SGDClassifier(random_state=0, **kw)  # noqa: E731
    # SGD models sit behind a StandardScaler, as scikit-learn's documentation
    # asks: unscaled data gives scores in the hundreds (see test_linear_parity's
    # float32 saturation test).
    makers = {
        "LogisticRegression binary": (lambda: lm.LogisticRegression(), "binary"),
        "LogisticRegression 3 classes": (lambda: lm.LogisticRegression(), "3 classes"),
        "LogisticRegression 10 classes": (lambda: lm.LogisticRegression(max_iter=2000), "10 classes"),
        "OneVsRest(LogisticRegression) binary": (
            lambda: multiclass.OneVsRestClassifier(lm.LogisticRegression()), "binary"),
        "OneVsRest(LogisticRegression) 3 classes": (
            lambda: multiclass.OneVsRestClassifier(lm.LogisticRegression()), "3 classes"),
        "OneVsRest(LogisticRegression) 10 classes": (
            lambda: multiclass.OneVsRestClassifier(lm.LogisticRegression(max_iter=2000)), "10 classes"),
        "RidgeClassifier binary": (lambda: lm.RidgeClassifier(), "binary"),
        "RidgeClassifier 3 classes": (lambda: lm.RidgeClassifier(), "3 classes"),
        "RidgeClassifier 10 classes": (lambda: lm.RidgeClassifier(), "10 classes"),
        "SGD(hinge) binary": (lambda: mp(std(), sgd()), "binary"),
        "SGD(hinge) 10 classes": (lambda: mp(std(), sgd()), "10 classes"),
        "SGD(log_loss) binary": (lambda: mp(std(), sgd(loss="log_loss")), "binary"),
        "SGD(log_loss) 3 classes": (lambda: mp(std(), sgd(loss="log_loss")), "3 classes"),
        "SGD(log_loss) 10 classes": (lambda: mp(std(), sgd(loss="log_loss")), "10 classes"),
        "SGD(modified_huber) binary": (lambda: mp(std(), sgd(loss="modified_huber")), "binary"),
        "SGD(modified_huber) 3 classes": (lambda: mp(std(), sgd(loss="modified_huber")), "3 classes"),
        "Perceptron binary": (lambda: lm.Perceptron(random_state=0), "binary"),
        "Perceptron 3 classes": (lambda: lm.Perceptron(random_state=0), "3 classes"),
        "LinearSVC binary": (lambda: svm.LinearSVC(), "binary"),
        "LinearSVC 10 classes": (lambda: svm.LinearSVC(), "10 classes"),
        "LinearRegression": (lambda: lm.LinearRegression(), "regression"),
        "Ridge": (lambda: lm.Ridge(), "regression"),
        "Lasso": (lambda: lm.Lasso(alpha=0.1), "regression"),
        "ElasticNet": (lambda: lm.ElasticNet(alpha=0.1), "regression"),
        "SGDRegressor": (lambda: mp(std(), lm.SGDRegressor(random_state=0)), "regression"),
        "LinearSVR": (lambda: mp(std(), svm.LinearSVR(random_state=0, max_iter=10000)), "regression"),
        "LinearRegression 3 targets": (lambda: lm.LinearRegression(), "3 targets"),
        "Ridge 3 targets": (lambda: lm.Ridge(), "3 targets"),
        "Lasso 5 targets": (lambda: lm.Lasso(alpha=0.1), "5 targets"),
        "StandardScaler+LogisticRegression 3 classes": (
            lambda: mp(std(), lm.LogisticRegression()), "3 classes"),
        "StandardScaler(with_mean=False)+LogisticRegression binary": (
            lambda: mp(std(with_mean=False), lm.LogisticRegression()), "binary"),
        "StandardScaler(with_std=False)+Ridge": (lambda: mp(std(with_std=False), lm.Ridge()), "regression"),
        "MinMaxScaler+LinearSVC 3 classes": (lambda: mp(pp.MinMaxScaler(), svm.LinearSVC()), "3 classes"),
        "MaxAbsScaler+SGD(log_loss) 3 classes": (
            lambda: mp(pp.MaxAbsScaler(), sgd(loss="log_loss")), "3 classes"),
        "RobustScaler+Lasso 3 targets": (lambda: mp(pp.RobustScaler(), lm.Lasso(alpha=0.1)), "3 targets"),
        "Normalizer(l1)+LogisticRegression binary": (
            lambda: mp(pp.Normalizer("l1"), lm.LogisticRegression()), "binary"),
        "StandardScaler+Normalizer(l2)+LogisticRegression 10 classes": (
            lambda: mp(std(), pp.Normalizer("l2"), lm.LogisticRegression(max_iter=2000)), "10 classes"),
        "Normalizer(max)+Ridge": (lambda: mp(pp.Normalizer("max"), lm.Ridge()), "regression"),
        "MinMaxScaler+Ridge 3 targets": (lambda: mp(pp.MinMaxScaler(), lm.Ridge()), "3 targets"),
        "StandardScaler+OneVsRest(LogisticRegression) 3 classes": (
            lambda: mp(std(), multiclass.OneVsRestClassifier(lm.LogisticRegression())), "3 classes"),
    }
    return makers[name] if name else makers


#: every (estimator, data) case of the parity suite, by name
CASES = tuple(_make(""))


@dataclass(frozen=True)
class Case:
    name: str
    est: object          # fitted scikit-learn estimator or pipeline
    X_train: np.ndarray  # float64
    is_classifier: bool

    @property
    def n_features(self) -> int:
        return self.X_train.shape[1]

    def inputs(self, dtype, n: int = 200, seed: int = 0) -> np.ndarray:
        """Rows like the training data; from 10 rows on, row 0 is all 0.0, row 1 all -0.0, row 2 a training row."""
        rng = np.random.default_rng(seed)
        mu, sd = self.X_train.mean(axis=0), self.X_train.std(axis=0)
        X = mu + sd * rng.standard_normal((n, self.n_features))
        if n >= 10:
            X[0] = 0.0
            X[1] = -0.0
            X[2] = self.X_train[0]
        return X.astype(dtype)


class Zoo:
    """Fitted estimators and Predictors, built once per test session (per xdist worker)."""

    ROUTES = ("native", "onnxruntime", "file-native", "file-onnxruntime")

    def __init__(self, folder):
        self._folder = folder
        self._cases: Dict[str, Case] = {}
        self._predictors: Dict[Tuple[str, str], object] = {}

    def case(self, name: str) -> Case:
        c = self._cases.get(name)
        if c is None:
            make, data = _make(name)
            X, y = DATASETS[data]()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ConvergenceWarning: parity, not fit quality, is tested
                est = make().fit(X, y)
            c = self._cases[name] = Case(name, est, X, hasattr(est, "classes_"))
        return c

    def onnx_path(self, name: str) -> str:
        """The file ``Predictor(est).save`` writes for this case."""
        from fastml import Predictor

        path = os.path.join(self._folder, f"{CASES.index(name)}.onnx")
        if not os.path.exists(path):
            Predictor(self.case(name).est, backend="native").save(path)
        return path

    def predictor(self, name: str, route: str):
        """A Predictor for ``name`` on ``route`` (one of ``Zoo.ROUTES``); Predictors are thread-safe."""
        from fastml import Predictor

        key = (name, route)
        p = self._predictors.get(key)
        if p is None:
            if route.startswith("file-"):
                p = Predictor(self.onnx_path(name), backend=route[len("file-"):])
            else:
                p = Predictor(self.case(name).est, backend=route)
            self._predictors[key] = p
        return p


@pytest.fixture(scope="session")
def zoo(tmp_path_factory) -> Zoo:
    return Zoo(str(tmp_path_factory.mktemp("onnx")))


@pytest.fixture(scope="session", params=[np.float32, np.float64], ids=["float32", "float64"])
def dtype(request):
    """Input dtype. Session-scoped so that hypothesis tests may use it too."""
    return request.param


@pytest.fixture(scope="session")
def iris_logreg():
    """LogisticRegression on iris: 4 features, 3 classes (error-message tests quote it)."""
    from sklearn.linear_model import LogisticRegression

    X, y = iris()
    return LogisticRegression(max_iter=1000).fit(X, y), X


# --------------------------------------------------------------------------- comparison helpers

def final_coef(est) -> np.ndarray:
    """The final linear estimator's coefficients as (n_targets, n_features) float64."""
    final = est.steps[-1][1] if hasattr(est, "steps") else est
    if hasattr(final, "estimators_"):  # OneVsRestClassifier
        return np.vstack([np.reshape(e.coef_, (1, -1)) for e in final.estimators_]).astype(np.float64)
    coef = np.asarray(final.coef_, dtype=np.float64)
    return coef.reshape(-1, coef.shape[-1])


def magnitude(est, X) -> np.ndarray:
    """Per row: ``1 + max_k sum_j |x_j * w_kj|`` with ``x`` after the pipeline's preprocessing."""
    Xt = np.asarray(X, dtype=np.float64)
    if hasattr(est, "steps") and len(est.steps) > 1:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            Xt = np.asarray(est[:-1].transform(Xt), dtype=np.float64)
    with np.errstate(all="ignore"):
        m = np.abs(Xt) @ np.abs(final_coef(est)).T
        return 1.0 + np.max(m, axis=1)


def margin(est, X) -> np.ndarray:
    """scikit-learn's decision margin per row: |score| (binary) or best minus second best."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # scikit-learn's own overflow warnings on extreme inputs
        d = np.asarray(est.decision_function(X), dtype=np.float64)
    if d.ndim == 1:
        return np.abs(d)
    top2 = np.sort(d, axis=1)[:, -2:]
    with np.errstate(all="ignore"):
        return top2[:, 1] - top2[:, 0]


def assert_close(got, want, tol: Tolerance, scale=1.0, what: str = "") -> None:
    """``|got - want| <= tol.atol * scale + tol.rtol * |want|`` elementwise (scale per row)."""
    got = np.asarray(got)
    want = np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    g, w = got.astype(np.float64), want.astype(np.float64)
    s = np.asarray(scale, dtype=np.float64)
    if s.ndim == 1 and w.ndim == 2:
        s = s[:, None]
    with np.errstate(all="ignore"):
        err = np.abs(g - w)
        bound = tol.atol * s + tol.rtol * np.abs(w)
        ok = (err <= bound) | (g == w) | (np.isnan(g) & np.isnan(w))
    if not ok.all():
        bad = np.argwhere(~ok)
        i = tuple(bad[0])
        raise AssertionError(
            f"{what}: {len(bad)} of {ok.size} values differ beyond rtol={tol.rtol:g}, "
            f"atol={tol.atol:g}*magnitude; first at {i}: got {g[i]!r}, want {w[i]!r}, "
            f"|diff|={err[i]:.3g} > bound {np.broadcast_to(bound, w.shape)[i]:.3g}")


def assert_same_labels(got, want, *, margins: Optional[np.ndarray] = None, below=None,
                       what: str = "") -> int:
    """Labels equal on every row; with ``margins``, rows whose margin < ``below`` may differ.

    Returns how many rows had such a small margin.
    """
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    differ = got != want
    low = np.zeros(want.shape[0], dtype=bool) if margins is None else margins < below
    wrong = differ & ~low
    if wrong.any():
        i = int(np.flatnonzero(wrong)[0])
        extra = "" if margins is None else f" (margin {margins[i]:.3g} >= {np.broadcast_to(below, low.shape)[i]:.3g})"
        raise AssertionError(f"{what}: {int(wrong.sum())} of {want.shape[0]} labels differ; "
                             f"row {i}: got {got[i]!r}, want {want[i]!r}{extra}")
    return int(low.sum())
