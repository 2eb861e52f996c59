"""Wrappers: :class:`IndexRefineFlat` (exact re-ranking of a coarse index's
candidates), :class:`PCAMatrix` and :class:`IndexPreTransform` (a PCA before
any index), as in faiss."""
from __future__ import annotations

import numpy as np

from fastml.errors import InputError, InvalidModelError
from ._common import METRIC_INNER_PRODUCT, check_array, check_positive_int, kernels, pad_results
from .flat import IndexFlat
from .index import Index


class IndexRefineFlat(Index):
    """Search ``base_index`` for ``k_factor * k`` candidates, then re-rank them with
    exact distances to the original vectors (kept here in float32).

    ``IndexRefineFlat(base_index, k_factor=...)``; ids are the base index's.
    """

    def __init__(self, base_index: Index, k_factor: float = 1.0):
        if not isinstance(base_index, Index):
            raise InputError("base_index must be a fastml.search index")
        super().__init__(base_index.d, base_index.metric_type)
        self.base_index = base_index
        self.k_factor = float(k_factor)
        self.refine = IndexFlat(self.d, self.metric_type)

    @property
    def is_trained(self) -> bool:
        return self.base_index.is_trained

    @is_trained.setter
    def is_trained(self, value) -> None:
        pass

    def _train(self, x):
        self.base_index.train(x)

    def _add(self, x, ids):
        if ids is None:
            self.base_index.add(x)
        else:
            self.base_index.add_with_ids(x, ids)
        self.refine._add(x, None)
        self.refine.ntotal += x.shape[0]
        self._append_ids(ids)

    def _search(self, xq, k, nt):
        if not self.k_factor >= 1:
            raise InputError(f"k_factor must be >= 1, got {self.k_factor}")
        kb = max(k, int(k * self.k_factor))
        self.base_index.n_threads = nt
        # the base index returns user ids; map them to storage rows of the refine copy
        _, Ib = self.base_index.search(xq, kb)
        rows = np.full(Ib.shape, -1, np.int64)
        ok = Ib >= 0
        if ok.any():
            rows[ok] = self._rows_of(Ib[ok])
            if rows.max() >= self.refine.xb.shape[0]:  # the kernel reads these rows unchecked
                raise InvalidModelError(f"refine: the base index returned id {int(Ib[rows == rows.max()][0])}, "
                                        f"beyond the {self.refine.xb.shape[0]} stored vectors")
        D = np.empty((xq.shape[0], k), np.float32)
        I = np.empty((xq.shape[0], k), np.int64)
        # compiled re-rank: exact distances to the scattered candidate rows, a k-heap per
        # query (ties: smaller id first), threads over queries
        kernels().refine_search(xq, self.refine.xb, rows, np.ascontiguousarray(Ib, np.int64),
                                self.metric_type == METRIC_INNER_PRODUCT, D, I, nt)
        pad_results(D, I, self.metric_type)
        return D, I

    def _rows_of(self, keys):
        if self._ids is None:
            return np.asarray(keys, np.int64)
        return super()._rows_of(keys)

    def _reconstruct(self, rows):
        return self.refine.xb[rows].copy()

    def _reset(self):
        self.base_index.reset()
        self.refine.reset()

    def _state(self):
        return {"k_factor": self.k_factor}, {"xb": self.refine.xb}

    def _load(self, params, arrays):
        self.k_factor = float(params.get("k_factor", 1.0))
        if not self.k_factor >= 1:
            raise InvalidModelError(f"k_factor must be >= 1, got {self.k_factor}")
        self.refine.xb = check_array(arrays["xb"], "xb", np.float32, (self.ntotal, self.d))
        self.refine.ntotal = self.ntotal
        if self.base_index.ntotal != self.ntotal:
            raise InvalidModelError(f"refine: the base index holds {self.base_index.ntotal} vectors, "
                                    f"the refine copy {self.ntotal}")


class PCAMatrix:
    """PCA from ``d_in`` to ``d_out`` dimensions: ``y = (x - mean) @ A.T`` (A: the top
    ``d_out`` eigenvectors of the covariance, largest first). ``eigen_power`` and
    ``random_rotation`` of faiss are not offered."""

    def __init__(self, d_in: int, d_out: int):
        self.d_in, self.d_out = check_positive_int(d_in, "d_in"), check_positive_int(d_out, "d_out")
        if self.d_out > self.d_in:
            raise InputError(f"PCA to {self.d_out} dimensions from {self.d_in}: d_out must be <= d_in")
        self.mean = None
        self.A = None

    @property
    def is_trained(self) -> bool:
        return self.A is not None

    def train(self, x: np.ndarray) -> None:
        x64 = x.astype(np.float64)
        mean = x64.mean(0)
        cov = np.cov(x64 - mean, rowvar=False, bias=True).reshape(self.d_in, self.d_in)
        w, v = np.linalg.eigh(cov)
        A = v[:, ::-1][:, : self.d_out].T
        # a fixed sign per component (largest |entry| positive): reproducible across LAPACKs
        A *= np.sign(A[np.arange(self.d_out), np.abs(A).argmax(1)])[:, None]
        self.set(mean.astype(np.float32), A.astype(np.float32))

    def set(self, mean, A) -> None:
        self.mean = np.ascontiguousarray(check_array(mean, "pca mean", np.float32, (self.d_in,)))
        self.A = np.ascontiguousarray(check_array(A, "pca matrix", np.float32, (self.d_out, self.d_in)))

    def apply(self, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray((x - self.mean) @ self.A.T, dtype=np.float32)


class IndexPreTransform(Index):
    """``IndexPreTransform(PCAMatrix(d_in, d_out), index)``: vectors and queries go
    through the transform before ``index`` (of dimension d_out) sees them."""

    def __init__(self, transform: PCAMatrix, index: Index):
        if not isinstance(transform, PCAMatrix) or not isinstance(index, Index) or index.d != transform.d_out:
            raise InputError("IndexPreTransform takes a PCAMatrix(d_in, d_out) and an index of dimension d_out")
        super().__init__(transform.d_in, index.metric_type)
        self.chain = [transform]
        self.index = index

    @property
    def is_trained(self) -> bool:
        return self.chain[0].is_trained and self.index.is_trained

    @is_trained.setter
    def is_trained(self, value) -> None:
        pass

    def _train(self, x):
        if not self.chain[0].is_trained:
            self.chain[0].train(x)
        self.index.train(self.chain[0].apply(x))

    def _add(self, x, ids):
        y = self.chain[0].apply(x)
        if ids is None:
            self.index.add(y)
        else:
            self.index.add_with_ids(y, ids)

    def _search(self, xq, k, nt):
        self.index.n_threads = nt
        return self.index.search(self.chain[0].apply(xq), k)

    def reconstruct(self, key: int) -> np.ndarray:
        """Back-projection of the inner index's reconstruction (lossy: PCA drops dimensions)."""
        return self.index.reconstruct(key) @ self.chain[0].A + self.chain[0].mean

    def reconstruct_n(self, i0: int, n: int) -> np.ndarray:
        return self.index.reconstruct_n(i0, n) @ self.chain[0].A + self.chain[0].mean

    def _reset(self):
        self.index.reset()

    def _state(self):
        return {}, {"pca_mean": self.chain[0].mean, "pca_A": self.chain[0].A}

    def _load(self, params, arrays):
        self.chain[0].set(arrays["pca_mean"], arrays["pca_A"])
        if self.index.ntotal != self.ntotal:
            raise InvalidModelError(f"pre-transform: the inner index holds {self.index.ntotal} vectors, "
                                    f"expected {self.ntotal}")
