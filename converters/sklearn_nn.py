"""scikit-learn neural networks and k-means -> ``fastml.ir.MLP`` / ``fastml.ir.Centroids``.

Weights and centers are copied exactly (float32 parameters widen to float64
without rounding) and the IR's ``precision`` records the dtype scikit-learn
computes in: ``coefs_`` / ``cluster_centers_`` of a model fitted on float32
data are float32, and scikit-learn then computes float32 input in float32.
"""
from __future__ import annotations

import numpy as np

from fastml import ir
from fastml.errors import UnsupportedModelError

from .sklearn_import import _fitted, register


def _precision(*arrays) -> str:
    return "float32" if all(np.asarray(a).dtype == np.float32 for a in arrays) else "float64"


def _layers(est):
    weights = tuple(np.array(w, dtype=np.float64, copy=True) for w in est.coefs_)
    biases = tuple(np.array(b, dtype=np.float64, copy=True).reshape(-1) for b in est.intercepts_)
    return weights, biases, _precision(*est.coefs_, *est.intercepts_)


@register("MLPClassifier")
def _mlp_classifier(est) -> ir.MLP:
    _fitted(est, "coefs_", "intercepts_", "classes_", "out_activation_")
    weights, biases, precision = _layers(est)
    y_type = getattr(getattr(est, "_label_binarizer", None), "y_type_", None)
    multilabel = y_type == "multilabel-indicator"
    if y_type not in ("binary", "multiclass", "multilabel-indicator"):
        raise UnsupportedModelError(f"MLPClassifier: targets of type {y_type!r} are not supported")
    return ir.MLP(weights=weights, biases=biases, activation=est.activation,
                  out_activation=est.out_activation_, is_classifier=True,
                  classes=np.array(est.classes_, copy=True), multilabel=multilabel,
                  precision=precision, name=type(est).__name__)


@register("MLPRegressor")
def _mlp_regressor(est) -> ir.MLP:
    _fitted(est, "coefs_", "intercepts_", "out_activation_")
    weights, biases, precision = _layers(est)
    return ir.MLP(weights=weights, biases=biases, activation=est.activation,
                  out_activation=est.out_activation_, is_classifier=False,
                  flat=weights[-1].shape[1] == 1, precision=precision, name=type(est).__name__)


@register("KMeans", "MiniBatchKMeans")
def _kmeans(est) -> ir.Centroids:
    _fitted(est, "cluster_centers_")
    c = est.cluster_centers_
    return ir.Centroids(centers=np.array(c, dtype=np.float64, copy=True), precision=_precision(c),
                        name=type(est).__name__)
