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
 * Residual pass (per layer, fm_q8.resid; the default of int8 linear models)
 * ------------------------------------------------------------------------
 * One pass rounds x by up to s/2.  With the residual pass the row's rounding
 * residual gets its own uint8 codes, step s/256, zero point 128:
 *
 *     r = fma(x, 1/s, -(u - z)),  v = clamp(rint(256 r) + 128, 0, 255)
 *     x ~ s ((u - z) + (v - 128) / 256)          (error <= s/512, s/256 where v clamps)
 *
 * and the layer takes a second int32 dot product, acc2 = sum_k v[k] Q[k, j], with
 * the same weights (the code rows 2i and 2i + 1 of the scratch share each
 * weight load):  y[j] = ((acc - z colsum) + (acc2 - 128 colsum) / 256) (s sw[j]) + b[j].
 * Weights stay int8; the activation error drops ~256x.
 *
 * Quantizing rows: per block, every row's range (AVX-512 min/max and a NaN/inf
 * check), then all rows' (s, 1/s, z) in one vector loop, then the codes
 * (vcvtps2dq rounds half to even like rintf; vpmovdb to a register, then a
 * plain store: its memory form is slow on Zen 4).  The portable C loops give the
 * same bytes.
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
 * each group of 8 code rows, an 8 x 2-vector tile of int32 accumulators (8 x 1
 * where the panel's second 16 columns are padding, e.g. 10 classes); the
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
 * where E bounds |x[k] - x^[k]| (dynamic rows: s (1/2 + 2^-10), see
 * fm_q8_guard_row; static or degenerate ranges and the residual pass: measured
 * element by element), N1 the 1-norm of the dequantized row x^, l1[c] the
 * 1-norm of the float coefficients of target c, dw[c] = max_k |w - sw Q| (sw
 * as the kernel holds it: float32), wq[c] = max_k |sw Q|; the 1e-6 term covers
 * the float32 epilogue (four roundings, five with the residual pass), float32 biases and the float kernel's
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

#if defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512DQ__)
#include <immintrin.h>
#define FM_Q8_VNNI 1
#else
#define FM_Q8_VNNI 0
#endif

#define FM_Q8_NR 32        /* columns per panel (two 16-lane vectors) */
#define FM_Q8_MR 8         /* code rows per batch tile (16 when a panel's last 16 columns are padding) */
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
    const uint8_t *resid;        /* n_layers: 1 = the layer's input rows get the residual pass; NULL: none */
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
    sc = sc > 0.0f && sc <= 3.4028234664e38f ? sc : 1.0f;   /* not NaN, 0 or inf */
    float iv = 1.0f / sc;
    float zz = rintf(-lo * iv);
    *s = sc;
    *inv = iv;
    *z = (int32_t)(zz < 0.0f ? 0.0f : (zz > 255.0f ? 255.0f : zz));
}

/* Codes of one row given (1/s, z): u[0:n] = clamp(rint(x * (1/s)) + z, 0, 255) and, when v is
 * not NULL, the residual codes v[0:n] = clamp(rint(256 fma(x, 1/s, -(u - z))) + 128, 0, 255)
 * (see "Residual pass" above); u[n:kpad] = v[n:kpad] = 0. The portable C loops below and the
 * AVX-512 ones (fm_q8_codes_v) compute the same bytes. */
