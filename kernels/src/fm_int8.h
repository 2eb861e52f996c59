/* int8 dense kernels: quantized linear models and multi-layer perceptrons.
 *
 * Scheme
 * ------
 * Weights are int8, symmetric, one scale per output column:
 * W[k, j] ~ sw[j] * Q[k, j] with Q in [-127, 127].  Activations (the input row,
 * then each hidden layer's output) are uint8 with a scale and a zero point:
 * x[k] ~ s * (u[k] - z), u in [0, 255].  Dynamic mode picks (s, z) per row from
 * the row's range, widened to hold 0 (so 0 is exact and a ReLU output uses
 * all 256 levels); static mode uses one (s, z) per layer fixed from
 * calibration data and clamps values outside it.
 *
 *     s = (hi - lo) / 255,  z = rint(-lo / s),  u = clamp(rint(x * (1/s)) + z, 0, 255)
 *
 * all in float32 (rint: round half to even).  Then, exactly in int32,
 *
 *     acc[j] = sum_k u[k] Q[k, j]          (vpdpbusd: u8 x s8, four k per step)
 *     y[j]   = (float)(acc[j] - z * colsum[j]) * (s * sw[j]) + b[j]
 *
 * where colsum[j] = sum_k Q[k, j] removes the zero point (u - z) without
 * touching the inner loop.  |acc| <= 255 * 127 * K fits int32 for K < 66,000
 * (checked when the model is packed).
 *
 * Layout
 * ------
 * A layer's Q is packed once into panels of FM_Q8_NR = 32 columns: panel p
 * holds, for each group g of four inputs, 32 x 4 bytes (column c's bytes
 * Q[4g : 4g + 4, 32p + c]); the input dimension is zero-padded to a multiple
 * of 4 (kpad) and the columns to a multiple of 32.  One 64-byte load is then
 * the vpdpbusd operand of 16 columns, and a row's four uint8 inputs broadcast
 * as one int32.  Quantized rows live in per-thread scratch of kpad bytes
 * (padding bytes are 0: they meet zero weights).
 *
 * Loop order
 * ----------
 * Rows run in blocks of FM_Q8_BLOCK (one OpenMP task each; small calls run
 * inline on the calling thread).  Within a block, per layer: quantize the
 * block's rows; for each panel (L1-resident while the rows sweep past it), for
 * each group of 8 rows, an 8 x 2-vector tile of int32 accumulators; the
 * epilogue turns them into float32 y.  Then the activation, and the next
 * layer quantizes y.  A single row uses a 1 x 8-vector tile (four panels at
 * once) so that eight accumulators hide vpdpbusd's latency.  Integer sums do
 * not depend on the order, so a row's result never depends on its batch.
 *
 * Under __AVX512VNNI__ the tiles are vpdpbusd; elsewhere (FASTML_PORTABLE
 * builds, other CPUs) a portable C loop over the same layout computes the
 * same integers.  fm_q8.portable selects the portable loop at run time (tests
 * compare the two).
 */
#ifndef FM_INT8_H
#define FM_INT8_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fm_activations.h"
#include "fm_exp.h"

#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
#include <immintrin.h>
#define FM_Q8_VNNI 1
#else
#define FM_Q8_VNNI 0
#endif

#define FM_Q8_NR 32        /* columns per panel (two 16-lane vectors) */
#define FM_Q8_MR 8         /* rows per batch tile */
#define FM_Q8_BLOCK 64     /* rows per block / task */

enum { FM_Q8_IDENTITY = 0, FM_Q8_LOGISTIC = 1, FM_Q8_TANH = 2, FM_Q8_RELU = 3,
       FM_Q8_SOFTMAX = 4, FM_Q8_EXP = 5 };
enum { FM_Q8_VALUES = 0, FM_Q8_BINARY = 1, FM_Q8_ARGMAX = 2 };

