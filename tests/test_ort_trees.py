"""Tree ensembles on the onnxruntime backend, against the library that trained them.

``Predictor(est, backend="onnxruntime")`` runs the graph ``converters.to_onnx``
writes: skl2onnx's for scikit-learn (HistGradientBoosting: fastml's own, from
the IR), onnxmltools' for LightGBM and XGBoost. Every method the IR says the
model has (``methods()``, ``apply`` aside: it is native-only) is compared with
the source on float32 and float64 input, on rows like the training data, on
rows sitting on split thresholds and their float32 neighbours, and on NaN / inf
where the source accepts them (where it refuses them, fastml must refuse with
scikit-learn's words).

Tolerances, stated once
-----------------------
ONNX Runtime's tree operators add leaf values in float32, and skl2onnx and
onnxmltools write no float64 tree graph ONNX Runtime runs (float64 input runs
the float32 graph; scikit-learn's trees and XGBoost round X to float32
themselves). A float32 sum of T leaf values is off by at most about T * 6e-8 of
the model's magnitude ``M = max |base| + sum over trees of max |leaf|`` (divided
by T for an averaging forest), so:

* ``PROBA_ATOL`` (1e-5, absolute): probabilities, which lie in [0, 1];
* ``VALUE_RTOL`` (1e-5) of ``M``: regressor values, ``decision_function`` and
  ``score_samples`` (IsolationForest: ``M = 1``, its scores lie in [-1, 0]);
* labels are identical except on rows whose source margin (the two largest
  probabilities, or ``|decision_function|``) is below that rounding; such rows
  are counted, and at most 5% may have so small a margin.

Decisions at thresholds are exact where the converter makes them exact
(skl2onnx moves scikit-learn's float64 thresholds to the float32 that decides
alike; fastml's own graph does the same; XGBoost thresholds are float32). Where
a converter does not, the disagreement is a strict xfail with its reason
(``KNOWN``). The graph fastml writes from the IR (``tree_onnx``) is run on
every model too, and has none of those disagreements.
"""
from __future__ import annotations

import functools
import logging
import re
import warnings

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

pytest.importorskip("sklearn")
pytest.importorskip("onnxruntime")
from sklearn import ensemble as ske, tree as skt  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import Normalizer, StandardScaler  # noqa: E402

from conftest import DATASETS  # noqa: E402
from fastml import InputError, MethodUnavailableError, Predictor, ir  # noqa: E402
from fastml.backends import get_backend  # noqa: E402
from fastml.converters import import_model  # noqa: E402
from fastml.converters.onnx_export import tree_onnx  # noqa: E402

PROBA_ATOL = 1e-5
VALUE_RTOL = 1e-5
METHODS = ("predict", "predict_proba", "decision_function", "score_samples")


@pytest.fixture(autouse=True, scope="module")
def _one_openmp_thread():
    """HistGradientBoosting predicts with OpenMP; on a shared 2-core machine its
    spinning threads make each call take seconds."""
    with threadpool_limits(limits=1, user_api="openmp"):
        yield


# --------------------------------------------------------------------------- models

def _with_nan(X, seed=0, rate=0.1):
    X = X.copy()
    X[np.random.default_rng(seed).random(X.shape) < rate] = np.nan
    return X


def _categorical():
    """Column 0: categories 0..5 (HistGradientBoosting's set splits), NaN in 10% of it."""
    X, y = DATASETS["3 classes"]()
    rng = np.random.default_rng(7)
    X = X.copy()
    X[:, 0] = (np.searchsorted([-1, 2, 7], y) * 2 + rng.integers(0, 2, len(y))) % 6
    X[rng.random(len(y)) < 0.1, 0] = np.nan
    return X, y


def _lgb(kind, **kw):
    lgb = pytest.importorskip("lightgbm")
    cls = lgb.LGBMClassifier if kind == "classifier" else lgb.LGBMRegressor
    return cls(n_estimators=10, num_leaves=8, n_jobs=1, verbose=-1, **kw)


def _xgb(kind, **kw):
    xgb = pytest.importorskip("xgboost")
    cls = xgb.XGBClassifier if kind == "classifier" else xgb.XGBRegressor
    return cls(n_estimators=10, max_depth=3, n_jobs=1, **kw)


