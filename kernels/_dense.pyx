"""Dense kernels: multi-layer perceptrons and nearest-centroid search (k-means),
float32 or float64 input, float32 or float64 arithmetic.

The loops live in ``src/fm_dense.h`` (its header comment explains the panel
layout, the micro-kernel and the loop order). This module packs the weights
into that layout once, picks the arithmetic for the input's dtype, and runs
the C driver with the GIL released; the driver runs blocks of rows on OpenMP
threads and small batches inline with no thread start-up.

Arithmetic (as scikit-learn: ``result_type(X, weights)``): a model with
float32 weights computes float32 input in float32 and float64 input in
float64; a model with float64 weights computes everything in float64 (float32
input is widened as it is read). k-means distances (``transform``) are always
computed in float64, as scikit-learn's ``euclidean_distances`` does.
"""
import numpy as np

cimport numpy as cnp
from _layout cimport x_kind
from libc.stdint cimport int32_t
from libc.stdlib cimport free, malloc

cnp.import_array()

cdef extern from "fm_dense.h" nogil:
    ctypedef struct fm_mlp:
        int n_layers
        const Py_ssize_t *dims
        const Py_ssize_t *panels
        const void *const *w
        const void *const *b
        int hidden
        int outact
        Py_ssize_t width
    ctypedef struct fm_kmeans:
        Py_ssize_t F, K, panels
        const void *w
        const void *cn
        const double *zero
        const double *cn64
    int fm_mlp_run_f(const fm_mlp *m, const void *X, int x32, Py_ssize_t rs, Py_ssize_t n,
                     int kind, double *out, Py_ssize_t *idx, int n_threads, Py_ssize_t min_parallel)
    int fm_mlp_run_d(const fm_mlp *m, const void *X, int x32, Py_ssize_t rs, Py_ssize_t n,
                     int kind, double *out, Py_ssize_t *idx, int n_threads, Py_ssize_t min_parallel)
    int fm_kmeans_run_f(const fm_kmeans *m, const void *X, int x32, Py_ssize_t rs, Py_ssize_t n,
                        int kind, int32_t *lab, double *dist, int n_threads, Py_ssize_t min_parallel)
    int fm_kmeans_run_d(const fm_kmeans *m, const void *X, int x32, Py_ssize_t rs, Py_ssize_t n,
                        int kind, int32_t *lab, double *dist, int n_threads, Py_ssize_t min_parallel)

cdef enum:
    A_IDENTITY = 0
    A_LOGISTIC = 1
    A_TANH = 2
    A_RELU = 3
    A_SOFTMAX = 4
    A_EXP = 5
    K_VALUES = 0
    K_BINARY = 1
    K_ARGMAX = 2
    KM_LABELS = 0
    KM_DISTANCES = 1
    NR_F = 32
    NR_D = 16
    # a call runs on threads when it has at least this many multiply-adds (about 40 us on one
    # core: waking a second thread costs a few us) and at least MIN_PARALLEL_ROWS rows
    PARALLEL_MACS = 2000000
    MIN_PARALLEL_ROWS = 16


cdef Py_ssize_t _min_parallel(Py_ssize_t macs_per_row):
    cdef Py_ssize_t rows = PARALLEL_MACS // max(macs_per_row, 1) + 1
    return rows if rows > MIN_PARALLEL_ROWS else MIN_PARALLEL_ROWS

ACTIVATIONS = {"identity": A_IDENTITY, "logistic": A_LOGISTIC, "tanh": A_TANH, "relu": A_RELU,
               "softmax": A_SOFTMAX, "exp": A_EXP}
VALUES, BINARY, ARGMAX = K_VALUES, K_BINARY, K_ARGMAX
LABELS, DISTANCES = KM_LABELS, KM_DISTANCES


def pack_panels(W, dtype):
    """``W`` (F, H) as column panels of two vectors: (panels, F, NR), zero-padded."""
    W = np.asarray(W, dtype=np.float64)
    F, H = W.shape
    nr = NR_F if np.dtype(dtype) == np.float32 else NR_D
    np_ = (H + nr - 1) // nr
    P = np.zeros((np_, F, nr), dtype=dtype)
    Wpad = np.zeros((F, np_ * nr))
    Wpad[:, :H] = W
    P[...] = Wpad.reshape(F, np_, nr).transpose(1, 0, 2)
    return P


