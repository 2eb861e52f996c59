"""Multinomial LogisticRegression ``predict_proba``: fastml against its peers.

Workload (from the project's issue): 100 features, 10 classes, float32 input,
batches of 1, 100 and 10,000 rows. Contenders, all in this process on the same
arrays: scikit-learn; ONNX Runtime called directly on the skl2onnx export
(1 and 2 intra-op threads); ``fastml.Predictor`` on the native backend (1 and 2
threads), on the onnxruntime backend, and on ``auto``. A cold-start group times
a fresh interpreter that loads the saved ONNX file and predicts one row.

Run: ``pytest bench/test_bench_linear.py --benchmark-only``.
"""
from __future__ import annotations

import ast
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, Optional

import numpy as np
import pytest

import fastml
from fastml.converters import to_onnx

ort = pytest.importorskip("onnxruntime")

BATCHES = (1, 100, 10_000)
N_FEATURES, N_CLASSES = 100, 10
WORKLOAD = f"LogisticRegression.predict_proba {N_FEATURES}f/{N_CLASSES}c f32"
#: lbfgs stops early (ConvergenceWarning); a benchmark needs the shapes, not the accuracy.
MAX_ITER = 10
WARMUP_CALLS = 5


@dataclass
class Contender:
    name: str
    threads: Optional[int]
    fn: Callable
    args: Callable  # X -> positional arguments of fn (no wrapper in the timed call)
    result: Callable = lambda out: out  # fn's output -> probabilities
    extra: Optional[dict] = None
    backend: Optional[Callable] = None  # X -> name of the backend that serves X (auto only)


@pytest.fixture(scope="module")
def model():
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    X, y = make_classification(n_samples=20000, n_features=N_FEATURES, n_informative=60,
                               n_classes=N_CLASSES, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning at MAX_ITER
        est = LogisticRegression(max_iter=MAX_ITER).fit(X, y)
    rows = np.random.default_rng(0).permutation(len(X))[:max(BATCHES)]
    return est, np.ascontiguousarray(X[rows], dtype=np.float32)


@pytest.fixture(scope="module")
def onnx_bytes(model):
    return to_onnx(model[0]).SerializeToString()


def _ort_session(onnx_bytes: bytes, threads: int):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(onnx_bytes, so, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def contenders(model, onnx_bytes) -> Dict[str, Contender]:
    """Built once per module: ``auto`` measures the backends when it is created."""
    est, _ = model
    out = {"scikit-learn": Contender("scikit-learn", None, est.predict_proba, lambda X: (X,))}
    for t in (1, 2):
        sess = _ort_session(onnx_bytes, t)
        out[f"onnxruntime {t}t"] = Contender(
            "onnxruntime", t, sess.run, lambda X: (["probabilities"], {"X": X}),
            result=lambda o: o[0], extra={"role": "reference"})
        p = fastml.Predictor(est, backend="native", n_threads=t).warmup()
        out[f"fastml native {t}t"] = Contender("fastml native", t, p.predict_proba, lambda X: (X,))
    p = fastml.Predictor(est, backend="onnxruntime").warmup()
    out["fastml onnxruntime"] = Contender("fastml onnxruntime", p.n_threads, p.predict_proba, lambda X: (X,))
    p = fastml.Predictor(est).warmup()
    out["fastml auto"] = Contender("fastml auto", p.n_threads, p.predict_proba, lambda X: (X,),
                                   backend=lambda X, p=p: p.backend_for(X.shape[0]))
    return out


CONTENDER_IDS = ("scikit-learn", "onnxruntime 1t", "onnxruntime 2t", "fastml native 1t",
                 "fastml native 2t", "fastml onnxruntime", "fastml auto")


@pytest.mark.parametrize("batch", BATCHES, ids=lambda b: f"batch={b}")
@pytest.mark.parametrize("cid", CONTENDER_IDS)
def test_predict_proba(benchmark, label, assert_close, model, contenders, cid, batch):
    est, X_all = model
    X = X_all[:batch]
    c = contenders[cid]
    want = est.predict_proba(X)
    args = c.args(X)
    for _ in range(WARMUP_CALLS):
        got = c.result(c.fn(*args))
    assert_close(got, want, f"{cid}, batch {batch}")
    # Input read + float64 probabilities written: the least a predict_proba call moves.
    nbytes = X.nbytes + want.nbytes
    label(benchmark, f"{WORKLOAD}, batch {batch}", contender=c.name, threads=c.threads, batch=batch,
          bytes=nbytes, workload=WORKLOAD, **(c.extra or {}),
          **({"backend": c.backend(X)} if c.backend else {}))
    benchmark(c.fn, *args)


# ---------------------------------------------------------------------- cold start
COLD_GROUP = f"cold start: load ONNX + predict 1 row ({WORKLOAD})"
COLD_ROUNDS = 5

ROW = "import numpy as np; row = np.array([[{row}]], dtype=np.float32); "
COLD_CODE = {
    # What a fresh worker process pays before its first answer.
    "fastml native": ROW + ("import fastml; p = fastml.Predictor({path!r}, backend='native'); "
                            "print(p.predict_proba(row).tolist()) if {check} else p.predict(row)"),
    "onnxruntime": ROW + ("import onnxruntime as ort; "
                          "s = ort.InferenceSession({path!r}, providers=['CPUExecutionProvider']); "
                          "y = s.run(['probabilities'], {{'X': row}})[0]; print(y.tolist()) if {check} else None"),
    # The interpreter and numpy alone: the floor under both.
    "python + numpy": ROW + "print([[]]) if {check} else None",
}


@pytest.fixture(scope="module")
def onnx_file(onnx_bytes, tmp_path_factory):
    path = tmp_path_factory.mktemp("bench_linear") / "logreg.onnx"
    path.write_bytes(onnx_bytes)
    return str(path)


@pytest.mark.parametrize("contender", tuple(COLD_CODE))
def test_cold_start(benchmark, label, assert_close, run_python, model, onnx_file, contender):
    est, X_all = model
    row = X_all[:1]
    fmt = dict(row=", ".join(repr(float(v)) for v in row[0]), path=onnx_file)
    # One untimed run checks the answer (and warms the page cache for every contender alike).
    printed = ast.literal_eval(run_python(COLD_CODE[contender].format(check=True, **fmt)))
    if contender != "python + numpy":
        assert_close(np.array(printed), est.predict_proba(row), f"cold start {contender}")
    code = COLD_CODE[contender].format(check=False, **fmt)
    label(benchmark, COLD_GROUP, contender=contender, threads=None, batch=1,
          **({"role": "reference"} if contender == "onnxruntime" else {}))
    benchmark.pedantic(run_python, args=(code,), rounds=COLD_ROUNDS, iterations=1, warmup_rounds=0)