_RF = dict(n_estimators=8, max_depth=6, random_state=0)
#: name -> (make estimator, data set, fit on data with 10% NaN)
CASES = {
    "RandomForestClassifier binary": (lambda: ske.RandomForestClassifier(**_RF), "binary", True),
    "RandomForestClassifier 3 classes": (lambda: ske.RandomForestClassifier(**_RF), "3 classes", True),
    "ExtraTreesClassifier 3 classes": (lambda: ske.ExtraTreesClassifier(**_RF), "3 classes", False),
    "DecisionTreeClassifier 3 classes": (lambda: skt.DecisionTreeClassifier(max_depth=6, random_state=0),
                                         "3 classes", True),
    "RandomForestRegressor": (lambda: ske.RandomForestRegressor(**_RF), "regression", True),
    "RandomForestRegressor 3 targets": (lambda: ske.RandomForestRegressor(**_RF), "3 targets", False),
    "ExtraTreesRegressor": (lambda: ske.ExtraTreesRegressor(**_RF), "regression", False),
    "DecisionTreeRegressor": (lambda: skt.DecisionTreeRegressor(max_depth=6, random_state=0), "regression", True),
    "GradientBoostingClassifier binary": (
        lambda: ske.GradientBoostingClassifier(n_estimators=10, max_depth=3, random_state=0), "binary", False),
    "GradientBoostingClassifier 3 classes": (
        lambda: ske.GradientBoostingClassifier(n_estimators=10, max_depth=3, random_state=0), "3 classes", False),
    "GradientBoostingRegressor": (
        lambda: ske.GradientBoostingRegressor(n_estimators=10, max_depth=3, random_state=0), "regression", False),
    "HistGradientBoostingClassifier binary": (
        lambda: ske.HistGradientBoostingClassifier(max_iter=10, max_leaf_nodes=8), "binary", True),
    "HistGradientBoostingClassifier 3 classes": (
        lambda: ske.HistGradientBoostingClassifier(max_iter=10, max_leaf_nodes=8), "3 classes", True),
    "HistGradientBoostingClassifier categorical": (
        lambda: ske.HistGradientBoostingClassifier(max_iter=10, max_leaf_nodes=8, categorical_features=[0]),
        "categorical", False),
    "HistGradientBoostingRegressor": (
        lambda: ske.HistGradientBoostingRegressor(max_iter=10, max_leaf_nodes=8), "regression", True),
    "HistGradientBoostingRegressor poisson": (
        lambda: ske.HistGradientBoostingRegressor(max_iter=10, max_leaf_nodes=8, loss="poisson"), "counts", True),
    "GradientBoostingClassifier exponential loss": (
        lambda: ske.GradientBoostingClassifier(n_estimators=10, max_depth=3, loss="exponential", random_state=0),
        "binary", False),
    "IsolationForest": (lambda: ske.IsolationForest(n_estimators=10, random_state=0), "3 classes", True),
    "LGBMClassifier binary": (lambda: _lgb("classifier"), "binary", True),
    "LGBMClassifier 3 classes": (lambda: _lgb("classifier"), "3 classes", True),
    "LGBMRegressor": (lambda: _lgb("regressor"), "regression", True),
    "LGBMClassifier binary sigmoid=2": (lambda: _lgb("classifier", sigmoid=2.0), "binary", True),
    "LGBMRegressor poisson": (lambda: _lgb("regressor", objective="poisson"), "counts", True),
    "XGBRegressor gamma": (lambda: _xgb("regressor", objective="reg:gamma"), "counts", True),
    "XGBClassifier binary": (lambda: _xgb("classifier"), "binary 0/1", True),
    "XGBClassifier 3 classes": (lambda: _xgb("classifier"), "3 classes 0..2", True),
    "XGBRegressor": (lambda: _xgb("regressor"), "regression", True),
}

_DATA = {
    "categorical": _categorical,
    "binary 0/1": lambda: (DATASETS["binary"]()[0], (DATASETS["binary"]()[1] == "pos").astype(int)),
    "counts": lambda: (DATASETS["regression"]()[0], np.exp(DATASETS["regression"]()[1] / np.std(DATASETS["regression"]()[1]))),
    "3 classes 0..2": lambda: (DATASETS["3 classes"]()[0], np.searchsorted([-1, 2, 7], DATASETS["3 classes"]()[1])),
}

#: known disagreements of a converter with the source, by (case name prefix, test)
_SKL2ONNX_NAN = (
    "skl2onnx writes every node of a scikit-learn tree with nodes_missing_value_tracks_true = 0 and "
    "ignores tree_.missing_go_to_left, so ONNX Runtime sends NaN to the false (right) branch where "
    "scikit-learn sends it where training decided: rows with NaN get other leaves")
