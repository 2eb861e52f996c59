"""Activation kernels: sigmoid, tanh, relu, leaky_relu, elu, softplus, swish,
softmax and log_softmax over float32 / float64 arrays.

The loops live in ``src/fm_activations.h`` (its header comment explains the
layout and loop order). This module only checks the buffers it is given, cuts
them into one contiguous range per thread, releases the GIL and runs the
ranges on OpenMP threads. Inputs below ``PARALLEL_MIN`` elements run inline on
the calling thread: no OpenMP region, so no thread start-up on batch-1 calls.

Everything here is private: ``fastml.kernels`` validates, converts and
allocates, and passes contiguous arrays of matching dtype and size.
"""
cimport numpy as cnp
from cython.parallel cimport prange

cnp.import_array()

cdef extern from "fm_activations.h" nogil:
    void fm_sigmoid_f32(const float *x, float *out, Py_ssize_t n)
    void fm_tanh_f32(const float *x, float *out, Py_ssize_t n)
    void fm_relu_f32(const float *x, float *out, Py_ssize_t n)
    void fm_softplus_f32(const float *x, float *out, Py_ssize_t n)
    void fm_swish_f32(const float *x, float *out, Py_ssize_t n)
    void fm_leaky_relu_f32(const float *x, float *out, Py_ssize_t n, float alpha)
    void fm_elu_f32(const float *x, float *out, Py_ssize_t n, float alpha)
    void fm_sigmoid_f64(const double *x, double *out, Py_ssize_t n)
    void fm_tanh_f64(const double *x, double *out, Py_ssize_t n)
    void fm_relu_f64(const double *x, double *out, Py_ssize_t n)
    void fm_softplus_f64(const double *x, double *out, Py_ssize_t n)
    void fm_swish_f64(const double *x, double *out, Py_ssize_t n)
    void fm_leaky_relu_f64(const double *x, double *out, Py_ssize_t n, double alpha)
    void fm_elu_f64(const double *x, double *out, Py_ssize_t n, double alpha)
    void fm_softmax_rows_f32(const float *x, float *out, Py_ssize_t rows, Py_ssize_t cols, int stream)
    void fm_log_softmax_rows_f32(const float *x, float *out, Py_ssize_t rows, Py_ssize_t cols, int stream)
    void fm_softmax_rows_f64(const double *x, double *out, Py_ssize_t rows, Py_ssize_t cols, int stream)
    void fm_log_softmax_rows_f64(const double *x, double *out, Py_ssize_t rows, Py_ssize_t cols, int stream)
    int fm_all_finite_f32(const float *x, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t rs)
    int fm_all_finite_f64(const double *x, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t rs)
    Py_ssize_t fm_softmax_block_rows_f32(Py_ssize_t cols)
    Py_ssize_t fm_softmax_block_rows_f64(Py_ssize_t cols)

cdef enum:
    PARALLEL_MIN = 65536    # fewer elements run inline on the calling thread
    THREAD_MIN = 32768      # at least this many elements per thread
    ALIGN = 16              # elementwise ranges start on 64-byte boundaries
    # softmax outputs of at least this many bytes (half this machine kind's
    # 32 MiB L3) are written past the cache (non-temporal stores)
    STREAM_BYTES = 16 * 1024 * 1024

# Elementwise operations by name, for fastml.kernels.
cdef enum Op:
    SIGMOID, TANH, RELU, SOFTPLUS, SWISH, LEAKY_RELU, ELU

OPS = {"sigmoid": SIGMOID, "tanh": TANH, "relu": RELU, "softplus": SOFTPLUS,
       "swish": SWISH, "leaky_relu": LEAKY_RELU, "elu": ELU}

ctypedef void (*ew32_t)(const float *, float *, Py_ssize_t, float) noexcept nogil
ctypedef void (*ew64_t)(const double *, double *, Py_ssize_t, double) noexcept nogil

