"""Settings and helpers shared by fastml's benchmark suites.

Every suite times fastml and its peers in one process, on the same arrays, and
checks each contender's output against the reference library before timing it:
a fast wrong answer is not a result. Suites compare; they never assert timings.

Conventions the report (``bench/report.py``) reads from ``benchmark.extra_info``:

``contender``  who runs the call ("scikit-learn", "onnxruntime", "fastml native", ...)
``threads``    threads the contender may use (``None`` when it does not apply)
``batch``      rows per call
``bytes``      bytes a call must read and write at least (gives GB/s)
``role``       ``"reference"`` for the ONNX Runtime baseline of a group (ratios are
               fastml / reference), ``"copy"`` for a copy-bandwidth floor
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from machine import cores, cpu_model, package_versions

#: Shorter than pytest-benchmark's defaults so a suite runs in about a minute,
#: with enough rounds for a stable median. Flags given on the command line win.
SETTINGS = {"benchmark_max_time": ("--benchmark-max-time", 0.5),
            "benchmark_min_rounds": ("--benchmark-min-rounds", 10)}



def pytest_configure(config):
    # Runs before pytest-benchmark's own (trylast) pytest_configure reads the options.
    given = " ".join(config.invocation_params.args) + " " + os.environ.get("PYTEST_ADDOPTS", "")
    for dest, (flag, value) in SETTINGS.items():
        if hasattr(config.option, dest) and flag not in given:
            setattr(config.option, dest, value)


def pytest_benchmark_update_machine_info(config, machine_info):
    # Recorded at measurement time, so a report made later describes the run.
    machine_info["cpu_model"] = cpu_model()
    machine_info["cores"] = cores()
    machine_info["package_versions"] = package_versions()


# ---------------------------------------------------------------------- fixtures
@pytest.fixture
def label():
    """``label(benchmark, group, contender=..., threads=..., batch=..., bytes=..., **more)``.

    Sets the group and the extra_info keys the report reads, in one place.
    """
    def _label(benchmark, group: str, *, contender: str, threads=None, batch=None, bytes=None, **more):
        benchmark.group = group
        benchmark.extra_info.update(contender=contender, threads=threads, batch=batch, bytes=bytes, **more)

    return _label


@pytest.fixture
def assert_close():
    """``assert_close(got, want, what, atol=1e-5)``: fail before timing a contender that is wrong."""
    def _assert_close(got, want, what: str, atol: float = 1e-5):
        got, want = np.asarray(got), np.asarray(want)
        if got.shape != want.shape:
            pytest.fail(f"{what}: output shape {got.shape}, reference {want.shape}; not timed")
        diff = float(np.max(np.abs(got.astype(np.float64) - want))) if want.size else 0.0
        if not diff < atol:  # also catches NaN
            pytest.fail(f"{what}: max abs diff {diff:.3g} from the reference (allowed {atol:g}); not timed")
        return diff

    return _assert_close


@pytest.fixture
def run_python():
    """``run_python(code)``: run ``python -c code`` in a fresh interpreter, return its stdout.

    A fresh process per call is the point (cold start); stderr is shown on failure.
    """
    def _run(code: str) -> str:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"python -c failed ({r.returncode}):\n{r.stderr[-2000:]}")
        return r.stdout

    return _run
