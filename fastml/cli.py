"""``fastml`` command line.

``fastml demo`` trains small models on data scikit-learn ships, converts them
to ONNX, runs them on every available backend (from the estimator and from the
ONNX file), and prints parity with scikit-learn and a latency table.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings

import numpy as np


def _models():
    from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_wine
    from sklearn.ensemble import GradientBoostingRegressor, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression, Ridge, SGDClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler, StandardScaler
    from sklearn.cluster import KMeans
    from sklearn.neural_network import MLPClassifier
    from sklearn.svm import SVC, LinearSVC

    digits, cancer, wine, diabetes = (load_digits(return_X_y=True), load_breast_cancer(return_X_y=True),
                                      load_wine(return_X_y=True), load_diabetes(return_X_y=True))
    return [
        ("LogisticRegression digits (10 classes)", make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)), digits),
        ("LogisticRegression breast_cancer (binary)", make_pipeline(StandardScaler(), LogisticRegression()), cancer),
        ("SGDClassifier modified_huber wine", make_pipeline(MinMaxScaler(), SGDClassifier(loss="modified_huber", random_state=0)), wine),
        ("LinearSVC wine", make_pipeline(StandardScaler(), LinearSVC()), wine),
        ("Ridge diabetes", Ridge(), diabetes),
        ("RandomForestClassifier breast_cancer", RandomForestClassifier(100, max_depth=10, random_state=0), cancer),
        ("GradientBoostingRegressor diabetes", GradientBoostingRegressor(random_state=0), diabetes),
        ("SVC rbf digits (10 classes)", make_pipeline(StandardScaler(), SVC()), digits),
        ("MLPClassifier(64) digits", make_pipeline(StandardScaler(), MLPClassifier((64,), max_iter=300, random_state=0)), digits),
        # fitted on float32: scikit-learn's KMeans.predict refuses float32 rows for float64 centers
        ("KMeans(8) wine", make_pipeline(StandardScaler(), KMeans(8, n_init=3, random_state=0)),
         (wine[0].astype(np.float32), wine[1])),
    ]


def _median_us(fn, X, budget_s=0.15):
    fn(X)
    times, start = [], time.perf_counter()
    while len(times) < 5 or (time.perf_counter() - start < budget_s and len(times) < 2000):
        t = time.perf_counter()
        fn(X)
        times.append(time.perf_counter() - t)
    return float(np.median(times)) * 1e6


def _fmt_us(us):
    return f"{us:9.1f}" if us < 10000 else f"{us / 1000:8.1f}m"


def fastml_measure(est, quantized, X) -> str:
    from fastml import quantize

    return str(quantize.measure(est, quantized, X, data="held-out rows",
                                activations=quantized.quantization_report.activations))


def demo(args) -> int:
    from fastml import Predictor
    from fastml.converters import to_onnx

    warnings.filterwarnings("ignore")
    rng = np.random.default_rng(0)
    tmp = tempfile.mkdtemp(prefix="fastml-demo-")
    print("fastml demo: train on scikit-learn's bundled data, convert to ONNX, run on every backend\n")
    parity_rows, latency_rows, ok = [], [], True
    for title, est, (X, y) in _models():
        est.fit(X, y)
        method = "predict_proba" if hasattr(est, "predict_proba") else (
            "decision_function" if hasattr(est, "decision_function") else "predict")
        path = os.path.join(tmp, title.split()[0] + ".onnx")
        with open(path, "wb") as f:
            f.write(to_onnx(est).SerializeToString())
        Xq = X.astype(np.float32)
        ref_pred = est.predict(Xq)
        ref_score = getattr(est, method)(Xq)
        runs = [("native", Predictor(est, backend="native")),
                ("native from .onnx", Predictor(path, backend="native")),
                ("onnxruntime", Predictor(est, backend="onnxruntime"))]
        auto = Predictor(est, backend="auto")
        regressor = method == "predict"
        for name, p in runs:
            same = float(np.mean(p.predict(Xq) == ref_pred))
            diff = float(np.max(np.abs(getattr(p, method)(Xq) - ref_score)))
            if name == "native":  # the .onnx graph and ONNX Runtime hold float32 weights
                ok &= diff < 1e-6 if regressor else same == 1.0
            parity_rows.append((title, name, method, "-" if regressor else f"{same:.2%}", diff))
        big = rng.standard_normal((args.rows, X.shape[1])).astype(np.float32)
        row = [title, method, auto.backend]
        for fn in (getattr(est, method), getattr(runs[2][1], method), getattr(runs[0][1], method)):
            row += [_median_us(fn, Xq[:1]), _median_us(fn, big)]
        latency_rows.append(row)

    print(f"{'model':44s} {'backend':18s} {'method':18s} {'predict==sklearn':>16s} {'max |diff|':>11s}")
    for title, name, method, same, diff in parity_rows:
        print(f"{title:44s} {name:18s} {method:18s} {same:>16s} {diff:11.2e}")
    print(f"\nmedian latency in microseconds (m = milliseconds); batch 1 and batch {args.rows}, "
          f"{Predictor.__module__.split('.')[0]} auto's choice for batch 1 shown")
    print(f"{'model':44s} {'auto':8s} {'sklearn 1':>10s} {'ORT 1':>10s} {'fastml 1':>10s} "
          f"{'sklearn N':>10s} {'ORT N':>10s} {'fastml N':>10s}")
    for title, method, auto, s1, sn, o1, on, f1, fn in latency_rows:
        print(f"{title:44s} {auto:8s} {_fmt_us(s1):>10s} {_fmt_us(o1):>10s} {_fmt_us(f1):>10s} "
              f"{_fmt_us(sn):>10s} {_fmt_us(on):>10s} {_fmt_us(fn):>10s}")
    print("\nint8 quantization (native VNNI kernel where the CPU has it), held-out rows:")
    for title, est, (X, y) in _models():
        if not title.startswith(("LogisticRegression digits", "MLPClassifier")):
            continue
        idx = rng.permutation(len(X))
        train, test = idx[: len(X) * 3 // 4], idx[len(X) * 3 // 4:]
        est.fit(X[train], y[train])
        q = Predictor(est, quantize="int8", calibration=X[train], backend="native")
        print(f"  {title:42s} {fastml_measure(est, q, X[test])}")
    print(f"\nONNX files written to {tmp}")
    if not ok:
        print("PARITY FAILURE: a native prediction differs from scikit-learn", file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fastml", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="train, convert and run small models; print parity and latency")
    d.add_argument("--rows", type=int, default=10000, help="rows of the large batch (default 10000)")
    args = parser.parse_args(argv)
    return {"demo": demo}[args.command](args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
