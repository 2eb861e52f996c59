"""Native compute kernels of fastml (installed as ``fastml.kernels``).

This module holds the public activation functions: elementwise ``sigmoid``,
``tanh``, ``relu``, ``leaky_relu``, ``elu``, ``softplus``, ``swish`` and the
row-wise ``softmax`` / ``log_softmax``. The loops are C (``src/fm_activations.h``:
SIMD code, vectorized exp/expm1/log with NaN and inf kept) driven by the
compiled module ``_activations``, which releases the GIL and splits large
arrays between OpenMP threads.

Every function here

* takes a float32 or float64 array-like and returns the same dtype; integer
  and boolean input is converted to float64, anything else raises
  :class:`fastml.errors.InputError`;
* accepts any memory layout (non-contiguous input is copied first) and empty
  arrays;
* writes into ``out`` when given: same shape and dtype as the result, and it
  may be ``x`` itself (in place);
* runs inputs of fewer than 65,536 elements on the calling thread, and larger
  ones on ``n_threads`` threads (``None``: every core this process may use).
  Results do not depend on the number of threads.

Accuracy: within a few units in the last place of the exactly rounded result
(see the header of ``src/fm_activations.h``); results whose magnitude is below
the smallest normal number may be flushed to zero.
"""
from __future__ import annotations

import os

import numpy as np

from fastml.errors import InputError

__all__ = [
    "available_threads",
    "sigmoid",
    "tanh",
    "relu",
    "leaky_relu",
    "elu",
    "softplus",
    "swish",
    "softmax",
    "log_softmax",
]

_PARALLEL_MIN = 65536          # same threshold as _activations.PARALLEL_MIN
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_ext = None


def _kernels():
    # Imported on first use, so that ``fastml.kernels`` (and its other
    # modules) import even where this extension has not been built.
    global _ext
    if _ext is None:
        from . import _activations
        _ext = _activations
    return _ext


def available_threads() -> int:
    """Number of CPU cores this process may run on.

    Returns
    -------
    int
        The size of the process's CPU affinity mask (``os.sched_getaffinity``),
        or ``os.cpu_count()`` where affinity is not available.
    """
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _threads(n_threads, size: int) -> int:
    if n_threads is None:
        return available_threads() if size >= _PARALLEL_MIN else 1
    if isinstance(n_threads, (bool, np.bool_)) or not isinstance(n_threads, (int, np.integer)) or n_threads < 1:
        raise InputError(f"n_threads must be a positive integer or None, got {n_threads!r}")
    return int(n_threads)


def _as_input(x, name: str) -> np.ndarray:
    try:
        a = np.asarray(x)
    except (ValueError, TypeError) as e:
        raise InputError(f"{name}: cannot convert input to an array: {e}") from None
    if a.dtype in _FLOATS:
        return a
    if a.dtype.kind in "biu":
        return a.astype(np.float64)
    raise InputError(
        f"{name}: expected a float32 or float64 array (integers and booleans are converted "
        f"to float64), got dtype {a.dtype}"
    )


def _check_out(out, a: np.ndarray, name: str) -> None:
    if out is None:
        return
    if not isinstance(out, np.ndarray):
        raise InputError(f"{name}: out must be a numpy array, got {type(out).__name__}")
    if out.shape != a.shape or out.dtype != a.dtype:
        raise InputError(
            f"{name}: out must have the result's shape {a.shape} and dtype {a.dtype}, "
            f"got shape {out.shape} and dtype {out.dtype}"
        )
    if not out.flags.writeable:
        raise InputError(f"{name}: out is read-only")


def _same_buffer(a: np.ndarray, b: np.ndarray) -> bool:
    return (a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
            and a.strides == b.strides)


def _source(a: np.ndarray, dst: np.ndarray | None) -> np.ndarray:
    """``a`` itself, unless writing ``dst`` could overwrite parts of it still to be
    read, or its elements are not aligned to their size (the kernels load whole
    elements, as C requires)."""
    if not a.flags.aligned or (dst is not None and np.may_share_memory(a, dst) and not _same_buffer(a, dst)):
        return a.copy()
    return a


def _elementwise(name: str, x, out, alpha: float, n_threads) -> np.ndarray:
    a = _as_input(x, name)
    _check_out(out, a, name)
    nt = _threads(n_threads, a.size)
    if a.size == 0:
        return out if out is not None else np.empty_like(a)
    a = _source(a, out)
    if not (a.flags.c_contiguous or a.flags.f_contiguous):
        a = np.ascontiguousarray(a)
    order = "C" if a.flags.c_contiguous else "F"
    res = np.empty_like(a, order=order) if out is None else out
    # The kernel sees both arrays as flat runs of elements in the same order.
    direct = res.flags.aligned and (res.flags.c_contiguous if order == "C" else res.flags.f_contiguous)
    dst = res if direct else np.empty_like(a, order=order)
    _kernels().elementwise(_kernels().OPS[name], a.ravel(order), dst.ravel(order), alpha, nt)
    if dst is not res:
        np.copyto(res, dst)
    return res