typedef struct {
    int n_layers;
    const ptrdiff_t *dims;       /* n_layers + 1 real widths: F, H1, ..., K */
    const ptrdiff_t *kpad;       /* n_layers: input width rounded up to 4 */
    const ptrdiff_t *panels;     /* n_layers: 32-column panels */
    const int8_t *const *w;      /* packed panels */
    const float *const *sw;      /* per column weight scale, padded with 0 */
    const int32_t *const *csum;  /* per column sum of Q, padded with 0 */
    const float *const *b;       /* bias, padded with 0 */
    const float *in_s;           /* static: n_layers input scales; NULL: dynamic */
    const int32_t *in_z;         /* static: n_layers input zero points */
    int hidden, outact;
    ptrdiff_t width;             /* widest padded output row (floats) */
    ptrdiff_t kmax;              /* widest kpad (bytes) */
    int portable;                /* 1: the portable tiles even where VNNI is compiled in */
} fm_q8;

/* ------------------------------------------------------------------------ */
/* Quantizing rows.                                                          */
/* ------------------------------------------------------------------------ */

/* (s, 1/s, z) of the range [lo, hi] widened to hold 0; a zero row gets s = 1 */
static inline void fm_q8_params(float lo, float hi, float *s, float *inv, int32_t *z)
{
    lo = lo < 0.0f ? lo : 0.0f;
    hi = hi > 0.0f ? hi : 0.0f;
    float sc = (hi - lo) / 255.0f;
    if (!(sc > 0.0f) || !isfinite(sc)) sc = 1.0f;
    float iv = 1.0f / sc;
    float zz = rintf(-lo * iv);
    *s = sc;
    *inv = iv;
    *z = (int32_t)(zz < 0.0f ? 0.0f : (zz > 255.0f ? 255.0f : zz));
}

#define FM_Q8_QUANT(NAME, TX)                                                                  \
/* u[0:n] from x[0:n] with the given 1/s and z; u[n:kpad] = 0 */                               \
static inline void NAME##_apply(const TX *x, ptrdiff_t n, ptrdiff_t kpad, float inv, int32_t z,  \
                                uint8_t *u)                                                     \
{                                                                                               \
    const float zf = (float)z;                                                                  \
    _Pragma("omp simd")                                                                         \
    for (ptrdiff_t k = 0; k < n; k++) {                                                         \
        float v = rintf((float)x[k] * inv) + zf;                                                \
        v = v < 0.0f ? 0.0f : (v > 255.0f ? 255.0f : v);                                       \
        u[k] = (uint8_t)(int32_t)v;                                                             \
    }                                                                                           \
    for (ptrdiff_t k = n; k < kpad; k++) u[k] = 0;                                              \
}                                                                                               \
/* dynamic: the row's own (s, z); returns 1 if x holds NaN or +-inf */                          \
static inline int NAME(const TX *x, ptrdiff_t n, ptrdiff_t kpad, uint8_t *u, float *s, int32_t *z) \
{                                                                                               \
    float lo = 0.0f, hi = 0.0f, chk = 0.0f;                                                     \
    _Pragma("omp simd reduction(min:lo) reduction(max:hi) reduction(+:chk)")                    \
    for (ptrdiff_t k = 0; k < n; k++) {                                                         \
        float v = (float)x[k];                                                                  \
        lo = v < lo ? v : lo;                                                                   \
        hi = v > hi ? v : hi;                                                                   \
        chk += (float)(x[k] * (TX)0);                                                           \
    }                                                                                           \
    if (chk != chk) return 1;                                                                   \
    float inv;                                                                                  \
    fm_q8_params(lo, hi, s, &inv, z);                                                           \
    NAME##_apply(x, n, kpad, inv, *z, u);                                                       \
    return 0;                                                                                   \
}

FM_Q8_QUANT(fm_q8_quant_f, float)
FM_Q8_QUANT(fm_q8_quant_d, double)

/* 1 if x[0:n] holds NaN or +-inf (static mode checks the input separately) */
#define FM_Q8_NONFINITE(NAME, TX)                                                              \
static inline int NAME(const TX *x, ptrdiff_t n)                                               \
{                                                                                               \
    TX chk = 0;                                                                                 \
    _Pragma("omp simd reduction(+:chk)")                                                        \
    for (ptrdiff_t k = 0; k < n; k++) chk += x[k] * (TX)0;                                     \
    return chk != chk;                                                                          \
}
FM_Q8_NONFINITE(fm_q8_nonfinite_f, float)
FM_Q8_NONFINITE(fm_q8_nonfinite_d, double)

