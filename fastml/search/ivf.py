"""Inverted-file indexes: :class:`IndexIVFFlat` and :class:`IndexIVFPQ`.

A coarse quantizer (an exact index over ``nlist`` k-means centroids) splits
the database into cells; a query scans only the ``nprobe`` cells whose
centroids are nearest. IVF-Flat stores the vectors of each cell; IVF-PQ stores
PQ codes of the residual ``x - centroid`` (``by_residual``, as faiss).

IVF-PQ tables (L2) use faiss's precomputed decomposition
``|q - c - r|^2 = |q - c|^2 + (|r|^2 + 2 c.r) - 2 q.r``: the middle term is a
table per cell computed once at train/add time (``nlist x M x ksub`` floats),
the last one table per query, and the first the coarse distance. The scan is
the PQ kernel's (uint8 look-ups, exact float re-rank) over cells laid out
back to back, each starting on a 64-vector block.
"""
from __future__ import annotations

import numpy as np

from fastml.errors import InputError, InvalidModelError
from ._common import (METRIC_INNER_PRODUCT, METRIC_L2, check_array, check_metric, check_positive_int,
                      check_threads, kernels, pad_results)
from .flat import IndexFlat, IndexFlatIP, IndexFlatL2
from .index import Index
from .kmeans import train_subspaces
from .pq import ProductQuantizer, check_codes, pack_codes, search_mode


class IndexIVF(Index):
    """Shared inverted-file logic: coarse training, assignment, cell layout, ``nprobe``."""

    def __init__(self, quantizer, d: int, nlist: int, metric=METRIC_L2):
        super().__init__(d, check_metric(metric))
        if quantizer is None:
            quantizer = IndexFlatL2(self.d) if self.metric_type == METRIC_L2 else IndexFlatIP(self.d)
        if not isinstance(quantizer, IndexFlat) or quantizer.d != self.d:
            raise InputError(f"quantizer must be a fastml.search.IndexFlat of dimension {self.d}")
        self.quantizer = quantizer
        self.nlist = check_positive_int(nlist, "nlist")
        self.nprobe = 1
        self.niter, self.seed, self.max_points_per_centroid = 25, 1234, 256
        self.progress = None
        self.list_no = np.empty(0, np.int64)  # cell of each stored vector, in add order
        self._order = np.empty(0, np.int64)   # stored rows sorted by cell (stable)
        self._offsets = np.zeros(self.nlist + 1, np.int64)

    @property
    def is_trained(self) -> bool:
        return self.quantizer.ntotal == self.nlist and self._encoder_trained()

    @is_trained.setter
    def is_trained(self, value) -> None:
        pass

    def _encoder_trained(self) -> bool:
        return True

    def _train(self, x):
        if self.quantizer.ntotal != self.nlist:
            if self.quantizer.ntotal:
                raise InputError(f"the quantizer holds {self.quantizer.ntotal} centroids, expected nlist={self.nlist}")
            C, _ = train_subspaces(x, 1, self.nlist, niter=self.niter, seed=self.seed,
                                   max_points_per_centroid=self.max_points_per_centroid,
                                   n_threads=self.n_threads, verbose=self.verbose, progress=self.progress,
                                   what=f"IVF{self.nlist} coarse training")
            self.quantizer.add(C[0])
        self._train_encoder(x)

    def _train_encoder(self, x) -> None:
        pass

    def _assign(self, x, nt) -> np.ndarray:
        self.quantizer.n_threads = nt
        return self.quantizer.search(x, 1)[1][:, 0]

    def _probe(self, xq, nt):
        """(coarse distance in the kernels' minimizing sense, cell) of the nprobe nearest cells."""
        nprobe = check_positive_int(self.nprobe, "nprobe")
        self.quantizer.n_threads = nt
        Dc, Lc = self.quantizer.search(xq, min(nprobe, self.nlist))
        Dc = np.where(Lc >= 0, Dc, 0).astype(np.float32)
        if self.metric_type == METRIC_INNER_PRODUCT:
            Dc = -Dc
        return np.ascontiguousarray(Dc), np.ascontiguousarray(Lc)

    def _relayout(self) -> None:
        self._order = np.argsort(self.list_no, kind="stable")
        counts = np.bincount(self.list_no, minlength=self.nlist)
        self._offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def _add_lists(self, x, nt) -> np.ndarray:
        lists = self._assign(x, nt)
        self.list_no = np.concatenate([self.list_no, lists]) if self.list_no.size else lists
        return lists

    def get_list_size(self, list_no: int) -> int:
        return int(self._offsets[list_no + 1] - self._offsets[list_no])

    def _reset(self):
        self.list_no = np.empty(0, np.int64)
        self._clear_storage()
        self._relayout()

    def _check_lists(self, arrays) -> None:
        if self.quantizer.ntotal != self.nlist:
            raise InvalidModelError(f"the quantizer holds {self.quantizer.ntotal} centroids, expected nlist={self.nlist}")
        self.list_no = check_array(arrays["list_no"], "list_no", np.int64, (self.ntotal,))
        if self.ntotal and (self.list_no.min() < 0 or self.list_no.max() >= self.nlist):
            raise InvalidModelError(f"list_no: cell numbers must be in [0, {self.nlist}), got "
                                    f"{int(self.list_no.min())}..{int(self.list_no.max())}")


