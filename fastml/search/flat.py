"""Exact search: :class:`IndexFlatL2`, :class:`IndexFlatIP` and :func:`knn`.

Inner products come from BLAS (numpy's ``matmul``) in blocks of queries x
database vectors; a compiled kernel turns each block into distances and keeps
the k best per query in a bounded heap, filtering 16 candidates at a time
against the heap's worst before touching it.

Threads: ``n_threads`` bounds every thread a search uses, BLAS's included:
numpy's BLAS is held to one thread for the duration of a call (threadpoolctl,
a scikit-learn dependency) and fastml's own threads share the work. With many
queries, worker threads take chunks of queries one at a time, each running
its own single-threaded GEMM block + top-k over the whole database; with few
queries (batch 1), each thread scans a slice of the database into its own
heaps, merged at the end. Either way the threads meet once per call. Before,
BLAS (its own pool, whatever ``n_threads`` said) and the top-k kernel each
forked and joined per block, ~100 barriers per search, each waiting for
whichever thread the OS had just descheduled on a loaded 2-core machine; and
``n_threads=1`` still ran BLAS on every core, so 1-thread CPU time measured on
the calling thread was half the real cost.
"""
from __future__ import annotations

import threading

import numpy as np

from fastml.errors import InputError
from ._common import (METRIC_INNER_PRODUCT, METRIC_L2, as_vectors, check_metric, check_positive_int, check_threads,
                      kernels, pad_results)
from .index import Index

#: queries and database vectors per GEMM block (a 1024 x 4096 float block is 16 MB; wide
#: blocks keep BLAS near its peak, the heap pass is a tenth of the GEMM)
QUERY_BLOCK = 1024
DB_BLOCK = 4096
#: fewest queries per worker chunk (below, one thread with a GEMV-like pass is faster)
MIN_CHUNK = 64
#: multiply-adds (nq x nb x d) from which a search holds BLAS to one thread; below, BLAS
#: runs one thread anyway and the ~7 us of threadpoolctl would be a tenth of a batch-1 IVF probe
BLAS_LIMIT_WORK = 1 << 22

_blas_lock = threading.Lock()
_blas_users = 0
_blas_limiter = None
_blas_controller = None


def _blas_one_thread(enter: bool) -> None:
    """Hold numpy's BLAS to one thread while any threaded search runs (process-wide
    setting: counted, so overlapping searches restore it once, at the last exit)."""
    global _blas_users, _blas_limiter, _blas_controller
    with _blas_lock:
        if enter:
            _blas_users += 1
            if _blas_users == 1:
                try:
                    if _blas_controller is None:
                        from threadpoolctl import ThreadpoolController
                        _blas_controller = ThreadpoolController()
                    _blas_limiter = _blas_controller.limit(limits=1, user_api="blas")
                except Exception:  # no threadpoolctl / unknown BLAS: correct, only slower
                    _blas_limiter = None
        else:
            _blas_users -= 1
            if _blas_users == 0 and _blas_limiter is not None:
                _blas_limiter.restore_original_limits()
                _blas_limiter = None


