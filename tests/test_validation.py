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


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_all_finite_matches_numpy_on_every_layout(dtype):
    """The native scan (flat, strided rows, 1-D) and its numpy fallback (other layouts)
    against np.isfinite(X).all(), with one NaN / inf / -inf / largest finite value placed
    anywhere, including the scan's vector tails."""
    from fastml._validation import all_finite

    rng = np.random.default_rng(1)
    big = np.finfo(dtype).max
    for shape in [(1, 1), (1, 17), (3, 33), (40, 100), (5, 1)]:
        base = rng.standard_normal((shape[0], 2 * shape[1] + 1)).astype(dtype)
        for value in (np.nan, np.inf, -np.inf, big, -big, np.finfo(dtype).tiny):
            for _ in range(8):
                W = base.copy()
                W[rng.integers(W.shape[0]), rng.integers(W.shape[1])] = value
                views = [np.ascontiguousarray(W[:, :shape[1]]), W[:, :shape[1]], W[:, ::2],
                         np.asfortranarray(W), W[0], W.T]
                for V in views:
                    assert all_finite(V) == bool(np.isfinite(V).all()), (shape, value, V.strides)
    assert all_finite(np.empty((0, 3), dtype=dtype)) and all_finite(np.empty((2, 0), dtype=dtype))
