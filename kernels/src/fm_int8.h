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
 * Guard (int8 linear models: fm_q8_guard)
 * ---------------------------------------
 * A one-layer model may carry its float64 coefficients in the float linear
 * kernel's layout (fm_linear.h).  Each row's int8 scores y then come with a
 * rigorous bound on their distance to the float kernel's scores f:
 *
 *     |f[c] - y[c]| <= beta[c] = E l1[c] + N1 dw[c] + 1e-6 (|y[c]| + |b[c]| + N1 wq[c] + E l1[c])
 *
 * where E bounds |x[k] - s (u[k] - z)| (dynamic rows: s (1/2 + 2^-10), see
 * fm_q8_guard_row; static or degenerate ranges: measured element by element),
 * N1 = s sum_k |u[k] - z| is the 1-norm of the dequantized row, l1[c] the
 * 1-norm of the float coefficients of target c, dw[c] = max_k |w - sw Q| (sw
 * as the kernel holds it: float32), wq[c] = max_k |sw Q|; the 1e-6 term covers
 * the float32 epilogue (four roundings), float32 biases and the float kernel's
 * own float64 rounding.  A row whose label could differ from the float
 * kernel's (top score minus its bound not above every other score plus its
 * bound; one column: |y| not above beta) — and, with a tolerance, a row whose
 * values could lie farther than atol + rtol |f| from the float kernel's (for
 * softmax / logistic probabilities through p / p^ in [e^-2B, e^2B], B the
 * largest bound, and e^x - 1 <= x / (1 - x)) — is recomputed from X with the
 * float coefficients by fm_linear.h's own loops and transforms, so its output
 * is the float kernel's.
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
/* the guard's float recheck is fm_linear.h's own code; its 64-bit lane type is spelled
 * long long there and int64_t (long) in fm_activations.h: renamed while it is included */
#define fm_v8l fm_linear_v8l
#include "fm_linear.h"
#undef fm_v8l

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

/* The float recheck of a one-layer model (see "Guard" above): T = dims[1] targets. */
typedef struct {
    const double *w;      /* T x fp float64 coefficients, rows zero-padded (fm_linear.h's layout) */
    const double *b;      /* T float64 intercepts */
    ptrdiff_t fp;         /* F rounded up to 8 */
    const double *l1;     /* T: sum_k |w[c, k]| */
    const double *dw;     /* T: max_k |w[c, k] - sw[c] Q[k, c]| */
    const double *wq;     /* T: max_k |sw[c] Q[k, c]| */
    int labels;           /* 1: certify labels (classifiers): argmax, or the sign of one column */
    double rtol, atol;    /* certify the values returned within atol + rtol |f|; atol < 0: labels only */
} fm_q8_guard;

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
    const fm_q8_guard *guard;    /* one-layer models: the float recheck, or NULL */
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
    ptrdiff_t *rechecked;        /* guard: rows recomputed in float are added here (or NULL) */
} fm_q8_call;

/* ------------------------------------------------------------------------ */
/* The guard: certify a row's int8 output or recompute it in float.         */
/* ------------------------------------------------------------------------ */

/* max_k |x[k] - s (u[k] - z)| in float64, rounded up: the exact quantization error of a row */
static double fm_q8_row_error(const void *X, int x32, const uint8_t *u, ptrdiff_t F, float s, int32_t z)
{
    double e = 0.0, sd = (double)s;
    if (x32) {
        const float *x = (const float *)X;
        for (ptrdiff_t k = 0; k < F; k++) {
            double d = fabs((double)x[k] - sd * (double)((int32_t)u[k] - z));
            e = d > e ? d : e;
        }
    } else {
        const double *x = (const double *)X;
        for (ptrdiff_t k = 0; k < F; k++) {
            double d = fabs(x[k] - sd * (double)((int32_t)u[k] - z));
            e = d > e ? d : e;
        }
    }
    return e * (1.0 + 1e-12) + 1e-300;
}

/* sum_k |u[k] - z| over k < n */
static inline int64_t fm_q8_dist1(const uint8_t *u, ptrdiff_t n, int32_t z)
{
#if FM_Q8_VNNI
    const __m512i zz = _mm512_set1_epi8((char)z);
    __m512i acc = _mm512_setzero_si512();
    ptrdiff_t k = 0;
    for (; k + 64 <= n; k += 64)
        acc = _mm512_add_epi64(acc, _mm512_sad_epu8(_mm512_loadu_si512((const void *)(u + k)), zz));
    if (k < n) {
        __mmask64 mk = _bzhi_u64(~0ULL, (unsigned)(n - k));
        __m512i v = _mm512_mask_loadu_epi8(zz, mk, (const void *)(u + k));  /* lanes past n: z, |z - z| = 0 */
        acc = _mm512_add_epi64(acc, _mm512_sad_epu8(v, zz));
    }
    return _mm512_reduce_add_epi64(acc);
#else
    int64_t a = 0;
    for (ptrdiff_t k = 0; k < n; k++) a += abs((int32_t)u[k] - z);
    return a;
#endif
}

