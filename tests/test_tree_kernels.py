"""The native tree kernel against the slow reference walker, on random ensembles.

Random ensembles exercise what real models rarely combine: every split kind
(``x <= t``, ``x < t``, category sets exact and truncated), NaN going either
way, float64 thresholds that are not float32 values, both comparison
precisions, scalar and vector leaves, shuffled node numbering, trees deeper
than the lockstep limit, and batch sizes around the kernel's group and block
boundaries. Inputs hit thresholds exactly and their float32/float64
neighbours. Everything must agree exactly: leaves identically, raw sums to the
last bit (both add in tree order in float64).
"""
from __future__ import annotations

import sys
import threading
import zlib

import numpy as np
import pytest

from fastml import Predictor, ir
from fastml.backends._tree_plan import build_plan, node_records
from fastml.backends.native import ForestNative
from fastml.errors import InputError, UnsupportedModelError
from fastml.kernels._trees import ForestKernel

from reference_trees import tree_apply, tree_predict, tree_predict_proba, tree_raw

N_FEATURES = 5


def _random_tree(rng, max_depth: int, n_leaves_max: int, grid: np.ndarray, W: int, cats: list):
    """One tree as lists in a shuffled local numbering with the root first."""
    nodes = []  # (feature, threshold, left, right, missing_left, split, cat_off, cat_nw, value)

    def grow(depth):
        i = len(nodes)
        nodes.append(None)
        stop = depth >= max_depth or (depth > 0 and rng.random() < 0.25) or len(nodes) > n_leaves_max
        if stop:
            nodes[i] = (-1, 0.0, -1, -1, False, 0, 0, 0, rng.normal(size=W))
            return i
        kind = rng.choice([ir.SPLIT_LEQ, ir.SPLIT_LT, ir.SPLIT_MEMBER], p=[0.5, 0.3, 0.2])
        thr = float(rng.choice(grid))
        if rng.random() < 0.3:  # a float64 threshold between float32 values
            thr = thr + float(rng.choice([-1, 1])) * 1e-9 * max(1.0, abs(thr))
        c_off = c_nw = 0
        if kind == ir.SPLIT_MEMBER:
            c_nw = int(rng.integers(1, 3))
            c_off = len(cats)
            cats.extend(int(w) for w in rng.integers(0, 2**32, size=c_nw, dtype=np.uint64))
        left = grow(depth + 1)
        right = grow(depth + 1)
        nodes[i] = (int(rng.integers(N_FEATURES)), thr, left, right, bool(rng.random() < 0.5),
                    int(kind), c_off, c_nw, np.zeros(W))
        return i

    grow(0)
    n = len(nodes)
    perm = np.concatenate([[0], 1 + rng.permutation(n - 1)])  # new id of old node; root stays 0
    out = [None] * n
    for old, rec in enumerate(nodes):
        f, t, l, r, m, k, co, cw, v = rec
        out[perm[old]] = (f, t, perm[l] if l >= 0 else -1, perm[r] if r >= 0 else -1, m, k, co, cw, v)
    return out


def random_ensemble(seed: int, *, n_trees=7, max_depth=6, n_leaves_max=60, compare="float32",
                    n_targets=1, vector_leaves=False, average=False, cat_exact=False) -> ir.TreeEnsemble:
    rng = np.random.default_rng(seed)
    grid = np.array([-2.5, -1.0, -0.1, 0.0, 0.3, 1.0, 2.0, 3.0, 7.0, 1e30], dtype=np.float32).astype(np.float64)
    W = n_targets if vector_leaves else 1
    cats: list = []
    trees = [_random_tree(rng, max_depth, n_leaves_max, grid, W, cats) for _ in range(n_trees)]
    recs = [r for t in trees for r in t]
    offsets = np.cumsum([0] + [len(t) for t in trees])
    col = lambda i: [r[i] for r in recs]  # noqa: E731
    has_cat = any(r[5] == ir.SPLIT_MEMBER for r in recs)
    return ir.TreeEnsemble(
        n_features=N_FEATURES, tree_offsets=np.array(offsets, dtype=np.int64),
        feature=np.array(col(0), dtype=np.int32), threshold=np.array(col(1), dtype=np.float64),
        left=np.array(col(2), dtype=np.int32), right=np.array(col(3), dtype=np.int32),
        missing_left=np.array(col(4), dtype=bool), split=np.array(col(5), dtype=np.uint8),
        cat_offset=np.array(col(6), dtype=np.int64) if has_cat else None,
        cat_nwords=np.array(col(7), dtype=np.int32) if has_cat else None,
        cat_bits=np.array(cats, dtype=np.uint32) if has_cat else None, cat_exact=cat_exact,
        value=np.array(col(8), dtype=np.float64).reshape(len(recs), W), n_targets=n_targets,
        tree_target=(np.array([t % n_targets for t in range(n_trees)], dtype=np.int32)
                     if W == 1 and n_targets > 1 else None),
        base_score=rng.normal(size=n_targets), average=average, compare=compare,
        name="random").validate()