# Uniform (x, out, n, alpha) signatures, so that one table indexed by Op holds them.
cdef void _sigmoid32(const float *x, float *o, Py_ssize_t n, float a) noexcept nogil: fm_sigmoid_f32(x, o, n)
cdef void _tanh32(const float *x, float *o, Py_ssize_t n, float a) noexcept nogil: fm_tanh_f32(x, o, n)
cdef void _relu32(const float *x, float *o, Py_ssize_t n, float a) noexcept nogil: fm_relu_f32(x, o, n)
cdef void _softplus32(const float *x, float *o, Py_ssize_t n, float a) noexcept nogil: fm_softplus_f32(x, o, n)
cdef void _swish32(const float *x, float *o, Py_ssize_t n, float a) noexcept nogil: fm_swish_f32(x, o, n)
cdef void _sigmoid64(const double *x, double *o, Py_ssize_t n, double a) noexcept nogil: fm_sigmoid_f64(x, o, n)
cdef void _tanh64(const double *x, double *o, Py_ssize_t n, double a) noexcept nogil: fm_tanh_f64(x, o, n)
cdef void _relu64(const double *x, double *o, Py_ssize_t n, double a) noexcept nogil: fm_relu_f64(x, o, n)
cdef void _softplus64(const double *x, double *o, Py_ssize_t n, double a) noexcept nogil: fm_softplus_f64(x, o, n)
cdef void _swish64(const double *x, double *o, Py_ssize_t n, double a) noexcept nogil: fm_swish_f64(x, o, n)

cdef ew32_t EW32[7]
cdef ew64_t EW64[7]
EW32[:] = [_sigmoid32, _tanh32, _relu32, _softplus32, _swish32, fm_leaky_relu_f32, fm_elu_f32]
EW64[:] = [_sigmoid64, _tanh64, _relu64, _softplus64, _swish64, fm_leaky_relu_f64, fm_elu_f64]


cdef int _check(cnp.ndarray x, cnp.ndarray out) except -1:
    """Both C-contiguous, same float dtype, same size: what the loops assume."""
    if not (cnp.PyArray_IS_C_CONTIGUOUS(x) and cnp.PyArray_IS_C_CONTIGUOUS(out)):
        raise ValueError("x and out must be C-contiguous")
    if cnp.PyArray_TYPE(x) != cnp.PyArray_TYPE(out) or cnp.PyArray_TYPE(x) not in (cnp.NPY_FLOAT32, cnp.NPY_FLOAT64):
        raise ValueError("x and out must both be float32 or both float64")
    if cnp.PyArray_SIZE(x) != cnp.PyArray_SIZE(out):
        raise ValueError("x and out must have the same size")
    if not cnp.PyArray_ISWRITEABLE(out):
        raise ValueError("out must be writeable")
    return 0


