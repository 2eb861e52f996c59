/* Quantized (threshold-index) tree-ensemble kernels: lossless.
 *
 * Layout (built by fastml/backends/native_qtrees.py from fastml.quantize_trees.QTrees)
 * ----------------------------------------------------------------------------------
 * Every feature f has its sorted, distinct split thresholds ("cuts"), each
 * already folded to a `x <= c` test in the model's comparison precision
 * (float32 cuts for scikit-learn / XGBoost, float64 for LightGBM /
 * HistGradientBoosting). A row is binned once: bin[f] = number of cuts of f
 * that are < x (a lower bound by binary search), so for the k-th cut
 *
 *     x <= cut[k]   iff   bin[f] <= k,
 *
 * and NaN gets the reserved bin FM_QNAN (0xFFFF), above every real bin.
 * A node record is 8 bytes, the tree walk needs no float at all:
 *
 *     fk     bits 0-15 k (the cut index), bits 16-30 feature, bit 31 NaN goes left
 *     child  global index of the left child (the right one is child + 1)
 *
 * A step is `left = bin[f] <= k | (nan_left & bin[f] == FM_QNAN)`, next =
 * child + 1 - left. Leaves send every row to themselves (k = 0xFFFF, which
 * every bin satisfies), so rows walk a tree for `depth` steps with no leaf
 * test, exactly as in fm_trees.h, whose node order (breadth-first, adjacent
 * children), loop order, leaf sums (float64, tree order) and probability
 * transforms this kernel shares: its results are bit-identical to the float
 * kernel's.
 *
 * Loop order
 * ----------
 * A block of at most FM_QBLOCK rows is binned feature by feature (one
 * feature's cuts stay in L1 while the block's rows search them in lockstep,
 * a fixed number of branch-free halvings per feature), into a small uint16
 * array that stays in L1; then the block walks the trees:
 * batch   tree by tree, FM_G rows in lockstep (scalar), or on AVX-512 2 x 16
 *         rows per step: the 8-byte records come in with two 64-bit gathers
 *         per 16 rows (the float kernel gathers three 32-bit fields), and the
 *         bins with one 32-bit gather (scale 2, the row is padded so the upper
 *         half read is in bounds);
 * one row FM_GT trees in lockstep;
 * deep trees (depth > FM_LOCKSTEP_MAX) walk each row to its leaf.
 */
#ifndef FM_QTREES_H
#define FM_QTREES_H

#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>

#include "fm_trees.h"

#define FM_QNAN 0xFFFFu
#define FM_QBLOCK 64

typedef struct { uint32_t fk; int32_t child; } fm_qnode;

typedef struct {
    fm_forest f;                /* root, depth, gdepth, target, value, base, n_trees, W, T, average, max_depth */
    const fm_qnode *nodes;
    const float *cuts32;        /* cuts of every feature (cmp64 == 0) */
    const double *cuts64;       /* (cmp64 == 1) */
    const int64_t *cut_off;     /* (F + 1,) */
    const int32_t *steps;       /* (F,) halvings of the lower-bound search of each feature */
    ptrdiff_t F, S;             /* features; uint16 stride of a binned row (>= F + 1, even) */
    int cmp64;
} fm_qforest;

/* Bins of rows [i0, i1) of X (input float32 when xf32, else float64) into B (stride S). */
#define FM_QBIN(NAME, XT, CT, CUTS)                                                       \
static void NAME(const fm_qforest *q, const XT *X, ptrdiff_t rs, ptrdiff_t i0,            \
                 ptrdiff_t i1, uint16_t *B)                                               \
{                                                                                         \
    CT v[FM_QBLOCK];                                                                      \
    int32_t pos[FM_QBLOCK];                                                               \
    const ptrdiff_t n = i1 - i0, S = q->S;                                                \
    for (ptrdiff_t f = 0; f < q->F; f++) {                                                \
        const CT *c = q->CUTS + q->cut_off[f];                                            \
        const int32_t m = (int32_t)(q->cut_off[f + 1] - q->cut_off[f]);                   \
        for (ptrdiff_t i = 0; i < n; i++) v[i] = (CT)X[(i0 + i) * rs + f];                \
        if (m == 0) {                                                                     \
            for (ptrdiff_t i = 0; i < n; i++) B[i * S + f] = v[i] != v[i] ? FM_QNAN : 0;  \
            continue;                                                                     \
        }                                                                                 \
        for (ptrdiff_t i = 0; i < n; i++) pos[i] = 0;                                     \
        /* branch-free lower bound: after the halvings one candidate is left */           \
        int32_t len = m;                                                                  \
        while (len > 1) {                                                                 \
            const int32_t half = len >> 1;                                                \
            for (ptrdiff_t i = 0; i < n; i++)                                             \
                pos[i] += (c[pos[i] + half] < v[i]) ? half : 0;                           \
            len -= half;                                                                  \
        }                                                                                 \
        for (ptrdiff_t i = 0; i < n; i++) {                                               \
            int32_t b = pos[i] + (c[pos[i]] < v[i]);                                      \
            B[i * S + f] = v[i] != v[i] ? (uint16_t)FM_QNAN : (uint16_t)b;                \
        }                                                                                 \
    }                                                                                     \
}

