"""Exact search: :class:`IndexFlatL2`, :class:`IndexFlatIP` and :func:`knn`.

Inner products come from BLAS (numpy's ``matmul``) in blocks of queries x
database vectors; a compiled kernel turns each block into distances and keeps
the k best per query in a bounded heap, filtering 16 candidates at a time
against the heap's worst before touching it.
"""
from __future__ import annotations

import numpy as np

from fastml.errors import InputError
from ._common import (METRIC_INNER_PRODUCT, METRIC_L2, as_vectors, check_metric, check_positive_int, kernels,
                      pad_results)
from .index import Index

#: queries and database vectors per GEMM block (a 1024 x 4096 float block is 16 MB; wide
#: blocks keep BLAS near its peak, the heap pass is a tenth of the GEMM)
QUERY_BLOCK = 1024
DB_BLOCK = 4096


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
        qb = min(QUERY_BLOCK, nq)
        # few queries: one GEMV-like pass over the whole database (fewer calls), within 4M floats
        bb = DB_BLOCK if nq > 64 else max(DB_BLOCK, min(nb, (1 << 22) // nq))
        buf = np.empty((qb, min(bb, nb)), np.float32)
        for q0 in range(0, nq, qb):
            q1 = min(q0 + qb, nq)
            for b0 in range(0, nb, bb):
                b1 = min(b0 + bb, nb)
                ip = buf[: q1 - q0, : b1 - b0]
                np.matmul(xq[q0:q1], xb[b0:b1].T, out=ip)
                K.topk_ip_block(ip if ip.flags.c_contiguous else np.ascontiguousarray(ip),
                                norms[b0:b1] if l2 else None, b0, D[q0:q1], I[q0:q1], n_threads)
        K.heap_sort(D, I)
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
