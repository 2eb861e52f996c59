"""Product quantization: :class:`ProductQuantizer`, :class:`IndexPQ` (8- or
4-bit codes) and :class:`IndexPQFastScan` (4-bit codes, faiss's "PQ<M>x4fs").

A vector is cut into M sub-vectors of ``dsub = d / M`` floats, and each is
replaced by the number of its nearest of ``ksub = 2**nbits`` sub-centroids.
A query is answered by asymmetric distance computation (ADC): one distance
table (M x ksub) per query, then M table look-ups per stored vector.

Codes are kept twice: ``codes`` (n, M) uint8, one code per byte in add order
(what ``reconstruct``, files and ONNX export use), and a packed copy in blocks
of 64 vectors that the scan kernel reads (``kernels/src/fm_pq.h``). The scan
quantizes each query's tables to uint8, sums 64 look-ups per SIMD instruction,
and re-ranks the few candidates that can reach the top k with the float
tables: results equal a float ADC scan. ``search_mode="float"`` runs the plain
float scan instead (the reference path).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from fastml.errors import InputError, InvalidModelError
from ._common import (METRIC_INNER_PRODUCT, METRIC_L2, as_vectors, check_array, check_metric, check_positive_int,
                      check_threads, kernels, pad_results)
from .index import Index
from .kmeans import train_subspaces

#: scan modes: "auto" (quantized SIMD look-ups, or float where lists are shorter than
#: 2 * ksub and quantizing the tables would cost more than it saves), "simd", "scalar", "float"
SEARCH_MODES = {"float": 0, "scalar": 1, "simd": 2, "auto": 3}
#: tables by BLAS (|q|^2 + |c|^2 - 2 q.c) from this sub-vector width and batch size up
GEMM_DSUB, GEMM_BATCH = 32, 64


class ProductQuantizer:
    """M sub-quantizers of ``2**nbits`` centroids each over ``d / M`` dimensions.

    Attributes
    ----------
    centroids : numpy.ndarray, float32 (M, ksub, dsub)
        The codebooks (after :meth:`train`).
    """

    def __init__(self, d: int, M: int, nbits: int = 8):
        self.d, self.M = check_positive_int(d, "d"), check_positive_int(M, "M")
        if isinstance(nbits, bool) or nbits not in (4, 8):
            raise InputError(f"nbits must be 4 or 8, got {nbits!r}")
        if self.d % self.M:
            raise InputError(f"d = {self.d} is not a multiple of M = {self.M}: each of the M sub-vectors "
                             "must have d / M dimensions")
        self.nbits = int(nbits)
        self.ksub = 1 << self.nbits
        self.dsub = self.d // self.M
        self.niter, self.seed, self.max_points_per_centroid, self.init = 25, 1234, 256, "random"
        self.verbose, self.progress = False, None
        self.centroids: Optional[np.ndarray] = None
        self._cbT = None
        self._cnorm = None

    @property
    def is_trained(self) -> bool:
        return self.centroids is not None

    def set_centroids(self, centroids: np.ndarray) -> None:
        c = check_array(centroids, "pq centroids", np.float32, (self.M, self.ksub, self.dsub))
        self.centroids = np.ascontiguousarray(c)
        self._cbT = np.ascontiguousarray(self.centroids.transpose(0, 2, 1))
        self._cnorm = np.einsum("mjt,mjt->mj", self.centroids, self.centroids)

    def train(self, x: np.ndarray, n_threads=None) -> None:
        C, self.obj = train_subspaces(x, self.M, self.ksub, niter=self.niter, seed=self.seed,
                                      max_points_per_centroid=self.max_points_per_centroid, init=self.init,
                                      n_threads=n_threads, verbose=self.verbose, progress=self.progress,
                                      what=f"PQ{self.M}x{self.nbits} training")
        self.set_centroids(C)

    def compute_codes(self, x: np.ndarray, n_threads: int = 1) -> np.ndarray:
        """Codes (n, M) uint8 of validated float32 rows: nearest sub-centroid per sub-vector."""
        codes = np.full((x.shape[0], self.M), -1, np.int32)
        kernels().pq_encode(x, self._cbT, codes, None, n_threads)
        if codes.size and codes.min() < 0:
            raise MemoryError("fastml.search: out of memory while encoding")
        return codes.astype(np.uint8)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Vectors (n, d) float32 from codes (n, M)."""
        codes = np.asarray(codes)
        return self.centroids[np.arange(self.M), codes.astype(np.intp)].reshape(codes.shape[0], self.d)

    def compute_distance_tables(self, x: np.ndarray, metric: int = METRIC_L2, n_threads: int = 1) -> np.ndarray:
        """Tables (n, M, ksub) float32: squared L2 from each sub-vector to each sub-centroid,
        or, for inner product, the negated products (the kernels minimize)."""
        n = x.shape[0]
        ip = metric == METRIC_INNER_PRODUCT
        if self.dsub >= GEMM_DSUB and n >= GEMM_BATCH:
            xs = x.reshape(n, self.M, self.dsub).transpose(1, 0, 2)            # (M, n, dsub)
            prod = np.matmul(xs, self._cbT)                                     # (M, n, ksub)
            if ip:
                T = -prod
            else:
                qn = np.einsum("mnt,mnt->mn", xs, xs)
                T = qn[:, :, None] + self._cnorm[:, None, :] - 2 * prod
                np.maximum(T, 0, out=T)
            return np.ascontiguousarray(T.transpose(1, 0, 2), dtype=np.float32)
        T = np.empty((n, self.M, self.ksub), np.float32)
        kernels().pq_tables(x, self._cbT, ip, T, n_threads)
        return T


