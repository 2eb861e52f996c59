"""Vector-search kernels for ``fastml.search``: exact top-k over BLAS inner
products, k-means assignment and PQ encoding, PQ distance tables, the ADC scan
(float, or uint8-quantized look-ups with AVX-512 VBMI / vpshufb and an exact
float re-rank) over flat and inverted-list code layouts, IVF-Flat scans, and the
exact re-ranking of scattered candidates (IndexRefineFlat).

The loops live in ``src/fm_pq.h``; its header comment explains the packed code
layout (blocks of 64 vectors), the table layout ``cbT[m][dsub][ksub]`` and the
loop order of every scan. This module only moves arrays: it takes
C-contiguous arrays the Python layer has already validated (shapes, code
ranges, list bounds), releases the GIL, and runs OpenMP ``prange`` over
queries (or over rows to encode). One query, or ``n_threads=1``, runs inline
on the calling thread: no thread start-up on the batch-1 path.
"""
import numpy as np

cimport numpy as cnp
from cython.parallel cimport prange
from libc.stdint cimport int32_t, int64_t, uint8_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

cnp.import_array()

cdef extern from "fm_pq.h" nogil:
    ctypedef struct fm_pq_codes:
        const uint8_t *packed
        const int64_t *ids
        Py_ssize_t M, nbits
    void fm_heap_init(float *hd, int64_t *hi, Py_ssize_t k)
    void fm_heap_sort(float *hd, int64_t *hi, Py_ssize_t k)
    void fm_topk_ip_block(const float *ip, Py_ssize_t ld, Py_ssize_t nq, Py_ssize_t nb, const float *norms,
                          int64_t base, Py_ssize_t k, float *HD, int64_t *HI)
    void fm_pq_tables(const float *x, Py_ssize_t M, Py_ssize_t dsub, Py_ssize_t ksub, const float *cbT,
                      int ip, float *T)
    void fm_pq_encode_one(const float *x, Py_ssize_t M, Py_ssize_t dsub, Py_ssize_t ksub, const float *cbT,
                          float *scratch, int32_t *code, float *dist)
    void fm_centroid_sums(const float *X, Py_ssize_t n, Py_ssize_t d, const int32_t *assign,
                          double *sums, int64_t *counts)
    void fm_scan_flat(const float *q, const float *X, Py_ssize_t n, Py_ssize_t d, int ip,
                      const int64_t *ids, Py_ssize_t k, float *hd, int64_t *hi)
    void fm_scan_rows(const float *q, const float *X, Py_ssize_t d, int ip, const int64_t *rows,
                      const int64_t *keys, Py_ssize_t n, Py_ssize_t k, float *hd, int64_t *hi)
    int fm_pq_search_one(const fm_pq_codes *C, Py_ssize_t nprobe, const float *Tf, const double *bias,
                         const int64_t *start, const int64_t *len, Py_ssize_t k, int mode,
                         float *D, int64_t *I)
    int fm_ivfpq_float_one(const fm_pq_codes *C, Py_ssize_t nprobe, const float *qtab, const float *pre,
                           const int64_t *lists, const float *coarse, const int64_t *lstart,
                           const int64_t *llen, Py_ssize_t k, float *Dk, int64_t *Ik)
    void fm_pq_finish(const fm_pq_codes *C, Py_ssize_t k, float *Dk, int64_t *Ik)
    int FM_PQ_SIMD8
    int FM_PQ_SIMD4

#: 1 where this build scans 8-bit (AVX-512 VBMI) / 4-bit (AVX-512BW) codes with SIMD look-ups
SIMD8 = FM_PQ_SIMD8
SIMD4 = FM_PQ_SIMD4
#: scan modes of ``pq_search`` / ``ivfpq_search`` (auto: float for short lists, else SIMD)
MODE_FLOAT, MODE_SCALAR, MODE_SIMD, MODE_AUTO = 0, 1, 2, 3


def heap_init(float[:, ::1] HD, int64_t[:, ::1] HI):
    """Fill (nq, k) heaps with (+inf, -1)."""
    cdef Py_ssize_t q
    for q in range(HD.shape[0]):
        fm_heap_init(&HD[q, 0], &HI[q, 0], HD.shape[1])


def heap_sort(float[:, ::1] HD, int64_t[:, ::1] HI):
    """Turn (nq, k) heaps into ascending rows, in place."""
    cdef Py_ssize_t q, nq = HD.shape[0], k = HD.shape[1]
    if k == 0:
        return
    with nogil:
        for q in range(nq):
            fm_heap_sort(&HD[q, 0], &HI[q, 0], k)


