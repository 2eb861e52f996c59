"""scikit-learn's tree models through ``import_model``, against scikit-learn itself.

Every estimator is converted to a ``TreeEnsemble`` and evaluated with the slow
reference walker (``tests/reference_trees.py``), which follows the IR's
documented rules literally; its results must be scikit-learn's on float32 and
float64 input: rows sitting on, just above and just below split thresholds,
rows with 15% NaN, +-inf where scikit-learn accepts it, and random rows.

Exactness, stated once
----------------------
Labels, ``apply`` leaf ids, regressor predictions, forest probabilities,
boosting ``decision_function`` and IsolationForest ``score_samples`` /
``decision_function`` are compared for *exact* equality. They can be, because
the frontends store the very float64 numbers scikit-learn adds (class
fractions, ``learning_rate * value``, HistGradientBoosting's leaf values,
IsolationForest's ``depth + c(n) - 1``) and the IR adds them to its base in
tree order, which is scikit-learn's order: forests start from zeros and add
tree after tree (``n_jobs=None``) before dividing by the count, boosting starts
from the init/baseline prediction and adds stage after stage, IsolationForest
adds tree after tree and then applies ``-2 ** (-depths / denominator)``, the
same numpy operations. Each float64 operation is the same, so are the bits.

Only the probabilities of boosted models use a different formula: scikit-learn
applies scipy's ``expit`` and its own softmax, the reference
``1 / (1 + exp(-raw))`` and numpy's softmax. These differ by an ulp or two, so
``PROBA_ATOL`` (1e-12, absolute: probabilities lie in [0, 1]) is their tolerance.
"""
from __future__ import annotations

import contextlib
import functools
import warnings
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, strategies as st
from threadpoolctl import threadpool_limits

pytest.importorskip("sklearn")
from sklearn import ensemble as ske, tree as skt  # noqa: E402
from sklearn.dummy import DummyRegressor  # noqa: E402
from sklearn.linear_model import LinearRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

import reference_trees  # noqa: E402
from conftest import FAST_HYPOTHESIS  # noqa: E402
from fastml import ir  # noqa: E402
from fastml.converters import import_model  # noqa: E402
from fastml.errors import NotFittedError, UnsupportedModelError  # noqa: E402
from reference_trees import (tree_decision_function, tree_predict, tree_predict_proba,  # noqa: E402
                             tree_score_samples)

PROBA_ATOL = 1e-12


@pytest.fixture(autouse=True, scope="module")
def _one_openmp_thread():
    """HistGradientBoosting fits and predicts with OpenMP; on a shared 2-core
    machine its spinning threads make each call take seconds."""
    with threadpool_limits(limits=1, user_api="openmp"):
        yield

#: values of the column that HistGradientBoosting models treat as categorical
#: (codes 0..4 differ from the values, so the frontend's remapping is tested)
CATEGORIES = np.array([0.0, 2.0, 3.0, 7.0, 40.0])
CAT_COL = 4
N_FEATURES = 5


# --------------------------------------------------------------------------- data and models

