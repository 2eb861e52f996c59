"""The ONNX Runtime backend.

Sessions are created with explicit providers and report the providers that
really run. A model given as a scikit-learn estimator is exported through
skl2onnx once per input dtype (float32 graphs for float32 input, float64 graphs
for float64 input) and once more with ``raw_scores`` for ``decision_function``;
a model given as an ONNX graph runs as it is, its input cast to the graph's
input type.
"""
from __future__ import annotations

import logging
import threading
from typing import Dict, Optional, Tuple

import numpy as np

from .. import ir
from .._validation import check_input, nonfinite_error
from ..errors import BackendUnavailableError, InvalidOptionError, MethodUnavailableError, UnsupportedModelError
from . import register

log = logging.getLogger("fastml")
_ONNX_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64}


def _import_ort():
    try:
        import onnxruntime
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise BackendUnavailableError("the onnxruntime backend needs the onnxruntime package") from e
    return onnxruntime


def providers_for(device: str):
    ort = _import_ort()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise BackendUnavailableError(
                "device='cuda' needs onnxruntime's CUDAExecutionProvider, which this onnxruntime "
                f"build does not have (available: {ort.get_available_providers()}); "
                "install fastml[gpu] (onnxruntime-gpu) on a machine with a CUDA GPU")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise InvalidOptionError(f"unknown device {device!r}; choose 'cpu' or 'cuda'")


@register("onnxruntime")
class OrtBackend:
    name = "onnxruntime"

    def __init__(self, model: Optional[ir.Model], *, n_threads: int, device: str = "cpu",
                 onnx_model=None, estimator=None, max_rows: int | None = None, **_):
        if onnx_model is None and estimator is None:
            raise UnsupportedModelError("the onnxruntime backend needs an ONNX graph or a scikit-learn estimator")
        self._ort = _import_ort()
        self._providers = providers_for(device)
        self._n_threads = max(1, int(n_threads))
        self._onnx, self._est, self.model = onnx_model, estimator, model
        est = ir.as_pipeline(model).estimator if model is not None else None
        self._owner = est.name if est is not None else "ONNX model"
        self._nf = ir.as_pipeline(model).n_features if model is not None else None
        self._max_rows = max_rows
        self._lock = threading.RLock()
        self._sessions: Dict[Tuple[bool, type], tuple] = {}
        self._est_ir = est
        first = self._session(raw=False, dtype=np.float32)
        if self._nf is None:
            shape = first[0].get_inputs()[0].shape
            self._nf = shape[1] if len(shape) == 2 and isinstance(shape[1], int) else None
        self.info = {"providers": first[0].get_providers(), "n_threads": self._n_threads}

    def _session(self, *, raw: bool, dtype) -> tuple:
        key = (raw, dtype if self._est is not None else None)
        s = self._sessions.get(key)
        if s is not None:
            return s
        with self._lock:
            s = self._sessions.get(key)
            if s is None:
                if self._est is not None:
                    from fastml.converters import to_onnx

                    try:
                        proto = to_onnx(self._est, n_features=self._nf, dtype=dtype, raw_scores=raw)
                    except UnsupportedModelError as e:
                        if dtype is not np.float64:
                            raise
                        # skl2onnx writes no float64 graph for some models (LinearSVC,
                        # RidgeClassifier, Normalizer(max)): run float64 input on the float32 graph.
                        log.warning("fastml: no float64 ONNX graph (%s); float64 input runs in float32", e)
                        s = self._sessions[key] = self._session(raw=raw, dtype=np.float32)
                        return s
                elif raw:
                    raise MethodUnavailableError(
                        "decision_function on the onnxruntime backend needs the scikit-learn estimator "
                        "(this ONNX graph outputs probabilities, not scores)")
                else:
                    proto = self._onnx
                so = self._ort.SessionOptions()
                so.intra_op_num_threads = self._n_threads
                so.inter_op_num_threads = 1
                try:
                    sess = self._ort.InferenceSession(proto.SerializeToString(), so, providers=self._providers)
                except Exception as e:
                    raise UnsupportedModelError(f"onnxruntime cannot load this model: {e}") from e
                inp = sess.get_inputs()[0]
                s = (sess, inp.name, _ONNX_TYPES.get(inp.type, np.float32), [o.name for o in sess.get_outputs()])
                self._sessions[key] = s
        return s

    def _call(self, X, *, raw: bool):
        X = check_input(X, self._nf, self._owner, max_rows=self._max_rows) if self._nf else np.asarray(X)
        err = nonfinite_error(X, self._owner)
        if err is not None:
            raise err
        sess, name, dtype, outputs = self._session(raw=raw, dtype=X.dtype.type)
        return sess.run(outputs, {name: X.astype(dtype, copy=False)})

    def _second_output(self, outs, method: str):
        if len(outs) < 2:
            raise MethodUnavailableError(f"{self._owner}: this ONNX graph has no output for {method}")
        return np.asarray(outs[1], dtype=np.float64)

    def predict(self, X):
        est = self._est_ir
        if est is not None and est.is_classifier and est.proba == "modified_huber" and self._est is not None:
            # skl2onnx's label is the argmax of clipped probabilities, which tie;
            # scikit-learn's is the argmax of the scores.
            scores = self.decision_function(X)
            idx = (scores > 0).astype(np.intp) if scores.ndim == 1 else scores.argmax(axis=1)
            return est.classes.take(idx)
        outs = self._call(X, raw=False)
        y = np.asarray(outs[0])
        if est is not None and est.is_classifier:
            return y.astype(est.classes.dtype, copy=False).reshape(-1)
        y = y.astype(np.float64, copy=False)
        if est is not None and est.flat:
            return y.reshape(-1)
        return y

    def predict_proba(self, X):
        est = self._est_ir
        if est is not None and (not est.is_classifier or est.proba == "none"):
            raise MethodUnavailableError(f"{self._owner} has no predict_proba")
        return self._second_output(self._call(X, raw=False), "predict_proba")

    def decision_function(self, X):
        est = self._est_ir
        if est is not None and not est.is_classifier:
            raise MethodUnavailableError(f"{self._owner} is a regressor and has no decision_function")
        raw = est is None or est.proba != "none"
        scores = self._second_output(self._call(X, raw=raw), "decision_function")
        if est is not None and est.n_targets == 1 and scores.ndim == 2:
            return scores[:, -1].copy()
        return scores
