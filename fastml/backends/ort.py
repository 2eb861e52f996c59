"""The ONNX Runtime backend.

Sessions are created lazily, one per (graph, input dtype), with explicit
providers, and report the providers that really run. The graphs:

``"main"``    a model given as an estimator: ``converters.to_onnx`` of it
              (labels and probabilities, values, or IsolationForest's label and
              ``decision_function``); a model given as an ONNX graph: that graph,
              its input cast to the graph's input type
``"raw"``     ``to_onnx(..., raw_scores=True)``: a classifier's decision scores
              (estimators only)
``"scores"``  a linear model known from an ONNX file: its scores, written from
              the IR (labels of rows whose probabilities tie, see below)

What the graphs output becomes scikit-learn's shapes and dtypes through the
IR (``methods()``, ``is_classifier``, ``flat``, ``post``), never through the
estimator's class.

* Float64 input runs the float64 graph where the exporter writes one, else the
  float32 graph (logged once per graph).
* NaN and +-inf are refused exactly where the source refuses them (the IR's
  ``allow_nan`` / ``allow_inf``; a scaler step passes NaN on and refuses inf,
  a Normalizer refuses both), with scikit-learn's words. A pipeline's graph
  also outputs the tensor its estimator receives, which is judged like the
  estimator judges it: a finite float32 value that a scaler turns into inf is
  refused, as scikit-learn refuses it.
* Labels of linear classifiers with probabilities: the graphs take the argmax
  of the probabilities, which tie where sigmoids saturate or modified-Huber
  probabilities clip; scikit-learn takes the argmax of the scores. Rows whose
  two largest probabilities are equal are decided again on the scores.
* One-vs-rest probabilities of float32 input: where every sigmoid underflows
  in float32 the graph returns a uniform row; such rows run again on the
  float64 graph (scikit-learn computes them in float64).
"""
from __future__ import annotations

import logging
import threading
from typing import Dict, List, NamedTuple, Optional, Tuple

import numpy as np

from .. import ir
from .._validation import all_finite, check_input, nonfinite_error
from ..errors import (BackendUnavailableError, InputError, InvalidOptionError, MethodUnavailableError,
                      UnsupportedModelError)
from . import register

log = logging.getLogger("fastml")
_ONNX_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64}
#: extra graph output holding a pipeline's preprocessed features
_FEATURES = "fastml_features"


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


def refusal(X: np.ndarray, owner: str, *, allow_nan: bool, allow_inf: bool,
            inf_refused: Optional[np.ndarray] = None) -> Optional[InputError]:
    """The error the source raises for NaN / inf in ``X`` given what it accepts (``inf_refused``:
    columns that refuse +-inf although the others take it), or None."""
    if not allow_nan and not allow_inf:
        return nonfinite_error(X, owner)
    if all_finite(X):  # the common case, in one pass
        return None
    if not allow_nan and np.isnan(X).any():
        return nonfinite_error(X, owner)
    bad = X if not allow_inf else X[:, inf_refused] if inf_refused is not None else None
    if bad is not None and np.isinf(bad).any():
        return nonfinite_error(np.where(np.isnan(bad), 0, bad).astype(X.dtype, copy=False), owner)
    return None


class _Session(NamedTuple):
    sess: object
    input: str
    dtype: type
    outputs: List[str]
    features: bool  # the last output is _FEATURES


