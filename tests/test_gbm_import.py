"""LightGBM and XGBoost -> ``TreeEnsemble``: the IR, walked by the slow
reference in ``reference_trees.py``, against the libraries' own predictions.

Tolerances
----------
* **LightGBM** adds leaf values in float64 in tree order, exactly like the
  reference: raw scores and probabilities agree within ``rtol = atol =
  1e-12``. In practice they are bit-identical, except for the probability
  (numpy's ``exp`` vs libm's) and multiclass ``rf`` (leaves scaled by ``K``,
  see ``gbm_import``). Labels and leaves are identical.
* **XGBoost** adds float32 leaf values to a float32 margin, in tree order.
  The test first replays that float32 sum from the IR's leaves and requires
  it to equal XGBoost's margin *bit for bit*. That checks the structure,
  leaf values, base score and order. The IR's float64 raw then differs from
  that sum by the float32 rounding of the running sums: at most ``2**-24 *
  sum_t |S_t|`` per row, ``S_t`` the float32 partial sums. That bound is
  computed per row and used as the tolerance. XGBoost's probabilities are
  float32 sigmoid/softmax of that margin. Their tolerance is the raw bound
  times the slope (<= 1/4 for the sigmoid, ``2 p_i`` for softmax) plus a
  few float32 ulps of the computation. Labels must agree except on rows
  whose decision margin is within that tolerance (counted: none occur here).

Inputs: values on, one ulp (float64 and float32) above and below every
threshold of the model, LightGBM's zero band ``+-1e-35``, ``+-0.0``, NaN,
``+-inf``, categories with fractions, negative, huge. Plus rows with 15%
NaN, 5% of each infinity and 15% zeros, as float64 and float32.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import reference_trees as rt
from converters import import_model
from converters.gbm_import import K_ZERO, convert
from fastml import Predictor, ir
from fastml.errors import NotFittedError, UnsupportedModelError

U32 = 2.0 ** -24  # float32 unit roundoff


@pytest.fixture(scope="module")
def lgb():
    return pytest.importorskip("lightgbm")


@pytest.fixture(scope="module")
def xgb():
    return pytest.importorskip("xgboost")


# --------------------------------------------------------------------------- data


def _data(n_classes=2, seed=0, zeros=0.0, cat=False, n=300):
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=n, n_features=6, n_informative=4, n_redundant=0,
                               n_classes=n_classes, n_clusters_per_class=1, random_state=seed)
    rng = np.random.default_rng(seed)
    X = X * rng.uniform(0.5, 3.0, 6) + rng.uniform(-1.0, 1.0, 6)
    if zeros:
        X[rng.random(X.shape) < zeros] = 0.0
    if cat:  # column 2: an informative category 0..9
        X[:, 2] = (3 * y + rng.integers(0, 4, n)) % 10
    X[rng.random(n) < 0.1, 1] = np.nan
    return X, y


CAT_VALUES = [-1.5, -1.0, -0.5, -1e-40, -0.0, 0.0, 1e-40, 0.5, 0.99, 10.0, 11.5, 31.0, 32.0, 33.0,
              64.5, 1e9, 2.0 ** 24, 2.0 ** 31, 2.0 ** 31 + 7, -2.0 ** 31, np.nan, np.inf, -np.inf]


def _probes(ens: ir.TreeEnsemble, X: np.ndarray, cat_features=(), seed=0) -> np.ndarray:
    """Rows probing every threshold, the zero band, missing values and categories."""
    rng = np.random.default_rng(seed)
    base = X[rng.integers(0, len(X), 64)]
    pairs = set()
    leaf = np.asarray(ens.left) < 0
    split = np.zeros(ens.n_nodes, np.uint8) if ens.split is None else np.asarray(ens.split)
    numeric = ~leaf & (split != ir.SPLIT_MEMBER)
    for f, t in zip(np.asarray(ens.feature)[numeric], np.asarray(ens.threshold)[numeric]):
        t32 = np.float32(t)
        for v in (t, np.nextafter(t, -np.inf), np.nextafter(t, np.inf),
                  t32, np.nextafter(t32, np.float32(-np.inf)), np.nextafter(t32, np.float32(np.inf))):
            pairs.add((int(f), float(v)))
    for f in range(ens.n_features):
        for v in (0.0, -0.0, K_ZERO, -K_ZERO, 1e-36, -1e-36, 2 * K_ZERO, -2 * K_ZERO,
                  np.nan, np.inf, -np.inf):
            pairs.add((f, v))
    for f in cat_features:
        for c in range(12):  # a category and its float32 and float64 neighbours
            pairs.update({(f, float(c)), (f, float(np.nextafter(np.float32(c), np.float32(-1)))),
                          (f, float(np.nextafter(np.float32(c), np.float32(99)))),
                          (f, float(np.nextafter(float(c), -1.0))), (f, float(np.nextafter(float(c), 99.0))),
                          (f, c - 1e-12)})
        pairs.update((f, v) for v in CAT_VALUES)
    rows = np.repeat(base, -(-len(pairs) // len(base)), axis=0)[:len(pairs)].copy()
    for i, (f, v) in enumerate(sorted(pairs, key=repr)):
        rows[i, f] = v
    R = X[rng.integers(0, len(X), 200)].copy()
    u = rng.random(R.shape)
    R[u < 0.15] = np.nan
    R[(u >= 0.15) & (u < 0.2)] = np.inf
    R[(u >= 0.2) & (u < 0.25)] = -np.inf
    R[(u >= 0.25) & (u < 0.4)] = 0.0
    return np.vstack([rows, R])


DTYPES = (np.float64, np.float32)


# --------------------------------------------------------------------------- LightGBM parity


def _check_lightgbm(model, X, cat_features=(), kind=None):
    """Reference on the IR vs LightGBM on probe rows, float64 and float32."""
    ens, leaf_map = convert(model, leaf_map=True)
    assert import_model(model).n_nodes == ens.n_nodes
    booster = getattr(model, "booster_", model)
    # leaf j of a tree with L leaves is IR node (L - 1) + j
    for t, tree in enumerate(booster.dump_model()["tree_info"][:ens.n_trees]):
        L = int(tree["num_leaves"])
        assert_array_equal(leaf_map[ens.tree_offsets[t] + L - 1 + np.arange(L)], np.arange(L))
    P = _probes(ens, X, cat_features)
    n_iter = ens.n_trees // ens.n_targets
    for dtype in DTYPES:
        Xd = P.astype(dtype)
        leaves = booster.predict(Xd, pred_leaf=True).reshape(len(Xd), -1)
        apply = rt.tree_apply(ens, Xd)
        assert_array_equal(leaf_map[np.asarray(ens.tree_offsets[:-1]) + apply], leaves)
        src_raw = booster.predict(Xd, raw_score=True).reshape(len(Xd), -1)
        if ens.average:  # LightGBM's raw_score is the undivided sum
            src_raw = src_raw / n_iter
        assert_allclose(rt.tree_raw(ens, Xd), src_raw, rtol=1e-12, atol=1e-12)
        if ens.is_classifier:
            proba = rt.tree_predict_proba(ens, Xd)
            if hasattr(model, "predict_proba"):
                assert_allclose(proba, model.predict_proba(Xd), rtol=1e-12, atol=1e-12)
                assert_array_equal(rt.tree_predict(ens, Xd), model.predict(Xd))
            else:  # Booster: predict_proba holds Booster.predict
                p = booster.predict(Xd)
                assert_allclose(proba[:, 1] if p.ndim == 1 else proba, p, rtol=1e-12, atol=1e-12)
        else:
            assert_allclose(rt.tree_predict(ens, Xd), model.predict(Xd), rtol=1e-12, atol=1e-12)
    return ens


@pytest.fixture(scope="module")
def binary_data():
    return _data(2, seed=0)


@pytest.mark.parametrize("params", [
    {},
    {"zero_as_missing": True},
    {"use_missing": False},
    {"boosting_type": "rf", "bagging_freq": 1, "bagging_fraction": 0.7},
], ids=["default", "zero_as_missing", "use_missing=False", "rf"])
def test_lgbm_classifier_binary(lgb, params):
    X, y = _data(2, seed=0, zeros=0.2)
    m = lgb.LGBMClassifier(n_jobs=1, n_estimators=12, num_leaves=7, min_child_samples=5, verbose=-1,
                           **params).fit(X, np.array(["no", "yes"])[y])
    ens = _check_lightgbm(m, X)
    assert ens.post == "logistic" and ens.predict_rule == "argmax_proba" and ens.compare == "float64"
    assert ens.average == (params.get("boosting_type") == "rf")
    if params.get("zero_as_missing"):
        # the model has zero-as-missing splits that needed the rewrite with copies
        L = sum(int(t["num_leaves"]) for t in m.booster_.dump_model()["tree_info"])
        assert ens.n_nodes > 2 * L - ens.n_trees


@pytest.mark.parametrize("objective,boosting", [("multiclass", "gbdt"), ("multiclassova", "gbdt"),
                                                ("multiclass", "rf")])
def test_lgbm_classifier_multiclass(lgb, objective, boosting):
    X, y = _data(3, seed=1, zeros=0.1)
    extra = {"bagging_freq": 1, "bagging_fraction": 0.7} if boosting == "rf" else {}
    m = lgb.LGBMClassifier(n_jobs=1, objective=objective, boosting_type=boosting, n_estimators=6, num_leaves=5,
                           min_child_samples=5, verbose=-1, **extra).fit(X, np.array([-1, 2, 7])[y])
    ens = _check_lightgbm(m, X)
    assert ens.n_targets == 3 and ens.post == ("softmax" if objective == "multiclass" else "logistic")


def test_lgbm_categorical(lgb):
    X, y = _data(2, seed=2, cat=True)
    m = lgb.LGBMClassifier(n_jobs=1, n_estimators=10, num_leaves=6, min_child_samples=5, min_data_per_group=5,
                           cat_smooth=1, verbose=-1).fit(X, y, categorical_feature=[2])
    ens = _check_lightgbm(m, X, cat_features=[2])
    assert np.any(np.asarray(ens.split) == ir.SPLIT_MEMBER) and not ens.cat_exact


def test_lgbm_regressor_and_ranker(lgb):
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True)
    X, y = X[:200], y[:200]
    ens = _check_lightgbm(lgb.LGBMRegressor(n_jobs=1, n_estimators=10, num_leaves=6, verbose=-1).fit(X, y), X)
    assert ens.flat and not ens.is_classifier
    r = lgb.LGBMRanker(n_jobs=1, n_estimators=5, num_leaves=4, min_child_samples=5, verbose=-1)
    r.fit(X, (y > np.median(y)).astype(int), group=[100, 100])
    _check_lightgbm(r, X)


def test_lgbm_train_booster(lgb):
    X, y = _data(3, seed=3)
    b = lgb.train({"num_threads": 1, "objective": "multiclass", "num_class": 3, "num_leaves": 5, "verbose": -1},
                  lgb.Dataset(X, y), num_boost_round=5)
    ens = _check_lightgbm(b, X)
    assert_array_equal(ens.classes, [0, 1, 2])
    X2, y2 = _data(2, seed=4)
    b2 = lgb.train({"num_threads": 1, "objective": "binary", "num_leaves": 5, "verbose": -1}, lgb.Dataset(X2, y2), 5)
    _check_lightgbm(b2, X2)
    b3 = lgb.train({"num_threads": 1, "objective": "regression", "num_leaves": 5, "verbose": -1}, lgb.Dataset(X2, X2[:, 0]), 5)
    assert _check_lightgbm(b3, X2).flat


def test_lgbm_early_stopping_uses_best_iteration(lgb):
    """A booster that kept training past its best iteration predicts with the
    best one (the scikit-learn wrapper drops the extra trees itself)."""
    X, y = _data(2, seed=5, n=400)
    train, valid = lgb.Dataset(X[:200], y[:200]), lgb.Dataset(X[200:], y[200:])
    b = lgb.train({"num_threads": 1, "objective": "binary", "learning_rate": 0.5, "num_leaves": 15, "min_data_in_leaf": 3,
                   "verbose": -1}, train, 200, valid_sets=[valid], keep_training_booster=True,
                  callbacks=[lgb.early_stopping(3, verbose=False)])
    assert 0 < b.best_iteration < b.current_iteration()
    ens = _check_lightgbm(b, X)
    assert ens.n_trees == b.best_iteration


# --------------------------------------------------------------------------- LightGBM, hand-written trees


def _lgb_model_string(tree: str, objective="regression") -> str:
    return (f"tree\nversion=v4\nnum_class=1\nnum_tree_per_iteration=1\nlabel_index=0\nmax_feature_idx=1\n"
            f"objective={objective}\nfeature_names=a b\nfeature_infos=none none\n\n"
            f"Tree=0\n{tree}\nis_linear=0\nshrinkage=1\n\n\nend of trees\n")


def _stump(decision_type: int, threshold: float, cat: str = "") -> str:
    return (f"num_leaves=2\nnum_cat={1 if cat else 0}\nsplit_feature=0\nthreshold={threshold!r}\n"
            f"decision_type={decision_type}\nleft_child=-1\nright_child=-2\nleaf_value=1 2\n{cat}")


def test_lgbm_every_missing_rule_near_zero(lgb):
    """Each missing_type x default_left x threshold around LightGBM's zero band,
    on values at, inside and beyond the band (float64 and float32)."""
    z = K_ZERO
    thresholds = [-1.0, -2 * z, float(np.nextafter(-z, -1)), -z, -z / 2, 0.0, z / 2, z,
                  float(np.nextafter(z, 1)), 2 * z, 1.0]
    vals = {np.nan, np.inf, -np.inf, 0.0, -0.0, 0.5, -0.5}
    for t in thresholds:
        vals.update({t, float(np.nextafter(t, -np.inf)), float(np.nextafter(t, np.inf))})
    vals = np.array(sorted(vals, key=repr))
    X = np.column_stack([vals, np.ones_like(vals)])
    for mtype in (0, 1, 2):
        for default_left in (0, 1):
            for t in thresholds:
                b = lgb.Booster(model_str=_lgb_model_string(_stump((mtype << 2) | (default_left << 1), t)))
                ens = convert(b)
                for dtype in DTYPES:
                    Xd = X.astype(dtype)
                    got, want = rt.tree_raw(ens, Xd)[:, 0], b.predict(Xd)
                    bad = vals[got != want]
                    assert bad.size == 0, (mtype, default_left, t, bad)


def test_lgbm_categorical_nan_negative_and_huge(lgb):
    """A set holding categories 0 and 3: NaN goes right whatever missing_type
    says, -0.5 truncates to 0, negative and huge values go right."""
    vals = np.array(CAT_VALUES + [3.0, 3.9, 2.9, 4.0])
    X = np.column_stack([vals, np.zeros_like(vals)])
    for mtype in (0, 2):
        tree = _stump(1 | (mtype << 2), 0, cat="cat_boundaries=0 1\ncat_threshold=9")
        b = lgb.Booster(model_str=_lgb_model_string(tree))
        ens = convert(b)
        for dtype in DTYPES:
            assert_array_equal(rt.tree_raw(ens, X.astype(dtype))[:, 0], b.predict(X.astype(dtype)))
        # what LightGBM itself does, spelled out
        probe = np.array([[np.nan, -0.5, -1.0, 0.0, 3.9, 2.9, 2.0 ** 31, np.inf], np.zeros(8)]).T
        assert_array_equal(b.predict(probe), [2, 1, 2, 1, 1, 2, 2, 2])


# --------------------------------------------------------------------------- LightGBM refusals


def test_lgbm_refusals(lgb):
    X, y = _data(2, seed=6)
    with pytest.raises(UnsupportedModelError, match="objective 'cross_entropy'"):
        import_model(lgb.LGBMRegressor(n_jobs=1, n_estimators=2, objective="cross_entropy", verbose=-1)
                     .fit(X, (np.nan_to_num(X[:, 0]) > 0).astype(float)))
    with pytest.raises(UnsupportedModelError, match="linear trees"):
        Xf = np.nan_to_num(X)
        import_model(lgb.LGBMRegressor(n_jobs=1, n_estimators=2, linear_tree=True, verbose=-1).fit(Xf, Xf[:, 0]))
    with pytest.raises(UnsupportedModelError, match="reg_sqrt"):
        import_model(lgb.LGBMRegressor(n_jobs=1, n_estimators=2, reg_sqrt=True, verbose=-1).fit(X, X[:, 0] ** 2))


@pytest.mark.parametrize("objective", ["poisson", "gamma", "tweedie"])
def test_lgbm_log_link_objectives(lgb, objective):
    """predict = exp(raw score) (IR post "exp"), within 1e-12 of LightGBM's."""
    X, _ = _data(2, seed=7)
    y = np.exp(0.5 * np.nan_to_num(X[:, 0])) + 0.1
    m = lgb.LGBMRegressor(n_jobs=1, n_estimators=12, num_leaves=8, objective=objective, verbose=-1).fit(X, y)
    ens = _check_lightgbm(m, X)
    assert ens.post == "exp"
    assert_allclose(Predictor(m, backend="native").predict(X), m.predict(X), rtol=1e-12)


