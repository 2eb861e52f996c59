"""Kernel SVM ``decision_function``: fastml against its peers.

Workloads (from the project's issue): SVC(kernel="rbf"), 50 features, 3 classes,
about 1,300 support vectors; and the same with about 10,000 support vectors
(label noise makes most training rows support vectors). float32 input, batches
1, 100 and 10,000. Contenders, in this process on the same arrays:
scikit-learn (libsvm, one row at a time in float64); ONNX Runtime on the
skl2onnx export (1 and 2 intra-op threads; its SVMClassifier plus skl2onnx's
one-vs-rest subgraph); the plain numpy formulation (float64 BLAS GEMM for
``|x|^2 + |s|^2 - 2 x.s``, ``exp``, a GEMM with the dual coefficients, the
one-vs-rest transform; numpy's BLAS threads); ``fastml.Predictor`` on the
native backend (1 and 2 threads) and on ``auto``.

Every contender is checked against scikit-learn before it is timed (fastml
and numpy within 1e-6, ONNX Runtime's float32 within 1e-3).

Run: ``pytest bench/test_bench_svm.py --benchmark-only``.
"""
from __future__ import annotations

import fastml  # noqa: I001  (first: sets OMP_WAIT_POLICY before other OpenMP runtimes load)

import warnings
from typing import Callable, Dict, Tuple

import numpy as np
import pytest
from sklearn.utils.multiclass import _ovr_decision_function

from fastml.converters import to_onnx

ort = pytest.importorskip("onnxruntime")

BATCHES = (1, 100, 10_000)
N_FEATURES, N_CLASSES = 50, 3
WARMUP_CALLS = 3
MODELS = {
    # name: (training rows, label noise) -> about 1,300 and 10,000 support vectors
    "1.3k": (2300, 0.01),
    "10k": (15000, 0.3),
}


def _workload(est) -> str:
    return f"SVC rbf {N_FEATURES}f {N_CLASSES}c, {est.support_vectors_.shape[0]} SV, decision_function f32"


@pytest.fixture(scope="module", params=list(MODELS))
def model(request):
    from sklearn.datasets import make_classification
    from sklearn.svm import SVC

    rows, noise = MODELS[request.param]
    X, y = make_classification(n_samples=rows, n_features=N_FEATURES, n_informative=20, n_classes=N_CLASSES,
                               flip_y=noise, random_state=0)
    est = SVC(kernel="rbf").fit(X, y)
    rng = np.random.default_rng(1)
    Xq = X[rng.integers(0, len(X), max(BATCHES))] + rng.standard_normal((max(BATCHES), N_FEATURES)) * 0.1
    return est, np.ascontiguousarray(Xq, dtype=np.float32)


def numpy_formulation(est) -> Callable:
    """What a user would write with numpy: two BLAS GEMMs and elementwise passes, float64."""
    S = est.support_vectors_
    ss = np.einsum("ij,ij->i", S, S)
    k, g = len(est.classes_), est._gamma
    start = np.concatenate([[0], np.cumsum(est.n_support_)])
    C = np.zeros((S.shape[0], k * (k - 1) // 2))  # pair coefficients, libsvm's layout
    p = 0
    for i in range(k):
        for j in range(i + 1, k):
            C[start[i]:start[i + 1], p] = est._dual_coef_[j - 1, start[i]:start[i + 1]]
            C[start[j]:start[j + 1], p] = est._dual_coef_[i, start[j]:start[j + 1]]
            p += 1
    b = est._intercept_

    def decision(X):
        X = X.astype(np.float64)
        D = X @ S.T
        D *= -2.0
        D += np.einsum("ij,ij->i", X, X)[:, None]
        D += ss
        np.maximum(D, 0.0, out=D)
        D *= -g
        np.exp(D, out=D)
        pairs = D @ C + b
        return _ovr_decision_function(pairs < 0, -pairs, k)   # scikit-learn's one-vs-rest scores

    return decision


@pytest.fixture(scope="module")
def contenders(model) -> Dict[str, Tuple[str, int, Callable, float]]:
    """name -> (contender, threads, X -> decision scores, allowed error)."""
    est, _ = model
    onnx_bytes = to_onnx(est, n_features=N_FEATURES).SerializeToString()
    out = {"scikit-learn": ("scikit-learn", 1, est.decision_function, 0.0),
           "numpy GEMM": ("numpy GEMM (float64 BLAS)", 2, numpy_formulation(est), 1e-6)}
    for t in (1, 2):
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = t, 1
        sess = ort.InferenceSession(onnx_bytes, so, providers=["CPUExecutionProvider"])
        out[f"onnxruntime {t}t"] = ("onnxruntime", t, lambda X, s=sess: s.run(["probabilities"], {"X": X})[0],
                                    1e-3)
        p = fastml.Predictor(est, backend="native", n_threads=t)
        out[f"fastml native {t}t"] = ("fastml native", t, p.decision_function, 1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        auto = fastml.Predictor(est, n_threads=2)
    out["fastml auto 2t"] = ("fastml auto", 2, auto.decision_function, 1e-6)
    return out


NAMES = ["scikit-learn", "numpy GEMM", "onnxruntime 1t", "onnxruntime 2t", "fastml native 1t",
         "fastml native 2t", "fastml auto 2t"]


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("name", NAMES)
def test_decision_function(benchmark, label, assert_close, model, contenders, name, batch):
    est, Xall = model
    X = Xall[:batch]
    who, threads, fn, atol = contenders[name]
    if name == "scikit-learn" and batch == max(BATCHES) and est.support_vectors_.shape[0] > 5000:
        pytest.skip("scikit-learn takes seconds per call here; its 1,300-SV row shows the ratio")
    want = est.decision_function(X)
    assert_close(fn(X), want, name, atol=max(atol, 1e-12))
    for _ in range(WARMUP_CALLS):
        fn(X)
    label(benchmark, f"{_workload(est)}, batch {batch}", contender=who, threads=threads, batch=batch,
          role="reference" if who == "onnxruntime" else None)
    benchmark(fn, X)
