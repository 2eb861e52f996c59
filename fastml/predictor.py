"""``Predictor``: fastml's public face.

A Predictor takes a fitted scikit-learn estimator or pipeline, an ONNX file
(path, bytes or ``onnx.ModelProto``) or a fastml IR object, and runs it on one
of the registered backends with scikit-learn's method names, shapes and
dtypes. ``backend="auto"`` times the available backends on this model at a
small and a large batch size and routes each call to the faster one; what it
measured and chose is in ``backend_info``.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any, Dict, List, Optional

import numpy as np

from . import ir
from .backends import get_backend
from .kernels import available_threads
from .quantize import quantized_backend
from .errors import (BackendUnavailableError, FastMLError, InvalidModelError, InvalidOptionError,
                     MethodUnavailableError, UnsupportedModelError)

log = logging.getLogger("fastml")

#: batch sizes ``auto`` measures; a call uses the winner at the measured size
#: nearest to its row count on a log scale.
AUTO_SIZES = (1, 128, 4096)
AUTO_BOUNDS = (12, 724)  # geometric midpoints of AUTO_SIZES


def _load_onnx(model):
    import onnx

    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, (bytes, bytearray, memoryview)):
        data, where = bytes(model), "bytes"
    else:
        path = os.fspath(model)
        if path.endswith((".pkl", ".pickle", ".joblib")):
            raise UnsupportedModelError(
                f"{path}: fastml does not unpickle files (unpickling runs code); load the estimator "
                "yourself if you trust the file and pass the object")
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise InvalidModelError(f"cannot read ONNX file {path!r}: {e}") from None
        where = path
    try:
        proto = onnx.ModelProto()
        proto.ParseFromString(data)
    except Exception as e:
        raise InvalidModelError(f"{where}: not a valid ONNX model ({type(e).__name__}: {e})") from None
    if not proto.graph.node:
        raise InvalidModelError(f"{where}: the ONNX graph has no nodes")
    return proto


def _is_onnx_source(model) -> bool:
    if isinstance(model, (str, os.PathLike, bytes, bytearray, memoryview)):
        return True
    return type(model).__name__ == "ModelProto" and type(model).__module__.startswith("onnx")


def _median_seconds(fn, X, reps: int) -> float:
    fn(X)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn(X)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


class Predictor:
    """Run a trained model fast, with scikit-learn's API.

    Parameters
    ----------
    model : fitted scikit-learn estimator or Pipeline, ONNX path / bytes / ModelProto, or fastml IR
    backend : {"auto", "native", "onnxruntime"}
        ``auto`` measures the available backends on this model and uses the
        faster one per batch size (see ``backend_info``).
    device : {"cpu", "cuda"}
        ``cuda`` runs the onnxruntime backend on ``CUDAExecutionProvider`` and
        raises :class:`~fastml.errors.BackendUnavailableError` where it is missing.
    n_threads : int, optional
        Threads for batch calls (default: every core this process may use).
        Calls with few rows always run on the calling thread.
    max_rows : int, optional
        Refuse inputs with more rows (an :class:`~fastml.errors.InputError`).
    quantize : {"int8", "int8-static"}, optional
        Run a quantized form of the model (see :func:`fastml.quantize`).
        ``quantization_report`` holds what it changed.
    calibration : array-like, optional
        Rows like the real input: the report is measured on them (and
        ``"int8-static"`` takes its activation ranges from them).

    Calls are thread-safe: backends hold no per-call state.
    """

    def __init__(self, model, *, backend: str = "auto", device: str = "cpu",
                 n_threads: Optional[int] = None, max_rows: Optional[int] = None,
                 quantize: Optional[str] = None, calibration=None):
        if backend not in ("auto", "native", "onnxruntime"):
            get_backend(backend)  # raises a clear error for unknown names
        if device not in ("cpu", "cuda"):
            raise InvalidOptionError(f"unknown device {device!r}; choose 'cpu' or 'cuda'")
        self.n_threads = int(n_threads) if n_threads else available_threads()
        self.device = device
        self._estimator = self._onnx = None
        from .search._predictor import IndexRunner, is_index
        if is_index(model):  # a fastml.search index: search(xq, k) runs on the index (or its ONNX export)
            self.ir, self._single, self._methods = None, True, frozenset({"search"})
            self._small = IndexRunner(model, backend, n_threads)
            self._backends, self.backend_info = {self._small.name: self._small}, self._small.info
            return
        self.ir: Optional[ir.Model] = None
        import_error: Optional[FastMLError] = None
        if isinstance(model, ir.ESTIMATORS + (ir.Pipeline,)):
            self.ir = model.validate()
        elif _is_onnx_source(model):
            self._onnx = _load_onnx(model)
            try:
                from fastml.converters import from_onnx

                self.ir = from_onnx(self._onnx)
            except UnsupportedModelError as e:
                import_error = e
        else:
            from fastml.converters import import_model

            self.ir = import_model(model)
            self._estimator = model

        self.quantization_report = None  # see fastml.quantize
        if quantize is not None:
            from .quantize import quantize as _quantize

            self.ir, self.quantization_report = _quantize(self.ir if self.ir is not None else model, quantize,
                                                          calibration=calibration, n_threads=self.n_threads)
        self._methods = ir.as_pipeline(self.ir).estimator.methods() if self.ir is not None else frozenset()
        wanted: List[str]
        if backend != "auto":
            wanted = [backend]
        elif device == "cuda":
            wanted = ["onnxruntime"]
        else:
            wanted = ["native", "onnxruntime"]
        failures: Dict[str, str] = {}
        if backend == "auto" and self._estimator is not None and self.ir is not None \
                and isinstance(ir.as_pipeline(self.ir).estimator, ir.TreeEnsemble):
            # The ONNX export of a tree model is not the same model: skl2onnx drops
            # scikit-learn's missing-value directions, onnxmltools rounds LightGBM's float64
            # thresholds to float32; rows then reach other leaves. auto serves exact answers.
            wanted = ["native"]
            failures["onnxruntime"] = ("not considered by auto: the ONNX export of this tree model can "
                                       "send rows to other leaves than the source (float32 thresholds, "
                                       "missing-value directions); ask for backend='onnxruntime' to use it")
        kwargs = dict(n_threads=self.n_threads, device=device, onnx_model=self._onnx,
                      estimator=self._estimator, max_rows=max_rows, calibration=calibration)
        self._backends: Dict[str, Any] = {}
        for name in wanted:
            try:
                if name == "native":
                    if self.ir is None:
                        raise import_error
                    if device != "cpu":
                        raise BackendUnavailableError("the native backend runs on the CPU only")
                self._backends[name] = (quantized_backend(name, self.ir) or get_backend(name))(self.ir, **kwargs)
            except (FastMLError, ImportError) as e:
                if backend != "auto" or device == "cuda":
                    raise
                failures[name] = f"{type(e).__name__}: {e}"
                log.warning("fastml: backend %r unavailable for this model, not used: %s", name, e)
        if not self._backends:
            raise UnsupportedModelError(f"no backend can run this model: {failures}")
        self._choose(backend, failures)

    # ------------------------------------------------------------------ backend choice
    def _choose(self, requested: str, failures: Dict[str, str]) -> None:
        names = list(self._backends)
        info: Dict[str, Any] = {"requested": requested, "device": self.device, "n_threads": self.n_threads,
                                "unavailable": failures}
        if len(names) == 1:
            winners = [names[0]] * len(AUTO_SIZES)
            info["reason"] = (f"{requested!r} requested" if requested != "auto"
                              else f"auto: only {names[0]!r} is used (see 'unavailable' for the others)")
        else:
            method = "predict_proba" if self._has("predict_proba") else "predict"
            rng = np.random.default_rng(0)
            timings: Dict[str, Dict[int, float]] = {b: {} for b in names}
            for n in AUTO_SIZES:
                X = rng.standard_normal((n, self.n_features_in_)).astype(np.float32)
                reps = max(15, min(200, 20000 // n))
                for name in names:
                    timings[name][n] = _median_seconds(getattr(self._backends[name], method), X, reps)
            winners = [min(names, key=lambda b: timings[b][n]) for n in AUTO_SIZES]
            info["measured_us"] = {b: {f"batch {n}": round(t * 1e6, 2) for n, t in ts.items()}
                                   for b, ts in timings.items()}
            info["reason"] = ("auto: fastest " + method + " measured on this machine: " + ", ".join(
                f"{w!r} at batch {n}" for w, n in zip(winners, AUTO_SIZES)))
        self._route = [self._backends[w] for w in winners]
        self._small = self._route[0]
        self._single = len(set(winners)) == 1
        if self._single:
            info["backend"] = winners[0]
        else:
            info["backend"] = {f"< {AUTO_BOUNDS[0]} rows": winners[0],
                               f"{AUTO_BOUNDS[0]}-{AUTO_BOUNDS[1] - 1} rows": winners[1],
                               f">= {AUTO_BOUNDS[1]} rows": winners[2]}
        for name, b in self._backends.items():
            info[name] = dict(b.info)
        self.backend_info = info
        log.info("fastml: %s", info["reason"])

    def backend_for(self, n_rows: int) -> str:
        """Name of the backend that runs a call with ``n_rows`` rows."""
        return self._route[(n_rows >= AUTO_BOUNDS[0]) + (n_rows >= AUTO_BOUNDS[1])].name

    def _pick(self, X):
        if self._single:
            return self._small
        n = X.shape[0] if isinstance(X, np.ndarray) and X.ndim == 2 else len(X)
        return self._route[(n >= AUTO_BOUNDS[0]) + (n >= AUTO_BOUNDS[1])]

    def _has(self, method: str) -> bool:
        if self.ir is None:
            return method == "predict"
        return method in self._methods

    def _call(self, method: str, X):
        # a model known only as an ONNX graph: the onnxruntime backend decides
        if method not in self._methods and self.ir is not None:
            est = ir.as_pipeline(self.ir).estimator
            what = " is a regressor and" if method == "decision_function" and not est.is_classifier else ""
            raise MethodUnavailableError(f"{est.name}{what} has no {method}")
        return getattr(self._small if self._single else self._pick(X), method)(X)

    # ------------------------------------------------------------------ scikit-learn API
    def predict(self, X) -> np.ndarray:
        """Class labels (classifiers) or predicted values (regressors)."""
        return self._pick(X).predict(X)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, shape (n_samples, n_classes), float64."""
        return self._call("predict_proba", X)

    def decision_function(self, X) -> np.ndarray:
        """Decision scores: (n_samples,) for binary classifiers, else (n_samples, n_classes)."""
        return self._call("decision_function", X)

    def transform(self, X) -> np.ndarray:
        """Distances to the cluster centers of a KMeans / MiniBatchKMeans, shape
        (n_samples, n_clusters), like scikit-learn's ``transform``."""
        return self._call("transform", X)

    def search(self, xq, k: int):
        """The k nearest neighbours of each query in a fastml.search index: ``(D, I)``, as
        ``index.search`` returns them. Other models raise MethodUnavailableError."""
        if "search" not in self._methods:
            raise MethodUnavailableError("search needs a fastml.search index: Predictor(index)")
        return self._small.search(xq, k)

    def score_samples(self, X) -> np.ndarray:
        """Anomaly scores of an IsolationForest (lower is more abnormal), shape (n_samples,)."""
        return self._call("score_samples", X)

    def apply(self, X) -> np.ndarray:
        """Index of the leaf each row reaches in each tree, shape (n_samples, n_trees), like
        scikit-learn's ``apply`` (node ids are the source's own). Runs on the native backend."""
        if "native" not in self._backends:
            raise MethodUnavailableError("apply needs the native backend, which cannot run this model")
        if not self._has("apply"):
            raise MethodUnavailableError(f"{ir.as_pipeline(self.ir).name} has no apply")
        return self._backends["native"].apply(X)

    @property
    def classes_(self) -> np.ndarray:
        est = ir.as_pipeline(self.ir).estimator if self.ir is not None else None
        if est is None or not est.is_classifier:
            raise MethodUnavailableError("this model is not a classifier (no classes_)")
        return est.classes

    @property
    def n_features_in_(self) -> int:
        if self.ir is not None:
            return ir.as_pipeline(self.ir).n_features
        b = self._backends.get("onnxruntime")
        if b is not None and b._nf is not None:
            return b._nf
        raise MethodUnavailableError("the number of input features is not known for this model")

    @property
    def backend(self) -> str:
        """Name of the backend that runs single-row calls."""
        return self._small.name

    def warmup(self, dtypes=(np.float32, np.float64)) -> "Predictor":
        """Run every backend once on one row of each of ``dtypes`` so that the first real call
        pays no set-up (a tree model builds its node records for an input type on that type's
        first call; ONNX Runtime may load a second graph for float64)."""
        for dt in np.atleast_1d(dtypes):
            X = np.zeros((1, self.n_features_in_), dtype=np.dtype(dt))
            for b in self._backends.values():
                b.predict(X)
        return self

    def save(self, path) -> None:
        """Write the model as ONNX (the original graph, or a skl2onnx export without ZipMap).
        A quantized model: int8 linear models and MLPs write ONNX Runtime's int8 graph (what the
        onnxruntime int8 backend runs, see :func:`fastml.quantize.quantized_onnx`); quantized trees
        and SVMs raise UnsupportedModelError (save the float model instead)."""
        from .quantize import quantized_onnx

        data = quantized_onnx(self.ir, self._backends.get("onnxruntime"))  # None: a float model
        if data is not None:
            with open(os.fspath(path), "wb") as f:
                f.write(data)
            return
        if self._onnx is not None:
            proto = self._onnx
        elif self._estimator is not None:
            from fastml.converters import to_onnx

            proto = to_onnx(self._estimator, n_features=self.n_features_in_)
        else:
            raise UnsupportedModelError("saving a model built from fastml IR alone is not supported yet")
        with open(os.fspath(path), "wb") as f:
            f.write(proto.SerializeToString())

    def __repr__(self) -> str:
        name = ir.as_pipeline(self.ir).name if self.ir is not None else "ONNX model"
        return f"Predictor({name}, backend={self.backend_info['backend']!r})"