def _pad(b, n, dtype):
    out = np.zeros(n, dtype=dtype)
    out[:len(b)] = b
    return out


cdef void *_out_data(cnp.ndarray out, int typenum, Py_ssize_t size, str what) except NULL:
    """The data of ``out`` after checking it is C-contiguous, of ``typenum`` and ``size`` entries."""
    if cnp.PyArray_TYPE(out) != typenum or out.size != size:
        raise ValueError(f"out must be {what} with {size} entries")
    if not cnp.PyArray_IS_C_CONTIGUOUS(out):
        raise ValueError("out must be C-contiguous")
    return cnp.PyArray_DATA(out)


cdef class _Packed:
    """One precision's packed layers and the C descriptor that points into them."""
    cdef fm_mlp m
    cdef list keep
    cdef Py_ssize_t *dims
    cdef Py_ssize_t *panels
    cdef const void **w
    cdef const void **b

    def __cinit__(self, weights, biases, dtype, int hidden, int outact):
        cdef Py_ssize_t L = len(weights), l
        nr = NR_F if np.dtype(dtype) == np.float32 else NR_D
        self.dims = <Py_ssize_t *> malloc((L + 1) * sizeof(Py_ssize_t))
        self.panels = <Py_ssize_t *> malloc(L * sizeof(Py_ssize_t))
        self.w = <const void **> malloc(L * sizeof(void *))
        self.b = <const void **> malloc(L * sizeof(void *))
        if not (self.dims and self.panels and self.w and self.b):
            raise MemoryError()
        self.keep = []
        cdef cnp.ndarray P, B
        width = 0
        self.dims[0] = weights[0].shape[0]
        for l in range(L):
            P = pack_panels(weights[l], dtype)
            B = _pad(np.asarray(biases[l], dtype=np.float64), P.shape[0] * nr, dtype)
            self.keep += [P, B]
            self.dims[l + 1] = weights[l].shape[1]
            self.panels[l] = P.shape[0]
            self.w[l] = cnp.PyArray_DATA(P)
            self.b[l] = cnp.PyArray_DATA(B)
            width = max(width, P.shape[0] * nr)
        self.m.n_layers = L
        self.m.dims = self.dims
        self.m.panels = self.panels
        self.m.w = self.w
        self.m.b = self.b
        self.m.hidden = hidden
        self.m.outact = outact
        self.m.width = width

    def __dealloc__(self):
        free(self.dims)
        free(self.panels)
        free(<void *> self.w)
        free(<void *> self.b)


cdef class MLPKernel:
    """A multi-layer perceptron in kernel layout.

    ``run`` returns 0 when done, 1 when X holds NaN or infinity (outputs are
    then undefined), and -1 when X is not in kernel layout (2-D float32 /
    float64, ``n_features`` columns, unit column stride): the caller converts
    X and calls again.
    """

    cdef _Packed p64
    cdef _Packed p32
    cdef readonly Py_ssize_t n_features, n_outputs, min_parallel
    cdef readonly bint float32

    def __cinit__(self, weights, biases, str activation, str out_activation, bint float32=False):
        h, o = ACTIVATIONS[activation], ACTIVATIONS[out_activation]
        self.p64 = _Packed(weights, biases, np.float64, h, o)
        self.p32 = _Packed(weights, biases, np.float32, h, o) if float32 else None
        self.float32 = float32
        self.n_features = weights[0].shape[0]
        self.n_outputs = weights[len(weights) - 1].shape[1]
        self.min_parallel = _min_parallel(sum(w.shape[0] * w.shape[1] for w in weights))

    def run(self, cnp.ndarray X, cnp.ndarray out, int kind, int n_threads=1):
        """Fill ``out`` (float64 values or [1 - p, p]; intp indices for ``ARGMAX``), C-contiguous."""
        cdef int xk = x_kind(X, self.n_features)
        if xk < 0:
            return -1
        cdef Py_ssize_t n = X.shape[0]
        cdef Py_ssize_t cols = 2 if kind == K_BINARY else (1 if kind == K_ARGMAX else self.n_outputs)
        cdef bint am = kind == K_ARGMAX
        cdef void *o = _out_data(out, cnp.NPY_INTP if am else cnp.NPY_FLOAT64, n * cols,
                                 "an intp array" if am else "a float64 array")
        cdef const void *xp = cnp.PyArray_DATA(X)
        cdef Py_ssize_t rs = X.strides[0] // (4 if xk == 1 else 8)
        cdef double *op = NULL if am else <double *> o
        cdef Py_ssize_t *ip = <Py_ssize_t *> o if am else NULL
        cdef int r
        cdef bint f32 = xk == 1 and self.float32
        cdef fm_mlp *m = &self.p32.m if f32 else &self.p64.m
        with nogil:
            if f32:
                r = fm_mlp_run_f(m, xp, 1, rs, n, kind, op, ip, n_threads, self.min_parallel)
            else:
                r = fm_mlp_run_d(m, xp, xk, rs, n, kind, op, ip, n_threads, self.min_parallel)
        if r < 0:
            raise MemoryError("fastml MLP kernel: out of memory for scratch rows")
        return r


