"""IndexFlatL2 / IndexFlatIP: exact search equals brute force (and faiss)."""
from __future__ import annotations

import numpy as np
import pytest
from test_search_reference import blobs, ref_topk

import fastml.search as fs
from fastml.errors import InputError


@pytest.mark.parametrize("metric", ["l2", "ip"])
@pytest.mark.parametrize("nq", [1, 7, 300])
def test_flat_equals_brute_force(metric, nq):
    x = blobs(9000 + nq, 32, seed=1)  # > one database block of 8192
    xb, xq = x[:9000], x[9000:]
    idx = fs.IndexFlatL2(32) if metric == "l2" else fs.IndexFlatIP(32)
    idx.add(xb)
    D, I = idx.search(xq, 10)
    xb64, xq64 = xb.astype(np.float64), xq.astype(np.float64)
    if metric == "l2":
        # float64 expansion: exact enough (1e-12 relative) for float32 data
        dist = (xq64 ** 2).sum(1)[:, None] + (xb64 ** 2).sum(1)[None] - 2 * xq64 @ xb64.T
        Dr, Ir = ref_topk(dist, 10)
    else:
        dist = xq64 @ xb64.T
        Dr, Ir = ref_topk(dist, 10, largest=True)
    np.testing.assert_allclose(D, Dr, rtol=1e-4, atol=1e-2)
    # ids equal brute force except near-ties within float32 rounding of the distance
    got = np.take_along_axis(dist, I, 1)
    np.testing.assert_allclose(got, Dr, rtol=1e-4, atol=1e-2)
    assert (I == Ir).mean() > 0.99


def test_flat_edge_cases():
    idx = fs.IndexFlatL2(4)
    q = np.ones((2, 4), np.float32)
    D, I = idx.search(q, 3)
    assert (I == -1).all() and (D == np.finfo(np.float32).max).all()
    idx.add(np.zeros((2, 4)))
    D, I = idx.search(q, 3)
    assert I.tolist() == [[0, 1, -1]] * 2 and D[0, 0] == 4.0
    ip = fs.IndexFlatIP(4)
    ip.add(np.eye(4))
    D, I = ip.search(q, 6)
    assert (I[:, 4:] == -1).all() and (D[:, 4:] == -np.finfo(np.float32).max).all()
    with pytest.raises(InputError, match="NaN"):
        idx.search(np.array([[np.inf, 0, 0, 0]]), 1)
    with pytest.raises(InputError):
        idx.add(np.array([["a", "b", "c", "d"]]))
    with pytest.raises(InputError, match="ids"):
        idx.add_with_ids(np.zeros((2, 4)), [1])
    assert idx.reconstruct(1).tolist() == [0, 0, 0, 0]
    with pytest.raises(InputError, match="not in the index"):
        idx.reconstruct(5)


def test_flat_matches_faiss():
    faiss = pytest.importorskip("faiss")
    x = blobs(5100, 32, seed=2)
    xb, xq = x[:5000], x[5000:]
    f = faiss.IndexFlatL2(32)
    f.add(xb)
    o = fs.IndexFlatL2(32)
    o.add(xb)
    Df, If = f.search(xq, 10)
    Do, Io = o.search(xq, 10)
    np.testing.assert_allclose(Do, Df, rtol=1e-4, atol=1e-2)
    assert (Io == If).mean() > 0.99


@pytest.mark.parametrize("metric", ["l2", "ip"])
@pytest.mark.parametrize("nq", [1, 5, 200])
@pytest.mark.parametrize("n_threads", [2, 3])
def test_flat_threaded_paths_equal_one_thread(metric, nq, n_threads):
    # 25,000 vectors: enough for the database split of few queries (>= 2 x 4,096 per thread)
    # and for query chunks of many; the second half repeats the first, so equal distances
    # straddle the split and must still come out smaller id first, as from one heap
    half = blobs(12_500, 16, seed=3)
    xb = np.concatenate([half, half])
    xq = blobs(nq, 16, seed=4)
    one = fs.IndexFlatL2(16) if metric == "l2" else fs.IndexFlatIP(16)
    one.add(xb)
    one.n_threads = 1
    many = fs.IndexFlatL2(16) if metric == "l2" else fs.IndexFlatIP(16)
    many.add(xb)
    many.n_threads = n_threads
    D1, I1 = one.search(xq, 7)
    Dn, In = many.search(xq, 7)
    np.testing.assert_array_equal(In, I1)
    np.testing.assert_array_equal(Dn, D1)
    # and against brute force (float64): every duplicate pair comes out as (i, i + 12,500)
    xb64, xq64 = xb.astype(np.float64), xq.astype(np.float64)
    dist = ((xq64[:, None, :] - xb64[None]) ** 2).sum(-1) if metric == "l2" else xq64 @ xb64.T
    Dr, Ir = ref_topk(dist, 7, largest=metric == "ip")
    np.testing.assert_allclose(np.take_along_axis(dist, In, 1), Dr, rtol=1e-4, atol=1e-2)
    np.testing.assert_array_equal(In[:, 1:6:2], In[:, 0:6:2] + 12_500)


def test_flat_search_restores_blas_threads():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    before = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    idx = fs.IndexFlatL2(16)
    idx.add(blobs(20_000, 16, seed=5))
    idx.n_threads = 2
    idx.search(blobs(300, 16, seed=6), 3)
    idx.search(blobs(1, 16, seed=6), 3)
    after = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    assert after == before
