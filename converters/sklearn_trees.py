"""scikit-learn tree models -> ``fastml.ir.TreeEnsemble``.

scikit-learn's trees round ``X`` to float32 and compare it with float64
thresholds (``x <= t`` goes left; NaN goes where ``missing_go_to_left`` says),
so their IR uses ``compare="float32"``. Leaf values are stored exactly as
scikit-learn uses them at prediction time: classifier leaves are the class
fractions ``tree_.value`` holds, boosting leaves pre-multiplied by the learning rate (``scale * value``,
as ``predict_stages`` does), so sums in tree order reproduce scikit-learn's
floating-point results bit for bit.
"""
from __future__ import annotations

from typing import List

import numpy as np

from fastml import ir
from fastml.errors import UnsupportedModelError

from .sklearn_import import _fitted, register


def _allows_nan(est) -> bool:
    try:
        return bool(est.__sklearn_tags__().input_tags.allow_nan)
    except AttributeError:  # pragma: no cover - scikit-learn < 1.6
        return False


def _concat(trees: List[dict], n_features: int, **kw) -> ir.TreeEnsemble:
    sizes = [len(t["feature"]) for t in trees]
    offsets = np.zeros(len(trees) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    cat = {k: np.concatenate([t[k] for t in trees]) for k in ("feature", "threshold", "left", "right",
                                                                  "missing_left", "value")}
    return ir.TreeEnsemble(
        n_features=int(n_features), tree_offsets=offsets,
        feature=cat["feature"].astype(np.int32), threshold=cat["threshold"].astype(np.float64),
        left=cat["left"].astype(np.int32), right=cat["right"].astype(np.int32),
        missing_left=cat["missing_left"].astype(bool), value=cat["value"], **kw)


def _tree_arrays(tree, value: np.ndarray, features=None) -> dict:
    """One sklearn ``Tree`` as IR node arrays with the given per-node ``value`` (n_nodes, W)."""
    left = np.asarray(tree.children_left, dtype=np.int64)
    leaf = left < 0
    feature = np.where(leaf, -1, tree.feature).astype(np.int64)
    if features is not None:  # the tree was fitted on a subset of the columns
        feature = np.where(leaf, -1, np.asarray(features)[np.maximum(feature, 0)])
    missing = getattr(tree, "missing_go_to_left", None)
    missing_left = np.zeros(len(left), bool) if missing is None else np.asarray(missing).astype(bool)
    return dict(feature=feature, threshold=np.where(leaf, 0.0, tree.threshold),
                left=np.where(leaf, -1, left), right=np.where(leaf, -1, tree.children_right),
                missing_left=missing_left & ~leaf, value=np.ascontiguousarray(value, dtype=np.float64))


def _classifier_leaves(tree, n_classes: int) -> np.ndarray:
    """``DecisionTreeClassifier.predict_proba``'s per-leaf distribution (``tree_.value``
    holds class fractions since scikit-learn 1.4; older versions hold counts)."""
    v = np.array(tree.value[:, 0, :n_classes], dtype=np.float64)
    total = v.sum(axis=1)
    if np.any(np.abs(total - 1.0) > 1e-6):
        total[total == 0.0] = 1.0
        v /= total[:, None]
    return v


def _single_output(est) -> None:
    if getattr(est, "n_outputs_", 1) != 1 and hasattr(est, "classes_"):
        raise UnsupportedModelError(f"{type(est).__name__}: multi-output classification is not supported")


def _forest(est, trees, is_classifier: bool, average: bool) -> ir.TreeEnsemble:
    name = type(est).__name__
    allow_nan = _allows_nan(trees[0])
    if is_classifier:
        _single_output(est)
        k = len(est.classes_)
        parts = [_tree_arrays(t.tree_, _classifier_leaves(t.tree_, k)) for t in trees]
        return _concat(parts, est.n_features_in_, n_targets=k, average=average, is_classifier=True,
                       classes=np.array(est.classes_, copy=True), post="proba", predict_rule="argmax",
                       allow_nan=allow_nan, allow_inf=False, name=name)
    n_out = est.n_outputs_
    parts = [_tree_arrays(t.tree_, t.tree_.value[:, :, 0]) for t in trees]
    return _concat(parts, est.n_features_in_, n_targets=n_out, average=average, flat=n_out == 1,
                   allow_nan=allow_nan, allow_inf=False, name=name)


@register("DecisionTreeClassifier", "ExtraTreeClassifier")
def _decision_tree_classifier(est) -> ir.TreeEnsemble:
    _fitted(est, "tree_", "classes_")
    return _forest(est, [est], is_classifier=True, average=False)


@register("DecisionTreeRegressor", "ExtraTreeRegressor")
def _decision_tree_regressor(est) -> ir.TreeEnsemble:
    _fitted(est, "tree_")
    return _forest(est, [est], is_classifier=False, average=False)


@register("RandomForestClassifier", "ExtraTreesClassifier")
def _forest_classifier(est) -> ir.TreeEnsemble:
    _fitted(est, "estimators_", "classes_")
    return _forest(est, est.estimators_, is_classifier=True, average=True)


@register("RandomForestRegressor", "ExtraTreesRegressor")
def _forest_regressor(est) -> ir.TreeEnsemble:
    _fitted(est, "estimators_")
    return _forest(est, est.estimators_, is_classifier=False, average=True)


# --------------------------------------------------------------------------- gradient boosting

def _gb_init(est) -> np.ndarray:
    """The constant raw prediction of the ``init`` estimator (zeros for ``init='zero'``)."""
    init = est.init_
    if init == "zero":
        return np.zeros(est.n_trees_per_iteration_)
    if type(init).__name__ not in ("DummyClassifier", "DummyRegressor"):
        raise UnsupportedModelError(f"{type(est).__name__}: a custom init estimator "
                                    f"({type(init).__name__}) is not supported")
    X0 = np.zeros((1, est.n_features_in_), dtype=np.float32)
    return np.array(est._raw_predict_init(X0)[0], dtype=np.float64)


@register("GradientBoostingClassifier", "GradientBoostingRegressor")
def _gradient_boosting(est) -> ir.TreeEnsemble:
    _fitted(est, "estimators_", "init_")
    is_classifier = hasattr(est, "classes_")
    if getattr(est, "loss", None) == "exponential":
        raise UnsupportedModelError(f"{type(est).__name__}(loss='exponential') is not supported")
    stages = est.estimators_  # (n_stages, K) of DecisionTreeRegressor
    K = stages.shape[1]
    lr = float(est.learning_rate)
    parts, target = [], []
    for i in range(stages.shape[0]):
        for k in range(K):
            tree = stages[i, k].tree_
            parts.append(_tree_arrays(tree, lr * tree.value[:, :, 0]))
            target.append(k)
    kw = dict(n_targets=K, base_score=_gb_init(est),
              tree_target=np.array(target, dtype=np.int32) if K > 1 else None,
              allow_nan=False, allow_inf=False, name=type(est).__name__)
    if is_classifier:
        classes = np.array(est.classes_, copy=True)
        return _concat(parts, est.n_features_in_, is_classifier=True, classes=classes,
                       post="logistic" if K == 1 else "softmax",
                       predict_rule="ge0" if K == 1 else "argmax", **kw)
    return _concat(parts, est.n_features_in_, flat=True, **kw)