/* One row: the searches of up to 64 features advance in lockstep (independent loads in
 * flight instead of one dependent chain per feature). A feature with no cut reads the
 * pad cut that ends the cuts array (its bin is 0 whatever it reads). */
#define FM_QBIN1(NAME, XT, CT, CUTS)                                                      \
static void NAME(const fm_qforest *q, const XT *x, uint16_t *B)                           \
{                                                                                         \
    CT v[64];                                                                             \
    int64_t base[64];                                                                     \
    int32_t len[64];                                                                      \
    const CT *c = q->CUTS;                                                                \
    for (ptrdiff_t f0 = 0; f0 < q->F; f0 += 64) {                                         \
        const ptrdiff_t g = q->F - f0 < 64 ? q->F - f0 : 64;                              \
        int32_t most = 0;                                                                 \
        for (ptrdiff_t j = 0; j < g; j++) {                                               \
            v[j] = (CT)x[f0 + j];                                                         \
            base[j] = q->cut_off[f0 + j];                                                 \
            len[j] = (int32_t)(q->cut_off[f0 + j + 1] - base[j]);                         \
            most = len[j] > most ? len[j] : most;                                         \
        }                                                                                 \
        while (most > 1) {                                                                \
            for (ptrdiff_t j = 0; j < g; j++) {                                           \
                const int32_t half = len[j] >> 1;                                         \
                base[j] += (c[base[j] + half] < v[j]) ? half : 0;                         \
                len[j] -= half;                                                           \
            }                                                                             \
            most -= most >> 1;                                                            \
        }                                                                                 \
        for (ptrdiff_t j = 0; j < g; j++) {                                               \
            const int64_t o = q->cut_off[f0 + j];                                         \
            int32_t b = (int32_t)(base[j] - o) + (c[base[j]] < v[j]);                     \
            b = q->cut_off[f0 + j + 1] == o ? 0 : b;                                      \
            B[f0 + j] = v[j] != v[j] ? (uint16_t)FM_QNAN : (uint16_t)b;                   \
        }                                                                                 \
    }                                                                                     \
}

FM_QBIN1(fm_qbin1_f32_c32, float, float, cuts32)
FM_QBIN1(fm_qbin1_f64_c32, double, float, cuts32)
FM_QBIN1(fm_qbin1_f32_c64, float, double, cuts64)
FM_QBIN1(fm_qbin1_f64_c64, double, double, cuts64)

FM_QBIN(fm_qbin_f32_c32, float, float, cuts32)
FM_QBIN(fm_qbin_f64_c32, double, float, cuts32)
FM_QBIN(fm_qbin_f32_c64, float, double, cuts64)
FM_QBIN(fm_qbin_f64_c64, double, double, cuts64)

static inline int32_t fm_qstep(const fm_qnode *nd, int32_t n, const uint16_t *b)
{
    fm_qnode d = nd[n];
    uint32_t v = b[(d.fk >> 16) & 0x7FFFu];
    int left = (v <= (d.fk & 0xFFFFu)) | ((int)(d.fk >> 31) & (v == FM_QNAN));
    return d.child + 1 - left;
}

