"""Vector search: fastml.search against faiss-cpu and scikit-learn, in one process,
on the same arrays.

Workload (the project's issue): 200,000 x 128 float32 database from
``make_blobs(random_state=0)``, 1,000 queries from the same distribution, k = 10.

Groups (batch 1,000 queries and batch 1; 2 threads where a library threads):

* ``exact L2`` — fastml ``IndexFlatL2``, faiss ``IndexFlatL2`` (the reference),
  scikit-learn ``NearestNeighbors(algorithm="brute")``;
* ``PQ16x8`` — ``IndexPQ(128, 16, 8)`` in both libraries;
* ``PQ32x4fs`` — fastml ``IndexPQFastScan`` vs faiss ``IndexPQFastScan`` (faiss's
  bbs=32 packing, its default);
* ``IVF1024,PQ16 + RFlat`` — IVF-PQ with exact re-ranking of ``4k`` candidates;
  ``nprobe`` is the smallest power of two at which faiss reaches recall@10 >= 0.9
  (found once per session), used by both;
* ``train`` — training time of ``PQ16`` and ``IVF1024,PQ16`` (one round each).

Before a contender is timed its result is checked: exact search must return
faiss's neighbours (ids agree on >= 99% of the slots; the rest are float ties),
an approximate index must reach faiss's recall@10 with the same parameters
within 0.02. ``extra_info`` records ``recall_at_10`` and, after timing,
``queries_per_s`` (batch size / median); faiss rows carry ``role="reference"``,
so ``bench/report.py`` prints fastml / faiss ratios. ``pytest -s`` prints a
summary table at the end of the module.

Run: ``pytest bench/test_bench_search.py --benchmark-only`` (about 5 minutes on a
2-core machine, most of it training both libraries' indexes once).
"""
from __future__ import annotations

import fastml  # noqa: I001  (first: OMP_WAIT_POLICY=PASSIVE for every OpenMP runtime)

import time
from typing import Callable, Dict

import numpy as np
import pytest

import fastml.search as fs

faiss = pytest.importorskip("faiss")

N, NQ, D, K = 200_000, 1_000, 128, 10
THREADS = 2
REFINE_FACTOR = 4
SUMMARY: Dict[str, dict] = {}
#: rounds for calls that take ~1 s (pytest-benchmark would otherwise run 10)
SLOW_ROUNDS = 5


@pytest.fixture(scope="module")
def data():
    from sklearn.datasets import make_blobs
    X, _ = make_blobs(n_samples=N + NQ, n_features=D, random_state=0)
    X = X.astype(np.float32)
    xb, xq = np.ascontiguousarray(X[:N]), np.ascontiguousarray(X[N:])
    faiss.omp_set_num_threads(THREADS)
    gt = faiss.IndexFlatL2(D)
    gt.add(xb)
    _, I0 = gt.search(xq, K)
    return xb, xq, I0


def recall(I, I0) -> float:
    return float(np.mean([len(set(a) & set(b)) / K for a, b in zip(I, I0)]))


class Built:
    """Indexes trained once per session, with their training times."""

    def __init__(self, xb):
        self.xb = xb
        self.cache: Dict[str, object] = {}
        self.train_s: Dict[str, float] = {}

    def get(self, key: str, make: Callable):
        if key not in self.cache:
            t = time.perf_counter()
            idx = make()
            idx.train(self.xb)
            self.train_s[key] = time.perf_counter() - t
            idx.add(self.xb)
            self.cache[key] = idx
        return self.cache[key]


@pytest.fixture(scope="module")
def built(data):
    b = Built(data[0])
    yield b
    _print_summary(b)


def _fastml(desc):
    def make():
        idx = fs.index_factory(D, desc)
        idx.n_threads = THREADS
        return idx
    return make


def _faiss(desc):
    def make():
        idx = faiss.index_factory(D, desc)
        if desc.endswith("RFlat"):
            faiss.downcast_index(idx).k_factor = REFINE_FACTOR
        return idx
    return make


def _set_nprobe(idx, nprobe: int) -> None:
    if isinstance(idx, fs.IndexRefineFlat):
        idx.base_index.nprobe = nprobe
        idx.k_factor = REFINE_FACTOR
    else:
        faiss.extract_index_ivf(idx).nprobe = nprobe


@pytest.fixture(scope="module")
def nprobe(data, built):
    """Smallest power of two at which faiss's IVF1024,PQ16,RFlat reaches recall@10 >= 0.9."""
    xb, xq, I0 = data
    f = built.get("faiss IVF1024,PQ16,RFlat", _faiss("IVF1024,PQ16,RFlat"))
    for p in (1, 2, 4, 8, 16, 32, 64, 128, 256):
        _set_nprobe(f, p)
        if recall(f.search(xq, K)[1], I0) >= 0.9:
            return p
    return 256


