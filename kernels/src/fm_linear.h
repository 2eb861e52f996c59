/* Linear decision kernels: scores = X @ coef.T + intercept, then an optional
 * probability transform, for float32 or float64 X, always accumulated in
 * float64 (scikit-learn computes float32 input against float64 coefficients
 * in float64; accumulating in float32 would flip near-tied predictions).
 *
 * Layout and loop order
 * ---------------------
 * X rows are contiguous (unit column stride), any row stride.  Coefficients
 * are row-major, one row per target, zero-padded to Fp (F rounded up to 8).
 *
 * Rows go in groups of 4 and targets in chunks of 4: 16 independent dot
 * products, each over the features 8 at a time (one vector load of x per row
 * and of W per target feeds 4 FMAs each), then reduced across lanes with three
 * shuffle-and-add steps for 4 sums at once.  No FMA is spent on padding
 * targets, whatever n_targets is (the old transposed layout padded 10 targets
 * to 16).  Leftover rows go one at a time.
 *
 * The vector type is GCC's generic vector extension; with -march=native it
 * compiles to AVX-512 or AVX2 and to SSE2 elsewhere.
 *
 * Every function reports whether it produced a non-finite score, so the
 * caller can tell NaN/inf input (an error, as in scikit-learn) from overflow
 * without a second pass over X in the common case.
 */
#ifndef FM_LINEAR_H
#define FM_LINEAR_H

#include <stddef.h>
#include <string.h>
#include <math.h>
#include "fm_exp.h"

typedef double fm_v8d __attribute__((vector_size(64)));
typedef float fm_v8f __attribute__((vector_size(32)));

static inline fm_v8d fm_load8d(const double *p) { fm_v8d v; memcpy(&v, p, sizeof v); return v; }
#ifdef __AVX512F__
#include <immintrin.h>
/* one vcvtps2pd from memory (GCC 12 splits __builtin_convertvector into halves) */
static inline fm_v8d fm_load8d_from_f(const float *p) { return (fm_v8d)_mm512_cvtps_pd(_mm256_loadu_ps(p)); }
#else
static inline fm_v8d fm_load8d_from_f(const float *p) { fm_v8f v; memcpy(&v, p, sizeof v); return __builtin_convertvector(v, fm_v8d); }
#endif
static inline fm_v8d fm_load8d_from_d(const double *p) { return fm_load8d(p); }

static inline double fm_hsum8(fm_v8d v)
{
    return ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]));
}

typedef long long fm_v8l __attribute__((vector_size(64)));

/* lanes 0..3: the sums of the lanes of a, b, c and d (three shuffle-and-add steps) */
static inline fm_v8d fm_hsum4x8(fm_v8d a, fm_v8d b, fm_v8d c, fm_v8d d)
{
    const fm_v8l lo = {0, 1, 2, 3, 8, 9, 10, 11}, hi = {4, 5, 6, 7, 12, 13, 14, 15};
    const fm_v8l m1 = {0, 1, 8, 9, 4, 5, 12, 13}, m2 = {2, 3, 10, 11, 6, 7, 14, 15};
    const fm_v8l ev = {0, 4, 2, 6, 0, 4, 2, 6}, od = {1, 5, 3, 7, 1, 5, 3, 7};
    fm_v8d p = __builtin_shuffle(a, b, lo) + __builtin_shuffle(a, b, hi);
    fm_v8d q = __builtin_shuffle(c, d, lo) + __builtin_shuffle(c, d, hi);
    fm_v8d r = __builtin_shuffle(p, q, m1) + __builtin_shuffle(p, q, m2);
    return __builtin_shuffle(r, ev) + __builtin_shuffle(r, od);
}

/* R rows (1 or 4) x NT targets (1..4) starting at target t0: R * NT independent
 * dot products over the features, 8 features per vector; x's last partial
 * vector comes zero-padded in xt, W's rows are zero-padded to Fp. */
