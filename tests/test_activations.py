"""fastml.kernels activations against scipy.special and numpy references.

Tolerance, stated once
----------------------
Each result is compared with the exactly rounded value: the reference
function evaluated in a wider type (float64 for float32 input, the 80-bit
long double for float64 input), then rounded to the input dtype. The check is

    |got - ref| <= RTOL * |ref| + ATOL

with RTOL = 8 eps of the dtype (1e-6 for float32, 2e-15 for float64) and ATOL
= the dtype's smallest normal number. The kernels measure at most 5 eps: a
vectorized exp / expm1 / log1p polynomial of 1-2 ulp, then an addition and a
division of 1/2 ulp each (swish has two more products). ATOL is there because
results below the smallest normal number may be flushed to zero.

Two functions get that tolerance scaled by how well the result is determined
by the float input, and it is said where they are checked:

* softmax: exp(x - max) is evaluated at x - max rounded to the dtype (as scipy
  does), and that rounding alone moves the result by |x - max| * eps / 2
  relative, so RTOL is multiplied by 1 + |x - max|;
* log_softmax: the result is a difference of numbers as large as |x| and
  |max|, so its error is absolute: RTOL * (1 + |ref| + |x| + |max|).
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

sp = pytest.importorskip("scipy.special")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

from fastml import kernels as K  # noqa: E402
from fastml.errors import InputError  # noqa: E402

RTOL = {np.float32: 1e-6, np.float64: 2e-15}
DTYPES = [np.float32, np.float64]
WIDE = {np.float32: np.float64, np.float64: np.longdouble}
HYP = settings(max_examples=40, deadline=None, database=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

ELEMENTWISE = ["sigmoid", "tanh", "relu", "leaky_relu", "elu", "softplus", "swish"]
ALPHA = {"leaky_relu": 0.01, "elu": 1.0}


# --------------------------------------------------------------------------- references

def _ref_elementwise(name: str, x: np.ndarray, alpha: float | None = None) -> np.ndarray:
    """Reference in the wide type (alpha rounded to x's dtype first, as the kernel sees it)."""
    w = x.astype(WIDE[x.dtype.type])
    a = None if name not in ALPHA else WIDE[x.dtype.type](x.dtype.type(ALPHA[name] if alpha is None else alpha))
    with np.errstate(all="ignore"):
        if name == "sigmoid":
            return sp.expit(w)
        if name == "tanh":
            return np.tanh(w)
        if name == "relu":
            return np.maximum(w, 0)
        if name == "leaky_relu":
            return np.where(w > 0, w, a * w)
        if name == "elu":
            return np.where(w > 0, w, a * np.expm1(w))
        if name == "softplus":
            return np.logaddexp(0, w)
        if name == "swish":
            # the limit at -inf (documented: x * expit(x) would be -inf * 0 = NaN)
            return np.where(w == -np.inf, -0.0, w * sp.expit(w))
    raise AssertionError(name)


def _ref_softmax(x: np.ndarray, axis: int, log: bool) -> np.ndarray:
    w = x.astype(WIDE[x.dtype.type])
    with np.errstate(all="ignore"):
        if not log:
            return sp.softmax(w, axis=axis)
        ref = sp.log_softmax(w, axis=axis)
        # scipy's log_softmax turns a slice with +inf into NaN at the +inf and -inf
        # elsewhere; fastml keeps softmax's rule (the whole slice NaN), documented.
        return np.where(np.isposinf(w).any(axis=axis, keepdims=True), np.nan, ref)


def _rowmax(x: np.ndarray, axis: int) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.max(x.astype(np.float64), axis=axis, keepdims=True)


def assert_close(got: np.ndarray, ref: np.ndarray, dtype, scale=1.0, absolute=None) -> None:
    """got within RTOL * |ref| * scale + ATOL (+ RTOL * absolute) of ref rounded to dtype."""
    assert got.dtype == dtype and got.shape == ref.shape
    wide = WIDE[dtype]
    r = ref.astype(dtype).astype(wide)
    g = got.astype(wide)
    nan = np.isnan(r)
    np.testing.assert_array_equal(np.isnan(g), nan, err_msg="NaN pattern differs")
    inf = np.isinf(r)
    np.testing.assert_array_equal(g[inf], r[inf], err_msg="infinities differ")
    fin = ~nan & ~inf
    tol = RTOL[dtype] * np.abs(r) * scale + np.finfo(dtype).tiny
    if absolute is not None:
        tol = tol + RTOL[dtype] * absolute
    tol = np.broadcast_to(tol, r.shape)
    with np.errstate(invalid="ignore"):
        err = np.abs(g - r)
    bad = fin & ~(err <= tol)
    assert not bad.any(), (
        f"{bad.sum()} of {bad.size} elements off; worst: got {g[bad][:5]}, want {r[bad][:5]}, "
        f"rel err {(err[bad] / np.maximum(np.abs(r[bad]), np.finfo(dtype).tiny))[:5]}")


def check_softmax(got: np.ndarray, x: np.ndarray, axis: int, log: bool) -> None:
    ref = _ref_softmax(x, axis, log)
    m = _rowmax(x, axis)
    with np.errstate(all="ignore"):
        if log:
            mag = 1 + np.abs(x.astype(np.float64)) + np.abs(m) + np.abs(ref.astype(np.float64))
            assert_close(got, ref, x.dtype.type, absolute=np.where(np.isfinite(mag), mag, 0))
        else:
            cond = 1 + np.abs(x.astype(np.float64) - m)
            assert_close(got, ref, x.dtype.type, scale=np.where(np.isfinite(cond), cond, 1))


# --------------------------------------------------------------------------- inputs

SPECIAL = [np.nan, np.inf, -np.inf, -0.0, 0.0, 1e4, -1e4]


def _elements(dtype, lo=-120.0, hi=120.0):
    width = 32 if dtype == np.float32 else 64
    return st.one_of(
        st.floats(lo, hi, width=width),
        st.floats(-1.0, 1.0, width=width),            # small, incl. subnormals and -0.0
        st.floats(-1e4, 1e4, width=width),
        st.sampled_from(SPECIAL),
    )


def _arrays(dtype, max_dims=3, min_side=0, max_side=9):
    return hnp.arrays(dtype, hnp.array_shapes(min_dims=1, max_dims=max_dims, min_side=min_side,
                                              max_side=max_side), elements=_elements(dtype))


# --------------------------------------------------------------------------- elementwise

@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("name", ELEMENTWISE)
@HYP
@given(data=st.data())
def test_elementwise_matches_reference(name, dtype, data):
    x = data.draw(_arrays(dtype))
    got = getattr(K, name)(x)
    assert_close(got, _ref_elementwise(name, x), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("name", ELEMENTWISE)
def test_elementwise_dense_ranges(name, dtype):
    """Every region of each function's range (where the branch-free code switches
    method), densely, plus the special values."""
    x = np.concatenate([np.linspace(-800, 800, 20001), np.linspace(-90, 90, 20001),
                        np.geomspace(1e-30, 30, 2000), -np.geomspace(1e-30, 30, 2000),
                        SPECIAL]).astype(dtype)
    assert_close(getattr(K, name)(x), _ref_elementwise(name, x), dtype)


@pytest.mark.parametrize("alpha", [0.0, 0.2, 1.5])
@pytest.mark.parametrize("name", ["leaky_relu", "elu"])
def test_alpha(name, alpha):
    x = np.linspace(-30, 30, 1001, dtype=np.float32)
    assert_close(getattr(K, name)(x, alpha), _ref_elementwise(name, x, alpha), np.float32)
    assert_close(getattr(K, name)(x.astype(np.float64), alpha=alpha),
                 _ref_elementwise(name, x.astype(np.float64), alpha), np.float64)


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_nan_in_nan_out(name):
    for dtype in DTYPES:
        x = np.array([np.nan, 1.0, np.nan], dtype=dtype)
        got = getattr(K, name)(x)
        assert np.isnan(got[[0, 2]]).all() and not np.isnan(got[1])


def test_special_values():
    x = np.array([-np.inf, np.inf, -0.0, 0.0], dtype=np.float32)
    np.testing.assert_array_equal(K.sigmoid(x), [0, 1, 0.5, 0.5])
    np.testing.assert_array_equal(K.tanh(x), [-1, 1, 0, 0])
    assert np.signbit(K.tanh(x)[2])                          # tanh(-0) = -0
    np.testing.assert_array_equal(K.softplus(x), np.array([0, np.inf, np.log(2), np.log(2)], np.float32))
    np.testing.assert_array_equal(K.swish(x), [0, np.inf, 0, 0])
    np.testing.assert_array_equal(K.elu(x, 0.5), [-0.5, np.inf, 0, 0])
    np.testing.assert_array_equal(K.relu(x), [0, np.inf, 0, 0])


# --------------------------------------------------------------------------- softmax

@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@HYP
@given(data=st.data())
def test_softmax_matches_scipy(dtype, log, data):
    x = data.draw(_arrays(dtype, max_dims=3, min_side=1, max_side=40))
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1))
    fn = K.log_softmax if log else K.softmax
    check_softmax(fn(x, axis=axis), x, axis, log)


