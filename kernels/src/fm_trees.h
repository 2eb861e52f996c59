/* Tree-ensemble traversal kernels.
 *
 * Layout (built by fastml/backends/_tree_plan.py from the TreeEnsemble IR)
 * -----------------------------------------------------------------------
 * Every tree is a run of compact node records, breadth-first from its root,
 * so the hot top levels of a tree share cache lines. The two children of a
 * split node are adjacent: a row goes to `child` (left) or `child + 1`
 * (right), so a step is one load of the record, one load of x, one compare
 * and an add, with no branch:
 *
 *     fl    bits 0-29 feature id, bit 30 FM_CAT (set-membership split),
 *           bit 31 FM_MISS_LEFT (NaN goes left)
 *     thr   threshold, already rounded so that `x <= thr` decides exactly
 *           like the source (x < t, float32 rounding of float64 thresholds
 *           and so on are folded in when the plan is built)
 *     child global index of the left child
 *
 * A leaf is a record that sends every row to itself (child = own index,
 * thr = +inf, FM_MISS_LEFT: `x <= +inf` holds for every x, NaN goes left).
 * Walking a tree for `depth` steps therefore always ends on the right leaf,
 * however short the row's path: rows (or trees) advance in lockstep with no
 * per-step leaf test, and a group of G independent walks keeps G loads in
 * flight, which hides the load latency that dominates tree traversal.
 *
 * Loop order
 * ----------
 * batch   rows in blocks (a block of X stays in L1/L2); within a block, tree
 *         by tree in ensemble order (the tree stays in L1 while the block's
 *         rows walk it, FM_G rows in lockstep); leaf values are added to the
 *         row's output in tree order, so sums are bit-identical to a source
 *         that adds tree by tree.
 * one row FM_GT trees in lockstep, then their leaf values added in tree order.
 * deep trees (depth > FM_LOCKSTEP_MAX) walk each row until the leaf instead,
 *         so a rare long path does not cost every row `depth` steps.
 *
 * Three comparison domains are instantiated: float32 input with float32
 * records, float64 input rounded to float32 (scikit-learn, XGBoost) with
 * float32 records, and float64 input with float64 records.
 */
#ifndef FM_TREES_H
#define FM_TREES_H

#include <math.h>
#include <stdint.h>
#include <stddef.h>

#include "fm_exp.h"

#define FM_FEAT_MASK 0x3FFFFFFFu
#define FM_CAT 0x40000000u
#define FM_MISS_LEFT 0x80000000u
#define FM_G 8     /* rows walked in lockstep through one tree */
#define FM_GT 16   /* trees walked in lockstep by one row */
#define FM_LOCKSTEP_MAX 24

typedef struct { uint32_t fl; float thr; int32_t child; } fm_node32;
typedef struct { uint32_t fl; int32_t child; double thr; } fm_node64;

/* What the kernels need to know about the ensemble (all arrays in plan order). */
typedef struct {
    const void *nodes;          /* fm_node32 or fm_node64 records */
    const int32_t *root;        /* (n_trees,) global index of each root */
    const int32_t *depth;       /* (n_trees,) steps that reach every leaf */
    const int32_t *gdepth;      /* (ceil(n_trees / FM_GT),) max depth of each group of FM_GT trees */
    const int32_t *target;      /* (n_trees,) output column of a scalar-leaf tree, or NULL */
    const double *value;        /* (n_nodes, W) leaf values */
    const double *base;         /* (T,) */
    const int64_t *cat_off;     /* (n_nodes,) first word of a membership node's set, or NULL */
    const int32_t *cat_nw;      /* (n_nodes,) its number of words */
    const uint32_t *cat_bits;
    ptrdiff_t n_trees, W, T, n_nodes;
    int average, cat_exact, max_depth;
    double post_scale;          /* c of the sigmoid transforms: 1 / (1 + exp(-c raw)) */
} fm_forest;

/* The node records may be built on first use (kernels/_trees.pyx): the builder fills them,
 * then publishes the pointer with a release store; a caller that loads a non-NULL pointer
 * (acquire) sees the records complete. NULL: not built yet. */
static inline const void *fm_forest_nodes(const fm_forest *f)
{
    return __atomic_load_n(&f->nodes, __ATOMIC_ACQUIRE);
}