/* ------------------------------------------------------------------------ */
/* Tiles: mr rows x nv vectors of 16 columns, then the float epilogue.       */
/* ------------------------------------------------------------------------ */

/* The epilogue of one 16-column vector of row r: y = (acc - z colsum) (s sw) + b.
 * Shared by both paths, so their floats are the same given the same integers. */
static inline void fm_q8_epilogue(const int32_t *acc, int32_t z, float s, const int32_t *cs,
                                  const float *sw, const float *b, float *y)
{
    _Pragma("omp simd")
    for (int c = 0; c < 16; c++) y[c] = (float)(acc[c] - z * cs[c]) * (s * sw[c]) + b[c];
}

/* Portable tile: the same integers as the VNNI tile, in plain C. */
static inline void fm_q8_tile_c(int mr, int nv, const uint8_t *const *xq, ptrdiff_t kg,
                                const int8_t *const *wv, int32_t acc[][16])
{
    for (int r = 0; r < mr; r++)
        for (int v = 0; v < nv; v++) {
            int32_t *a = acc[r * nv + v];
            for (int c = 0; c < 16; c++) a[c] = 0;
            for (ptrdiff_t g = 0; g < kg; g++) {
                const uint8_t *x = xq[r] + 4 * g;
                const int8_t *w = wv[v] + g * 4 * FM_Q8_NR;
                _Pragma("omp simd")
                for (int c = 0; c < 16; c++)
                    a[c] += (int32_t)x[0] * w[4 * c] + (int32_t)x[1] * w[4 * c + 1]
                          + (int32_t)x[2] * w[4 * c + 2] + (int32_t)x[3] * w[4 * c + 3];
            }
        }
}

#if FM_Q8_VNNI
/* mr rows x nv vectors (mr * nv <= 16 accumulators); wv[v] points at the first group of
 * vector v (16 columns); consecutive groups of one panel are 4 * FM_Q8_NR bytes apart.
 * Inlined with constant mr and nv, the accumulator array lives in registers. */
static inline __attribute__((always_inline)) void
fm_q8_tile_vnni(const int mr, const int nv, const uint8_t *const *xq, ptrdiff_t kg,
                const int8_t *const *wv, int32_t acc[][16])
{
    __m512i a[16];
    const int8_t *w[8];
    const uint8_t *x[8];
    for (int v = 0; v < nv; v++) w[v] = wv[v];
    for (int r = 0; r < mr; r++) x[r] = xq[r];
    for (int i = 0; i < mr * nv; i++) a[i] = _mm512_setzero_si512();
    for (ptrdiff_t g = 0; g < kg; g++) {
        __m512i wr[8];
        for (int v = 0; v < nv; v++) wr[v] = _mm512_loadu_si512((const void *)(w[v] + g * 4 * FM_Q8_NR));
        for (int r = 0; r < mr; r++) {
            int32_t four;
            memcpy(&four, x[r] + 4 * g, 4);
            __m512i xb = _mm512_set1_epi32(four);
            for (int v = 0; v < nv; v++) a[r * nv + v] = _mm512_dpbusd_epi32(a[r * nv + v], xb, wr[v]);
        }
    }
    for (int i = 0; i < mr * nv; i++) _mm512_storeu_si512((void *)acc[i], a[i]);
}
#endif

