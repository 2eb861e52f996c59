"""IndexIVFFlat / IndexIVFPQ / IndexRefineFlat / PCA pre-transform / index_factory:
naive references for what the kernels compute, recall against faiss."""
from __future__ import annotations

import numpy as np
import pytest
from test_search_reference import blobs, recall_at, ref_topk

import fastml.search as fs
from fastml.errors import InputError
from fastml.search.factory import index_factory
from fastml.search.refine import IndexPreTransform, IndexRefineFlat, PCAMatrix


@pytest.fixture(scope="module")
def data():
    x = blobs(8300, 32)
    return x[:8000], x[8000:]


@pytest.fixture(scope="module")
def exact(data):
    xb, xq = data
    q64, b64 = xq.astype(np.float64), xb.astype(np.float64)
    return fs.IndexFlatL2(32), ref_topk((q64 ** 2).sum(1)[:, None] + (b64 ** 2).sum(1)[None] - 2 * q64 @ b64.T, 10)[1]


def _probed_reference(index, xq, vectors, k=10, ip=False):
    """Brute force restricted to the cells the coarse quantizer picks."""
    _, L = index.quantizer.search(xq, index.nprobe)
    if ip:
        dist = -(xq.astype(np.float64) @ vectors.T.astype(np.float64))
    else:
        q64, v64 = xq.astype(np.float64), vectors.astype(np.float64)
        dist = (q64 ** 2).sum(1)[:, None] + (v64 ** 2).sum(1)[None] - 2 * q64 @ v64.T
    for q in range(len(xq)):
        dist[q, ~np.isin(index.list_no, L[q])] = np.inf
    return ref_topk(dist, k)


@pytest.mark.parametrize("metric", [fs.METRIC_L2, fs.METRIC_INNER_PRODUCT])
def test_ivfflat_equals_probed_brute_force(data, metric):
    xb, xq = data
    idx = fs.IndexIVFFlat(fs.IndexFlat(32, metric), 32, 32, metric)
    idx.niter = 10
    idx.train(xb)
    idx.add(xb)
    idx.nprobe = 4
    D, I = idx.search(xq, 10)
    ip = metric == fs.METRIC_INNER_PRODUCT
    Dr, Ir = _probed_reference(idx, xq, xb, ip=ip)
    np.testing.assert_allclose(-D if ip else D, Dr, rtol=1e-4, atol=1e-2)
    assert (I == Ir).mean() > 0.99


@pytest.mark.parametrize("nbits", [8, 4])
def test_ivfpq_equals_probed_adc_reference(data, nbits):
    xb, xq = data
    idx = fs.IndexIVFPQ(fs.IndexFlatL2(32), 32, 32, 8, nbits)
    idx.niter = 10
    idx.pq.niter = 10
    idx.train(xb)
    idx.add(xb)
    idx.nprobe = 5
    # ADC on residuals = exact distance to the reconstruction c + decode(code)
    Dr, Ir = _probed_reference(idx, xq, idx.reconstruct_n(0, idx.ntotal))
    for mode in ("float", "scalar", "simd"):
        idx.search_mode = mode
        D, I = idx.search(xq, 10)
        np.testing.assert_allclose(D, Dr, rtol=1e-4, atol=2e-2)
        assert (I == Ir).mean() > 0.99


def test_ivf_edge_cases(data):
    xb, xq = data
    idx = fs.IndexIVFPQ(fs.IndexFlatL2(32), 32, 8, 4, 8)
    idx.train(xb[:3000])
    D, I = idx.search(xq[:2], 5)  # empty
    assert (I == -1).all()
    idx.add(xb[:3])
    idx.nprobe = 100  # more than nlist: every cell
    D, I = idx.search(xq[:2], 5)
    assert sorted(I[0, :3]) == [0, 1, 2] and (I[:, 3:] == -1).all()
    with pytest.raises(InputError, match="quantizer"):
        fs.IndexIVFFlat(fs.IndexFlatL2(16), 32, 8)
    with pytest.raises(InputError, match="at least"):
        fs.IndexIVFFlat(fs.IndexFlatL2(32), 32, 64).train(xb[:10])


def test_refine_raises_recall_and_reranks_exactly(data, exact):
    xb, xq = data
    _, I0 = exact
    base = fs.IndexPQ(32, 4, 4)
    base.train(xb)
    ref = IndexRefineFlat(base, k_factor=8)
    ref.add(xb)
    D, I = ref.search(xq, 10)
    assert recall_at(I, I0) > recall_at(base.search(xq, 10)[1], I0) + 0.1
    want = ((xq[:, None, :] - xb[I]) ** 2).sum(-1)
    np.testing.assert_allclose(D, want, rtol=1e-5, atol=1e-3)
    assert np.all(np.diff(D, axis=1) >= 0)