# cols covering every code path: whole rows per vector (1, 2, 4, 8), one or two
# masked vectors per row (3, 10, 16, 17, 32), blocks of rows (33, 64), one row
# at a time (float32 on AVX-512: 65, 100, 600, 1024), rows longer than a
# block (1500 float32 / 600 float64 and up).
COLS = [1, 2, 3, 4, 8, 10, 16, 17, 32, 33, 64, 65, 100, 600, 1024, 1500]


@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("cols", COLS)
def test_softmax_paths(cols, dtype, log):
    rng = np.random.default_rng(cols)
    rows = 3000 // cols + 37                  # partial last block
    x = (rng.standard_normal((rows, cols)) * 4).astype(dtype)
    x[5] *= 1000                              # one block takes the shift-by-max path
    x[6, -1] = 64 if dtype == np.float32 else 600   # the fast paths' edges, inside
    x[7, 0] = -70                             # |x| > 64: the shift, float32 row by row
    x[rows // 2, 0] = np.nan
    x[rows // 2 + 1, -1] = np.inf
    x[-2] = -np.inf
    x[-1, 0] = -np.inf
    fn = K.log_softmax if log else K.softmax
    check_softmax(fn(x), x, -1, log)
    y = x.copy()
    assert fn(y, out=y) is y                  # in place
    np.testing.assert_array_equal(y, fn(x))


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("cols", [2, 10, 1000])
def test_softmax_large_logits_finite_and_normalized(cols, dtype):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1e4, 1e4, (500, cols)).astype(dtype)
    x[::7] = rng.uniform(-90, 90, (len(x[::7]), cols))
    p = K.softmax(x)
    assert np.isfinite(p).all() and np.isfinite(K.log_softmax(x)).all()
    sums = p.astype(np.float64).sum(axis=1)
    np.testing.assert_allclose(sums, 1, rtol=0, atol=1e-6 if dtype == np.float32 else 1e-14)
    check_softmax(p, x, -1, False)


def test_softmax_nan_and_inf_rows():
    x = np.array([[1, np.nan, 2], [1, np.inf, 2], [-np.inf] * 3, [-np.inf, 0, 1]], dtype=np.float32)
    p = K.softmax(x)
    assert np.isnan(p[:3]).all()
    np.testing.assert_allclose(p[3], sp.softmax(x[3].astype(np.float64)), rtol=1e-6)
    assert p[3, 0] == 0
    lp = K.log_softmax(x)
    assert np.isnan(lp[:3]).all() and lp[3, 0] == -np.inf


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("cols", [10, 16, 40, 1000])
def test_softmax_large_output_same_bits_as_small_calls(cols, dtype):
    """Outputs of 16 MiB or more are written with non-temporal stores; they
    must hold the bits that calls on slices (cached stores) give, on 1 and 2
    threads and into an output that starts off a 64-byte boundary."""
    rows = (17 << 20) // (cols * np.dtype(dtype).itemsize) + 3
    x = (np.random.default_rng(2).standard_normal((rows, cols)) * 4).astype(dtype)
    x[5] = np.linspace(-85, 60, cols)                         # the block-range edges
    buf = np.empty(x.size + 8, dtype)
    for fn in (K.softmax, K.log_softmax):
        ref = np.concatenate([fn(x[i:i + 1000], n_threads=1) for i in range(0, rows, 1000)])
        for n_threads in (1, 2):
            for off in (0, 1):
                out = buf[off:off + x.size].reshape(x.shape)
                out.fill(np.nan)
                fn(x, out=out, n_threads=n_threads)
                assert np.array_equal(out, ref), (fn.__name__, n_threads, off)
        check_softmax(ref[:50], x[:50], -1, fn is K.log_softmax)


@pytest.mark.parametrize("axis", [0, 1, 2, -1, -2, -3])
def test_softmax_axes(axis):
    x = np.random.default_rng(1).standard_normal((4, 5, 6)) * 3
    for dtype in DTYPES:
        xd = x.astype(dtype)
        check_softmax(K.softmax(xd, axis), xd, axis, False)
        check_softmax(K.log_softmax(xd, axis=axis), xd, axis, True)


# --------------------------------------------------------------------------- shapes and layouts

@pytest.mark.parametrize("name", ELEMENTWISE + ["softmax", "log_softmax"])
def test_empty_and_one_element(name):
    fn = getattr(K, name)
    for dtype in DTYPES:
        for shape in [(0,), (3, 0), (0, 4)]:
            got = fn(np.zeros(shape, dtype))
            assert got.shape == shape and got.dtype == dtype
        one = np.array([0.25], dtype)
        if name in ("softmax", "log_softmax"):
            assert fn(one)[0] == (0.0 if name == "log_softmax" else 1.0)
        else:
            assert_close(fn(one), _ref_elementwise(name, one), dtype)


def test_scalar_input():
    got = K.sigmoid(0.0)
    assert got.shape == () and got.dtype == np.float64 and got == 0.5
    with pytest.raises(InputError, match="at least one dimension"):
        K.softmax(1.0)


@pytest.mark.parametrize("name", ELEMENTWISE + ["softmax", "log_softmax"])
def test_noncontiguous_and_fortran(name):
    fn = getattr(K, name)
    base = np.random.default_rng(2).standard_normal((40, 30)) * 5
    for dtype in DTYPES:
        b = base.astype(dtype)
        for x in (b[::2, 1::3], np.asfortranarray(b), b.T, b[:, ::-1]):
            got = fn(x)
            want = fn(np.ascontiguousarray(x))
            np.testing.assert_array_equal(got, want)
            if name in ("softmax", "log_softmax"):
                check_softmax(got, x, -1, name == "log_softmax")
                check_softmax(fn(x, axis=0), x, 0, name == "log_softmax")
            else:
                assert_close(got, _ref_elementwise(name, x), dtype)


@pytest.mark.parametrize("name", ELEMENTWISE + ["softmax", "log_softmax"])
def test_out(name):
    fn = getattr(K, name)
    rng = np.random.default_rng(3)
    for dtype in DTYPES:
        x = (rng.standard_normal((7, 33)) * 5).astype(dtype)
        want = fn(x)
        out = np.empty_like(x)
        assert fn(x, out=out) is out
        np.testing.assert_array_equal(out, want)
        y = x.copy()                                   # in place
        assert fn(y, out=y) is y
        np.testing.assert_array_equal(y, want)
        fo = np.empty_like(x, order="F")               # layout differs from x
        np.testing.assert_array_equal(fn(x, out=fo), want)
        big = np.zeros((7, 66), dtype)                 # non-contiguous out
        fn(x, out=big[:, ::2])
        np.testing.assert_array_equal(big[:, ::2], want)
        z = np.zeros((8, 33), dtype)                   # out overlapping x, shifted by one row
        z[1:] = x
        fn(z[1:], out=z[:-1])
        np.testing.assert_array_equal(z[:-1], want)
        with pytest.raises(InputError, match="shape"):
            fn(x, out=np.empty((7, 32), dtype))
        with pytest.raises(InputError, match="dtype"):
            fn(x, out=np.empty((7, 33), np.float32 if dtype == np.float64 else np.float64))
        ro = np.empty_like(x)
        ro.flags.writeable = False
        with pytest.raises(InputError, match="read-only"):
            fn(x, out=ro)
        with pytest.raises(InputError, match="numpy array"):
            fn(x, out=[0.0] * x.size)


# --------------------------------------------------------------------------- dtypes and arguments

@pytest.mark.parametrize("name", ELEMENTWISE + ["softmax", "log_softmax"])
def test_integer_and_bool_become_float64(name):
    fn = getattr(K, name)
    for x in (np.arange(-6, 6, dtype=np.int32).reshape(3, 4), np.array([[True, False]]), [[1, 2, 3]]):
        got = fn(x)
        assert got.dtype == np.float64
        np.testing.assert_array_equal(got, fn(np.asarray(x, dtype=np.float64)))


@pytest.mark.parametrize("name", ELEMENTWISE + ["softmax", "log_softmax"])
def test_bad_dtypes_raise(name):
    fn = getattr(K, name)
    bad = [np.array([1 + 2j]), np.array([1.0], dtype=object), np.array(["a"]),
           np.array([1.0], dtype=np.float16), np.array(["2020-01-01"], dtype="datetime64[D]")]
    for x in bad:
        with pytest.raises(InputError, match="float32 or float64"):
            fn(x)
    with pytest.raises(InputError, match="cannot convert"):
        fn([[1.0], [2.0, 3.0]])                        # ragged


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_n_threads(bad):
    with pytest.raises(InputError, match="n_threads"):
        K.sigmoid(np.zeros(3), n_threads=bad)
    with pytest.raises(InputError, match="n_threads"):
        K.softmax(np.zeros((2, 3)), n_threads=bad)


@pytest.mark.parametrize("axis", [2, -3, 1.0, None, True])
def test_bad_axis(axis):
    with pytest.raises(InputError, match="axis"):
        K.softmax(np.zeros((2, 3)), axis=axis)


def test_input_error_is_value_error():
    with pytest.raises(ValueError):
        K.tanh(np.array([1j]))


# --------------------------------------------------------------------------- threads

@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_threads_give_identical_results(dtype):
    rng = np.random.default_rng(4)
    x = (rng.standard_normal(200_003) * 10).astype(dtype)   # odd length: ragged last range
    x[::1000] = np.nan
    for name in ELEMENTWISE:
        fn = getattr(K, name)
        one = fn(x, n_threads=1)
        np.testing.assert_array_equal(one, fn(x, n_threads=2))
        np.testing.assert_array_equal(one, fn(x))
    for cols in (2, 10, 33, 1000, 5000):
        m = x[: x.size // cols * cols].reshape(-1, cols)
        m[7] *= 1000                                         # a shifted block too
        for fn in (K.softmax, K.log_softmax):
            one = fn(m, n_threads=1)
            np.testing.assert_array_equal(one, fn(m, n_threads=2))
            np.testing.assert_array_equal(one, fn(m, n_threads=3))


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_result_does_not_depend_on_position(dtype):
    """The scalar head/tail of a loop and its vector body give the same bits, so an
    element's result does not depend on where it sits in the array."""
    x = (np.random.default_rng(5).standard_normal(1003) * 30).astype(dtype)
    for name in ELEMENTWISE:
        fn = getattr(K, name)
        np.testing.assert_array_equal(fn(x)[1:], fn(x[1:]))
        np.testing.assert_array_equal(fn(x)[5:], fn(x[5:]))


def test_unaligned_arrays():
    buf = np.zeros(4 * 60 + 1, np.uint8)
    x = np.frombuffer(buf.data, dtype=np.float32, count=60, offset=1)
    assert not x.flags.aligned
    np.testing.assert_array_equal(K.sigmoid(x), K.sigmoid(np.zeros(60, np.float32)))
    np.testing.assert_array_equal(K.softmax(x), np.full(60, 1 / 60, np.float32))
    out = np.frombuffer(bytearray(4 * 60 + 1), dtype=np.float32, count=60, offset=1)
    K.tanh(np.ones(60, np.float32), out=out)
    np.testing.assert_array_equal(out, K.tanh(np.ones(60, np.float32)))


def test_available_threads():
    n = K.available_threads()
    assert isinstance(n, int) and n >= 1


def test_import_is_light():
    code = ("import sys, fastml.kernels; "
            "print(sorted(m for m in ('scipy', 'sklearn', 'onnx', 'onnxruntime', 'numba') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
