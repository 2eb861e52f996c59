"""scikit-learn estimators -> fastml IR.

One function per estimator family, registered in ``FRONTENDS`` under the
estimator's public class name. ``import_model`` looks the name up along the
class's MRO, so subclasses of a supported estimator work too. scikit-learn is
never imported here: a user who loads ONNX files does not pay for it.
"""
from __future__ import annotations

from typing import Callable, Dict, Tuple

import numpy as np

from fastml import ir
from fastml.errors import NotFittedError, UnsupportedModelError

Frontend = Callable[[object], "ir.Model"]
FRONTENDS: Dict[Tuple[str, str], Frontend] = {}


def register(*names: str, package: str = "sklearn"):
    """Register a frontend for estimator classes named ``names`` (refuses duplicates)."""

    def deco(fn: Frontend) -> Frontend:
        for name in names:
            key = (package, name)
            if key in FRONTENDS:
                raise ValueError(f"a frontend for {package}.{name} is already registered")
            FRONTENDS[key] = fn
        return fn

    return deco


def find_frontend(est) -> Frontend:
    for cls in type(est).__mro__:
        fn = FRONTENDS.get((cls.__module__.split(".")[0], cls.__name__))
        if fn is not None:
            return fn
    raise UnsupportedModelError(
        f"fastml cannot import {type(est).__module__}.{type(est).__name__} yet; supported: "
        + ", ".join(sorted(name for _, name in FRONTENDS)))


def import_model(est) -> "ir.Model":
    """Build the validated IR of a fitted scikit-learn estimator or pipeline."""
    return find_frontend(est)(est).validate()


def _fitted(est, *attrs: str) -> None:
    missing = [a for a in attrs if not hasattr(est, a)]
    if missing:
        raise NotFittedError(
            f"This {type(est).__name__} instance is not fitted yet (no {', '.join(missing)}); "
            "call 'fit' before converting it.")


def _f64(a) -> np.ndarray:
    return np.array(a, dtype=np.float64, copy=True)


# --------------------------------------------------------------------------- linear models

def _linear_classifier(est, proba: str) -> ir.Linear:
    _fitted(est, "coef_", "intercept_", "classes_")
    coef = _f64(est.coef_).reshape(-1, est.coef_.shape[-1])
    intercept = _f64(np.broadcast_to(est.intercept_, coef.shape[0]))
    return ir.Linear(coef=coef, intercept=intercept, is_classifier=True,
                     classes=np.array(est.classes_, copy=True), proba=proba, name=type(est).__name__)


@register("LogisticRegression", "LogisticRegressionCV")
def _logistic(est) -> ir.Linear:
    _fitted(est, "coef_", "classes_")
    # Multiclass is multinomial, except scikit-learn < 1.8's multi_class="ovr"
    # (or liblinear), which fits one-vs-rest and normalises the sigmoids.
    ovr = getattr(est, "multi_class", "auto") == "ovr" or getattr(est, "solver", "") == "liblinear"
    multinomial = len(est.classes_) > 2 and not ovr
    return _linear_classifier(est, "softmax" if multinomial else "logistic")


@register("SGDClassifier")
def _sgd_classifier(est) -> ir.Linear:
    proba = {"log_loss": "logistic", "modified_huber": "modified_huber"}.get(est.loss, "none")
    return _linear_classifier(est, proba)


@register("RidgeClassifier", "RidgeClassifierCV", "Perceptron", "LinearSVC",
          "PassiveAggressiveClassifier")
def _score_only_classifier(est) -> ir.Linear:
    return _linear_classifier(est, "none")


@register("LinearRegression", "Ridge", "RidgeCV", "Lasso", "LassoCV", "ElasticNet", "ElasticNetCV",
          "SGDRegressor", "LinearSVR", "Lars", "LassoLars", "OrthogonalMatchingPursuit",
          "BayesianRidge", "ARDRegression", "HuberRegressor", "TheilSenRegressor",
          "MultiTaskLasso", "MultiTaskElasticNet", "PassiveAggressiveRegressor")
