"""Naive numpy references for fastml.search (plain loops and broadcasting, no
tricks), and the checks of those references against faiss where it is installed.

Other ``test_search_*`` modules import the references from here.
"""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_blobs


def blobs(n: int, d: int, seed: int = 0, centers: int = 3) -> np.ndarray:
    X, _ = make_blobs(n_samples=n, n_features=d, centers=centers, random_state=seed)
    return X.astype(np.float32)


def ref_encode(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """codes[i, m] = argmin_j |x_i,m - c_m,j|^2 (first on ties)."""
    M, ksub, dsub = centroids.shape
    xs = x.reshape(x.shape[0], M, dsub).astype(np.float64)
    d2 = ((xs[:, :, None, :] - centroids[None].astype(np.float64)) ** 2).sum(-1)  # (n, M, ksub)
    return d2.argmin(-1).astype(np.uint8)


def ref_tables(xq: np.ndarray, centroids: np.ndarray, ip: bool = False) -> np.ndarray:
    """(nq, M, ksub): |q_m - c_mj|^2, or q_m . c_mj for inner product."""
    M, ksub, dsub = centroids.shape
    qs = xq.reshape(xq.shape[0], M, dsub).astype(np.float64)
    if ip:
        return np.einsum("nmt,mjt->nmj", qs, centroids.astype(np.float64))
    return ((qs[:, :, None, :] - centroids[None].astype(np.float64)) ** 2).sum(-1)


def ref_adc(tables: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """(nq, n): sum over m of tables[q, m, codes[i, m]]."""
    M = codes.shape[1]
    return tables[:, np.arange(M)[None, :], codes.astype(np.intp)].sum(-1)


def ref_topk(dist: np.ndarray, k: int, largest: bool = False):
    """Top-k per row by (distance, id), as faiss orders ties; pads with -1."""
    nq, n = dist.shape
    D = np.full((nq, k), -np.inf if largest else np.inf)
    I = np.full((nq, k), -1, np.int64)
    for q in range(nq):
        key = -dist[q] if largest else dist[q]
        order = np.lexsort((np.arange(n), key))[:k]
        D[q, : len(order)] = dist[q, order]
        I[q, : len(order)] = order
    return D, I


def recall_at(I: np.ndarray, I_true: np.ndarray, k: int = 10) -> float:
    return float(np.mean([len(set(a[:k]) & set(b[:k])) / k for a, b in zip(I, I_true)]))


# ----------------------------------------------------------------- the references against faiss
faiss = pytest.importorskip("faiss")
faiss.omp_set_num_threads(1)  # a busy 2-core machine: spinning OpenMP threads of faiss slow it 5x


def test_reference_tables_and_encoding_match_faiss():
    x = blobs(3000, 32)
    pq = faiss.ProductQuantizer(32, 4, 8)
    pq.train(x)
    C = faiss.vector_to_array(pq.centroids).reshape(4, 256, 8)
    codes = pq.compute_codes(x[:200])
    assert (ref_encode(x[:200], C) == codes).mean() > 0.999  # float32 ties may differ
    T = np.empty((5, 4, 256), np.float32)
    pq.compute_distance_tables(5, faiss.swig_ptr(np.ascontiguousarray(x[:5])), faiss.swig_ptr(T))
    np.testing.assert_allclose(ref_tables(x[:5], C), T, rtol=1e-4, atol=1e-3)