class IndexIVFFlat(IndexIVF):
    """Inverted file with exact distances inside the probed cells (faiss's ``IndexIVFFlat``)."""

    def __init__(self, quantizer, d: int, nlist: int, metric=METRIC_L2):
        super().__init__(quantizer, d, nlist, metric)
        self.xb = np.empty((0, self.d), np.float32)
        self._sorted = self.xb

    def _add(self, x, ids):
        nt = check_threads(self.n_threads) if x.shape[0] > 1 else 1
        self._add_lists(x, nt)
        self.xb = np.concatenate([self.xb, x]) if self.xb.shape[0] else x.copy()
        self._append_ids(ids)
        self._rebuild()

    def _rebuild(self):
        self._relayout()
        self._sorted = np.ascontiguousarray(self.xb[self._order])

    def _search(self, xq, k, nt):
        Dc, Lc = self._probe(xq, nt)
        D = np.empty((xq.shape[0], k), np.float32)
        I = np.empty((xq.shape[0], k), np.int64)
        kernels().ivfflat_search(xq, Lc, self._sorted, self._order, self._offsets,
                                 self.metric_type == METRIC_INNER_PRODUCT, k, D, I, nt)
        pad_results(D, I, self.metric_type)
        return D, self._map_ids(I)

    def _reconstruct(self, rows):
        return self.xb[rows].copy()

    def _clear_storage(self):
        self.xb = np.empty((0, self.d), np.float32)

    def _state(self):
        return {"nlist": self.nlist, "nprobe": self.nprobe}, {"xb": self.xb, "list_no": self.list_no}

    def _load(self, params, arrays):
        self.nprobe = check_positive_int(params.get("nprobe", 1), "nprobe")
        self.xb = check_array(arrays["xb"], "xb", np.float32, (self.ntotal, self.d))
        self._check_lists(arrays)
        self._rebuild()