#define FM_Q8_CODES_C(NAME, TX)                                                                \
static inline void NAME(const TX *x, ptrdiff_t n, ptrdiff_t kpad, float inv, int32_t z,         \
                        uint8_t *u, uint8_t *v)                                                 \
{                                                                                               \
    const float zf = (float)z;                                                                  \
    _Pragma("omp simd")                                                                         \
    for (ptrdiff_t k = 0; k < n; k++) {                                                         \
        float q = rintf((float)x[k] * inv) + zf;                                                \
        q = q < 0.0f ? 0.0f : (q > 255.0f ? 255.0f : q);                                       \
        u[k] = (uint8_t)(int32_t)q;                                                             \
    }                                                                                           \
    for (ptrdiff_t k = n; k < kpad; k++) u[k] = 0;                                              \
    if (v == NULL) return;                                                                      \
    _Pragma("omp simd")                                                                         \
    for (ptrdiff_t k = 0; k < n; k++) {                                                         \
        float r = fmaf((float)x[k], inv, -(float)((int32_t)u[k] - z));                          \
        float q = rintf(r * 256.0f) + 128.0f;                                                   \
        q = q < 0.0f ? 0.0f : (q > 255.0f ? 255.0f : q);                                        \
        v[k] = (uint8_t)(int32_t)q;                                                             \
    }                                                                                           \
    for (ptrdiff_t k = n; k < kpad; k++) v[k] = 0;                                              \
}
FM_Q8_CODES_C(fm_q8_codes_c_f, float)
FM_Q8_CODES_C(fm_q8_codes_c_d, double)

/* [lo, hi] of x[0:n] in float32, starting from [0, 0]; returns 1 if x holds NaN or +-inf */
#define FM_Q8_RANGE_C(NAME, TX)                                                                \
static inline int NAME(const TX *x, ptrdiff_t n, float *plo, float *phi)                        \
{                                                                                               \
    float lo = 0.0f, hi = 0.0f;                                                                 \
    TX chk = 0;                                                                                 \
    _Pragma("omp simd reduction(min:lo) reduction(max:hi) reduction(+:chk)")                    \
    for (ptrdiff_t k = 0; k < n; k++) {                                                         \
        float f = (float)x[k];                                                                  \
        lo = f < lo ? f : lo;                                                                   \
        hi = f > hi ? f : hi;                                                                   \
        chk += x[k] - x[k];                                                                     \
    }                                                                                           \
    *plo = lo;                                                                                  \
    *phi = hi;                                                                                  \
    return chk != chk;                                                                          \
}
FM_Q8_RANGE_C(fm_q8_range_c_f, float)
FM_Q8_RANGE_C(fm_q8_range_c_d, double)

#if FM_Q8_VNNI
/* 16 elements of x as float32 (lanes off m: 0) */
static inline __m512 fm_q8_load_f(const float *x, __mmask16 m) { return _mm512_maskz_loadu_ps(m, x); }
static inline __m512 fm_q8_load_d(const double *x, __mmask16 m)
{
    __m256 a = _mm512_cvtpd_ps(_mm512_maskz_loadu_pd((__mmask8)m, x));
    __m256 b = _mm512_cvtpd_ps(_mm512_maskz_loadu_pd((__mmask8)(m >> 8), x + 8));
    return _mm512_insertf32x8(_mm512_castps256_ps512(a), b, 1);
}
static inline __mmask16 fm_q8_mask(ptrdiff_t k, ptrdiff_t n)
{
    return n - k >= 16 ? (__mmask16)0xFFFF : (n > k ? (__mmask16)((1u << (n - k)) - 1u) : (__mmask16)0);
}

/* 16 int32 in [0, 255] as bytes (vpmovdb to a register: its memory form is slow on Zen 4) */
static inline void fm_q8_store16(uint8_t *u, __mmask16 m, __m512i q)
{
    __m128i b = _mm512_cvtepi32_epi8(q);
    if (m == 0xFFFF) _mm_storeu_si128((__m128i *)u, b);
    else _mm_mask_storeu_epi8(u, m, b);
}

/* The AVX-512 form of fm_q8_codes_c: x * (1/s) is clamped to +-1024 before rounding (the code
 * clamps to [0, 255] anyway; cvtps2dq rounds half to even under the default MXCSR, as rintf) */
