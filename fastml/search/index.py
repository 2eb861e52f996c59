"""The base class of every ``fastml.search`` index: the faiss-style API
(``train``, ``add``, ``add_with_ids``, ``search``, ``reconstruct``, ``reset``,
``ntotal``) with argument checks done once here, so subclasses and kernels see
only validated, C-contiguous float32 arrays."""
from __future__ import annotations

from typing import Tuple

import numpy as np

from fastml.errors import InputError
from ._common import METRICS, as_ids, as_vectors, check_positive_int, check_threads, need_trained


class Index:
    """Base class: ``d``, ``metric_type``, ``ntotal``, ``is_trained`` and the public methods.

    ``n_threads`` (``None``: every core this process may use) bounds the threads a
    batch search or ``add`` uses; one query always runs on the calling thread.
    """

    def __init__(self, d: int, metric: int):
        self.d = check_positive_int(d, "d")
        self.metric_type = metric
        self.ntotal = 0
        self.is_trained = False
        self.n_threads = None
        self.verbose = False
        self._ids = None  # None: ids are 0..ntotal-1

    # ------------------------------------------------------------ public API
    def train(self, x) -> None:
        """Learn the index's parameters (codebooks, coarse centroids) from ``x`` (n, d)."""
        x = as_vectors(x, self.d, "train: x")
        self._train(x)
        self.is_trained = True

    def add(self, x) -> None:
        """Add vectors with ids ntotal, ntotal + 1, ... (or the next ids after add_with_ids)."""
        x = as_vectors(x, self.d, "add: x")
        need_trained(self)
        ids = None
        if self._ids is not None:
            ids = np.arange(self.ntotal, self.ntotal + x.shape[0], dtype=np.int64)
        self._add(x, ids)
        self.ntotal += x.shape[0]

    def add_with_ids(self, x, ids) -> None:
        """Add vectors with the given int64 ids (>= 0); search returns these ids."""
        x = as_vectors(x, self.d, "add_with_ids: x")
        ids = as_ids(ids, x.shape[0])
        need_trained(self)
        if self._ids is None:
            self._ids = np.arange(self.ntotal, dtype=np.int64)
        self._add(x, ids)
        self.ntotal += x.shape[0]

    def search(self, x, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """The k nearest stored vectors of each query.

        Parameters
        ----------
        x : array_like, (nq, d)
            Queries (float; a 1-D array of length d is one query). NaN/inf raise
            :class:`fastml.errors.InputError`.
        k : int
            Neighbours per query. Where fewer than k exist, ids are -1 and distances
            +FLT_MAX (L2) or -FLT_MAX (inner product), as in faiss.

        Returns
        -------
        D : numpy.ndarray, float32 (nq, k)
            Squared L2 distances (ascending) or inner products (descending).
        I : numpy.ndarray, int64 (nq, k)
            Ids of the neighbours.
        """
        x = as_vectors(x, self.d, "search: x")
        k = check_positive_int(k, "k")
        need_trained(self)
        nt = 1 if x.shape[0] <= 1 else check_threads(self.n_threads)
        return self._search(x, k, nt)

    def reconstruct(self, key: int) -> np.ndarray:
        """The stored (or decoded) vector with id ``key``, float32 (d,)."""
        rows = self._rows_of([key])
        return self._reconstruct(rows)[0]

    def reconstruct_n(self, i0: int, n: int) -> np.ndarray:
        """Vectors with ids i0 .. i0 + n - 1, float32 (n, d)."""
        i0, n = check_positive_int(i0, "i0", zero_ok=True), check_positive_int(n, "n", zero_ok=True)
        return self._reconstruct(self._rows_of(range(i0, i0 + n))) if n else np.empty((0, self.d), np.float32)

    def reset(self) -> None:
        """Remove every vector (training is kept)."""
        self.ntotal = 0
        self._ids = None
        self._reset()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(d={self.d}, metric={METRICS[self.metric_type]}, ntotal={self.ntotal}, "
                f"is_trained={self.is_trained})")

    # ------------------------------------------------------------ helpers
    def _rows_of(self, keys) -> np.ndarray:
        """Storage rows (in add order) of user ids."""
        keys = np.asarray(list(keys))
        if keys.dtype.kind not in "iu":
            raise InputError(f"ids must be integers, got {keys.dtype}")
        if self._ids is None:
            bad = (keys < 0) | (keys >= self.ntotal)
            if bad.any():
                raise InputError(f"id {int(keys[bad][0])} is not in the index (ntotal={self.ntotal})")
            return keys.astype(np.int64)
        order = np.argsort(self._ids, kind="stable")
        pos = np.searchsorted(self._ids, keys, sorter=order)
        pos = np.minimum(pos, max(self.ntotal - 1, 0))
        found = (self.ntotal > 0) & (self._ids[order[pos]] == keys) if self.ntotal else np.zeros(len(keys), bool)
        if not np.all(found):
            raise InputError(f"id {int(keys[~found][0])} is not in the index")
        return order[pos]

    def _append_ids(self, ids) -> None:
        if self._ids is not None:
            self._ids = np.concatenate([self._ids, ids])

    def _map_ids(self, I: np.ndarray) -> np.ndarray:
        """Storage rows -> user ids (-1 stays -1)."""
        if self._ids is None:
            return I
        out = np.where(I >= 0, self._ids[np.maximum(I, 0)] if self.ntotal else -1, -1)
        return out.astype(np.int64)

    # subclasses implement these
    def _train(self, x: np.ndarray) -> None:
        pass

    def _add(self, x: np.ndarray, ids) -> None:
        raise NotImplementedError

    def _search(self, x: np.ndarray, k: int, nt: int):
        raise NotImplementedError

    def _reconstruct(self, rows: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _reset(self) -> None:
        raise NotImplementedError
