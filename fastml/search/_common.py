"""Shared checks and helpers of ``fastml.search``: argument validation (every
array a kernel sees has passed through here), thread counts, metrics."""
from __future__ import annotations

import numpy as np

from fastml.errors import InputError, InvalidModelError, NotFittedError

#: faiss's metric numbers, so code written for faiss reads the same
METRIC_INNER_PRODUCT = 0
METRIC_L2 = 1
METRICS = {METRIC_L2: "L2", METRIC_INNER_PRODUCT: "IP"}
#: what faiss writes for missing results (k > ntotal): -1 ids, +-FLT_MAX distances
PAD_L2 = float(np.finfo(np.float32).max)
PAD_IP = -PAD_L2

_kernels = None


def kernels():
    """The compiled ``fastml.kernels._pq`` module (imported on first use)."""
    global _kernels
    if _kernels is None:
        from fastml.kernels import _pq
        _kernels = _pq
    return _kernels


def available_threads() -> int:
    from fastml.kernels import available_threads as _a
    return _a()


def check_metric(metric) -> int:
    if isinstance(metric, str):
        names = {"l2": METRIC_L2, "ip": METRIC_INNER_PRODUCT, "inner_product": METRIC_INNER_PRODUCT}
        if metric.lower() in names:
            return names[metric.lower()]
    elif isinstance(metric, (int, np.integer)) and not isinstance(metric, bool) and int(metric) in METRICS:
        return int(metric)
    raise InputError(f"metric must be METRIC_L2 (1, 'l2') or METRIC_INNER_PRODUCT (0, 'ip'), got {metric!r}")


def check_positive_int(value, name: str, *, zero_ok: bool = False) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise InputError(f"{name} must be an integer, got {value!r}")
    if value < (0 if zero_ok else 1):
        raise InputError(f"{name} must be {'>= 0' if zero_ok else 'positive'}, got {value}")
    return int(value)


def check_threads(n_threads) -> int:
    if n_threads is None:
        return available_threads()
    return check_positive_int(n_threads, "n_threads")


def as_vectors(x, d: int, what: str = "x") -> np.ndarray:
    """``x`` as a C-contiguous float32 (n, d) array with only finite values.

    A 1-D array of length d is one vector. NaN/inf, another width, complex or
    object data raise :class:`fastml.errors.InputError`.
    """
    try:
        a = np.asarray(x)
    except (TypeError, ValueError) as e:
        raise InputError(f"{what}: cannot convert to an array: {e}") from None
    if a.dtype.kind not in "fiub":
        raise InputError(f"{what}: expected a float array, got dtype {a.dtype}")
    if a.ndim == 1 and a.shape[0] == d:
        a = a.reshape(1, d)
    if a.ndim != 2 or a.shape[1] != d:
        raise InputError(f"{what}: expected shape (n, {d}), got {a.shape}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if a.size and not np.isfinite(a).all():
        # float64 values beyond float32's range become inf here too: refused the same way
        bad = int(np.flatnonzero(~np.isfinite(a).all(axis=1))[0])
        raise InputError(f"{what}: row {bad} holds NaN or inf (or a value beyond float32's range)")
    return a


def as_ids(ids, n: int) -> np.ndarray:
    try:
        a = np.asarray(ids)
    except (TypeError, ValueError) as e:
        raise InputError(f"ids: cannot convert to an array: {e}") from None
    if a.dtype.kind not in "iu" or a.ndim != 1 or a.shape[0] != n:
        raise InputError(f"ids: expected {n} integers (one per vector), got dtype {a.dtype} shape {a.shape}")
    if a.dtype.kind == "u" and a.size and a.max() > np.iinfo(np.int64).max:
        raise InputError("ids: values beyond int64")
    a = a.astype(np.int64)
    if a.size and a.min() < 0:
        raise InputError("ids must be >= 0 (-1 marks a missing result)")
    return a


def need_trained(index) -> None:
    if not index.is_trained:
        raise NotFittedError(f"{type(index).__name__} is not trained: call train(x) first")


def pad_results(D: np.ndarray, I: np.ndarray, metric: int) -> None:
    """Negate inner products back and write faiss's padding where I == -1."""
    if metric == METRIC_INNER_PRODUCT:
        np.negative(D, out=D)
    miss = I < 0
    if miss.any():
        D[miss] = PAD_L2 if metric == METRIC_L2 else PAD_IP


def check_array(a, name: str, dtype, shape) -> np.ndarray:
    """A loaded or user-given model array: exact dtype and shape (None = any), else InvalidModelError."""
    if not isinstance(a, np.ndarray):
        raise InvalidModelError(f"{name}: expected a numpy array, got {type(a).__name__}")
    if a.dtype != np.dtype(dtype):
        raise InvalidModelError(f"{name}: expected dtype {np.dtype(dtype)}, got {a.dtype}")
    if len(shape) != a.ndim or any(s is not None and s != t for s, t in zip(shape, a.shape)):
        raise InvalidModelError(f"{name}: expected shape {tuple(shape)}, got {a.shape}")
    if a.dtype.kind == "f" and a.size and not np.isfinite(a).all():
        raise InvalidModelError(f"{name}: holds NaN or inf")
    return a