/* Walk binned rows [0, n) of B (stride S); out/leaves point at the block's first row. */
static void fm_qwalk(const fm_qforest *q, const uint16_t *B, ptrdiff_t n, double *out, ptrdiff_t ld,
                     int32_t *leaves)
{
    const fm_forest *f = &q->f;
    const fm_qnode *nd = q->nodes;
    const ptrdiff_t nt = f->n_trees, S = q->S;
    if (n < FM_G) {
        for (ptrdiff_t i = 0; i < n; i++) {
            const uint16_t *b = B + i * S;
            for (ptrdiff_t t0 = 0; t0 < nt; t0 += FM_GT) {
                int32_t idx[FM_GT];
                ptrdiff_t g = nt - t0 < FM_GT ? nt - t0 : FM_GT;
                int32_t D = f->gdepth[t0 / FM_GT];
                for (ptrdiff_t j = 0; j < g; j++) idx[j] = f->root[t0 + j];
                if (D <= FM_LOCKSTEP_MAX && g == FM_GT) {
                    for (int32_t s = 0; s < D; s++)
                        for (ptrdiff_t j = 0; j < FM_GT; j++) idx[j] = fm_qstep(nd, idx[j], b);
                } else if (D <= FM_LOCKSTEP_MAX) {
                    for (int32_t s = 0; s < D; s++)
                        for (ptrdiff_t j = 0; j < g; j++) idx[j] = fm_qstep(nd, idx[j], b);
                } else {
                    for (ptrdiff_t j = 0; j < g; j++) {
                        int32_t m = idx[j], p;
                        do { p = m; m = fm_qstep(nd, m, b); } while (m != p);
                        idx[j] = m;
                    }
                }
                for (ptrdiff_t j = 0; j < g; j++) {
                    if (out) fm_add_leaf(f, t0 + j, idx[j], out + i * ld);
                    if (leaves) leaves[i * nt + t0 + j] = idx[j];
                }
            }
        }
        return;
    }
#if defined(__AVX512F__) && defined(__AVX512DQ__)
    if (n >= 32 && f->max_depth <= FM_LOCKSTEP_MAX) {
        const int64_t *nd64 = (const int64_t *)nd;
        const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        const __m512i off0 = _mm512_mullo_epi32(lane, _mm512_set1_epi32((int)S));
        const __m512i off1 = _mm512_add_epi32(off0, _mm512_set1_epi32((int)(16 * S)));
        const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
        const __m512i fmask = _mm512_set1_epi32(0x7FFF), lo16 = _mm512_set1_epi32(0xFFFF);
        const __m512i qnan = _mm512_set1_epi32((int)FM_QNAN), one = _mm512_set1_epi32(1);
        for (ptrdiff_t t = 0; t < nt; t++) {
            const __m512i r = _mm512_set1_epi32(f->root[t]);
            const int32_t D = f->depth[t];
            for (ptrdiff_t a = 0; a < n; a += 32) {
                ptrdiff_t b0 = a + 32 <= n ? a : n - 32;
                ptrdiff_t first = a - b0;
                const uint16_t *bb = B + b0 * S;
                __m512i n0 = r, n1 = r;
                for (int32_t s = 0; s < D; s++) {
#define FM_QVSTEP(NV, OFF)                                                                 \
                    {                                                                      \
                        __m512i ra = _mm512_i32gather_epi64(_mm512_castsi512_si256(NV), nd64, 8); \
                        __m512i rb = _mm512_i32gather_epi64(_mm512_extracti64x4_epi64(NV, 1), nd64, 8); \
                        __m512i fk = _mm512_permutex2var_epi32(ra, even, rb);              \
                        __m512i ch = _mm512_permutex2var_epi32(ra, odd, rb);               \
                        __m512i fi = _mm512_and_si512(_mm512_srli_epi32(fk, 16), fmask);   \
                        __m512i v = _mm512_and_si512(                                      \
                            _mm512_i32gather_epi32(_mm512_add_epi32(OFF, fi), (const int *)bb, 2), lo16); \
                        __mmask16 l = _mm512_cmple_epu32_mask(v, _mm512_and_si512(fk, lo16)) \
                                    | (_mm512_cmpeq_epi32_mask(v, qnan) & _mm512_movepi32_mask(fk)); \
                        NV = _mm512_mask_blend_epi32(l, _mm512_add_epi32(ch, one), ch);    \
                    }
                    FM_QVSTEP(n0, off0)
                    FM_QVSTEP(n1, off1)
#undef FM_QVSTEP
                }
                int32_t idx[32];
                _mm512_storeu_si512((void *)idx, n0);
                _mm512_storeu_si512((void *)(idx + 16), n1);
                for (ptrdiff_t j = first; j < 32; j++) {
                    if (out) fm_add_leaf(f, t, idx[j], out + (b0 + j) * ld);
                    if (leaves) leaves[(b0 + j) * nt + t] = idx[j];
                }
            }
        }
        return;
    }
#endif
    for (ptrdiff_t t = 0; t < nt; t++) {
        int32_t r = f->root[t], D = f->depth[t];
        for (ptrdiff_t a = 0; a < n; a += FM_G) {
            ptrdiff_t b0 = a + FM_G <= n ? a : n - FM_G;
            ptrdiff_t first = a - b0;
            int32_t idx[FM_G];
            for (ptrdiff_t j = 0; j < FM_G; j++) idx[j] = r;
            if (D <= FM_LOCKSTEP_MAX) {
                for (int32_t s = 0; s < D; s++)
                    for (ptrdiff_t j = 0; j < FM_G; j++) idx[j] = fm_qstep(nd, idx[j], B + (b0 + j) * S);
            } else {
                for (ptrdiff_t j = first; j < FM_G; j++) {
                    int32_t m = idx[j], p;
                    const uint16_t *b = B + (b0 + j) * S;
                    do { p = m; m = fm_qstep(nd, m, b); } while (m != p);
                    idx[j] = m;
                }
            }
            for (ptrdiff_t j = first; j < FM_G; j++) {
                if (out) fm_add_leaf(f, t, idx[j], out + (b0 + j) * ld);
                if (leaves) leaves[(b0 + j) * nt + t] = idx[j];
            }
        }
    }
}

