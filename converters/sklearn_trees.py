"""scikit-learn tree models -> ``fastml.ir.TreeEnsemble``.

scikit-learn's ``Tree`` rounds ``X`` to float32 and compares it with float64
thresholds (``x <= t`` goes left; NaN goes where ``missing_go_to_left`` says),
so those models use ``compare="float32"``; HistGradientBoosting converts ``X``
to float64 and uses ``compare="float64"``.

Leaf values are stored exactly as scikit-learn uses them at prediction time,
so that ``base_score + leaf + leaf + ...`` in tree order (what the IR
defines) repeats scikit-learn's own float64 operations and gives its results
bit for bit:

* classifier trees and forests: the class fractions ``tree_.value`` holds;
* GradientBoosting: ``learning_rate * value`` (``predict_stages`` adds
  ``scale * value[leaf]``), with the ``init`` estimator's raw prediction as
  ``base_score``;
* HistGradientBoosting: the predictor's leaf ``value`` (shrinkage already
  applied), with ``_baseline_prediction`` as ``base_score``;
* IsolationForest: ``depth(leaf) + c(n_samples(leaf)) - 1.0``, the term
  ``_compute_score_samples`` adds per tree.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np

from fastml import ir
from fastml.errors import UnsupportedModelError

from .sklearn_import import _fitted, register


def _allows_nan(est) -> bool:
    try:
        return bool(est.__sklearn_tags__().input_tags.allow_nan)
    except AttributeError:  # pragma: no cover - scikit-learn < 1.6
        return False


def _concat(trees: List[dict], n_features: int, cat_bits: Optional[List[np.ndarray]] = None,
            **kw) -> ir.TreeEnsemble:
    """One IR from per-tree node arrays. Trees with set-membership splits also
    carry ``split``, ``cat_offset`` (into the concatenation of ``cat_bits``) and
    ``cat_nwords``."""
    if cat_bits:
        kw.update(split=np.concatenate([t["split"] for t in trees]).astype(np.uint8),
                  cat_offset=np.concatenate([t["cat_offset"] for t in trees]).astype(np.int64),
                  cat_nwords=np.concatenate([t["cat_nwords"] for t in trees]).astype(np.int32),
                  cat_bits=np.concatenate(cat_bits).astype(np.uint32))
    return ir.TreeEnsemble.from_trees(trees, n_features, **kw)


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
        if k < 2:
            raise UnsupportedModelError(f"{name}: fitted on a single class {est.classes_!r}; "
                                        "fastml needs at least two classes")
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
        # the exponential loss (binary): p = expit(2 raw), its half-logit link
        scale = (2.0,) if getattr(est, "loss", None) == "exponential" else ()
        return _concat(parts, est.n_features_in_, is_classifier=True, classes=classes,
                       post="logistic" if K == 1 else "softmax", post_params=scale,
                       predict_rule="ge0" if K == 1 else "argmax", **kw)
    return _concat(parts, est.n_features_in_, flat=True, **kw)


# --------------------------------------------------------------------------- histogram gradient boosting

#: largest category value a set-membership split may hold (2048 uint32 words per set)
MAX_CATEGORY = 65535


def _hgb_columns(est) -> Optional[np.ndarray]:
    """The original column of every column the predictors index, or None when
    there is no ``_preprocessor``. scikit-learn's ColumnTransformer puts the
    categorical columns first, so ``feature_idx`` is not the caller's column."""
    pre = getattr(est, "_preprocessor", None)
    if pre is None:
        return None
    n = int(est.n_features_in_)
    columns = np.full(n, -1, dtype=np.int64)
    for name, _, cols in pre.transformers_:
        sl = pre.output_indices_.get(name, slice(0, 0))
        if sl.stop == sl.start:
            continue  # dropped or empty
        orig = np.arange(n)[cols]
        if orig.shape[0] != sl.stop - sl.start:
            raise UnsupportedModelError(f"{type(est).__name__}: preprocessor step {name!r} maps "
                                        f"{orig.shape[0]} columns to {sl.stop - sl.start}")
        columns[sl] = orig
    if np.any(columns < 0) or len(np.unique(columns)) != n:
        raise UnsupportedModelError(f"{type(est).__name__}: cannot map the preprocessor's output "
                                    "columns back to the input columns")
    return columns


def _categorical_mask(est, columns) -> np.ndarray:
    """(n_features,) bool: the caller's columns the OrdinalEncoder encodes."""
    pre = est._preprocessor
    start = pre.output_indices_["encoder"].start
    mask = np.zeros(int(est.n_features_in_), dtype=bool)
    mask[columns[start:start + len(pre.named_transformers_["encoder"].categories_)]] = True
    return mask