#define FM_Q8_CODES_V(NAME, TX, LOAD)                                                          \
static inline void NAME(const TX *x, ptrdiff_t n, ptrdiff_t kpad, float inv, int32_t z,         \
                        uint8_t *u, uint8_t *v)                                                 \
{                                                                                               \
    const __m512 iv = _mm512_set1_ps(inv), lim = _mm512_set1_ps(1024.0f), nlim = _mm512_set1_ps(-1024.0f); \
    const __m512 f256 = _mm512_set1_ps(256.0f);                                                 \
    const __m512i zi = _mm512_set1_epi32(z), c0 = _mm512_setzero_si512();                       \
    const __m512i c255 = _mm512_set1_epi32(255), c128 = _mm512_set1_epi32(128);                 \
    for (ptrdiff_t k = 0; k < kpad; k += 16) {                                                  \
        const __mmask16 mn = fm_q8_mask(k, n), mk = fm_q8_mask(k, kpad);                        \
        const __m512 xv = LOAD(x + k, mn);                                                      \
        __m512 t = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(xv, iv), nlim), lim);              \
        __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(t), zi);                                \
        q = _mm512_maskz_min_epi32(mn, _mm512_max_epi32(q, c0), c255);                          \
        fm_q8_store16(u + k, mk, q);                                                            \
        if (v != NULL) {                                                                        \
            __m512 back = _mm512_cvtepi32_ps(_mm512_sub_epi32(q, zi));                          \
            __m512 r = _mm512_mul_ps(_mm512_fmsub_ps(xv, iv, back), f256);                      \
            r = _mm512_min_ps(_mm512_max_ps(r, nlim), lim);                                     \
            __m512i w = _mm512_add_epi32(_mm512_cvtps_epi32(r), c128);                          \
            w = _mm512_maskz_min_epi32(mn, _mm512_max_epi32(w, c0), c255);                      \
            fm_q8_store16(v + k, mk, w);                                                        \
        }                                                                                       \
    }                                                                                           \
}
FM_Q8_CODES_V(fm_q8_codes_v_f, float, fm_q8_load_f)
FM_Q8_CODES_V(fm_q8_codes_v_d, double, fm_q8_load_d)

static inline int fm_q8_range_v_f(const float *x, ptrdiff_t n, float *plo, float *phi)
{
    __m512 lo = _mm512_setzero_ps(), hi = lo, chk = lo;
    for (ptrdiff_t k = 0; k < n; k += 16) {
        __m512 f = _mm512_maskz_loadu_ps(fm_q8_mask(k, n), x + k);
        lo = _mm512_min_ps(lo, f);
        hi = _mm512_max_ps(hi, f);
        chk = _mm512_add_ps(chk, _mm512_sub_ps(f, f));
    }
    *plo = _mm512_reduce_min_ps(lo);
    *phi = _mm512_reduce_max_ps(hi);
    return _mm512_cmp_ps_mask(chk, chk, _CMP_UNORD_Q) != 0;
}
static inline int fm_q8_range_v_d(const double *x, ptrdiff_t n, float *plo, float *phi)
{
    __m512 lo = _mm512_setzero_ps(), hi = lo;
    __m512d chk = _mm512_setzero_pd();
    for (ptrdiff_t k = 0; k < n; k += 16) {
        const __mmask16 m = fm_q8_mask(k, n);
        __m512d a = _mm512_maskz_loadu_pd((__mmask8)m, x + k), b = _mm512_maskz_loadu_pd((__mmask8)(m >> 8), x + k + 8);
        chk = _mm512_add_pd(chk, _mm512_add_pd(_mm512_sub_pd(a, a), _mm512_sub_pd(b, b)));
        __m512 f = _mm512_insertf32x8(_mm512_castps256_ps512(_mm512_cvtpd_ps(a)), _mm512_cvtpd_ps(b), 1);
        lo = _mm512_min_ps(lo, f);
        hi = _mm512_max_ps(hi, f);
    }
    *plo = _mm512_reduce_min_ps(lo);
    *phi = _mm512_reduce_max_ps(hi);
    return _mm512_cmp_pd_mask(chk, chk, _CMP_UNORD_Q) != 0;
}
#endif

/* Row quantization for element type TX: NAME##_apply (given 1/s and z), NAME (dynamic: the
 * row's own (s, z); returns 1 if x holds NaN or +-inf) and NAME##_rows (either, for the int8
 * dense kernel: portable selects the C loops, v the residual codes or NULL). */