def _knn_rows(xq, xb, norms, l2: bool, D, I, q0: int, q1: int, n_threads: int) -> None:
    """Heaps of queries q0:q1 against the whole database (GEMM blocks + top-k kernel)."""
    K = kernels()
    nq, nb = q1 - q0, xb.shape[0]
    qb = min(QUERY_BLOCK, nq)
    # few queries: one GEMV-like pass over the whole database (fewer calls), within 4M floats
    bb = DB_BLOCK if nq > 64 else max(DB_BLOCK, min(nb, (1 << 22) // nq))
    buf = np.empty((qb, min(bb, nb)), np.float32)
    for a in range(q0, q1, qb):
        b = min(a + qb, q1)
        for b0 in range(0, nb, bb):
            b1 = min(b0 + bb, nb)
            ip = buf[: b - a, : b1 - b0]
            np.matmul(xq[a:b], xb[b0:b1].T, out=ip)
            K.topk_ip_block(ip if ip.flags.c_contiguous else np.ascontiguousarray(ip),
                            norms[b0:b1] if l2 else None, b0, D[a:b], I[a:b], n_threads)


def _run_workers(n_threads: int, work) -> None:
    """``work()`` on the calling thread and ``n_threads - 1`` others; the first error is re-raised."""
    errors = []

    def guarded():
        try:
            work()
        except BaseException as e:  # re-raised in the caller
            errors.append(e)

    workers = [threading.Thread(target=guarded, daemon=True) for _ in range(n_threads - 1)]
    for w in workers:
        w.start()
    guarded()
    for w in workers:
        w.join()
    if errors:
        raise errors[0]


def _knn_query_chunks(xq, xb, norms, l2: bool, D, I, n_threads: int) -> None:
    """Many queries: workers take chunks of queries (two per thread, so a thread the
    OS delays takes fewer) and scan the whole database for each."""
    nq = xq.shape[0]
    step = max(MIN_CHUNK, -(-nq // (32 * n_threads)) * 16)
    chunks = iter([(a, min(a + step, nq)) for a in range(0, nq, step)])
    lock = threading.Lock()

    def work():
        while True:
            with lock:
                c = next(chunks, None)
            if c is None:
                return
            _knn_rows(xq, xb, norms, l2, D, I, c[0], c[1], 1)

    _run_workers(n_threads, work)
    kernels().heap_sort(D, I)


def _knn_db_parts(xq, xb, norms, l2: bool, D, I, n_threads: int) -> None:
    """Few queries: each thread scans its own slice of the database into its own heaps;
    the sorted heaps are merged (ties: smaller id first, as in one heap)."""
    K = kernels()
    nq, nb, k = xq.shape[0], xb.shape[0], D.shape[1]
    bounds = np.linspace(0, nb, n_threads + 1).astype(np.int64) // 16 * 16
    bounds[-1] = nb
    Dp = np.empty((n_threads, nq, k), np.float32)
    Ip = np.empty((n_threads, nq, k), np.int64)
    parts = iter(range(n_threads))
    lock = threading.Lock()

    def work():
        with lock:
            t = next(parts)
        b0, b1 = int(bounds[t]), int(bounds[t + 1])
        K.heap_init(Dp[t], Ip[t])
        _knn_rows(xq, xb[b0:b1], None if norms is None else norms[b0:b1], l2, Dp[t], Ip[t], 0, nq, 1)
        K.heap_sort(Dp[t], Ip[t])
        Ip[t][Ip[t] >= 0] += b0

    _run_workers(n_threads, work)
    Dm = Dp.transpose(1, 0, 2).reshape(nq, -1)
    Im = Ip.transpose(1, 0, 2).reshape(nq, -1)
    order = np.lexsort((np.where(Im < 0, np.iinfo(np.int64).max, Im), Dm), axis=-1)[:, :k]
    D[:] = np.take_along_axis(Dm, order, 1)
    I[:] = np.take_along_axis(Im, order, 1)


def knn(xq: np.ndarray, xb: np.ndarray, k: int, metric: int = METRIC_L2, *, norms=None, n_threads: int = 1):
    """The k nearest rows of ``xb`` for each row of ``xq`` (both float32, C-contiguous, validated).

    Returns ``(D, I)``: float32 (nq, k) distances (squared L2, or inner products for
    ``METRIC_INNER_PRODUCT``, best first) and int64 row numbers, padded like faiss.
    """
    K = kernels()
    nq, nb = xq.shape[0], xb.shape[0]
    D = np.empty((nq, k), np.float32)
    I = np.empty((nq, k), np.int64)
    K.heap_init(D, I)
    if nb and nq and k:
        l2 = metric == METRIC_L2
        if l2 and norms is None:
            norms = np.einsum("ij,ij->i", xb, xb, dtype=np.float32)
        hold = nq * nb * xq.shape[1] >= BLAS_LIMIT_WORK
        if hold:
            _blas_one_thread(True)
        try:
            if n_threads > 1 and nq >= 2 * MIN_CHUNK:
                _knn_query_chunks(xq, xb, norms, l2, D, I, n_threads)
            elif n_threads > 1 and nq < MIN_CHUNK and nb >= 2 * DB_BLOCK * n_threads:
                _knn_db_parts(xq, xb, norms, l2, D, I, n_threads)
            else:
                _knn_rows(xq, xb, norms, l2, D, I, 0, nq, n_threads)
                K.heap_sort(D, I)
        finally:
            if hold:
                _blas_one_thread(False)
        if l2:
            # the query norm is the same for every candidate: added once, at the end
            D += np.einsum("ij,ij->i", xq, xq, dtype=np.float32)[:, None]
            np.maximum(D, 0.0, out=D)
    pad_results(D, I, metric)
    return D, I


class IndexFlat(Index):
    """Exact search over stored float32 vectors (faiss's ``IndexFlat``).

    Parameters
    ----------
    d : int
        Vector dimension.
    metric : int or str
        ``METRIC_L2`` (squared Euclidean, smallest first) or ``METRIC_INNER_PRODUCT``
        (largest first).
    """

    def __init__(self, d: int, metric=METRIC_L2):
        super().__init__(d, check_metric(metric))
        self.is_trained = True
        self.xb = np.empty((0, self.d), np.float32)
        self._norms = np.empty(0, np.float32)

    def _add(self, x: np.ndarray, ids: np.ndarray) -> None:
        self.xb = np.concatenate([self.xb, x]) if self.ntotal else x.copy()
        self._norms = np.einsum("ij,ij->i", self.xb, self.xb, dtype=np.float32)
        self._append_ids(ids)

    def _search(self, xq: np.ndarray, k: int, nt: int):
        if xq.shape[0] == 1 and self.ntotal >= 2 * DB_BLOCK * 2:
            # batch 1 over a large database: threads split the database (the base class
            # keeps other indexes' batch-1 calls on the calling thread)
            nt = check_threads(self.n_threads)
        D, I = knn(xq, self.xb, k, self.metric_type, norms=self._norms, n_threads=nt)
        return D, self._map_ids(I)

    def _reconstruct(self, rows: np.ndarray) -> np.ndarray:
        return self.xb[rows].copy()

    def _reset(self) -> None:
        self.xb = np.empty((0, self.d), np.float32)
        self._norms = np.empty(0, np.float32)

    def _state(self):
        return {}, {"xb": self.xb}

    def _load(self, params, arrays) -> None:
        from ._common import check_array
        self.xb = check_array(arrays["xb"], "xb", np.float32, (self.ntotal, self.d))
        self._norms = np.einsum("ij,ij->i", self.xb, self.xb, dtype=np.float32)


class IndexFlatL2(IndexFlat):
    """Exact squared-L2 search (faiss's ``IndexFlatL2``)."""

    def __init__(self, d: int):
        super().__init__(d, METRIC_L2)


class IndexFlatIP(IndexFlat):
    """Exact maximum-inner-product search (faiss's ``IndexFlatIP``)."""

    def __init__(self, d: int):
        super().__init__(d, METRIC_INNER_PRODUCT)