static inline void fm_forest_set_nodes(fm_forest *f, const void *nodes)
{
    __atomic_store_n(&f->nodes, nodes, __ATOMIC_RELEASE);
}

/* Is v a member of the category set of node n? (NaN was handled before.) */
static inline int fm_member(const fm_forest *f, int32_t n, double v)
{
    double c = f->cat_exact ? v : trunc(v);
    if (f->cat_exact && c != floor(c)) return 0;
    double nbits = 32.0 * (double)f->cat_nw[n];
    if (!(c >= 0.0 && c < nbits)) return 0;
    uint32_t k = (uint32_t)c;
    return (int)((f->cat_bits[f->cat_off[n] + (k >> 5)] >> (k & 31u)) & 1u);
}

/* One step from node n for a row whose features start at x. */
#define FM_STEP(NAME, NODE, XT, CT)                                                      \
static inline int32_t NAME(const fm_forest *f, const NODE *nd, int32_t n, const XT *x,   \
                           const int has_cat)                                            \
{                                                                                        \
    NODE d = nd[n];                                                                      \
    CT v = (CT)x[d.fl & FM_FEAT_MASK];                                                   \
    /* branch-free: the missing-value flag differs from node to node */                 \
    int left = (v <= d.thr) | ((int)(d.fl >> 31) & (v != v));                             \
    if (has_cat && (d.fl & FM_CAT) && v == v)                                            \
        left = fm_member(f, n, (double)v);                                               \
    return d.child + 1 - left;                                                           \
}

FM_STEP(fm_step_f32, fm_node32, float, float)
FM_STEP(fm_step_d32, fm_node32, double, float)
FM_STEP(fm_step_f64, fm_node64, double, double)

static inline void fm_add_leaf(const fm_forest *f, ptrdiff_t t, int32_t leaf, double *o)
{
    const double *v = f->value + (ptrdiff_t)leaf * f->W;
    if (f->W == 1)
        o[f->target ? f->target[t] : 0] += v[0];
    else
        for (ptrdiff_t k = 0; k < f->W; k++) o[k] += v[k];
}

static inline void fm_start_rows(const fm_forest *f, double *out, ptrdiff_t ld, ptrdiff_t n)
{
    for (ptrdiff_t i = 0; i < n; i++)
        for (ptrdiff_t k = 0; k < f->T; k++) out[i * ld + k] = f->base[k];
}

static inline void fm_finish_rows(const fm_forest *f, double *out, ptrdiff_t ld, ptrdiff_t n)
{
    if (!f->average) return;
    double nt = (double)f->n_trees;
    for (ptrdiff_t i = 0; i < n; i++)
        for (ptrdiff_t k = 0; k < f->T; k++) out[i * ld + k] /= nt;
}

/* Rows [i0, i1) of X (row stride rs) -> out rows (stride ld), and optionally the
 * leaf (plan node id) of every tree into leaves (n_trees per row). */