#if FM_Q8_VNNI
#define FM_Q8_PICK(portable, V, C) ((portable) ? (C) : (V))
#else
#define FM_Q8_PICK(portable, V, C) (C)
#endif
#define FM_Q8_QUANT(NAME, TX, CODES_V, CODES_C, RANGE_V, RANGE_C)                              \
static inline int NAME##_rows(const TX *x, ptrdiff_t n, ptrdiff_t kpad, const float *st_s,      \
                              const int32_t *st_z, int portable, uint8_t *u, uint8_t *v,        \
                              float *s, int32_t *z)                                             \
{                                                                                               \
    float inv;                                                                                  \
    if (st_s != NULL) {  /* static: the layer's (s, z) */                                       \
        *s = *st_s; *z = *st_z; inv = 1.0f / *st_s;                                             \
    } else {                                                                                    \
        float lo, hi;                                                                           \
        int bad = FM_Q8_VNNI && !portable ? FM_Q8_PICK(0, RANGE_V, RANGE_C)(x, n, &lo, &hi)      \
                                          : RANGE_C(x, n, &lo, &hi);                            \
        if (bad) return 1;                                                                      \
        fm_q8_params(lo, hi, s, &inv, z);                                                       \
    }                                                                                           \
    if (FM_Q8_VNNI && !portable) FM_Q8_PICK(0, CODES_V, CODES_C)(x, n, kpad, inv, *z, u, v);    \
    else CODES_C(x, n, kpad, inv, *z, u, v);                                                    \
    return 0;                                                                                   \
}                                                                                               \
/* u[0:n] from x[0:n] with the given 1/s and z; u[n:kpad] = 0 */                               \
static inline void NAME##_apply(const TX *x, ptrdiff_t n, ptrdiff_t kpad, float inv, int32_t z,  \
                                uint8_t *u)                                                     \
{                                                                                               \
    FM_Q8_PICK(0, CODES_V, CODES_C)(x, n, kpad, inv, z, u, NULL);                               \
}                                                                                               \
static inline int NAME(const TX *x, ptrdiff_t n, ptrdiff_t kpad, uint8_t *u, float *s, int32_t *z) \
{                                                                                               \
    return NAME##_rows(x, n, kpad, NULL, NULL, 0, u, NULL, s, z);                               \
}

FM_Q8_QUANT(fm_q8_quant_f, float, fm_q8_codes_v_f, fm_q8_codes_c_f, fm_q8_range_v_f, fm_q8_range_c_f)
FM_Q8_QUANT(fm_q8_quant_d, double, fm_q8_codes_v_d, fm_q8_codes_c_d, fm_q8_range_v_d, fm_q8_range_c_d)

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

/* The rows of a block: row i of x (row stride ld) -> code rows at u + i rp kp (and its residual
 * codes kp bytes further when rp = 2), s[i], z[i]; st_s / st_z: the layer's static (s, z) or
 * NULL; inv: n floats of scratch. Ranges first, then every row's (s, 1/s, z) in one vector loop,
 * then the codes. Returns 1 if a row holds NaN or +-inf (its codes are then meaningless). */
