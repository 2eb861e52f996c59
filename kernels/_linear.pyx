"""Linear decision kernel: ``X @ coef.T + intercept`` with a fused probability
transform, float32 or float64 input, float64 accumulation and output.

The loops live in ``src/fm_linear.h`` (its header comment explains the layout
and loop order). This module keeps the coefficient arrays in kernel layout,
splits batches into blocks of rows, runs the blocks on OpenMP threads with the
GIL released, and runs small batches inline with no thread start-up.
"""
import numpy as np

cimport numpy as cnp
from _layout cimport x_kind
from cython.parallel cimport prange
from libc.stdlib cimport free, malloc

cnp.import_array()

cdef extern from "fm_linear.h" nogil:
    int fm_linear_scores_f32(const float *X, Py_ssize_t rs, Py_ssize_t i0, Py_ssize_t i1,
                             Py_ssize_t F, Py_ssize_t Fp, const double *W, const double *b,
                             Py_ssize_t T, double *out)
    int fm_linear_scores_f64(const double *X, Py_ssize_t rs, Py_ssize_t i0, Py_ssize_t i1,
                             Py_ssize_t F, Py_ssize_t Fp, const double *W, const double *b,
                             Py_ssize_t T, double *out)
    void fm_linear_transform(double *s, Py_ssize_t n, Py_ssize_t T, int kind, double *p)
    void fm_linear_argmax(const double *s, Py_ssize_t n, Py_ssize_t T, Py_ssize_t *idx)

# Kinds of output (must match the enum in fm_linear.h), for C and for Python.
cdef enum:
    K_SCORES = 0
    K_SOFTMAX = 1
    K_LOGISTIC_BINARY = 2
    K_LOGISTIC_OVR = 3
    K_MHUBER_BINARY = 4
    K_MHUBER_OVR = 5
    K_ARGMAX = -1

SCORES, SOFTMAX, LOGISTIC_BINARY, LOGISTIC_OVR = K_SCORES, K_SOFTMAX, K_LOGISTIC_BINARY, K_LOGISTIC_OVR
MHUBER_BINARY, MHUBER_OVR, ARGMAX = K_MHUBER_BINARY, K_MHUBER_OVR, K_ARGMAX

cdef enum:
    BLOCK = 128          # rows per task
    PARALLEL_MIN = 2048  # fewer rows run inline on the calling thread


cdef class LinearKernel:
    """Coefficients in kernel layout and the loops that use them.

    ``run`` returns 0 when every score is finite, 1 when some score is not
    (the caller then looks for NaN/inf in X), and -1 when X is not in kernel
    layout (2-D float32/float64, ``n_features`` columns, unit column stride):
    the caller converts X and calls again.
    """

    cdef readonly cnp.ndarray W, b
    cdef const double *w
    cdef const double *bp
    cdef readonly Py_ssize_t n_features, n_targets
    cdef Py_ssize_t Fp

    def __cinit__(self, coef, intercept):
        C = np.asarray(coef, dtype=np.float64)
        if C.ndim != 2 or C.shape[0] < 1 or C.shape[1] < 1:
            raise ValueError(f"coef must be a non-empty 2-D array, got shape {C.shape}")
        T, F = C.shape
        Fp = (F + 7) // 8 * 8
        W = np.zeros((T, Fp))  # rows zero-padded to whole vectors
        W[:, :F] = C
        b = np.ascontiguousarray(np.asarray(intercept, dtype=np.float64).reshape(T))
        self.W, self.b = W, b
        self.w = <const double *> cnp.PyArray_DATA(W)
        self.bp = <const double *> cnp.PyArray_DATA(b)
        self.n_features, self.n_targets, self.Fp = F, T, Fp

    cdef int _block(self, const char *X, bint f32, Py_ssize_t rs, Py_ssize_t i0, Py_ssize_t i1,
                    int kind, double *out, Py_ssize_t *idx) noexcept nogil:
        cdef Py_ssize_t T = self.n_targets, n = i1 - i0
        cdef double *s
        cdef int bad
        cdef bint scratch = kind == K_ARGMAX or kind == K_LOGISTIC_BINARY or kind == K_MHUBER_BINARY
        if scratch:
            s = <double *> malloc(n * T * sizeof(double))
            if s == NULL:
                return -2
        else:
            s = out + i0 * T
        if f32:
            bad = fm_linear_scores_f32(<const float *> X, rs, i0, i1, self.n_features, self.Fp,
                                       self.w, self.bp, T, s)
        else:
            bad = fm_linear_scores_f64(<const double *> X, rs, i0, i1, self.n_features, self.Fp,
                                       self.w, self.bp, T, s)
        if kind == K_ARGMAX:
            fm_linear_argmax(s, n, T, idx + i0)
        elif kind == K_LOGISTIC_BINARY or kind == K_MHUBER_BINARY:
            fm_linear_transform(s, n, T, kind, out + 2 * i0)
        elif kind != K_SCORES:
            fm_linear_transform(s, n, T, kind, s)
        if scratch:
            free(s)
        return bad

    def run(self, cnp.ndarray X, cnp.ndarray out, int kind, int n_threads=1):
        """Fill ``out`` (float64, C-contiguous; intp for ``K_ARGMAX``) for every row of X."""
        if x_kind(X, self.n_features) < 0:
            return -1
        cdef Py_ssize_t n = X.shape[0], nblocks, blk, i0, i1
        cdef Py_ssize_t cols = 2 if (kind == K_LOGISTIC_BINARY or kind == K_MHUBER_BINARY) else (
            1 if kind == K_ARGMAX else self.n_targets)
        if kind == K_ARGMAX:
            if cnp.PyArray_TYPE(out) != cnp.NPY_INTP or out.size != n:
                raise ValueError("out must be an intp array with one entry per row")
        elif cnp.PyArray_TYPE(out) != cnp.NPY_FLOAT64 or out.size != n * cols:
            raise ValueError(f"out must be float64 with {n * cols} entries")
        if not cnp.PyArray_IS_C_CONTIGUOUS(out):
            raise ValueError("out must be C-contiguous")
        cdef const char *xp = <const char *> cnp.PyArray_DATA(X)
        cdef bint f32 = cnp.PyArray_TYPE(X) == cnp.NPY_FLOAT32
        cdef Py_ssize_t rs = X.strides[0] // (4 if f32 else 8)
        cdef double *op = NULL
        cdef Py_ssize_t *ip = NULL
        if kind == K_ARGMAX:
            ip = <Py_ssize_t *> cnp.PyArray_DATA(out)
        else:
            op = <double *> cnp.PyArray_DATA(out)
        cdef int bad = 0, r
        if n == 0:
            return 0
        if n_threads <= 1 or n < PARALLEL_MIN:
            with nogil:
                bad = self._block(xp, f32, rs, 0, n, kind, op, ip)
        else:
            nblocks = (n + BLOCK - 1) // BLOCK
            for blk in prange(nblocks, nogil=True, schedule="dynamic", num_threads=n_threads):
                i0 = blk * BLOCK
                i1 = i0 + BLOCK if i0 + BLOCK < n else n
                r = self._block(xp, f32, rs, i0, i1, kind, op, ip)
                bad |= r
        if bad < 0:
            raise MemoryError("fastml linear kernel: out of memory for scratch scores")
        return 1 if bad else 0