#define FM_ROWS(NAME, STEP, NODE, XT, HAS_CAT)                                           \
static void NAME(const fm_forest *f, const XT *X, ptrdiff_t rs, ptrdiff_t i0,            \
                 ptrdiff_t i1, double *out, ptrdiff_t ld, int32_t *leaves)               \
{                                                                                        \
    const int has_cat = HAS_CAT;                                                         \
    const NODE *nd = (const NODE *)f->nodes;                                             \
    ptrdiff_t nt = f->n_trees;                                                           \
    if (out) fm_start_rows(f, out + i0 * ld, ld, i1 - i0);                               \
    if (i1 - i0 < FM_G) {                                                                \
        /* few rows: FM_GT trees of one row in lockstep */                                \
        for (ptrdiff_t i = i0; i < i1; i++) {                                            \
            const XT *x = X + i * rs;                                                    \
            for (ptrdiff_t t0 = 0; t0 < nt; t0 += FM_GT) {                                \
                int32_t idx[FM_GT];                                                       \
                ptrdiff_t g = nt - t0 < FM_GT ? nt - t0 : FM_GT;                           \
                int32_t D = f->gdepth[t0 / FM_GT];                                        \
                for (ptrdiff_t j = 0; j < g; j++) idx[j] = f->root[t0 + j];              \
                if (D <= FM_LOCKSTEP_MAX && g == FM_GT) {                                \
                    for (int32_t s = 0; s < D; s++)                                      \
                        for (ptrdiff_t j = 0; j < FM_GT; j++)                            \
                            idx[j] = STEP(f, nd, idx[j], x, has_cat);                    \
                } else if (D <= FM_LOCKSTEP_MAX) {                                       \
                    for (int32_t s = 0; s < D; s++)                                      \
                        for (ptrdiff_t j = 0; j < g; j++)                                \
                            idx[j] = STEP(f, nd, idx[j], x, has_cat);                    \
                } else {                                                                 \
                    for (ptrdiff_t j = 0; j < g; j++) {                                  \
                        int32_t m = idx[j], p;                                           \
                        do { p = m; m = STEP(f, nd, m, x, has_cat); } while (m != p);    \
                        idx[j] = m;                                                      \
                    }                                                                    \
                }                                                                        \
                for (ptrdiff_t j = 0; j < g; j++) {                                      \
                    if (out) fm_add_leaf(f, t0 + j, idx[j], out + i * ld);               \
                    if (leaves) leaves[i * nt + t0 + j] = idx[j];                        \
                }                                                                        \
            }                                                                            \
        }                                                                                \
    } else {                                                                             \
        /* tree by tree; FM_G rows in lockstep (the last group overlaps the one */       \
        /* before it instead of running short: rows are recomputed, not added twice) */  \
        for (ptrdiff_t t = 0; t < nt; t++) {                                             \
            int32_t r = f->root[t], D = f->depth[t];                                     \
            for (ptrdiff_t a = i0; a < i1; a += FM_G) {                                  \
                ptrdiff_t b = a + FM_G <= i1 ? a : i1 - FM_G;                            \
                ptrdiff_t first = a - b;  /* rows of this group already done */          \
                int32_t idx[FM_G];                                                       \
                for (ptrdiff_t j = 0; j < FM_G; j++) idx[j] = r;                         \
                if (D <= FM_LOCKSTEP_MAX) {                                              \
                    for (int32_t s = 0; s < D; s++)                                      \
                        for (ptrdiff_t j = 0; j < FM_G; j++)                             \
                            idx[j] = STEP(f, nd, idx[j], X + (b + j) * rs, has_cat);     \
                } else {                                                                 \
                    for (ptrdiff_t j = first; j < FM_G; j++) {                           \
                        int32_t m = idx[j], p;                                           \
                        const XT *x = X + (b + j) * rs;                                  \
                        do { p = m; m = STEP(f, nd, m, x, has_cat); } while (m != p);    \
                        idx[j] = m;                                                      \
                    }                                                                    \
                }                                                                        \
                for (ptrdiff_t j = first; j < FM_G; j++) {                               \
                    if (out) fm_add_leaf(f, t, idx[j], out + (b + j) * ld);              \
                    if (leaves) leaves[(b + j) * nt + t] = idx[j];                       \
                }                                                                        \
            }                                                                            \
        }                                                                                \
    }                                                                                    \
    if (out) fm_finish_rows(f, out + i0 * ld, ld, i1 - i0);                              \
}

FM_ROWS(fm_rows_f32, fm_step_f32, fm_node32, float, 0)
FM_ROWS(fm_rows_d32, fm_step_d32, fm_node32, double, 0)
FM_ROWS(fm_rows_f64, fm_step_f64, fm_node64, double, 0)
FM_ROWS(fm_rows_f32c, fm_step_f32, fm_node32, float, 1)
FM_ROWS(fm_rows_d32c, fm_step_d32, fm_node32, double, 1)
FM_ROWS(fm_rows_f64c, fm_step_f64, fm_node64, double, 1)

#if defined(__AVX512F__) && defined(__AVX512DQ__)
#include <immintrin.h>
#define FM_TREES_VEC 1
/* Batches of float32 rows on AVX-512: 2 x 16 rows walk a tree in lockstep, one
 * row per lane. A step gathers the 16 records' three fields and the 16 x
 * values, compares, and picks child or child + 1 per lane; two independent
 * vectors keep two gathers in flight. Same loop order and summation order as
 * the scalar kernel (tree by tree, leaf values added in tree order). */