cdef inline int _threads(Py_ssize_t n, int n_threads) noexcept nogil:
    """Threads worth starting for n elements: 1 below PARALLEL_MIN."""
    if n < PARALLEL_MIN or n_threads <= 1:
        return 1
    return <int>min(<Py_ssize_t>n_threads, n // THREAD_MIN)


def elementwise(int op, cnp.ndarray x, cnp.ndarray out, double alpha, int n_threads):
    """out[i] = f(x[i]) for the operation ``op`` (a value of ``OPS``)."""
    _check(x, out)
    if op < 0 or op >= 7:
        raise ValueError(f"unknown operation {op}")
    cdef Py_ssize_t n = cnp.PyArray_SIZE(x), chunk, c, start
    cdef int nt = _threads(n, n_threads)
    cdef bint f32 = cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32
    cdef char *xp = <char *>cnp.PyArray_DATA(x)
    cdef char *op_ = <char *>cnp.PyArray_DATA(out)
    cdef ew32_t f = EW32[op]
    cdef ew64_t g = EW64[op]
    cdef float a32 = <float>alpha
    chunk = ((n + nt - 1) // nt + ALIGN - 1) // ALIGN * ALIGN
    with nogil:
        if nt == 1:
            if f32:
                f(<const float *>xp, <float *>op_, n, a32)
            else:
                g(<const double *>xp, <double *>op_, n, alpha)
        else:
            for c in prange(nt, schedule="static", num_threads=nt):
                start = c * chunk
                if start < n:
                    if f32:
                        f(<const float *>xp + start, <float *>op_ + start, min(chunk, n - start), a32)
                    else:
                        g(<const double *>xp + start, <double *>op_ + start, min(chunk, n - start), alpha)


def softmax_rows(cnp.ndarray x, cnp.ndarray out, Py_ssize_t rows, Py_ssize_t cols, bint log, int n_threads):
    """(log-)softmax over each row of x viewed as rows x cols (C order).

    Threads get whole blocks of rows (``fm_softmax_block_rows``), so every row
    is computed exactly as it would be on one thread.
    """
    _check(x, out)
    if rows < 0 or cols < 0 or rows * cols != cnp.PyArray_SIZE(x):
        raise ValueError("rows * cols must be the size of x")
    cdef int nt = _threads(rows * cols, n_threads)
    cdef bint f32 = cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32
    cdef Py_ssize_t block = fm_softmax_block_rows_f32(cols) if f32 else fm_softmax_block_rows_f64(cols)
    cdef Py_ssize_t units = (rows + block - 1) // block if block > 0 else 0
    cdef Py_ssize_t per, c, r0, nr
    cdef char *xp = <char *>cnp.PyArray_DATA(x)
    cdef char *op_ = <char *>cnp.PyArray_DATA(out)
    cdef bint stream = cnp.PyArray_NBYTES(out) >= STREAM_BYTES
    if nt > units:
        nt = <int>max(units, 1)
    per = (units + nt - 1) // nt * block      # rows per thread, a multiple of block
    with nogil:
        if nt == 1:
            _softmax_range(xp, op_, 0, rows, cols, log, f32, stream)
        else:
            for c in prange(nt, schedule="static", num_threads=nt):
                r0 = c * per
                nr = min(per, rows - r0)
                if nr > 0:
                    _softmax_range(xp, op_, r0, nr, cols, log, f32, stream)


cdef void _softmax_range(char *xp, char *op_, Py_ssize_t r0, Py_ssize_t nr, Py_ssize_t cols,
                         bint log, bint f32, bint stream) noexcept nogil:
    cdef Py_ssize_t off = r0 * cols
    if f32:
        if log:
            fm_log_softmax_rows_f32(<const float *>xp + off, <float *>op_ + off, nr, cols, stream)
        else:
            fm_softmax_rows_f32(<const float *>xp + off, <float *>op_ + off, nr, cols, stream)
    else:
        if log:
            fm_log_softmax_rows_f64(<const double *>xp + off, <double *>op_ + off, nr, cols, stream)
        else:
            fm_softmax_rows_f64(<const double *>xp + off, <double *>op_ + off, nr, cols, stream)


def all_finite(cnp.ndarray x):
    """True when every element of x is finite; None when x's layout is not one this
    scan takes (a float32 / float64 array of at most 2 dimensions whose last axis has
    unit stride and whose rows are a whole number of elements apart: the caller then
    falls back to numpy)."""
    cdef int t = cnp.PyArray_TYPE(x)
    if t != cnp.NPY_FLOAT32 and t != cnp.NPY_FLOAT64:
        return None
    cdef Py_ssize_t item = 4 if t == cnp.NPY_FLOAT32 else 8
    cdef int nd = cnp.PyArray_NDIM(x)
    cdef Py_ssize_t rows, cols, rs
    if nd == 1:
        rows, cols, rs = 1, cnp.PyArray_DIM(x, 0), 0
        if cols > 1 and cnp.PyArray_STRIDE(x, 0) != item:
            return None
    elif nd == 2:
        rows, cols = cnp.PyArray_DIM(x, 0), cnp.PyArray_DIM(x, 1)
        if cols > 1 and cnp.PyArray_STRIDE(x, 1) != item:
            return None
        if cnp.PyArray_STRIDE(x, 0) % item:
            return None
        rs = cnp.PyArray_STRIDE(x, 0) // item
    else:
        return None
    if rows == 0 or cols == 0:
        return True
    cdef char *p = <char *>cnp.PyArray_DATA(x)
    cdef int ok
    with nogil:
        if t == cnp.NPY_FLOAT32:
            ok = fm_all_finite_f32(<const float *>p, rows, cols, rs)
        else:
            ok = fm_all_finite_f64(<const double *>p, rows, cols, rs)
    return ok != 0
