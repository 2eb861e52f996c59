"""k-means training for coarse quantizers and PQ codebooks, faiss-like.

Lloyd iterations with faiss's defaults: ``niter=25``, a training sample of at
most ``max_points_per_centroid * k`` rows, initial centroids drawn at random
from the sample (``init="random"``, faiss's policy) or by k-means++
(``init="k-means++"``), empty clusters re-seeded by splitting a large one with
a symmetric perturbation of 1/1024, and a fixed ``seed`` (1234, as faiss), so
training is reproducible.

The assignment step runs on the compiled kernels: for small dimensions (PQ
sub-spaces, d <= 32) a direct distance loop vectorized over centroids, for
larger ones BLAS inner products with a k = 1 heap (:func:`fastml.search.flat.knn`).
All M sub-spaces of a product quantizer are trained together: one encode pass
per iteration assigns every sub-vector.

Progress: ``verbose=True`` logs one line per iteration on the ``fastml.search``
logger; ``progress=callable(iteration, niter, objective)`` is called after each.
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Optional

import numpy as np

from fastml.errors import InputError
from ._common import METRIC_L2, as_vectors, check_positive_int, check_threads, kernels

log = logging.getLogger("fastml.search")

EPS = 1.0 / 1024.0
SMALL_D = 32


def _assign(Xs: np.ndarray, C: np.ndarray, nt: int):
    """Nearest centroid per sub-space. Xs: (n, M*dsub) f32; C: (M, k, dsub) f32.

    Returns codes int32 (n, M) and the total squared error per row (n,)."""
    M, k, dsub = C.shape
    n = Xs.shape[0]
    if dsub <= SMALL_D or M > 1:
        codes = np.full((n, M), -1, np.int32)
        dist = np.empty(n, np.float32)
        kernels().pq_encode(Xs, np.ascontiguousarray(C.transpose(0, 2, 1)), codes, dist, nt)
        if n and codes.min() < 0:
            raise MemoryError("fastml.search: out of memory while assigning points")
        return codes, dist
    from .flat import knn
    D, I = knn(Xs, np.ascontiguousarray(C[0]), 1, METRIC_L2, n_threads=nt)
    return I.astype(np.int32), D[:, 0]


def _split_empty(C: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> int:
    """Give each empty centroid half of a populated one (faiss's split). Returns how many."""
    k = C.shape[0]
    empty = np.flatnonzero(counts == 0)
    n = counts.sum()
    for ci in empty:
        while True:  # pick a cluster with probability (size - 1) / (n - k)
            cj = int(rng.integers(k))
            if counts[cj] > 1 and rng.random() * (n - k) < counts[cj] - 1 or counts.max() <= 1:
                break
        if counts[cj] == 0:
            continue
        C[ci] = C[cj]
        sign = np.where(np.arange(C.shape[1]) % 2 == 0, 1.0, -1.0).astype(np.float32)
        C[ci] *= 1 + sign * EPS
        C[cj] *= 1 - sign * EPS
        counts[ci] = counts[cj] // 2
        counts[cj] -= counts[ci]
    return len(empty)


def _kmeanspp(X: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    n = X.shape[0]
    C = np.empty((k, X.shape[1]), np.float32)
    C[0] = X[rng.integers(n)]
    d2 = ((X - C[0]) ** 2).sum(1, dtype=np.float64)
    for i in range(1, k):
        tot = d2.sum()
        j = int(rng.integers(n)) if tot <= 0 else int(np.searchsorted(np.cumsum(d2), rng.random() * tot))
        C[i] = X[min(j, n - 1)]
        d2 = np.minimum(d2, ((X - C[i]) ** 2).sum(1, dtype=np.float64))
    return C


def train_subspaces(X: np.ndarray, M: int, k: int, *, niter: int = 25, seed: int = 1234,
                    max_points_per_centroid: int = 256, init: str = "random", n_threads: Optional[int] = None,
                    verbose: bool = False, progress: Optional[Callable] = None, what: str = "k-means"):
    """k-means with k centroids in each of the M equal sub-spaces of X (M = 1: plain k-means).

    Returns centroids float32 (M, k, d / M) and the objective per iteration (list).
    """
    n, d = X.shape
    dsub = d // M
    if n < k:
        raise InputError(f"{what}: {n} training vectors for {k} centroids; need at least {k}")
    nt = check_threads(n_threads)
    rng = np.random.default_rng(seed)
    if n > k * max_points_per_centroid:
        sample = np.sort(rng.choice(n, k * max_points_per_centroid, replace=False))
        X = X[sample]
        n = X.shape[0]
        if verbose:
            log.info("%s: sampling %d of the training vectors (%d per centroid)", what, n, max_points_per_centroid)
    X = np.ascontiguousarray(X, np.float32)
    Xm = np.ascontiguousarray(X.reshape(n, M, dsub).transpose(1, 0, 2))  # (M, n, dsub)
    if init == "random":
        C = X[rng.choice(n, k, replace=False)].reshape(k, M, dsub).transpose(1, 0, 2).copy()
    elif init == "k-means++":
        C = np.stack([_kmeanspp(Xm[m], k, rng) for m in range(M)])
    else:
        raise InputError(f"{what}: init must be 'random' or 'k-means++', got {init!r}")
    objective = []
    t0 = time.perf_counter()
    for it in range(niter):
        codes, dist = _assign(X, C, nt)
        objective.append(float(dist.sum(dtype=np.float64)))
        n_split = 0
        for m in range(M):
            sums, counts = kernels().centroid_sums(Xm[m], np.ascontiguousarray(codes[:, m]), k)
            nz = counts > 0
            C[m][nz] = (sums[nz] / counts[nz, None]).astype(np.float32)
            n_split += _split_empty(C[m], counts, rng)
        if verbose:
            log.info("%s iteration %d/%d: objective %.6g, %d empty clusters split, %.2f s", what, it + 1, niter,
                     objective[-1], n_split, time.perf_counter() - t0)
        if progress is not None:
            progress(it + 1, niter, objective[-1])
    return C, objective


class Kmeans:
    """faiss-style k-means: ``Kmeans(d, k, niter=25, seed=1234).train(x)``; ``centroids`` (k, d).

    ``index.search(x, 1)`` style assignment is :meth:`assign`.
    """

    def __init__(self, d: int, k: int, *, niter: int = 25, seed: int = 1234, max_points_per_centroid: int = 256,
                 init: str = "random", n_threads: Optional[int] = None, verbose: bool = False,
                 progress: Optional[Callable] = None):
        self.d, self.k = check_positive_int(d, "d"), check_positive_int(k, "k")
        self.niter = check_positive_int(niter, "niter", zero_ok=True)
        self.seed, self.max_points_per_centroid, self.init = seed, max_points_per_centroid, init
        self.n_threads, self.verbose, self.progress = n_threads, verbose, progress
        self.centroids = None
        self.obj = []

    def train(self, x) -> np.ndarray:
        x = as_vectors(x, self.d, "Kmeans.train: x")
        C, self.obj = train_subspaces(x, 1, self.k, niter=self.niter, seed=self.seed,
                                      max_points_per_centroid=self.max_points_per_centroid, init=self.init,
                                      n_threads=self.n_threads, verbose=self.verbose, progress=self.progress)
        self.centroids = C[0]
        return self.centroids

    def assign(self, x):
        """(squared distance, centroid number) of each row of x."""
        if self.centroids is None:
            from fastml.errors import NotFittedError
            raise NotFittedError("Kmeans is not trained")
        x = as_vectors(x, self.d, "Kmeans.assign: x")
        codes, dist = _assign(x, self.centroids[None], check_threads(self.n_threads))
        return dist, codes[:, 0].astype(np.int64)
