/* Activation kernels over contiguous float / double arrays.
 *
 * Layout: every kernel takes contiguous input and output pointers and a length
 * (elementwise) or rows x cols in C order (row-wise softmax).  In-place calls
 * (x == out) are allowed; partially overlapping buffers are not.  Kernels are
 * serial: threads are the caller's business (each thread gets a range; for
 * softmax, whole blocks, see fm_softmax_block_rows).
 *
 * Elementwise loop order: one `omp simd` loop over the flat array (after a
 * short scalar run up to a 64-byte boundary of out); the scalar function
 * inside is branch-free and inlined, so the loop compiles to SIMD code
 * (AVX-512 / AVX2 with -march=native).  `omp simd` (enabled by -fopenmp) also
 * lets GCC vectorize min / max / sum reductions, which it would not reorder
 * on its own without -ffast-math; nothing else is relaxed, so NaN and inf
 * keep their IEEE meaning.
 *
 * Softmax loop order: blocks of rows of at most FM_BLOCK_BYTES, so that a
 * block stays in L1 and memory sees one read and one write per element:
 * an exp pass over the whole block, per-row sums, a scaling pass (details at
 * fm__softmax_block).  Exp dominates: for float, fm_vexpin_f32 (a 32-entry
 * table, six FMA-class operations per 16 floats).  Float rows of 65 to
 * 1024 columns on AVX-512 go one row at a time instead, the sum formed in
 * the exp pass (fm__softmax_row_avx512).  Rows of more than 32 columns are
 * scaled with stores aligned to 64 bytes.  When the caller says the output
 * is too large to stay in cache, stores go past it where that measured
 * faster (see fm__softmax_block, fm__softmax_row_avx512); otherwise the exp
 * pass asks for the output lines ahead (prefetchw).  Rows of <= 32 columns
 * are too short for vectors along the row; they use GNU C vector extensions
 * (16 rows at a time, see fm__normalize_rows), which GCC lowers to whatever
 * SIMD the target has.
 *
 * Accuracy, measured against correctly rounded references: exp <= 2 ulp
 * (float, fm_expneg_fast / fm_expin) or 1 ulp; sigmoid <= 3.5 ulp (float) /
 * 2.5 ulp (double); tanh 2.5; softplus 1.5-3; swish 4.5; elu, expm1 1;
 * softmax a few ulp (row sums to about one ulp, see fm_rowsum_f32), plus,
 * for float rows in the fast range, 1.3e-8 |x - mean| relative from
 * fm_vexpin_f32's rounded 1/ln2 (a fifth of what rounding x - max costs).
 * Semantics: NaN in -> NaN out (softmax: a NaN anywhere in a row makes the
 * row NaN; so do +inf and a row of only -inf, as in scipy.special.softmax);
 * results below the smallest normal number may flush to zero.
 *
 * The per-type kernels are written once below FM_ACTIVATIONS_TEMPLATE and
 * instantiated for float and double by including this file into itself.
 */
#ifndef FM_ACTIVATIONS_TEMPLATE
#ifndef FM_ACTIVATIONS_H
#define FM_ACTIVATIONS_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "fm_exp.h"

/* Softmax works on blocks of rows of at most this many bytes (L1-resident). */
#define FM_BLOCK_BYTES 4096
/* Lanes of the explicit vectors used for rows of <= 32 columns. */
#define FM_W 16

/* ------------------------------------------------------------------------ */
/* Scalar building blocks (branch-free, inlined into the SIMD loops).        */
/* ------------------------------------------------------------------------ */

/* The shifters below carry the exponent bias (1.5 * 2^23 + 127, 1.5 * 2^52 +
 * 1023): the low bits of t = x * log2(e) + shifter are then n + bias, and one
 * shift left puts them in the exponent field (see fm_exp.h). */

/* float exp needs fewer terms than fm_exp's 1-ulp polynomial: p(r) = 1 + r
 * q(r) with q of degree 4 (relative minimax for e^r, error 9.1e-8 on |r| <=
 * ln2/2); measured <= 2.0 ulp over the whole range, one FMA less. */
#define FM_EXPP_F32(r) \
    (((((0.008290314679705573f * (r) + 0.04189792929811112f) * (r)          \
        + 0.1666763619545671f) * (r) + 0.49999149530710546f) * (r)          \
        + 0.9999997071892393f) * (r) + 1.0f)
#define FM_EXPP_F64(r) (FM_EXPQ_F64(r) * (r) + 1.0)

/* exp(x) for x <= 0, -inf or NaN: all that sigmoid and softmax need after
 * their range reduction (-|x|, x - max).  Without an overflow side a single
 * clamp replaces fm_exp's clamps and selects: at x = -127 ln2, 2^n = 2^-127
 * has an all-zero exponent field, i.e. is +0, so the result is exactly 0 from
 * there down (and below FLT_MIN / DBL_MIN it flushes, like fm_exp).
 * FM_EXPNEG(P) builds it with polynomial P: fm_expneg_* (<= 1 ulp, fm_exp's
 * polynomial) and fm_expneg_fast_* (float: <= 2 ulp, one FMA less; used by
 * sigmoid and softmax, which are exp-bound). */
#define FM_EXPNEG(name, T, P, shifter, log2e, ln2_hi, ln2_lo, xmin, bits_t, t_bits, shift)  \
    static inline T name(T x)                                                            \
    {                                                                                    \
        T xc = x < (xmin) ? (xmin) : x;   /* keeps NaN */                                \
        T t = xc * (log2e) + (shifter);                                                  \
        T n = t - (shifter);                                                             \
        T r = (xc - n * (ln2_hi)) - n * (ln2_lo);                                        \
        return P(r) * bits_t(t_bits(t) << (shift));                                      \
    }
#define FM_EXPNEG_F32(name, P) \
    FM_EXPNEG(name, float, P, 12583039.0f, 1.44269504f, 0.693145752f, 1.42860677e-6f, \
              -88.0296919f, fm_bits_to_f32, fm_f32_to_bits, 23)
#define FM_EXPNEG_F64(name, P) \
    FM_EXPNEG(name, double, P, 6755399441056767.0, 1.4426950408889634,                 \
              6.93147180369123816490e-01, 1.90821492927058770002e-10,                  \
              -709.0895657128241, fm_bits_to_f64, fm_f64_to_bits, 52)
#define FM_EXPP1_F32(r) (FM_EXPQ_F32(r) * (r) + 1.0f)
FM_EXPNEG_F32(fm_expneg_f32, FM_EXPP1_F32)
FM_EXPNEG_F32(fm_expneg_fast_f32, FM_EXPP_F32)
FM_EXPNEG_F64(fm_expneg_f64, FM_EXPP_F64)
FM_EXPNEG_F64(fm_expneg_fast_f64, FM_EXPP_F64)

/* exp(x) with no range handling at all, for x in [-87, 88] (float) /
 * [-708, 709] (double): softmax checks the range of a block once and then
 * uses this, with no shift by the row maximum. */
static inline float fm_expin_f32(float x)
{
    const float shifter = 12583039.0f, log2e = 1.44269504f;
    const float ln2_hi = 0.693145752f, ln2_lo = 1.42860677e-6f;
    float t = x * log2e + shifter;
    float n = t - shifter;
    float r = (x - n * ln2_hi) - n * ln2_lo;
    return FM_EXPP_F32(r) * fm_bits_to_f32(fm_f32_to_bits(t) << 23);
}

static inline double fm_expin_f64(double x)
{
    const double shifter = 6755399441056767.0, log2e = 1.4426950408889634;
    const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
    double t = x * log2e + shifter;
    double n = t - shifter;
    double r = (x - n * ln2_hi) - n * ln2_lo;
    return FM_EXPP_F64(r) * fm_bits_to_f64(fm_f64_to_bits(t) << 52);
}

/* expm1(x) for x <= 0, -inf or NaN (tanh, elu): 2^n (e^r - 1) + (2^n - 1).
 * For |x| < ln2/2, n = 0 and the result is the polynomial r + r^2 q1(r)
 * alone, so small arguments keep full relative accuracy.  Below -80 / -700
 * the result is -1 to working precision; the clamp keeps 2^n normal. */