def topk_ip_block(const float[:, ::1] ip, norms, int64_t base, float[:, ::1] HD, int64_t[:, ::1] HI,
                  int n_threads=1):
    """Push one (nq, nb) block of inner products into the (nq, k) heaps.

    ``norms`` (float32, nb) selects L2 (``norms - 2 ip``); ``None`` selects inner
    product (``-ip``).
    """
    cdef Py_ssize_t nq = ip.shape[0], nb = ip.shape[1], k = HD.shape[1], q0, CH = 16
    cdef const float[::1] nv
    cdef const float *np_ = NULL
    if norms is not None:
        nv = norms
        np_ = &nv[0]
    if nq == 0 or nb == 0 or k == 0:
        return
    if n_threads <= 1 or nq <= CH:
        with nogil:
            fm_topk_ip_block(&ip[0, 0], nb, nq, nb, np_, base, k, &HD[0, 0], &HI[0, 0])
        return
    for q0 in prange(0, nq, CH, nogil=True, schedule="static", num_threads=n_threads):
        fm_topk_ip_block(&ip[q0, 0], nb, min(CH, nq - q0), nb, np_, base, k, &HD[q0, 0], &HI[q0, 0])


def pq_tables(const float[:, ::1] X, const float[:, :, ::1] cbT, bint ip, float[:, :, ::1] out,
              int n_threads=1):
    """Distance tables ``out[i, m, j]`` = ||x_m - c_mj||^2 (or -x_m.c_mj); cbT is (M, dsub, ksub)."""
    cdef Py_ssize_t n = X.shape[0], M = cbT.shape[0], dsub = cbT.shape[1], ksub = cbT.shape[2], i
    if n == 0:
        return
    if n_threads <= 1 or n < 8:
        with nogil:
            for i in range(n):
                fm_pq_tables(&X[i, 0], M, dsub, ksub, &cbT[0, 0, 0], ip, &out[i, 0, 0])
        return
    for i in prange(n, nogil=True, schedule="static", num_threads=n_threads):
        fm_pq_tables(&X[i, 0], M, dsub, ksub, &cbT[0, 0, 0], ip, &out[i, 0, 0])


def pq_encode(const float[:, ::1] X, const float[:, :, ::1] cbT, int32_t[:, ::1] codes, dist=None,
              int n_threads=1):
    """Nearest centroid per sub-quantizer (first on ties) for each row of X.

    ``dist`` (float32, n), when given, receives the squared quantization error.
    With M = 1 this is the k-means assignment step.
    """
    cdef Py_ssize_t n = X.shape[0], M = cbT.shape[0], dsub = cbT.shape[1], ksub = cbT.shape[2], i0, i, CH = 256
    cdef float[::1] dv
    cdef float *dp = NULL
    cdef float *scratch
    if dist is not None:
        dv = dist
        dp = &dv[0]
    if n == 0:
        return
    if n_threads <= 1 or n <= CH:
        with nogil:
            scratch = <float *> malloc(ksub * sizeof(float))
            if scratch == NULL:
                with gil:
                    raise MemoryError()
            for i in range(n):
                fm_pq_encode_one(&X[i, 0], M, dsub, ksub, &cbT[0, 0, 0], scratch, &codes[i, 0],
                                 dp + i if dp != NULL else NULL)
            free(scratch)
        return
    for i0 in prange(0, n, CH, nogil=True, schedule="dynamic", num_threads=n_threads):
        scratch = <float *> malloc(ksub * sizeof(float))
        if scratch == NULL:
            continue  # codes stay -1: the caller checks
        for i in range(i0, min(i0 + CH, n)):
            fm_pq_encode_one(&X[i, 0], M, dsub, ksub, &cbT[0, 0, 0], scratch, &codes[i, 0],
                             dp + i if dp != NULL else NULL)
        free(scratch)


def centroid_sums(const float[:, ::1] X, const int32_t[::1] assign, Py_ssize_t k):
    """Per-centroid sums (float64, (k, d)) and counts (int64, k) of the rows of X."""
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1]
    sums = np.zeros((k, d), np.float64)
    counts = np.zeros(k, np.int64)
    cdef double[:, ::1] sv = sums
    cdef int64_t[::1] cv = counts
    if n:
        with nogil:
            fm_centroid_sums(&X[0, 0], n, d, &assign[0], &sv[0, 0], &cv[0])
    return sums, counts