/* e^x - 1 <= x / (1 - x) for 0 <= x < 1 (e^-x >= 1 - x); infinity beyond */
static inline double fm_q8_expm1_up(double x) { return x < 0.5 ? x / (1.0 - x) : INFINITY; }

/* One row (n = 1 at y, its quantized input u with (s, z), its X row x): emit it as
 * fm_q8_emit would and certify it. Returns 1 if the row must be recomputed in float. */
static int fm_q8_guard_row(const fm_q8 *m, const fm_q8_guard *g, float *y, const uint8_t *u, float s,
                           int32_t z, const void *x, int x32, int kind, double *out, ptrdiff_t *idx)
{
    const ptrdiff_t F = m->dims[0], T = m->dims[1];
    const int outact = m->outact;
    /* E: the largest |x - s (u - z)| (see the derivation in the header comment) */
    double E;
    if (m->in_s == NULL && s > 1e-30f && s != 1.0f)
        E = (double)s * (0.5 + 1.0 / 1024.0);
    else  /* static ranges clamp; s = 1 is also the fallback of a degenerate range */
        E = fm_q8_row_error(x, x32, u, F, s, z);
    const double N1 = (double)s * (double)fm_q8_dist1(u, F, z);
    const double rho = 1e-6, up = 1.0 + 1e-9;
    const double *restrict l1 = g->l1, *restrict dw = g->dw, *restrict wq = g->wq, *restrict gb = g->b;
    const int labels = g->labels, values = g->atol >= 0.0 && kind == FM_Q8_VALUES && outact == FM_Q8_IDENTITY;
    const double rtol = g->rtol, atol = g->atol;
    ptrdiff_t best = 0;
    if (labels && T > 1)  /* the first maximum, as fm_q8_emit picks it */
        for (ptrdiff_t c = 1; c < T; c++) best = y[c] > y[best] ? c : best;
    /* beta[c] as in the header comment; B: the largest; rival: the largest y + beta but best's */
    double B = 0.0, rival = -INFINITY, bbest = 0.0;
    int bad = 0;
    _Pragma("omp simd reduction(max:B) reduction(max:rival) reduction(|:bad)")
    for (ptrdiff_t c = 0; c < T; c++) {
        double v = (double)y[c], e = E * l1[c];
        double beta = (e + N1 * dw[c] + rho * (fabs(v) + fabs(gb[c]) + N1 * wq[c] + e)) * up;
        bad |= !(beta <= 1e300);  /* NaN or inf */
        B = beta > B ? beta : B;
        double h = c == best ? -INFINITY : v + beta;
        rival = h > rival ? h : rival;
        if (values) bad |= !(beta * (1.0 + rtol) <= atol + rtol * fabs(v));
    }
    int ok = !bad;
    if (labels) {
        if (T > 1) {
            double vb = (double)y[best], e = E * l1[best];
            bbest = (e + N1 * dw[best] + rho * (fabs(vb) + fabs(gb[best]) + N1 * wq[best] + e)) * up;
            ok &= vb - bbest > rival;
        } else {
            ok &= fabs((double)y[0]) > B;
        }
    }
    if (ok) {
        fm_q8_emit(y, 0, 1, T, outact, kind, out, idx);
        if (g->atol >= 0.0 && kind != FM_Q8_ARGMAX && outact != FM_Q8_IDENTITY) {
            /* probabilities: p / p^ and (1 - p) / (1 - p^) lie in [e^-2B, e^2B] (softmax), [e^-B, e^B]
             * (logistic); 1e-4 covers the float32 transform */
            double G = fm_q8_expm1_up(outact == FM_Q8_SOFTMAX ? 2.0 * B : B);
            ptrdiff_t K = kind == FM_Q8_BINARY ? 2 : T;
            for (ptrdiff_t c = 0; c < K; c++) {
                double p = out[c], q = 1.0 - p, mn = p < q ? p : q;
                mn = mn > 0.0 ? mn : 0.0;
                double d = mn * G + 1e-4;
                ok &= d * (1.0 + g->rtol) <= g->atol + g->rtol * p;
            }
            ok &= outact == FM_Q8_SOFTMAX || outact == FM_Q8_LOGISTIC;
        }
        if (ok) return 0;
    }
    return 1;
}

/* Rows rows[0:cnt] of the block (X rows from x, row stride rs elements): the float kernel's
 * scores, four rows per call (its 4-row path, the one its batches take), then its transform.
 * xs: 4 * F elements of scratch, sd: 4 * T doubles. */
