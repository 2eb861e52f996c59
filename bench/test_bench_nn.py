"""MLPClassifier ``predict_proba`` and KMeans ``predict``: fastml against its peers.

Workloads (from the project's issue), float32 input, batches of 1, 100 and 10,000 rows:

* ``MLPClassifier(256, 256)``, 100 features, 10 classes, ReLU, fitted on float64 data
  (scikit-learn's default). Contenders: scikit-learn; ONNX Runtime on the skl2onnx export
  (float32 weights, 1 and 2 intra-op threads, the reference of the ratios); fastml native
  on that same ONNX file (float32 arithmetic, like ONNX Runtime: the like-for-like row);
  fastml native on the estimator (float64 arithmetic, as scikit-learn computes this model:
  the exact-parity row); fastml ``auto``.
* ``KMeans(256 clusters)`` on 64 features, fitted on float32 data (so scikit-learn itself
  assigns float32 input in float32). Contenders: scikit-learn, ONNX Runtime (reference),
  faiss ``IndexFlatL2`` over the centers (``search(X, 1)``, 1 and 2 OpenMP threads), fastml
  native on the estimator (1 and 2 threads).

Every contender's output is checked before it is timed: probabilities within 1e-4 of
scikit-learn's (float32 routes), labels equal to scikit-learn's on at least 99.9% of rows
(float32 near-ties may differ; the test suite checks that only near-ties do).

Run: ``pytest bench/test_bench_nn.py --benchmark-only``.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Dict, Optional

import numpy as np
import pytest

import fastml
from fastml.converters import to_onnx

ort = pytest.importorskip("onnxruntime")

BATCHES = (1, 100, 10_000)
MLP_WORKLOAD = "MLPClassifier(256, 256).predict_proba 100f/10c f32"
KM_WORKLOAD = "KMeans(256).predict 64f f32"
WARMUP_CALLS = 5


@dataclass
class Contender:
    name: str
    threads: Optional[int]
    fn: Callable
    args: Callable                        # X -> positional arguments of fn
    result: Callable = lambda out: out    # fn's output -> probabilities / labels
    extra: Optional[dict] = None


def _ort_session(onnx_bytes: bytes, threads: int):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(onnx_bytes, so, providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------------- MLP

@pytest.fixture(scope="module")
def mlp():
    from sklearn.datasets import make_classification
    from sklearn.neural_network import MLPClassifier

    X, y = make_classification(n_samples=20000, n_features=100, n_informative=60, n_classes=10,
                               random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: the shapes matter, not the accuracy
        est = MLPClassifier(hidden_layer_sizes=(256, 256), max_iter=5, random_state=0).fit(X, y)
    rows = np.random.default_rng(0).permutation(len(X))[:max(BATCHES)]
    return est, np.ascontiguousarray(X[rows], dtype=np.float32)


@pytest.fixture(scope="module")
def mlp_contenders(mlp) -> Dict[str, Contender]:
    est, _ = mlp
    onnx_bytes = to_onnx(est).SerializeToString()
    out = {"scikit-learn": Contender("scikit-learn", None, est.predict_proba, lambda X: (X,))}
    for t in (1, 2):
        sess = _ort_session(onnx_bytes, t)
        out[f"onnxruntime {t}t"] = Contender("onnxruntime", t, sess.run,
                                             lambda X: (["probabilities"], {"X": X}),
                                             result=lambda o: o[0], extra={"role": "reference"})
        p = fastml.Predictor(onnx_bytes, backend="native", n_threads=t).warmup()
        out[f"fastml native f32 {t}t"] = Contender("fastml native (ONNX file, float32)", t,
                                                   p.predict_proba, lambda X: (X,))
        p = fastml.Predictor(est, backend="native", n_threads=t).warmup()
        out[f"fastml native f64 {t}t"] = Contender("fastml native (estimator, float64)", t,
                                                   p.predict_proba, lambda X: (X,))
    p = fastml.Predictor(onnx_bytes).warmup()
    out["fastml auto"] = Contender("fastml auto (ONNX file)", p.n_threads, p.predict_proba, lambda X: (X,))
    return out


MLP_IDS = ("scikit-learn", "onnxruntime 1t", "onnxruntime 2t", "fastml native f32 1t", "fastml native f32 2t",
           "fastml native f64 1t", "fastml native f64 2t", "fastml auto")


@pytest.mark.parametrize("batch", BATCHES, ids=lambda b: f"batch={b}")
@pytest.mark.parametrize("cid", MLP_IDS)
def test_mlp_predict_proba(benchmark, label, assert_close, mlp, mlp_contenders, cid, batch):
    est, X_all = mlp
    X = X_all[:batch]
    c = mlp_contenders[cid]
    want = est.predict_proba(X)
    args = c.args(X)
    for _ in range(WARMUP_CALLS):
        got = c.result(c.fn(*args))
    assert_close(got, want, f"{cid}, batch {batch}", atol=1e-4)
    label(benchmark, f"{MLP_WORKLOAD}, batch {batch}", contender=c.name, threads=c.threads, batch=batch,
          bytes=X.nbytes + want.nbytes, workload=MLP_WORKLOAD, **(c.extra or {}))
    benchmark(c.fn, *args)


# ---------------------------------------------------------------------- k-means

@pytest.fixture(scope="module")
def kmeans():
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(0)
    centers = rng.normal(0, 3, (256, 64))
    X = (centers[rng.integers(0, 256, 30000)] + rng.standard_normal((30000, 64))).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = KMeans(n_clusters=256, n_init=1, max_iter=5, random_state=0).fit(X[:20000])
    return est, np.ascontiguousarray(X[20000:20000 + max(BATCHES)])


def _faiss_search(index, threads: int, faiss):
    def search(X):
        faiss.omp_set_num_threads(threads)  # faiss's thread count is process-wide
        return index.search(X, 1)[1]
    return search


@pytest.fixture(scope="module")
def km_contenders(kmeans) -> Dict[str, Contender]:
    est, _ = kmeans
    onnx_bytes = to_onnx(est).SerializeToString()
    out = {"scikit-learn": Contender("scikit-learn", None, est.predict, lambda X: (X,))}
    for t in (1, 2):
        sess = _ort_session(onnx_bytes, t)
        out[f"onnxruntime {t}t"] = Contender("onnxruntime", t, sess.run, lambda X: (["label"], {"X": X}),
                                             result=lambda o: o[0], extra={"role": "reference"})
        p = fastml.Predictor(est, backend="native", n_threads=t).warmup()
        out[f"fastml native {t}t"] = Contender("fastml native", t, p.predict, lambda X: (X,))
    try:
        import faiss
    except ImportError:  # pragma: no cover - faiss-cpu is in the bench extra
        faiss = None
    if faiss is not None:
        index = faiss.IndexFlatL2(est.cluster_centers_.shape[1])
        index.add(np.ascontiguousarray(est.cluster_centers_, dtype=np.float32))
        for t in (1, 2):
            out[f"faiss {t}t"] = Contender("faiss IndexFlatL2", t, _faiss_search(index, t, faiss),
                                           lambda X: (X,), result=lambda o: o.reshape(-1))
    return out


KM_IDS = ("scikit-learn", "onnxruntime 1t", "onnxruntime 2t", "faiss 1t", "faiss 2t",
          "fastml native 1t", "fastml native 2t")


@pytest.mark.parametrize("batch", BATCHES, ids=lambda b: f"batch={b}")
@pytest.mark.parametrize("cid", KM_IDS)
def test_kmeans_predict(benchmark, label, kmeans, km_contenders, cid, batch):
    est, X_all = kmeans
    if cid not in km_contenders:
        pytest.skip(f"{cid} is not installed")
    X = X_all[:batch]
    c = km_contenders[cid]
    want = est.predict(X)
    args = c.args(X)
    for _ in range(WARMUP_CALLS):
        got = np.asarray(c.result(c.fn(*args)))
    agree = float(np.mean(got == want))
    if got.shape != want.shape or agree < 0.999:
        pytest.fail(f"{cid}, batch {batch}: labels agree with scikit-learn on {agree:.4%} of rows; not timed")
    label(benchmark, f"{KM_WORKLOAD}, batch {batch}", contender=c.name, threads=c.threads, batch=batch,
          bytes=X.nbytes + want.nbytes, workload=KM_WORKLOAD, **(c.extra or {}))
    benchmark(c.fn, *args)