static inline float fm_expm1neg_f32(float x)
{
    const float shifter = 12583039.0f, log2e = 1.44269504f;
    const float ln2_hi = 0.693145752f, ln2_lo = 1.42860677e-6f;
    float xc = x < -80.0f ? -80.0f : x;
    float t = xc * log2e + shifter;
    float n = t - shifter;
    float r = (xc - n * ln2_hi) - n * ln2_lo;
    float q = r * (r * FM_EXPQ1_F32(r)) + r;
    float s = fm_bits_to_f32(fm_f32_to_bits(t) << 23);
    return s * q + (s - 1.0f);
}

static inline double fm_expm1neg_f64(double x)
{
    const double shifter = 6755399441056767.0, log2e = 1.4426950408889634;
    const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
    double xc = x < -700.0 ? -700.0 : x;
    double t = xc * log2e + shifter;
    double n = t - shifter;
    double r = (xc - n * ln2_hi) - n * ln2_lo;
    double q = r * (r * FM_EXPQ1_F64(r)) + r;
    double s = fm_bits_to_f64(fm_f64_to_bits(t) << 52);
    return s * q + (s - 1.0);
}

/* k*ln2 + log(1 + f) + c for f in [sqrt(2)/2 - 1, sqrt(2) - 1] and a tiny
 * correction c (fdlibm's method: s = f / (2 + f), log(1 + f) = 2 atanh(s) =
 * f - f^2/2 + s (f^2/2 + R(s^2)), R minimax; coefficients from fdlibm e_log.c
 * and FreeBSD e_logf.c). */
static inline float fm_logk_f32(float f, float k, float c)
{
    const float ln2_hi = 6.9313812256e-01f, ln2_lo = 9.0580006145e-06f;
    float s = f / (2.0f + f);
    float z = s * s;
    float R = z * (0.66666662693f + z * (0.40000972152f + z * (0.28498786688f + z * 0.24279078841f)));
    float hfsq = 0.5f * f * f;
    return k * ln2_hi - ((hfsq - (s * (hfsq + R) + (k * ln2_lo + c))) - f);
}

static inline double fm_logk_f64(double f, double k, double c)
{
    const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
    double s = f / (2.0 + f);
    double z = s * s;
    double R = z * (6.666666666666735130e-01 + z * (3.999999999940941908e-01
             + z * (2.857142874366239149e-01 + z * (2.222219843214978396e-01
             + z * (1.818357216161805012e-01 + z * (1.531383769920937332e-01
             + z * 1.479819860511658591e-01))))));
    double hfsq = 0.5 * f * f;
    return k * ln2_hi - ((hfsq - (s * (hfsq + R) + (k * ln2_lo + c))) - f);
}

/* log(1 + e) for e in [0, 1] or NaN (softplus).  u = 1 + e is rounded; the
 * rounding error e - (u - 1) is exact and goes back in as c. */
static inline float fm_log1p01_f32(float e)
{
    float u = 1.0f + e;
    float c = (e - (u - 1.0f)) / u;
    int big = u > 1.41421356f;
    float f = big ? 0.5f * u - 1.0f : u - 1.0f;
    return fm_logk_f32(f, big ? 1.0f : 0.0f, c);
}

static inline double fm_log1p01_f64(double e)
{
    double u = 1.0 + e;
    double c = (e - (u - 1.0)) / u;
    int big = u > 1.4142135623730951;
    double f = big ? 0.5 * u - 1.0 : u - 1.0;
    return fm_logk_f64(f, big ? 1.0 : 0.0, c);
}

/* log(s) for positive normal s, +inf or NaN (the sum of a softmax row).
 * s = 2^k m with m in [sqrt(2)/2, sqrt(2)). */
static inline float fm_logpos_f32(float s)
{
    uint32_t b = fm_f32_to_bits(s);
    float k = (float)((int32_t)(b >> 23) - 127);
    float m = fm_bits_to_f32((b & 0x007fffffu) | 0x3f800000u);
    int big = m > 1.41421356f;
    float y = fm_logk_f32(big ? 0.5f * m - 1.0f : m - 1.0f, big ? k + 1.0f : k, 0.0f);
    y = s == INFINITY ? s : y;
    return s != s ? s : y;
}

static inline double fm_logpos_f64(double s)
{
    uint64_t b = fm_f64_to_bits(s);
    double k = (double)((int64_t)(b >> 52) - 1023);
    double m = fm_bits_to_f64((b & 0x000fffffffffffffull) | 0x3ff0000000000000ull);
    int big = m > 1.4142135623730951;
    double y = fm_logk_f64(big ? 0.5 * m - 1.0 : m - 1.0, big ? k + 1.0 : k, 0.0);
    y = s == INFINITY ? s : y;
    return s != s ? s : y;
}

/* ------------------------------------------------------------------------ */
/* One element of each activation.                                           */
/* ------------------------------------------------------------------------ */

/* sigmoid(x) = 1 / (1 + e^-x).  e^-x is fm_expneg_fast's method with the
 * argument clamped to [-127 ln2, 128 ln2]: at the top 2^128 comes out of the
 * exponent field as +inf, so x <= -88.4 (float) gives 1 / inf = 0 (the true
 * value is subnormal), x >= 88.03 gives 2^-127 = 0 and sigmoid = 1, and no
 * select is needed (NaN passes the clamps and comes out NaN). */
#define FM_SIGMOID(name, T, P, shifter, log2e, ln2_hi, ln2_lo, xmin, xmax, bits_t, t_bits, shift) \
    static inline T name(T x)                                                            \
    {                                                                                    \
        T xc = x < (xmin) ? (xmin) : x;                                                  \
        xc = xc > (xmax) ? (xmax) : xc;                                                  \
        T t = xc * -(log2e) + (shifter);    /* n = round(-x / ln2) */                    \
        T n = t - (shifter);                                                             \
        T r = (-xc - n * (ln2_hi)) - n * (ln2_lo);                                       \
        T e = P(r) * bits_t(t_bits(t) << (shift));                                       \
        return 1 / (1 + e);                                                              \
    }
FM_SIGMOID(fm_sigmoid1_f32, float, FM_EXPP_F32, 12583039.0f, 1.44269504f, 0.693145752f,
           1.42860677e-6f, -88.7228391f, 88.0296919f, fm_bits_to_f32, fm_f32_to_bits, 23)
FM_SIGMOID(fm_sigmoid1_f64, double, FM_EXPP_F64, 6755399441056767.0, 1.4426950408889634,
           6.93147180369123816490e-01, 1.90821492927058770002e-10, -709.782712893384,
           709.0895657128241, fm_bits_to_f64, fm_f64_to_bits, 52)

/* tanh(x) = sign(x) * (1 - e^-2|x|) / (1 + e^-2|x|) = -sign(x) em / (2 + em)
 * with em = expm1(-2|x|) in (-1, 0]: no cancellation for small |x|. */
static inline float fm_tanh1_f32(float x)
{
    float em = fm_expm1neg_f32(-2.0f * fabsf(x));
    return copysignf(-em / (2.0f + em), x);
}

static inline double fm_tanh1_f64(double x)
{
    double em = fm_expm1neg_f64(-2.0 * fabs(x));
    return copysign(-em / (2.0 + em), x);
}

/* relu keeps NaN (x < 0 is false for NaN) and -0.0. */
static inline float fm_relu1_f32(float x) { return x < 0.0f ? 0.0f : x; }
static inline double fm_relu1_f64(double x) { return x < 0.0 ? 0.0 : x; }

static inline float fm_leaky_relu1_f32(float x, float a) { return x > 0.0f ? x : a * x; }
static inline double fm_leaky_relu1_f64(double x, double a) { return x > 0.0 ? x : a * x; }

/* elu: x for x > 0, a * expm1(x) otherwise (NaN goes through expm1). */
static inline float fm_elu1_f32(float x, float a)
{
    float em = fm_expm1neg_f32(x > 0.0f ? 0.0f : x);
    return x > 0.0f ? x : a * em;
}

static inline double fm_elu1_f64(double x, double a)
{
    double em = fm_expm1neg_f64(x > 0.0 ? 0.0 : x);
    return x > 0.0 ? x : a * em;
}

/* softplus(x) = log(1 + e^x) = max(x, 0) + log1p(e^-|x|). */
static inline float fm_softplus1_f32(float x)
{
    float e = fm_expneg_f32(-fabsf(x));
    return (x > 0.0f ? x : 0.0f) + fm_log1p01_f32(e);
}

