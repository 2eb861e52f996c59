"""Activation kernels over 40 MB of float32 (10M elements), peers side by side.

Run with ``pytest bench/test_bench_activations.py --benchmark-only``. One
``benchmark.group`` per workload:

* ``sigmoid 10M f32``;
* ``softmax 10M f32, rows of 1000`` and ``softmax 10M f32, rows of 10``;

each with fastml on 1 and 2 threads, scipy.special, plain numpy, and the copy
of the same array (``np.copyto``, one thread, and two threads each copying
half), which is the memory-bandwidth reference: an out-of-place kernel reads
40 MB and writes 40 MB, like the copy. Every contender writes into a
preallocated ``out`` except scipy.special.softmax, which has no ``out``
argument and allocates its result (that is how it is used).

``extra_info`` carries ``bytes`` (read + written per call), ``elements``,
``threads`` and ``impl``, so that a report computes GB/s = bytes / time and
the fraction of the copy bandwidth measured in the same run. The suites
compare; they assert nothing about timings.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

sp = pytest.importorskip("scipy.special")
from fastml import kernels as K  # noqa: E402

N = 10_000_000
WORKLOADS = {
    "sigmoid 10M f32": None,
    "softmax 10M f32, rows of 1000": 1000,
    "softmax 10M f32, rows of 10": 10,
}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(N) * 3).astype(np.float32)   # logit-like values
    out = np.empty_like(x)
    out.fill(0)                                            # fault the pages in before timing
    return x, out


@pytest.fixture(scope="module")
def pool():
    with ThreadPoolExecutor(2) as ex:
        yield ex


def _numpy_sigmoid(x, out):
    np.negative(x, out=out)
    np.exp(out, out=out)
    out += 1
    np.reciprocal(out, out=out)


def _numpy_softmax(x, out):
    np.subtract(x, x.max(axis=1, keepdims=True), out=out)
    np.exp(out, out=out)
    out /= out.sum(axis=1, keepdims=True)


def _contenders(workload, x, out):
    cols = WORKLOADS[workload]
    if cols is None:
        xs, os_ = x, out
        return {
            "fastml 1 thread": (1, lambda: K.sigmoid(xs, out=os_, n_threads=1)),
            "fastml 2 threads": (2, lambda: K.sigmoid(xs, out=os_, n_threads=2)),
            "scipy.special.expit": (1, lambda: sp.expit(xs, out=os_)),
            "numpy": (1, lambda: _numpy_sigmoid(xs, os_)),
        }
    xs, os_ = x.reshape(-1, cols), out.reshape(-1, cols)
    return {
        "fastml 1 thread": (1, lambda: K.softmax(xs, out=os_, n_threads=1)),
        "fastml 2 threads": (2, lambda: K.softmax(xs, out=os_, n_threads=2)),
        "scipy.special.softmax (allocates)": (1, lambda: sp.softmax(xs, axis=1)),
        "numpy": (1, lambda: _numpy_softmax(xs, os_)),
    }


def _copy2(x, out, pool):
    h = x.size // 2
    list(pool.map(lambda s: np.copyto(out[s], x[s]), (slice(0, h), slice(h, None))))


IMPLS = ["copy 1 thread", "copy 2 threads", "fastml 1 thread", "fastml 2 threads", "scipy", "numpy"]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_bench(benchmark, data, pool, workload, impl):
    x, out = data
    if impl == "copy 1 thread":
        name, threads, fn = impl, 1, lambda: np.copyto(out, x)
    elif impl == "copy 2 threads":
        name, threads, fn = impl, 2, lambda: _copy2(x, out, pool)
    else:
        contenders = _contenders(workload, x, out)
        name = next(k for k in contenders if k.startswith(impl))
        threads, fn = contenders[name]
    benchmark.group = workload
    benchmark.extra_info.update(bytes=2 * x.nbytes, elements=x.size, threads=threads, impl=name,
                                workload=workload)
    benchmark.pedantic(fn, rounds=15, iterations=1, warmup_rounds=2)