def edge_inputs(est: ir.TreeEnsemble, n: int, seed: int, dtype) -> np.ndarray:
    """Rows whose values sit on, just above and just below thresholds, plus NaN, +-inf and categories."""
    rng = np.random.default_rng(seed)
    thr = np.unique(np.asarray(est.threshold))
    pool = np.concatenate([
        thr, np.nextafter(thr, np.inf), np.nextafter(thr, -np.inf),
        thr.astype(np.float32).astype(np.float64),
        np.nextafter(thr.astype(np.float32), np.float32(np.inf)).astype(np.float64),
        np.nextafter(thr.astype(np.float32), np.float32(-np.inf)).astype(np.float64),
        [np.nan, np.inf, -np.inf, -0.0, 0.5, 1.5, 31.0, 32.0, 33.7, 63.0, -1.0, -0.5, 1e300, -1e300]])
    X = rng.choice(pool, size=(n, est.n_features))
    cat = rng.random(X.shape) < 0.3  # category codes, in and out of the sets' range
    X[cat] = rng.integers(-2, 70, size=int(cat.sum()))
    with np.errstate(over="ignore"):
        return X.astype(dtype)


CASES = {
    "f32-compare": dict(compare="float32"),
    "f64-compare": dict(compare="float64"),
    "vector-leaves-average": dict(n_targets=3, vector_leaves=True, average=True),
    "scalar-leaves-3-targets": dict(n_targets=3),
    "exact-categories": dict(cat_exact=True, compare="float64"),
    "deep-walk": dict(max_depth=30, n_leaves_max=400, n_trees=3),
    "many-trees": dict(n_trees=37, max_depth=4),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_kernel_matches_reference(case, dtype, n_threads):
    est = random_ensemble(zlib.crc32(case.encode()) % 1000, **CASES[case])
    runner = ForestNative(est, n_threads=n_threads)
    X = edge_inputs(est, 301, seed=1, dtype=dtype)
    want_leaves = tree_apply(est, X)
    want_raw = tree_raw(est, X)
    for n in (1, 2, 7, 8, 9, 17, 64, 65, 301):  # around the lockstep group and block sizes
        np.testing.assert_array_equal(runner.apply(X[:n]), want_leaves[:n])
        np.testing.assert_array_equal(runner.raw(X[:n]), want_raw[:n])


def test_non_contiguous_and_fortran_inputs_match():
    est = random_ensemble(3, compare="float64")
    runner = ForestNative(est, n_threads=2)
    X = edge_inputs(est, 200, seed=2, dtype=np.float64)
    want = tree_raw(est, X)
    wide = np.zeros((200, 2 * N_FEATURES))
    wide[:, ::2] = X
    for variant in (np.asfortranarray(X), wide[:, ::2], np.repeat(X, 2, axis=0)[::2], X.tolist()):
        np.testing.assert_array_equal(runner.raw(variant), want)


def test_threshold_rounding_for_float32_records():
    # a float64 threshold between two float32 values: the float32 record must hold the lower one
    t = float(np.float32(1.0)) + 1e-9
    est = ir.TreeEnsemble(
        n_features=1, tree_offsets=np.array([0, 3]), feature=np.array([0, -1, -1], np.int32),
        threshold=np.array([t, 0, 0.0]), left=np.array([1, -1, -1], np.int32),
        right=np.array([2, -1, -1], np.int32), missing_left=np.zeros(3, bool),
        value=np.array([[0.0], [1.0], [2.0]]), compare="float64").validate()
    runner = ForestNative(est, n_threads=1)
    for dtype in (np.float32, np.float64):
        X = np.array([[1.0], [np.nextafter(np.float32(1.0), np.float32(2))], [t], [np.nextafter(t, 2)]], dtype=dtype)
        np.testing.assert_array_equal(runner.raw(X), tree_raw(est, X))


def test_nan_only_left_below_minus_infinity_is_refused():
    est = ir.TreeEnsemble(
        n_features=1, tree_offsets=np.array([0, 3]), feature=np.array([0, -1, -1], np.int32),
        threshold=np.array([-np.inf, 0, 0.0]), left=np.array([1, -1, -1], np.int32),
        right=np.array([2, -1, -1], np.int32), missing_left=np.array([True, False, False]),
        split=np.array([ir.SPLIT_LT, 0, 0], np.uint8), value=np.array([[0.0], [1.0], [2.0]])).validate()
    with pytest.raises(UnsupportedModelError, match="tree 0: node 0"):
        build_plan(est)


def test_nan_only_left_refusal_names_a_later_tree_and_node():
    # two trees; the bad split is node 2 of tree 1
    est = ir.TreeEnsemble(
        n_features=1, tree_offsets=np.array([0, 3, 8]), feature=np.array([0, -1, -1, 0, -1, 0, -1, -1], np.int32),
        threshold=np.array([0.0, 0, 0, 1.0, 0, -np.inf, 0, 0]),
        left=np.array([1, -1, -1, 1, -1, 3, -1, -1], np.int32), right=np.array([2, -1, -1, 2, -1, 4, -1, -1], np.int32),
        missing_left=np.array([True, False, False, False, False, True, False, False]),
        split=np.array([0, 0, 0, 0, 0, ir.SPLIT_LT, 0, 0], np.uint8), value=np.arange(8.0).reshape(-1, 1)).validate()
    with pytest.raises(UnsupportedModelError, match="tree 1: node 2 sends only NaN left"):
        build_plan(est)


def _built(runner):
    k, plan = runner._plan.kernel, runner._plan
    return (k.nodes32 is not None, k.nodes64 is not None, plan._local_id is not None, list(plan.built))


@pytest.mark.parametrize("first", [np.float32, np.float64])
def test_node_records_are_built_on_first_use_per_input_dtype(first):
    est = random_ensemble(21, compare="float64", n_trees=9)
    runner = ForestNative(est, n_threads=1)
    assert _built(runner) == (False, False, False, [])
    assert runner.info["plan_built"] == []
    other = np.float64 if first is np.float32 else np.float32
    X = {d: edge_inputs(est, 120, seed=2, dtype=d) for d in (np.float32, np.float64)}
    np.testing.assert_array_equal(runner.raw(X[first]), tree_raw(est, X[first]))
    name = "nodes32" if first is np.float32 else "nodes64"
    assert _built(runner) == (first is np.float32, first is np.float64, False, [name])
    np.testing.assert_array_equal(runner.raw(X[first][:1]), tree_raw(est, X[first][:1]))   # the one-row path
    np.testing.assert_array_equal(runner.raw(X[other]), tree_raw(est, X[other]))
    assert _built(runner)[:3] == (True, True, False)
    assert runner.info["plan_built"] == [name, "nodes64" if first is np.float32 else "nodes32"]
    # the lazily built records are the ones an eager kernel is given, and run alike
    k = runner._plan.kernel
    eager = ForestKernel(node_records(est, wide=False), node_records(est, wide=True), k.root, k.depth,
                         k.target, k.value, k.base, n_features=est.n_features, cat_off=k.cat_off,
                         cat_nw=k.cat_nw, cat_bits=k.cat_bits, cat_exact=est.cat_exact)
    assert k.nodes32.tobytes() == eager.nodes32.tobytes() and k.nodes64.tobytes() == eager.nodes64.tobytes()
    for d in (np.float32, np.float64):
        out = np.empty((len(X[d]), est.n_targets))
        assert eager.run(X[d], out) == 0
        np.testing.assert_array_equal(out, tree_raw(est, X[d]))


def test_model_comparing_in_float32_builds_only_float32_records():
    est = random_ensemble(22, compare="float32")
    p = Predictor(est, backend="native")
    runner = p._backends["native"]
    for d in (np.float64, np.float32):
        X = edge_inputs(est, 90, seed=3, dtype=d)
        np.testing.assert_array_equal(p.predict(X), tree_predict(est, X))
        assert _built(runner) == (True, False, False, ["nodes32"])
    assert p.backend_info["native"]["plan_built"] == ["nodes32"]


def test_concurrent_first_calls_of_both_dtypes_build_once_and_match_reference():
    est = random_ensemble(23, compare="float64", n_trees=60, max_depth=8, n_leaves_max=120)
    X = {d: edge_inputs(est, 130, seed=4, dtype=d) for d in (np.float32, np.float64)}
    want = {d: tree_raw(est, X[d]) for d in X}
    want_leaves = tree_apply(est, X[np.float32])
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)   # switch threads often: first calls interleave with the builds
    try:
        for trial in range(6):
            runner = ForestNative(est, n_threads=1 + trial % 2)
            start = threading.Barrier(8)
            got, errors = {}, []

            def call(i):
                try:
                    start.wait()
                    for j in range(3):
                        d = (np.float32, np.float64)[(i + j) % 2]
                        rows = X[d][: (1, 9, 130)[(i + j) % 3]]
                        got[i, j] = (d, len(rows), runner.raw(rows))
                    if i % 4 == 3:
                        got[i, "apply"] = runner.apply(X[np.float32])
                except BaseException as e:   # noqa: BLE001 (reported below)
                    errors.append(e)

            threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert not errors, errors
            assert len(got) == 8 * 3 + 2
            for key, r in got.items():
                if key[1] == "apply":
                    np.testing.assert_array_equal(r, want_leaves)
                else:
                    d, n, raw = r
                    np.testing.assert_array_equal(raw, want[d][:n])
            # each lazy array built exactly once
            assert sorted(runner._plan.built) == ["local_id", "nodes32", "nodes64"]
    finally:
        sys.setswitchinterval(switch)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_apply_after_predict_builds_local_id_and_matches_reference(dtype):
    est = random_ensemble(24, compare="float64", n_targets=3, vector_leaves=True)
    runner = ForestNative(est, n_threads=1)
    X = edge_inputs(est, 77, seed=6, dtype=dtype)
    np.testing.assert_array_equal(runner.raw(X), tree_raw(est, X))
    assert runner._plan._local_id is None
    np.testing.assert_array_equal(runner.apply(X), tree_apply(est, X))
    assert runner._plan.built[-1] == "local_id" and runner._plan.local_id.dtype == np.int32
    np.testing.assert_array_equal(runner.apply(X[:1]), tree_apply(est, X[:1]))
    assert runner._plan.built.count("local_id") == 1