def _softmax(name: str, x, axis, out, n_threads, log: bool) -> np.ndarray:
    a = _as_input(x, name)
    if a.ndim == 0:
        raise InputError(f"{name}: needs an array with at least one dimension, got a scalar")
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)) or not -a.ndim <= axis < a.ndim:
        raise InputError(f"{name}: axis {axis!r} is not valid for an array of {a.ndim} dimension(s)")
    _check_out(out, a, name)
    nt = _threads(n_threads, a.size)
    if a.size == 0:
        return out if out is not None else np.empty_like(a)
    a = _source(a, out)
    # Rows along the last axis, C-contiguous: a view when the layout allows
    # (C order with the last axis, F order with the first), else one copy.
    axis = int(axis) % a.ndim
    if axis == a.ndim - 1:
        perm = inverse = None
    else:
        perm = tuple(d for d in range(a.ndim) if d != axis) + (axis,)
        inverse = tuple(np.argsort(perm))
    src = np.ascontiguousarray(a if perm is None else a.transpose(perm))
    if out is not None:
        res = out
    else:
        res = np.empty(src.shape, a.dtype)
        res = res if inverse is None else res.transpose(inverse)
    res_rows = res if perm is None else res.transpose(perm)
    dst = res_rows if res_rows.flags.c_contiguous and res_rows.flags.aligned else np.empty(src.shape, a.dtype)
    cols = src.shape[-1]
    _kernels().softmax_rows(src.reshape(-1), dst.reshape(-1), src.size // cols, cols, log, nt)
    if dst is not res_rows:
        np.copyto(res_rows, dst)
    return res


_COMMON = """
    Parameters
    ----------
    x : array_like
        Input, float32 or float64 (integers and booleans are converted to float64).{extra}
    out : numpy.ndarray, optional
        Array to write the result into, with the result's shape and dtype; may be ``x``.
    n_threads : int, optional
        Threads for inputs of 65,536 elements or more; ``None`` (default) uses every
        core this process may run on (:func:`available_threads`).

    Returns
    -------
    numpy.ndarray
        The result, with the shape and dtype of ``x`` (``out`` when given).

    Raises
    ------
    fastml.errors.InputError
        For another dtype (complex, object, str, ...){more}, an ``out`` of the wrong
        shape or dtype, or an invalid ``n_threads``.
"""


def sigmoid(x, out=None, *, n_threads=None) -> np.ndarray:
    """Logistic sigmoid ``1 / (1 + exp(-x))``, elementwise.

    Like ``scipy.special.expit``: NaN gives NaN, -inf gives 0 and +inf gives 1.
    {common}"""
    return _elementwise("sigmoid", x, out, 0.0, n_threads)


def tanh(x, out=None, *, n_threads=None) -> np.ndarray:
    """Hyperbolic tangent, elementwise.

    Computed from ``expm1(-2|x|)``, so small arguments keep full relative accuracy.
    {common}"""
    return _elementwise("tanh", x, out, 0.0, n_threads)


def relu(x, out=None, *, n_threads=None) -> np.ndarray:
    """Rectified linear unit ``max(x, 0)``, elementwise; NaN stays NaN.
    {common}"""
    return _elementwise("relu", x, out, 0.0, n_threads)


def leaky_relu(x, alpha=0.01, out=None, *, n_threads=None) -> np.ndarray:
    """Leaky rectified linear unit: ``x`` where ``x > 0``, else ``alpha * x``.
    {common}"""
    return _elementwise("leaky_relu", x, out, float(alpha), n_threads)


def elu(x, alpha=1.0, out=None, *, n_threads=None) -> np.ndarray:
    """Exponential linear unit: ``x`` where ``x > 0``, else ``alpha * expm1(x)``.
    {common}"""
    return _elementwise("elu", x, out, float(alpha), n_threads)


def softplus(x, out=None, *, n_threads=None) -> np.ndarray:
    """Softplus ``log(1 + exp(x))``, elementwise.

    Computed as ``max(x, 0) + log1p(exp(-|x|))``, which cannot overflow (the
    same values as ``numpy.logaddexp(0, x)``).
    {common}"""
    return _elementwise("softplus", x, out, 0.0, n_threads)


def swish(x, out=None, *, n_threads=None) -> np.ndarray:
    """Swish (SiLU) ``x * sigmoid(x)``, elementwise.

    ``swish(-inf)`` is ``-0.0``, the limit (``x * expit(x)`` would give
    ``-inf * 0 = NaN``).
    {common}"""
    return _elementwise("swish", x, out, 0.0, n_threads)


def softmax(x, axis=-1, out=None, *, n_threads=None) -> np.ndarray:
    """Softmax ``exp(x - max) / sum(exp(x - max))`` along ``axis``.

    Each slice along ``axis`` sums to 1. As in ``scipy.special.softmax``, a NaN or
    +inf in a slice, or a slice of only -inf, makes the whole slice NaN.
    {common}
    Notes
    -----
    When a block of rows holds no value above 64 or below -80 (float64: 600 and
    -700), ``exp(x)`` can neither overflow nor underflow and is used without the
    shift by the maximum, which also saves the rounding of ``x - max``.
    """
    return _softmax("softmax", x, axis, out, n_threads, False)


def log_softmax(x, axis=-1, out=None, *, n_threads=None) -> np.ndarray:
    """Logarithm of the softmax, ``x - max - log(sum(exp(x - max)))``, along ``axis``.

    NaN and inf behave as in :func:`softmax`.
    {common}"""
    return _softmax("log_softmax", x, axis, out, n_threads, True)


_AXIS = """
    axis : int, optional
        Axis along which to normalize (default: the last)."""
for _f in (sigmoid, tanh, relu, leaky_relu, elu, softplus, swish, softmax, log_softmax):
    _extra = {"softmax": _AXIS, "log_softmax": _AXIS,
              "leaky_relu": "\n    alpha : float, optional\n        Slope for negative inputs (default 0.01).",
              "elu": "\n    alpha : float, optional\n        Scale of the negative part (default 1.0)."}
    _more = ", a scalar input, an invalid ``axis``" if _f.__name__ in ("softmax", "log_softmax") else ""
    _f.__doc__ = _f.__doc__.replace("{common}", _COMMON.format(extra=_extra.get(_f.__name__, ""), more=_more))
del _f, _extra, _more, _AXIS, _COMMON