static void fm_q8_recheck(const fm_q8 *m, const fm_q8_guard *g, const ptrdiff_t *rows, ptrdiff_t cnt,
                          const void *x, int x32, ptrdiff_t rs, int kind, double *out, ptrdiff_t *idx,
                          void *xs, double *sd)
{
    const ptrdiff_t F = m->dims[0], T = m->dims[1];
    const ptrdiff_t oc = kind == FM_Q8_BINARY ? 2 : T;
    const size_t esz = x32 ? sizeof(float) : sizeof(double);
    for (ptrdiff_t j = 0; j < cnt; j += 4) {
        ptrdiff_t r = cnt - j < 4 ? cnt - j : 4;
        for (ptrdiff_t q = 0; q < r; q++)
            memcpy((char *)xs + (size_t)(q * F) * esz, (const char *)x + (size_t)(rows[j + q] * rs) * esz,
                   (size_t)F * esz);
        if (x32) fm_linear_scores_f32((const float *)xs, F, 0, r, F, g->fp, g->w, g->b, T, sd);
        else fm_linear_scores_f64((const double *)xs, F, 0, r, F, g->fp, g->w, g->b, T, sd);
        for (ptrdiff_t q = 0; q < r; q++) {
            const ptrdiff_t i = rows[j + q];
            double *s = sd + q * T, *o = out ? out + i * oc : NULL;
            if (kind == FM_Q8_ARGMAX) {
                fm_linear_argmax(s, 1, T, idx + i);
            } else if (kind == FM_Q8_BINARY) {
                if (m->outact == FM_Q8_LOGISTIC) fm_linear_transform(s, 1, 1, FM_LOGISTIC_BINARY, o);
                else { o[0] = 1.0 - s[0]; o[1] = s[0]; }
            } else if (m->outact == FM_Q8_SOFTMAX) {
                fm_linear_transform(s, 1, T, FM_SOFTMAX, o);
            } else {
                for (ptrdiff_t c = 0; c < T; c++) o[c] = s[c];
            }
        }
    }
}

/* scratch per block: y (BLOCK x width floats), xq (BLOCK x kmax bytes), row s and z */
static inline size_t fm_q8_scratch_bytes(const fm_q8 *m, ptrdiff_t rows)
{
    size_t y = (size_t)rows * m->width * sizeof(float);
    size_t q = ((size_t)rows * m->kmax + 63) & ~(size_t)63;
    /* guard: flagged row numbers, 4 X rows, 4 rows of float scores */
    size_t g = m->guard ? (size_t)rows * sizeof(ptrdiff_t) + 4 * (size_t)m->dims[0] * sizeof(double)
                          + 4 * (size_t)m->width * sizeof(double) + 3 * 64 : 0;
    return y + q + (size_t)rows * (sizeof(float) + sizeof(int32_t)) + 64 + g;
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
            ptrdiff_t oc = c->kind == FM_Q8_BINARY ? 2 : (c->kind == FM_Q8_ARGMAX ? 1 : m->dims[l + 1]);
            double *out = c->out ? c->out + i0 * oc : NULL;
            ptrdiff_t *idx = c->idx ? c->idx + i0 : NULL;
            if (m->guard == NULL) {
                fm_q8_emit(y, ld, n, m->dims[l + 1], m->outact, c->kind, out, idx);
                break;
            }
            /* one layer: xq still holds the quantized input rows */
            ptrdiff_t *flag = (ptrdiff_t *)(((uintptr_t)(rz + n) + 63) & ~(uintptr_t)63);
            char *xs = (char *)(((uintptr_t)(flag + n) + 63) & ~(uintptr_t)63);
            double *sd = (double *)(((uintptr_t)(xs + 4 * F * sizeof(double)) + 63) & ~(uintptr_t)63);
            const size_t xsz = c->x32 ? sizeof(float) : sizeof(double);
            const char *x0 = (const char *)c->X + (size_t)(i0 * c->rs) * xsz;
            ptrdiff_t redo = 0;
            for (ptrdiff_t i = 0; i < n; i++)
                if (fm_q8_guard_row(m, m->guard, y + i * ld, xq + i * m->kpad[0], rs[i], rz[i],
                                    x0 + (size_t)(i * c->rs) * xsz, c->x32, c->kind,
                                    out ? out + i * oc : NULL, idx ? idx + i : NULL))
                    flag[redo++] = i;
            if (redo) {
                fm_q8_recheck(m, m->guard, flag, redo, x0, c->x32, c->rs, c->kind, out, idx, xs, sd);
                if (c->rechecked) __atomic_fetch_add(c->rechecked, redo, __ATOMIC_RELAXED);
            }
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
                     double *out, ptrdiff_t *idx, int n_threads, ptrdiff_t min_parallel, ptrdiff_t *rechecked)
{
    fm_q8_call c = {m, X, x32, rs, kind, out, idx, rechecked};
    int par = n_threads > 1 && n >= min_parallel;
    ptrdiff_t blk = fm_q8_block_rows(n, FM_Q8_BLOCK, par, n_threads);
    return fm_q8_run_blocks(fm_q8_block_any, &c, n, blk, fm_q8_scratch_bytes(m, n < blk ? n : blk), par,
                            n_threads);
}

#endif