def test_post_transforms_and_rules_match_reference():
    base = random_ensemble(11, n_targets=3)
    X = edge_inputs(base, 100, seed=5, dtype=np.float32)
    X = np.where(np.isfinite(X), X, 0.0).astype(np.float32)
    variants = {
        "softmax": dict(is_classifier=True, classes=np.array(["a", "b", "c"]), post="softmax",
                        predict_rule="argmax"),
        "softmax-argmax-proba": dict(is_classifier=True, classes=np.array([3, 5, 9]), post="softmax",
                                     predict_rule="argmax_proba"),
    }
    for kw in variants.values():
        est = ir.replace(base, **kw).validate()
        runner = ForestNative(est, n_threads=1)
        np.testing.assert_allclose(runner.predict_proba(X), tree_predict_proba(est, X), rtol=1e-14, atol=1e-15)
        np.testing.assert_array_equal(runner.predict(X), tree_predict(est, X))
    one = random_ensemble(12)
    for rule in ("ge0", "gt0"):
        est = ir.replace(one, is_classifier=True, classes=np.array([0, 1]), post="logistic",
                         predict_rule=rule).validate()
        runner = ForestNative(est, n_threads=1)
        np.testing.assert_allclose(runner.predict_proba(X), tree_predict_proba(est, X), rtol=1e-14, atol=1e-15)
        np.testing.assert_array_equal(runner.predict(X), tree_predict(est, X))
        np.testing.assert_array_equal(runner.decision_function(X), tree_raw(est, X)[:, 0])


