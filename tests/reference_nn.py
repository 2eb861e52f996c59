"""Slow, obvious numpy reference for ``ir.MLP`` and ``ir.Centroids`` (like treelite's GTIL).

Semantics, as documented in :mod:`fastml.ir`:

* MLP: arithmetic in float32 when the model's ``precision`` is ``"float32"`` and X is
  float32, else float64 (scikit-learn's ``result_type(X, coefs_)``). Layer ``i`` is
  ``f(a @ W_i + b_i)`` (the product first, then the bias); hidden ``f`` is
  ``activation``, the last one ``out_activation`` (softmax: subtract the row max,
  exponentiate, divide by the row sum). Binary classifiers return ``[1 - p, p]`` and
  predict ``classes[p > 0.5]``; multiclass the first argmax; multilabel ``p > 0.5``.
* Centroids: label = first index of the minimum of ``||c||^2 - 2 x.c`` computed in the
  same precision rule; ``transform`` = ``sqrt(max(||x||^2 - 2 x.c + ||c||^2, 0))`` in float64.
"""
from __future__ import annotations

import numpy as np

from fastml.ir import MLP, Centroids

_HIDDEN = {
    "identity": lambda a: a,
    "relu": lambda a: np.maximum(a, 0),
    "tanh": np.tanh,
    "logistic": lambda a: 1 / (1 + np.exp(-a)),
    "exp": np.exp,
}


def _dtype(model, X) -> type:
    return np.float32 if model.precision == "float32" and X.dtype == np.float32 else np.float64


def reference_mlp_output(model: MLP, X) -> np.ndarray:
    """The last layer's activations, (n, n_outputs), in the model's arithmetic."""
    X = np.asarray(X)
    dt = _dtype(model, X)
    a = X.astype(dt)
    last = len(model.weights) - 1
    for i, (W, b) in enumerate(zip(model.weights, model.biases)):
        a = a @ W.astype(dt)
        a = a + b.astype(dt)
        act = model.activation if i < last else model.out_activation
        if act == "softmax":
            out = np.empty_like(a)
            for r in range(a.shape[0]):
                e = np.exp(a[r] - a[r].max())
                out[r] = e / e.sum()
            a = out
        else:
            with np.errstate(over="ignore"):
                a = _HIDDEN[act](a).astype(dt)
    return a


def reference_mlp_predict_proba(model: MLP, X) -> np.ndarray:
    p = reference_mlp_output(model, X)
    if not model.multilabel and p.shape[1] == 1:
        return np.hstack([1 - p, p]).astype(np.float64)
    return p.astype(np.float64)


def reference_mlp_predict(model: MLP, X) -> np.ndarray:
    p = reference_mlp_output(model, X)
    if not model.is_classifier:
        return p.astype(np.float64).reshape(-1) if model.flat else p.astype(np.float64)
    if model.multilabel:
        return (p > 0.5).astype(int)
    if p.shape[1] == 1:
        return model.classes[(p[:, 0] > 0.5).astype(int)]
    return model.classes[[int(np.argmax(row)) for row in p]]


def reference_kmeans_predict(model: Centroids, X) -> np.ndarray:
    X = np.asarray(X)
    dt = _dtype(model, X)
    C = model.centers.astype(dt)
    cc = np.einsum("ij,ij->i", C, C)
    labels = np.empty(len(X), dtype=np.int32)
    for r, x in enumerate(X.astype(dt)):
        d = cc - 2 * (C @ x)
        best = 0
        for k in range(1, len(d)):
            if d[k] < d[best]:
                best = k
        labels[r] = best
    return labels


def reference_kmeans_transform(model: Centroids, X) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    C = model.centers
    d = (X ** 2).sum(axis=1)[:, None] - 2 * X @ C.T + (C ** 2).sum(axis=1)[None, :]
    return np.sqrt(np.maximum(d, 0))