static inline double fm_softplus1_f64(double x)
{
    double e = fm_expneg_f64(-fabs(x));
    return (x > 0.0 ? x : 0.0) + fm_log1p01_f64(e);
}

/* swish(x) = x * sigmoid(x).  For x < 0 the product x e / (1 + e) is formed
 * as (x h) (h s) with h = e^(x/2): e alone would flush to zero near x = -88
 * (float) where x e is still a normal number.  swish(-inf) = -0 (the limit;
 * x * sigmoid(x) would give -inf * 0 = NaN). */
static inline float fm_swish1_f32(float x)
{
    float h = fm_expneg_f32(-0.5f * fabsf(x));
    float s = 1.0f / (1.0f + h * h);
    float y = x >= 0.0f ? x * s : (x * h) * (h * s);
    return x == -INFINITY ? -0.0f : y;
}

static inline double fm_swish1_f64(double x)
{
    double h = fm_expneg_f64(-0.5 * fabs(x));
    double s = 1.0 / (1.0 + h * h);
    double y = x >= 0.0 ? x * s : (x * h) * (h * s);
    return x == -INFINITY ? -0.0 : y;
}

/* Sum of a row of exps (all >= 0, or NaN).  Adding the small terms of a row
 * one by one to a partial sum that holds a dominant term loses every one of
 * them (a confident classifier's row, e.g. [20, 0, 0, ...] in float, loses
 * all its small terms that way: 17 ulp on 1000 columns).  So four vectors
 * are first added pairwise in the row's type (a dominant term meets at most
 * two roundings), and those partial sums are accumulated in double (float
 * rows) or with Neumaier's compensation (double rows).  Error: about one ulp
 * of the sum, at about the cost of a plain vectorized sum.  (Written with
 * vector extensions: as plain loops, GCC keeps the partial sums in memory.) */
typedef float fm_v16f __attribute__((vector_size(64), aligned(4), may_alias));
typedef double fm_v8d __attribute__((vector_size(64), aligned(8), may_alias));
typedef int64_t fm_v8l __attribute__((vector_size(64)));

static inline float fm_rowsum_f32(const float *e, ptrdiff_t n, int padded)
{
    fm_v8d a0 = {0}, a1 = {0};
    ptrdiff_t j = 0;
    for (; j + 64 <= n; j += 64) {
        fm_v16f q = (*(const fm_v16f *)(e + j) + *(const fm_v16f *)(e + j + 16))
                  + (*(const fm_v16f *)(e + j + 32) + *(const fm_v16f *)(e + j + 48));
        a0 += __builtin_convertvector(__builtin_shufflevector(q, q, 0, 1, 2, 3, 4, 5, 6, 7), fm_v8d);
        a1 += __builtin_convertvector(__builtin_shufflevector(q, q, 8, 9, 10, 11, 12, 13, 14, 15), fm_v8d);
    }
    double tail = 0;
    if (padded) {   /* e has 15 readable elements past n: whole vectors, the last one masked */
        typedef int32_t v16i __attribute__((vector_size(64)));
        v16i lane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
        for (; j < n; j += 16) {
            fm_v16f q = *(const fm_v16f *)(e + j);
            q = (fm_v16f)((v16i)q & (lane < (int32_t)(n - j)));
            a0 += __builtin_convertvector(__builtin_shufflevector(q, q, 0, 1, 2, 3, 4, 5, 6, 7), fm_v8d);
            a1 += __builtin_convertvector(__builtin_shufflevector(q, q, 8, 9, 10, 11, 12, 13, 14, 15), fm_v8d);
        }
    } else {
        for (; j < n; j++) tail += e[j];
    }
    a0 += a1;
    a0 += __builtin_shufflevector(a0, a0, 4, 5, 6, 7, 0, 1, 2, 3);
    a0 += __builtin_shufflevector(a0, a0, 2, 3, 0, 1, 6, 7, 4, 5);
    return (float)((a0[0] + a0[1]) + tail);
}

/* s += v with Neumaier's compensation c (s, v >= 0 or NaN), lane by lane. */
#define FM_NEUMAIER(s, c, v)                                                   \
    do {                                                                       \
        fm_v8d t_ = (s) + (v);                                                 \
        fm_v8l big_ = (s) >= (v);                                              \
        fm_v8d a_ = ((s) - t_) + (v), b_ = ((v) - t_) + (s);                   \
        (c) += (fm_v8d)(((fm_v8l)a_ & big_) | ((fm_v8l)b_ & ~big_));           \
        (s) = t_;                                                              \
    } while (0)

static inline double fm_rowsum_f64(const double *e, ptrdiff_t n, int padded)
{
    fm_v8d s = {0}, c = {0};
    ptrdiff_t j = 0;
    for (; j + 32 <= n; j += 32) {
        fm_v8d q = (*(const fm_v8d *)(e + j) + *(const fm_v8d *)(e + j + 8))
                 + (*(const fm_v8d *)(e + j + 16) + *(const fm_v8d *)(e + j + 24));
        FM_NEUMAIER(s, c, q);
    }
    fm_v8d tail = {0}, ctail = {0};
    if (padded) {
        fm_v8l lane = {0, 1, 2, 3, 4, 5, 6, 7};
        for (; j < n; j += 8) {
            fm_v8d q = *(const fm_v8d *)(e + j);
            q = (fm_v8d)((fm_v8l)q & (lane < (int64_t)(n - j)));
            FM_NEUMAIER(s, c, q);
        }
    } else {
        for (; j < n; j++) {
            fm_v8d q = {e[j]};
            FM_NEUMAIER(tail, ctail, q);
        }
    }
    /* the 8 lanes and the tail, one after the other, still compensated */
    double tot = 0, comp = 0;
    for (int l = 0; l < 8; l++) {
        double v[2] = {s[l], tail[l]};
        for (int k = 0; k < 2; k++) {
            double t = tot + v[k];
            comp += tot >= v[k] ? (tot - t) + v[k] : (v[k] - t) + tot;
            tot = t;
        }
        comp += c[l] + ctail[l];
    }
    return tot + comp;
}

/* Stores that bypass the caches (non-temporal), for outputs too large to
 * stay in them: a cached store first reads the line it writes (a third
 * memory stream beside the input and the output).  o[j] = e[j] * s for j in
 * [0, n), o 64-byte aligned, n a multiple of 64 bytes; the products are the
 * same as a cached loop's.  A kernel that used them calls fm_stream_fence()
 * before returning. */
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#if defined(__AVX512F__)
#define FM_SIMD(op, ps) _mm512_##op##_##ps
#define FM_SIMD_T(ps) __m512##ps
#define FM_SIMD_BYTES 64
#elif defined(__AVX__)
#define FM_SIMD(op, ps) _mm256_##op##_##ps
#define FM_SIMD_T(ps) __m256##ps
#define FM_SIMD_BYTES 32
#else
#define FM_SIMD(op, ps) _mm_##op##_##ps
#define FM_SIMD_T(ps) __m128##ps
#define FM_SIMD_BYTES 16
#endif
/* ps: the intrinsics' suffix (ps / pd); d: the vector type's (__m512 / __m512d) */
#define FM_SCALE_STREAM(T, sfx, ps, d)                                                   \
    static inline void fm_scale_stream_##sfx(const T *e, T s, T *o, ptrdiff_t n)        \
    {                                                                                    \
        FM_SIMD_T(d) v = FM_SIMD(set1, ps)(s);                                           \
        ptrdiff_t w = FM_SIMD_BYTES / (ptrdiff_t)sizeof(T);                              \
        if (s == 1)   /* a copy (e * 1 is exact): no multiply for the FMA pipes */       \
            for (ptrdiff_t j = 0; j < n; j += w) FM_SIMD(stream, ps)(o + j, FM_SIMD(loadu, ps)(e + j)); \
        else                                                                             \
            for (ptrdiff_t j = 0; j < n; j += w)                                         \
                FM_SIMD(stream, ps)(o + j, FM_SIMD(mul, ps)(FM_SIMD(loadu, ps)(e + j), v)); \
    }
