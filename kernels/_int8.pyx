"""int8 dense kernels: quantized linear models and multi-layer perceptrons.

The scheme, the panel layout and the loop order are described in
``src/fm_int8.h``. This module packs a model's int8 weights into that layout
once (with each column's scale, bias and sum of weights), and runs the C
driver with the GIL released: blocks of rows on OpenMP threads, small calls
inline on the calling thread.

A one-layer (linear) kernel may carry a guard (``guard=(coef, intercept, labels,
rtol, atol)``, see "Guard" in ``src/fm_int8.h``): the float64 coefficients in
the float linear kernel's layout and per-target bounds, so that rows whose
label (or, with ``atol >= 0``, whose values) could differ from the float
kernel's beyond the bound are recomputed in float, in C, inside the same call.

``HAS_VNNI`` says whether this build's tiles are AVX-512 VNNI ``vpdpbusd``
(uint8 x int8 -> int32); without it a portable C loop computes the same
integers. ``Int8Kernel(..., portable=True)`` uses the portable loop even
where VNNI is compiled in (tests compare the two).
"""
import numpy as np

cimport numpy as cnp
from _layout cimport x_kind
from libc.stdint cimport int8_t, int32_t, uint8_t
from libc.stdlib cimport free, malloc

cnp.import_array()

cdef extern from "fm_int8.h" nogil:
    ctypedef struct fm_q8:
        int n_layers
        const Py_ssize_t *dims
        const Py_ssize_t *kpad
        const Py_ssize_t *panels
        const int8_t *const *w
        const float *const *sw
        const int32_t *const *csum
        const float *const *b
        const float *in_s
        const int32_t *in_z
        int hidden
        int outact
        Py_ssize_t width
        Py_ssize_t kmax
        int portable
        const fm_q8_guard *guard
        const uint8_t *resid
    ctypedef struct fm_q8_guard:
        const double *w
        const double *b
        Py_ssize_t fp
        const double *l1
        const double *dw
        const double *wq
        int labels
        double rtol
        double atol
    int fm_q8_run(const fm_q8 *m, const void *X, int x32, Py_ssize_t rs, Py_ssize_t n, int kind,
                  double *out, Py_ssize_t *idx, int n_threads, Py_ssize_t min_parallel,
                  Py_ssize_t *rechecked)
    int FM_Q8_VNNI

cdef enum:
    NR = 32
    K_VALUES = 0
    K_BINARY = 1
    K_ARGMAX = 2
    # threads for calls of at least this many multiply-adds (about 20 us on one core with
    # VNNI; waking a second thread costs a few us) and at least MIN_PARALLEL_ROWS rows
    PARALLEL_MACS = 4000000
    MIN_PARALLEL_ROWS = 16
    # |sum_k u Q| <= 255 * 127 * K must fit int32
    MAX_INPUTS = 66000

HAS_VNNI = bool(FM_Q8_VNNI)


def with_activation(int kind, str activation):
    """``kind`` that also applies ``activation`` to the last layer instead of the model's own."""
    return kind | ((ACTIVATIONS[activation] + 1) << 4)
ACTIVATIONS = {"identity": 0, "logistic": 1, "tanh": 2, "relu": 3, "softmax": 4, "exp": 5}
VALUES, BINARY, ARGMAX = K_VALUES, K_BINARY, K_ARGMAX