_ONNXMLTOOLS_THRESHOLDS = (
    "onnxmltools rounds LightGBM's float64 thresholds to the nearest float32; where that rounds up, "
    "x equal to the rounded threshold goes left in ONNX Runtime (x <= float32(t)) and right in "
    "LightGBM (x <= t in float64)")
KNOWN = {
    ("RandomForest", "nan"): _SKL2ONNX_NAN, ("ExtraTrees", "nan"): _SKL2ONNX_NAN,
    ("DecisionTree", "nan"): _SKL2ONNX_NAN, ("IsolationForest", "nan"): _SKL2ONNX_NAN,
    ("LGBM", "thresholds"): _ONNXMLTOOLS_THRESHOLDS,
}


#: cases whose graph fastml writes itself (tree_onnx: exact thresholds) although their library's
#: models otherwise go through onnxmltools (which ignores LightGBM's sigmoid parameter)
FASTML_WRITER = {"LGBMClassifier binary sigmoid=2"}


def _known(request, name: str, test: str) -> None:
    for (prefix, t), reason in KNOWN.items():
        if t == test and name.startswith(prefix) and name not in FASTML_WRITER:
            request.applymarker(pytest.mark.xfail(strict=True, reason=reason))


class Case:
    def __init__(self, name):
        make, data, nan = CASES[name]
        X, y = _DATA[data]() if data in _DATA else DATASETS[data]()
        self.name, self.X = name, X
        est = make()
        if nan:
            X = _with_nan(X, seed=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.est = est.fit(X) if name == "IsolationForest" else est.fit(X, y)
        self.ens = ir.as_pipeline(import_model(self.est)).estimator
        self.pred = Predictor(self.est, backend="onnxruntime", n_threads=1)

    @property
    def methods(self):
        return [m for m in METHODS if m in self.ens.methods()]

    def inputs(self, dtype, n=200, seed=0):
        rng = np.random.default_rng(seed)
        mu, sd = np.nanmean(self.X, axis=0), np.nanstd(self.X, axis=0)
        X = mu + sd * rng.standard_normal((n, self.X.shape[1]))
        if self.name.endswith("categorical"):  # known, unknown, negative and fractional categories
            X[:, 0] = rng.choice([0, 1, 2, 3, 4, 5, 6, 40, -1, 2.5], n)
        return X.astype(dtype)


@functools.lru_cache(maxsize=None)
def case(name) -> Case:
    return Case(name)


def magnitude(ens: ir.TreeEnsemble) -> float:
    if ens.post == "isolation":
        return 1.0
    leaf = np.abs(np.asarray(ens.value)).max(axis=1)
    per_tree = np.maximum.reduceat(leaf, np.asarray(ens.tree_offsets[:-1]))
    total = per_tree.sum() / (ens.n_trees if ens.average else 1)
    base = 0.0 if ens.base_score is None else float(np.abs(ens.base_score).max())
    return 1.0 + base + float(total)


def source(est, method: str, X):
    """The source library's answer; LightGBM and XGBoost name decision_function differently."""
    if method == "decision_function" and not hasattr(est, method):
        module = type(est).__module__
        if module.startswith("lightgbm"):
            return est.predict(X, raw_score=True)
        if module.startswith("xgboost"):
            return est.predict(X, output_margin=True)
    return getattr(est, method)(X)


def margin(c: Case, X) -> np.ndarray:
    if c.ens.post == "isolation":
        return np.abs(c.est.decision_function(X))
    if hasattr(c.est, "predict_proba"):
        top2 = np.sort(c.est.predict_proba(X), axis=1)[:, -2:]
        return top2[:, 1] - top2[:, 0]
    d = np.asarray(source(c.est, "decision_function", X))
    if d.ndim == 1:
        return np.abs(d)
    top2 = np.sort(d, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def check(c: Case, X, what: str, pred=None, methods=None) -> int:
    """Every method (of ``pred``, default the case's Predictor) against the source; returns the
    count of rows with a margin within rounding."""
    low = 0
    scale = VALUE_RTOL * magnitude(c.ens)
    pred = c.pred if pred is None else pred
    for method in c.methods if methods is None else methods:
        want = np.asarray(source(c.est, method, X))
        got = getattr(pred, method)(X)
        assert got.shape == want.shape, f"{what} {method}: shape {got.shape} != {want.shape}"
        if method == "predict" and (c.ens.is_classifier or c.ens.post == "isolation"):
            assert got.dtype == want.dtype, f"{what} {method}: dtype {got.dtype} != {want.dtype}"
            m = margin(c, X)
            below = PROBA_ATOL if hasattr(c.est, "predict_proba") else scale
            differ = got != want
            wrong = differ & (m >= below)
            assert not wrong.any(), (f"{what} {method}: {int(wrong.sum())} of {len(X)} labels differ; row "
                                     f"{int(np.argmax(wrong))}: got {got[wrong][0]!r}, want {want[wrong][0]!r}, "
                                     f"margin {m[wrong][0]:.3g}")
            low = max(low, int((m < below).sum()))
            continue
        assert got.dtype == np.float64, f"{what} {method}: dtype {got.dtype}"
        atol = PROBA_ATOL if method == "predict_proba" else scale
        err = np.abs(got - want.astype(np.float64))
        bad = ~(err <= atol + VALUE_RTOL * np.abs(want)) & ~(np.isnan(got) & np.isnan(want))
        assert not bad.any(), (f"{what} {method}: {int(bad.sum())} of {bad.size} values differ; first at "
                               f"{np.argwhere(bad)[0].tolist()}: got {got[bad][0]!r}, want {want[bad][0]!r} "
                               f"(atol {atol:.3g})")
    assert low <= len(X) // 20, f"{what}: {low} rows have a margin within float32 rounding"
    return low


# --------------------------------------------------------------------------- parity

@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", list(CASES))
def test_matches_source(name, dtype, record_property):
    c = case(name)
    record_property("low_margin_rows", check(c, c.inputs(dtype), f"{name} {np.dtype(dtype).name}"))


def threshold_rows(c: Case, dtype, seed=2) -> np.ndarray:
    """Rows with one feature at a split threshold: the float32 nearest to it, or the float32 just
    below or above (float64 input: also the float64 threshold itself)."""
    ens = c.ens
    X = c.inputs(np.float64, seed=seed)
    split = np.zeros(ens.n_nodes, np.uint8) if ens.split is None else np.asarray(ens.split)
    # (a split learned on missing values alone has threshold +inf: no finite row sits on it)
    nodes = np.flatnonzero((np.asarray(ens.left) >= 0) & (split != ir.SPLIT_MEMBER)
                           & np.isfinite(np.asarray(ens.threshold)))
    rng = np.random.default_rng(seed + 1)
    pick = rng.choice(nodes, len(X))
    t = np.asarray(ens.threshold)[pick]
    t32 = t.astype(np.float32)
    candidates = [t32, np.nextafter(t32, np.float32(np.inf)), np.nextafter(t32, np.float32(-np.inf))]
    if dtype == np.float64:
        candidates.append(t)
    which = rng.integers(0, len(candidates), len(X))
    X[np.arange(len(X)), np.asarray(ens.feature)[pick]] = np.choose(which, [v.astype(np.float64)
                                                                            for v in candidates])
    return X.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", list(CASES))
def test_rows_at_split_thresholds(name, dtype, request):
    _known(request, name, "thresholds")
    c = case(name)
    check(c, threshold_rows(c, dtype), f"{name} at thresholds")


def _accepts(c: Case, kind: str) -> bool:
    """Whether the source takes NaN / inf in every column."""
    return c.ens.allow_nan if kind == "NaN" else c.ens.allow_inf and c.ens.inf_refused is None


@pytest.mark.parametrize("name", list(CASES))
def test_nan_rows_follow_the_source(name, request):
    c = case(name)
    if not _accepts(c, "NaN"):
        pytest.skip(f"{name} refuses NaN (test_nonfinite_input_is_refused_like_the_source)")
    _known(request, name, "nan")
    check(c, _with_nan(c.inputs(np.float32, seed=4), seed=5, rate=0.15), f"{name} with NaN")


@pytest.mark.parametrize("name", list(CASES))
def test_infinite_values_follow_the_source(name):
    c = case(name)
    if not _accepts(c, "inf"):
        pytest.skip(f"{name} refuses inf (test_nonfinite_input_is_refused_like_the_source)")
    X = c.inputs(np.float32, seed=6)
    rng = np.random.default_rng(7)
    X[rng.random(X.shape) < 0.15] = np.float32(np.inf)
    X[rng.random(X.shape) < 0.15] = np.float32(-np.inf)
    check(c, X, f"{name} with inf")


_NONFINITE = {"NaN": (np.nan, "Input X contains NaN"),
              "inf": (np.inf, "Input X contains infinity or a value too large for dtype('float32')")}


@pytest.mark.parametrize("kind", list(_NONFINITE))
@pytest.mark.parametrize("name", list(CASES))
def test_nonfinite_input_is_refused_like_the_source(name, kind):
    c = case(name)
    if _accepts(c, kind):
        pytest.skip(f"{name} accepts {kind} (test_*_follow_the_source)")
    value, words = _NONFINITE[kind]
    X = c.inputs(np.float32, n=5)
    X[3, 0] = value  # column 0: the categorical one where there is one
    with pytest.raises(ValueError, match=re.escape(words[len("Input X "):])), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c.est.predict(X)  # (scikit-learn's OrdinalEncoder says "Input contains ...")
    for method in c.methods:
        with pytest.raises(InputError, match=re.escape(f"{c.ens.name}: {words}")):
            getattr(c.pred, method)(X)


def test_inf_in_a_numeric_column_of_a_categorical_histgradientboosting():
    c = case("HistGradientBoostingClassifier categorical")
    X = c.inputs(np.float32, n=5)
    X[2, 1] = np.inf
    np.testing.assert_array_equal(c.pred.predict(X), c.est.predict(X))


# --------------------------------------------------------------------------- methods and dtypes

@pytest.mark.parametrize("name", list(CASES))
def test_methods_the_model_lacks_are_unavailable(name):
    """Through Predictor and through the backend itself (Predictor checks the IR first)."""
    c = case(name)
    backend = get_backend("onnxruntime")(c.pred.ir, estimator=c.est, n_threads=1)
    X = c.inputs(np.float32, n=2)
    for method in METHODS:
        if method in c.methods:
            continue
        for obj in (c.pred, backend):
            with pytest.raises(MethodUnavailableError, match=method) as info:
                getattr(obj, method)(X)
            assert isinstance(info.value, AttributeError)


def test_float64_input_without_a_float64_graph_is_logged(caplog):
    """onnxmltools writes float32 graphs only: float64 input runs on one, and the log says so."""
    pytest.importorskip("lightgbm")
    X, y = DATASETS["binary"]()
    p = Predictor(_lgb("classifier").fit(X, y), backend="onnxruntime", n_threads=1)
    with caplog.at_level(logging.WARNING, logger="fastml"):
        p.predict_proba(X.astype(np.float64))
    assert any("no float64 ONNX graph" in r.getMessage() and "float32" in r.getMessage() for r in caplog.records)
    assert p.backend_info["onnxruntime"]["graph"] == "OnnxMLTools"


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", [n for n in CASES if n != "IsolationForest"])
def test_tree_graph_written_from_the_ir_decides_like_the_source(name, dtype):
    """``tree_onnx`` (what fastml writes for HistGradientBoosting) on every model, as an ONNX file
    run by the backend: rows at thresholds and NaN rows included, where skl2onnx and onnxmltools
    disagree with their sources (see ``KNOWN``). A file's graph has no raw-score twin, so
    decision_function is not compared here."""
    c = case(name)
    backend = get_backend("onnxruntime")(c.pred.ir, onnx_model=tree_onnx(c.ens, dtype=dtype), n_threads=1)
    X = threshold_rows(c, dtype, seed=11)
    if c.ens.allow_nan:
        X = _with_nan(X, seed=12)
    check(c, X, f"{name} tree_onnx", pred=backend, methods=[m for m in ("predict", "predict_proba")
                                                           if m in c.methods])


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", [n for n in CASES if n != "IsolationForest"])
def test_tree_graph_written_from_the_ir_reads_back_and_runs_on_native(name, dtype):
    """The other way round: ``from_onnx`` reads what ``tree_onnx`` writes (base score, average,
    Sigmoid / Softmax, ArgMax or sign, Gather of the class labels), so a saved model runs on the
    native kernels too, deciding like the source."""
    from fastml.converters import from_onnx

    c = case(name)
    proto = tree_onnx(c.ens, dtype=dtype)
    model = from_onnx(proto)
    est = ir.as_pipeline(model).estimator
    assert (est.is_classifier, est.predict_rule) == (c.ens.is_classifier, c.ens.predict_rule)
    native = get_backend("native")(model, n_threads=1)
    if c.ens.is_classifier and c.est.classes_.dtype.kind == "U":
        # an ONNX string tensor reads back as an object array of the same labels
        assert native.predict(c.inputs(dtype, seed=1)[:3]).dtype == object
        native = _LabelsAs(native, c.est.classes_.dtype)
    X = threshold_rows(c, dtype, seed=13)
    if c.ens.allow_nan:
        X = _with_nan(X, seed=14)
    check(c, X, f"{name} tree_onnx -> from_onnx", pred=native,
          methods=[m for m in ("predict", "predict_proba") if m in c.methods])
    raw = from_onnx(tree_onnx(c.ens, dtype=dtype, raw_scores=True))
    assert "predict" in ir.as_pipeline(raw).estimator.methods()


class _LabelsAs:
    def __init__(self, backend, dtype):
        self.b, self.dtype = backend, dtype

    def predict(self, X):
        return self.b.predict(X).astype(self.dtype)

    def predict_proba(self, X):
        return self.b.predict_proba(X)


def test_histgradientboosting_is_written_by_fastml_and_runs_float64_exactly():
    """skl2onnx 1.20 cannot convert HistGradientBoosting with onnx >= 1.18; fastml writes the graph
    from its IR, with a float64 graph whose decisions and sums are scikit-learn's."""
    c = case("HistGradientBoostingClassifier 3 classes")
    assert c.pred.backend_info["onnxruntime"]["graph"] == "fastml"
    X = _with_nan(c.inputs(np.float64, seed=8), seed=9)
    np.testing.assert_allclose(c.pred.decision_function(X), c.est.decision_function(X), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(c.pred.predict(X), c.est.predict(X))


# --------------------------------------------------------------------------- pipelines

def _pipeline(steps, final, data="3 classes", scale=1.0):
    X, y = DATASETS[data]()
    X = X * scale
    return make_pipeline(*steps, final).fit(X, y), X


def test_scaler_passes_nan_to_a_tree_that_accepts_it():
    est, X = _pipeline([StandardScaler()], ske.HistGradientBoostingClassifier(max_iter=5, max_leaf_nodes=8))
    p = Predictor(est, backend="onnxruntime", n_threads=1)
    Z = _with_nan(X[:50].astype(np.float32), seed=10)
    np.testing.assert_array_equal(p.predict(Z), est.predict(Z))
    np.testing.assert_allclose(p.predict_proba(Z), est.predict_proba(Z), atol=PROBA_ATOL)


@pytest.mark.parametrize("steps,kind", [([StandardScaler()], "inf"), ([Normalizer()], "NaN")],
                         ids=["StandardScaler refuses inf", "Normalizer refuses NaN"])
def test_preprocessing_refuses_what_the_tree_would_accept(steps, kind):
    est, X = _pipeline(steps, ske.HistGradientBoostingClassifier(max_iter=5, max_leaf_nodes=8))
    value, words = _NONFINITE[kind]
    Z = X[:5].astype(np.float32)
    Z[2, 3] = value
    with pytest.raises(ValueError, match=re.escape(words)):
        est.predict(Z)
    with pytest.raises(InputError, match=re.escape(words)):
        Predictor(est, backend="onnxruntime", n_threads=1).predict(Z)


@pytest.mark.parametrize("final,refused", [(ske.RandomForestClassifier(n_estimators=3, random_state=0), True),
                                           (ske.HistGradientBoostingClassifier(max_iter=5), False)],
                         ids=["RandomForest refuses", "HistGradientBoosting accepts"])
def test_float32_overflow_inside_the_scaler_is_judged_by_the_tree(final, refused):
    """A finite 3.4e38 becomes inf in a float32 StandardScaler (columns with a standard deviation
    below 1): scikit-learn's forest refuses the transformed X, its HistGradientBoosting predicts
    with it; so must fastml."""
    est, X = _pipeline([StandardScaler()], final, scale=0.1)
    Z = X[:4].astype(np.float32)
    Z[1] = np.finfo(np.float32).max
    p = Predictor(est, backend="onnxruntime", n_threads=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if refused:
            words = "Input X contains infinity or a value too large for dtype('float32')"
            with pytest.raises(ValueError, match=re.escape(words)):
                est.predict(Z)
            with pytest.raises(InputError, match=re.escape(words)):
                p.predict(Z)
        else:
            np.testing.assert_array_equal(p.predict(Z), est.predict(Z))
            np.testing.assert_allclose(p.predict_proba(Z), est.predict_proba(Z), atol=PROBA_ATOL)