#define FM_Q8_QUANT_BLOCK(NAME, TX, CODES_V, CODES_C, RANGE_V, RANGE_C, NONFINITE)              \
static inline int NAME(const TX *x, ptrdiff_t ld, ptrdiff_t n, ptrdiff_t F, ptrdiff_t kp, int rp,  \
                       const float *st_s, const int32_t *st_z, int portable, uint8_t *u,         \
                       float *s, int32_t *z, float *inv)                                        \
{                                                                                               \
    int bad = 0;                                                                                \
    if (st_s != NULL) {                                                                         \
        for (ptrdiff_t i = 0; i < n; i++) {                                                     \
            bad |= NONFINITE(x + i * ld, F);                                                    \
            s[i] = *st_s; z[i] = *st_z; inv[i] = 1.0f / *st_s;                                  \
        }                                                                                       \
    } else {                                                                                    \
        /* s and inv hold lo and hi until the params */                                         \
        if (FM_Q8_VNNI && !portable)                                                            \
            for (ptrdiff_t i = 0; i < n; i++) bad |= FM_Q8_PICK(0, RANGE_V, RANGE_C)(x + i * ld, F, s + i, inv + i); \
        else                                                                                    \
            for (ptrdiff_t i = 0; i < n; i++) bad |= RANGE_C(x + i * ld, F, s + i, inv + i);    \
        _Pragma("omp simd")                                                                     \
        for (ptrdiff_t i = 0; i < n; i++) fm_q8_params(s[i], inv[i], s + i, inv + i, z + i);   \
    }                                                                                           \
    if (FM_Q8_VNNI && !portable)                                                                \
        for (ptrdiff_t i = 0; i < n; i++) {                                                     \
            uint8_t *ui = u + i * rp * kp;                                                      \
            FM_Q8_PICK(0, CODES_V, CODES_C)(x + i * ld, F, kp, inv[i], z[i], ui, rp == 2 ? ui + kp : NULL); \
        }                                                                                       \
    else                                                                                        \
        for (ptrdiff_t i = 0; i < n; i++) {                                                     \
            uint8_t *ui = u + i * rp * kp;                                                      \
            CODES_C(x + i * ld, F, kp, inv[i], z[i], ui, rp == 2 ? ui + kp : NULL);             \
        }                                                                                       \
    return bad;                                                                                 \
}

FM_Q8_QUANT_BLOCK(fm_q8_quant_block_f, float, fm_q8_codes_v_f, fm_q8_codes_c_f, fm_q8_range_v_f, fm_q8_range_c_f,
                  fm_q8_nonfinite_f)
FM_Q8_QUANT_BLOCK(fm_q8_quant_block_d, double, fm_q8_codes_v_d, fm_q8_codes_c_d, fm_q8_range_v_d, fm_q8_range_c_d,
                  fm_q8_nonfinite_d)

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
    const uint8_t *x[16];
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

/* The tile of mr code rows x nv vectors: VNNI (constant shapes, inlined) or portable C. */
static inline __attribute__((always_inline)) void fm_q8_tiles(int portable, int mr, int nv, const uint8_t *const *xr, ptrdiff_t kg,
                               const int8_t *const *wv, int32_t acc[][16])
{
#if FM_Q8_VNNI
    if (!portable) {
#define FM_Q8_T(R, V) case R: fm_q8_tile_vnni(R, V, xr, kg, wv, acc); return;
        if (nv == 2) switch (mr) { FM_Q8_T(8, 2) FM_Q8_T(7, 2) FM_Q8_T(6, 2) FM_Q8_T(5, 2) FM_Q8_T(4, 2)
                                   FM_Q8_T(3, 2) FM_Q8_T(2, 2) FM_Q8_T(1, 2) default: break; }
        else if (nv == 1) switch (mr) { FM_Q8_T(16, 1) FM_Q8_T(15, 1) FM_Q8_T(14, 1) FM_Q8_T(13, 1)
                                        FM_Q8_T(12, 1) FM_Q8_T(11, 1) FM_Q8_T(10, 1) FM_Q8_T(9, 1)
                                        FM_Q8_T(8, 1) FM_Q8_T(7, 1) FM_Q8_T(6, 1) FM_Q8_T(5, 1)
                                        FM_Q8_T(4, 1) FM_Q8_T(3, 1) FM_Q8_T(2, 1) FM_Q8_T(1, 1)
                                        default: break; }
#undef FM_Q8_T
        if (mr == 1 && nv == 8) { fm_q8_tile_vnni(1, 8, xr, kg, wv, acc); return; }
        if (mr == 1 && nv == 6) { fm_q8_tile_vnni(1, 6, xr, kg, wv, acc); return; }
        if (mr == 1 && nv == 4) { fm_q8_tile_vnni(1, 4, xr, kg, wv, acc); return; }
        if (mr == 2 && nv == 4) { fm_q8_tile_vnni(2, 4, xr, kg, wv, acc); return; }
    }
#endif
    (void)portable;
    fm_q8_tile_c(mr, nv, xr, kg, wv, acc);
}