FM_SCALE_STREAM(float, f32, ps, )
FM_SCALE_STREAM(double, f64, pd, d)
#undef FM_SCALE_STREAM
#undef FM_SIMD
#undef FM_SIMD_T
#undef FM_SIMD_BYTES
static inline void fm_stream_fence(void) { _mm_sfence(); }
#else   /* elsewhere: cached stores */
static inline void fm_scale_stream_f32(const float *e, float s, float *o, ptrdiff_t n)
{
    for (ptrdiff_t j = 0; j < n; j++) o[j] = e[j] * s;
}
static inline void fm_scale_stream_f64(const double *e, double s, double *o, ptrdiff_t n)
{
    for (ptrdiff_t j = 0; j < n; j++) o[j] = e[j] * s;
}
static inline void fm_stream_fence(void) {}
#endif

/* exp(x (1 + d)) of 16 floats in [-87, 88], d = -1.3e-8 (softmax's flat
 * pass; no range handling, like fm_expin_f32).  2^(y / 32) with y = x K and K
 * = 32 / ln2 rounded to float (relative error d): y = 32 e + j + u, |u| <=
 * 1/2, so the result is 2^e 2^(j/32) p(u) with a table of 2^(j/32) and p of
 * degree 2 (relative minimax for 2^(u/32), 5.4e-8).  u = x K - n is one FMA
 * (the product is exact inside it), where a reduction by ln2 needs two.  The
 * factor (1 + d) is the same for every element, so in a softmax it cancels up
 * to d |x - mean|, below the d' |x - max| that rounding x - max costs (the
 * 1-ulp d' = 6e-8); measured against exp(x): <= 1.5 ulp + |x| d.
 * The table is two registers and the lookup one two-source permute
 * (vpermt2ps), which reads only the low 5 bits of each index, i.e. j; the
 * integer add that puts e into the exponent field also removes j's bits from
 * it (FM_EXP32_TAB holds bits(2^(j/32)) - (127 << 23) - (j << 18)): the low
 * 13 bits of t hold 32 (e + 127) + j (< 2^13 for e + 127 in [1, 254]), so
 * t's bits << 18 are (e + 127) << 23 plus j << 18.  Six FMA-class operations
 * against fm_expin_f32's nine: on this machine's FMA pipes that is the whole
 * cost of a softmax. */
#if defined(__AVX512F__)
typedef int32_t fm_v16i __attribute__((vector_size(64)));
#define FM_EXP32_TAB0 {0, -78457, -152893, -223217, -289342, -351174, -408621, -461584, \
                       -509968, -553670, -592590, -626621, -655657, -679589, -698305, -711690}
#define FM_EXP32_TAB1 {-719629, -722001, -718684, -709555, -694486, -673346, -646004, -612322, \
                       -572163, -525384, -471841, -411385, -343865, -269126, -187011, -97357}

/* 2^e 2^(j/32) for 16 lanes whose t holds 32 (e + 127) + j in its low bits (see above). */
static inline __m512 fm_vexp32_scale(__m512 t)
{
    const fm_v16i t0 = FM_EXP32_TAB0, t1 = FM_EXP32_TAB1;
    __m512i ti = _mm512_castps_si512(t);
    __m512i tb = _mm512_permutex2var_epi32((__m512i)t0, ti, (__m512i)t1);
    return _mm512_castsi512_ps(_mm512_add_epi32(tb, _mm512_slli_epi32(ti, 18)));
}

static inline __m512 fm_vexpin_f32(__m512 x)
{
    const __m512 shifter = _mm512_set1_ps(12586976.0f);      /* 1.5 * 2^23 + 127 * 32 */
    const __m512 K = _mm512_set1_ps(46.1662407f);            /* 32 / ln2 */
    __m512 t = _mm512_fmadd_ps(x, K, shifter);
    __m512 n = _mm512_sub_ps(t, shifter);
    __m512 u = _mm512_fmsub_ps(x, K, n);                     /* one FMA: x K exact inside */
    __m512 s = fm_vexp32_scale(t);
    __m512 q = _mm512_mul_ps(_mm512_fmadd_ps(u, _mm512_set1_ps(0.000234596196f), _mm512_set1_ps(0.0216611680f)), u);
    return _mm512_fmadd_ps(s, q, s);
}
#endif

/* 1 when every element of a rows x cols array (row stride rs elements, unit
 * column stride) is finite: the largest |bits| stays below the all-ones
 * exponent (inf and NaN have it).  Integer max over the bits, one pass at
 * memory speed (numpy's sum, the usual trick, is ~5x slower). */
typedef uint32_t fm_u32_alias __attribute__((may_alias));
typedef uint64_t fm_u64_alias __attribute__((may_alias));
#define FM_ALL_FINITE(sfx, T, U, A, ABS, EXP)                                             \
    static inline int fm_all_finite_##sfx(const T *x, ptrdiff_t rows, ptrdiff_t cols,    \
                                          ptrdiff_t rs)                                  \
    {                                                                                    \
        U m = 0;                                                                         \
        if (rs == cols) {   /* contiguous: one flat run */                               \
            cols *= rows;                                                                \
            rows = 1;                                                                    \
        }                                                                                \
        for (ptrdiff_t i = 0; i < rows; i++) {                                           \
            const A *b = (const A *)(x + i * rs);                                        \
            _Pragma("omp simd reduction(max:m)")                                         \
            for (ptrdiff_t j = 0; j < cols; j++) {                                       \
                U v = b[j] & (ABS);                                                      \
                m = v > m ? v : m;                                                       \
            }                                                                            \
        }                                                                                \
        return m < (EXP);                                                                \
    }
FM_ALL_FINITE(f32, float, uint32_t, fm_u32_alias, 0x7fffffffu, 0x7f800000u)
FM_ALL_FINITE(f64, double, uint64_t, fm_u64_alias, 0x7fffffffffffffffull, 0x7ff0000000000000ull)
#undef FM_ALL_FINITE

/* Lane permutations for butterflies over groups of 2, 4, 8, 16 lanes. */
#define FM_XOR1 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14
#define FM_XOR2 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13
#define FM_XOR4 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11
#define FM_XOR8 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7

/* Instantiate the array kernels for both types. */
#define FM_ACTIVATIONS_TEMPLATE
#define FM_T float
#define FM_I int32_t
#define FM_SUFFIX f32
#define FM_FAST_LO (-80.0f)    /* block range for softmax without a shift */
#define FM_FAST_HI 64.0f
#if defined(__AVX512F__)         /* the flat exp pass uses fm_vexpin_f32 (one vpermt2ps) */
#define FM_TABLE_EXP 1
#else                              /* elsewhere GCC would emulate the 32-entry permute */
#define FM_TABLE_EXP 0
#endif
#include "fm_activations.h"
#undef FM_TABLE_EXP
#undef FM_T
#undef FM_I
#undef FM_SUFFIX
#undef FM_FAST_LO
#undef FM_FAST_HI
#define FM_T double
#define FM_I int64_t
#define FM_SUFFIX f64
#define FM_FAST_LO (-700.0)
#define FM_FAST_HI 600.0
#define FM_TABLE_EXP 0
#include "fm_activations.h"
#undef FM_TABLE_EXP
#undef FM_T
#undef FM_I
#undef FM_SUFFIX
#undef FM_FAST_LO
#undef FM_FAST_HI
#undef FM_ACTIVATIONS_TEMPLATE

#endif /* FM_ACTIVATIONS_H */

#else  /* FM_ACTIVATIONS_TEMPLATE: the array kernels, once per FM_T */

#define FM_CAT2(a, b) a##_##b
#define FM_CAT(a, b) FM_CAT2(a, b)
#define FM_FN(name) FM_CAT(name, FM_SUFFIX)   /* FM_FN(fm_relu) -> fm_relu_f32 */

/* ------------------------------------------------------------------------ */
/* Elementwise kernels.                                                      */
/* ------------------------------------------------------------------------ */

/* The first loop runs up to the first 64-byte boundary of out, so that the
 * main loop's vector stores never straddle two cache lines (numpy's data is
 * 16 bytes past a boundary); scalar and vector code give the same bits. */
#define FM_HEAD(out, n) \
    ((uintptr_t)(out) % sizeof(FM_T) ? 0 : ((-(uintptr_t)(out)) & 63) / sizeof(FM_T) < (size_t)(n) \
     ? (ptrdiff_t)(((-(uintptr_t)(out)) & 63) / sizeof(FM_T)) : (n))
