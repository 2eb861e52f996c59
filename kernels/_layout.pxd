# What every kernel module accepts as X without a copy (shared, inline: no module of its own).
cimport numpy as cnp


cdef inline int x_kind(cnp.ndarray X, Py_ssize_t F) noexcept:
    """0: float64, 1: float32, -1: not in kernel layout (2-D, F columns, at least one row,
    unit column stride, a row stride that is a whole, non-negative number of elements)."""
    cdef int t = cnp.PyArray_TYPE(X)
    if cnp.PyArray_NDIM(X) != 2 or X.shape[1] != F or X.shape[0] == 0:
        return -1
    if t == cnp.NPY_FLOAT64:
        return 0 if X.strides[1] == 8 and X.strides[0] % 8 == 0 and X.strides[0] >= 0 else -1
    if t == cnp.NPY_FLOAT32:
        return 1 if X.strides[1] == 4 and X.strides[0] % 4 == 0 and X.strides[0] >= 0 else -1
    return -1
