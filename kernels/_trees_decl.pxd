# fm_trees.h's plan struct and shared entry points, declared once for _trees and _qtrees.
from libc.stdint cimport int32_t, int64_t, uint32_t

cdef extern from "fm_trees.h" nogil:
    ctypedef struct fm_forest:
        const void *nodes
        const int32_t *root
        const int32_t *depth
        const int32_t *gdepth
        const int32_t *target
        const double *value
        const double *base
        const int64_t *cat_off
        const int32_t *cat_nw
        const uint32_t *cat_bits
        Py_ssize_t n_trees, W, T, n_nodes
        int average, cat_exact, max_depth
        double post_scale
    int fm_forest_scan(int domain, const void *X, Py_ssize_t rs, Py_ssize_t n, Py_ssize_t F)
    int FM_G
    int FM_GT
    int FM_LOCKSTEP_MAX
