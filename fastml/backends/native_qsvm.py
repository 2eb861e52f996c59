"""Native runner of int8 kernel SVMs (:class:`fastml.ir_qsvm.QKernelSVM`) on ``kernels/_qsvm.pyx``.

It registers itself in the native backend's ``RUNNERS`` table. Outputs (pair
values, one-vs-rest scores, votes, probabilities, one-class and regression
values) mean what they mean for the float runner, :class:`SVMNative`, whose
methods it shares; only the kernel differs.
"""
from __future__ import annotations

from .. import ir, ir_qsvm
from ..kernels import _qsvm
from .native import RUNNERS, SVMNative, _Native


class QSVMNative(SVMNative):
    """A QKernelSVM (optionally behind preprocessing steps) on the int8 SVM kernel."""

    def __init__(self, model: ir.Model, *, n_threads: int, max_rows: int | None = None, portable: bool = False):
        _Native.__init__(self, model, n_threads=n_threads, max_rows=max_rows)
        est = ir.as_pipeline(model).estimator
        self._k = _qsvm.QSVMKernel(est.sv_q, est.sv_scale, est.sv_norm2, est.dual_coef, est.intercept,
                                   self._counts(est), est.kernel, est.gamma, est.coef0, int(est.degree),
                                   est.prob_a, est.prob_b, rotation=est.rotation, residual=bool(est.residual),
                                   sv_lo=est.sv_lo, sv_lo_scale=est.sv_lo_scale, portable=portable)
        self._setup(est)
        if est.kernel == "linear":
            how = ("dequantized int8" + (" x2 (vectors + residual panel)" if est.sv_lo is not None else "")
                   + " vectors folded into one float64 weight vector per pair")
        else:
            how = (("rows rotated (float64), " if est.rotation is not None else "")
                   + ("rows in two uint8 passes (codes + residual codes), " if est.residual else "")
                   + ("int8 x2 vectors (codes + residual panel, one more dot product), "
                      if est.sv_lo is not None else "")
                   + ("portable C" if self._k.portable else "AVX-512 VNNI vpdpbusd")
                   + " u8 x s8 -> s32 cross terms (8-code-row x 32-vector tiles, 1 x 128 for single rows), "
                   "|x|^2 and |s|^2 from float data, float32 kernel function and sums")
        self.info = {"kernel": f"int8 svm {est.kernel}: {how}", "n_support_vectors": est.n_sv,
                     "kernel_bytes": self._k.nbytes, "n_threads": self._nt}


RUNNERS[ir_qsvm.QKernelSVM] = QSVMNative