def _hgb_categories(est, columns) -> Dict[int, np.ndarray]:
    """Raw category values (index = the code the trees test) per predictor column.

    scikit-learn encodes categorical columns with an OrdinalEncoder: a known
    value becomes its index in ``categories_``, anything else (unknown values,
    NaN) becomes NaN and follows ``missing_go_to_left``. The IR's set splits
    test the raw value itself, so each category must be a small non-negative
    integer.
    """
    pre = getattr(est, "_preprocessor", None)
    if pre is None:
        return {}
    name = type(est).__name__
    enc = pre.named_transformers_["encoder"]
    start = pre.output_indices_["encoder"].start
    out = {}
    for j, cats in enumerate(enc.categories_):
        where = f"categorical column {int(columns[start + j])}"
        cats = np.asarray(cats)
        if cats.dtype.kind not in "iuf":
            raise UnsupportedModelError(
                f"{name}: {where} has non-numeric categories ({cats.dtype}, e.g. "
                f"{cats[:3].tolist()}); fastml reads numeric arrays only. Encode the categories as "
                "integers before fitting (the IR would need an encoding step from strings)")
        cats = cats.astype(np.float64)
        if cats.size and np.isnan(cats[-1]):
            cats = cats[:-1]  # OrdinalEncoder keeps NaN last; it is the missing value
        bad = (cats < 0) | (cats != np.floor(cats)) | (cats > MAX_CATEGORY)
        if np.any(bad):
            raise UnsupportedModelError(
                f"{name}: {where} has category {float(cats[bad][0])!r}; fastml's set splits need "
                f"integral categories in [0, {MAX_CATEGORY}] (the IR would need a per-feature map "
                "from category value to code)")
        out[start + j] = cats
    return out


