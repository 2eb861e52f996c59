"""Slow, obvious reference for ``fastml.ir.TreeEnsemble`` (like treelite's GTIL).

Rows walk each tree node by node, following the rules in the docstring of
:class:`fastml.ir.TreeEnsemble` literally; nothing is precomputed or rounded
ahead of time. Importers are tested by comparing this reference on their IR
with the source library; kernels are tested against this reference and the
source library.
"""
from __future__ import annotations

import numpy as np

from fastml.ir import SPLIT_LEQ, SPLIT_LT, SPLIT_MEMBER, TreeEnsemble, as_pipeline

from reference import _as_2d, reference_transform

__all__ = ["tree_input", "tree_apply", "tree_raw", "tree_predict", "tree_predict_proba",
           "tree_decision_function", "tree_score_samples"]


def tree_input(model, X):
    """The estimator and its input after the pipeline's steps (float32 or float64)."""
    pipe = as_pipeline(model)
    X = _as_2d(X)
    for step in pipe.steps:
        X = reference_transform(step, X)
    est = pipe.estimator
    if not isinstance(est, TreeEnsemble):
        raise TypeError(f"not a tree ensemble: {type(est).__name__}")
    if X.shape[1] != est.n_features:
        raise ValueError(f"{est.name}: expects {est.n_features} features, got {X.shape[1]}")
    return est, X


def _member(est: TreeEnsemble, node: int, x: float) -> bool:
    if est.cat_exact:
        if x != np.floor(x):
            return False
        c = x
    else:
        c = np.trunc(x)
    nbits = 32 * int(est.cat_nwords[node])
    if not (0 <= c < nbits):
        return False
    c = int(c)
    word = int(est.cat_bits[int(est.cat_offset[node]) + c // 32])
    return bool((word >> (c % 32)) & 1)


def _goes_left(est: TreeEnsemble, node: int, x: float) -> bool:
    if np.isnan(x):
        return bool(est.missing_left[node])
    if est.compare == "float32":  # round to nearest float32, then decide exactly in float64
        with np.errstate(over="ignore"):
            x = float(np.float32(x))
    kind = SPLIT_LEQ if est.split is None else int(est.split[node])
    if kind == SPLIT_MEMBER:
        return _member(est, node, x)
    t = float(est.threshold[node])
    return x <= t if kind == SPLIT_LEQ else x < t if kind == SPLIT_LT else _unknown(kind)


def _unknown(kind):
    raise ValueError(f"unknown split kind {kind}")


def tree_apply(model, X) -> np.ndarray:
    """Leaf reached in every tree, as the tree-local node id: shape (n, n_trees)."""
    est, X = tree_input(model, X)
    out = np.empty((X.shape[0], est.n_trees), dtype=np.int64)
    for t in range(est.n_trees):
        base = int(est.tree_offsets[t])
        for i, row in enumerate(X):
            node = 0
            while est.left[base + node] >= 0:
                g = base + node
                x = float(row[int(est.feature[g])])
                node = int(est.left[g]) if _goes_left(est, g, x) else int(est.right[g])
            out[i, t] = node
    return out


def tree_raw(model, X) -> np.ndarray:
    """``base_score + sum of leaf values`` in tree order (averaged if asked): (n, n_targets)."""
    est, X = tree_input(model, X)
    leaves = tree_apply(est, X)
    n = X.shape[0]
    raw = np.zeros((n, est.n_targets))
    if est.base_score is not None:
        raw += est.base_score
    value = np.asarray(est.value)
    for t in range(est.n_trees):
        v = value[int(est.tree_offsets[t]) + leaves[:, t]]
        if value.shape[1] == est.n_targets:
            raw += v
        else:
            col = 0 if est.tree_target is None else int(est.tree_target[t])
            raw[:, col] += v[:, 0]
    if est.average:
        raw /= est.n_trees
    return raw


def _sigmoid(s):
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-s))


def tree_predict_proba(model, X) -> np.ndarray:
    est = as_pipeline(model).estimator
    raw = tree_raw(model, X)
    if est.post == "proba":
        return raw
    if est.post == "logistic":
        c = est.post_params[0] if len(est.post_params) else 1.0   # s = sigmoid(c raw)
        raw = c * raw
        if raw.shape[1] == 1:
            p = _sigmoid(raw[:, 0])
            return np.column_stack([1.0 - p, p])
        return _sigmoid(raw)
    if est.post == "softmax":
        e = np.exp(raw - raw.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    raise AttributeError(f"{est.name}: no predict_proba (post={est.post!r})")


def tree_score_samples(model, X) -> np.ndarray:
    est = as_pipeline(model).estimator
    if est.post != "isolation":
        raise AttributeError(f"{est.name}: no score_samples")
    return -(2.0 ** (-tree_raw(model, X)[:, 0] / est.post_params[0]))


def tree_decision_function(model, X) -> np.ndarray:
    est = as_pipeline(model).estimator
    if est.post == "isolation":
        return tree_score_samples(model, X) - est.post_params[1]
    if not est.is_classifier or est.post == "proba":
        raise AttributeError(f"{est.name}: no decision_function")
    raw = tree_raw(model, X)
    return raw[:, 0] if raw.shape[1] == 1 else raw


def tree_predict(model, X) -> np.ndarray:
    est = as_pipeline(model).estimator
    rule = est.predict_rule
    if rule == "value":
        raw = tree_raw(model, X)
        if est.post == "exp":
            raw = np.exp(raw)
        return raw[:, 0] if est.flat else raw
    if rule == "isolation":
        return np.where(tree_decision_function(model, X) < 0, -1, 1)
    classes = np.asarray(est.classes)
    if rule in ("ge0", "gt0"):
        s = tree_raw(model, X)[:, 0]
        return classes[(s >= 0 if rule == "ge0" else s > 0).astype(np.intp)]
    scores = tree_predict_proba(model, X) if rule == "argmax_proba" else tree_raw(model, X)
    return classes[np.array([int(np.argmax(r)) for r in scores], dtype=np.intp)]
