"""Kernel SVM decision kernel: libsvm's one-vs-one sums over support vectors,
computed as blocked dot products fused with the kernel function and the
dual-coefficient reduction, float64 throughout; then the pair values, the
one-vs-rest scores, the vote, or libsvm's probabilities per row.

The loops live in ``src/fm_svm.h`` (its header comment explains the layout and
loop order). This module packs the support vectors into that layout, splits
batches into blocks of rows, runs the blocks on OpenMP threads with the GIL
released, and runs small batches inline with no thread start-up.
"""
import numpy as np

cimport numpy as cnp
from _svm_decl cimport C_NEG, C_OVR, C_PROBA, C_RAW, C_TIES, C_VOTE, fm_svm_plan
from _layout cimport x_kind
from cython.parallel cimport prange
from libc.stdint cimport int32_t
from libc.stdlib cimport free, malloc

cnp.import_array()

cdef extern from "fm_svm.h" nogil:
    Py_ssize_t fm_svm_work_size(const fm_svm_plan *pl, Py_ssize_t n)
    int fm_svm_block(const fm_svm_plan *pl, const void *X, int f32, Py_ssize_t rs, Py_ssize_t i0,
                     Py_ssize_t i1, int kind, double *out, Py_ssize_t *idx, double *work)

cdef enum:
    LANES = 16
    PARALLEL_MIN = 64    # fewer rows run inline on the calling thread

RAW, NEG, OVR, VOTE, TIES, PROBA = C_RAW, C_NEG, C_OVR, C_VOTE, C_TIES, C_PROBA
KERNELS = {"linear": 0, "poly": 1, "rbf": 2, "sigmoid": 3}


def pair_table(Py_ssize_t K):
    """(K, K-1) int32: the one-vs-one pair (libsvm's order) of class c against its m-th other
    class, whose dual coefficients sit in row m of that class's columns."""
    M = max(K - 1, 1)
    pair = np.zeros((K, M), dtype=np.int32)
    if K > 1:
        index = {}
        for i in range(K):
            for j in range(i + 1, K):
                index[i, j] = len(index)
        for c in range(K):
            for m in range(M):
                pair[c, m] = index[(c, m + 1) if m >= c else (m, c)]
    return pair