#define FM_LINEAR_CHUNK(NAME, XT, LOAD8)                                                   \
static inline __attribute__((always_inline)) int NAME(                                    \
    const XT *const *x, const fm_v8d *xt, ptrdiff_t F8, int tail, const double *W,         \
    ptrdiff_t Fp, const double *b, ptrdiff_t t0, const int R, const int NT, ptrdiff_t T,   \
    double *out)                                                                          \
{                                                                                         \
    fm_v8d acc[4][4];                                                                     \
    for (int r = 0; r < R; r++)                                                           \
        for (int q = 0; q < 4; q++) acc[r][q] = (fm_v8d){0};                              \
    const double *w0 = W + t0 * Fp;                                                       \
    if (R == 4 && NT == 4) { /* the hot case, spelled out: 16 accumulators in registers */ \
        fm_v8d c00 = {0}, c01 = {0}, c02 = {0}, c03 = {0}, c10 = {0}, c11 = {0}, c12 = {0}, c13 = {0}; \
        fm_v8d c20 = {0}, c21 = {0}, c22 = {0}, c23 = {0}, c30 = {0}, c31 = {0}, c32 = {0}, c33 = {0}; \
        const double *w1 = w0 + Fp, *w2 = w1 + Fp, *w3 = w2 + Fp;                         \
        for (ptrdiff_t j = 0; j < F8; j += 8) {                                           \
            fm_v8d x0 = LOAD8(x[0] + j), x1 = LOAD8(x[1] + j), x2 = LOAD8(x[2] + j), x3 = LOAD8(x[3] + j); \
            fm_v8d v0 = fm_load8d(w0 + j), v1 = fm_load8d(w1 + j);                        \
            fm_v8d v2 = fm_load8d(w2 + j), v3 = fm_load8d(w3 + j);                        \
            /* keep the 8 operands in registers: GCC otherwise re-reads them from memory \
             * for every FMA, 24 loads per 16 FMAs, and the loop is load-bound */         \
            __asm__("" : "+v"(x0), "+v"(x1), "+v"(x2), "+v"(x3));                         \
            __asm__("" : "+v"(v0), "+v"(v1), "+v"(v2), "+v"(v3));                         \
            c00 += x0 * v0; c01 += x0 * v1; c02 += x0 * v2; c03 += x0 * v3;              \
            c10 += x1 * v0; c11 += x1 * v1; c12 += x1 * v2; c13 += x1 * v3;              \
            c20 += x2 * v0; c21 += x2 * v1; c22 += x2 * v2; c23 += x2 * v3;              \
            c30 += x3 * v0; c31 += x3 * v1; c32 += x3 * v2; c33 += x3 * v3;              \
        }                                                                                 \
        acc[0][0] = c00; acc[0][1] = c01; acc[0][2] = c02; acc[0][3] = c03;               \
        acc[1][0] = c10; acc[1][1] = c11; acc[1][2] = c12; acc[1][3] = c13;               \
        acc[2][0] = c20; acc[2][1] = c21; acc[2][2] = c22; acc[2][3] = c23;               \
        acc[3][0] = c30; acc[3][1] = c31; acc[3][2] = c32; acc[3][3] = c33;               \
    } else                                                                                \
    for (ptrdiff_t j = 0; j < F8; j += 8) {                                               \
        fm_v8d xv[4];                                                                     \
        for (int r = 0; r < R; r++) {                                                     \
            xv[r] = LOAD8(x[r] + j);                                                      \
            __asm__("" : "+v"(xv[r]));  /* in a register, not re-read per FMA */          \
        }                                                                                 \
        for (int q = 0; q < NT; q++) {                                                    \
            fm_v8d w = fm_load8d(w0 + q * Fp + j);                                        \
            __asm__("" : "+v"(w));                                                        \
            for (int r = 0; r < R; r++) acc[r][q] += xv[r] * w;                           \
        }                                                                                 \
    }                                                                                     \
    if (tail)                                                                             \
        for (int q = 0; q < NT; q++) {                                                    \
            fm_v8d w = fm_load8d(w0 + q * Fp + F8);                                       \
            for (int r = 0; r < R; r++) acc[r][q] += xt[r] * w;                           \
        }                                                                                 \
    int bad = 0;                                                                          \
    if (NT == 1 && R == 4) { /* one target: reduce across the rows instead */             \
        fm_v8d s = fm_hsum4x8(acc[0][0], acc[1][0], acc[2][0], acc[3][0]);                \
        for (int r = 0; r < 4; r++) {                                                     \
            double v = s[r] + b[t0];                                                      \
            out[r * T + t0] = v;                                                          \
            bad |= !isfinite(v);                                                          \
        }                                                                                 \
        return bad;                                                                       \
    }                                                                                     \
    for (int r = 0; r < R; r++) {                                                         \
        fm_v8d s = fm_hsum4x8(acc[r][0], acc[r][1], acc[r][2], acc[r][3]);                \
        for (int q = 0; q < NT; q++) {                                                    \
            double v = s[q] + b[t0 + q];                                                  \
            out[r * T + t0 + q] = v;                                                      \
            bad |= !isfinite(v);                                                          \
        }                                                                                 \
    }                                                                                     \
    return bad;                                                                           \
}

