"""Quantized tree-ensemble kernel: rows binned to uint16 threshold indexes, then
trees walked on 8-byte node records; raw scores and leaves identical to
``_trees.ForestKernel``'s.

The loops live in ``src/fm_qtrees.h`` (its header comment explains the cuts,
the bins, the node records and the loop order). This module holds the plan's
arrays, splits batches into blocks of rows, runs blocks on OpenMP threads with
the GIL released, and runs small batches inline. The plan (node order, cuts,
records) is built in Python by ``fastml/backends/native_qtrees.py``.
"""
import numpy as np

cimport numpy as cnp
from cython.parallel cimport prange
from libc.stdint cimport int32_t, int64_t, uint32_t

cnp.import_array()

from _trees_decl cimport FM_G, FM_GT, FM_LOCKSTEP_MAX, fm_forest, fm_forest_scan

cdef extern from "fm_qtrees.h" nogil:
    ctypedef struct fm_qnode:
        pass
    ctypedef struct fm_qforest:
        fm_forest f
        const fm_qnode *nodes
        const float *cuts32
        const double *cuts64
        const int64_t *cut_off
        const int32_t *steps
        Py_ssize_t F, S
        int cmp64
    int fm_qforest_rows(const fm_qforest *q, int xf32, const void *X, Py_ssize_t rs, Py_ssize_t i0,
                        Py_ssize_t i1, double *out, Py_ssize_t ld, int32_t *leaves, int post, double *pout)
    int FM_QBLOCK
    unsigned FM_QNAN

cdef enum:
    PARALLEL_MIN = 64    # fewer rows run inline on the calling thread

#: the 8-byte node record: bits 0-15 cut index, 16-30 feature, 31 NaN goes left; left child
QNODE = np.dtype([("fk", np.uint32), ("child", np.int32)])
#: the bin of NaN (above every real bin); a feature may have at most QNAN - 1 cuts
QNAN = FM_QNAN
LOCKSTEP_MAX = FM_LOCKSTEP_MAX
POST_LOGISTIC2 = 1


cdef inline const void *_ptr(object a):
    return NULL if a is None else cnp.PyArray_DATA(<cnp.ndarray>a)