def panel_layout(counts, Py_ssize_t lanes):
    """Where each support vector goes when every class starts a new panel of ``lanes``:
    (seg, cols, start), seg[c] the first panel of class c (seg[K]: the number of panels),
    cols[i] vector i's column in the padded layout, start[c] class c's first vector."""
    counts = np.asarray(counts, dtype=np.int64)
    K = counts.shape[0]
    seg = np.zeros(K + 1, dtype=np.int32)
    np.cumsum((counts + lanes - 1) // lanes, out=seg[1:])
    start = np.concatenate([[0], np.cumsum(counts)])
    cols = np.zeros(int(start[K]), dtype=np.int64)
    for c in range(K):
        cols[start[c]:start[c + 1]] = int(seg[c]) * lanes + np.arange(int(counts[c]))
    return seg, cols, start


def fold_linear(coef, sv, start, pair, Py_ssize_t NP):
    """A linear kernel folded into one float64 weight vector per pair: the sum over the
    pair's vectors of coefficient * vector (classes' vectors at rows start[c]:start[c+1])."""
    K, M = pair.shape
    lin = np.zeros((NP, sv.shape[1]))
    for c in range(K):
        for m in range(M):
            lin[pair[c, m]] += coef[m, start[c]:start[c + 1]] @ sv[start[c]:start[c + 1]]
    return lin


cdef class SVMKernel:
    """Support vectors in kernel layout (panels of 16, one class per panel).

    ``run`` returns 0, 1 when X holds NaN or inf (nothing useful is written),
    or -1 when X is not in kernel layout (2-D float32/float64, ``n_features``
    columns, unit column stride): the caller converts X and calls again.
    """

    cdef fm_svm_plan pl
    cdef readonly object arrays
    cdef readonly Py_ssize_t n_features, n_classes, n_pairs, block_rows, n_panels

    def __cinit__(self, support_vectors, dual_coef, intercept, n_support, str kernel,
                  double gamma, double coef0, int degree, prob_a=None, prob_b=None):
        sv = np.asarray(support_vectors, dtype=np.float64)
        coef = np.asarray(dual_coef, dtype=np.float64)
        counts = np.asarray(n_support, dtype=np.int64)
        n_sv, F = sv.shape
        K, M = counts.shape[0], coef.shape[0]
        if coef.shape[1] != n_sv or counts.sum() != n_sv or F < 1 or M < 1:
            raise ValueError("support vectors, coefficients and counts do not match")
        NP = K * (K - 1) // 2 if K > 1 else 1
        b = np.ascontiguousarray(intercept, dtype=np.float64).reshape(NP)
        seg, cols, start = panel_layout(counts, LANES)
        P = int(seg[K])
        svp = np.zeros((P, LANES, F))
        cp = np.zeros((P, LANES, M))
        svp.reshape(P * LANES, F)[cols] = sv
        cp.reshape(P * LANES, M)[cols] = coef.T
        sn = np.einsum("plf,plf->pl", svp, svp)
        pair = pair_table(K)
        self.arrays = dict(
            sv=np.ascontiguousarray(svp.transpose(0, 2, 1)), sn=np.ascontiguousarray(sn),
            coef=np.ascontiguousarray(cp.transpose(0, 2, 1)), b=b, seg=seg, pair=np.ascontiguousarray(pair))
        if prob_a is not None:
            self.arrays["pa"] = np.ascontiguousarray(prob_a, dtype=np.float64).reshape(NP)
            self.arrays["pb"] = np.ascontiguousarray(prob_b, dtype=np.float64).reshape(NP)
        if kernel == "linear":  # fold: pair q's weights = sum over its vectors of coef * s
            self.arrays["lin"] = fold_linear(coef, sv, start, pair, NP)
        a = self.arrays
        self.pl.F, self.pl.P, self.pl.M, self.pl.K, self.pl.NP = F, P, M, K, NP
        self.pl.kernel, self.pl.degree = KERNELS[kernel], degree
        self.pl.gamma, self.pl.coef0 = gamma, coef0
        # above this |x|^2 + |s|^2 the cancelling form could move the exponent by 1e-10
        self.pl.big = 1e-10 / (4.0 * np.sqrt(F) * np.finfo(np.float64).eps * gamma) if gamma > 0 else np.inf
        self.pl.big_row = self.pl.big - (float(sn.max()) if sn.size else 0.0)
        self.pl.sv = <const double *> cnp.PyArray_DATA(a["sv"])
        self.pl.sn = <const double *> cnp.PyArray_DATA(a["sn"])
        self.pl.coef = <const double *> cnp.PyArray_DATA(a["coef"])
        self.pl.b = <const double *> cnp.PyArray_DATA(a["b"])
        self.pl.seg = <const int32_t *> cnp.PyArray_DATA(a["seg"])
        self.pl.pair = <const int32_t *> cnp.PyArray_DATA(a["pair"])
        self.pl.lin = <const double *> cnp.PyArray_DATA(a["lin"]) if "lin" in a else NULL
        self.pl.pa = <const double *> cnp.PyArray_DATA(a["pa"]) if "pa" in a else NULL
        self.pl.pb = <const double *> cnp.PyArray_DATA(a["pb"]) if "pb" in a else NULL
        self.n_features, self.n_classes, self.n_pairs, self.n_panels = F, K, NP, P
        # rows per task: the block, its accumulators and a panel stay within L1
        self.block_rows = 32 if M <= 2 else (16 if M <= 5 else 8)

    cdef int _block(self, const void *X, bint f32, Py_ssize_t rs, Py_ssize_t i0, Py_ssize_t i1,
                    int kind, double *out, Py_ssize_t *idx) noexcept nogil:
        cdef double *work = <double *> malloc(fm_svm_work_size(&self.pl, i1 - i0) * sizeof(double))
        if work == NULL:
            return -2
        cdef int r = fm_svm_block(&self.pl, X, f32, rs, i0, i1, kind, out, idx, work)
        free(work)
        return r

    def run(self, cnp.ndarray X, cnp.ndarray out, int kind, int n_threads=1):
        """Fill ``out`` for every row of X: float64 (n, n_pairs) for RAW/NEG,
        (n, n_classes) for OVR/PROBA, intp (n,) class indexes for VOTE/TIES."""
        if x_kind(X, self.n_features) < 0:
            return -1
        cdef Py_ssize_t n = X.shape[0], nblocks, blk, i0, i1, B = self.block_rows
        cdef Py_ssize_t cols = self.n_pairs if kind <= C_NEG else (1 if kind in (C_VOTE, C_TIES) else self.n_classes)
        if kind in (C_VOTE, C_TIES):
            if cnp.PyArray_TYPE(out) != cnp.NPY_INTP or out.size != n:
                raise ValueError("out must be an intp array with one entry per row")
        elif cnp.PyArray_TYPE(out) != cnp.NPY_FLOAT64 or out.size != n * cols:
            raise ValueError(f"out must be float64 with {n * cols} entries")
        if kind >= C_OVR and self.n_classes < 2:
            raise ValueError("one-vs-rest scores, votes and probabilities need a classifier")
        if kind == C_PROBA and self.pl.pa == NULL:
            raise ValueError("this model has no probability parameters")
        if not cnp.PyArray_IS_C_CONTIGUOUS(out):
            raise ValueError("out must be C-contiguous")
        cdef const void *xp = <const void *> cnp.PyArray_DATA(X)
        cdef bint f32 = cnp.PyArray_TYPE(X) == cnp.NPY_FLOAT32
        cdef Py_ssize_t rs = X.strides[0] // (4 if f32 else 8)
        cdef double *op = NULL
        cdef Py_ssize_t *ip = NULL
        if kind in (C_VOTE, C_TIES):
            ip = <Py_ssize_t *> cnp.PyArray_DATA(out)
        else:
            op = <double *> cnp.PyArray_DATA(out)
        cdef int bad = 0, r
        if n_threads <= 1 or n < PARALLEL_MIN:
            with nogil:
                i0 = 0
                while i0 < n and bad == 0:
                    i1 = i0 + B if i0 + B < n else n
                    bad = self._block(xp, f32, rs, i0, i1, kind, op, ip)
                    i0 = i1
        else:
            nblocks = (n + B - 1) // B
            for blk in prange(nblocks, nogil=True, schedule="dynamic", num_threads=n_threads):
                i0 = blk * B
                i1 = i0 + B if i0 + B < n else n
                r = self._block(xp, f32, rs, i0, i1, kind, op, ip)
                bad |= r
        if bad < 0:
            raise MemoryError("fastml SVM kernel: out of memory for scratch space")
        return 1 if bad else 0
