"""Lossless quantization of tree ensembles (threshold indexes, ``fastml.ir_qtrees``).

The quantized model must answer exactly as the float model, bit for bit: the
same leaves (``apply``), the same raw sums, labels and probabilities, on rows
that sit on, just above and just below every threshold (float32 and float64
neighbours), NaN, +-inf and +-1e300, for float32 and float64 input, 1 and 2
threads, batch sizes around the kernel's lockstep groups and blocks. Against
fastml's float native backend the comparison is exact; against the source
library it is what the float backend's own tests require (labels and leaves
exact, probabilities within ``PROBA_ATOL``).
"""
from __future__ import annotations

import zlib

import numpy as np
import pytest

from fastml import Predictor, ir, quantize
from fastml.backends.native import ForestNative
from fastml.backends.native_qtrees import QTreesNative
from fastml.errors import InvalidModelError, UnsupportedModelError
from fastml.ir_qtrees import QTrees, quantize_trees

from test_tree_kernels import CASES, edge_inputs, random_ensemble

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # 1e300 -> f32

PROBA_ATOL = 1e-12   # boosted probabilities: scipy's expit / sklearn's softmax vs exp (an ulp or two)
SIZES = (1, 2, 7, 8, 9, 31, 32, 33, 64, 65, 100, 301)


def _no_categories(est: ir.TreeEnsemble) -> ir.TreeEnsemble:
    split = np.asarray(est.split).copy()
    split[split == ir.SPLIT_MEMBER] = ir.SPLIT_LEQ
    return ir.replace(est, split=split, cat_offset=None, cat_nwords=None, cat_bits=None).validate()


def _same(a, b):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# ---------------------------------------------------------------------- random ensembles
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("n_threads", [1, 2])
def test_random_ensembles_match_the_float_kernel(case, n_threads):
    est = _no_categories(random_ensemble(zlib.crc32(case.encode()) % 1000, **CASES[case]))
    # two features no split uses: their bins are 0 (or NaN's)
    est = ir.replace(est, n_features=est.n_features + 2).validate()
    flt, q = ForestNative(est, n_threads=n_threads), QTreesNative(quantize_trees(est), n_threads=n_threads)
    for dtype in (np.float32, np.float64):
        X = edge_inputs(est, 301, seed=2, dtype=dtype)
        for n in SIZES:
            _same(q.apply(X[:n]), flt.apply(X[:n]))
            _same(q.raw(X[:n]), flt.raw(X[:n]))


def test_cuts_are_the_folded_thresholds():
    est = _no_categories(random_ensemble(5, compare="float32"))
    q = quantize_trees(est)
    leaf = np.asarray(est.left) < 0
    off = q.cut_offsets
    for f in range(est.n_features):
        c = q.cuts[off[f]:off[f + 1]]
        assert np.all(np.diff(c) > 0)
        assert np.all(c.astype(np.float32) == c)  # float32 comparison: float32 cuts
    at = off[np.where(leaf, 0, est.feature)] + np.maximum(q.node_cut, 0)
    _same(q.cuts[at][~leaf], q.ensemble.threshold[~leaf])
    assert np.all(q.node_cut[leaf] == -1)
    assert q.dequantized() is q.ensemble


def test_category_splits_and_impossible_splits_are_refused():
    est = random_ensemble(1)
    assert np.any(np.asarray(est.split) == ir.SPLIT_MEMBER)
    with pytest.raises(UnsupportedModelError, match="category-set splits"):
        quantize(est)
    base = _no_categories(random_ensemble(2, compare="float64"))
    i = int(np.flatnonzero(np.asarray(base.left) >= 0)[0])
    thr, split, miss = base.threshold.copy(), base.split.copy(), base.missing_left.copy()
    thr[i], split[i], miss[i] = -np.inf, ir.SPLIT_LT, False
    never = ir.replace(base, threshold=thr, split=split, missing_left=miss).validate()
    with pytest.raises(UnsupportedModelError, match="sends no value left"):
        quantize_trees(never)


def test_malformed_quantized_models_are_refused():
    q = quantize_trees(_no_categories(random_ensemble(3)))
    bad_cut = q.node_cut.copy()
    bad_cut[0] = 10_000
    with pytest.raises(InvalidModelError, match="cut index"):
        QTrees(ensemble=q.ensemble, cuts=q.cuts, cut_offsets=q.cut_offsets, node_cut=bad_cut).validate()
    with pytest.raises(InvalidModelError, match="strictly increasing"):
        QTrees(ensemble=q.ensemble, cuts=q.cuts[::-1].copy(), cut_offsets=q.cut_offsets,
               node_cut=q.node_cut).validate()
    with pytest.raises(InvalidModelError, match="cut_offsets"):
        QTrees(ensemble=q.ensemble, cuts=q.cuts, cut_offsets=q.cut_offsets[:-1].copy(),
               node_cut=q.node_cut).validate()