@register("onnxruntime")
class OrtBackend:
    name = "onnxruntime"

    def __init__(self, model: Optional[ir.Model], *, n_threads: int, device: str = "cpu",
                 onnx_model=None, estimator=None, max_rows: int | None = None, **_):
        if onnx_model is None and estimator is None:
            raise UnsupportedModelError("the onnxruntime backend needs an ONNX graph or an estimator")
        self._ort = _import_ort()
        self._providers = providers_for(device)
        self._n_threads = max(1, int(n_threads))
        self._onnx, self._est, self.model = onnx_model, estimator, model
        pipe = ir.as_pipeline(model) if model is not None else None
        est = pipe.estimator if pipe is not None else None
        self._est_ir = est
        self._owner = est.name if est is not None else "ONNX model"
        self._nf = pipe.n_features if pipe is not None else None
        self._methods = est.methods() if est is not None else None
        self._max_rows = max_rows
        # what the source accepts in X, and what its estimator accepts after the steps
        est_nan, est_inf = bool(getattr(est, "allow_nan", False)), bool(getattr(est, "allow_inf", False))
        steps = pipe.steps if pipe is not None else ()
        inf_refused = getattr(est, "inf_refused", None)
        self._accepts = (est_nan and all(isinstance(s, ir.Scaler) for s in steps), est_inf and not steps,
                         inf_refused)
        self._est_accepts = (est_nan, est_inf, inf_refused)
        self._steps = bool(steps)
        self._tie_break = isinstance(est, ir.Linear) and est.is_classifier and est.proba != "none"
        self._ovr_sigmoids = (estimator is not None and isinstance(est, ir.Linear) and est.proba == "logistic"
                              and est.n_targets > 1)
        self._lock = threading.RLock()
        self._sessions: Dict[Tuple[str, Optional[type]], _Session] = {}
        self._producer = "unknown"  # who wrote the graph (backend_info)
        first = self._session("main", np.float32)
        if self._nf is None:
            shape = first.sess.get_inputs()[0].shape
            self._nf = shape[1] if len(shape) == 2 and isinstance(shape[1], int) else None
        self.info = {"providers": first.sess.get_providers(), "n_threads": self._n_threads,
                     "graph": self._producer}

    # ------------------------------------------------------------------ sessions
    def _proto(self, kind: str, dtype):
        if kind == "scores":
            from fastml.converters.onnx_export import linear_scores_onnx

            return linear_scores_onnx(self.model, dtype=dtype)
        if self._est is None:
            if kind == "raw":
                raise MethodUnavailableError(
                    "decision_function on the onnxruntime backend needs the scikit-learn estimator "
                    "(this ONNX graph outputs probabilities, not scores)")
            return self._onnx
        from fastml.converters import to_onnx

        return to_onnx(self._est, n_features=self._nf, dtype=dtype, raw_scores=kind == "raw",
                       features_output=_FEATURES if self._steps else None)

    def _session(self, kind: str, dtype) -> _Session:
        key = (kind, dtype if (self._est is not None or kind == "scores") else None)
        s = self._sessions.get(key)
        if s is not None:
            return s
        with self._lock:
            s = self._sessions.get(key)
            if s is not None:
                return s
            try:
                proto = self._proto(kind, dtype)
            except UnsupportedModelError as e:
                if dtype is not np.float64:
                    raise
                # no float64 graph (skl2onnx: LinearSVC, RidgeClassifier, IsolationForest;
                # onnxmltools: every model): float64 input runs on the float32 graph
                log.warning("fastml: no float64 ONNX graph (%s); float64 input runs in float32", e)
                s = self._sessions[key] = self._session(kind, np.float32)
                return s
            so = self._ort.SessionOptions()
            so.intra_op_num_threads = self._n_threads
            so.inter_op_num_threads = 1
            try:
                sess = self._ort.InferenceSession(proto.SerializeToString(), so, providers=self._providers)
            except Exception as e:
                raise UnsupportedModelError(f"onnxruntime cannot load this model: {e}") from e
            if kind == "main" and dtype is np.float32:
                self._producer = proto.producer_name or "unknown"
            inp = sess.get_inputs()[0]
            outputs = [o.name for o in sess.get_outputs()]
            features = _FEATURES in outputs
            if features:
                outputs = [o for o in outputs if o != _FEATURES] + [_FEATURES]
            s = _Session(sess, inp.name, _ONNX_TYPES.get(inp.type, np.float32), outputs, features)
            self._sessions[key] = s
        return s

    # ------------------------------------------------------------------ running
    def _prepare(self, X) -> np.ndarray:
        X = check_input(X, self._nf, self._owner, max_rows=self._max_rows) if self._nf else np.asarray(X)
        allow_nan, allow_inf, inf_refused = self._accepts
        err = refusal(X, self._owner, allow_nan=allow_nan, allow_inf=allow_inf, inf_refused=inf_refused)
        if err is not None:
            raise err
        return X

    def _run(self, kind: str, X: np.ndarray) -> list:
        s = self._session(kind, X.dtype.type)
        outs = s.sess.run(s.outputs, {s.input: X.astype(s.dtype, copy=False)})
        if s.features:
            Z = outs.pop()
            allow_nan, allow_inf, inf_refused = self._est_accepts
            err = refusal(Z, self._owner, allow_nan=allow_nan, allow_inf=allow_inf, inf_refused=inf_refused)
            if err is not None:
                raise err
        return outs

    def _second_output(self, outs, method: str) -> np.ndarray:
        if len(outs) < 2:
            raise MethodUnavailableError(f"{self._owner}: this ONNX graph has no output for {method}")
        return np.asarray(outs[1], dtype=np.float64)

    def _has(self, method: str) -> bool:
        return self._methods is None or method in self._methods

    def _scores(self, X: np.ndarray, *, from_ir: bool = False) -> np.ndarray:
        """Decision scores in scikit-learn's shape (1-D for a single column).

        ``from_ir``: a linear model from an ONNX file that outputs probabilities
        gets its scores from a graph written from the IR (for labels only: its
        ``decision_function`` stays unavailable, the file does not compute it).
        """
        est = self._est_ir
        svm = isinstance(est, ir.KernelSVM)
        if from_ir and self._est is None and isinstance(est, ir.Linear):
            scores = np.asarray(self._run("scores", X)[0], dtype=np.float64)
        else:
            # a graph whose second output is probabilities has a raw-scores twin (so has a binary
            # SVC's, whose main graph outputs libsvm's [-s, s] where scikit-learn says -s)
            raw = est is None or "predict_proba" in self._methods or (svm and est.is_classifier)
            scores = self._second_output(self._run("raw" if raw else "main", X), "decision_function")
        one = getattr(est, "n_targets", 0) == 1 or (svm and (est.n_classes == 2 or not est.is_classifier))
        if est is not None and one and scores.ndim == 2:
            return scores[:, -1].copy()
        return scores

    def _break_ties(self, X: np.ndarray, proba, labels: np.ndarray) -> np.ndarray:
        P = np.asarray(proba)
        if P.ndim != 2 or P.shape[1] < 2:
            return labels
        top2 = np.partition(P, -2, axis=1)[:, -2:]
        tied = top2[:, 0] == top2[:, 1]
        if not tied.any():
            return labels
        scores = self._scores(X[tied], from_ir=True)
        idx = (scores > 0).astype(np.intp) if scores.ndim == 1 else scores.argmax(axis=1)
        labels = labels.copy()
        labels[tied] = self._est_ir.classes.take(idx)
        return labels

    # ------------------------------------------------------------------ public
    def predict(self, X):
        X = self._prepare(X)
        outs = self._run("main", X)
        est = self._est_ir
        y = np.asarray(outs[0])
        if est is None:  # a graph fastml cannot read: values as float64, labels (ints, strings) 1-D
            if y.dtype.kind == "f":
                return y.astype(np.float64, copy=False)
            return y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y
        if isinstance(est, ir.Centroids):
            return y.reshape(-1).astype(np.int32, copy=False)  # scikit-learn's label dtype
        if getattr(est, "multilabel", False):
            return y.astype(int, copy=False)  # the indicator matrix
        if isinstance(est, ir.KernelSVM) and not est.is_classifier:
            # a OneClassSVM's label is Sign(score) (0 where the score is exactly 0, where
            # scikit-learn says -1); an SVR's value is one column
            return y.reshape(-1).astype(np.int64 if est.kind == "one_class" else np.float64, copy=False)
        if est.is_classifier:
            labels = y.reshape(-1).astype(est.classes.dtype, copy=False)
            return self._break_ties(X, outs[1], labels) if self._tie_break and len(outs) > 1 else labels
        if getattr(est, "post", None) == "isolation":
            return y.reshape(-1).astype(np.int64, copy=False)
        y = y.astype(np.float64, copy=False)
        # skl2onnx reshapes a multi-output MLPRegressor's (n, k) values to (n * k, 1)
        return y.reshape(-1) if est.flat else y.reshape(X.shape[0], -1)

    def predict_proba(self, X):
        if not self._has("predict_proba"):
            raise MethodUnavailableError(f"{self._owner} has no predict_proba")
        X = self._prepare(X)
        P = self._second_output(self._run("main", X), "predict_proba")
        if self._ovr_sigmoids and X.dtype == np.float32:
            # float32 one-vs-rest sigmoids all underflow to 0 for scores below about -88 and
            # the graph's zero guard makes the row uniform; scikit-learn computes in float64:
            # so do those rows (float32 -> float64 is exact)
            uniform = np.all(P == P[:, :1], axis=1)
            if uniform.any():
                P[uniform] = self._second_output(self._run("main", X[uniform].astype(np.float64)),
                                                 "predict_proba")
        return P

    def decision_function(self, X):
        est = self._est_ir
        if not self._has("decision_function"):
            what = " is a regressor and" if not est.is_classifier else ""
            raise MethodUnavailableError(f"{self._owner}{what} has no decision_function")
        X = self._prepare(X)
        if getattr(est, "post", None) == "isolation":
            return self._second_output(self._run("main", X), "decision_function").reshape(-1)
        return self._scores(X)

    def transform(self, X):
        est = self._est_ir
        if est is None or "transform" not in self._methods:
            raise MethodUnavailableError(f"{self._owner} has no transform")
        X = self._prepare(X)
        D = self._second_output(self._run("main", X), "transform")
        # skl2onnx's graph takes Sqrt of ||x||^2 - 2 x.c + ||c||^2 without scikit-learn's
        # clamp at 0: a rounding-negative square gives NaN where the distance is 0 (X is finite)
        np.nan_to_num(D, copy=False, nan=0.0)
        is32 = X.dtype == np.float32 and getattr(est, "precision", "float64") == "float32"
        return D.astype(np.float32) if is32 else D

    def score_samples(self, X):
        est = self._est_ir
        if est is None or "score_samples" not in self._methods:
            raise MethodUnavailableError(f"{self._owner} has no score_samples")
        # the graph outputs decision_function = score_samples - offset_
        offset = est.offset if isinstance(est, ir.KernelSVM) else est.post_params[1]
        return self.decision_function(X) + offset
