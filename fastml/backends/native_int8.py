"""Native runners of the quantized IR (:mod:`fastml.ir_quant`) on the int8 kernel.

They register themselves in the native backend's ``RUNNERS`` table, so
``Predictor(..., backend="native")`` runs a quantized model like any other.
What scores become (labels, probabilities) is :class:`QuantizedHead`, which
the onnxruntime int8 runner shares, so both backends finish alike.
"""
from __future__ import annotations

import numpy as np

from .. import ir, ir_quant
from ..errors import MethodUnavailableError
from ..kernels import _int8
from .native import RUNNERS, LinearNative, _Native


def _sigmoid(s: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-s))


def _kernel_args(est) -> dict:
    """Static activation quantization: each layer's [lo, hi] as the kernel's (scale, zero point),
    computed as the kernel computes its dynamic ones (float32)."""
    if est.input_ranges is None:
        return {}
    lo = np.minimum(est.input_ranges[:, 0], 0).astype(np.float32)
    hi = np.maximum(est.input_ranges[:, 1], 0).astype(np.float32)
    s = ((hi - lo) / np.float32(255)).astype(np.float32)
    s[~(s > 0)] = 1
    z = np.clip(np.rint(-lo * (np.float32(1) / s)), 0, 255).astype(np.int32)
    return {"input_scales": s, "input_zeros": z}


class QuantizedHead:
    """scikit-learn's outputs from a quantized model's values: a QLinear's scores, or a QMLP's
    last layer after its output activation. Subclasses provide ``_values(X)``."""

    def _head_init(self, est) -> None:
        self._est = est
        self._methods = est.methods()
        self._classes = est.classes
        self._linear = isinstance(est, ir_quant.QLinear)
        self._binary = est.is_classifier and est.n_targets == 1 and not getattr(est, "multilabel", False)

    def _need(self, method: str) -> None:
        if method not in self._methods:
            what = " is a regressor and" if not self._est.is_classifier else ""
            raise MethodUnavailableError(f"{self._est.name}{what} has no {method}")

    def decision_function(self, X):
        self._need("decision_function")
        s = self._values(X)
        return s[:, 0].copy() if self._binary else s

    def predict_proba(self, X):
        self._need("predict_proba")
        v = self._values(X)
        if not self._linear or self._est.proba == "softmax":
            if self._linear:
                v = np.exp(v - v.max(axis=1, keepdims=True))
                v /= v.sum(axis=1, keepdims=True)
            return np.hstack([1.0 - v, v]) if self._binary else v
        if self._est.proba == "logistic":
            p = _sigmoid(v)
            return np.hstack([1.0 - p, p]) if self._binary else p / p.sum(axis=1, keepdims=True)
        # modified Huber, as SGDClassifier normalises it
        p = (np.clip(v, -1.0, 1.0) + 1.0) / 2.0
        if self._binary:
            return np.hstack([1.0 - p, p])
        total = p.sum(axis=1, keepdims=True)
        zero = total[:, 0] == 0
        p[zero] = 1.0
        total[zero] = p.shape[1]
        return p / total

    def predict(self, X):
        est = self._est
        v = self._values(X)
        if not est.is_classifier:
            return v.reshape(-1) if est.flat else v
        if getattr(est, "multilabel", False):
            return (v > 0.5).astype(int)
        if self._binary:
            return self._classes.take((v[:, 0] > (0.0 if self._linear else 0.5)).astype(np.intp))
        return self._classes.take(v.argmax(axis=1))


class Int8Native(QuantizedHead, _Native):
    """A QLinear or QMLP (optionally behind preprocessing steps) on the int8 kernel."""

    _run = LinearNative._run

    def __init__(self, model, *, n_threads: int, max_rows: int | None = None, portable: bool = False):
        super().__init__(model, n_threads=n_threads, max_rows=max_rows)
        est = ir.as_pipeline(model).estimator
        self._head_init(est)
        guard = None
        if self._linear:
            layers = ([est.coef_q.T], [est.coef_scale], [est.intercept], "identity", "identity")
            if est.float_coef is not None:  # the exact-argmax guard (see fastml.quantize)
                rtol, atol = est.tolerance if est.tolerance is not None else (0.0, -1.0)
                guard = (est.float_coef, est.intercept, est.is_classifier, rtol, atol)
        else:
            layers = (list(est.weights_q), list(est.weight_scales), list(est.biases), est.activation,
                      est.out_activation)
        self._k = _int8.Int8Kernel(*layers, portable=portable, guard=guard, residual=bool(est.residual),
                                   **_kernel_args(est))
        self._K = est.n_targets
        # kernel epilogues that give predict_proba directly (else the head finishes the scores)
        self._proba = None
        if not self._linear:
            self._proba = _int8.BINARY if self._binary else _int8.VALUES
        elif est.proba == "softmax" and not self._binary:
            self._proba = _int8.with_activation(_int8.VALUES, "softmax")
        elif est.proba == "logistic" and self._binary:
            self._proba = _int8.with_activation(_int8.BINARY, "logistic")
        widths = [est.n_features] + [q.shape[1] for q in layers[0]]
        self.info = {"kernel": f"int8 {'linear' if self._linear else 'MLP'} "
                               f"{' -> '.join(map(str, widths))}: "
                               + ("portable C" if self._k.portable else "AVX-512 VNNI vpdpbusd")
                               + " u8 x s8 -> s32, 8-row x 32-column tiles (x 16 where a panel ends in padding), 1 x 128 "
                               "for single rows",
                     "activations": "uint8, " + ("per layer from calibration" if est.input_ranges is not None
                                                 else "per row (dynamic)")
                                    + (", two passes (codes + residual codes)" if est.residual else ", one pass"),
                     "n_threads": self._nt}
        if self._linear:
            from ..quantize import guard_description

            self.info["guard"] = guard_description(est)

    def _kind(self, method: str):
        """(kernel kind, output columns or None for labels) of ``method``."""
        est = self._est
        if method == "predict" and est.is_classifier and not getattr(est, "multilabel", False):
            return _int8.ARGMAX, None
        if method == "predict_proba" and self._proba is not None:
            return self._proba, 2 if self._proba & 15 == _int8.BINARY else self._K
        return _int8.VALUES, self._K

    def rechecked(self, X, method: str):
        """How many rows of X the exact-argmax guard recomputes in float for ``method``
        (None without a guard)."""
        if not self._k.guarded:
            return None
        _, Z = self._prepare(X)
        kind, cols = self._kind(method)
        out = np.empty(Z.shape[0], dtype=np.intp) if cols is None else np.empty((Z.shape[0], cols))
        count = np.zeros(1, dtype=np.intp)
        if self._k.run(Z, out, kind, self._nt, count) < 0:
            Z = np.ascontiguousarray(Z, dtype=np.float64)
            self._k.run(Z, out, kind, self._nt, count)
        return int(count[0])

    def _values(self, X):
        return self._run(X, np.empty((self._rows(X), self._K)), _int8.VALUES)

    def predict_proba(self, X):
        if self._proba is None or not self._est.is_classifier:
            return super().predict_proba(X)
        width = 2 if self._proba & 15 == _int8.BINARY else self._K
        return self._run(X, np.empty((self._rows(X), width)), self._proba)

    def predict(self, X):
        est = self._est
        if est.is_classifier and not getattr(est, "multilabel", False):
            return self._classes.take(self._run(X, np.empty(self._rows(X), dtype=np.intp), _int8.ARGMAX))
        return super().predict(X)


RUNNERS[ir_quant.QLinear] = Int8Native
RUNNERS[ir_quant.QMLP] = Int8Native