/* Scores for rows [i0, i1) into out[(i - i0) * T + t]: rows in groups of 4,
 * targets in chunks of 4 (16 FMA chains), then single rows. */
#define FM_LINEAR_TARGETS(CHUNK, x, xt, F8, tail)                                            \
        for (ptrdiff_t t0 = 0; t0 < T; t0 += 4) {                                         \
            ptrdiff_t nt = T - t0 < 4 ? T - t0 : 4;                                       \
            if (R == 4) {                                                                 \
                switch (nt) {                                                             \
                case 4: bad |= CHUNK(x, xt, F8, tail, W, Fp, b, t0, 4, 4, T, o); break; \
                case 3: bad |= CHUNK(x, xt, F8, tail, W, Fp, b, t0, 4, 3, T, o); break; \
                case 2: bad |= CHUNK(x, xt, F8, tail, W, Fp, b, t0, 4, 2, T, o); break; \
                default: bad |= CHUNK(x, xt, F8, tail, W, Fp, b, t0, 4, 1, T, o); \
                }                                                                         \
            } else {                                                                      \
                switch (nt) {                                                             \
                case 4: bad |= CHUNK(x, xt, F8, tail, W, Fp, b, t0, 1, 4, T, o); break; \
                case 3: bad |= CHUNK(x, xt, F8, tail, W, Fp, b, t0, 1, 3, T, o); break; \
                case 2: bad |= CHUNK(x, xt, F8, tail, W, Fp, b, t0, 1, 2, T, o); break; \
                default: bad |= CHUNK(x, xt, F8, tail, W, Fp, b, t0, 1, 1, T, o);  \
                }                                                                         \
            }                                                                             \
        }

/* Up to 4 targets: x straight from X (one conversion per element).  More: the 4
 * rows are converted once into a zero-padded float64 block that every chunk of
 * targets reads. */