WORKLOADS = {
    # group: (fastml factory string, faiss factory string)
    "exact L2": ("Flat", "Flat"),
    "PQ16x8": ("PQ16", "PQ16"),
    "PQ32x4fs": ("PQ32x4fs", "PQ32x4fs"),
    "IVF1024,PQ16 + RFlat": ("IVF1024,PQ16,RFlat", "IVF1024,PQ16,RFlat"),
}


def _contender(name, built, nprobe_fn):
    lib, group = name.split(" ", 1)
    ours, theirs = WORKLOADS[group]
    if lib == "fastml":
        idx = built.get(f"fastml {ours}", _fastml(ours))
    elif lib == "faiss":
        idx = built.get(f"faiss {theirs}", _faiss(theirs))
    else:  # scikit-learn, exact only
        from sklearn.neighbors import NearestNeighbors
        if "sklearn" not in built.cache:
            built.cache["sklearn"] = NearestNeighbors(n_neighbors=K, algorithm="brute", n_jobs=THREADS).fit(built.xb)
        nn = built.cache["sklearn"]
        return lambda q: nn.kneighbors(q, K)  # (distances, indices), like (D, I)
    if "IVF" in group:
        _set_nprobe(idx, nprobe_fn())
    return lambda q: idx.search(q, K)


CASES = [(g, lib) for g in WORKLOADS for lib in ("fastml", "faiss")] + [("exact L2", "scikit-learn")]


@pytest.mark.parametrize("batch", (NQ, 1), ids=lambda b: f"batch={b}")
@pytest.mark.parametrize("group,lib", CASES, ids=[f"{g}-{lib}" for g, lib in CASES])
def test_search(benchmark, label, data, built, request, group, lib, batch):
    xb, xq, I0 = data
    fn = _contender(f"{lib} {group}", built, lambda: request.getfixturevalue("nprobe"))
    Dr, Ir = fn(xq)
    rec = recall(Ir, I0)
    ref_rec = recall(_contender(f"faiss {group}", built, lambda: request.getfixturevalue("nprobe"))(xq)[1], I0)
    if group == "exact L2":
        agree = float(np.mean(Ir == I0))
        if agree < 0.99:
            pytest.fail(f"{lib}: exact search agrees with faiss on {agree:.3f} of the ids; not timed")
    elif rec < ref_rec - 0.02:
        pytest.fail(f"{lib}: recall@10 {rec:.3f}, faiss {ref_rec:.3f} with the same parameters; not timed")
    q = np.ascontiguousarray(xq[:batch])
    label(benchmark, f"{group}, k={K}, batch {batch}", contender=lib, threads=THREADS, batch=batch,
          recall_at_10=round(rec, 4), **({"role": "reference"} if lib == "faiss" else {}),
          **({"nprobe": request.getfixturevalue("nprobe"), "k_factor": REFINE_FACTOR} if "IVF" in group else {}))
    if batch == NQ:
        benchmark.pedantic(fn, args=(q,), rounds=SLOW_ROUNDS, iterations=1, warmup_rounds=1)
    else:
        # batch 1 cycles through the queries so no single query's luck decides
        it = iter(range(10**9))
        benchmark(lambda: fn(xq[next(it) % NQ][None]))
    med = benchmark.stats.stats.median
    benchmark.extra_info["queries_per_s"] = round(batch / med, 1)
    SUMMARY[f"{group} | {lib} | batch {batch}"] = {"median_s": med, "qps": batch / med, "recall": rec}


@pytest.mark.parametrize("desc", ("PQ16", "IVF1024,PQ16"))
@pytest.mark.parametrize("lib", ("fastml", "faiss"))
def test_train(benchmark, label, data, lib, desc):
    xb = data[0]
    make = _fastml(desc) if lib == "fastml" else _faiss(desc)
    label(benchmark, f"train {desc} on {N:,} x {D}", contender=lib, threads=THREADS, batch=N,
          **({"role": "reference"} if lib == "faiss" else {}))
    benchmark.pedantic(lambda: make().train(xb), rounds=1, iterations=1)
    SUMMARY[f"train {desc} | {lib}"] = {"median_s": benchmark.stats.stats.median}


def _print_summary(built) -> None:
    if not SUMMARY:
        return
    import os
    print("\n\nfastml.search benchmark summary (load average %.2f %.2f %.2f)" % os.getloadavg())
    print(f"{'case':55s} {'median':>10s} {'queries/s':>10s} {'recall@10':>9s}")
    for key, v in SUMMARY.items():
        qps = f"{v['qps']:10.0f}" if "qps" in v else " " * 10
        rec = f"{v['recall']:9.3f}" if "recall" in v else ""
        print(f"{key:55s} {v['median_s'] * 1e3:8.2f}ms {qps} {rec}")