@pytest.mark.parametrize("metric", ["l2", "ip"])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_refine_equals_naive_rerank_of_the_base_candidates(data, metric, n_threads):
    xb, xq = data
    xb = np.concatenate([xb[:300], xb[:300]])            # duplicates: equal distances, smaller id first
    ids = np.arange(xb.shape[0], dtype=np.int64)[::-1] * 3 + 7  # user ids in another order than rows
    base = fs.IndexPQ(32, 4, 8, metric=metric)
    base.train(xb)
    ref = IndexRefineFlat(base, k_factor=4)
    ref.add_with_ids(xb, ids)
    ref.n_threads = n_threads
    D, I = ref.search(xq, 10)
    _, Ib = base.search(xq, 40)
    row_of = {int(u): r for r, u in enumerate(ids)}
    agree = []
    x64, q64 = xb.astype(np.float64), xq.astype(np.float64)
    for q in range(xq.shape[0]):
        rows = np.array([row_of[int(u)] for u in Ib[q]])
        dist = ((x64[rows] - q64[q]) ** 2).sum(1) if metric == "l2" else -(x64[rows] @ q64[q])
        order = np.lexsort((Ib[q], dist))[:10]
        np.testing.assert_allclose(D[q], dist[order] if metric == "l2" else -dist[order], rtol=1e-5, atol=1e-3)
        same = np.isclose(dist[order], np.sort(dist)[:10], rtol=1e-6, atol=1e-4)
        assert same.all()
        agree.append((I[q] == Ib[q][order]).mean())
    # ids equal the naive order (exact ties: smaller id) except where float32 and float64
    # order a near-tie differently
    assert np.mean(agree) > 0.98
    small = IndexRefineFlat(fs.IndexFlatL2(32), k_factor=2)
    small.add(xb[:3])
    Ds, Is = small.search(xq[:2], 5)
    assert (Is[:, 3:] == -1).all() and (Ds[:, 3:] == np.finfo(np.float32).max).all()
    assert (Is[:, :3] >= 0).all()


def test_pca_pretransform(data):
    xb, xq = data
    pca = PCAMatrix(32, 8)
    idx = IndexPreTransform(pca, fs.IndexFlatL2(8))
    idx.train(xb)
    idx.add(xb)
    y = (xb.astype(np.float64) - xb.mean(0)) @ np.linalg.svd(xb - xb.mean(0), full_matrices=False)[2][:8].T
    # the same subspace as numpy's SVD (signs may differ)
    np.testing.assert_allclose(np.abs(pca.apply(xb)), np.abs(y), rtol=1e-3, atol=1e-2)
    D, I = idx.search(xq, 5)
    Dr, Ir = fs.knn(pca.apply(xq), pca.apply(xb), 5)
    np.testing.assert_array_equal(I, Ir)
    with pytest.raises(InputError, match="d_out"):
        PCAMatrix(8, 16)


@pytest.mark.parametrize("desc,kind", [
    ("Flat", "IndexFlat"), ("PQ16", "IndexPQ"), ("PQ32x4fs", "IndexPQFastScan"), ("PQ8x4", "IndexPQ"),
    ("IVF256,Flat", "IndexIVFFlat"), ("IVF256,PQ16", "IndexIVFPQ"), ("PCA64,IVF256,PQ16", "IndexPreTransform"),
    ("IVF256,PQ16,RFlat", "IndexRefineFlat"), ("PQ16,Refine(Flat)", "IndexRefineFlat")])
def test_factory_strings(desc, kind):
    assert type(index_factory(128, desc)).__name__ == kind


@pytest.mark.parametrize("desc,msg", [("HNSW32", "cannot read"), ("IVF256,SQ8", "cannot read"),
                                      ("PQ7", "multiple of M"), ("PQ16x5", "nbits"), ("PCAx", "PCA")])
def test_factory_errors(desc, msg):
    with pytest.raises(InputError, match=msg):
        index_factory(128, desc)


# ----------------------------------------------------------------- recall against faiss
faiss = pytest.importorskip("faiss")
faiss.omp_set_num_threads(1)  # a busy 2-core machine: spinning OpenMP threads of faiss slow it 5x


def test_ivf_recall_matches_faiss(data):
    xb, xq = data
    f0 = faiss.IndexFlatL2(32)
    f0.add(xb)
    _, I0 = f0.search(xq, 10)
    ours, theirs = {}, {}
    for seed in (1, 2):
        for desc in ("IVF32,Flat", "IVF32,PQ8x4"):
            f = faiss.index_factory(32, desc)
            fi = faiss.downcast_index(faiss.extract_index_ivf(f))
            fi.cp.seed = seed
            fi.cp.niter = 10
            if "PQ" in desc:
                fi.pq.cp.seed = seed
                fi.pq.cp.niter = 10
            f.train(xb)
            f.add(xb)
            fi.nprobe = 4
            theirs.setdefault(desc, []).append(recall_at(f.search(xq, 10)[1], I0))
            o = index_factory(32, desc)
            o.seed, o.niter = seed, 10
            if "PQ" in desc:
                o.pq.seed, o.pq.niter = seed, 10
            o.train(xb)
            o.add(xb)
            o.nprobe = 4
            ours.setdefault(desc, []).append(recall_at(o.search(xq, 10)[1], I0))
    for desc in ours:
        assert abs(np.mean(ours[desc]) - np.mean(theirs[desc])) <= 0.01 + 0.005, (desc, ours, theirs)