cdef class QForestKernel:
    """A compiled quantized tree ensemble, with ``_trees.ForestKernel``'s ``run`` contract:
    ``run(X, out, col, leaves, n_threads, scan, post)`` returns -1 when X is not in kernel
    layout, the NaN (bit 0) / inf (bit 1) bits when ``scan`` finds them, else 0."""

    cdef fm_qforest q
    cdef readonly object nodes, cuts, cut_off, root, depth, gdepth, target, value, base
    cdef readonly Py_ssize_t n_features, n_trees, n_targets
    cdef readonly bint compare64

    def __init__(self, nodes, cuts, cut_off, root, depth, target, value, base, *, compare64, average=False,
                 logistic_scale=1.0):
        c = np.ascontiguousarray
        self.nodes = c(nodes, dtype=QNODE)
        self.compare64 = bool(compare64)
        # one pad cut at the end: a feature with no cut may read it (fm_qtrees.h)
        cuts = np.asarray(cuts, dtype=np.float64 if self.compare64 else np.float32)
        self.cuts = c(np.concatenate([cuts.reshape(-1), np.zeros(1, cuts.dtype)]))
        self.cut_off = c(cut_off, dtype=np.int64)
        self.root = c(root, dtype=np.int32)
        self.depth = c(depth, dtype=np.int32)
        nt = self.root.shape[0]
        pad = (-nt) % FM_GT
        self.gdepth = c(np.concatenate([self.depth, np.zeros(pad, np.int32)]).reshape(-1, FM_GT).max(axis=1),
                        dtype=np.int32)
        self.target = None if target is None else c(target, dtype=np.int32)
        self.value = c(value, dtype=np.float64)
        self.base = c(base, dtype=np.float64)
        F = self.cut_off.shape[0] - 1
        n_nodes = self.nodes.shape[0]
        counts = np.diff(self.cut_off)
        # the kernel trusts these: every index it forms from them stays in bounds
        if (F < 1 or F >= 1 << 15 or self.cut_off[0] != 0 or np.any(counts < 0) or np.any(counts >= FM_QNAN)
                or self.cut_off[F] != self.cuts.shape[0] - 1 or self.depth.shape[0] != nt or nt < 1
                or self.value.ndim != 2 or self.value.shape[0] != n_nodes
                or (self.target is not None and self.target.shape[0] != nt)):
            raise ValueError("QForestKernel: inconsistent plan arrays")
        fk = self.nodes["fk"]
        ch = self.nodes["child"]
        feat = (fk >> 16) & 0x7FFF
        k = fk & 0xFFFF
        split = k != 0xFFFF
        if (np.any(feat >= F) or np.any(split & (k >= counts[np.minimum(feat, F - 1)]))
                or np.any(ch < 0) or np.any(ch + split.astype(np.int64) >= n_nodes)
                or np.any(self.root < 0) or np.any(self.root >= n_nodes)):
            raise ValueError("QForestKernel: a node record points out of range")
        if self.target is not None and (np.any(self.target < 0) or np.any(self.target >= self.base.shape[0])):
            raise ValueError("QForestKernel: a tree target is out of range")
        self.n_features = F
        self.n_trees = nt
        self.n_targets = self.base.shape[0]
        q = &self.q
        q.f.nodes = NULL
        q.f.root = <const int32_t *>_ptr(self.root)
        q.f.depth = <const int32_t *>_ptr(self.depth)
        q.f.gdepth = <const int32_t *>_ptr(self.gdepth)
        q.f.target = <const int32_t *>_ptr(self.target)
        q.f.value = <const double *>_ptr(self.value)
        q.f.base = <const double *>_ptr(self.base)
        q.f.cat_off = NULL
        q.f.cat_nw = NULL
        q.f.cat_bits = NULL
        q.f.n_trees = nt
        q.f.n_nodes = n_nodes
        q.f.max_depth = int(self.depth.max())
        q.f.W = self.value.shape[1]
        q.f.T = self.n_targets
        q.f.average = bool(average)
        q.f.cat_exact = 0
        q.f.post_scale = logistic_scale
        q.nodes = <const fm_qnode *>_ptr(self.nodes)
        q.cuts32 = NULL if self.compare64 else <const float *>_ptr(self.cuts)
        q.cuts64 = <const double *>_ptr(self.cuts) if self.compare64 else NULL
        q.cut_off = <const int64_t *>_ptr(self.cut_off)
        q.steps = NULL
        q.F = F
        q.S = F + 1 + (F + 1) % 2  # room for the 32-bit read of the last bin; even
        q.cmp64 = self.compare64

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays the kernel walks (records, cuts, leaf values)."""
        return int(self.nodes.nbytes + self.cuts.nbytes + self.cut_off.nbytes + self.value.nbytes)

    def run(self, X, cnp.ndarray out, Py_ssize_t col=0, leaves=None, int n_threads=1, bint scan=False,
            int post=0):
        cdef cnp.ndarray x
        if type(X) is not np.ndarray:
            return -1
        x = <cnp.ndarray>X
        if x.ndim != 2 or x.shape[1] != self.n_features:
            return -1
        cdef int xf32, domain
        cdef Py_ssize_t itemsize
        if x.dtype == np.float32:
            xf32, domain, itemsize = 1, 0, 4
        elif x.dtype == np.float64:
            xf32, domain, itemsize = 0, (2 if self.compare64 else 1), 8
        else:
            return -1
        cdef Py_ssize_t n = x.shape[0]
        if (x.strides[1] != itemsize and self.n_features > 1) or x.strides[0] % itemsize:
            return -1
        if out.dtype != np.float64 or out.ndim != 2 or out.shape[0] != n \
                or out.shape[1] < col + self.n_targets or out.strides[1] != 8 or out.strides[0] % 8:
            raise ValueError("QForestKernel.run: out must be float64 (n, >= col + n_targets) with unit column stride")
        if post == POST_LOGISTIC2 and (col != 1 or self.n_targets != 1):
            raise ValueError("QForestKernel.run: POST_LOGISTIC2 needs one target written at col=1")
        cdef int32_t *lv = NULL
        if leaves is not None:
            if (leaves.dtype != np.int32 or leaves.shape != (n, self.n_trees)
                    or not leaves.flags.c_contiguous):
                raise ValueError("QForestKernel.run: leaves must be C-contiguous int32 (n, n_trees)")
            lv = <int32_t *>cnp.PyArray_DATA(<cnp.ndarray>leaves)
        if n == 0:
            return -1
        cdef int found
        cdef Py_ssize_t rs = x.strides[0] // itemsize
        if scan:
            with nogil:
                found = fm_forest_scan(domain, cnp.PyArray_DATA(x), rs, n, self.n_features)
            if found:
                return found
        cdef const fm_qforest *q = &self.q
        cdef const void *xp = cnp.PyArray_DATA(x)
        cdef double *op = <double *>cnp.PyArray_DATA(out) + col
        cdef Py_ssize_t ld = out.strides[0] // 8
        cdef double *pp = <double *>cnp.PyArray_DATA(out) + (0 if post == POST_LOGISTIC2 else col)
        cdef Py_ssize_t nb, b, block
        cdef int nt = max(1, n_threads), err = 0
        if n < PARALLEL_MIN or nt == 1:
            with nogil:
                err = fm_qforest_rows(q, xf32, xp, rs, 0, n, op, ld, lv, post, pp)
        else:
            # a few blocks per thread so that dynamic scheduling balances them
            block = min(<Py_ssize_t>FM_QBLOCK, max(<Py_ssize_t>32, (n + 4 * nt - 1) // (4 * nt)))
            nb = (n + block - 1) // block
            for b in prange(nb, nogil=True, num_threads=nt, schedule="dynamic"):
                err += fm_qforest_rows(q, xf32, xp, rs, b * block, min(n, (b + 1) * block), op, ld, lv, post, pp)
        if err:
            raise MemoryError("QForestKernel.run: no memory for the bins of a block of rows")
        return 0