@pytest.mark.parametrize("objective", ["binary", "multiclassova"])
def test_lgbm_sigmoid_other_than_one(lgb, objective):
    """LightGBM's probability is 1 / (1 + exp(-sigmoid raw)): post "logistic" with that scale."""
    X, y = _data(2 if objective == "binary" else 3, seed=8)
    m = lgb.LGBMClassifier(n_jobs=1, n_estimators=10, num_leaves=8, objective=objective, sigmoid=2.5,
                           verbose=-1).fit(X, y)
    ens = _check_lightgbm(m, X)
    assert ens.logistic_scale == 2.5
    assert_allclose(Predictor(m, backend="native").predict_proba(X), m.predict_proba(X), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("objective", ["count:poisson", "reg:gamma", "reg:tweedie"])
def test_xgb_log_link_objectives(xgb, objective):
    """predict = exp(margin), base margin log(base_score) in float32 (the margin replays bit for bit)."""
    X, _ = _data(2, seed=12)
    y = np.exp(0.5 * np.nan_to_num(X[:, 0])) + 0.1
    m = xgb.XGBRegressor(n_jobs=1, n_estimators=8, max_depth=3, objective=objective).fit(X, y)
    ens = _check_xgboost(m, X)
    assert ens.post == "exp"


def test_unfitted_models_raise_not_fitted(lgb, xgb):
    for est in (lgb.LGBMClassifier(n_jobs=1, ), lgb.LGBMRegressor(n_jobs=1, ), xgb.XGBClassifier(n_jobs=1, ), xgb.XGBRegressor(n_jobs=1, )):
        with pytest.raises(NotFittedError, match="not fitted"):
            import_model(est)


def test_importing_fastml_does_not_import_the_libraries():
    code = ("import sys, fastml, converters; "
            "assert 'lightgbm' not in sys.modules and 'xgboost' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


# --------------------------------------------------------------------------- LightGBM, memory


def _grown_tree_text(rng, n_leaves: int, n_features: int) -> str:
    """One LightGBM tree as model text, grown like LightGBM grows trees: a random leaf
    becomes a split with two leaves, until there are ``n_leaves``."""
    kids = np.zeros((n_leaves - 1, 2), dtype=np.int64)
    slot = [None]                      # slot[j]: (split, side) that leaf j hangs from
    for s, j in enumerate(rng.integers(0, np.arange(1, n_leaves)).tolist()):
        if slot[j] is not None:
            kids[slot[j]] = s
        kids[s] = ~j, ~len(slot)        # leaf j is written as ~j
        slot[j] = (s, 0)
        slot.append((s, 1))
    words = lambda a: " ".join(map(repr, np.asarray(a).tolist()))  # noqa: E731
    return (f"num_leaves={n_leaves}\nnum_cat=0\nsplit_feature={words(rng.integers(0, n_features, n_leaves - 1))}\n"
            f"threshold={words(rng.standard_normal(n_leaves - 1))}\ndecision_type={words(np.full(n_leaves - 1, 2))}\n"
            f"left_child={words(kids[:, 0])}\nright_child={words(kids[:, 1])}\n"
            f"leaf_value={words(rng.standard_normal(n_leaves) * 0.05)}\n")


def _convert_near_the_ir(model, monkeypatch, chunk_attr: str, rng, n_features: int):
    """``convert(model)`` in chunks of 64 KiB of model text (``chunk_attr``) and blocks of
    8,192 nodes, with the peak of memory traced while it ran at most 2x the IR's array
    bytes; the IR, its native Predictor and 300 rows with 10% NaN to check it on."""
    import tracemalloc

    from converters import gbm_import

    from fastml import Predictor

    monkeypatch.setattr(gbm_import, chunk_attr, 1 << 16)
    monkeypatch.setattr(ir, "TREE_BLOCK_NODES", 1 << 13)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        start = tracemalloc.get_traced_memory()[0]
        ens = convert(model)
        peak = tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()
    ir_bytes = sum(a.nbytes for a in (ens.tree_offsets, ens.feature, ens.threshold, ens.left, ens.right,
                                      ens.missing_left, ens.value, ens.split))
    assert peak <= 2 * ir_bytes, f"peak {peak / 1e6:.2f} MB for {ir_bytes / 1e6:.2f} MB of IR arrays"
    X = rng.standard_normal((300, n_features))
    X[rng.random(X.shape) < 0.1] = np.nan
    return ens, Predictor(ens, backend="native"), X


def test_lgbm_conversion_memory_stays_near_the_ir(lgb, monkeypatch):
    """Converting never holds the whole model text or a second copy of the node arrays.

    What may be alive at the peak, by design: the IR's arrays (1x), the pieces of at most
    one block of trees (``TREE_BLOCK_NODES``) and one chunk of model text
    (``LGB_CHUNK_BYTES``) with its parsed numbers, and the 1 MiB buffer LightGBM's
    ``model_to_string`` allocates per call. With chunks of 64 KiB and blocks of 8,192
    nodes that is under 2.5 MB (the buffer, a chunk's text, lines and numbers, a block's
    pieces and checks), less than 1x the IR's 4.6 MB here: so 2x the IR. Reading the
    whole text at once cannot fit: LightGBM writes it as about 1.1x the IR and its
    wrapper holds it two or three times over (about 4x the IR before this was fixed)."""
    n_trees, n_leaves, n_features = 300, 255, 20
    rng = np.random.default_rng(7)
    trees = "".join(f"Tree={i}\n{_grown_tree_text(rng, n_leaves, n_features)}is_linear=0\nshrinkage=1\n\n\n"
                    for i in range(n_trees))
    names = " ".join(f"f{i}" for i in range(n_features))
    booster = lgb.Booster(model_str=(
        f"tree\nversion=v4\nnum_class=1\nnum_tree_per_iteration=1\nlabel_index=0\n"
        f"max_feature_idx={n_features - 1}\nobjective=binary sigmoid:1\nfeature_names={names}\n"
        f"feature_infos={' '.join(['[-5:5]'] * n_features)}\n\n{trees}end of trees\n"))
    ens, p, X = _convert_near_the_ir(booster, monkeypatch, "LGB_CHUNK_BYTES", rng, n_features)
    assert ens.n_nodes == n_trees * (2 * n_leaves - 1)
    for dtype in DTYPES:
        Xd = X.astype(dtype)
        assert_allclose(p.decision_function(Xd), booster.predict(Xd, raw_score=True), rtol=1e-12, atol=1e-12)
        assert_allclose(p.predict_proba(Xd)[:, 1], booster.predict(Xd), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("params", [{"zero_as_missing": True}, {"objective": "multiclass", "num_class": 3}],
                         ids=["zero_as_missing+categorical", "multiclass"])
def test_lgbm_in_small_chunks_and_blocks(lgb, monkeypatch, params):
    """The model text a tree at a time and the arrays grown, checked and planned a few trees
    at a time give LightGBM's predictions and leaves (the native kernel and the reference)."""
    from converters import gbm_import

    from fastml import Predictor

    X, y = _data(3 if "num_class" in params else 2, seed=8, zeros=0.3, cat=True)
    b = lgb.train(dict({"num_threads": 1, "objective": "binary", "num_leaves": 15, "verbose": -1}, **params),
                  lgb.Dataset(X, y, categorical_feature=[2]), num_boost_round=12)
    monkeypatch.setattr(gbm_import, "LGB_CHUNK_BYTES", 1)
    monkeypatch.setattr(ir, "TREE_BLOCK_NODES", 7)
    ens = _check_lightgbm(b, X, cat_features=[2])
    assert ens.cat_bits is not None
    p = Predictor(b, backend="native")
    P = _probes(ens, X, [2])
    for dtype in DTYPES:
        Xd = P.astype(dtype)
        raw = b.predict(Xd, raw_score=True).reshape(len(Xd), -1)
        assert_allclose(p.decision_function(Xd).reshape(len(Xd), -1), raw, rtol=1e-12, atol=1e-12)
        leaves = b.predict(Xd, pred_leaf=True).reshape(len(Xd), -1)
        _, leaf_map = convert(b, leaf_map=True)
        assert_array_equal(leaf_map[np.asarray(ens.tree_offsets[:-1]) + p.apply(Xd)], leaves)


# --------------------------------------------------------------------------- XGBoost parity


def _xgb_replay(ens: ir.TreeEnsemble, apply: np.ndarray):
    """XGBoost's float32 margin replayed from the IR, and the per-row bound on
    how far the IR's float64 sum may be from it."""
    n = apply.shape[0]
    acc = np.tile(np.asarray(ens.base_score, dtype=np.float32), (n, 1))
    bound = np.zeros_like(acc, dtype=np.float64)
    value = np.asarray(ens.value)[:, 0].astype(np.float32)
    target = np.zeros(ens.n_trees, int) if ens.tree_target is None else np.asarray(ens.tree_target)
    for t in range(ens.n_trees):
        k = int(target[t])
        acc[:, k] += value[int(ens.tree_offsets[t]) + apply[:, t]]
        bound[:, k] += U32 * np.abs(acc[:, k])
    return acc, bound * (1 + 1e-6) + 1e-300


def _check_xgboost(model, X, cat_features=(), dmatrix_kw=None, renumbered=False):
    xgb = pytest.importorskip("xgboost")
    ens, leaf_map = convert(model, leaf_map=True)
    assert import_model(model).n_nodes == ens.n_nodes
    sk = hasattr(model, "get_booster")
    booster = model.get_booster() if sk else model
    P = _probes(ens, X, cat_features)
    for dtype in DTYPES:
        Xd = P.astype(dtype)
        margin = (model.predict(Xd, output_margin=True) if sk
                  else booster.inplace_predict(Xd, predict_type="margin")).reshape(len(Xd), -1)
        apply = rt.tree_apply(ens, Xd)
        replay, bound = _xgb_replay(ens, apply)
        assert_array_equal(replay, margin)                      # bit for bit
        raw = rt.tree_raw(ens, Xd)
        assert np.all(np.abs(raw - margin) <= bound)
        finite = ~np.any(np.isinf(Xd), axis=1)                  # a DMatrix refuses inf
        dm = xgb.DMatrix(Xd[finite], nthread=1, **(dmatrix_kw or {}))
        leaves = (model.apply(Xd[finite]) if sk and not dmatrix_kw
                  else booster.predict(dm, pred_leaf=True,
                                       iteration_range=(0, model.best_iteration + 1) if sk and
                                       hasattr(booster, "best_iteration") and
                                       "best_iteration" in booster.attributes() else (0, 0)))
        leaves = np.asarray(leaves).reshape(int(finite.sum()), -1).astype(np.int64)
        assert_array_equal(leaf_map[np.asarray(ens.tree_offsets[:-1]) + apply[finite]], leaves)
        if not cat_features and not renumbered:  # no guards, copies or pruned nodes: XGBoost's ids
            assert_array_equal(apply[finite], leaves)
        if not ens.is_classifier:
            out = np.asarray(model.predict(Xd) if sk else booster.inplace_predict(Xd), dtype=np.float64)
            out = out.reshape(raw.shape[0], -1).squeeze()
            tol = bound.squeeze()
            if ens.post == "exp":  # XGBoost's float32 exp of its float32 margin: relative errors
                tol = np.abs(out) * (np.expm1(tol) + 2.0 ** -22)
            assert np.all(np.abs(rt.tree_predict(ens, Xd) - out) <= tol)
            continue
        proba = rt.tree_predict_proba(ens, Xd)
        src = model.predict_proba(Xd) if sk else booster.inplace_predict(Xd)
        src = np.asarray(src, dtype=np.float64)
        if src.ndim == 1:
            src = np.column_stack([1 - src, src])
        if ens.post == "logistic":
            tol = 0.25 * bound + 4 * U32
            near = np.abs(raw[:, 0]) <= bound[:, 0] + 4 * U32
        else:
            spread = raw.max(axis=1, keepdims=True) - raw
            tol = proba * (2 * bound.max(axis=1, keepdims=True) + (spread + 4) * U32) + 1e-30
            top2 = np.sort(raw, axis=1)[:, -2:]
            near = top2[:, 1] - top2[:, 0] <= 2 * bound.max(axis=1) + 4 * U32
        assert np.all(np.abs(proba - src) <= tol)
        if sk:
            differ = rt.tree_predict(ens, Xd) != model.predict(Xd)
            assert not np.any(differ & ~near)
            assert near.sum() == 0  # none on these data; counted so a change shows
    return ens


def test_xgb_classifier_binary(xgb):
    X, y = _data(2, seed=0)
    m = xgb.XGBClassifier(n_jobs=1, n_estimators=12, max_depth=3, learning_rate=0.5).fit(X, y)
    ens = _check_xgboost(m, X)
    assert ens.compare == "float32" and ens.predict_rule == "gt0" and ens.post == "logistic"
    assert np.all(np.asarray(ens.split)[np.asarray(ens.left) >= 0] == ir.SPLIT_LT)


def test_xgb_classifier_multiclass_and_forest(xgb):
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    ens = _check_xgboost(xgb.XGBClassifier(n_jobs=1, n_estimators=6, max_depth=3).fit(X, y), X)
    assert ens.n_targets == 3 and ens.post == "softmax"
    _check_xgboost(xgb.XGBClassifier(n_jobs=1, n_estimators=3, max_depth=2, num_parallel_tree=3,
                                     subsample=0.8, colsample_bynode=0.8).fit(X, y), X)
    _check_xgboost(xgb.XGBRFClassifier(n_jobs=1, n_estimators=4, max_depth=3).fit(X, y), X)
    _check_xgboost(xgb.XGBClassifier(n_jobs=1, n_estimators=4, max_depth=2, objective="multi:softmax").fit(X, y), X)


def test_xgb_regressor_and_ranker(xgb):
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True)
    X, y = X[:200], y[:200]
    ens = _check_xgboost(xgb.XGBRegressor(n_jobs=1, n_estimators=10, max_depth=3).fit(X, y), X)
    assert ens.flat and ens.base_score[0] != 0.0
    ens = _check_xgboost(xgb.XGBRegressor(n_jobs=1, n_estimators=4, max_depth=2, objective="reg:quantileerror",
                                          quantile_alpha=np.array([0.2, 0.8])).fit(X, y), X)
    assert ens.n_targets == 2 and not ens.flat
    r = xgb.XGBRanker(n_jobs=1, n_estimators=4, max_depth=2).fit(X, (y > np.median(y)).astype(int), qid=np.repeat([0, 1], 100))
    _check_xgboost(r, X)


def test_xgb_train_booster(xgb):
    X, y = _data(2, seed=7)
    b = xgb.train({"nthread": 1, "objective": "binary:logistic", "max_depth": 3}, xgb.DMatrix(X, y), 6)
    ens = _check_xgboost(b, X)
    assert ens.is_classifier and ens.n_targets == 1
    X3, y3 = _data(3, seed=8)
    b3 = xgb.train({"nthread": 1, "objective": "multi:softprob", "num_class": 3, "max_depth": 2}, xgb.DMatrix(X3, y3), 4)
    assert _check_xgboost(b3, X3).n_targets == 3
    br = xgb.train({"nthread": 1, "objective": "reg:squarederror", "max_depth": 3}, xgb.DMatrix(X, X[:, 0]), 5)
    assert _check_xgboost(br, X).flat
    bd = xgb.train({"nthread": 1, "booster": "dart", "rate_drop": 0.0, "max_depth": 2}, xgb.DMatrix(X, X[:, 3]), 3)
    _check_xgboost(bd, X)


def test_xgb_early_stopping_uses_best_iteration(xgb):
    X, y = _data(2, seed=9, n=400)
    m = xgb.XGBClassifier(n_jobs=1, n_estimators=200, max_depth=4, learning_rate=0.8, early_stopping_rounds=3)
    m.fit(X[:200], y[:200], eval_set=[(X[200:], y[200:])], verbose=False)
    assert m.best_iteration + 1 < m.get_booster().num_boosted_rounds()
    ens = _check_xgboost(m, X)
    assert ens.n_trees == m.best_iteration + 1
    # a bare Booster predicts with every tree
    assert convert(m.get_booster()).n_trees == m.get_booster().num_boosted_rounds()


def _xgb_cat_model(xgb, onehot: bool):
    X, y = _data(2, seed=10, cat=True)
    ft = ["q", "q", "c", "q", "q", "q"]
    m = xgb.XGBClassifier(n_jobs=1, n_estimators=8, max_depth=3, enable_categorical=True, feature_types=ft,
                          max_cat_to_onehot=(64 if onehot else 1), tree_method="hist").fit(X, y)
    return m, X, ft


@pytest.mark.parametrize("onehot", [False, True], ids=["partition", "onehot"])
def test_xgb_categorical(xgb, onehot):
    m, X, ft = _xgb_cat_model(xgb, onehot)
    ens = _check_xgboost(m, X, cat_features=[2], dmatrix_kw={"feature_types": ft, "enable_categorical": True})
    split, inner = np.asarray(ens.split), np.asarray(ens.left) >= 0
    assert np.any(split == ir.SPLIT_MEMBER)
    # sets holding category 0 got an `x < 0` guard (and a copy of XGBoost's left subtree)
    assert np.any(inner & (split == ir.SPLIT_LT) & (np.asarray(ens.feature) == 2))


def test_xgb_categorical_float64_rounding(xgb):
    """XGBoost truncates float32(x): 3 - 1e-12 is category 3, not 2. The IR
    rounds first too (compare="float32" applies to set membership)."""
    m, X, ft = _xgb_cat_model(xgb, False)
    ens = convert(m)
    rows = np.repeat(X[:40], 11, axis=0)
    rows[:, 2] = np.tile(np.arange(1.0, 12.0), 40)  # (0 - 1e-12 is negative: no category)
    below = rows.copy()
    below[:, 2] -= 1e-12
    margin = m.predict(below, output_margin=True)
    assert_array_equal(margin, m.predict(rows, output_margin=True))
    assert not np.array_equal(margin, m.predict(rows - np.eye(6)[2], output_margin=True))
    assert_array_equal(_xgb_replay(ens, rt.tree_apply(ens, below))[0][:, 0], margin)


# --------------------------------------------------------------------------- XGBoost refusals


def test_xgb_refusals(xgb):
    X, y = _data(2, seed=11)
    Xf = np.nan_to_num(X)
    cases = [
        (xgb.XGBClassifier(n_jobs=1, n_estimators=2, booster="gblinear"), X, y, "booster 'gblinear'"),
        (xgb.XGBClassifier(n_jobs=1, n_estimators=8, booster="dart", rate_drop=0.5, skip_drop=0.0), X, y, "dart"),
        (xgb.XGBRegressor(n_jobs=1, n_estimators=2, objective="survival:cox"), X, np.abs(Xf[:, 0]) + 1,
         "survival:cox"),
        (xgb.XGBRegressor(n_jobs=1, n_estimators=2, objective="reg:logistic"), X, y, "reg:logistic"),
        (xgb.XGBClassifier(n_jobs=1, n_estimators=2, objective="binary:logitraw"), X, y, "binary:logitraw"),
        (xgb.XGBClassifier(n_jobs=1, n_estimators=2, missing=0.0), Xf, y, "missing=0.0"),
        (xgb.XGBRegressor(n_jobs=1, n_estimators=2, multi_strategy="multi_output_tree", tree_method="hist"), X,
         np.column_stack([y, y]), "vector leaves"),
    ]
    for est, Xt, yt, msg in cases:
        est.fit(Xt, yt)
        with pytest.raises(UnsupportedModelError, match=msg):
            import_model(est)


def test_convert_refuses_other_objects():
    with pytest.raises(UnsupportedModelError, match="cannot import builtins.object"):
        convert(object())


# --------------------------------------------------------------------------- XGBoost, memory


def _xgb_grown_model(xgb, rng, n_trees: int, n_leaves: int, n_features: int):
    """A ``binary:logistic`` Booster of random trees grown like XGBoost grows them: a random
    leaf becomes a split and its children take the next two node ids. XGBoost loads it from
    JSON (the rest of the document is a small trained model's)."""
    import json

    X = rng.standard_normal((50, n_features))
    small = xgb.train({"nthread": 1, "objective": "binary:logistic", "max_depth": 1},
                      xgb.DMatrix(X, X[:, 0] > 0.3), 1)
    doc = json.loads(bytes(small.save_raw(raw_format="json")))
    model = doc["learner"]["gradient_booster"]["model"]
    template = model["trees"][0]
    n = 2 * n_leaves - 1
    trees = []
    for t in range(n_trees):
        lc, rc, parents = np.full(n, -1), np.full(n, -1), np.full(n, 2147483647)
        leaves = [0]
        for k in range(1, n, 2):
            j = leaves.pop(int(rng.integers(len(leaves))))
            lc[j], rc[j], parents[k], parents[k + 1] = k, k + 1, j, j
            leaves += [k, k + 1]
        split = lc >= 0
        cond = np.where(split, rng.standard_normal(n), 0.05 * rng.standard_normal(n)).astype(np.float32)
        f32 = [float(v) for v in cond]   # the float32 values, exactly
        trees.append(dict(template, id=t, left_children=lc.tolist(), right_children=rc.tolist(),
                          parents=parents.tolist(), split_conditions=f32, base_weights=f32,
                          split_indices=np.where(split, rng.integers(0, n_features, n), 0).tolist(),
                          default_left=(split & (rng.random(n) < 0.5)).astype(int).tolist(),
                          split_type=[0] * n, loss_changes=[0.0] * n, sum_hessian=[1.0] * n,
                          tree_param=dict(template["tree_param"], num_nodes=str(n))))
    model.update(trees=trees, tree_info=[0] * n_trees, iteration_indptr=list(range(n_trees + 1)),
                 gbtree_model_param=dict(model["gbtree_model_param"], num_trees=str(n_trees)))
    return xgb.Booster(model_file=bytearray(json.dumps(doc).encode()))


def test_xgb_conversion_memory_stays_near_the_ir(xgb, monkeypatch):
    """Converting never holds the whole model's JSON, a Python object per node, or a second
    copy of the node arrays.

    What may be alive at the peak, by design: the IR's arrays (1x), one slice of the booster
    serialised as UBJSON (``XGB_CHUNK_BYTES``, about 34 bytes a node) with its numpy arrays
    (a few int64/float64 copies of each node field, under 150 bytes a node), the pieces of at
    most one block of trees (``TREE_BLOCK_NODES`` nodes at 30 bytes) and validate()'s block
    temporaries. With slices of 64 KiB and blocks of 8,192 nodes that is about 1-1.5 MB
    whatever the model's size, less than 1x the IR's 3.1 MB here: so 2x the IR. Parsing the
    whole model as one JSON document cannot fit: its text alone is about 3x the IR, and its
    Python lists hold a float or int object per node field (about 9x the IR before)."""
    n_trees, n_leaves, n_features = 200, 256, 20
    rng = np.random.default_rng(11)
    booster = _xgb_grown_model(xgb, rng, n_trees, n_leaves, n_features)
    ens, p, X = _convert_near_the_ir(booster, monkeypatch, "XGB_CHUNK_BYTES", rng, n_features)
    assert ens.n_trees == n_trees and ens.n_nodes == n_trees * (2 * n_leaves - 1)
    for dtype in DTYPES:
        Xd = X.astype(dtype)
        margin = booster.inplace_predict(Xd, predict_type="margin").reshape(-1, 1)
        apply = p.apply(Xd)
        assert_array_equal(apply, booster.predict(xgb.DMatrix(Xd, nthread=1), pred_leaf=True))
        replay, bound = _xgb_replay(ens, apply)
        assert_array_equal(replay, margin)                      # bit for bit
        raw = p.decision_function(Xd).reshape(-1, 1)
        assert np.all(np.abs(raw - margin) <= bound)
        src = booster.inplace_predict(Xd)
        assert np.all(np.abs(p.predict_proba(Xd)[:, 1] - src) <= 0.25 * bound[:, 0] + 4 * U32)


@pytest.mark.parametrize("kind", ["multiclass_forest_best_iteration", "categorical", "dart", "pruned"])
def test_xgb_in_small_slices_and_blocks(xgb, monkeypatch, kind):
    """The booster a slice of one iteration at a time and the arrays grown, checked and
    planned a few trees at a time give XGBoost's margins and leaves (the reference and the
    native kernel)."""
    import json

    from converters import gbm_import

    from fastml import Predictor

    monkeypatch.setattr(gbm_import, "XGB_CHUNK_BYTES", 1)
    monkeypatch.setattr(ir, "TREE_BLOCK_NODES", 7)
    cat, dm_kw = (), None
    if kind == "multiclass_forest_best_iteration":
        X, y = _data(3, seed=12, n=400)
        m = xgb.XGBClassifier(n_jobs=1, n_estimators=60, max_depth=3, num_parallel_tree=2, learning_rate=0.9,
                              subsample=0.8, early_stopping_rounds=2)
        m.fit(X[:200], y[:200], eval_set=[(X[200:], y[200:])], verbose=False)
        assert m.best_iteration + 1 < m.get_booster().num_boosted_rounds()
    elif kind == "categorical":
        m, X, ft = _xgb_cat_model(xgb, False)
        cat, dm_kw = [2], {"feature_types": ft, "enable_categorical": True}
    elif kind == "dart":
        # base_score 0: XGBoost's dart adds (base + leaf - base) * weight in float32, which is
        # the leaf (what the bit-for-bit replay adds) only when the base is 0
        X, y = _data(2, seed=13)
        m = xgb.train({"nthread": 1, "booster": "dart", "rate_drop": 0.0, "max_depth": 3, "base_score": 0.0},
                      xgb.DMatrix(X, y), 6)
    else:  # exact's pruner leaves deleted nodes in the arrays: renumbered, one tree at a time
        X, y = _data(2, seed=14)
        m = xgb.XGBRegressor(n_jobs=1, n_estimators=8, max_depth=5, gamma=20.0, tree_method="exact").fit(X, 5 * y)
        assert any(t["tree_param"]["num_deleted"] != "0" for t in
                   json.loads(bytes(m.get_booster().save_raw(raw_format="json")))["learner"]["gradient_booster"]
                   ["model"]["trees"])
    ens = _check_xgboost(m, X, cat_features=cat, dmatrix_kw=dm_kw, renumbered=kind == "pruned")
    if kind == "multiclass_forest_best_iteration":
        assert ens.n_trees == (m.best_iteration + 1) * 6
    P = _probes(ens, X, cat)
    p = Predictor(m, backend="native")
    sk = hasattr(m, "get_booster")
    for dtype in DTYPES:
        Xd = P.astype(dtype)
        margin = (m.predict(Xd, output_margin=True) if sk
                  else m.inplace_predict(Xd, predict_type="margin")).reshape(len(Xd), -1)
        _, bound = _xgb_replay(ens, rt.tree_apply(ens, Xd))
        raw = p.decision_function(Xd) if ens.is_classifier else p.predict(Xd)
        assert np.all(np.abs(raw.reshape(len(Xd), -1) - margin) <= bound)


def test_xgb_malformed_slices_raise_typed_errors(xgb):
    """Cut UBJSON and broken trees are InvalidModelError, naming what is wrong, on the
    numpy path as on the tree-by-tree one."""
    from converters.gbm_import import _UBJ, _xgb_trees

    from fastml.errors import InvalidModelError

    X, y = _data(2, seed=15)
    b = xgb.train({"nthread": 1, "objective": "binary:logistic", "max_depth": 2}, xgb.DMatrix(X, y), 2)
    raw = bytes(b[0:1].save_raw(raw_format="ubj"))
    assert _UBJ(raw).parse()["learner"]["gradient_booster"]["model"]["tree_info"] == [0]
    for cut in (0, 1, len(raw) // 3, len(raw) // 2, len(raw) - 1):
        with pytest.raises(InvalidModelError, match="malformed UBJSON"):
            _UBJ(raw[:cut]).parse()
    ok = dict(left_children=[1, -1, -1], right_children=[2, -1, -1], split_conditions=[0.5, 1.0, 2.0],
              split_indices=[3, 0, 0], default_left=[1, 0, 0], split_type=[0, 0, 0])
    piece, = _xgb_trees([ok, ok], with_origin=True)
    assert_array_equal(piece["left"], [1, -1, -1] * 2)
    assert_array_equal(piece["origin"], [-1, 1, 2] * 2)
    cases = [(dict(ok, left_children=[1, 0, -1]), "reached twice"),            # a cycle
             (dict(ok, right_children=[3, -1, -1]), "out of range"),
             (dict(ok, split_indices=[-2, 0, 0]), "feature id -2"),
             (dict(ok, default_left=[1, 0]), "3 left_children but 2 default_left"),
             ({k: v for k, v in ok.items() if k != "split_indices"}, "no 'split_indices'"),
             (dict(ok, split_type=[1, 0, 0]), "no 'categories_nodes'")]
    for tree, msg in cases:
        with pytest.raises(InvalidModelError, match=msg):
            _xgb_trees([ok, tree], with_origin=False)