cdef class KMeansKernel:
    """Cluster centers in kernel layout: ``-2 C^T`` in panels and ``||c||^2``.

    ``run`` returns like :meth:`MLPKernel.run`.
    """

    cdef fm_kmeans k64
    cdef fm_kmeans k32
    cdef list keep
    cdef readonly Py_ssize_t n_features, n_clusters, min_parallel
    cdef readonly bint float32

    def __cinit__(self, centers, bint float32=False):
        C = np.ascontiguousarray(centers, dtype=np.float64)
        K, F = C.shape
        self.n_features, self.n_clusters, self.float32 = F, K, float32
        self.min_parallel = _min_parallel(F * K)
        self.keep = []
        self._fill(&self.k64, C, np.float64)
        if float32:
            self._fill(&self.k32, C, np.float32)

    cdef _fill(self, fm_kmeans *k, C, dtype):
        cdef cnp.ndarray P, cn, zero, cn64
        Cd = C.astype(dtype)
        P = pack_panels(-2.0 * C.T, dtype)  # -2 c is exact in either precision
        nr = NR_F if np.dtype(dtype) == np.float32 else NR_D
        width = P.shape[0] * nr
        # ||c||^2 as scikit-learn's row_norms computes it (einsum in the centers' dtype)
        cn = _pad(np.einsum("ij,ij->i", Cd, Cd), width, dtype)
        cn[C.shape[0]:] = np.inf  # padded columns never win the argmin
        cn64 = np.einsum("ij,ij->i", C, C)
        zero = np.zeros(width, dtype=dtype)
        self.keep += [P, cn, zero, cn64]
        k.F, k.K, k.panels = C.shape[1], C.shape[0], P.shape[0]
        k.w = cnp.PyArray_DATA(P)
        k.cn = cnp.PyArray_DATA(cn)
        k.zero = <const double *> cnp.PyArray_DATA(zero)
        k.cn64 = <const double *> cnp.PyArray_DATA(cn64)

    def run(self, cnp.ndarray X, cnp.ndarray out, int kind, int n_threads=1):
        """Fill ``out``: int32 labels (``LABELS``) or float64 (n, n_clusters) distances."""
        cdef int xk = x_kind(X, self.n_features)
        if xk < 0:
            return -1
        cdef Py_ssize_t n = X.shape[0]
        cdef bint lab = kind == KM_LABELS
        cdef void *o = _out_data(out, cnp.NPY_INT32 if lab else cnp.NPY_FLOAT64,
                                 n if lab else n * self.n_clusters, "an int32 array" if lab else "a float64 array")
        cdef const void *xp = cnp.PyArray_DATA(X)
        cdef Py_ssize_t rs = X.strides[0] // (4 if xk == 1 else 8)
        cdef int32_t *lp = <int32_t *> o if lab else NULL
        cdef double *dp = NULL if lab else <double *> o
        cdef int r
        cdef bint f32 = xk == 1 and self.float32 and kind == KM_LABELS
        with nogil:
            if f32:
                r = fm_kmeans_run_f(&self.k32, xp, 1, rs, n, kind, lp, dp, n_threads, self.min_parallel)
            else:
                r = fm_kmeans_run_d(&self.k64, xp, xk, rs, n, kind, lp, dp, n_threads, self.min_parallel)
        if r < 0:
            raise MemoryError("fastml k-means kernel: out of memory for scratch rows")
        return r
