"""int8 kernel SVM decision kernel: libsvm's one-vs-one sums over int8 support
vectors (one symmetric scale per vector), rows quantized per row to uint8 with
a zero point, exact int32 cross terms (AVX-512 VNNI ``vpdpbusd`` where the
build has it), |x|^2 and |s|^2 from the float data, the kernel function and
the coefficient sums in float32 (optionally each row in two uint8 passes, codes and
residual codes, against the same int8 vectors); then fm_svm.h's pair values, one-vs-rest
scores, vote or libsvm probabilities.

The scheme, the layout and the loop order are described in ``src/fm_qsvm.h``.
This module packs the support vectors into fm_int8.h's panels (one class per
32-vector panel) and runs the C driver with the GIL released: blocks of rows on
OpenMP threads, small calls inline on the calling thread.
``QSVMKernel(..., portable=True)`` uses the portable C row codes and tiles even
where VNNI is compiled in (tests compare the two); ``dots`` returns the exact
int32 cross terms of each pass (tests compare them with numpy).
"""
import numpy as np

cimport numpy as cnp
from _svm_decl cimport C_NEG, C_OVR, C_PROBA, C_RAW, C_TIES, C_VOTE, fm_svm_plan
from libc.stdint cimport int8_t, int32_t
from _layout cimport x_kind

from fastml.kernels._int8 import pack_panels
from fastml.kernels._svm import KERNELS, fold_linear, pair_table, panel_layout

cnp.import_array()

cdef extern from "fm_qsvm.h" nogil:
    ctypedef struct fm_qsvm:
        fm_svm_plan fp
        Py_ssize_t kpad, P
        const int8_t *w
        const float *ss
        const float *sn
        const float *coef
        const int32_t *cs
        const double *rot
        int portable
        int resid
        const int8_t *w2
        const float *sl
        const int32_t *cs2
    int fm_qsvm_run(const fm_qsvm *m, const void *X, int x32, Py_ssize_t rs, Py_ssize_t n, int kind,
                    double *out, Py_ssize_t *idx, int32_t *dots, int n_threads, Py_ssize_t min_parallel)
    int FM_Q8_VNNI

cdef enum:
    NR = 32
    # threads for calls of at least this many multiply-adds (a few tens of us on one core)
    # and at least MIN_PARALLEL_ROWS rows
    PARALLEL_MACS = 2000000
    MIN_PARALLEL_ROWS = 16
    # |sum_k u q| <= 255 * 127 * F (and z * cs) must fit int32
    MAX_INPUTS = 66000

RAW, NEG, OVR, VOTE, TIES, PROBA = C_RAW, C_NEG, C_OVR, C_VOTE, C_TIES, C_PROBA
HAS_VNNI = bool(FM_Q8_VNNI)