# ---------------------------------------------------------------------- source libraries
def _data(n_features=8, n=600, seed=0, classes=2, nan=False):
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=n, n_features=n_features, n_informative=5, n_classes=classes,
                               random_state=seed)
    X = X.astype(np.float32).astype(np.float64)
    if nan:
        X[np.random.default_rng(seed).random(X.shape) < 0.1] = np.nan
    return X, y


def _probe(est_ir: ir.TreeEnsemble, X: np.ndarray, allow_nonfinite: bool) -> np.ndarray:
    """Threshold-adjacent rows of the model, random rows, and (where the model takes them)
    NaN, +-inf and +-1e300."""
    rows = edge_inputs(est_ir, 400, seed=7, dtype=np.float64)
    rows[:, :] = np.where(np.abs(rows) > 40, 0.0, rows)  # category codes and extremes out ...
    if allow_nonfinite:  # ... and back in where the model takes them
        pool = np.array([np.nan, np.inf, -np.inf, 1e300, -1e300, -0.0])
        mask = np.random.default_rng(8).random(rows.shape) < 0.1
        rows[mask] = np.random.default_rng(9).choice(pool, size=int(mask.sum()))
    else:
        rows = np.where(np.isfinite(rows), rows, 0.0)
    return np.vstack([rows, X[:100]])


def _sklearn_models():
    from sklearn import ensemble as ske

    X, y = _data()
    X3, y3 = _data(classes=3, seed=1)
    Xn, yn = _data(nan=True, seed=2)
    return {
        "RandomForestClassifier": (ske.RandomForestClassifier(n_estimators=12, max_depth=6, random_state=0)
                                   .fit(X3, y3), X3),
        "ExtraTreesRegressor": (ske.ExtraTreesRegressor(n_estimators=8, max_depth=7, random_state=0)
                                .fit(X, X[:, 0] + y), X),
        "GradientBoostingClassifier": (ske.GradientBoostingClassifier(n_estimators=15, max_depth=3,
                                                                      random_state=0).fit(X3, y3), X3),
        "HistGradientBoostingClassifier": (ske.HistGradientBoostingClassifier(max_iter=15, random_state=0)
                                           .fit(Xn, yn), Xn),
        "IsolationForest": (ske.IsolationForest(n_estimators=10, random_state=0).fit(X), X),
        # the scaled sigmoid (expit(2 raw)) and the exp of a log link, on both kernels
        "GradientBoostingClassifier exponential": (
            ske.GradientBoostingClassifier(n_estimators=10, max_depth=3, loss="exponential", random_state=0)
            .fit(X, y), X),
        "HistGradientBoostingRegressor poisson": (
            ske.HistGradientBoostingRegressor(max_iter=10, loss="poisson", random_state=0)
            .fit(X, np.exp(0.3 * X[:, 0])), X),
    }


SKLEARN = ("RandomForestClassifier", "ExtraTreesRegressor", "GradientBoostingClassifier",
           "HistGradientBoostingClassifier", "IsolationForest", "GradientBoostingClassifier exponential",
           "HistGradientBoostingRegressor poisson")


@pytest.fixture(scope="module")
def sklearn_models():
    return _sklearn_models()


def _check_against(src, X, dtype, n_threads, source_proba=None):
    """Quantized vs float native (exact) on every method, and vs the source library."""
    flt = Predictor(src, backend="native", n_threads=n_threads)
    q = Predictor(src, backend="native", n_threads=n_threads, quantize="int8", calibration=X)
    assert isinstance(ir.as_pipeline(q.ir).estimator, QTrees)
    rep = q.quantization_report
    assert rep.max_abs_diff == 0 and rep.mean_abs_diff == 0
    assert rep.agreement in (None, 1.0)
    assert 0 < rep.bytes_quantized < rep.bytes_float
    with np.errstate(over="ignore"):
        Xd = np.ascontiguousarray(X, dtype=dtype)
    for method in sorted(flt._methods & {"predict", "predict_proba", "decision_function", "apply",
                                          "score_samples"}):
        for n in (1, 7, 33, len(Xd)):
            _same(getattr(q, method)(Xd[:n]), getattr(flt, method)(Xd[:n]))
    _same(q.predict(Xd), src.predict(Xd))
    if hasattr(src, "apply") and not hasattr(src, "booster_"):
        _same(q.apply(Xd), np.asarray(src.apply(Xd)).reshape(len(Xd), -1))  # boosting: (n, stages, K)
    if source_proba is not None:
        np.testing.assert_allclose(q.predict_proba(Xd), source_proba(Xd), rtol=0, atol=PROBA_ATOL)
    return q