def test_disallowed_nonfinite_input_is_refused_like_sklearn():
    est = ir.replace(random_ensemble(4), allow_nan=False, allow_inf=False).validate()
    p = Predictor(est, backend="native")
    X = np.zeros((3, N_FEATURES), dtype=np.float32)
    X[1, 2] = np.nan
    with pytest.raises(InputError, match="Input X contains NaN"):
        p.predict(X)
    X[1, 2] = np.inf
    with pytest.raises(InputError, match="infinity or a value too large"):
        p.predict(X)
    # finite in float64, infinite once rounded to float32 like scikit-learn does
    X64 = np.zeros((2, N_FEATURES))
    X64[0, 0] = 1e39
    with pytest.raises(InputError, match=r"too large for dtype\('float32'\)"):
        p.predict(X64)
    nan_ok = Predictor(ir.replace(est, allow_nan=True).validate(), backend="native")
    X[1, 2] = np.nan
    np.testing.assert_array_equal(nan_ok.predict(X), tree_predict(est, X))


def test_empty_and_wrong_inputs_raise_typed_errors():
    p = Predictor(random_ensemble(5), backend="native")
    for bad in (np.zeros((0, N_FEATURES)), np.zeros((2, N_FEATURES + 1)), np.zeros(N_FEATURES),
                np.array([["a"] * N_FEATURES])):
        with pytest.raises(InputError):
            p.predict(bad)


def test_predictor_warmup_builds_what_the_first_calls_need():
    """warmup() runs float32 and float64 rows: a float64-compare model then has both record
    sets and its first float64 call builds nothing; warmup(np.float32) builds only its own."""
    import fastml

    est = random_ensemble(5, compare="float64")
    p = fastml.Predictor(est, backend="native").warmup()
    built = p.backend_info["native"]["plan_built"]
    assert sorted(built) == ["nodes32", "nodes64"]
    X = edge_inputs(est, 50, seed=3, dtype=np.float64)
    np.testing.assert_array_equal(p._backends["native"].raw(X), tree_raw(est, X))
    assert sorted(built) == ["nodes32", "nodes64"]
    q = fastml.Predictor(est, backend="native").warmup(np.float32)
    assert q.backend_info["native"]["plan_built"] == ["nodes32"]