/* Rows [i0, i1) of X: bin block by block, walk, optionally transform. Returns -1 when the
 * bins buffer could not be allocated (nothing written), else 0. */
static int fm_qforest_rows(const fm_qforest *q, int xf32, const void *X, ptrdiff_t rs, ptrdiff_t i0,
                           ptrdiff_t i1, double *out, ptrdiff_t ld, int32_t *leaves, int post,
                           double *pout)
{
    uint16_t stack[FM_QBLOCK * 256];
    uint16_t *B = stack;
    if ((size_t)q->S * FM_QBLOCK > sizeof(stack) / sizeof(stack[0])) {
        B = (uint16_t *)malloc((size_t)q->S * FM_QBLOCK * sizeof(uint16_t));
        if (!B) return -1;
    }
    for (ptrdiff_t a = i0; a < i1; a += FM_QBLOCK) {
        ptrdiff_t b = a + FM_QBLOCK < i1 ? a + FM_QBLOCK : i1;
        if (b - a < FM_G) {
            for (ptrdiff_t i = a; i < b; i++) {
                if (xf32 && q->cmp64) fm_qbin1_f32_c64(q, (const float *)X + i * rs, B + (i - a) * q->S);
                else if (xf32) fm_qbin1_f32_c32(q, (const float *)X + i * rs, B + (i - a) * q->S);
                else if (q->cmp64) fm_qbin1_f64_c64(q, (const double *)X + i * rs, B + (i - a) * q->S);
                else fm_qbin1_f64_c32(q, (const double *)X + i * rs, B + (i - a) * q->S);
            }
        } else if (xf32) {
            if (q->cmp64) fm_qbin_f32_c64(q, (const float *)X, rs, a, b, B);
            else fm_qbin_f32_c32(q, (const float *)X, rs, a, b, B);
        } else {
            if (q->cmp64) fm_qbin_f64_c64(q, (const double *)X, rs, a, b, B);
            else fm_qbin_f64_c32(q, (const double *)X, rs, a, b, B);
        }
        double *o = out ? out + a * ld : NULL;
        if (o) fm_start_rows(&q->f, o, ld, b - a);
        fm_qwalk(q, B, b - a, o, ld, leaves ? leaves + a * q->f.n_trees : NULL);
        if (o) fm_finish_rows(&q->f, o, ld, b - a);
        if (post) fm_forest_post(&q->f, post, pout, ld, a, b);
    }
    if (B != stack) free(B);
    return 0;
}

#endif
