/* Vectorizable exp for float and double.
 *
 * Why: libm's exp is a call the compiler cannot vectorize (numba's and GCC's
 * auto-vectorizers both stop at it), and sigmoid/softmax are exp-bound.  These
 * are branch-free inline functions, so a plain loop that calls them compiles
 * to SIMD code (AVX2 / AVX-512 with -march=native).
 *
 * Method (Cody-Waite): x = n*ln2 + r with |r| <= ln2/2, exp(x) = 2^n * p(r).
 * n is rounded with the "magic shifter" trick (add 1.5*2^52 + bias, read the
 * low bits), 2^n is built directly in the exponent field (one shift: the
 * exponent bias is already in the shifter).  p(r) = 1 + r*q(r) with
 * q a minimax polynomial for (e^r - 1)/r on [-ln2/2, ln2/2] (relative error of
 * q 1.1e-8 at degree 5 for float, 1.8e-17 at degree 10 for double; fitted with
 * a Remez exchange in 60-digit arithmetic).  Measured: <= 1 ulp for float,
 * <= 1 ulp for double over the whole finite range.
 *
 * Range: the exponent field holds 2^-126 .. 2^127 but exp(x) for normal
 * results needs 2^-126 .. 2^128, so p is evaluated doubled (exact) and
 * multiplied by 2^(n-1); at the bottom (n = -126) that factor is the
 * subnormal 2^-127, picked by one select.  Without the doubling, x in
 * (88.38, 88.72] used to overflow to inf.
 *
 * Non-finite values: NaN propagates (every comparison below is false for NaN,
 * so NaN reaches the polynomial); +inf -> +inf; -inf -> 0.  Results that
 * would be subnormal flush to 0 (softmax and sigmoid do not care).
 */
#ifndef FM_EXP_H
#define FM_EXP_H

#include <stdint.h>
#include <string.h>

static inline double fm_bits_to_f64(uint64_t u) { double d; memcpy(&d, &u, 8); return d; }
static inline uint64_t fm_f64_to_bits(double d) { uint64_t u; memcpy(&u, &d, 8); return u; }
static inline float fm_bits_to_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t fm_f32_to_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

/* q(r) ~ (e^r - 1) / r on [-ln2/2, ln2/2], relative minimax; written as
 * q = 1 + r*q1(r) so that expm1 (fm_activations.h) can use r + r^2*q1(r). */
#define FM_EXPQ1_F64(r) \
    ((((((((( 2.5052096325714935e-08 * (r) + 2.7626262788105425e-07) * (r)  \
        + 2.755741478996591e-06) * (r) + 2.480150460214848e-05) * (r)        \
        + 0.00019841269707467223) * (r) + 0.0013888888932258882) * (r)       \
        + 0.008333333333397834) * (r) + 0.041666666666573905) * (r)          \
        + 0.16666666666666563) * (r) + 0.5000000000000006)
#define FM_EXPQ1_F32(r) \
    ((((0.0013888872861982718f * (r) + 0.008369068561409464f) * (r)          \
       + 0.041667136207717705f) * (r) + 0.16666506219583688f) * (r)          \
       + 0.4999999812479965f)
#define FM_EXPQ_F64(r) (FM_EXPQ1_F64(r) * (r) + 1.0)
#define FM_EXPQ_F32(r) (FM_EXPQ1_F32(r) * (r) + 1.0f)

static inline double fm_exp_f64(double x)
{
    const double hi = 709.782712893384, lo = -708.3964185322641;
    const double shifter = 6755399441056766.0; /* 1.5 * 2^52 + 1022 */
    const double log2e = 1.4426950408889634;
    const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
    double t = x * log2e + shifter;
    double n = t - shifter;
    double r = (x - n * ln2_hi) - n * ln2_lo;
    double p2 = (2.0 * r) * FM_EXPQ_F64(r) + 2.0;      /* 2 * p(r), exact scaling */
    /* the low bits of t hold 2^51 + 1022 + n; the shift keeps n + 1022 */
    double scale = fm_bits_to_f64(fm_f64_to_bits(t) << 52);
    scale = n < -1021.0 ? 0x1p-1023 : scale;           /* n = -1022: 2^(n-1) is subnormal */
    double y = p2 * scale;
    y = x > hi ? __builtin_inf() : y;
    y = x < lo ? 0.0 : y;
    return y;
}

static inline float fm_exp_f32(float x)
{
    const float hi = 88.72283f, lo = -87.33654f;
    const float shifter = 12583038.0f; /* 1.5 * 2^23 + 126 */
    const float log2e = 1.44269504f;
    const float ln2_hi = 0.693145752f, ln2_lo = 1.42860677e-6f;
    float t = x * log2e + shifter;
    float n = t - shifter;
    float r = (x - n * ln2_hi) - n * ln2_lo;
    float p2 = (2.0f * r) * FM_EXPQ_F32(r) + 2.0f;
    float scale = fm_bits_to_f32(fm_f32_to_bits(t) << 23);
    scale = n < -125.0f ? 0x1p-127f : scale;           /* n = -126: 2^(n-1) is subnormal */
    float y = p2 * scale;
    y = x > hi ? __builtin_inff() : y;
    y = x < lo ? 0.0f : y;
    return y;
}

#endif