@pytest.mark.parametrize("name", SKLEARN)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sklearn_models_quantize_exactly(sklearn_models, name, dtype):
    src, Xtr = sklearn_models[name]
    est_ir = Predictor(src, backend="native").ir
    X = _probe(est_ir, Xtr, allow_nonfinite=est_ir.allow_nan and est_ir.allow_inf)
    if not est_ir.allow_nan:
        X = np.where(np.isnan(X), 0.0, X)
    proba = src.predict_proba if hasattr(src, "predict_proba") else None
    q = _check_against(src, X, dtype, n_threads=1 if dtype is np.float32 else 2, source_proba=proba)
    if name == "IsolationForest":
        with np.errstate(over="ignore"):
            Xd = X.astype(dtype)
        _same(q.decision_function(Xd), src.decision_function(Xd))


def test_pipeline_with_scaler_quantizes_the_trees():
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = _data(seed=4)
    pipe = make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=5, max_depth=5,
                                                                  random_state=0)).fit(X, y)
    q = Predictor(pipe, backend="native", quantize="int8", calibration=X)
    assert isinstance(q.ir, ir.Pipeline) and isinstance(q.ir.estimator, QTrees)
    _same(q.predict_proba(X), pipe.predict_proba(X))


def test_report_and_sizes_without_rows():
    from sklearn.ensemble import RandomForestRegressor

    X, y = _data(seed=5)
    qm, rep = quantize(RandomForestRegressor(n_estimators=4, max_depth=5, random_state=0).fit(X, y))
    assert isinstance(qm, QTrees) and rep.rows == 0 and rep.agreement is None
    assert rep.bytes_quantized < rep.bytes_float
    assert "lossless" in str(rep)


# ---------------------------------------------------------------------- LightGBM, XGBoost
def test_lightgbm_quantizes_exactly():
    lgb = pytest.importorskip("lightgbm")
    X, y = _data(nan=True, seed=6)
    src = lgb.LGBMClassifier(n_estimators=20, num_leaves=15, verbose=-1, n_jobs=1).fit(X, y)
    est_ir = Predictor(src, backend="native").ir
    Xp = _probe(est_ir, X, allow_nonfinite=True)
    for dtype, nt in ((np.float32, 1), (np.float64, 2)):
        _check_against(src, Xp, dtype, nt, source_proba=lambda Z: src.predict_proba(Z))
    reg = lgb.LGBMRegressor(n_estimators=10, num_leaves=7, verbose=-1, n_jobs=1).fit(X, np.nan_to_num(X[:, 1]) + y)
    _check_against(reg, _probe(Predictor(reg, backend="native").ir, X, True), np.float64, 1)


def test_xgboost_quantizes_exactly():
    xgb = pytest.importorskip("xgboost")
    X, y = _data(nan=True, seed=7, classes=3)
    src = xgb.XGBClassifier(n_estimators=10, max_depth=4, n_jobs=1, tree_method="hist").fit(X, y)
    est_ir = Predictor(src, backend="native").ir
    Xp = _probe(est_ir, X, allow_nonfinite=True)
    # XGBoost refuses inf (and float32 overflow): the source sees those as NaN, fastml sees them all
    Xs = np.where(np.abs(Xp) > 1e30, np.nan, Xp)
    flt = Predictor(src, backend="native")
    q = Predictor(src, backend="native", quantize="int8")
    with np.errstate(over="ignore"):
        for dtype in (np.float32, np.float64):
            _same(q.predict_proba(Xp.astype(dtype)), flt.predict_proba(Xp.astype(dtype)))
            _same(q.apply(Xp.astype(dtype)), flt.apply(Xp.astype(dtype)))
    Xp = Xs
    for dtype, nt in ((np.float32, 2), (np.float64, 1)):
        # XGBoost adds leaf values in float32: probabilities agree within its rounding
        q = _check_against(src, Xp, dtype, nt)
        np.testing.assert_allclose(q.predict_proba(Xp.astype(dtype)), src.predict_proba(Xp.astype(dtype)),
                                   rtol=0, atol=1e-6)