cdef class QSVMKernel:
    """int8 support vectors in kernel layout.

    Parameters
    ----------
    sv_q : int8 (n_sv, F) in [-127, 127], grouped by class
    sv_scale : (n_sv,) float, ``s ~ sv_scale * sv_q`` per vector
    sv_norm2 : (n_sv,) float, |s|^2 of the float support vectors
    dual_coef, intercept, n_support, kernel, gamma, coef0, degree, prob_a, prob_b :
        as in :class:`fastml.ir.KernelSVM` (n_support = [n_sv] for one row of coefficients)
    rotation : None, or (F, F) orthogonal R: the vectors are stored rotated (``s' = R s``) and
        each row is rotated (``R x``, float64) before it is quantized
    residual : each row in two uint8 passes (codes and residual codes, fm_int8.h's residual pass):
        a second int32 dot product against the same vectors
    sv_lo, sv_lo_scale : None, or the vectors' residual panel, int8 (n_sv, F) in [-127, 127] and
        one scale per vector (``s ~ sv_scale sv_q + sv_lo_scale sv_lo``): one more int32 dot product
        (the row's first codes against it)
    portable : the portable C codes and tiles even where VNNI is compiled in

    ``run`` returns 0, 1 when X holds NaN or inf (outputs undefined), or -1 when
    X is not in kernel layout (the caller converts X and calls again).
    """

    cdef fm_qsvm m
    cdef readonly object arrays
    cdef readonly Py_ssize_t n_features, n_classes, n_pairs, n_panels, min_parallel
    cdef readonly bint portable, residual, sv_residual

    def __cinit__(self, sv_q, sv_scale, sv_norm2, dual_coef, intercept, n_support, str kernel,
                  double gamma, double coef0, int degree, prob_a=None, prob_b=None, rotation=None,
                  bint residual=False, sv_lo=None, sv_lo_scale=None, bint portable=False):
        q = np.asarray(sv_q)
        coef = np.asarray(dual_coef, dtype=np.float64)
        counts = np.asarray(n_support, dtype=np.int64)
        if q.dtype != np.int8 or q.ndim != 2:
            raise ValueError("sv_q must be a 2-D int8 array")
        n_sv, F = q.shape
        K, M = counts.shape[0], coef.shape[0]
        if coef.ndim != 2 or coef.shape[1] != n_sv or counts.sum() != n_sv or F < 1 or M < 1:
            raise ValueError("support vectors, coefficients and counts do not match")
        if F > MAX_INPUTS:
            raise ValueError(f"{F} features; int32 sums hold at most {MAX_INPUTS}")
        if np.any(q == -128):
            raise ValueError("sv_q holds -128; symmetric int8 vectors are in [-127, 127]")
        ss = np.asarray(sv_scale, dtype=np.float64).reshape(-1)
        sn = np.asarray(sv_norm2, dtype=np.float64).reshape(-1)
        if ss.shape[0] != n_sv or sn.shape[0] != n_sv:
            raise ValueError("one scale and one squared norm per support vector")
        NP = K * (K - 1) // 2 if K > 1 else 1
        b = np.ascontiguousarray(intercept, dtype=np.float64).reshape(NP)
        seg, cols, start = panel_layout(counts, NR)
        P = int(seg[K])
        Qp = np.zeros((F, max(P, 1) * NR), dtype=np.int8)
        Qp[:, cols] = q.T
        W = pack_panels(Qp)
        S = np.zeros(P * NR, dtype=np.float32)
        S[cols] = ss
        SN = np.zeros(P * NR, dtype=np.float32)
        SN[cols] = sn
        CS = np.zeros(P * NR, dtype=np.int32)
        CS[cols] = q.astype(np.int32).sum(axis=1)
        cp = np.zeros((P * NR, M), dtype=np.float32)
        cp[cols] = coef.T
        CO = np.ascontiguousarray(cp.reshape(P, NR, M).transpose(0, 2, 1))
        pair = pair_table(K)
        self.arrays = dict(w=W, ss=S, sn=SN, cs=CS, coef=CO, b=b, seg=seg, pair=pair)
        if (sv_lo is None) != (sv_lo_scale is None):
            raise ValueError("sv_lo and sv_lo_scale come together")
        if sv_lo is not None:
            ql = np.asarray(sv_lo)
            sl = np.asarray(sv_lo_scale, dtype=np.float64).reshape(-1)
            if ql.dtype != np.int8 or ql.shape != q.shape or np.any(ql == -128) or sl.shape[0] != n_sv:
                raise ValueError("sv_lo must be int8 in [-127, 127] shaped like sv_q, one sv_lo_scale per vector")
            Qp[:] = 0
            Qp[:, cols] = ql.T
            SL = np.zeros(P * NR, dtype=np.float32)
            SL[cols] = sl
            CL = np.zeros(P * NR, dtype=np.int32)
            CL[cols] = ql.astype(np.int32).sum(axis=1)
            self.arrays.update(w2=pack_panels(Qp), sl=SL, cs2=CL)
        if prob_a is not None:
            self.arrays["pa"] = np.ascontiguousarray(prob_a, dtype=np.float64).reshape(NP)
            self.arrays["pb"] = np.ascontiguousarray(prob_b, dtype=np.float64).reshape(NP)
        if rotation is not None:
            R = np.asarray(rotation, dtype=np.float64)
            if R.shape != (F, F) or not np.all(np.isfinite(R)):
                raise ValueError(f"rotation must be a finite ({F}, {F}) matrix")
        if kernel == "linear":  # fold the dequantized vectors: pair q's weights, float64
            sv = q.astype(np.float64) * ss[:, None]
            if sv_lo is not None:
                sv = sv + ql.astype(np.float64) * sl[:, None]
            if rotation is not None:
                sv = sv @ R
            self.arrays["lin"] = fold_linear(coef, sv, start, pair, NP)
        elif rotation is not None:
            self.arrays["rot"] = np.ascontiguousarray(R.T)
        a = self.arrays
        self.m.fp.F, self.m.fp.P, self.m.fp.M, self.m.fp.K, self.m.fp.NP = F, P, M, K, NP
        self.m.fp.kernel, self.m.fp.degree = KERNELS[kernel], degree
        self.m.fp.gamma, self.m.fp.coef0 = gamma, coef0
        self.m.fp.big = self.m.fp.big_row = np.inf
        self.m.fp.sv = self.m.fp.sn = self.m.fp.coef = NULL
        self.m.fp.b = <const double *> cnp.PyArray_DATA(a["b"])
        self.m.fp.seg = <const int32_t *> cnp.PyArray_DATA(a["seg"])
        self.m.fp.pair = <const int32_t *> cnp.PyArray_DATA(a["pair"])
        self.m.fp.lin = <const double *> cnp.PyArray_DATA(a["lin"]) if "lin" in a else NULL
        self.m.fp.pa = <const double *> cnp.PyArray_DATA(a["pa"]) if "pa" in a else NULL
        self.m.fp.pb = <const double *> cnp.PyArray_DATA(a["pb"]) if "pb" in a else NULL
        self.m.kpad = W.shape[1] * 4
        self.m.P = P
        self.m.w = <const int8_t *> cnp.PyArray_DATA(a["w"])
        self.m.ss = <const float *> cnp.PyArray_DATA(a["ss"])
        self.m.sn = <const float *> cnp.PyArray_DATA(a["sn"])
        self.m.cs = <const int32_t *> cnp.PyArray_DATA(a["cs"])
        self.m.coef = <const float *> cnp.PyArray_DATA(a["coef"])
        self.m.rot = <const double *> cnp.PyArray_DATA(a["rot"]) if "rot" in a else NULL
        self.m.portable = portable
        self.m.resid = residual
        self.residual = residual
        lo = "w2" in a and "lin" not in a
        self.m.w2 = <const int8_t *> cnp.PyArray_DATA(a["w2"]) if lo else NULL
        self.m.sl = <const float *> cnp.PyArray_DATA(a["sl"]) if lo else NULL
        self.m.cs2 = <const int32_t *> cnp.PyArray_DATA(a["cs2"]) if lo else NULL
        self.sv_residual = lo
        self.portable = portable or not FM_Q8_VNNI
        self.n_features, self.n_classes, self.n_pairs, self.n_panels = F, K, NP, P
        self.min_parallel = max(MIN_PARALLEL_ROWS, PARALLEL_MACS // max(P * NR * F * (1 + residual + lo), 1) + 1)

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays the kernel reads."""
        return int(sum(v.nbytes for v in self.arrays.values()))

    def dots(self, cnp.ndarray X):
        """The exact int32 cross terms of every row, (n, passes, n_panels * 32) in panel layout
        (tests): ``sum_k u_k q_jk - z cs_j``, with the residual pass ``sum_k v_k q_jk - 128 cs_j``,
        with the vectors' residual panel ``sum_k u_k q'_jk - z cl_j``, in that order.
        X: float32/float64 in kernel layout."""
        cdef int xk = x_kind(X, self.n_features)
        if xk < 0 or self.m.fp.lin != NULL:
            raise ValueError("dots needs X in kernel layout and a non-linear kernel")
        cdef Py_ssize_t n = X.shape[0]
        cdef cnp.ndarray D = np.zeros((n, 1 + self.residual + self.sv_residual, self.n_panels * NR), dtype=np.int32)
        cdef cnp.ndarray out = np.empty((n, self.n_pairs))
        r = fm_qsvm_run(&self.m, cnp.PyArray_DATA(X), xk, X.strides[0] // (4 if xk == 1 else 8), n, C_RAW,
                        <double *> cnp.PyArray_DATA(out), NULL, <int32_t *> cnp.PyArray_DATA(D), 1, n + 1)
        if r != 0:
            raise ValueError("X holds NaN or infinity")
        return D

    def run(self, cnp.ndarray X, cnp.ndarray out, int kind, int n_threads=1):
        """Fill ``out`` for every row of X: float64 (n, n_pairs) for RAW/NEG,
        (n, n_classes) for OVR/PROBA, intp (n,) class indexes for VOTE/TIES."""
        cdef int xk = x_kind(X, self.n_features)
        if xk < 0:
            return -1
        cdef Py_ssize_t n = X.shape[0]
        cdef Py_ssize_t cols = self.n_pairs if kind <= C_NEG else (1 if kind in (C_VOTE, C_TIES) else self.n_classes)
        if kind < C_RAW or kind > C_PROBA:
            raise ValueError(f"unknown output kind {kind}")
        if kind in (C_VOTE, C_TIES):
            if cnp.PyArray_TYPE(out) != cnp.NPY_INTP or out.size != n:
                raise ValueError("out must be an intp array with one entry per row")
        elif cnp.PyArray_TYPE(out) != cnp.NPY_FLOAT64 or out.size != n * cols:
            raise ValueError(f"out must be float64 with {n * cols} entries")
        if kind >= C_OVR and self.n_classes < 2:
            raise ValueError("one-vs-rest scores, votes and probabilities need a classifier")
        if kind == C_PROBA and self.m.fp.pa == NULL:
            raise ValueError("this model has no probability parameters")
        if not cnp.PyArray_IS_C_CONTIGUOUS(out):
            raise ValueError("out must be C-contiguous")
        cdef const void *xp = cnp.PyArray_DATA(X)
        cdef Py_ssize_t rs = X.strides[0] // (4 if xk == 1 else 8)
        cdef double *op = NULL
        cdef Py_ssize_t *ip = NULL
        if kind in (C_VOTE, C_TIES):
            ip = <Py_ssize_t *> cnp.PyArray_DATA(out)
        else:
            op = <double *> cnp.PyArray_DATA(out)
        cdef int r
        with nogil:
            r = fm_qsvm_run(&self.m, xp, xk, rs, n, kind, op, ip, NULL, n_threads, self.min_parallel)
        if r < 0:
            raise MemoryError("fastml int8 SVM kernel: out of memory for scratch rows")
        return r
