"""Tree-ensemble kernel: raw scores (base + sum of leaf values, averaged if asked)
and leaf indices, for float32 or float64 input.

The loops live in ``src/fm_trees.h`` (its header comment explains the node
layout, the lockstep walks and the loop order). This module holds the plan's
arrays, splits batches into blocks of rows, runs blocks on OpenMP threads
with the GIL released, and runs small batches inline with no thread start-up.
The plan itself (node order, rounded thresholds) is built in Python by
``fastml/backends/_tree_plan.py``. Node records can be built on first use:
given ``build`` instead of the records, ``run`` calls ``build(32)`` on its first
call that compares in float32 and ``build(64)`` on its first call that compares
in float64, once each, under a lock; the records' pointer is published after
they are filled (release store, acquire load in ``run``), so a call either finds
them complete or builds / waits for them. Once built, the check is one pointer
test.
"""
import threading

import numpy as np

cimport numpy as cnp
from cython.parallel cimport prange
from libc.stdint cimport int32_t, int64_t, uint32_t

cnp.import_array()

from _trees_decl cimport FM_G, FM_GT, FM_LOCKSTEP_MAX, fm_forest, fm_forest_scan

cdef extern from "fm_trees.h" nogil:
    void fm_forest_rows(const fm_forest *f, int domain, const void *X, Py_ssize_t rs,
                        Py_ssize_t i0, Py_ssize_t i1, double *out, Py_ssize_t ld, int32_t *leaves)
    void fm_forest_post(const fm_forest *f, int kind, double *out, Py_ssize_t ld, Py_ssize_t i0, Py_ssize_t i1)
    const void *fm_forest_nodes(const fm_forest *f)
    void fm_forest_set_nodes(fm_forest *f, const void *nodes)

cdef enum:
    BLOCK = 64           # rows per task (a block of X stays in cache while every tree walks it)
    PARALLEL_MIN = 64    # fewer rows run inline on the calling thread

#: trees deeper than this are walked to their leaf rather than in lockstep
LOCKSTEP_MAX = FM_LOCKSTEP_MAX
#: probability transforms ``run`` can apply (fm_trees.h)
POST_NONE, POST_LOGISTIC2, POST_SIGMOID, POST_SOFTMAX = 0, 1, 2, 3
NODE32 = np.dtype([("fl", np.uint32), ("thr", np.float32), ("child", np.int32)])
NODE64 = np.dtype([("fl", np.uint32), ("child", np.int32), ("thr", np.float64)])


cdef inline const void *_ptr(object a):
    return NULL if a is None else cnp.PyArray_DATA(<cnp.ndarray>a)