#define FM_LINEAR_SCORES(NAME, XT, LOAD8)                                                  \
FM_LINEAR_CHUNK(NAME##_chunk, XT, LOAD8)                                                  \
FM_LINEAR_CHUNK(NAME##_dchunk, double, fm_load8d)                                         \
static int NAME(const XT *X, ptrdiff_t rs, ptrdiff_t i0, ptrdiff_t i1, ptrdiff_t F,      \
                ptrdiff_t Fp, const double *W, const double *b, ptrdiff_t T, double *out) \
{                                                                                         \
    int bad = 0;                                                                          \
    const ptrdiff_t F8 = F & ~(ptrdiff_t)7;                                               \
    const int tail = F8 < F;                                                              \
    if (T == 1) { /* one target: a plain dot product per row, 16 features a step */      \
        for (ptrdiff_t i = i0; i < i1; i++) {                                             \
            const XT *x = X + i * rs;                                                     \
            fm_v8d a0 = {0}, a1 = {0};                                                    \
            ptrdiff_t j = 0;                                                              \
            for (; j + 16 <= F8; j += 16) {                                               \
                a0 += LOAD8(x + j) * fm_load8d(W + j);                                    \
                a1 += LOAD8(x + j + 8) * fm_load8d(W + j + 8);                            \
            }                                                                             \
            for (; j < F8; j += 8) a0 += LOAD8(x + j) * fm_load8d(W + j);                 \
            double v = fm_hsum8(a0 + a1);                                                 \
            for (; j < F; j++) v += (double)x[j] * W[j];                                  \
            v += b[0];                                                                    \
            out[i - i0] = v;                                                              \
            bad |= !isfinite(v);                                                          \
        }                                                                                 \
        return bad;                                                                       \
    }                                                                                     \
    double xbuf[4 * 1024];                                                                \
    const int buffered = T > 4 && Fp <= 1024;                                             \
    for (ptrdiff_t i = i0; i < i1;) {                                                     \
        const int R = i + 4 <= i1 ? 4 : 1;                                                \
        double *o = out + (i - i0) * T;                                                   \
        if (buffered) {                                                                   \
            const double *x[4];                                                           \
            fm_v8d xt[4];                                                                 \
            for (int r = 0; r < R; r++) {                                                 \
                const XT *src = X + (i + r) * rs;                                         \
                double *dst = xbuf + r * Fp;                                              \
                for (ptrdiff_t j = 0; j < F; j++) dst[j] = (double)src[j];                \
                for (ptrdiff_t j = F; j < Fp; j++) dst[j] = 0.0;                          \
                x[r] = dst;                                                               \
                xt[r] = (fm_v8d){0};                                                      \
            }                                                                             \
            FM_LINEAR_TARGETS(NAME##_dchunk, x, xt, Fp, 0)                                \
        } else {                                                                          \
            const XT *x[4];                                                               \
            fm_v8d xt[4];                                                                 \
            for (int r = 0; r < R; r++) {                                                 \
                x[r] = X + (i + r) * rs;                                                  \
                double tmp[8] = {0};                                                      \
                for (ptrdiff_t j = F8; j < F; j++) tmp[j - F8] = (double)x[r][j];         \
                xt[r] = fm_load8d(tmp);                                                   \
            }                                                                             \
            FM_LINEAR_TARGETS(NAME##_chunk, x, xt, F8, tail)                              \
        }                                                                                 \
        i += R;                                                                           \
    }                                                                                     \
    return bad;                                                                           \
}

FM_LINEAR_SCORES(fm_linear_scores_f32, float, fm_load8d_from_f)
FM_LINEAR_SCORES(fm_linear_scores_f64, double, fm_load8d_from_d)

/* Probability transforms, in place over n rows of scores (n x T), written to
 * proba (n x K).  They follow scikit-learn's formulas operation by operation
 * (subtract the max, exponentiate, divide by the sum; 1 - p for binary). */
enum {
    FM_SCORES = 0,          /* proba = scores                               */
    FM_SOFTMAX = 1,         /* multinomial                                  */
    FM_LOGISTIC_BINARY = 2, /* [1 - s, s], s = sigmoid(score); K = 2, T = 1  */
    FM_LOGISTIC_OVR = 3,    /* sigmoids normalised to sum 1                 */
    FM_MHUBER_BINARY = 4,   /* (clip(score, -1, 1) + 1) / 2, as [1-p, p]    */
    FM_MHUBER_OVR = 5,      /* normalised; all-zero rows -> 1/K             */
};

static inline double fm_sigmoid1(double s) { return 1.0 / (1.0 + fm_exp_f64(-s)); }
static inline double fm_mhuber1(double s)
{
    double c = s > 1.0 ? 1.0 : s;
    c = c < -1.0 ? -1.0 : c;
    return (c + 1.0) / 2.0;
}

static void fm_linear_transform(double *s, ptrdiff_t n, ptrdiff_t T, int kind, double *p)
{
    ptrdiff_t nT = n * T;
    switch (kind) {
    case FM_SOFTMAX: {
        /* Where every score lies in [-700, 700] no exp can overflow or leave the
         * normal range and no row sum can be 0 or inf: exp(s) / sum exp(s) needs no
         * shift by the row maximum (the same value up to an ulp, and one pass less). */
        double lo = INFINITY, hi = -INFINITY;
        for (ptrdiff_t k = 0; k < nT; k++) {
            double v = s[k];
            lo = v < lo ? v : lo;
            hi = v > hi ? v : hi;
        }
        if (lo >= -700.0 && hi <= 700.0) {   /* false for NaN: the general path keeps NaN */
            for (ptrdiff_t k = 0; k < nT; k++) p[k] = fm_exp_f64(s[k]);
        } else {
            for (ptrdiff_t i = 0; i < n; i++) {
                double *r = s + i * T;
                double m = r[0];
                for (ptrdiff_t t = 1; t < T; t++) m = (r[t] > m || r[t] != r[t]) ? r[t] : m;
                for (ptrdiff_t t = 0; t < T; t++) p[i * T + t] = r[t] - m;
            }
            for (ptrdiff_t k = 0; k < nT; k++) p[k] = fm_exp_f64(p[k]);   /* one flat SIMD pass */
        }
        for (ptrdiff_t i = 0; i < n; i++) {
            /* one division per row, not per class: divisions are the slow part of the
             * transform; the product is within an ulp of the quotient */
            double *q = p + i * T, sum = 0.0;
            for (ptrdiff_t t = 0; t < T; t++) sum += q[t];
            double inv = 1.0 / sum;
            for (ptrdiff_t t = 0; t < T; t++) q[t] *= inv;
        }
        break;
    }
    case FM_LOGISTIC_BINARY:
        for (ptrdiff_t i = 0; i < n; i++) s[i] = fm_sigmoid1(s[i]);
        for (ptrdiff_t i = 0; i < n; i++) { p[2 * i] = 1.0 - s[i]; p[2 * i + 1] = s[i]; }
        break;
    case FM_MHUBER_BINARY:
        for (ptrdiff_t i = 0; i < n; i++) {
            double v = fm_mhuber1(s[i]);
            p[2 * i] = 1.0 - v;
            p[2 * i + 1] = v;
        }
        break;
    case FM_LOGISTIC_OVR:
    case FM_MHUBER_OVR:
        if (kind == FM_LOGISTIC_OVR)
            for (ptrdiff_t k = 0; k < nT; k++) p[k] = fm_sigmoid1(s[k]);
        else
            for (ptrdiff_t k = 0; k < nT; k++) p[k] = fm_mhuber1(s[k]);
        for (ptrdiff_t i = 0; i < n; i++) {
            double *q = p + i * T, sum = 0.0;
            for (ptrdiff_t t = 0; t < T; t++) sum += q[t];
            if (sum == 0.0) {
                for (ptrdiff_t t = 0; t < T; t++) q[t] = 1.0 / (double)T;
            } else {
                for (ptrdiff_t t = 0; t < T; t++) q[t] /= sum;
            }
        }
        break;
    default:
        if (p != s) memcpy(p, s, (size_t)nT * sizeof(double));
    }
}

/* Index of the predicted class per row: score > 0 for one column, else the
 * first maximum (numpy's argmax: NaN wins, as it compares unordered). */
static void fm_linear_argmax(const double *s, ptrdiff_t n, ptrdiff_t T, ptrdiff_t *idx)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        const double *r = s + i * T;
        if (T == 1) { idx[i] = r[0] > 0.0; continue; }
        ptrdiff_t best = 0;
        double m = r[0];
        if (m == m)
            for (ptrdiff_t t = 1; t < T; t++) {
                if (r[t] > m) { m = r[t]; best = t; }
                else if (r[t] != r[t]) { best = t; break; }
            }
        idx[i] = best;
    }
}

#endif
