/* Vectorizable exp for float and double.
 *
 * Why: libm's exp is a call the compiler cannot vectorize (numba's and GCC's
 * auto-vectorizers both stop at it), and sigmoid/softmax are exp-bound.  These
 * are branch-free inline functions, so a plain loop that calls them compiles
 * to SIMD code (AVX2 / AVX-512 with -march=native).
 *
 * Method (Cody-Waite): x = n*ln2 + r with |r| <= ln2/2, exp(x) = 2^n * p(r).
 * n is rounded with the "magic shifter" trick (add 1.5*2^52, read the low
 * bits), 2^n is built directly in the exponent field, p is a Taylor
 * polynomial long enough for ~1 ulp (degree 13 for double, 7 for float).
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

static inline double fm_exp_f64(double x)
{
    const double hi = 709.782712893384, lo = -708.3964185322641;
    const double shifter = 6755399441055744.0; /* 1.5 * 2^52 */
    const double log2e = 1.4426950408889634;
    const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
    double xc = x > hi ? hi : x;
    xc = xc < lo ? lo : xc;
    double t = xc * log2e + shifter;
    double n = t - shifter;
    int64_t ni = (int64_t)(fm_f64_to_bits(t) - fm_f64_to_bits(shifter));
    double r = (xc - n * ln2_hi) - n * ln2_lo;
    double p = 1.0 / 6227020800.0;
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    double scale = fm_bits_to_f64((uint64_t)(ni + 1023) << 52);
    double y = p * scale;
    y = x > hi ? __builtin_inf() : y;
    y = x < lo ? 0.0 : y;
    return y;
}

static inline float fm_exp_f32(float x)
{
    const float hi = 88.72283f, lo = -87.33654f;
    const float shifter = 12582912.0f; /* 1.5 * 2^23 */
    const float log2e = 1.44269504f;
    const float ln2_hi = 0.693145752f, ln2_lo = 1.42860677e-6f;
    float xc = x > hi ? hi : x;
    xc = xc < lo ? lo : xc;
    float t = xc * log2e + shifter;
    float n = t - shifter;
    int32_t ni = (int32_t)(fm_f32_to_bits(t) - fm_f32_to_bits(shifter));
    float r = (xc - n * ln2_hi) - n * ln2_lo;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    float scale = fm_bits_to_f32((uint32_t)(ni + 127) << 23);
    float y = p * scale;
    y = x > hi ? __builtin_inff() : y;
    y = x < lo ? 0.0f : y;
    return y;
}

#endif
