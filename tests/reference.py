"""Slow, obvious numpy reference for the IR semantics (like treelite's GTIL).

Plain numpy, explicit loops where a loop is clearer than a vectorised trick.
Fast kernels and importers are tested against these functions, and these
functions are tested against scikit-learn, so they follow the semantics
documented in :mod:`fastml.ir` exactly:

* Preprocessing runs in the input's dtype, like scikit-learn: a float32 ``X``
  stays float32 and every operation rounds to float32 (numpy's in-place
  ``X -= offset`` with float64 parameters), or runs on float32 parameters when
  ``Scaler.cast_params`` is set. Anything else is converted to float64.
* ``Scaler`` keeps the source's order of operations (``sub_div``, ``sub_mul``,
  ``mul_add``).
* ``Normalizer`` divides each row by its l1 / l2 / max norm (max is max |x|);
  like ``sklearn.preprocessing.normalize``, a row whose norm is below
  ``10 * eps`` of the dtype (in particular an all-zero row) is left unchanged.
* The estimator always computes in float64.
* ``Linear`` scores are ``X @ coef.T + intercept``; a binary classifier has one
  score column, ``decision_function`` is 1-D and ``predict`` is
  ``classes[score > 0]``; a multiclass one predicts the first argmax.
"""
from __future__ import annotations

import numpy as np

from fastml.ir import Linear, Normalizer, Pipeline, Scaler, as_pipeline

__all__ = [
    "reference_transform",
    "reference_scores",
    "reference_decision_function",
    "reference_predict",
    "reference_predict_proba",
]

def _as_2d(X) -> np.ndarray:
    X = np.asarray(X)
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    if X.ndim != 2:
        raise ValueError(f"expected a 2-D array, got shape {X.shape}")
    return X


def reference_transform(step, X) -> np.ndarray:
    """Apply one preprocessing step (``Scaler`` or ``Normalizer``) to ``X``, in ``X``'s dtype."""
    X = _as_2d(X)
    dtype = X.dtype

    def rounded(op, a, b):  # what numpy's in-place `a op= b` stores
        return op(a, b).astype(dtype)

    if isinstance(step, Scaler):
        offset = np.asarray(step.offset, dtype=np.float64)
        scale = np.asarray(step.scale, dtype=np.float64)
        if step.cast_params:
            offset, scale = offset.astype(dtype), scale.astype(dtype)
        if X.shape[1] != scale.shape[0]:
            raise ValueError(f"{step.name}: expects {scale.shape[0]} features, got {X.shape[1]}")
        if step.mode == "sub_div":
            return rounded(np.divide, rounded(np.subtract, X, offset), scale)
        if step.mode == "sub_mul":
            return rounded(np.multiply, rounded(np.subtract, X, offset), scale)
        if step.mode == "mul_add":
            return rounded(np.add, rounded(np.multiply, X, scale), offset)
        raise ValueError(f"{step.name}: unknown mode {step.mode!r}")
    if isinstance(step, Normalizer):
        # sklearn.preprocessing._data._handle_zeros_in_scale: norms this small count as 1
        tiny = 10 * np.finfo(dtype).eps
        out = np.empty_like(X)
        for i, row in enumerate(X):
            if step.norm == "l1":
                norm = np.sum(np.abs(row))
            elif step.norm == "l2":
                norm = np.sqrt(np.sum(row * row))
            elif step.norm == "max":
                norm = np.max(np.abs(row)) if row.size else dtype.type(0)
            else:
                raise ValueError(f"{step.name}: unknown norm {step.norm!r}")
            out[i] = row / (dtype.type(1) if norm < tiny else norm)
        return out
    raise TypeError(f"not a preprocessing step: {type(step).__name__}")


def _estimator_input(model, X):
    pipe = as_pipeline(model)
    X = _as_2d(X)
    for step in pipe.steps:
        X = reference_transform(step, X)
    return pipe.estimator, X.astype(np.float64)


def reference_scores(model, X) -> np.ndarray:
    """Raw scores ``X @ coef.T + intercept`` after the pipeline steps, shape ``(n, n_targets)``."""
    est, X = _estimator_input(model, X)
    if not isinstance(est, Linear):
        raise TypeError(f"no reference for {type(est).__name__}")
    coef = np.asarray(est.coef, dtype=np.float64)
    intercept = np.asarray(est.intercept, dtype=np.float64)
    if X.shape[1] != coef.shape[1]:
        raise ValueError(f"{est.name}: expects {coef.shape[1]} features, got {X.shape[1]}")
    scores = np.empty((X.shape[0], coef.shape[0]))
    for k in range(coef.shape[0]):
        scores[:, k] = X @ coef[k] + intercept[k]
    return scores


def reference_decision_function(model, X) -> np.ndarray:
    """Classifier scores like sklearn's ``decision_function`` (1-D for binary)."""
    est = as_pipeline(model).estimator
    if not est.is_classifier:
        raise ValueError(f"{est.name}: a regressor has no decision_function")
    scores = reference_scores(model, X)
    return scores[:, 0] if scores.shape[1] == 1 else scores


def reference_predict(model, X) -> np.ndarray:
    """Labels for classifiers, values for regressors (1-D when ``flat``)."""
    est = as_pipeline(model).estimator
    scores = reference_scores(model, X)
    if not est.is_classifier:
        return scores[:, 0] if est.flat else scores
    classes = np.asarray(est.classes)
    if scores.shape[1] == 1:
        index = (scores[:, 0] > 0).astype(np.intp)
    else:
        index = np.array([int(np.argmax(row)) for row in scores], dtype=np.intp)
    return classes[index]


def _sigmoid(s: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-s))


def _softmax(scores: np.ndarray) -> np.ndarray:
    out = np.empty_like(scores)
    for i, row in enumerate(scores):
        e = np.exp(row - np.max(row))
        out[i] = e / np.sum(e)
    return out


def _normalise_rows(p: np.ndarray, uniform_if_zero: bool) -> np.ndarray:
    out = np.empty_like(p)
    k = p.shape[1]
    for i, row in enumerate(p):
        total = np.sum(row)
        if total == 0 and uniform_if_zero:
            out[i] = 1.0 / k  # SGDClassifier(loss="modified_huber"): all clipped to 0
        else:
            out[i] = row / total
    return out


def reference_predict_proba(model, X) -> np.ndarray:
    """Class probabilities, shape ``(n, n_classes)``, per ``Linear.proba``."""
    est = as_pipeline(model).estimator
    if not est.is_classifier or est.proba == "none":
        raise AttributeError(f"{est.name}: this model has no predict_proba (proba={est.proba!r})")
    scores = reference_scores(model, X)
    binary = scores.shape[1] == 1
    if est.proba == "softmax":
        if binary:  # sklearn's multinomial binary case: softmax over [-s, s]
            return _softmax(np.column_stack([-scores[:, 0], scores[:, 0]]))
        return _softmax(scores)
    if est.proba == "logistic":
        p = _sigmoid(scores)
        if binary:
            return np.column_stack([1.0 - p[:, 0], p[:, 0]])
        return _normalise_rows(p, uniform_if_zero=False)
    if est.proba == "modified_huber":
        p = (np.clip(scores, -1.0, 1.0) + 1.0) / 2.0
        if binary:
            return np.column_stack([1.0 - p[:, 0], p[:, 0]])
        return _normalise_rows(p, uniform_if_zero=True)
    raise ValueError(f"{est.name}: unknown proba {est.proba!r}")