#define FM_ELEMENTWISE(name)                                                   \
    static inline void FM_FN(fm_##name)(const FM_T *x, FM_T *out, ptrdiff_t n) \
    {                                                                          \
        ptrdiff_t h = FM_HEAD(out, n);                                         \
        for (ptrdiff_t i = 0; i < h; i++) out[i] = FM_FN(fm_##name##1)(x[i]);  \
        _Pragma("omp simd")                                                    \
        for (ptrdiff_t i = h; i < n; i++) out[i] = FM_FN(fm_##name##1)(x[i]);  \
    }
#define FM_ELEMENTWISE_ALPHA(name)                                             \
    static inline void FM_FN(fm_##name)(const FM_T *x, FM_T *out, ptrdiff_t n, \
                                        FM_T alpha)                            \
    {                                                                          \
        ptrdiff_t h = FM_HEAD(out, n);                                         \
        for (ptrdiff_t i = 0; i < h; i++)                                      \
            out[i] = FM_FN(fm_##name##1)(x[i], alpha);                         \
        _Pragma("omp simd")                                                    \
        for (ptrdiff_t i = h; i < n; i++)                                      \
            out[i] = FM_FN(fm_##name##1)(x[i], alpha);                         \
    }

#if FM_TABLE_EXP
/* float sigmoid on AVX-512: e^-x from fm_vexpin_f32's table (with ln2 split in
 * two FMAs here: sigmoid(x) ~ e^x for x << 0 is relative to e^x itself, so the
 * 1.3e-8 |x| of the one-FMA reduction would be ~10 ulp at x = -87) and 1 / (1 +
 * e) as vrcp14ps plus one Newton step (two FMAs) instead of a division: 8
 * FMA-class operations where the scalar loop needs 9 and a vdivps.  x is
 * clamped to [-88, 87] (inside the table's range; NaN passes: min/max return
 * their second operand); below -88 the result is 0, as the scalar version's
 * 1 / (1 + inf) (the true value is below 6.1e-39, subnormal).  Measured <= 3.4
 * ulp wherever the result is a normal number.  Every element, head and tail included, goes
 * through the same vector code (masked), so results do not depend on where an
 * element falls. */
static inline __m512 fm_vsigmoid_f32(__m512 x)
{
    const __m512 shifter = _mm512_set1_ps(12586976.0f);          /* 1.5 * 2^23 + 127 * 32 */
    __m512 xc = _mm512_max_ps(_mm512_set1_ps(-88.0f), _mm512_min_ps(_mm512_set1_ps(87.0f), x));
    __m512 y = _mm512_sub_ps(_mm512_setzero_ps(), xc);                /* e^y, y = -x */
    __m512 t = _mm512_fmadd_ps(y, _mm512_set1_ps(46.1662407f), shifter);
    __m512 nn = _mm512_sub_ps(t, shifter);
    __m512 r = _mm512_fnmadd_ps(nn, _mm512_set1_ps(0.02165985107421875f), y);
    r = _mm512_fnmadd_ps(nn, _mm512_set1_ps(9.98318226e-07f), r);
    __m512 sc = fm_vexp32_scale(t);
    __m512 q = _mm512_mul_ps(_mm512_fmadd_ps(_mm512_set1_ps(0.500000119f), r, _mm512_set1_ps(1.00001490f)), r);
    __m512 e = _mm512_fmadd_ps(sc, q, sc);
    __m512 d = _mm512_add_ps(e, _mm512_set1_ps(1.0f));
    __m512 rc = _mm512_rcp14_ps(d);
    __mmask16 keep = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-88.0f), _CMP_NLT_UQ);   /* NaN: kept */
    return _mm512_maskz_mul_ps(keep, rc, _mm512_fnmadd_ps(d, rc, _mm512_set1_ps(2.0f)));
}

static inline void fm_sigmoid_f32(const float *x, float *out, ptrdiff_t n)
{
    ptrdiff_t h = FM_HEAD(out, n), i = h;
    if (h) {
        __mmask16 m = (__mmask16)((1u << h) - 1);
        _mm512_mask_storeu_ps(out, m, fm_vsigmoid_f32(_mm512_maskz_loadu_ps(m, x)));
    }
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(out + i, fm_vsigmoid_f32(_mm512_loadu_ps(x + i)));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(out + i, m, fm_vsigmoid_f32(_mm512_maskz_loadu_ps(m, x + i)));
    }
}
#else
FM_ELEMENTWISE(sigmoid)
#endif
FM_ELEMENTWISE(tanh)
FM_ELEMENTWISE(relu)
FM_ELEMENTWISE(softplus)
FM_ELEMENTWISE(swish)
FM_ELEMENTWISE_ALPHA(leaky_relu)
FM_ELEMENTWISE_ALPHA(elu)

#undef FM_ELEMENTWISE
#undef FM_ELEMENTWISE_ALPHA
#undef FM_HEAD

/* ------------------------------------------------------------------------ */
/* Row-wise softmax and log-softmax.                                         */
/*                                                                           */
/* Rows are processed in blocks of nb rows (nb a power of two, nb * cols <=   */
/* FM_BLOCK_BYTES), with scratch buffers E (exp), D (shifted input) and S     */
/* (per row or per element) on the stack:                                    */
/*   1. one flat pass: E = exp(x), and the block's min and max.  When every   */
/*      value lies in [FM_FAST_LO, FM_FAST_HI], exp(x) can neither overflow   */
/*      nor underflow, so no shift by the row maximum is needed (and x - max  */
/*      is not rounded: this path is the more accurate one);                 */
/*   2. otherwise (large logits, inf): per row D = x - max(row), E = exp(D);  */
/*   3. per row: S = sum(E); out = E * (1 / S), or out = D - log(S) (D = x    */
/*      when no shift was taken).                                            */
/* Flat passes are plain SIMD loops, and so are the per-row passes of rows of */
/* more than 32 columns.  Shorter rows are handled 16 rows at a time, which   */
/* fill exactly `cols` vectors: per-row sums by a transpose-and-add tree, the */
/* per-row factors spread over the output vectors by one permute each; when  */
/* cols divides 16, a vector holds whole rows and butterflies do the sums.   */
/* Rows past the last multiple of 16 in a block use plain loops.  A row       */
/* longer than a block gets its own three passes (fm__softmax_long_row).      */
/* ------------------------------------------------------------------------ */

/* 16-lane vectors of FM_T (GNU C vector extensions: GCC lowers them to
 * whatever the target has, one zmm register per 16 floats with AVX-512).
 * They are passed by pointer or built in macros, never by value: 128-byte
 * double vectors would make GCC print an ABI note at every build. */
typedef FM_T FM_FN(fm_vec) __attribute__((vector_size(FM_W * sizeof(FM_T))));
typedef FM_I FM_FN(fm_ivec) __attribute__((vector_size(FM_W * sizeof(FM_T))));
typedef FM_T FM_FN(fm_uvec) __attribute__((vector_size(FM_W * sizeof(FM_T)), aligned(sizeof(FM_T)), may_alias));
#define FM_V FM_FN(fm_vec)
#define FM_VI FM_FN(fm_ivec)
#define FM_LOAD(p) ((FM_V) * (const FM_FN(fm_uvec) *)(p))            /* unaligned */
#define FM_STORE(p, v) (*(FM_FN(fm_uvec) *)(p) = (v))
#define FM_SELECT(m, a, b) ((FM_V)(((FM_VI)(a) & (m)) | ((FM_VI)(b) & ~(m))))
#define FM_LANES {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}

/* Sum over aligned groups of g lanes (g = 1, 2, 4, 8, 16).  a + b == b + a
 * exactly, so every lane of a group ends up with the same bits. */
static inline void FM_FN(fm_vgroupsum)(FM_V *v, ptrdiff_t g)
{
    if (g > 1) *v += __builtin_shufflevector(*v, *v, FM_XOR1);
    if (g > 2) *v += __builtin_shufflevector(*v, *v, FM_XOR2);
    if (g > 4) *v += __builtin_shufflevector(*v, *v, FM_XOR4);
    if (g > 8) *v += __builtin_shufflevector(*v, *v, FM_XOR8);
}

/* Max over aligned groups of g lanes (NaN lanes may or may not win: a NaN row
 * ends up NaN through exp either way). */
static inline void FM_FN(fm_vgroupmax)(FM_V *v, ptrdiff_t g)
{
    FM_V w;
    if (g > 1) { w = __builtin_shufflevector(*v, *v, FM_XOR1); *v = FM_SELECT(*v > w, *v, w); }
    if (g > 2) { w = __builtin_shufflevector(*v, *v, FM_XOR2); *v = FM_SELECT(*v > w, *v, w); }
    if (g > 4) { w = __builtin_shufflevector(*v, *v, FM_XOR4); *v = FM_SELECT(*v > w, *v, w); }
    if (g > 8) { w = __builtin_shufflevector(*v, *v, FM_XOR8); *v = FM_SELECT(*v > w, *v, w); }
}

/* Sums of 16 vectors, one per row, stored as 16 values: a transpose-and-add
 * tree (each level halves the lanes per row and doubles the rows per vector),
 * about 3 operations per row instead of a 4-step butterfly each. */
static inline void FM_FN(fm_vsum16)(const FM_V *v, FM_T *sums)
{
    FM_V w[8], u[4], y[2], z;
    for (int i = 0; i < 8; i++)
        w[i] = __builtin_shufflevector(v[2 * i], v[2 * i + 1], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23)
             + __builtin_shufflevector(v[2 * i], v[2 * i + 1], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    for (int i = 0; i < 4; i++)
        u[i] = __builtin_shufflevector(w[2 * i], w[2 * i + 1], 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27)
             + __builtin_shufflevector(w[2 * i], w[2 * i + 1], 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31);
    for (int i = 0; i < 2; i++)
        y[i] = __builtin_shufflevector(u[2 * i], u[2 * i + 1], 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29)
             + __builtin_shufflevector(u[2 * i], u[2 * i + 1], 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31);
    z = __builtin_shufflevector(y[0], y[1], 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30)
      + __builtin_shufflevector(y[0], y[1], 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31);
    /* lane i now holds row bitreverse(i) */
    FM_STORE(sums, __builtin_shufflevector(z, z, 0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15));
}

/* Largest element of a row; NaN elements are skipped. */
static inline FM_T FM_FN(fm_rowmax)(const FM_T *x, ptrdiff_t cols)
{
    FM_T m = -INFINITY;
    _Pragma("omp simd reduction(max:m)")
    for (ptrdiff_t j = 0; j < cols; j++) m = x[j] > m ? x[j] : m;
    return m;
}

/* D = x - max(row), for nb rows of C columns. */
static inline void FM_FN(fm__shift_rows)(const FM_T *x, FM_T *D, ptrdiff_t nb, ptrdiff_t C)
{
    ptrdiff_t r = 0;
    if (C < FM_W && FM_W % C == 0) {                /* 16 / C rows per vector */
        ptrdiff_t n = nb * C / FM_W * FM_W;
        for (ptrdiff_t k = 0; k < n; k += FM_W) {
            FM_V a = FM_LOAD(x + k), m = a;
            FM_FN(fm_vgroupmax)(&m, C);
            FM_STORE(D + k, a - m);
        }
        r = n / C;
    } else if (C <= FM_W) {                         /* one masked vector per row */
        FM_VI lane = FM_LANES, keep = lane < (FM_I)C;
        FM_V ninf = (FM_V){0} - (FM_T)INFINITY;
        for (; r * C + FM_W <= nb * C; r++) {
            FM_V a = FM_LOAD(x + r * C), m = FM_SELECT(keep, a, ninf);
            FM_FN(fm_vgroupmax)(&m, FM_W);
            FM_STORE(D + r * C, a - m);
        }
    }
    for (; r < nb; r++) {
        const FM_T *xr = x + r * C;
        FM_T *dr = D + r * C;
        FM_T m = FM_FN(fm_rowmax)(xr, C);
        _Pragma("omp simd")
        for (ptrdiff_t j = 0; j < C; j++) dr[j] = xr[j] - m;
    }
}

/* Extra elements after a block in E: the vectors of the last rows (and of
 * the up to 15 rows that round nb up to a multiple of 16) are read from
 * there and masked off. */
#define FM_PAD (2 * FM_W * FM_W)

/* For rows of C <= 32 columns, 16 rows fill exactly C vectors: idx[v] gives,
 * for each lane of vector v, the row it belongs to (0..15). */
static inline void FM_FN(fm__group_rows)(ptrdiff_t C, FM_VI *idx)
{
    FM_I row = 0, col = 0;
    for (ptrdiff_t v = 0; v < C; v++)
        for (int l = 0; l < FM_W; l++) {
            idx[v][l] = row;
            if (++col == C) {
                col = 0;
                row++;
            }
        }
}

/* Vector of f[idx[0]], ..., f[idx[15]]: GCC's variable shuffle (vpermps). */
#if defined(__clang__)
#define FM_PERMUTE(f, idx) ({ FM_V r_; for (int l_ = 0; l_ < FM_W; l_++) r_[l_] = (f)[(idx)[l_]]; r_; })
#else
#define FM_PERMUTE(f, idx) __builtin_shuffle((f), (idx))
#endif

/* softmax: out = E / sum(row of E).  log-softmax: out = D - log(sum(row of E)).
 * S: scratch of FM_BLOCK_BYTES + 16 values.  out is written once, after E
 * and D have been read where needed, so out may be D (in place). */
static inline void FM_FN(fm__normalize_rows)(const FM_T *E, const FM_T *D, FM_T *out, FM_T *S,
                                             ptrdiff_t nb, ptrdiff_t C, int log, const FM_VI *idx,
                                             int stream)
{
    ptrdiff_t L = nb * C;
    ptrdiff_t r0 = 0;      /* rows [0, r0) are finished by the packed path */
    ptrdiff_t rs = 0;      /* rows [0, rs) have their sum in S */
    ptrdiff_t rv = 0;      /* rows [r0, rv) are written 16 rows (C vectors) at a time */
    if (C < FM_W && FM_W % C == 0) {
        /* 16 / C whole rows per vector: butterfly sums land in every lane of
         * their row (S, per element); then one flat pass. */
        ptrdiff_t n = L / FM_W * FM_W;
        for (ptrdiff_t k = 0; k < n; k += FM_W) {
            FM_V e = FM_LOAD(E + k);
            FM_FN(fm_vgroupsum)(&e, C);
            FM_STORE(S + k, e);
        }
        if (log) {
            _Pragma("omp simd")
            for (ptrdiff_t k = 0; k < n; k++) out[k] = D[k] - FM_FN(fm_logpos)(S[k]);
        } else {
            _Pragma("omp simd")
            for (ptrdiff_t k = 0; k < n; k++) out[k] = E[k] / S[k];
        }
        r0 = rs = rv = n / C;
    } else if (C <= 2 * FM_W) {
        /* One or two vectors per row (lanes past the row masked); sums of 16
         * rows at a time by a transpose-and-add tree (E is padded, so the
         * vectors of the last rows can be read). */
        FM_VI lane = FM_LANES, keep0 = lane < (FM_I)C, keep1 = lane < (FM_I)(C - FM_W);
        int two = C > FM_W;
        for (ptrdiff_t i = 0; i < nb; i += FM_W) {
            FM_V v[FM_W];
            for (int k = 0; k < FM_W; k++) {
                const FM_T *e = E + (i + k) * C;
                v[k] = FM_SELECT(keep0, FM_LOAD(e), (FM_V){0});
                if (two) v[k] += FM_SELECT(keep1, FM_LOAD(e + FM_W), (FM_V){0});
            }
            FM_FN(fm_vsum16)(v, S + i);
        }
        rs = nb;
        rv = nb / FM_W * FM_W;
    }
    for (ptrdiff_t i = rs; i < nb; i++) S[i] = FM_FN(fm_rowsum)(E + i * C, C, 1);
    if (log) {
        _Pragma("omp simd")
        for (ptrdiff_t i = r0; i < nb; i++) S[i] = FM_FN(fm_logpos)(S[i]);
    } else {
        _Pragma("omp simd")
        for (ptrdiff_t i = r0; i < nb; i++) S[i] = 1 / S[i];
    }
    /* 16 rows = C whole vectors; each lane takes its row's factor. */
    for (ptrdiff_t i = r0; i < rv; i += FM_W) {
        FM_V f = FM_LOAD(S + i);
        const FM_T *a = (log ? D : E) + i * C;
        FM_T *o = out + i * C;
        if (log)
            for (ptrdiff_t v = 0; v < C; v++) FM_STORE(o + v * FM_W, FM_LOAD(a + v * FM_W) - FM_PERMUTE(f, idx[v]));
        else
            for (ptrdiff_t v = 0; v < C; v++) FM_STORE(o + v * FM_W, FM_LOAD(a + v * FM_W) * FM_PERMUTE(f, idx[v]));
    }
    for (ptrdiff_t i = r0 > rv ? r0 : rv; i < nb; i++) {
        const FM_T *er = E + i * C, *dr = D + i * C, s = S[i];
        FM_T *o = out + i * C;
        if (log) {
            _Pragma("omp simd")
            for (ptrdiff_t j = 0; j < C; j++) o[j] = dr[j] - s;
        } else {   /* stores from the first 64-byte boundary of o on: never split */
            ptrdiff_t h = (uintptr_t)o % sizeof(FM_T) ? 0 : ((-(uintptr_t)o) & 63) / sizeof(FM_T);
            h = h < C ? h : C;
            for (ptrdiff_t j = 0; j < h; j++) o[j] = er[j] * s;
            ptrdiff_t j0 = h;
            if (stream && ((uintptr_t)(o + h) & 63) == 0) {   /* whole lines past the cache */
                ptrdiff_t m = (C - h) / (64 / sizeof(FM_T)) * (64 / sizeof(FM_T));
                FM_FN(fm_scale_stream)(er + h, s, o + h, m);
                j0 = h + m;
            }
            _Pragma("omp simd")
            for (ptrdiff_t j = j0; j < C; j++) o[j] = er[j] * s;
        }
    }
}

/* exp pass over x[k0, k1): E = exp(x), widening the block's range [lo, hi];
 * lanes at or past `end` still get E (E is padded) but do not count for the
 * range. */
#define FM_EXP_PASS(k0, k1, end)                                               \
    _Pragma("omp simd reduction(min:lo) reduction(max:hi)")                    \
    for (ptrdiff_t k = (k0); k < (k1); k++) {                                  \
        FM_T v = x[k], w = k < (end) ? v : (FM_T)NAN;  /* NaN: no effect */    \
        lo = w < lo ? w : lo;                                                  \
        hi = w > hi ? w : hi;                                                  \
        E[k] = FM_FN(fm_expin)(v);                                             \
    }

/* One block of nb rows (nb * C <= FM_BLOCK_BYTES / sizeof(FM_T)); x holds at
 * least `avail` readable elements from the block's start. */
static inline void FM_FN(fm__softmax_block)(const FM_T *x, FM_T *out, ptrdiff_t nb, ptrdiff_t C,
                                            int log, ptrdiff_t avail, FM_T *E, FM_T *D, FM_T *S,
                                            const FM_VI *idx, int stream)
{
    ptrdiff_t L = nb * C, L16 = L / FM_W * FM_W;
    FM_T lo = INFINITY, hi = -INFINITY;
#if FM_TABLE_EXP
    /* Large outputs: streamed only when C divides 16 (whole rows per vector,
     * flat passes).  Other short rows are written through the cache, the
     * exp pass asking for their lines ahead (prefetchw): measured at 10M
     * elements, 10-20% faster than streaming, which costs them a copy of the
     * block (C <= 32) or leaves lines partly streamed (32 < C <= 64). */
    int pfw = !(C < FM_W && FM_W % C == 0);
    stream = stream && !pfw;
    {   /* min / max: x86's rule (a NaN in x keeps the range's value), one instruction each */
        __m512 vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
        for (ptrdiff_t k = 0; k < L16; k += FM_W) {
            __m512 v = _mm512_loadu_ps(x + k);
            if (pfw) _mm_prefetch((const char *)(out + k), _MM_HINT_ET0);
            vlo = _mm512_min_ps(v, vlo);
            vhi = _mm512_max_ps(v, vhi);
            _mm512_store_ps(E + k, fm_vexpin_f32(v));
        }
        if (L16 < L) {   /* the last partial vector, NaN-padded (no effect on the range) */
            __mmask16 m = (__mmask16)((1u << (L - L16)) - 1);
            __m512 v = _mm512_mask_loadu_ps(_mm512_set1_ps(NAN), m, x + L16);
            vlo = _mm512_min_ps(v, vlo);
            vhi = _mm512_max_ps(v, vhi);
            _mm512_store_ps(E + L16, fm_vexpin_f32(v));   /* E is padded */
        }
        lo = _mm512_reduce_min_ps(vlo);
        hi = _mm512_reduce_max_ps(vhi);
        (void)avail;
    }
#else
    FM_EXP_PASS(0, L16, L16)
    /* The last partial vector: one full vector when x has the room (a scalar
     * loop of exps would cost as much as a fifth of a 1000-column row). */
    if (L16 < L) {
        ptrdiff_t k1 = avail >= L16 + FM_W ? L16 + FM_W : L;
        FM_EXP_PASS(L16, k1, L)
    }
#endif
    const FM_T *src = x;   /* log-softmax: out = src - log(sum) */
    if (!(lo >= FM_FAST_LO && hi <= FM_FAST_HI)) {   /* NaN is skipped by min/max */
        FM_FN(fm__shift_rows)(x, D, nb, C);
        _Pragma("omp simd")
        for (ptrdiff_t k = 0; k < L; k++) E[k] = FM_FN(fm_expneg_fast)(D[k]);
        src = D;
    }
    if (stream && C <= 2 * FM_W) {
        /* short rows: results land 16 rows at a time at offsets that follow the
         * rows, not the output's cache lines; so into E (in place: every path
         * reads E[k] before writing element k), then whole lines of out past
         * the cache (x * 1 is exact), the partial lines at the ends cached */
        FM_FN(fm__normalize_rows)(E, src, E, S, nb, C, log, idx, 0);
        ptrdiff_t h = (uintptr_t)out % sizeof(FM_T) ? L : (ptrdiff_t)(((-(uintptr_t)out) & 63) / sizeof(FM_T));
        h = h < L ? h : L;
        ptrdiff_t line = 64 / (ptrdiff_t)sizeof(FM_T), m = (L - h) / line * line;
        for (ptrdiff_t k = 0; k < h; k++) out[k] = E[k];
        FM_FN(fm_scale_stream)(E + h, 1, out + h, m);
        for (ptrdiff_t k = h + m; k < L; k++) out[k] = E[k];
    } else {
        FM_FN(fm__normalize_rows)(E, src, out, S, nb, C, log, idx, stream);
    }
}

#if FM_TABLE_EXP
/* s += the 16 floats of q, in double (two vectors of 8). */
#define FM_ADD_PD(s0, s1, q)                                                                   \
    do {                                                                                       \
        (s0) = _mm512_add_pd((s0), _mm512_cvtps_pd(_mm512_castps512_ps256(q)));                \
        (s1) = _mm512_add_pd((s1), _mm512_cvtps_pd(_mm256_castpd_ps(                           \
                                       _mm512_extractf64x4_pd(_mm512_castps_pd(q), 1))));      \
    } while (0)

/* One row of 64 < C <= CAP float columns on AVX-512, in two passes:
 *   1. E = exp(x) (fm_vexpin_f32), with the row's sum (formed as
 *      fm_rowsum_f32 does: groups of 64 added pairwise in float, then
 *      double) and its largest |x| (bits compared as integers: inf and NaN
 *      are larger still);
 *   2. out = E / sum (log: x - log(sum)), vector stores from out's first
 *      64-byte boundary on, past the cache when `stream`.
 * Measured choices: the partial lines at both ends get scalar stores (masked
 * vector stores there slow the streamed lines next to them by ~30%); and
 * without `stream`, pass 1 asks for the row's output lines ahead of pass 2
 * (prefetchw), or the cached stores wait for every line in turn.  A row with
 * some |x| > 64 goes through fm__softmax_block_f32 (shift by the row max). */
static inline void fm__softmax_row_avx512(const float *x, float *out, ptrdiff_t C, int log,
                                          float *E, float *D, float *S, int stream)
{
    const __m512i absm = _mm512_set1_epi32(0x7fffffff);
    __m512i amax = _mm512_setzero_si512();
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    ptrdiff_t j = 0;
    for (; j + 64 <= C; j += 64) {
        __m512 v[4], e[4];
        for (int k = 0; k < 4; k++) {
            v[k] = _mm512_loadu_ps(x + j + 16 * k);
            amax = _mm512_max_epu32(amax, _mm512_and_si512(_mm512_castps_si512(v[k]), absm));
            if (!stream) _mm_prefetch((const char *)(out + j + 16 * k), _MM_HINT_ET0);
            e[k] = fm_vexpin_f32(v[k]);
            _mm512_store_ps(E + j + 16 * k, e[k]);
        }
        FM_ADD_PD(s0, s1, _mm512_add_ps(_mm512_add_ps(e[0], e[1]), _mm512_add_ps(e[2], e[3])));
    }
    for (; j < C; j += 16) {   /* the last vectors, the very last one masked */
        __mmask16 m = C - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (C - j)) - 1);
        __m512 v = _mm512_maskz_loadu_ps(m, x + j);
        amax = _mm512_max_epu32(amax, _mm512_and_si512(_mm512_castps_si512(v), absm));
        __m512 e = _mm512_maskz_mov_ps(m, fm_vexpin_f32(v));
        _mm512_store_ps(E + j, e);
        FM_ADD_PD(s0, s1, e);
    }
    if ((uint32_t)_mm512_reduce_max_epu32(amax) > 0x42800000u) {   /* the bits of 64.0f */
        fm__softmax_block_f32(x, out, 1, C, log, C, E, D, S, NULL, stream);
        return;
    }
    float sum = (float)_mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
    float f = log ? fm_logpos_f32(sum) : 1 / sum;
    __m512 vf = _mm512_set1_ps(f);
    const float *a = log ? x : E;
#define FM_OUT1(k) (log ? a[k] - f : a[k] * f)
#define FM_OUT(k) (log ? _mm512_sub_ps(_mm512_loadu_ps(a + (k)), vf) : _mm512_mul_ps(_mm512_loadu_ps(a + (k)), vf))
    ptrdiff_t h = (uintptr_t)out % sizeof(float) ? 0 : (ptrdiff_t)(((-(uintptr_t)out) & 63) / sizeof(float));
    h = h < C ? h : C;
    for (j = 0; j < h; j++) out[j] = FM_OUT1(j);
    if (stream && ((uintptr_t)(out + h) & 63) == 0)
        for (; j + 16 <= C; j += 16) _mm512_stream_ps(out + j, FM_OUT(j));
    else
        for (; j + 16 <= C; j += 16) _mm512_storeu_ps(out + j, FM_OUT(j));
    for (; j < C; j++) out[j] = FM_OUT1(j);
#undef FM_OUT
#undef FM_OUT1
}
#undef FM_ADD_PD
#endif

/* A row too long for a block: a range pass, an exp pass in block-sized
 * chunks (into out for softmax, into the scratch E for log-softmax, which
 * still needs x), then a scaling pass. */
static inline void FM_FN(fm__softmax_long_row)(const FM_T *x, FM_T *out, ptrdiff_t C, int log,
                                               FM_T *E, ptrdiff_t cap)
{
    FM_T lo = INFINITY, hi = -INFINITY;
    _Pragma("omp simd reduction(min:lo) reduction(max:hi)")
    for (ptrdiff_t j = 0; j < C; j++) {
        lo = x[j] < lo ? x[j] : lo;
        hi = x[j] > hi ? x[j] : hi;
    }
    int fast = lo >= FM_FAST_LO && hi <= FM_FAST_HI;
    FM_T c = fast ? 0 : hi;                          /* hi is the row maximum */
    FM_T sum = 0, comp = 0;                          /* Neumaier over the chunk sums */
    for (ptrdiff_t j0 = 0; j0 < C; j0 += cap) {
        ptrdiff_t n = C - j0 < cap ? C - j0 : cap;
        const FM_T *xc = x + j0;
        FM_T *e = log ? E : out + j0;
        if (fast) {
            _Pragma("omp simd")
            for (ptrdiff_t j = 0; j < n; j++) e[j] = FM_FN(fm_expin)(xc[j]);
        } else {
            _Pragma("omp simd")
            for (ptrdiff_t j = 0; j < n; j++) e[j] = FM_FN(fm_expneg_fast)(xc[j] - c);
        }
        FM_T part = FM_FN(fm_rowsum)(e, n, log), t = sum + part;   /* E is padded, out is not */
        comp += sum >= part ? (sum - t) + part : (part - t) + sum;
        sum = t;
    }
    sum += comp;
    if (log) {
        FM_T lse = FM_FN(fm_logpos)(sum);
        _Pragma("omp simd")
        for (ptrdiff_t j = 0; j < C; j++) out[j] = (x[j] - c) - lse;
    } else {
        FM_T inv = 1 / sum;
        _Pragma("omp simd")
        for (ptrdiff_t j = 0; j < C; j++) out[j] *= inv;
    }
}

/* Rows per block: a power of two.  Callers that split a matrix between
 * threads cut it at multiples of this, so that every row lands in the same
 * block (and gets the same bits) whatever the number of threads. */
static inline ptrdiff_t FM_FN(fm_softmax_block_rows)(ptrdiff_t cols)
{
    ptrdiff_t nb = 1;
    while (2 * nb * cols <= (ptrdiff_t)(FM_BLOCK_BYTES / sizeof(FM_T))) nb *= 2;
    return nb;
}

static inline void FM_FN(fm__softmax_rows)(const FM_T *x, FM_T *out, ptrdiff_t rows, ptrdiff_t cols,
                                           int log, int stream)
{
    enum { CAP = FM_BLOCK_BYTES / sizeof(FM_T) };
    if (rows <= 0 || cols <= 0) return;
    if (cols == 1) {   /* exactly 1 (log: 0), NaN for NaN and +-inf, as x - max gives */
        _Pragma("omp simd")
        for (ptrdiff_t i = 0; i < rows; i++) out[i] = (x[i] - x[i]) + (log ? 0 : 1);
        return;
    }
    FM_T E[CAP + FM_PAD] __attribute__((aligned(64)));
    FM_T D[CAP + FM_W] __attribute__((aligned(64)));
    FM_T S[CAP + FM_W] __attribute__((aligned(64)));
    FM_VI idx[2 * FM_W];
    if (cols > CAP) {
        for (ptrdiff_t i = 0; i < rows; i++)
            FM_FN(fm__softmax_long_row)(x + i * cols, out + i * cols, cols, log, E, CAP);
        return;
    }
    for (int k = 0; k < FM_PAD; k++) E[CAP + k] = 0;
#if FM_TABLE_EXP
    if (cols > 4 * FM_W) {   /* row by row (shorter rows: per-row sums and stores cost more) */
        for (ptrdiff_t i = 0; i < rows; i++)
            fm__softmax_row_avx512(x + i * cols, out + i * cols, cols, log, E, D, S, stream);
        if (stream) fm_stream_fence();
        return;
    }
#endif
    if (cols <= 2 * FM_W) FM_FN(fm__group_rows)(cols, idx);
    ptrdiff_t nb = FM_FN(fm_softmax_block_rows)(cols);
    for (ptrdiff_t r0 = 0; r0 < rows; r0 += nb) {
        ptrdiff_t n = rows - r0 < nb ? rows - r0 : nb;
        FM_FN(fm__softmax_block)(x + r0 * cols, out + r0 * cols, n, cols, log, (rows - r0) * cols,
                                 E, D, S, idx, stream);
    }
    if (stream) fm_stream_fence();
}

/* Softmax / log-softmax over the last axis of a C-ordered rows x cols array.
 * stream: the output is too large to stay in cache (the caller's call, from
 * the whole output's size): some paths then write it with non-temporal
 * stores (same values). */
static inline void FM_FN(fm_softmax_rows)(const FM_T *x, FM_T *out, ptrdiff_t rows, ptrdiff_t cols,
                                          int stream)
{
    FM_FN(fm__softmax_rows)(x, out, rows, cols, 0, stream);
}

static inline void FM_FN(fm_log_softmax_rows)(const FM_T *x, FM_T *out, ptrdiff_t rows, ptrdiff_t cols,
                                              int stream)
{
    FM_FN(fm__softmax_rows)(x, out, rows, cols, 1, stream);
}

#undef FM_V
#undef FM_VI
#undef FM_EXP_PASS
#undef FM_PERMUTE
#undef FM_LOAD
#undef FM_STORE
#undef FM_SELECT
#undef FM_LANES
#undef FM_PAD
#undef FM_CAT2
#undef FM_CAT
#undef FM_FN

#endif /* FM_ACTIVATIONS_TEMPLATE */