class IndexIVFPQ(IndexIVF):
    """Inverted file over PQ codes of residuals (faiss's ``IndexIVFPQ``):
    ``IndexIVFPQ(quantizer, d, nlist, M, nbits=8)``; set ``nprobe`` before searching."""

    def __init__(self, quantizer, d: int, nlist: int, M: int, nbits: int = 8, metric=METRIC_L2):
        super().__init__(quantizer, d, nlist, metric)
        self.pq = ProductQuantizer(self.d, M, nbits)
        self.M, self.nbits = self.pq.M, self.pq.nbits
        self.by_residual = True
        self.search_mode = "auto"
        self.codes = np.empty((0, self.M), np.uint8)
        self._precomp = None
        self._packed = np.zeros(0, np.uint8)
        self._slot_rows = np.zeros(0, np.int64)
        self._lstart = np.zeros(self.nlist, np.int64)
        self._llen = np.zeros(self.nlist, np.int64)

    def _encoder_trained(self):
        return self.pq.is_trained

    def _train_encoder(self, x):
        nt = check_threads(self.n_threads)
        lists = self._assign(x, nt)
        r = x - self.quantizer.xb[lists]
        self.pq.verbose = self.pq.verbose or self.verbose
        self.pq.train(np.ascontiguousarray(r), self.n_threads)
        self._precompute()
        self._rebuild()

    def _precompute(self):
        """Per-cell table |r|^2 + 2 c.r (L2); inner product needs none."""
        if self.metric_type != METRIC_L2 or not self.is_trained:
            self._precomp = None
            return
        C = self.quantizer.xb.reshape(self.nlist, self.M, self.pq.dsub)
        cent = self.pq.centroids                                            # (M, ksub, dsub)
        with np.errstate(over="ignore", invalid="ignore"):  # absurd loaded values: the kernel scans non-finite tables in float
            cr = np.einsum("lmt,mjt->lmj", C, cent, optimize=True)
            self._precomp = np.ascontiguousarray(self.pq._cnorm[None] + 2 * cr, dtype=np.float32)

    def _residuals(self, x, lists):
        return np.ascontiguousarray(x - self.quantizer.xb[lists])

    def _add(self, x, ids):
        nt = check_threads(self.n_threads) if x.shape[0] > 256 else 1
        lists = self._add_lists(x, nt)
        new = self.pq.compute_codes(self._residuals(x, lists), nt)
        self.codes = np.concatenate([self.codes, new]) if self.codes.shape[0] else new
        self._append_ids(ids)
        self._rebuild()

    def _rebuild(self):
        self._relayout()
        counts = np.diff(self._offsets)
        padded = (counts + 63) // 64 * 64
        self._lstart = np.concatenate([[0], np.cumsum(padded)[:-1]]).astype(np.int64)
        nslots = int(padded.sum())
        n = self.codes.shape[0]
        slots = np.empty(n, np.int64)
        # slot of row i: start of its cell + its rank inside the cell (add order)
        rank = np.arange(n) - self._offsets[self.list_no[self._order]]
        slots[self._order] = self._lstart[self.list_no[self._order]] + rank
        self._packed = pack_codes(self.codes, self.nbits, slots, max(nslots, 64))
        self._slot_rows = np.full(max(nslots, 64), -1, np.int64)
        self._slot_rows[slots] = np.arange(n)
        self._llen = counts.astype(np.int64)

    def _search(self, xq, k, nt):
        nq = xq.shape[0]
        Dc, Lc = self._probe(xq, nt)
        D = np.empty((nq, k), np.float32)
        I = np.empty((nq, k), np.int64)
        ip = self.metric_type == METRIC_INNER_PRODUCT
        qt = self.pq.compute_distance_tables(xq, METRIC_INNER_PRODUCT, nt)  # -q.r
        if not ip:
            qt *= 2.0                                                        # -2 q.r
        kernels().ivfpq_search(qt, self._precomp, Lc, Dc, self._lstart, self._llen, self._packed,
                               self._slot_rows, self.M, self.nbits, k, search_mode(self.search_mode), D, I, nt)
        pad_results(D, I, self.metric_type)
        return D, self._map_ids(I)

    def _reconstruct(self, rows):
        return self.quantizer.xb[self.list_no[rows]] + self.pq.decode(self.codes[rows])

    def _clear_storage(self):
        self.codes = np.empty((0, self.M), np.uint8)

    def _state(self):
        return ({"nlist": self.nlist, "nprobe": self.nprobe, "M": self.M, "nbits": self.nbits,
                 "search_mode": self.search_mode},
                {"centroids": self.pq.centroids, "codes": self.codes, "list_no": self.list_no})

    def _load(self, params, arrays):
        self.nprobe = check_positive_int(params.get("nprobe", 1), "nprobe")
        self.search_mode = params.get("search_mode", "auto")
        search_mode(self.search_mode)
        self.pq.set_centroids(arrays["centroids"])
        self.codes = check_codes(arrays["codes"], self.ntotal, self.M, self.nbits)
        self._check_lists(arrays)
        self._precompute()
        self._rebuild()