cdef class ForestKernel:
    """A compiled tree ensemble.

    ``run(X, out, col, leaves, n_threads, scan)`` writes raw scores of the rows
    of ``X`` into ``out[:, col:col + T]`` (``out`` float64, unit column stride)
    and, when ``leaves`` is given (int32, shape (n, n_trees)), the plan node id
    each tree's walk ends on. It returns -1 when ``X`` is not in kernel layout
    (2-D float32/float64, at least one row, ``n_features`` columns, unit column
    stride): the caller converts X and calls again. Otherwise, with ``scan``,
    it first looks at X and returns at once, computing nothing, if X holds
    NaN (bit 0) or +-inf (bit 1) as the comparison sees it; it returns 0 when
    the scores were written.

    ``nodes32`` / ``nodes64`` are the records (``nodes64`` None for a model that
    compares in float32), or None with ``build``: a callable that returns the
    ``NODE32`` (``build(32)``) or ``NODE64`` (``build(64)``) records on first use.
    ``compare64`` (default: ``nodes64 is not None``) says whether float64 input
    is compared in float64. The attributes ``nodes32`` / ``nodes64`` are None
    until built.
    """

    cdef fm_forest f32, f64
    cdef readonly object nodes32, nodes64, root, depth, gdepth, target, value, base
    cdef readonly object cat_off, cat_nw, cat_bits
    cdef readonly Py_ssize_t n_features, n_trees, n_targets
    cdef readonly bint compare64
    cdef object _build_records, _lock

    def __init__(self, nodes32, nodes64, root, depth, target, value, base, *, n_features,
                 average=False, cat_off=None, cat_nw=None, cat_bits=None, cat_exact=False,
                 compare64=None, build=None, logistic_scale=1.0):
        c = np.ascontiguousarray
        self.compare64 = (nodes64 is not None) if compare64 is None else bool(compare64)
        if (nodes32 is None or (self.compare64 and nodes64 is None)) and build is None:
            raise ValueError("ForestKernel: node records or a build callable are needed")
        if nodes64 is not None and not self.compare64:
            raise ValueError("ForestKernel: float64 records for a model that compares in float32")
        self._build_records = build
        self._lock = threading.Lock()
        self.root = c(root, dtype=np.int32)
        self.depth = c(depth, dtype=np.int32)
        nt = self.root.shape[0]
        pad = (-nt) % FM_GT
        self.gdepth = c(np.concatenate([self.depth, np.zeros(pad, np.int32)]).reshape(-1, FM_GT).max(axis=1),
                        dtype=np.int32)
        self.target = None if target is None else c(target, dtype=np.int32)
        self.value = c(value, dtype=np.float64)
        self.base = c(base, dtype=np.float64)
        self.cat_off = None if cat_off is None else c(cat_off, dtype=np.int64)
        self.cat_nw = None if cat_nw is None else c(cat_nw, dtype=np.int32)
        self.cat_bits = None if cat_bits is None else c(cat_bits, dtype=np.uint32)
        self.n_features = int(n_features)
        self.n_trees = nt
        self.n_targets = self.base.shape[0]
        if (self.depth.shape[0] != nt or self.value.ndim != 2
                or (self.target is not None and self.target.shape[0] != nt)):
            raise ValueError("ForestKernel: inconsistent plan arrays")
        self._fill(&self.f32, average, cat_exact, logistic_scale)
        self._fill(&self.f64, average, cat_exact, logistic_scale)
        if nodes32 is not None:
            self._publish(&self.f32, nodes32, 32)
        if nodes64 is not None:
            self._publish(&self.f64, nodes64, 64)

    cdef int _publish(self, fm_forest *f, nodes, int width) except -1:
        """Check the records and make them visible to ``run`` (the pointer is stored last)."""
        nodes = np.ascontiguousarray(nodes, dtype=NODE64 if width == 64 else NODE32)
        if nodes.ndim != 1 or nodes.shape[0] != self.value.shape[0]:
            raise ValueError("ForestKernel: inconsistent plan arrays")
        if width == 64:
            self.nodes64 = nodes
        else:
            self.nodes32 = nodes
        fm_forest_set_nodes(f, cnp.PyArray_DATA(<cnp.ndarray>nodes))
        return 0

    cdef int _build(self, fm_forest *f, int width) except -1:
        """Build the records of ``f`` once: concurrent first calls wait here for one build."""
        with self._lock:
            if fm_forest_nodes(f) == NULL:
                self._publish(f, self._build_records(width), width)
        return 0

    cdef void _fill(self, fm_forest *f, average, cat_exact, double logistic_scale):
        f.nodes = NULL
        f.root = <const int32_t *>_ptr(self.root)
        f.depth = <const int32_t *>_ptr(self.depth)
        f.gdepth = <const int32_t *>_ptr(self.gdepth)
        f.target = <const int32_t *>_ptr(self.target)
        f.value = <const double *>_ptr(self.value)
        f.base = <const double *>_ptr(self.base)
        f.cat_off = <const int64_t *>_ptr(self.cat_off)
        f.cat_nw = <const int32_t *>_ptr(self.cat_nw)
        f.cat_bits = <const uint32_t *>_ptr(self.cat_bits)
        f.n_trees = self.n_trees
        f.n_nodes = self.value.shape[0]
        f.max_depth = int(self.depth.max())
        f.W = self.value.shape[1]
        f.T = self.n_targets
        f.average = bool(average)
        f.cat_exact = bool(cat_exact)
        f.post_scale = logistic_scale

    def run(self, X, cnp.ndarray out, Py_ssize_t col=0, leaves=None, int n_threads=1, bint scan=False,
            int post=0):
        cdef cnp.ndarray x
        if type(X) is not np.ndarray:
            return -1
        x = <cnp.ndarray>X
        if x.ndim != 2 or x.shape[1] != self.n_features:
            return -1
        cdef int domain
        cdef Py_ssize_t itemsize
        if x.dtype == np.float32:
            domain, itemsize = 0, 4
        elif x.dtype == np.float64:
            domain, itemsize = (2 if self.compare64 else 1), 8
        else:
            return -1
        cdef Py_ssize_t n = x.shape[0]
        if (x.strides[1] != itemsize and self.n_features > 1) or x.strides[0] % itemsize:
            return -1
        if out.dtype != np.float64 or out.ndim != 2 or out.shape[0] != n \
                or out.shape[1] < col + self.n_targets or out.strides[1] != 8 or out.strides[0] % 8:
            raise ValueError("ForestKernel.run: out must be float64 (n, >= col + n_targets) with unit column stride")
        cdef int32_t *lv = NULL
        if leaves is not None:
            if (leaves.dtype != np.int32 or leaves.shape != (n, self.n_trees)
                    or not leaves.flags.c_contiguous):
                raise ValueError("ForestKernel.run: leaves must be C-contiguous int32 (n, n_trees)")
            lv = <int32_t *>cnp.PyArray_DATA(<cnp.ndarray>leaves)
        if n == 0:
            return -1
        cdef int found
        if scan:
            with nogil:
                found = fm_forest_scan(domain, cnp.PyArray_DATA(x), x.strides[0] // itemsize, n, self.n_features)
            if found:
                return found
        cdef fm_forest *f = &self.f64 if domain == 2 else &self.f32
        if fm_forest_nodes(f) == NULL:
            self._build(f, 64 if domain == 2 else 32)
        cdef const char *xp = <const char *>cnp.PyArray_DATA(x)
        cdef Py_ssize_t rs = x.strides[0] // itemsize
        cdef double *op = <double *>cnp.PyArray_DATA(out) + col
        cdef Py_ssize_t ld = out.strides[0] // 8
        # the transform sees whole rows: LOGISTIC2 spans columns 0-1, the others col..col+T
        cdef double *pp = <double *>cnp.PyArray_DATA(out) + (0 if post == POST_LOGISTIC2 else col)
        if post == POST_LOGISTIC2 and (col != 1 or self.n_targets != 1):
            raise ValueError("ForestKernel.run: POST_LOGISTIC2 needs one target written at col=1")
        cdef Py_ssize_t nb, b, i0, i1, block
        cdef int nt = max(1, n_threads)
        if n < PARALLEL_MIN or nt == 1:
            with nogil:
                i0 = 0
                while i0 < n:
                    i1 = min(n, i0 + BLOCK)
                    fm_forest_rows(f, domain, xp, rs, i0, i1, op, ld, lv)
                    if post:
                        fm_forest_post(f, post, pp, ld, i0, i1)
                    i0 = i1
            return 0
        # at least a few blocks per thread so that dynamic scheduling balances them
        block = min(<Py_ssize_t>BLOCK, max(<Py_ssize_t>FM_G, (n + 4 * nt - 1) // (4 * nt)))
        nb = (n + block - 1) // block
        for b in prange(nb, nogil=True, num_threads=nt, schedule="dynamic"):
            fm_forest_rows(f, domain, xp, rs, b * block, min(n, (b + 1) * block), op, ld, lv)
            if post:
                fm_forest_post(f, post, pp, ld, b * block, min(n, (b + 1) * block))
        return 0
