"""Quantized (threshold-index) trees against fastml's own float tree kernels.

Workloads of ``bench/test_bench_trees.py`` (same data, same models), float32 input,
``predict_proba``, batches of 1, 100 and 10,000 rows:

* ``RandomForestClassifier(n_estimators=100, max_depth=10)``, 30 features, binary;
* LightGBM binary, 500 trees, ``num_leaves=64``, ``max_depth=6``, 50 features.

Contenders: ``fastml.Predictor(est, backend="native")`` (float kernel: 12-byte
records, AVX-512 gathers for float32 batches) and ``Predictor(est, backend="native",
quantize="int8")`` (rows binned to uint16 threshold indexes, 8-byte records), 1 and 2
threads each. The quantized output must equal the float output bit for bit before it is
timed (a difference fails); ``extra_info`` holds the kernels' plan sizes.

On a loaded machine, 1-thread rows are steadier in CPU time:
``pytest bench/test_bench_quantize_trees.py --benchmark-only --benchmark-timer time.thread_time``
(2-thread rows then count only the calling thread: time those with the default timer).
"""
from __future__ import annotations

import fastml  # noqa: I001  (sets OMP_WAIT_POLICY before the trainers load OpenMP)

import numpy as np
import pytest

BATCHES = (1, 100, 10_000)
THREADS = (1, 2)
TRAIN_ROWS = 10_000
RF_WORKLOAD = "quantized trees: RandomForest 100 trees depth 10, 30f binary, predict_proba f32"
LGB_WORKLOAD = "quantized trees: LightGBM 500 trees 64 leaves depth 6, 50f binary, predict_proba f32"


def _rows(n_features: int, seed: int = 0):
    """The data of bench/test_bench_trees.py: training rows and unseen benchmark rows."""
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=TRAIN_ROWS + max(BATCHES), n_features=n_features,
                               n_informative=min(30, n_features - 10), random_state=seed)
    X = X.astype(np.float32)
    return X[:TRAIN_ROWS], y[:TRAIN_ROWS], np.ascontiguousarray(X[TRAIN_ROWS:])


@pytest.fixture(scope="module")
def rf():
    from sklearn.ensemble import RandomForestClassifier

    Xtr, ytr, X = _rows(30)
    est = RandomForestClassifier(n_estimators=100, max_depth=10, random_state=0, n_jobs=2).fit(Xtr, ytr)
    return RF_WORKLOAD, est.set_params(n_jobs=None), X


@pytest.fixture(scope="module")
def lgbm():
    lgb = pytest.importorskip("lightgbm")
    Xtr, ytr, X = _rows(50)
    est = lgb.LGBMClassifier(n_estimators=500, num_leaves=64, max_depth=6, n_jobs=1, verbose=-1).fit(Xtr, ytr)
    return LGB_WORKLOAD, est, X


_PREDICTORS: dict = {}


def _predictor(workload, quantized: bool, threads: int):
    name, est, X = workload
    key = (name, quantized, threads)
    if key not in _PREDICTORS:
        kw = dict(quantize="int8", calibration=X[:2000]) if quantized else {}
        _PREDICTORS[key] = fastml.Predictor(est, backend="native", n_threads=threads, **kw)
    return _PREDICTORS[key]


def _time(benchmark, label, workload, quantized, threads, batch):
    name, _, X = workload
    Xb = X[:batch]
    p = _predictor(workload, quantized, threads)
    want = _predictor(workload, False, threads).predict_proba(Xb)
    got = p.predict_proba(Xb)
    np.testing.assert_array_equal(got, want)  # lossless, or not timed
    extra = {}
    if quantized:
        rep = p.quantization_report
        extra = dict(plan_bytes_float=rep.bytes_float, plan_bytes_quantized=rep.bytes_quantized,
                     agreement=rep.agreement, max_abs_diff=rep.max_abs_diff)
    label(benchmark, f"{name}, batch {batch}", contender="fastml int8 trees" if quantized else "fastml native",
          threads=threads, batch=batch, workload=name, **extra)
    benchmark(p.predict_proba, Xb)


@pytest.mark.parametrize("batch", BATCHES, ids=lambda b: f"batch={b}")
@pytest.mark.parametrize("threads", THREADS, ids=lambda t: f"{t}t")
@pytest.mark.parametrize("quantized", [False, True], ids=["float", "quantized"])
def test_random_forest(benchmark, label, rf, quantized, threads, batch):
    _time(benchmark, label, rf, quantized, threads, batch)


@pytest.mark.parametrize("batch", BATCHES, ids=lambda b: f"batch={b}")
@pytest.mark.parametrize("threads", THREADS, ids=lambda t: f"{t}t")
@pytest.mark.parametrize("quantized", [False, True], ids=["float", "quantized"])
def test_lightgbm(benchmark, label, lgbm, quantized, threads, batch):
    _time(benchmark, label, lgbm, quantized, threads, batch)
