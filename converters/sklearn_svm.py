"""scikit-learn kernel SVMs -> ``fastml.ir.KernelSVM``.

scikit-learn keeps libsvm's own coefficients in ``_dual_coef_`` and
``_intercept_`` (for a binary classifier the public ``dual_coef_`` and
``intercept_`` are their negatives, and so is ``decision_function``); the IR
holds libsvm's, so the kernel repeats libsvm's sums and votes.  A model fitted
on sparse input has sparse support vectors; they are densified.
"""
from __future__ import annotations

import numpy as np

from fastml import ir
from fastml.errors import UnsupportedModelError

from .sklearn_import import _f64, _fitted, register


def _dense(a) -> np.ndarray:
    if hasattr(a, "toarray"):  # scipy.sparse
        a = a.toarray()
    return _f64(a)


def _kernel(est) -> dict:
    kernel = est.kernel
    if not isinstance(kernel, str) or kernel not in ir.SVM_KERNELS:
        what = "a callable kernel" if callable(kernel) else f"kernel={kernel!r}"
        raise UnsupportedModelError(
            f"{type(est).__name__} with {what} cannot be converted: fastml supports the kernels "
            f"{', '.join(ir.SVM_KERNELS)} (a precomputed or callable kernel needs the training data)")
    return dict(kernel=kernel, gamma=float(est._gamma), coef0=float(est.coef0), degree=int(est.degree))


def _platt(est):
    a = getattr(est, "_probA", None)
    b = getattr(est, "_probB", None)
    if a is None or np.size(a) == 0:
        return None, None
    return _f64(a).reshape(-1), _f64(b).reshape(-1)


@register("SVC", "NuSVC")
def _svc(est) -> ir.KernelSVM:
    _fitted(est, "support_vectors_", "_dual_coef_")
    prob_a, prob_b = _platt(est) if getattr(est, "probability", False) else (None, None)
    return ir.KernelSVM(
        support_vectors=_dense(est.support_vectors_), dual_coef=_dense(est._dual_coef_),
        intercept=_f64(est._intercept_).reshape(-1), kind="classifier",
        n_support=np.asarray(est.n_support_, dtype=np.int32).copy(), classes=np.asarray(est.classes_).copy(),
        decision_shape=est.decision_function_shape, break_ties=bool(est.break_ties),
        prob_a=prob_a, prob_b=prob_b, name=type(est).__name__, **_kernel(est))


@register("SVR", "NuSVR")
def _svr(est) -> ir.KernelSVM:
    _fitted(est, "support_vectors_", "_dual_coef_")
    return ir.KernelSVM(
        support_vectors=_dense(est.support_vectors_), dual_coef=_dense(est._dual_coef_).reshape(1, -1),
        intercept=_f64(est._intercept_).reshape(1), kind="regressor", name=type(est).__name__,
        **_kernel(est))


@register("OneClassSVM")
def _one_class(est) -> ir.KernelSVM:
    _fitted(est, "support_vectors_", "_dual_coef_", "offset_")
    return ir.KernelSVM(
        support_vectors=_dense(est.support_vectors_), dual_coef=_dense(est._dual_coef_).reshape(1, -1),
        intercept=_f64(est._intercept_).reshape(1), kind="one_class", offset=float(np.ravel(est.offset_)[0]),
        name=type(est).__name__, **_kernel(est))