cdef int _pq_one(const fm_pq_codes *C, const float *T, Py_ssize_t nprobe, const float *qtab,
                 const float *pre, Py_ssize_t per_list, const int64_t *lists, const float *coarse,
                 const int64_t *lstart, const int64_t *llen, Py_ssize_t k, int mode,
                 float *D, int64_t *I) noexcept nogil:
    """One query over ``np`` probes: builds per-probe tables (``pre[list] + qtab``)
    unless ``T`` is given (flat PQ, one probe)."""
    cdef Py_ssize_t p, j, l
    cdef int rc
    cdef float *Tf
    cdef double *bias
    cdef int64_t *st
    cdef int64_t *ln
    cdef double zero = 0.0
    cdef int64_t s0 = 0, n0
    cdef int64_t total = 0
    if T != NULL:
        n0 = llen[0]
        return fm_pq_search_one(C, 1, T, &zero, &s0, &n0, k, mode, D, I)
    if mode == 3:  # auto: short lists are scanned in float (see fm_pq_search_one)
        for p in range(nprobe):
            if lists[p] >= 0:
                total += llen[lists[p]]
        if total < nprobe * 2 * (1 << C.nbits):
            mode = 0
    if mode == 0:
        fm_heap_init(D, I, k)
        rc = fm_ivfpq_float_one(C, nprobe, qtab, pre, lists, coarse, lstart, llen, k, D, I)
        fm_pq_finish(C, k, D, I)
        return rc
    Tf = <float *> malloc(nprobe * per_list * sizeof(float) + 1)
    bias = <double *> malloc(nprobe * sizeof(double) + 1)
    st = <int64_t *> malloc(nprobe * sizeof(int64_t) + 1)
    ln = <int64_t *> malloc(nprobe * sizeof(int64_t) + 1)
    if Tf == NULL or bias == NULL or st == NULL or ln == NULL:
        free(Tf); free(bias); free(st); free(ln)
        return -1
    for p in range(nprobe):
        l = lists[p]
        bias[p] = coarse[p]
        if l < 0:
            st[p] = 0
            ln[p] = 0
            bias[p] = 0.0
            memcpy(Tf + p * per_list, qtab, per_list * sizeof(float))
            continue
        st[p] = lstart[l]
        ln[p] = llen[l]
        if pre != NULL:
            for j in range(per_list):
                Tf[p * per_list + j] = pre[l * per_list + j] + qtab[j]
        else:
            memcpy(Tf + p * per_list, qtab, per_list * sizeof(float))
    rc = fm_pq_search_one(C, nprobe, Tf, bias, st, ln, k, mode, D, I)
    free(Tf); free(bias); free(st); free(ln)
    return rc


def pq_search(const float[:, :, ::1] tables, const uint8_t[::1] packed, const int64_t[::1] ids,
              Py_ssize_t M, int nbits, Py_ssize_t ntotal, Py_ssize_t k, int mode,
              float[:, ::1] D, int64_t[:, ::1] I, int n_threads=1):
    """ADC search of every query (its (M, ksub) table) over ``ntotal`` packed codes."""
    cdef fm_pq_codes C
    cdef Py_ssize_t nq = tables.shape[0], q
    cdef int bad = 0
    cdef int64_t n = ntotal
    C.packed = &packed[0]
    C.ids = &ids[0] if ids.shape[0] else NULL
    C.M = M
    C.nbits = nbits
    if nq == 0 or k == 0:
        return
    if n_threads <= 1 or nq == 1:
        with nogil:
            for q in range(nq):
                bad |= _pq_one(&C, &tables[q, 0, 0], 1, NULL, NULL, 0, NULL, NULL, NULL, &n, k, mode,
                               &D[q, 0], &I[q, 0])
    else:
        for q in prange(nq, nogil=True, schedule="dynamic", num_threads=n_threads):
            bad |= _pq_one(&C, &tables[q, 0, 0], 1, NULL, NULL, 0, NULL, NULL, NULL, &n, k, mode,
                           &D[q, 0], &I[q, 0])
    if bad:
        raise MemoryError("fastml.search: out of memory in the PQ scan")


def ivfpq_search(const float[:, :, ::1] qtables, precomp, const int64_t[:, ::1] lists,
                 const float[:, ::1] coarse, const int64_t[::1] lstart, const int64_t[::1] llen,
                 const uint8_t[::1] packed, const int64_t[::1] ids, Py_ssize_t M, int nbits,
                 Py_ssize_t k, int mode, float[:, ::1] D, int64_t[:, ::1] I, int n_threads=1):
    """IVF-PQ search: probe p of query q scans list ``lists[q, p]`` (-1: none) with
    tables ``precomp[list] + qtables[q]`` (precomp None: qtables alone) and
    bias ``coarse[q, p]``."""
    cdef fm_pq_codes C
    cdef Py_ssize_t nq = qtables.shape[0], nprobe = lists.shape[1], q
    cdef Py_ssize_t per_list = qtables.shape[1] * qtables.shape[2]
    cdef const float[:, :, ::1] pv
    cdef const float *pre = NULL
    cdef int bad = 0
    if precomp is not None:
        pv = precomp
        pre = &pv[0, 0, 0]
    C.packed = &packed[0]
    C.ids = &ids[0] if ids.shape[0] else NULL
    C.M = M
    C.nbits = nbits
    if nq == 0 or k == 0 or nprobe == 0:
        return
    if n_threads <= 1 or nq == 1:
        with nogil:
            for q in range(nq):
                bad |= _pq_one(&C, NULL, nprobe, &qtables[q, 0, 0], pre, per_list, &lists[q, 0], &coarse[q, 0],
                               &lstart[0], &llen[0], k, mode, &D[q, 0], &I[q, 0])
    else:
        for q in prange(nq, nogil=True, schedule="dynamic", num_threads=n_threads):
            bad |= _pq_one(&C, NULL, nprobe, &qtables[q, 0, 0], pre, per_list, &lists[q, 0], &coarse[q, 0],
                           &lstart[0], &llen[0], k, mode, &D[q, 0], &I[q, 0])
    if bad:
        raise MemoryError("fastml.search: out of memory in the IVF-PQ scan")


