"""fastml._validation: the NaN/inf check scikit-learn's wording depends on."""
import numpy as np
import pytest

from fastml._validation import nonfinite_error


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_finite_rows_whose_sum_overflows_are_finite(dtype):
    big = np.finfo(dtype).max
    X = np.full((3, 4), big, dtype=dtype)  # the one-pass sum overflows to inf; no value is inf
    assert nonfinite_error(X, "m") is None
    X[1, 2] = -big
    assert nonfinite_error(X, "m") is None


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad,words", [(np.nan, "NaN"), (np.inf, "infinity"), (-np.inf, "infinity")])
def test_one_bad_value_anywhere_is_found(dtype, bad, words):
    rng = np.random.default_rng(0)
    for _ in range(20):
        X = rng.standard_normal((7, 5)).astype(dtype)
        X[rng.integers(7), rng.integers(5)] = bad
        err = nonfinite_error(X, "m")
        assert err is not None and words in str(err)
    X = np.array([[np.inf, -np.inf]], dtype=dtype)  # inf - inf: the sum is NaN, the message says infinity
    assert "infinity" in str(nonfinite_error(X, "m"))
