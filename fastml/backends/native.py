"""The native backend: IR -> compiled plan -> fastml's own kernels.

Preprocessing steps run as the same numpy operations scikit-learn performs, in
the same order and dtype (so a float32 pipeline rounds exactly where
scikit-learn rounds); the estimator runs on a compiled kernel.
"""
from __future__ import annotations

from typing import Callable, List

import numpy as np

from .. import ir
from .._validation import check_input, nonfinite_error
from ..errors import MethodUnavailableError, UnsupportedModelError
from ..kernels import _linear
from . import register

Step = Callable[[np.ndarray], np.ndarray]


def _scaler(step: ir.Scaler) -> Step:
    params = {np.dtype(np.float64): (step.offset, step.scale)}
    params[np.dtype(np.float32)] = (
        (step.offset.astype(np.float32), step.scale.astype(np.float32)) if step.cast_params
        else params[np.dtype(np.float64)])

    def sub_div(X):
        off, sc = params[X.dtype]
        X -= off
        X /= sc
        return X

    def sub_mul(X):
        off, sc = params[X.dtype]
        X -= off
        X *= sc
        return X

    def mul_add(X):
        off, sc = params[X.dtype]
        X *= sc
        X += off
        return X

    return {"sub_div": sub_div, "sub_mul": sub_mul, "mul_add": mul_add}[step.mode]


def _normalizer(step: ir.Normalizer) -> Step:
    def norms_of(X):
        if step.norm == "l1":
            return np.sum(np.abs(X), axis=1)
        if step.norm == "l2":
            return np.sqrt(np.einsum("ij,ij->i", X, X))
        return np.max(np.abs(X), axis=1)

    def normalize(X):
        norms = norms_of(X)
        norms[norms < 10 * np.finfo(norms.dtype).eps] = 1.0  # scikit-learn's zero handling
        X /= norms[:, None]
        return X

    return normalize


STEP_COMPILERS = {ir.Scaler: _scaler, ir.Normalizer: _normalizer}

_PROBA_KIND = {
    ("softmax", False): _linear.SOFTMAX,
    ("logistic", True): _linear.LOGISTIC_BINARY,
    ("logistic", False): _linear.LOGISTIC_OVR,
    ("modified_huber", True): _linear.MHUBER_BINARY,
    ("modified_huber", False): _linear.MHUBER_OVR,
}


@register("native")
class NativeBackend:
    """Runs a linear model (optionally behind preprocessing steps) on fastml's kernels."""

    name = "native"

    def __init__(self, model: ir.Model, *, n_threads: int, max_rows: int | None = None, **_):
        pipe = ir.as_pipeline(model)
        est = pipe.estimator
        if not isinstance(est, ir.Linear):
            raise UnsupportedModelError(f"the native backend cannot run {type(est).__name__} yet")
        self.model = model
        self._owner = est.name
        self._steps: List[Step] = [STEP_COMPILERS[type(s)](s) for s in pipe.steps]
        self._k = _linear.LinearKernel(est.coef, est.intercept)
        self._nf = pipe.n_features
        self._nt = max(1, int(n_threads))
        self._max_rows = max_rows
        self._classes = est.classes
        binary = est.is_classifier and est.n_targets == 1
        self._score_cols = est.n_targets
        self._flat_scores = binary or est.flat
        self._is_classifier = est.is_classifier
        self._proba_kind = _PROBA_KIND.get((est.proba, binary))
        if est.proba != "none" and self._proba_kind is None:
            raise UnsupportedModelError(f"the native backend has no kernel for {est.proba!r} "
                                        f"probabilities of a {'binary' if binary else 'multiclass'} model")
        self._proba_cols = 2 if binary else est.n_targets
        self._direct = not self._steps and max_rows is None
        self.info = {"kernel": "linear (float64 accumulation)", "n_threads": self._nt}

    # ------------------------------------------------------------------ helpers
    def _run(self, X, out, kind):
        Z = X
        status = self._k.run(X, out, kind, self._nt) if self._direct and type(X) is np.ndarray else -1
        if status < 0:
            X = Z = check_input(X, self._nf, self._owner, max_rows=self._max_rows)
            if self._steps:
                Z = X.copy()  # never write into the caller's array
                for step in self._steps:
                    Z = step(Z)
            if out.shape[0] != X.shape[0]:
                out = np.empty((X.shape[0],) + out.shape[1:], dtype=out.dtype)
            status = self._k.run(Z, out, kind, self._nt)
        if status > 0:
            # judge the caller's X first (a Normalizer turns inf into NaN), then what the
            # steps made of it (a scaler can overflow float32, which scikit-learn refuses too)
            err = nonfinite_error(X, self._owner)
            if err is None and Z is not X:
                err = nonfinite_error(Z, self._owner)
            if err is not None:
                raise err
        return out

    @staticmethod
    def _rows(X) -> int:
        return X.shape[0] if type(X) is np.ndarray and X.ndim == 2 else 0

    # ------------------------------------------------------------------ public
    def _scores(self, X):
        n = self._rows(X)
        shape = (n,) if self._flat_scores else (n, self._score_cols)
        return self._run(X, np.empty(shape), _linear.SCORES)

    def decision_function(self, X):
        if not self._is_classifier:
            raise MethodUnavailableError(f"{self._owner} is a regressor and has no decision_function")
        return self._scores(X)

    def predict(self, X):
        if not self._is_classifier:
            return self._scores(X)
        idx = self._run(X, np.empty(self._rows(X), dtype=np.intp), _linear.ARGMAX)
        return self._classes.take(idx)

    def predict_proba(self, X):
        if self._proba_kind is None:
            raise MethodUnavailableError(f"{self._owner} has no predict_proba")
        return self._run(X, np.empty((self._rows(X), self._proba_cols)), self._proba_kind)