/* The epilogue of a row with the residual pass: code row a1 (zero point z) and residual row a2
 * (zero point 128, step s / 256): y = ((acc1 - z colsum) + (acc2 - 128 colsum) / 256) (s sw) + b. */
static inline void fm_q8_epilogue2(const int32_t *a1, const int32_t *a2, int32_t z, float s, const int32_t *cs,
                                   const float *sw, const float *b, float *y)
{
    _Pragma("omp simd")
    for (int c = 0; c < 16; c++)
        y[c] = ((float)(a1[c] - z * cs[c]) + (float)(a2[c] - 128 * cs[c]) * (1.0f / 256.0f)) * (s * sw[c]) + b[c];
}

/* One layer for rows [0, n) of the block: xq (code rows of kp bytes; with the residual pass
 * rows 2i and 2i + 1 are row i's codes and residual codes) -> y (row stride ld). */
static void fm_q8_layer(const fm_q8 *m, int l, const uint8_t *xq, ptrdiff_t n, const float *rs,
                        const int32_t *rz, float *y, ptrdiff_t ld)
{
    const ptrdiff_t kp = m->kpad[l], kg = kp / 4, np = m->panels[l], H = m->dims[l + 1];
    const int8_t *W = m->w[l];
    const float *sw = m->sw[l], *b = m->b[l];
    const int32_t *cs = m->csum[l];
    const ptrdiff_t pstride = kg * 4 * FM_Q8_NR;   /* bytes per panel */
    const int rp = m->resid != NULL && m->resid[l] ? 2 : 1;   /* code rows per row */
    const ptrdiff_t nc = n * rp;
    int32_t acc[16][16] __attribute__((aligned(64)));
    const uint8_t *xr[16];
    const int8_t *wv[8];
    int portable = !FM_Q8_VNNI || m->portable;

    if (n == 1) {
        /* one row: up to 8 / rp vectors (four panels, or two with the residual pass) per tile */
        xr[0] = xq;
        xr[1] = xq + kp;
        const int pmax = 4 / rp;
        for (ptrdiff_t p = 0; p < np; p += pmax) {
            int npp = np - p < pmax ? (int)(np - p) : pmax, nv = 2 * npp;
            for (int v = 0; v < nv; v++) wv[v] = W + (p + v / 2) * pstride + (v % 2) * 64;
            fm_q8_tiles(portable, rp, nv, xr, kg, wv, acc);
            for (int v = 0; v < nv; v++) {
                ptrdiff_t c0 = p * FM_Q8_NR + v * 16;
                if (rp == 1) fm_q8_epilogue(acc[v], rz[0], rs[0], cs + c0, sw + c0, b + c0, y + c0);
                else fm_q8_epilogue2(acc[v], acc[nv + v], rz[0], rs[0], cs + c0, sw + c0, b + c0, y + c0);
            }
        }
        return;
    }
    for (ptrdiff_t p = 0; p < np; p++) {
        /* a panel whose second half is padding: one vector, tiles of 16 code rows */
        const int nv = H - p * FM_Q8_NR > 16 ? 2 : 1, mrmax = nv == 2 ? FM_Q8_MR : 8;
        wv[0] = W + p * pstride;
        wv[1] = wv[0] + 64;
        for (ptrdiff_t i = 0; i < nc; i += mrmax) {
            int mr = nc - i < mrmax ? (int)(nc - i) : mrmax;
            for (int r = 0; r < mr; r++) xr[r] = xq + (i + r) * kp;
            fm_q8_tiles(portable, mr, nv, xr, kg, wv, acc);
            const ptrdiff_t c0 = p * FM_Q8_NR;
            if (rp == 1)
                for (int r = 0; r < mr; r++)
                    for (int v = 0; v < nv; v++)
                        fm_q8_epilogue(acc[r * nv + v], rz[i + r], rs[i + r], cs + c0 + 16 * v, sw + c0 + 16 * v,
                                       b + c0 + 16 * v, y + (i + r) * ld + c0 + 16 * v);
            else
                for (int r = 0; r < mr; r += 2) {
                    const ptrdiff_t row = (i + r) / 2;
                    for (int v = 0; v < nv; v++)
                        fm_q8_epilogue2(acc[r * nv + v], acc[(r + 1) * nv + v], rz[row], rs[row], cs + c0 + 16 * v,
                                        sw + c0 + 16 * v, b + c0 + 16 * v, y + row * ld + c0 + 16 * v);
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
            _Pragma("omp simd")
            for (ptrdiff_t k = 0; k < K; k++) r[k] = fm_exp_f32(r[k] - mx);
            for (ptrdiff_t k = 0; k < K; k++) s += r[k];
            float inv = 1.0f / s;
            _Pragma("omp simd")
            for (ptrdiff_t k = 0; k < K; k++) r[k] *= inv;
        } else if (outact != FM_Q8_IDENTITY) {
            fm_q8_activate(r, K, outact);
        }
        if (kind == FM_Q8_VALUES) {
            _Pragma("omp simd")
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

/* max_k |x[k] - x^[k]| in float64, rounded up: the exact quantization error of a row, x^ the
 * dequantized row: s (u[k] - z), or with residual codes v, s ((u[k] - z) + (v[k] - 128) / 256) */
static double fm_q8_row_error(const void *X, int x32, const uint8_t *u, const uint8_t *v, ptrdiff_t F, float s,
                              int32_t z)
{
    double e = 0.0, sd = (double)s;
    for (ptrdiff_t k = 0; k < F; k++) {
        double xk = x32 ? (double)((const float *)X)[k] : ((const double *)X)[k];
        double c = (double)((int32_t)u[k] - z) + (v ? (double)((int32_t)v[k] - 128) * (1.0 / 256.0) : 0.0);
        double d = fabs(xk - sd * c);
        e = d > e ? d : e;
    }
    return e * (1.0 + 1e-12) + 1e-300;
}

/* sum_k |(u[k] - z) + (v[k] - 128) / 256| over k < n (exact in float64) */
static inline double fm_q8_dist1_resid(const uint8_t *u, const uint8_t *v, ptrdiff_t n, int32_t z)
{
    double a = 0.0;
    for (ptrdiff_t k = 0; k < n; k++)
        a += fabs((double)((int32_t)u[k] - z) + (double)((int32_t)v[k] - 128) * (1.0 / 256.0));
    return a;
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
static int fm_q8_guard_row(const fm_q8 *m, const fm_q8_guard *g, float *y, const uint8_t *u, const uint8_t *rv,
                           float s, int32_t z, const void *x, int x32, int kind, double *out, ptrdiff_t *idx)
{
    const ptrdiff_t F = m->dims[0], T = m->dims[1];
    const int outact = m->outact;
    /* E: the largest |x - s (u - z)| (see the derivation in the header comment) */
    double E;
    if (m->in_s == NULL && s > 1e-30f && s != 1.0f && rv == NULL)
        E = (double)s * (0.5 + 1.0 / 1024.0);
    else  /* static ranges clamp; s = 1 is also the fallback of a degenerate range; residual codes */
        E = fm_q8_row_error(x, x32, u, rv, F, s, z);
    const double N1 = (double)s * (rv ? fm_q8_dist1_resid(u, rv, F, z) : (double)fm_q8_dist1(u, F, z));
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
        fm_q8_emit(y, m->panels[0] * FM_Q8_NR, 1, T, outact, kind, out, idx);
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

/* code rows per row in the scratch: 2 if any layer has the residual pass */
static inline ptrdiff_t fm_q8_code_rows(const fm_q8 *m)
{
    if (m->resid != NULL)
        for (int l = 0; l < m->n_layers; l++) if (m->resid[l]) return 2;
    return 1;
}

/* scratch per block: y (BLOCK x width floats), xq (BLOCK x kmax bytes, twice with the residual
 * pass), row s and z */
static inline size_t fm_q8_scratch_bytes(const fm_q8 *m, ptrdiff_t rows)
{
    size_t y = (size_t)rows * m->width * sizeof(float);
    size_t q = ((size_t)rows * m->kmax * fm_q8_code_rows(m) + 63) & ~(size_t)63;
    /* guard: flagged row numbers, 4 X rows, 4 rows of float scores */
    size_t g = m->guard ? (size_t)rows * sizeof(ptrdiff_t) + 4 * (size_t)m->dims[0] * sizeof(double)
                          + 4 * (size_t)m->width * sizeof(double) + 3 * 64 : 0;
    return y + q + (size_t)rows * (2 * sizeof(float) + sizeof(int32_t)) + 64 + g;
}

static int fm_q8_block(const fm_q8_call *c, ptrdiff_t i0, ptrdiff_t n, char *buf)
{
    const fm_q8 *m = c->m;
    float *y = (float *)buf;
    uint8_t *xq = (uint8_t *)(buf + (size_t)n * m->width * sizeof(float));
    float *rs = (float *)((char *)xq + (((size_t)n * m->kmax * fm_q8_code_rows(m) + 63) & ~(size_t)63));
    int32_t *rz = (int32_t *)(rs + n);
    float *rinv = (float *)(rz + n);
    const ptrdiff_t F = m->dims[0];
    const int portable = m->portable;
    /* the input: row i's codes at xq + rp i kp, its residual codes (rp = 2) kp bytes further */
    {
        const int rp = m->resid != NULL && m->resid[0] ? 2 : 1;
        const int bad = c->x32
            ? fm_q8_quant_block_f((const float *)c->X + i0 * c->rs, c->rs, n, F, m->kpad[0], rp, m->in_s, m->in_z,
                                  portable, xq, rs, rz, rinv)
            : fm_q8_quant_block_d((const double *)c->X + i0 * c->rs, c->rs, n, F, m->kpad[0], rp, m->in_s, m->in_z,
                                  portable, xq, rs, rz, rinv);
        if (bad) return 1;
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
            const ptrdiff_t kp = m->kpad[0], rp = m->resid != NULL && m->resid[0] ? 2 : 1;
            ptrdiff_t *flag = (ptrdiff_t *)(((uintptr_t)(rinv + n) + 63) & ~(uintptr_t)63);
            char *xs = (char *)(((uintptr_t)(flag + n) + 63) & ~(uintptr_t)63);
            double *sd = (double *)(((uintptr_t)(xs + 4 * F * sizeof(double)) + 63) & ~(uintptr_t)63);
            const size_t xsz = c->x32 ? sizeof(float) : sizeof(double);
            const char *x0 = (const char *)c->X + (size_t)(i0 * c->rs) * xsz;
            ptrdiff_t redo = 0;
            for (ptrdiff_t i = 0; i < n; i++) {
                const uint8_t *u = xq + i * rp * kp;
                if (fm_q8_guard_row(m, m->guard, y + i * ld, u, rp == 2 ? u + kp : NULL, rs[i], rz[i],
                                    x0 + (size_t)(i * c->rs) * xsz, c->x32, c->kind,
                                    out ? out + i * oc : NULL, idx ? idx + i : NULL))
                    flag[redo++] = i;
            }
            if (redo) {
                fm_q8_recheck(m, m->guard, flag, redo, x0, c->x32, c->rs, c->kind, out, idx, xs, sd);
                if (c->rechecked) __atomic_fetch_add(c->rechecked, redo, __ATOMIC_RELAXED);
            }
            break;
        }
        const ptrdiff_t H = m->dims[l + 1], kp = m->kpad[l + 1], rp = m->resid != NULL && m->resid[l + 1] ? 2 : 1;
        /* row by row while the row is in L1: activation, then its codes (a hidden row that
         * overflowed to inf gets the codes of the fallback range, as before) */
        for (ptrdiff_t i = 0; i < n; i++) {
            float *yr = y + i * ld;
            fm_q8_activate(yr, H, m->hidden);
            fm_q8_quant_f_rows(yr, H, kp, m->in_s ? m->in_s + l + 1 : NULL, m->in_z ? m->in_z + l + 1 : NULL,
                               portable, xq + i * rp * kp, rp == 2 ? xq + i * rp * kp + kp : NULL, rs + i, rz + i);
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