#define FM_VG 32
static void fm_rows_f32_vec(const fm_forest *f, const float *X, ptrdiff_t rs, ptrdiff_t i0,
                            ptrdiff_t i1, double *out, ptrdiff_t ld, int32_t *leaves)
{
    const int *nd = (const int *)f->nodes;
    const ptrdiff_t nt = f->n_trees;
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i off0 = _mm512_mullo_epi32(lane, _mm512_set1_epi32((int)rs));
    const __m512i off1 = _mm512_add_epi32(off0, _mm512_set1_epi32((int)(16 * rs)));
    const __m512i fmask = _mm512_set1_epi32((int)FM_FEAT_MASK);
    const __m512i one = _mm512_set1_epi32(1);
    if (out) fm_start_rows(f, out + i0 * ld, ld, i1 - i0);
    for (ptrdiff_t t = 0; t < nt; t++) {
        const __m512i r = _mm512_set1_epi32(f->root[t]);
        const int32_t D = f->depth[t];
        for (ptrdiff_t a = i0; a < i1; a += FM_VG) {
            ptrdiff_t b = a + FM_VG <= i1 ? a : i1 - FM_VG;
            ptrdiff_t first = a - b;
            const float *xb = X + b * rs;
            __m512i n0 = r, n1 = r;
            for (int32_t s = 0; s < D; s++) {
                __m512i a0 = _mm512_add_epi32(_mm512_add_epi32(n0, n0), n0);
                __m512i a1 = _mm512_add_epi32(_mm512_add_epi32(n1, n1), n1);
                __m512i fl0 = _mm512_i32gather_epi32(a0, nd, 4);
                __m512i fl1 = _mm512_i32gather_epi32(a1, nd, 4);
                __m512 x0 = _mm512_i32gather_ps(_mm512_add_epi32(off0, _mm512_and_si512(fl0, fmask)), xb, 4);
                __m512 x1 = _mm512_i32gather_ps(_mm512_add_epi32(off1, _mm512_and_si512(fl1, fmask)), xb, 4);
                __m512 t0 = _mm512_i32gather_ps(a0, nd + 1, 4);
                __m512 t1 = _mm512_i32gather_ps(a1, nd + 1, 4);
                __m512i c0 = _mm512_i32gather_epi32(a0, nd + 2, 4);
                __m512i c1 = _mm512_i32gather_epi32(a1, nd + 2, 4);
                __mmask16 l0 = _mm512_cmp_ps_mask(x0, t0, _CMP_LE_OQ)
                             | (_mm512_cmp_ps_mask(x0, x0, _CMP_UNORD_Q) & _mm512_movepi32_mask(fl0));
                __mmask16 l1 = _mm512_cmp_ps_mask(x1, t1, _CMP_LE_OQ)
                             | (_mm512_cmp_ps_mask(x1, x1, _CMP_UNORD_Q) & _mm512_movepi32_mask(fl1));
                n0 = _mm512_mask_blend_epi32(l0, _mm512_add_epi32(c0, one), c0);
                n1 = _mm512_mask_blend_epi32(l1, _mm512_add_epi32(c1, one), c1);
            }
            int32_t idx[FM_VG];
            _mm512_storeu_si512((void *)idx, n0);
            _mm512_storeu_si512((void *)(idx + 16), n1);
            for (ptrdiff_t j = first; j < FM_VG; j++) {
                if (out) fm_add_leaf(f, t, idx[j], out + (b + j) * ld);
                if (leaves) leaves[(b + j) * nt + t] = idx[j];
            }
        }
    }
    if (out) fm_finish_rows(f, out + i0 * ld, ld, i1 - i0);
}
#endif

/* Entry point for one block of rows: dispatch on the domain and on whether any
 * set-membership split exists (so the common case compiles without it). */