def _data(task: str, nan: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    n = 240
    X = rng.normal(size=(n, N_FEATURES)) * [1.0, 3.0, 0.5, 10.0, 1.0] + [0.0, 1.0, -2.0, 5.0, 0.0]
    X[:, CAT_COL] = rng.choice(CATEGORIES, size=n)
    score = (X[:, 0] + 0.3 * X[:, 1] - X[:, 2] + 0.1 * X[:, 3] + np.isin(X[:, CAT_COL], [2.0, 40.0])
             + 0.3 * rng.normal(size=n))
    if nan:  # estimators that accept NaN learn a missing-value direction per split
        X[rng.random(X.shape) < 0.1] = np.nan
    if task == "binary":
        y = np.array(["no", "yes"])[(score > np.median(score)).astype(int)]
    elif task == "multiclass":
        y = np.array([-1, 2, 7, 11])[np.searchsorted(np.quantile(score, [0.25, 0.5, 0.75]), score)]
    elif task == "regression":
        y = 3.0 * score
    elif task == "positive":  # counts / positive amounts for the log-link losses
        y = np.exp(0.3 * score)
    else:  # multi-output regression
        y = np.column_stack([3.0 * score, np.sin(X[:, 0] if not nan else np.nan_to_num(X[:, 0])), -score])
    return X, y


def _hgb_cat(cls, **kw):
    return cls(categorical_features=[CAT_COL], random_state=0, **kw)


# name -> (factory, task, fitted on data with NaN)
MODELS = {
    "DecisionTreeClassifier binary": (
        lambda: skt.DecisionTreeClassifier(max_depth=8, random_state=0), "binary", True),
    "DecisionTreeClassifier multiclass max_features class_weight": (
        lambda: skt.DecisionTreeClassifier(max_depth=8, max_features=2, class_weight="balanced",
                                           random_state=0), "multiclass", True),
    "ExtraTreeClassifier multiclass": (
        lambda: skt.ExtraTreeClassifier(max_depth=8, random_state=0), "multiclass", True),
    "DecisionTreeRegressor": (lambda: skt.DecisionTreeRegressor(max_depth=8, random_state=0), "regression", True),
    "DecisionTreeRegressor multi-output": (
        lambda: skt.DecisionTreeRegressor(max_depth=6, random_state=0), "multi-output", True),
    "ExtraTreeRegressor multi-output": (
        lambda: skt.ExtraTreeRegressor(max_depth=6, random_state=0), "multi-output", True),
    "RandomForestClassifier binary max_features class_weight": (
        lambda: ske.RandomForestClassifier(n_estimators=10, max_depth=6, max_features=2,
                                           class_weight="balanced_subsample", random_state=0), "binary", True),
    "RandomForestClassifier multiclass": (
        lambda: ske.RandomForestClassifier(n_estimators=10, max_depth=6, random_state=0), "multiclass", True),
    "ExtraTreesClassifier binary": (
        lambda: ske.ExtraTreesClassifier(n_estimators=10, max_depth=6, random_state=0), "binary", True),
    "ExtraTreesClassifier multiclass": (
        lambda: ske.ExtraTreesClassifier(n_estimators=10, max_depth=6, random_state=0), "multiclass", False),
    "RandomForestRegressor": (
        lambda: ske.RandomForestRegressor(n_estimators=10, max_depth=6, max_features=0.5, random_state=0),
        "regression", True),
    "RandomForestRegressor multi-output": (
        lambda: ske.RandomForestRegressor(n_estimators=10, max_depth=6, random_state=0), "multi-output", True),
    "ExtraTreesRegressor multi-output": (
        lambda: ske.ExtraTreesRegressor(n_estimators=10, max_depth=6, random_state=0), "multi-output", False),
    "GradientBoostingClassifier binary": (
        lambda: ske.GradientBoostingClassifier(n_estimators=15, max_depth=3, random_state=0), "binary", False),
    "GradientBoostingClassifier multiclass subsample max_features": (
        lambda: ske.GradientBoostingClassifier(n_estimators=8, max_depth=3, subsample=0.8, max_features=3,
                                               random_state=0), "multiclass", False),
    "GradientBoostingClassifier init=zero early stopping": (
        lambda: ske.GradientBoostingClassifier(n_estimators=30, max_depth=2, init="zero", n_iter_no_change=2,
                                               validation_fraction=0.3, random_state=0), "binary", False),
    "GradientBoostingClassifier exponential loss": (
        lambda: ske.GradientBoostingClassifier(n_estimators=12, max_depth=3, loss="exponential", random_state=0),
        "binary", False),
    "GradientBoostingRegressor huber": (
        lambda: ske.GradientBoostingRegressor(n_estimators=15, max_depth=3, loss="huber", random_state=0),
        "regression", False),
    "GradientBoostingRegressor quantile init=DummyRegressor": (
        lambda: ske.GradientBoostingRegressor(n_estimators=10, max_depth=3, loss="quantile", alpha=0.8,
                                              init=DummyRegressor(strategy="median"), random_state=0),
        "regression", False),
    "HistGradientBoostingClassifier binary": (
        lambda: ske.HistGradientBoostingClassifier(max_iter=15, max_depth=5, random_state=0), "binary", True),
    "HistGradientBoostingClassifier multiclass categorical": (
        lambda: _hgb_cat(ske.HistGradientBoostingClassifier, max_iter=6, max_depth=4), "multiclass", True),
    "HistGradientBoostingClassifier binary categorical early stopping class_weight": (
        lambda: _hgb_cat(ske.HistGradientBoostingClassifier, max_iter=30, max_depth=4, early_stopping=True,
                         n_iter_no_change=2, validation_fraction=0.3, class_weight="balanced"), "binary", True),
    "HistGradientBoostingRegressor": (
        lambda: ske.HistGradientBoostingRegressor(max_iter=15, max_depth=5, random_state=0), "regression", True),
    "HistGradientBoostingRegressor categorical absolute_error": (
        lambda: _hgb_cat(ske.HistGradientBoostingRegressor, max_iter=10, max_depth=4, loss="absolute_error"),
        "regression", True),
    "HistGradientBoostingRegressor poisson": (
        lambda: ske.HistGradientBoostingRegressor(max_iter=12, max_depth=4, loss="poisson", random_state=0),
        "positive", True),
    "HistGradientBoostingRegressor gamma categorical": (
        lambda: _hgb_cat(ske.HistGradientBoostingRegressor, max_iter=10, max_depth=4, loss="gamma"),
        "positive", True),
    "HistGradientBoostingRegressor quantile": (
        lambda: ske.HistGradientBoostingRegressor(max_iter=10, loss="quantile", quantile=0.3, random_state=0),
        "regression", False),
    "IsolationForest": (lambda: ske.IsolationForest(n_estimators=15, random_state=0), "none", True),
    "IsolationForest max_features max_samples contamination": (
        lambda: ske.IsolationForest(n_estimators=15, max_features=0.6, max_samples=100, contamination=0.1,
                                    random_state=0), "none", False),
    "Pipeline(StandardScaler, RandomForestClassifier)": (
        lambda: make_pipeline(StandardScaler(), ske.RandomForestClassifier(n_estimators=8, max_depth=6,
                                                                           random_state=0)),
        "multiclass", False),
}
NAMES = tuple(MODELS)
#: models whose split thresholds live in the caller's feature space
PLAIN = tuple(n for n in NAMES if not n.startswith("Pipeline"))
#: models scikit-learn runs on NaN / on +-inf (test_nan_and_inf_flags_match_what_sklearn_accepts
#: checks these lists against scikit-learn and the IR)
TAKES_NAN = tuple(n for n in NAMES if not n.startswith("GradientBoosting"))
TAKES_INF = tuple(n for n in NAMES if n.startswith("IsolationForest")
                  or (n.startswith("HistGradientBoosting") and "categorical" not in n))


@functools.lru_cache(maxsize=None)
def fitted(name: str):
    make, task, nan = MODELS[name]
    X, y = _data("regression" if task == "none" else task, nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = make().fit(X, y) if task != "none" else make().fit(X)
    return est, import_model(est), X


def _ir(name: str) -> ir.TreeEnsemble:
    return ir.as_pipeline(fitted(name)[1]).estimator


def _final(est):
    return est[-1] if hasattr(est, "steps") else est


def _sklearn(fn, X):
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return fn(X)


def _sklearn_leaves(est, X) -> np.ndarray:
    """Leaf id per row and tree, from scikit-learn, in the IR's tree order."""
    final = _final(est)
    if final is not est:
        X = _sklearn(est[:-1].transform, X)
    if isinstance(final, ske.IsolationForest):
        X32 = _sklearn(lambda a: np.asarray(a, dtype=np.float32), X)
        subset = final._max_features != final.n_features_in_
        return np.column_stack([t.apply(X32[:, f] if subset else X32, check_input=False)
                                for t, f in zip(final.estimators_, final.estimators_features_)])
    leaves = _sklearn(final.apply, X)
    return leaves.reshape(X.shape[0], -1)  # trees: (n,); forests: (n, T); GB: (n, stages, K)


def _hgb_tree_values(est, X) -> np.ndarray:
    """Each HistGradientBoosting predictor's own output per row, in the IR's tree order."""
    Xp = est._preprocess_X(X, reset=False)
    known, f_idx_map = est._bin_mapper.make_known_categories_bitsets()
    return np.column_stack([p.predict(Xp, known, f_idx_map, 1)
                            for it in est._predictors for p in it])


@contextlib.contextmanager
def _walk_once():
    """Within one check, every reference method walks the trees for the same
    rows; the walk (``tree_apply``, pure Python) is most of this file's time, so
    it runs once per (model, rows) and the methods share its result."""
    real, seen = reference_trees.tree_apply, {}

    def tree_apply(model, X):
        X = np.asarray(X)
        key = (id(model), X.dtype.str, X.shape, X.tobytes())
        if key not in seen:
            seen[key] = (model, real(model, X))  # keeps the model alive: its id stays unique
        return seen[key][1].copy()

    with mock.patch.object(reference_trees, "tree_apply", tree_apply):
        yield tree_apply


def check_parity(name: str, X: np.ndarray) -> np.ndarray:
    """Assert parity on every method; return the leaves the reference reached."""
    with _walk_once():
        return _check_parity(name, X)


def _check_parity(name: str, X: np.ndarray) -> np.ndarray:
    est, model, _ = fitted(name)
    final = _final(est)
    np.testing.assert_array_equal(tree_predict(model, X), _sklearn(est.predict, X), err_msg="predict")
    boosted = isinstance(final, (ske.GradientBoostingClassifier, ske.HistGradientBoostingClassifier))
    if hasattr(final, "predict_proba"):
        got, want = tree_predict_proba(model, X), _sklearn(est.predict_proba, X)
        if boosted:  # expit / softmax formulas differ by an ulp (module docstring)
            np.testing.assert_allclose(got, want, rtol=0, atol=PROBA_ATOL, err_msg="predict_proba")
        else:
            np.testing.assert_array_equal(got, want, err_msg="predict_proba")
    if hasattr(final, "decision_function"):
        np.testing.assert_array_equal(tree_decision_function(model, X), _sklearn(est.decision_function, X),
                                      err_msg="decision_function")
    if hasattr(final, "score_samples"):
        np.testing.assert_array_equal(tree_score_samples(model, X), _sklearn(est.score_samples, X),
                                      err_msg="score_samples")
    leaves = reference_trees.tree_apply(model, X)
    if isinstance(final, (ske.HistGradientBoostingClassifier, ske.HistGradientBoostingRegressor)):
        # scikit-learn has no apply here: the leaf reached in every tree must hold
        # exactly what that tree's own predictor returns
        off = np.asarray(model.tree_offsets)[:-1]
        assert np.all(np.asarray(model.left)[off + leaves] == -1)
        np.testing.assert_array_equal(np.asarray(model.value)[off + leaves, 0], _hgb_tree_values(final, X),
                                      err_msg="leaf values per tree")
    else:
        np.testing.assert_array_equal(leaves, _sklearn_leaves(est, X), err_msg="apply")
    return leaves


# --------------------------------------------------------------------------- inputs

def _rows_like(X_train, n, rng) -> np.ndarray:
    """Random rows shaped like the training data; categorical values stay categories."""
    mu, sd = np.nanmean(X_train, axis=0), np.nanstd(X_train, axis=0)
    X = mu + sd * rng.standard_normal((n, X_train.shape[1]))
    X[:, CAT_COL] = rng.choice(CATEGORIES, size=n)
    return X


def _neighbours(t: float, dtype) -> list:
    """Values at, just below and just above the float64 threshold ``t``, in ``dtype``.

    float64: ``t`` itself, its float64 neighbours, and the float32 values around
    ``t`` (which a float32-comparing tree sees the float64 neighbours round to).
    float32: ``float32(t)``, its float32 neighbours, and the largest float32
    below ``t`` / smallest above it (the two that decide a float32 comparison).
    """
    t32 = np.float32(t)
    lo32 = t32 if float(t32) <= t else np.nextafter(t32, np.float32(-np.inf))
    hi32 = np.nextafter(lo32, np.float32(np.inf))
    vals32 = [t32, np.nextafter(t32, np.float32(-np.inf)), np.nextafter(t32, np.float32(np.inf)), lo32, hi32]
    if dtype == np.float32:
        return vals32
    return [t, np.nextafter(t, -np.inf), np.nextafter(t, np.inf)] + [float(v) for v in vals32]


def _parents(model: ir.TreeEnsemble):
    """Global parent of every node (-1 at roots) and whether the node is its parent's left child."""
    off, left, right = (np.asarray(a, dtype=np.int64) for a in (model.tree_offsets, model.left, model.right))
    base = np.repeat(off[:-1], np.diff(off))
    inner = np.flatnonzero(left >= 0)
    parent = np.full(model.n_nodes, -1)
    is_left = np.zeros(model.n_nodes, dtype=bool)
    parent[base[inner] + left[inner]] = inner
    parent[base[inner] + right[inner]] = inner
    is_left[base[inner] + left[inner]] = True
    return parent, is_left


def _set_members(model: ir.TreeEnsemble, node: int) -> list:
    words = np.asarray(model.cat_bits)[int(model.cat_offset[node]):][:int(model.cat_nwords[node])]
    return [c for c in CATEGORIES if int(c) < 32 * words.size and (int(words[int(c) // 32]) >> (int(c) % 32)) & 1]


def _row_reaching(model: ir.TreeEnsemble, node: int, row: np.ndarray, parents) -> np.ndarray | None:
    """``row`` changed so that it reaches ``node`` (None if no value does)."""
    parent, is_left = parents
    row = row.copy()
    lo, hi = np.full(row.shape, -np.inf), np.full(row.shape, np.inf)
    split = np.zeros(model.n_nodes, np.uint8) if model.split is None else np.asarray(model.split)
    nan_features = []
    while parent[node] >= 0:
        a, go_left = int(parent[node]), bool(is_left[node])
        f = int(model.feature[a])
        if split[a] == ir.SPLIT_MEMBER:
            members = _set_members(model, a)
            choices = members if go_left else [c for c in CATEGORIES if c not in members] + [1.0]
            if not choices:
                return None
            row[f] = choices[0]
        elif not go_left and model.threshold[a] == np.inf:
            # scikit-learn's "missing values only" split: only NaN goes right
            if model.missing_left[a]:
                return None
            nan_features.append(f)
        elif go_left:
            hi[f] = min(hi[f], float(model.threshold[a]))
        else:
            lo[f] = max(lo[f], float(model.threshold[a]))
        node = a
    for f in np.flatnonzero(np.isfinite(lo) | np.isfinite(hi)):
        if lo[f] >= hi[f]:
            return None
        room = 1e-6 * (1 + max(abs(lo[f]) if np.isfinite(lo[f]) else 0, abs(hi[f]) if np.isfinite(hi[f]) else 0))
        if lo[f] + room < row[f] < hi[f] - room:  # well inside, also after rounding to float32
            continue
        if np.isfinite(lo[f]) and np.isfinite(hi[f]):
            row[f] = (lo[f] + hi[f]) / 2
        elif np.isfinite(hi[f]):
            row[f] = hi[f] - 1 - abs(hi[f])
        else:
            row[f] = lo[f] + 1 + abs(lo[f])
    row[nan_features] = np.nan
    return row


def threshold_rows(name: str, dtype, max_nodes: int = 25, seed: int = 0):
    """Rows on, just below and just above split thresholds, and the node each row is for.

    Each row is a random row whose other features are set (from the node's
    ancestors) so that it reaches the node, then the node's feature is set to a
    neighbour of its threshold (``_neighbours``).
    """
    _, model, X_train = fitted(name)
    rng = np.random.default_rng(seed)
    split = np.zeros(model.n_nodes, np.uint8) if model.split is None else np.asarray(model.split)
    # scikit-learn's trees put +inf thresholds on "missing values only" splits;
    # the NaN tests cover those
    nodes = np.flatnonzero((np.asarray(model.left) >= 0) & (split != ir.SPLIT_MEMBER)
                           & np.isfinite(model.threshold))
    nodes = rng.choice(nodes, size=min(max_nodes, nodes.size), replace=False)
    parents = _parents(model)
    rows, targets = [], []
    for i in nodes:
        f, t = int(model.feature[i]), float(model.threshold[i])
        for v in _neighbours(t, dtype):
            r = _row_reaching(model, int(i), _rows_like(X_train, 1, rng)[0], parents)
            if r is not None:
                r[f] = v
                rows.append(r)
                targets.append(i)
    with np.errstate(over="ignore"):
        return np.array(rows).astype(dtype), np.array(targets)


def _reached(model: ir.TreeEnsemble, leaves: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Whether row ``r`` passed through the (global) node ``targets[r]``."""
    parent, _ = _parents(model)
    off = np.asarray(model.tree_offsets)
    tree_of = np.searchsorted(off, targets, side="right") - 1
    out = np.zeros(targets.shape, dtype=bool)
    for r, (g, t) in enumerate(zip(targets, tree_of)):
        node = int(off[t] + leaves[r, t])
        while node >= 0 and node != g:
            node = int(parent[node])
        out[r] = node == g
    return out


def nan_rows(name: str, dtype, n: int = 100, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = _rows_like(fitted(name)[2], n, rng)
    X[rng.random(X.shape) < 0.15] = np.nan
    return X.astype(dtype)


# --------------------------------------------------------------------------- parity

@pytest.mark.parametrize("name", NAMES)
def test_parity_on_random_rows(name, dtype):
    X = _rows_like(fitted(name)[2], 100, np.random.default_rng(2)).astype(dtype)
    X[0] = 0.0
    X[1] = -0.0
    check_parity(name, X)


@pytest.mark.parametrize("name", PLAIN)
def test_parity_at_thresholds(name, dtype):
    X, targets = threshold_rows(name, dtype)
    leaves = check_parity(name, X)
    reached = _reached(fitted(name)[1], leaves, targets)
    assert reached.mean() >= 0.95, f"only {reached.sum()} of {reached.size} rows reach their split"


def test_threshold_rows_cross_float32_boundaries():
    """Float64 rows next to a threshold are sent both ways, and for some of them
    rounding to float32 first changes the decision (x > t in float64 that goes
    left, or x <= t that goes right): the rows test the rounding, not only ``<=``."""
    _, model, _ = fitted("RandomForestClassifier multiclass")
    flips = 0
    thresholds = np.asarray(model.threshold)[np.asarray(model.left) >= 0]
    for t in thresholds[np.isfinite(thresholds)]:
        vals = np.array(_neighbours(float(t), np.float64))
        left32 = vals.astype(np.float32).astype(np.float64) <= t
        assert left32.any() and not left32.all()
        flips += int(np.sum(left32 != (vals <= t)))
    assert flips > 0


@pytest.mark.parametrize("name", TAKES_NAN)
def test_parity_with_nan(name, dtype):
    check_parity(name, nan_rows(name, dtype))


@pytest.mark.parametrize("name", TAKES_INF)
def test_parity_with_inf(name, dtype):
    rng = np.random.default_rng(3)
    X = _rows_like(fitted(name)[2], 100, rng)
    big = [np.inf, -np.inf, 1e30, -1e30] + ([1e39, -1e39] if dtype == np.float64 else [])
    mask = rng.random(X.shape) < 0.15
    X[mask] = rng.choice(big, size=int(mask.sum()))
    with np.errstate(over="ignore"):
        check_parity(name, X.astype(dtype))


@pytest.mark.parametrize("name", NAMES)
def test_nan_and_inf_flags_match_what_sklearn_accepts(name):
    """allow_nan / allow_inf say False wherever scikit-learn raises on NaN / inf."""
    est, _, X_train = fitted(name)
    model = _ir(name)
    base = _rows_like(X_train, 3, np.random.default_rng(4))

    def raises(value) -> list:
        bad = []
        for j in range(N_FEATURES):
            X = base.copy()
            X[0, j] = value
            try:
                _sklearn(est.predict, X)
                bad.append(False)
            except ValueError:
                bad.append(True)
        return bad

    assert model.allow_nan == (not any(raises(np.nan))) == (name in TAKES_NAN)
    for v in (np.inf, -np.inf):  # column by column: HistGradientBoosting's categorical columns refuse it
        refused = [not model.allow_inf or (model.inf_refused is not None and bool(model.inf_refused[j]))
                   for j in range(N_FEATURES)]
        assert raises(v) == refused, v
        assert (not any(refused)) == (name in TAKES_INF), v


def test_categorical_hgb_takes_inf_in_numeric_columns_only():
    """scikit-learn's OrdinalEncoder refuses +-inf in a categorical column and the numeric
    columns take it: so does fastml (the IR's inf_refused), on both backends."""
    import fastml
    from fastml.errors import InputError

    est, model, X_train = fitted("HistGradientBoostingClassifier multiclass categorical")
    assert model.allow_inf and model.allow_nan and model.inf_refused.tolist() == [j == CAT_COL for j in range(5)]
    X = _rows_like(X_train, 6, np.random.default_rng(5))
    X[0, 0], X[1, 3], X[2, 1] = np.inf, -np.inf, np.nan
    for backend in ("native", "onnxruntime"):
        p = fastml.Predictor(est, backend=backend)
        np.testing.assert_array_equal(p.predict(X), est.predict(X))
        bad = X.copy()
        bad[4, CAT_COL] = np.inf
        with pytest.raises(ValueError):
            est.predict(bad)
        with pytest.raises(InputError, match="infinity"):
            p.predict(bad)


# --------------------------------------------------------------------------- hypothesis

_HYP_MODELS = ("RandomForestClassifier multiclass", "GradientBoostingClassifier binary",
               "HistGradientBoostingClassifier multiclass categorical", "IsolationForest")


@FAST_HYPOTHESIS
@given(data=st.data())
@pytest.mark.parametrize("name", _HYP_MODELS)
def test_parity_on_hypothesis_rows(name, dtype, data):
    """Rows mixing thresholds, their neighbours, categories, 0, -0.0, +-1e30 and (where
    the model accepts them) NaN and +-inf, in C, Fortran or strided layout."""
    est, model, _ = fitted(name)
    inner = np.flatnonzero(np.asarray(model.left) >= 0)
    thresholds = np.asarray(model.threshold)[inner]
    thresholds = thresholds[np.isfinite(thresholds)]
    specials = [0.0, -0.0, 1e30, -1e30] + list(CATEGORIES) + [1.0, 2.5, -1.0, 1000.0]
    if model.allow_nan:
        specials.append(np.nan)
    if model.allow_inf:
        specials += [np.inf, -np.inf]
    value = st.one_of(
        st.sampled_from(thresholds.tolist()).flatmap(lambda t: st.sampled_from(_neighbours(t, dtype))),
        st.sampled_from(specials),
        st.floats(-50, 50, width=32 if dtype == np.float32 else 64))
    n = data.draw(st.integers(1, 12), label="rows")
    X = np.array(data.draw(st.lists(st.lists(value, min_size=N_FEATURES, max_size=N_FEATURES),
                                    min_size=n, max_size=n)), dtype=np.float64)
    if not model.allow_nan or not model.allow_inf:
        X[~np.isfinite(X) & ~(np.isnan(X) & model.allow_nan)] = 0.0
    if model.inf_refused is not None:  # categorical HGB: no inf in the categorical columns
        cols = X[:, model.inf_refused]
        cols[np.isinf(cols)] = 0.0
        X[:, model.inf_refused] = cols
    layout = data.draw(st.sampled_from(["C", "F", "strided"]), label="layout")
    X = X.astype(dtype)
    if layout == "F":
        X = np.asfortranarray(X)
    elif layout == "strided":
        X = np.repeat(X, 2, axis=1)[:, ::2]
    check_parity(name, X)


# --------------------------------------------------------------------------- the IR the frontends build

@pytest.mark.parametrize("name", NAMES)
def test_ir_shape(name):
    est, _, X = fitted(name)
    model = _ir(name)
    final = _final(est)
    hgb = isinstance(final, (ske.HistGradientBoostingClassifier, ske.HistGradientBoostingRegressor))
    assert model.compare == ("float64" if hgb else "float32")  # HGB converts X to float64, the rest to float32
    assert model.n_features == N_FEATURES
    if hasattr(final, "estimators_") and not hasattr(final, "init_"):
        assert model.n_trees == len(final.estimators_)
    if isinstance(final, ske.GradientBoostingClassifier | ske.GradientBoostingRegressor):
        assert model.n_trees == final.estimators_.size
    if hgb:
        assert model.n_trees == final.n_iter_ * final.n_trees_per_iteration_
    if hasattr(final, "classes_"):
        np.testing.assert_array_equal(model.classes, final.classes_)
        assert model.classes.dtype == final.classes_.dtype


def test_early_stopping_keeps_the_trees_predict_uses():
    gb = _final(fitted("GradientBoostingClassifier init=zero early stopping")[0])
    hgb = _final(fitted("HistGradientBoostingClassifier binary categorical early stopping class_weight")[0])
    assert gb.n_estimators_ < gb.n_estimators and hgb.n_iter_ < hgb.max_iter  # early stopping did stop
    assert fitted("GradientBoostingClassifier init=zero early stopping")[1].n_trees == gb.n_estimators_


def test_isolation_forest_maps_subsampled_columns_back():
    est, model, _ = fitted("IsolationForest max_features max_samples contamination")
    assert est._max_features < N_FEATURES
    off = np.asarray(model.tree_offsets)
    for t, (tree, feats) in enumerate(zip(est.estimators_, est.estimators_features_)):
        inner = tree.tree_.children_left >= 0
        np.testing.assert_array_equal(np.asarray(model.feature)[off[t]:off[t + 1]][inner],
                                      feats[tree.tree_.feature[inner]])
    assert model.post_params[1] == est.offset_ != -0.5


def test_hgb_categorical_splits_cover_both_missing_directions():
    """The frontend swaps children where scikit-learn sends missing (and unknown)
    categories left; both kinds of split must occur in the models tested."""
    seen = set()
    for name in NAMES:
        final = _final(fitted(name)[0])
        if getattr(final, "_preprocessor", None) is None:
            continue
        for it in final._predictors:
            for p in it:
                nodes = p.nodes[(p.nodes["is_categorical"] == 1) & (p.nodes["is_leaf"] == 0)]
                seen.update(bool(m) for m in nodes["missing_go_to_left"])
    assert seen == {True, False}


@pytest.mark.parametrize("name", [n for n in NAMES if "categorical" in n])
def test_hgb_unknown_categories_follow_the_missing_direction(name, dtype):
    """Values that are no known category (between, negative, huge, fractional, -0.0
    is category 0) go where scikit-learn sends missing values."""
    rng = np.random.default_rng(6)
    X = _rows_like(fitted(name)[2], 60, rng)
    X[:, CAT_COL] = rng.choice([1.0, 5.0, 2.5, -1.0, -0.0, 1000.0, 40.000001, 3.0, 255.0, 256.0, 2.0**40,
                                np.nan], size=60)
    check_parity(name, X.astype(dtype))


# --------------------------------------------------------------------------- refusals

@pytest.mark.parametrize("cls", [skt.DecisionTreeClassifier, skt.ExtraTreeRegressor, ske.RandomForestClassifier,
                                 ske.ExtraTreesRegressor, ske.GradientBoostingClassifier,
                                 ske.GradientBoostingRegressor, ske.HistGradientBoostingClassifier,
                                 ske.HistGradientBoostingRegressor, ske.IsolationForest])
def test_unfitted_estimator(cls):
    with pytest.raises(NotFittedError, match=f"This {cls.__name__} instance is not fitted yet"):
        import_model(cls())


def test_unfitted_pipeline():
    with pytest.raises(NotFittedError):
        import_model(make_pipeline(StandardScaler(), ske.RandomForestClassifier()))


def test_gradient_boosting_custom_init_is_refused():
    X, y = _data("regression", False)
    est = ske.GradientBoostingRegressor(n_estimators=3, init=LinearRegression()).fit(X, y)
    with pytest.raises(UnsupportedModelError, match="custom init estimator .LinearRegression."):
        import_model(est)


def test_multi_output_classifier_is_refused():
    X, y = _data("binary", False)
    est = ske.RandomForestClassifier(n_estimators=2).fit(X, np.column_stack([y, y[::-1]]))
    with pytest.raises(UnsupportedModelError, match="multi-output classification"):
        import_model(est)


def test_single_class_forest_is_refused():
    X, _ = _data("binary", False)
    est = ske.RandomForestClassifier(n_estimators=2).fit(X, np.zeros(len(X)))
    with pytest.raises(UnsupportedModelError, match="single class"):
        import_model(est)


def test_isolation_forest_of_one_sample_trees_is_refused():
    X, _ = _data("binary", False)
    est = ske.IsolationForest(n_estimators=2, max_samples=1, random_state=0).fit(X)
    with pytest.raises(UnsupportedModelError, match="max_samples=1"):
        import_model(est)


@pytest.mark.parametrize("bad, what", [(2.5, "2.5"), (-1.0, "-1.0"), (70000.0, "70000.0")])
def test_hgb_categories_the_ir_cannot_hold_are_refused(bad, what):
    X, y = _data("binary", False)
    X[::3, CAT_COL] = bad
    est = _hgb_cat(ske.HistGradientBoostingClassifier, max_iter=2).fit(X, y)
    with pytest.raises(UnsupportedModelError, match=f"categorical column {CAT_COL} has category {what}"):
        import_model(est)


def test_hgb_string_categories_are_refused():
    X, y = _data("binary", False)
    Xo = X.astype(object)
    Xo[:, CAT_COL] = np.array(["a", "b", "c", "d", "e"])[np.searchsorted(CATEGORIES, X[:, CAT_COL])]
    est = _hgb_cat(ske.HistGradientBoostingClassifier, max_iter=2).fit(Xo, y)
    with pytest.raises(UnsupportedModelError, match="non-numeric categories"):
        import_model(est)