def _linear_regressor(est) -> ir.Linear:
    _fitted(est, "coef_", "intercept_")
    flat = np.ndim(est.coef_) == 1
    coef = _f64(est.coef_).reshape(-1, np.shape(est.coef_)[-1])
    intercept = _f64(np.broadcast_to(est.intercept_, coef.shape[0]))
    return ir.Linear(coef=coef, intercept=intercept, is_classifier=False, flat=flat,
                     name=type(est).__name__)


@register("OneVsRestClassifier")
def _one_vs_rest(est) -> ir.Linear:
    _fitted(est, "estimators_", "classes_")
    if getattr(est, "multilabel_", False):
        raise UnsupportedModelError("OneVsRestClassifier: multilabel targets are not supported")
    parts = [find_frontend(e)(e) for e in est.estimators_]
    if not all(isinstance(p, ir.Linear) and p.is_classifier and p.n_targets == 1 for p in parts):
        raise UnsupportedModelError("OneVsRestClassifier: every estimator must be a binary linear classifier")
    probas = {p.proba for p in parts}
    proba = "logistic" if probas == {"logistic"} else "none"
    return ir.Linear(coef=np.vstack([p.coef for p in parts]),
                     intercept=np.concatenate([p.intercept for p in parts]),
                     is_classifier=True, classes=np.array(est.classes_, copy=True), proba=proba,
                     name=f"OneVsRestClassifier({parts[0].name})")


# --------------------------------------------------------------------------- preprocessing

def _sklearn_version():
    import sklearn

    return tuple(int(p) for p in sklearn.__version__.split(".")[:2] if p.isdigit())


@register("StandardScaler")
def _standard_scaler(est) -> ir.Scaler:
    _fitted(est, "n_features_in_")
    n = est.n_features_in_
    offset = _f64(est.mean_) if est.with_mean else np.zeros(n)
    scale = _f64(est.scale_) if est.with_std else np.ones(n)
    return ir.Scaler(offset=offset, scale=scale, mode="sub_div", name="StandardScaler",
                     cast_params=_sklearn_version() >= (1, 8))


@register("RobustScaler")
def _robust_scaler(est) -> ir.Scaler:
    _fitted(est, "n_features_in_")
    n = est.n_features_in_
    offset = _f64(est.center_) if est.with_centering else np.zeros(n)
    scale = _f64(est.scale_) if est.with_scaling else np.ones(n)
    return ir.Scaler(offset=offset, scale=scale, mode="sub_div", name="RobustScaler")


@register("MaxAbsScaler")
def _maxabs_scaler(est) -> ir.Scaler:
    _fitted(est, "scale_")
    if getattr(est, "clip", False):
        raise UnsupportedModelError("MaxAbsScaler(clip=True) is not supported")
    return ir.Scaler(offset=np.zeros(len(est.scale_)), scale=_f64(est.scale_), mode="sub_div",
                     name="MaxAbsScaler")


@register("MinMaxScaler")
def _minmax_scaler(est) -> ir.Scaler:
    _fitted(est, "scale_", "min_")
    if est.clip:
        raise UnsupportedModelError("MinMaxScaler(clip=True) is not supported")
    return ir.Scaler(offset=_f64(est.min_), scale=_f64(est.scale_), mode="mul_add", name="MinMaxScaler")


@register("Normalizer")
def _normalizer(est) -> ir.Normalizer:
    return ir.Normalizer(norm=est.norm, n_features=getattr(est, "n_features_in_", None))


@register("Pipeline")
def _pipeline(est) -> ir.Pipeline:
    steps = []
    for name, step in est.steps:
        if step is None or step == "passthrough":
            continue
        node = find_frontend(step)(step)
        if isinstance(node, ir.Pipeline):  # nested pipeline: flatten
            steps.extend(node.steps)
            node = node.estimator
        steps.append(node)
    if not steps or not isinstance(steps[-1], ir.ESTIMATORS):
        raise UnsupportedModelError("Pipeline: the last step must be a supported estimator")
    if any(not isinstance(s, (ir.Scaler, ir.Normalizer)) for s in steps[:-1]):
        raise UnsupportedModelError("Pipeline: only preprocessing steps may come before the estimator")
    return ir.Pipeline(steps=tuple(steps[:-1]), estimator=steps[-1],
                       name="Pipeline(" + ", ".join(s.name for s in steps) + ")")