/* One layer for rows [0, n) of the block: xq (row stride kp) -> y (row stride ld). */
static void fm_q8_layer(const fm_q8 *m, int l, const uint8_t *xq, ptrdiff_t n, const float *rs,
                        const int32_t *rz, float *y, ptrdiff_t ld)
{
    const ptrdiff_t kp = m->kpad[l], kg = kp / 4, np = m->panels[l];
    const int8_t *W = m->w[l];
    const float *sw = m->sw[l], *b = m->b[l];
    const int32_t *cs = m->csum[l];
    const ptrdiff_t pstride = kg * 4 * FM_Q8_NR;   /* bytes per panel */
    int32_t acc[16][16] __attribute__((aligned(64)));
    const uint8_t *xr[FM_Q8_MR];
    const int8_t *wv[8];
    int portable = !FM_Q8_VNNI || m->portable;

    if (n == 1) {
        /* one row: up to four panels (eight vectors) per pass */
        xr[0] = xq;
        for (ptrdiff_t p = 0; p < np; p += 4) {
            int npp = np - p < 4 ? (int)(np - p) : 4, nv = 2 * npp;
            for (int v = 0; v < nv; v++) wv[v] = W + (p + v / 2) * pstride + (v % 2) * 64;
            if (portable) fm_q8_tile_c(1, nv, xr, kg, wv, acc);
#if FM_Q8_VNNI
            else if (nv == 8) fm_q8_tile_vnni(1, 8, xr, kg, wv, acc);
            else if (nv == 6) fm_q8_tile_vnni(1, 6, xr, kg, wv, acc);
            else if (nv == 4) fm_q8_tile_vnni(1, 4, xr, kg, wv, acc);
            else fm_q8_tile_vnni(1, 2, xr, kg, wv, acc);
#endif
            for (int v = 0; v < nv; v++) {
                ptrdiff_t c0 = p * FM_Q8_NR + v * 16;
                fm_q8_epilogue(acc[v], rz[0], rs[0], cs + c0, sw + c0, b + c0, y + c0);
            }
        }
        return;
    }
    for (ptrdiff_t p = 0; p < np; p++) {
        wv[0] = W + p * pstride;
        wv[1] = wv[0] + 64;
        for (ptrdiff_t i = 0; i < n; i += FM_Q8_MR) {
            int mr = n - i < FM_Q8_MR ? (int)(n - i) : FM_Q8_MR;
            for (int r = 0; r < mr; r++) xr[r] = xq + (i + r) * kp;
            if (portable) fm_q8_tile_c(mr, 2, xr, kg, wv, acc);
#if FM_Q8_VNNI
            else switch (mr) {
                case 8: fm_q8_tile_vnni(8, 2, xr, kg, wv, acc); break;
                case 7: fm_q8_tile_vnni(7, 2, xr, kg, wv, acc); break;
                case 6: fm_q8_tile_vnni(6, 2, xr, kg, wv, acc); break;
                case 5: fm_q8_tile_vnni(5, 2, xr, kg, wv, acc); break;
                case 4: fm_q8_tile_vnni(4, 2, xr, kg, wv, acc); break;
                case 3: fm_q8_tile_vnni(3, 2, xr, kg, wv, acc); break;
                case 2: fm_q8_tile_vnni(2, 2, xr, kg, wv, acc); break;
                default: fm_q8_tile_vnni(1, 2, xr, kg, wv, acc); break;
            }
#endif
            for (int r = 0; r < mr; r++) {
                ptrdiff_t c0 = p * FM_Q8_NR;
                float *yr = y + (i + r) * ld + c0;
                fm_q8_epilogue(acc[2 * r], rz[i + r], rs[i + r], cs + c0, sw + c0, b + c0, yr);
                fm_q8_epilogue(acc[2 * r + 1], rz[i + r], rs[i + r], cs + c0 + 16, sw + c0 + 16,
                               b + c0 + 16, yr + 16);
            }
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Activations, the output epilogue, the block driver.                       */
/* ------------------------------------------------------------------------ */

static inline void fm_q8_activate(float *a, ptrdiff_t n, int act)
{
    switch (act) {
    case FM_Q8_LOGISTIC: fm_sigmoid_f32(a, a, n); break;
    case FM_Q8_TANH: fm_tanh_f32(a, a, n); break;
    case FM_Q8_RELU: fm_relu_f32(a, a, n); break;
    case FM_Q8_EXP:
        _Pragma("omp simd")
        for (ptrdiff_t i = 0; i < n; i++) a[i] = fm_exp_f32(a[i]);
        break;
    default: break;
    }
}

static inline void fm_q8_emit(float *a, ptrdiff_t ld, ptrdiff_t n, ptrdiff_t K, int outact, int kind,
                              double *out, ptrdiff_t *idx)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        float *r = a + i * ld;
        if (outact == FM_Q8_SOFTMAX) {
            float mx = r[0], s = 0.0f;
            for (ptrdiff_t k = 1; k < K; k++) mx = r[k] > mx ? r[k] : mx;
            for (ptrdiff_t k = 0; k < K; k++) { r[k] = fm_exp_f32(r[k] - mx); s += r[k]; }
            float inv = 1.0f / s;
            for (ptrdiff_t k = 0; k < K; k++) r[k] *= inv;
        } else if (outact != FM_Q8_IDENTITY) {
            fm_q8_activate(r, K, outact);
        }
        if (kind == FM_Q8_VALUES) {
            for (ptrdiff_t k = 0; k < K; k++) out[i * K + k] = (double)r[k];
        } else if (kind == FM_Q8_BINARY) {
            out[2 * i] = 1.0 - (double)r[0];
            out[2 * i + 1] = (double)r[0];
        } else if (K == 1) {
            idx[i] = outact == FM_Q8_IDENTITY ? r[0] > 0.0f : r[0] > 0.5f;
        } else {
            ptrdiff_t best = 0;
            for (ptrdiff_t k = 1; k < K; k++) if (r[k] > r[best]) best = k;
            idx[i] = best;
        }
    }
}

typedef struct {
    const fm_q8 *m;
    const void *X;
    int x32;
    ptrdiff_t rs;
    int kind;
    double *out;
    ptrdiff_t *idx;
} fm_q8_call;

/* scratch per block: y (BLOCK x width floats), xq (BLOCK x kmax bytes), row s and z */
static inline size_t fm_q8_scratch_bytes(const fm_q8 *m, ptrdiff_t rows)
{
    size_t y = (size_t)rows * m->width * sizeof(float);
    size_t q = ((size_t)rows * m->kmax + 63) & ~(size_t)63;
    return y + q + (size_t)rows * (sizeof(float) + sizeof(int32_t)) + 64;
}

static int fm_q8_block(const fm_q8_call *c, ptrdiff_t i0, ptrdiff_t n, char *buf)
{
    const fm_q8 *m = c->m;
    float *y = (float *)buf;
    uint8_t *xq = (uint8_t *)(buf + (size_t)n * m->width * sizeof(float));
    float *rs = (float *)((char *)xq + (((size_t)n * m->kmax + 63) & ~(size_t)63));
    int32_t *rz = (int32_t *)(rs + n);
    const ptrdiff_t F = m->dims[0];
    /* the input */
    for (ptrdiff_t i = 0; i < n; i++) {
        uint8_t *u = xq + i * m->kpad[0];
        if (c->x32) {
            const float *x = (const float *)c->X + (i0 + i) * c->rs;
            if (m->in_s) {
                if (fm_q8_nonfinite_f(x, F)) return 1;
                rs[i] = m->in_s[0]; rz[i] = m->in_z[0];
                fm_q8_quant_f_apply(x, F, m->kpad[0], 1.0f / m->in_s[0], m->in_z[0], u);
            } else if (fm_q8_quant_f(x, F, m->kpad[0], u, rs + i, rz + i)) {
                return 1;
            }
        } else {
            const double *x = (const double *)c->X + (i0 + i) * c->rs;
            if (m->in_s) {
                if (fm_q8_nonfinite_d(x, F)) return 1;
                rs[i] = m->in_s[0]; rz[i] = m->in_z[0];
                fm_q8_quant_d_apply(x, F, m->kpad[0], 1.0f / m->in_s[0], m->in_z[0], u);
            } else if (fm_q8_quant_d(x, F, m->kpad[0], u, rs + i, rz + i)) {
                return 1;
            }
        }
    }
    for (int l = 0; l < m->n_layers; l++) {
        const ptrdiff_t ld = m->panels[l] * FM_Q8_NR;
        fm_q8_layer(m, l, xq, n, rs, rz, y, ld);
        if (l == m->n_layers - 1) {
            ptrdiff_t oc = c->kind == FM_Q8_BINARY ? 2 : m->dims[l + 1];
            fm_q8_emit(y, ld, n, m->dims[l + 1], m->outact, c->kind,
                       c->out ? c->out + i0 * oc : NULL, c->idx ? c->idx + i0 : NULL);
            break;
        }
        const ptrdiff_t H = m->dims[l + 1], kp = m->kpad[l + 1];
        for (ptrdiff_t i = 0; i < n; i++) {
            float *yr = y + i * ld;
            fm_q8_activate(yr, H, m->hidden);
            if (m->in_s) {
                rs[i] = m->in_s[l + 1]; rz[i] = m->in_z[l + 1];
                fm_q8_quant_f_apply(yr, H, kp, 1.0f / m->in_s[l + 1], m->in_z[l + 1], xq + i * kp);
            } else {
                fm_q8_quant_f(yr, H, kp, xq + i * kp, rs + i, rz + i);
            }
        }
    }
    return 0;
}

/* Rows [0, n) in blocks: an even share of the rows per thread at most, rounded to whole
 * tiles (no idle thread), blocks of at most max_blk rows. */
static inline ptrdiff_t fm_q8_block_rows(ptrdiff_t n, ptrdiff_t max_blk, int par, int n_threads)
{
    ptrdiff_t blk = max_blk;
    if (par) {
        ptrdiff_t per = (n + n_threads - 1) / n_threads;
        per = (per + FM_Q8_MR - 1) / FM_Q8_MR * FM_Q8_MR;
        blk = per < blk ? per : blk;
    }
    return blk;
}

typedef int (*fm_q8_block_fn)(const void *call, ptrdiff_t i0, ptrdiff_t n, char *buf);

/* Run block(call, i0, rows, buf) over rows [0, n) in blocks of blk rows, each with `need`
 * bytes of 64-byte-aligned scratch: inline (scratch on the stack when it fits), or over
 * n_threads OpenMP threads (one scratch per thread) when par. 0, the blocks' non-zero
 * status, or -1 when out of memory. Shared by the int8 dense and SVM kernels. */
static int fm_q8_run_blocks(fm_q8_block_fn block, const void *call, ptrdiff_t n, ptrdiff_t blk,
                            size_t need, int par, int n_threads)
{
    const ptrdiff_t nb = (n + blk - 1) / blk;
    need = (need + 63) & ~(size_t)63;
    if (!par || nb < 2) {
        _Alignas(64) char stack[16384];
        char *buf = need <= sizeof stack ? stack : (char *)aligned_alloc(64, need);
        if (buf == NULL) return -1;
        int bad = 0;
        for (ptrdiff_t b = 0; b < nb && !bad; b++) {
            ptrdiff_t i0 = b * blk;
            bad = block(call, i0, (i0 + blk < n ? i0 + blk : n) - i0, buf);
        }
        if (buf != stack) free(buf);
        return bad;
    }
    int bad = 0, oom = 0;
    #pragma omp parallel num_threads(n_threads) reduction(|:bad) reduction(|:oom)
    {
        char *buf = (char *)aligned_alloc(64, need);
        oom |= buf == NULL;
        #pragma omp for schedule(dynamic)
        for (ptrdiff_t b = 0; b < nb; b++) {
            if (buf == NULL || bad) continue;
            ptrdiff_t i0 = b * blk;
            bad |= block(call, i0, (i0 + blk < n ? i0 + blk : n) - i0, buf);
        }
        free(buf);
    }
    return oom ? -1 : bad;
}

static int fm_q8_block_any(const void *c, ptrdiff_t i0, ptrdiff_t n, char *buf)
{
    return fm_q8_block((const fm_q8_call *)c, i0, n, buf);
}

/* Every row of X: 0, 1 (NaN/inf in X) or -1 (out of memory). */
static inline int fm_q8_run(const fm_q8 *m, const void *X, int x32, ptrdiff_t rs, ptrdiff_t n, int kind,
                     double *out, ptrdiff_t *idx, int n_threads, ptrdiff_t min_parallel)
{
    fm_q8_call c = {m, X, x32, rs, kind, out, idx};
    int par = n_threads > 1 && n >= min_parallel;
    ptrdiff_t blk = fm_q8_block_rows(n, FM_Q8_BLOCK, par, n_threads);
    return fm_q8_run_blocks(fm_q8_block_any, &c, n, blk, fm_q8_scratch_bytes(m, n < blk ? n : blk), par,
                            n_threads);
}

#endif