def pack_codes(codes: np.ndarray, nbits: int, slots: np.ndarray, nslots: int) -> np.ndarray:
    """Packed scan layout (see ``fm_pq.h``): vector i goes to slot ``slots[i]``; ``nslots`` % 64 == 0."""
    n, M = codes.shape
    if nbits == 4:
        c = codes if M % 2 == 0 else np.concatenate([codes, np.zeros((n, 1), np.uint8)], axis=1)
        c = (c[:, 0::2] | (c[:, 1::2] << 4)).astype(np.uint8)
    else:
        c = codes
    rows = c.shape[1]
    packed = np.zeros((nslots // 64, rows, 64), np.uint8)
    if n:
        packed[slots // 64, :, slots % 64] = c
    return packed.reshape(-1)


def check_codes(codes, n: int, M: int, nbits: int, name: str = "codes") -> np.ndarray:
    codes = check_array(codes, name, np.uint8, (n, M))
    if codes.size and int(codes.max()) >= (1 << nbits):
        raise InvalidModelError(f"{name}: a code is {int(codes.max())}, but codes of {nbits} bits are < {1 << nbits}")
    return codes


def search_mode(mode: str) -> int:
    if mode not in SEARCH_MODES:
        raise InputError(f"search_mode must be one of {sorted(SEARCH_MODES)}, got {mode!r}")
    return SEARCH_MODES[mode]


class IndexPQ(Index):
    """Product-quantization index (faiss's ``IndexPQ``): ``IndexPQ(d, M, nbits=8, metric=METRIC_L2)``.

    Each vector is stored as M codes of ``nbits`` (8 or 4) bits; search is ADC
    over all codes. ``d`` must be a multiple of ``M``.

    Attributes
    ----------
    pq : ProductQuantizer
    codes : numpy.ndarray, uint8 (ntotal, M)
    search_mode : str
        "auto" (default), "simd", "scalar" or "float"; all give the float ADC result.
    """

    def __init__(self, d: int, M: int, nbits: int = 8, metric=METRIC_L2):
        super().__init__(d, check_metric(metric))
        self.pq = ProductQuantizer(self.d, M, nbits)
        self.M, self.nbits = self.pq.M, self.pq.nbits
        self.search_mode = "auto"
        self.codes = np.empty((0, self.M), np.uint8)
        self._packed = np.zeros(0, np.uint8)
        self._slot_ids = np.zeros(0, np.int64)

    def _train(self, x):
        self.pq.verbose = self.pq.verbose or self.verbose
        self.pq.train(x, self.n_threads)

    @property
    def is_trained(self) -> bool:
        return self.pq.is_trained

    @is_trained.setter
    def is_trained(self, value) -> None:  # Index.__init__ / train set it; the codebooks decide
        pass

    def _repack(self) -> None:
        n = self.codes.shape[0]
        nslots = (n + 63) // 64 * 64
        self._packed = pack_codes(self.codes, self.nbits, np.arange(n), nslots)
        self._slot_ids = np.arange(n, dtype=np.int64)

    def _add(self, x, ids):
        new = self.pq.compute_codes(x, check_threads(self.n_threads) if x.shape[0] > 256 else 1)
        self.codes = np.concatenate([self.codes, new]) if self.codes.shape[0] else new
        self._append_ids(ids)
        self._repack()

    def _search(self, xq, k, nt):
        nq = xq.shape[0]
        D = np.empty((nq, k), np.float32)
        I = np.empty((nq, k), np.int64)
        if self.ntotal == 0:
            D.fill(0)
            I.fill(-1)
        else:
            T = self.pq.compute_distance_tables(xq, self.metric_type, nt)
            kernels().pq_search(T, self._packed, self._slot_ids, self.M, self.nbits, self.ntotal, k,
                                search_mode(self.search_mode), D, I, nt)
        pad_results(D, I, self.metric_type)
        return D, self._map_ids(I)

    def _reconstruct(self, rows):
        return self.pq.decode(self.codes[rows])

    def _reset(self):
        self.codes = np.empty((0, self.M), np.uint8)
        self._repack()

    def _state(self):
        return ({"M": self.M, "nbits": self.nbits, "search_mode": self.search_mode},
                {"centroids": self.pq.centroids, "codes": self.codes})

    def _load(self, params, arrays):
        self.pq.set_centroids(arrays["centroids"])
        self.codes = check_codes(arrays["codes"], self.ntotal, self.M, self.nbits)
        self.search_mode = params.get("search_mode", "auto")
        search_mode(self.search_mode)
        self._repack()


class IndexPQFastScan(IndexPQ):
    """4-bit PQ with uint8 look-up tables scanned in registers (faiss's ``IndexPQFastScan``,
    factory string ``"PQ<M>x4fs"``). Same results as ``IndexPQ(d, M, 4)``."""

    def __init__(self, d: int, M: int, nbits: int = 4, metric=METRIC_L2):
        if nbits != 4:
            raise InputError(f"IndexPQFastScan takes nbits=4, got {nbits!r}")
        super().__init__(d, M, 4, metric)
