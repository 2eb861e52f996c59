"""Quantized kernel SVMs: int8 support vectors with one scale per vector (lossy).

Built by :func:`fastml.quantize.quantize` from a :class:`fastml.ir.KernelSVM`
and run by the native backend on ``kernels/_qsvm.pyx`` (scheme, layout and
error analysis in ``kernels/src/fm_qsvm.h``). Support vector ``j`` is kept as
``sv_q[j]`` in [-127, 127] with ``sv_scale[j] = max |s_j| / 127`` (symmetric);
``sv_norm2[j]`` is ``|s_j|^2`` of the float vector, so the RBF distance
``|x|^2 + |s|^2 - 2 x.s`` quantizes only its cross term. Everything else
(coefficients, intercepts, kernel parameters, classes, Platt parameters) is
the float model's, unchanged. ``dequantized()`` gives the float model whose
support vectors are exactly ``sv_scale * sv_q``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from . import ir
from .errors import InvalidModelError, UnsupportedModelError
from .ir_quant import MAX_INPUTS, _int8_matrix, _scales


@dataclass(frozen=True)
class QKernelSVM(ir.SVMShape):
    """A :class:`fastml.ir.KernelSVM` with int8 support vectors. Fields other than
    ``sv_q`` / ``sv_scale`` / ``sv_norm2`` mean what they mean there."""

    sv_q: np.ndarray                         # (n_sv, n_features) int8 in [-127, 127]
    sv_scale: np.ndarray                     # (n_sv,) float64 > 0
    sv_norm2: np.ndarray                     # (n_sv,) float64 >= 0: |s|^2 of the float vectors
    dual_coef: np.ndarray
    intercept: np.ndarray
    kind: str
    kernel: str
    gamma: float = 1.0
    coef0: float = 0.0
    degree: int = 3
    n_support: Optional[np.ndarray] = None
    classes: Optional[np.ndarray] = None
    decision_shape: str = "ovr"
    break_ties: bool = False
    prob_a: Optional[np.ndarray] = None
    prob_b: Optional[np.ndarray] = None
    offset: Optional[float] = 0.0
    name: str = "KernelSVM"

    @property
    def n_features(self) -> int:
        return int(np.shape(self.sv_q)[1])

    @property
    def n_sv(self) -> int:
        return int(np.shape(self.sv_q)[0])

    def dequantized(self) -> ir.KernelSVM:
        """The float model with support vectors ``sv_scale * sv_q``."""
        sv = np.asarray(self.sv_scale, dtype=np.float64)[:, None] * np.asarray(self.sv_q, dtype=np.float64)
        return ir.KernelSVM(support_vectors=sv, dual_coef=self.dual_coef, intercept=self.intercept,
                            kind=self.kind, kernel=self.kernel, gamma=self.gamma, coef0=self.coef0,
                            degree=self.degree, n_support=self.n_support, classes=self.classes,
                            decision_shape=self.decision_shape, break_ties=self.break_ties,
                            prob_a=self.prob_a, prob_b=self.prob_b, offset=self.offset, name=self.name)

    def validate(self) -> "QKernelSVM":
        n = self.name
        q = _int8_matrix("sv_q", self.sv_q, n)
        s = _scales("sv_scale", self.sv_scale, q.shape[0], n)
        nn = np.asarray(self.sv_norm2)
        if nn.shape != (q.shape[0],) or nn.dtype != np.float64 or not np.all(np.isfinite(nn)) or np.any(nn < 0):
            raise InvalidModelError(f"{n}: sv_norm2 must be {q.shape[0]} finite float64 values >= 0, "
                                    f"got {nn.dtype} {nn.shape}")
        if q.shape[1] >= MAX_INPUTS:
            raise InvalidModelError(f"{n}: {q.shape[1]} features; the int8 kernel takes fewer than {MAX_INPUTS}")
        self.dequantized().validate()  # coefficients, intercepts, kernel parameters, classes, Platt
        ir._frozen(q, s, nn)
        return self

    def param_bytes(self) -> tuple:
        """(bytes of the float model's parameters as the float64 SVM kernel holds them, bytes of
        this model's: int8 vectors, a float32 scale, squared norm and vector sum per vector, float32
        coefficients; float64 intercepts and Platt parameters in both)."""
        n_sv, F = np.shape(self.sv_q)
        M = np.shape(self.dual_coef)[0]
        rest = 8 * (np.size(self.intercept) + (0 if self.prob_a is None else 2 * np.size(self.prob_a)))
        return 8 * (n_sv * F + n_sv + M * n_sv) + rest, n_sv * F + 4 * (3 * n_sv + M * n_sv) + rest


def quantize_svm(est: ir.KernelSVM) -> QKernelSVM:
    """``est`` with int8 support vectors, one symmetric scale per vector.

    A linear kernel is refused: the float kernel already folds it into one weight
    vector per pair (no support vectors at run time), so int8 vectors would save
    neither time nor memory, and their rounding errors add up in the fold (measured
    on linear SVR: most held-out values off by more than 0.05)."""
    from .quantize import quantize_columns

    if est.kernel == "linear":
        raise UnsupportedModelError(f"{est.name}: no int8 form of a linear-kernel SVM: fastml's float kernel "
                                    f"folds it into one weight vector per pair, which int8 support vectors "
                                    f"would make neither faster nor smaller (run it unquantized)")

    sv = np.asarray(est.support_vectors, dtype=np.float64)
    Q, scale = quantize_columns(sv.T)
    return QKernelSVM(sv_q=np.ascontiguousarray(Q.T), sv_scale=scale, sv_norm2=np.einsum("ij,ij->i", sv, sv),
                      dual_coef=est.dual_coef, intercept=est.intercept, kind=est.kind, kernel=est.kernel,
                      gamma=est.gamma, coef0=est.coef0, degree=est.degree, n_support=est.n_support,
                      classes=est.classes, decision_shape=est.decision_shape, break_ties=est.break_ties,
                      prob_a=est.prob_a, prob_b=est.prob_b, offset=est.offset, name=est.name)