static void fm_forest_rows(const fm_forest *f, int domain, const void *X, ptrdiff_t rs,
                           ptrdiff_t i0, ptrdiff_t i1, double *out, ptrdiff_t ld, int32_t *leaves)
{
    int cat = f->cat_off != NULL;
#ifdef FM_TREES_VEC
    if (domain == 0 && !cat && f->max_depth <= FM_LOCKSTEP_MAX && i1 - i0 >= FM_VG
        && rs < (ptrdiff_t)1 << 25 && f->n_nodes < (ptrdiff_t)1 << 29) {
        fm_rows_f32_vec(f, (const float *)X, rs, i0, i1, out, ld, leaves);
        return;
    }
#endif
    switch (domain) {
    case 0:
        if (cat) fm_rows_f32c(f, (const float *)X, rs, i0, i1, out, ld, leaves);
        else fm_rows_f32(f, (const float *)X, rs, i0, i1, out, ld, leaves);
        break;
    case 1:
        if (cat) fm_rows_d32c(f, (const double *)X, rs, i0, i1, out, ld, leaves);
        else fm_rows_d32(f, (const double *)X, rs, i0, i1, out, ld, leaves);
        break;
    default:
        if (cat) fm_rows_f64c(f, (const double *)X, rs, i0, i1, out, ld, leaves);
        else fm_rows_f64(f, (const double *)X, rs, i0, i1, out, ld, leaves);
        break;
    }
}

/* Probabilities from raw scores, in place, rows [i0, i1) of out (stride ld),
 * c = f->post_scale (GradientBoosting's exponential loss: 2, LightGBM's sigmoid):
 *   FM_POST_LOGISTIC2  raw in column 1 -> [1 - s, s], s = 1 / (1 + exp(-c raw))
 *   FM_POST_SIGMOID    every one of the T columns -> 1 / (1 + exp(-c raw))
 *   FM_POST_SOFTMAX    the T columns of a row -> exp(raw - max) / sum          */
enum { FM_POST_NONE = 0, FM_POST_LOGISTIC2 = 1, FM_POST_SIGMOID = 2, FM_POST_SOFTMAX = 3 };

static void fm_forest_post(const fm_forest *f, int kind, double *out, ptrdiff_t ld, ptrdiff_t i0, ptrdiff_t i1)
{
    const ptrdiff_t T = f->T;
    const double nc = -f->post_scale;
    for (ptrdiff_t i = i0; i < i1; i++) {
        double *o = out + i * ld;
        if (kind == FM_POST_LOGISTIC2) {
            double s = 1.0 / (1.0 + fm_exp_f64(o[1] * nc));
            o[1] = s;
            o[0] = 1.0 - s;
        } else if (kind == FM_POST_SIGMOID) {
            for (ptrdiff_t k = 0; k < T; k++) o[k] = 1.0 / (1.0 + fm_exp_f64(o[k] * nc));
        } else if (kind == FM_POST_SOFTMAX) {
            double m = o[0], sum = 0.0;
            for (ptrdiff_t k = 1; k < T; k++) m = o[k] > m ? o[k] : m;
            for (ptrdiff_t k = 0; k < T; k++) { o[k] = fm_exp_f64(o[k] - m); sum += o[k]; }
            for (ptrdiff_t k = 0; k < T; k++) o[k] /= sum;
        }
    }
}

/* What rows [0, n) of X contain, as the comparison sees them: bit 0 NaN,
 * bit 1 +-inf (domain 1 rounds float64 to float32 first, so a finite float64
 * too large for float32 counts as inf, as it does for scikit-learn). */
static int fm_forest_scan(int domain, const void *X, ptrdiff_t rs, ptrdiff_t n, ptrdiff_t F)
{
    int nan = 0, inf = 0;
    for (ptrdiff_t i = 0; i < n; i++) {
        if (domain == 0) {
            const float *x = (const float *)X + i * rs;
            for (ptrdiff_t j = 0; j < F; j++) { nan |= x[j] != x[j]; inf |= fabsf(x[j]) == INFINITY; }
        } else if (domain == 1) {
            const double *x = (const double *)X + i * rs;
            for (ptrdiff_t j = 0; j < F; j++) {
                float v = (float)x[j];
                nan |= v != v; inf |= fabsf(v) == INFINITY;
            }
        } else {
            const double *x = (const double *)X + i * rs;
            for (ptrdiff_t j = 0; j < F; j++) { nan |= x[j] != x[j]; inf |= fabs(x[j]) == INFINITY; }
        }
    }
    return nan | (inf << 1);
}

#endif