cdef void _flat_one(const float *q, Py_ssize_t d, int ip, Py_ssize_t nprobe, const int64_t *lists,
                    const float *X, const int64_t *ids, const int64_t *off, Py_ssize_t k,
                    float *D, int64_t *I) noexcept nogil:
    cdef Py_ssize_t p
    cdef int64_t l
    fm_heap_init(D, I, k)
    for p in range(nprobe):
        l = lists[p]
        if l < 0:
            continue
        fm_scan_flat(q, X + off[l] * d, off[l + 1] - off[l], d, ip, ids + off[l], k, D, I)
    fm_heap_sort(D, I, k)


def ivfflat_search(const float[:, ::1] xq, const int64_t[:, ::1] lists, const float[:, ::1] X,
                   const int64_t[::1] ids, const int64_t[::1] off, bint ip, Py_ssize_t k,
                   float[:, ::1] D, int64_t[:, ::1] I, int n_threads=1):
    """IVF-Flat search: exact distances to the vectors of each probed list
    (``X[off[l]:off[l+1]]``, ids alike)."""
    cdef Py_ssize_t nq = xq.shape[0], d = xq.shape[1], nprobe = lists.shape[1], q
    cdef const float *xp = &X[0, 0] if X.shape[0] else NULL
    cdef const int64_t *idp = &ids[0] if ids.shape[0] else NULL
    if nq == 0 or k == 0:
        return
    if n_threads <= 1 or nq == 1:
        with nogil:
            for q in range(nq):
                _flat_one(&xq[q, 0], d, ip, nprobe, &lists[q, 0], xp, idp, &off[0], k, &D[q, 0], &I[q, 0])
    else:
        for q in prange(nq, nogil=True, schedule="dynamic", num_threads=n_threads):
            _flat_one(&xq[q, 0], d, ip, nprobe, &lists[q, 0], xp, idp, &off[0], k, &D[q, 0], &I[q, 0])


cdef void _refine_one(const float *q, const float *X, Py_ssize_t d, int ip, const int64_t *rows,
                      const int64_t *keys, Py_ssize_t n, Py_ssize_t k, float *D, int64_t *I) noexcept nogil:
    fm_heap_init(D, I, k)
    fm_scan_rows(q, X, d, ip, rows, keys, n, k, D, I)
    fm_heap_sort(D, I, k)


def refine_search(const float[:, ::1] xq, const float[:, ::1] X, const int64_t[:, ::1] rows,
                  const int64_t[:, ::1] keys, bint ip, float[:, ::1] D, int64_t[:, ::1] I, int n_threads=1):
    """Exact re-ranking of candidates: for query q, the ``k = D.shape[1]`` best of the rows
    ``X[rows[q, j]]`` (``rows < 0``: none; every other row < len(X), checked by the caller),
    reported under the ids ``keys[q, j]``, ascending (ties: smaller id first)."""
    cdef Py_ssize_t nq = xq.shape[0], d = xq.shape[1], n = rows.shape[1], k = D.shape[1], q
    cdef const float *xp = &X[0, 0] if X.shape[0] else NULL
    if nq == 0 or k == 0:
        return
    if xp == NULL:
        n = 0
    if n_threads <= 1 or nq == 1:
        with nogil:
            for q in range(nq):
                _refine_one(&xq[q, 0], xp, d, ip, &rows[q, 0] if n else NULL, &keys[q, 0] if n else NULL,
                            n, k, &D[q, 0], &I[q, 0])
    else:
        for q in prange(nq, nogil=True, schedule="static", num_threads=n_threads):
            _refine_one(&xq[q, 0], xp, d, ip, &rows[q, 0] if n else NULL, &keys[q, 0] if n else NULL,
                        n, k, &D[q, 0], &I[q, 0])