def _in_bitset(words: np.ndarray, codes: np.ndarray) -> np.ndarray:
    return ((words[codes // 32] >> (codes % 32).astype(np.uint32)) & 1).astype(bool)


def _bitset(members: np.ndarray, nwords: int) -> np.ndarray:
    words = np.zeros(nwords, dtype=np.uint32)
    m = members.astype(np.int64)
    np.bitwise_or.at(words, m // 32, np.left_shift(np.uint32(1), (m % 32).astype(np.uint32)))
    return words


def _hgb_tree(pred, columns, categories) -> dict:
    """One TreePredictor as IR node arrays; ``cat_offset`` indexes the tree's own ``words``."""
    nodes = pred.nodes
    leaf = nodes["is_leaf"].astype(bool)
    n = leaf.shape[0]
    left = np.where(leaf, -1, nodes["left"].astype(np.int64))
    right = np.where(leaf, -1, nodes["right"].astype(np.int64))
    fidx = nodes["feature_idx"].astype(np.int64)
    feature = np.where(leaf, -1, fidx if columns is None else columns[np.where(leaf, 0, fidx)])
    missing_left = nodes["missing_go_to_left"].astype(bool) & ~leaf
    threshold = np.where(leaf, 0.0, nodes["num_threshold"]).astype(np.float64)
    split = np.zeros(n, dtype=np.uint8)
    cat_offset = np.zeros(n, dtype=np.int64)
    cat_nwords = np.zeros(n, dtype=np.int32)
    words: List[np.ndarray] = []
    for i in np.flatnonzero(nodes["is_categorical"].astype(bool) & ~leaf):
        cats = categories.get(int(fidx[i]))
        if cats is None:
            raise UnsupportedModelError(f"categorical split on column {int(feature[i])}, which has no "
                                        "known categories")
        # the predictor sends a known code left iff it is in raw_left_cat_bitsets,
        # any other known code right, and unknown values (NaN after encoding) to
        # the missing side
        goes_left = _in_bitset(pred.raw_left_cat_bitsets[int(nodes["bitset_idx"][i])],
                               np.arange(cats.shape[0]))
        if missing_left[i]:
            # non-members go right in the IR: test the right-hand set and swap
            # the children (their ids, which apply returns, stay the same)
            members = cats[~goes_left]
            left[i], right[i] = right[i], left[i]
            missing_left[i] = False
        else:
            members = cats[goes_left]
        nwords = int(cats.max()) // 32 + 1 if cats.size else 1
        split[i] = ir.SPLIT_MEMBER
        cat_offset[i] = sum(w.shape[0] for w in words)
        cat_nwords[i] = nwords
        words.append(_bitset(members, nwords))
    return dict(feature=feature, threshold=threshold, left=left, right=right,
                missing_left=missing_left, value=nodes["value"].astype(np.float64)[:, None],
                split=split, cat_offset=cat_offset, cat_nwords=cat_nwords, words=words)


@register("HistGradientBoostingClassifier", "HistGradientBoostingRegressor")
def _hist_gradient_boosting(est) -> ir.TreeEnsemble:
    _fitted(est, "_predictors", "_baseline_prediction")
    name = type(est).__name__
    is_classifier = hasattr(est, "classes_")
    link = type(est._loss.link).__name__
    if not is_classifier and link not in ("IdentityLink", "LogLink"):
        raise UnsupportedModelError(
            f"{name}(loss={est.loss!r}): predict applies the inverse link of {link} to the raw sum, "
            "which fastml's tree IR does not express (it has identity and exp)")
    columns = _hgb_columns(est)
    categories = _hgb_categories(est, columns)
    K = int(est.n_trees_per_iteration_)
    parts, target, bits, n_words = [], [], [], 0
    for predictors in est._predictors:  # every iteration predict() uses (early stopping keeps n_iter_)
        for k, pred in enumerate(predictors):
            part = _hgb_tree(pred, columns, categories)
            part["cat_offset"] += n_words
            for w in part.pop("words"):
                bits.append(w)
                n_words += w.shape[0]
            parts.append(part)
            target.append(k)
    kw = dict(n_targets=K, base_score=np.array(est._baseline_prediction, dtype=np.float64).reshape(-1),
              tree_target=np.array(target, dtype=np.int32) if K > 1 else None,
              compare="float64", cat_exact=True, allow_nan=True, allow_inf=True,
              # the OrdinalEncoder of categorical columns refuses +-inf (numeric columns take it)
              inf_refused=_categorical_mask(est, columns) if categories else None, name=name, cat_bits=bits)
    if is_classifier:
        return _concat(parts, est.n_features_in_, is_classifier=True,
                       classes=np.array(est.classes_, copy=True),
                       post="logistic" if K == 1 else "softmax",
                       predict_rule="gt0" if K == 1 else "argmax", **kw)
    # poisson / gamma: predict = exp(raw), the inverse of the log link
    return _concat(parts, est.n_features_in_, flat=True, post="exp" if link == "LogLink" else "none", **kw)


# --------------------------------------------------------------------------- isolation forest

def _average_path_length(n: np.ndarray) -> np.ndarray:
    """scikit-learn's ``_average_path_length``, same float64 operations."""
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros(n.shape)
    out[n == 2] = 1.0
    big = n > 2
    out[big] = 2.0 * (np.log(n[big] - 1.0) + np.euler_gamma) - 2.0 * (n[big] - 1.0) / n[big]
    return out


@register("IsolationForest")
def _isolation_forest(est) -> ir.TreeEnsemble:
    _fitted(est, "estimators_", "offset_")
    name = type(est).__name__
    trees = est.estimators_
    depths = getattr(est, "_decision_path_lengths", None)
    if depths is None:  # pragma: no cover - scikit-learn < 1.3 computed them per call
        depths = [t.tree_.compute_node_depths() for t in trees]
    avg = getattr(est, "_average_path_length_per_tree", None)
    if avg is None:  # pragma: no cover
        avg = [_average_path_length(t.tree_.n_node_samples) for t in trees]
    denominator = float((len(trees) * _average_path_length([est._max_samples]))[0])
    if denominator == 0.0:
        raise UnsupportedModelError(f"{name}: max_samples={est._max_samples} gives trees of one "
                                    "leaf, which scikit-learn scores as a constant 0.5")
    # trees fitted on a subset of the columns see X[:, estimators_features_[t]]
    # (scikit-learn subsamples iff _max_features differs from n_features_in_)
    subset = int(est._max_features) != int(est.n_features_in_)
    parts = []
    for t, tree in enumerate(trees):
        term = (np.asarray(depths[t]) + np.asarray(avg[t], dtype=np.float64)) - 1.0
        feats = est.estimators_features_[t] if subset else None
        parts.append(_tree_arrays(tree.tree_, term[:, None], features=feats))
    return _concat(parts, est.n_features_in_, n_targets=1, flat=True, post="isolation",
                   post_params=(denominator, float(est.offset_)), predict_rule="isolation",
                   allow_nan=_allows_nan(est), allow_inf=True, name=name)
