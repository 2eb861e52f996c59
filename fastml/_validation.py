"""Input checks shared by every backend, worded like scikit-learn's.

Backends call ``check_input`` only on their slow path: a C-contiguous 2-D
float32/float64 array of the right width goes straight to the kernels.
"""
from __future__ import annotations

import numpy as np

from .errors import InputError

_FLOAT_KINDS = (np.dtype(np.float32), np.dtype(np.float64))


def check_input(X, n_features: int, owner: str, *, max_rows: int | None = None) -> np.ndarray:
    """Return X as a 2-D float32/float64 array with unit column stride, or raise InputError."""
    if not isinstance(X, np.ndarray):
        if hasattr(X, "__array__") or isinstance(X, (list, tuple)):
            try:
                X = np.asarray(X)
            except (ValueError, TypeError) as e:
                raise InputError(f"{owner}: cannot convert input to an array: {e}") from None
        else:
            raise InputError(f"{owner}: expected a 2-D array-like input, got {type(X).__name__}")
    if X.dtype not in _FLOAT_KINDS:
        kind = X.dtype.kind
        if kind in "biu":
            X = X.astype(np.float64)
        elif kind == "O":
            try:
                X = X.astype(np.float64)
            except (ValueError, TypeError) as e:
                raise InputError(f"{owner}: input has dtype object that cannot be converted to float: {e}") from None
        elif kind == "c":
            raise InputError(f"{owner}: complex data not supported")
        elif kind == "f":  # float16 / longdouble
            X = X.astype(np.float64)
        else:
            raise InputError(
                f"{owner}: dtype={X.dtype} is not numeric; expected float32 or float64 input "
                "(strings, bytes, datetimes and structured arrays are not accepted)")
    if X.ndim != 2:
        if X.ndim == 1:
            raise InputError(
                f"{owner}: expected 2D array, got 1D array instead: shape={X.shape}. Reshape your data "
                "either using array.reshape(-1, 1) if your data has a single feature or "
                "array.reshape(1, -1) if it contains a single sample.")
        if X.ndim == 0:
            raise InputError(f"{owner}: expected 2D array, got scalar array instead.")
        raise InputError(f"{owner}: found array with dim {X.ndim}, expected 2D input.")
    if X.shape[0] == 0:
        raise InputError(
            f"{owner}: found array with 0 sample(s) (shape={X.shape}) while a minimum of 1 is required.")
    if X.shape[1] != n_features:
        raise InputError(
            f"X has {X.shape[1]} features, but {owner} is expecting {n_features} features as input.")
    if max_rows is not None and X.shape[0] > max_rows:
        raise InputError(f"{owner}: {X.shape[0]} rows exceed this predictor's max_rows={max_rows}.")
    if X.strides[1] != X.itemsize or X.strides[0] % X.itemsize or X.strides[0] < 0:
        X = np.ascontiguousarray(X)
    return X


def all_finite(X: np.ndarray) -> bool:
    """Whether every element of X is finite, in one pass without temporaries: the native
    scan (``fastml.kernels._activations.all_finite``, at memory speed) for float arrays
    with rows of unit stride, else numpy's sum (any NaN or inf makes it NaN or inf)."""
    global _scan
    if _scan is None:
        try:
            from .kernels._activations import all_finite as _scan
        except ImportError:  # extension not built: numpy only
            _scan = False
    if _scan and type(X) is np.ndarray:
        ok = _scan(X)
        if ok is not None:
            return ok
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.isfinite(np.add.reduce(X, axis=None)))


_scan = None


def nonfinite_error(X: np.ndarray, owner: str) -> InputError | None:
    """The error scikit-learn raises for NaN/inf in X, or None when X is finite."""
    if all_finite(X):
        return None
    if np.isnan(X).any():
        return InputError(f"{owner}: Input X contains NaN.")
    if np.isinf(X).any():
        return InputError(f"{owner}: Input X contains infinity or a value too large for dtype('{X.dtype}').")
    return None