def pack_panels(Q):
    """int8 ``Q`` (K, H) as panels of 32 columns: (panels, ceil(K / 4), 32, 4), zero-padded."""
    Q = np.asarray(Q, dtype=np.int8)
    K, H = Q.shape
    kp = (K + 3) // 4 * 4
    np_ = (H + NR - 1) // NR
    Qp = np.zeros((kp, np_ * NR), dtype=np.int8)
    Qp[:K, :H] = Q
    # [k, p*32 + c] -> [p, k // 4, c, k % 4]
    return np.ascontiguousarray(Qp.reshape(kp // 4, 4, np_, NR).transpose(2, 0, 3, 1))


def _pad(a, n, dtype):
    out = np.zeros(n, dtype=dtype)
    out[:len(a)] = a
    return out


cdef class Int8Kernel:
    """A stack of int8 dense layers in kernel layout.

    Parameters
    ----------
    weights : list of int8 arrays (n_in, n_out), values in [-127, 127]
    scales : list of float arrays (n_out,): ``W ~ scales * weights`` per column
    biases : list of float arrays (n_out,)
    activation, out_activation : names in ``ACTIVATIONS`` (hidden layers, last layer)
    input_scales, input_zeros : per layer, static activation quantization; None: dynamic per row
    portable : use the portable C tiles and row quantization even where VNNI is compiled in
    residual : bool, or one bool per layer: quantize the layer's input rows in two uint8 passes,
        the codes and the codes of their rounding residual (``x ~ s (u - z) + s / 256 (v - 128)``:
        two int32 dot products per row; see "Residual pass" in ``src/fm_int8.h``)
    guard : one identity layer only: ``(coef, intercept, labels, rtol, atol)``, the float64
        coefficients ``(n_out, n_in)`` and intercept the int8 weights approximate; ``labels``:
        certify argmax / sign; ``atol >= 0``: also certify the values within ``atol + rtol |f|``

    ``run`` returns 0 when done, 1 when X holds NaN or infinity (outputs are then
    undefined) and -1 when X is not in kernel layout (the caller converts X and
    calls again).
    """

    cdef fm_q8 m
    cdef list keep
    cdef Py_ssize_t *dims
    cdef Py_ssize_t *kpad
    cdef Py_ssize_t *panels
    cdef const int8_t **w
    cdef const float **sw
    cdef const int32_t **cs
    cdef const float **b
    cdef readonly Py_ssize_t n_features, n_outputs, min_parallel
    cdef readonly bint portable, guarded
    cdef readonly tuple residual
    cdef fm_q8_guard g

    def __cinit__(self, weights, scales, biases, str activation, str out_activation,
                  input_scales=None, input_zeros=None, bint portable=False, guard=None, residual=False):
        cdef Py_ssize_t L = len(weights), l
        if L < 1 or len(scales) != L or len(biases) != L:
            raise ValueError("one scale and bias array per weight matrix, at least one layer")
        self.dims = <Py_ssize_t *> malloc((L + 1) * sizeof(Py_ssize_t))
        self.kpad = <Py_ssize_t *> malloc(L * sizeof(Py_ssize_t))
        self.panels = <Py_ssize_t *> malloc(L * sizeof(Py_ssize_t))
        self.w = <const int8_t **> malloc(L * sizeof(void *))
        self.sw = <const float **> malloc(L * sizeof(void *))
        self.cs = <const int32_t **> malloc(L * sizeof(void *))
        self.b = <const float **> malloc(L * sizeof(void *))
        if not (self.dims and self.kpad and self.panels and self.w and self.sw and self.cs and self.b):
            raise MemoryError()
        self.keep = []
        cdef cnp.ndarray P, S, C, B, IS, IZ
        width = kmax = macs = 0
        self.dims[0] = weights[0].shape[0]
        for l in range(L):
            Q = np.asarray(weights[l])
            if Q.dtype != np.int8 or Q.ndim != 2 or Q.shape[0] != self.dims[l] or Q.shape[1] < 1:
                raise ValueError(f"weights[{l}] must be int8 of shape ({self.dims[l]}, n_out)")
            if Q.shape[0] > MAX_INPUTS:
                raise ValueError(f"weights[{l}] has {Q.shape[0]} inputs; int32 sums hold at most {MAX_INPUTS}")
            if np.any(Q == -128):
                raise ValueError(f"weights[{l}] holds -128; symmetric int8 weights are in [-127, 127]")
            H = Q.shape[1]
            P = pack_panels(Q)
            w = P.shape[0] * NR
            S = _pad(np.asarray(scales[l], dtype=np.float32), w, np.float32)
            C = _pad(Q.astype(np.int32).sum(axis=0), w, np.int32)
            B = _pad(np.asarray(biases[l], dtype=np.float32), w, np.float32)
            if len(scales[l]) != H or len(biases[l]) != H:
                raise ValueError(f"scales[{l}] and biases[{l}] need {H} values")
            self.keep += [P, S, C, B]
            self.dims[l + 1] = H
            self.kpad[l] = P.shape[1] * 4
            self.panels[l] = P.shape[0]
            self.w[l] = <const int8_t *> cnp.PyArray_DATA(P)
            self.sw[l] = <const float *> cnp.PyArray_DATA(S)
            self.cs[l] = <const int32_t *> cnp.PyArray_DATA(C)
            self.b[l] = <const float *> cnp.PyArray_DATA(B)
            width = max(width, w)
            kmax = max(kmax, self.kpad[l])
            macs += Q.shape[0] * H
        self.m.n_layers = L
        self.m.dims = self.dims
        self.m.kpad = self.kpad
        self.m.panels = self.panels
        self.m.w = self.w
        self.m.sw = self.sw
        self.m.csum = self.cs
        self.m.b = self.b
        self.m.in_s = NULL
        self.m.in_z = NULL
        if (input_scales is None) != (input_zeros is None):
            raise ValueError("input_scales and input_zeros come together")
        if input_scales is not None:
            IS = np.ascontiguousarray(input_scales, dtype=np.float32)
            IZ = np.ascontiguousarray(input_zeros, dtype=np.int32)
            if IS.size != L or IZ.size != L or not np.all(IS > 0) or np.any((IZ < 0) | (IZ > 255)):
                raise ValueError(f"input_scales (> 0) and input_zeros (0..255) need {L} values each")
            self.keep += [IS, IZ]
            self.m.in_s = <const float *> cnp.PyArray_DATA(IS)
            self.m.in_z = <const int32_t *> cnp.PyArray_DATA(IZ)
        self.m.hidden = ACTIVATIONS[activation]
        self.m.outact = ACTIVATIONS[out_activation]
        self.m.width = width
        self.m.kmax = kmax
        self.m.portable = portable
        self.portable = portable or not FM_Q8_VNNI
        self.n_features = self.dims[0]
        self.n_outputs = self.dims[L]
        self.m.guard = NULL
        self.m.resid = NULL
        R = np.zeros(L, dtype=np.uint8)
        R[:] = np.asarray(residual, dtype=bool).astype(np.uint8).reshape(-1) if np.ndim(residual) else bool(residual)
        self.residual = tuple(bool(r) for r in R)
        if R.any():
            self.keep.append(R)
            self.m.resid = <const uint8_t *> cnp.PyArray_DATA(R)
        self.guarded = guard is not None
        if guard is not None:
            self._set_guard(weights[0], scales[0], guard)
        self.min_parallel = max(MIN_PARALLEL_ROWS, PARALLEL_MACS // max(macs, 1) + 1)

    cdef _set_guard(self, Q, scales, guard):
        coef, intercept, labels, rtol, atol = guard
        cdef Py_ssize_t F = self.dims[0], T = self.dims[1], Fp = (F + 7) // 8 * 8
        if self.m.n_layers != 1 or self.m.outact != 0:
            raise ValueError("a guard needs one layer with the identity activation")
        C = np.asarray(coef, dtype=np.float64)
        bb = np.ascontiguousarray(np.asarray(intercept, dtype=np.float64).reshape(-1))
        if C.shape != (T, F) or bb.shape != (T,) or not (np.all(np.isfinite(C)) and np.all(np.isfinite(bb))):
            raise ValueError(f"guard: coef must be finite ({T}, {F}) and intercept finite ({T},)")
        if not (np.isfinite(rtol) and rtol >= 0 and np.isfinite(atol)):
            raise ValueError("guard: rtol must be finite >= 0 and atol finite (< 0: labels only)")
        cdef cnp.ndarray W = np.zeros((T, Fp))  # the float linear kernel's layout
        W[:, :F] = C
        # the int8 weights as the kernel scales them (float32 scales), in float64: exact products
        What = np.asarray(Q, dtype=np.float64).T * np.asarray(scales, dtype=np.float32).astype(np.float64)[:, None]
        up = 1.0 + 1e-12  # rounds the float64 sums and differences up
        cdef cnp.ndarray L1 = np.ascontiguousarray(np.abs(C).sum(axis=1) * up)
        cdef cnp.ndarray DW = np.ascontiguousarray(np.abs(C - What).max(axis=1) * up)
        cdef cnp.ndarray WQ = np.ascontiguousarray(np.abs(What).max(axis=1) * up)
        self.keep += [W, bb, L1, DW, WQ]
        self.g.w = <const double *> cnp.PyArray_DATA(W)
        self.g.b = <const double *> cnp.PyArray_DATA(bb)
        self.g.fp = Fp
        self.g.l1 = <const double *> cnp.PyArray_DATA(L1)
        self.g.dw = <const double *> cnp.PyArray_DATA(DW)
        self.g.wq = <const double *> cnp.PyArray_DATA(WQ)
        self.g.labels = bool(labels)
        self.g.rtol = rtol
        self.g.atol = atol
        self.m.guard = &self.g

    def __dealloc__(self):
        free(self.dims)
        free(self.kpad)
        free(self.panels)
        free(<void *> self.w)
        free(<void *> self.sw)
        free(<void *> self.cs)
        free(<void *> self.b)

    def run(self, cnp.ndarray X, cnp.ndarray out, int kind, int n_threads=1, cnp.ndarray rechecked=None):
        """Fill ``out`` (float64 values or [1 - p, p]; intp indices for ``ARGMAX``), C-contiguous.
        A ``kind`` from :func:`with_activation` also overrides the last layer's activation for
        this call (a linear model's scores and probabilities share one kernel). ``rechecked``
        (guarded kernels): an intp array whose first entry gets the number of rows recomputed
        in float."""
        cdef int out_activation = (kind >> 4) - 1
        kind &= 15
        cdef int xk = x_kind(X, self.n_features)
        if xk < 0:
            return -1
        cdef Py_ssize_t n = X.shape[0]
        cdef Py_ssize_t cols = 2 if kind == K_BINARY else (1 if kind == K_ARGMAX else self.n_outputs)
        if kind == K_ARGMAX:
            if cnp.PyArray_TYPE(out) != cnp.NPY_INTP or out.size != n:
                raise ValueError("out must be an intp array with one entry per row")
        elif kind == K_VALUES or kind == K_BINARY:
            if cnp.PyArray_TYPE(out) != cnp.NPY_FLOAT64 or out.size != n * cols:
                raise ValueError(f"out must be float64 with {n * cols} entries")
        else:
            raise ValueError(f"unknown output kind {kind}")
        if not cnp.PyArray_IS_C_CONTIGUOUS(out):
            raise ValueError("out must be C-contiguous")
        cdef const void *xp = cnp.PyArray_DATA(X)
        cdef Py_ssize_t rs = X.strides[0] // (4 if xk == 1 else 8)
        cdef double *op = NULL
        cdef Py_ssize_t *ip = NULL
        if kind == K_ARGMAX:
            ip = <Py_ssize_t *> cnp.PyArray_DATA(out)
        else:
            op = <double *> cnp.PyArray_DATA(out)
        cdef int r
        cdef Py_ssize_t redo = 0
        cdef fm_q8 m = self.m
        if out_activation >= 0:
            if out_activation > 5:
                raise ValueError(f"unknown activation {out_activation}")
            m.outact = out_activation
        with nogil:
            r = fm_q8_run(&m, xp, xk, rs, n, kind, op, ip, n_threads, self.min_parallel, &redo)
        if rechecked is not None:
            rechecked[0] = redo
        if r < 0:
            raise MemoryError("fastml int8 kernel: out of memory for scratch rows")
        return r
