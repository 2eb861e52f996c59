/* Linear decision kernels: scores = X @ coef.T + intercept, then an optional
 * probability transform, for float32 or float64 X, always accumulated in
 * float64 (scikit-learn computes float32 input against float64 coefficients
 * in float64; accumulating in float32 would flip near-tied predictions).
 *
 * Layout and loop order
 * ---------------------
 * X rows are contiguous (unit column stride), any row stride.
 *
 * Wide models (n_targets >= 4): coefficients are stored transposed and
 * zero-padded, WT[F][Tp] with Tp = n_targets rounded up to 8, so one 8-double
 * vector holds 8 targets of one feature.  A block of 4 rows keeps 4 vector
 * accumulators per 8 targets in registers; for each feature, one vector load
 * of WT feeds 4 broadcast-FMAs.  Loop order: target chunk, row block, feature.
 *
 * Narrow models (n_targets < 4, e.g. binary classifiers and single-output
 * regressors): plain dot products over the feature axis, 8 features per
 * vector, coefficients W[T][F] row-major.
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
static inline fm_v8d fm_load8d_from_f(const float *p) { fm_v8f v; memcpy(&v, p, sizeof v); return __builtin_convertvector(v, fm_v8d); }
static inline fm_v8d fm_load8d_from_d(const double *p) { return fm_load8d(p); }

static inline double fm_hsum8(fm_v8d v)
{
    return ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]));
}

static inline int fm_store_scores(double *out, fm_v8d acc, const double *b, ptrdiff_t n)
{
    int bad = 0;
    for (ptrdiff_t t = 0; t < n; t++) {
        double s = acc[t] + b[t];
        out[t] = s;
        bad |= !isfinite(s);
    }
    return bad;
}

/* Scores for rows [i0, i1) into out[(i - i0) * T + t]. */
#define FM_LINEAR_SCORES(NAME, XT, LOAD8)                                                  \
static int NAME(const XT *X, ptrdiff_t rs, ptrdiff_t i0, ptrdiff_t i1, ptrdiff_t F,      \
                const double *W, const double *WT, const double *b,                      \
                ptrdiff_t T, ptrdiff_t Tp, double *out)                                  \
{                                                                                         \
    int bad = 0;                                                                          \
    if (T >= 4) {                                                                         \
        /* two 8-target chunks per pass: x is loaded and converted once for 16 targets */ \
        ptrdiff_t c = 0;                                                                  \
        for (; c < Tp; c += 16) {                                                         \
            int two = c + 16 <= Tp;                                                       \
            ptrdiff_t nt0 = T - c < 8 ? T - c : 8;                                        \
            ptrdiff_t nt1 = T - c - 8 < 8 ? T - c - 8 : 8;                                \
            ptrdiff_t i = i0;                                                             \
            for (; i + 4 <= i1; i += 4) {                                                 \
                const XT *x0 = X + i * rs, *x1 = x0 + rs, *x2 = x1 + rs, *x3 = x2 + rs;  \
                fm_v8d a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};                            \
                fm_v8d b0 = {0}, b1 = {0}, b2 = {0}, b3 = {0};                            \
                if (two) {                                                                \
                    for (ptrdiff_t j = 0; j < F; j++) {                                   \
                        fm_v8d w = fm_load8d(WT + j * Tp + c);                            \
                        fm_v8d v = fm_load8d(WT + j * Tp + c + 8);                        \
                        double y0 = x0[j], y1 = x1[j], y2 = x2[j], y3 = x3[j];            \
                        a0 += y0 * w; b0 += y0 * v;                                       \
                        a1 += y1 * w; b1 += y1 * v;                                       \
                        a2 += y2 * w; b2 += y2 * v;                                       \
                        a3 += y3 * w; b3 += y3 * v;                                       \
                    }                                                                     \
                } else {                                                                  \
                    for (ptrdiff_t j = 0; j < F; j++) {                                   \
                        fm_v8d w = fm_load8d(WT + j * Tp + c);                            \
                        a0 += (double)x0[j] * w;                                          \
                        a1 += (double)x1[j] * w;                                          \
                        a2 += (double)x2[j] * w;                                          \
                        a3 += (double)x3[j] * w;                                          \
                    }                                                                     \
                }                                                                         \
                double *o = out + (i - i0) * T + c;                                       \
                bad |= fm_store_scores(o, a0, b + c, nt0);                                \
                bad |= fm_store_scores(o + T, a1, b + c, nt0);                            \
                bad |= fm_store_scores(o + 2 * T, a2, b + c, nt0);                        \
                bad |= fm_store_scores(o + 3 * T, a3, b + c, nt0);                        \
                if (two) {                                                                \
                    bad |= fm_store_scores(o + 8, b0, b + c + 8, nt1);                    \
                    bad |= fm_store_scores(o + T + 8, b1, b + c + 8, nt1);                \
                    bad |= fm_store_scores(o + 2 * T + 8, b2, b + c + 8, nt1);            \
                    bad |= fm_store_scores(o + 3 * T + 8, b3, b + c + 8, nt1);            \
                }                                                                         \
            }                                                                             \
            for (; i < i1; i++) {                                                         \
                const XT *x0 = X + i * rs;                                                \
                for (ptrdiff_t cc = c; cc < c + 16 && cc < Tp; cc += 8) {                 \
                    fm_v8d a0 = {0};                                                      \
                    for (ptrdiff_t j = 0; j < F; j++)                                     \
                        a0 += (double)x0[j] * fm_load8d(WT + j * Tp + cc);                \
                    ptrdiff_t nt = T - cc < 8 ? T - cc : 8;                               \
                    bad |= fm_store_scores(out + (i - i0) * T + cc, a0, b + cc, nt);      \
                }                                                                         \
            }                                                                             \
        }                                                                                 \
        return bad;                                                                       \
    }                                                                                     \
    ptrdiff_t F8 = F & ~(ptrdiff_t)7;                                                     \
    for (ptrdiff_t i = i0; i < i1; i++) {                                                 \
        const XT *x = X + i * rs;                                                         \
        for (ptrdiff_t t = 0; t < T; t++) {                                               \
            const double *w = W + t * F;                                                  \
            fm_v8d a0 = {0}, a1 = {0};                                                    \
            ptrdiff_t j = 0;                                                              \
            for (; j + 16 <= F8; j += 16) {                                               \
                a0 += LOAD8(x + j) * fm_load8d(w + j);                                    \
                a1 += LOAD8(x + j + 8) * fm_load8d(w + j + 8);                            \
            }                                                                             \
            for (; j < F8; j += 8) a0 += LOAD8(x + j) * fm_load8d(w + j);                 \
            double s = fm_hsum8(a0 + a1);                                                 \
            for (; j < F; j++) s += (double)x[j] * w[j];                                  \
            s += b[t];                                                                    \
            out[(i - i0) * T + t] = s;                                                    \
            bad |= !isfinite(s);                                                          \
        }                                                                                 \
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
    case FM_SOFTMAX:
        for (ptrdiff_t i = 0; i < n; i++) {
            double *r = s + i * T;
            double m = r[0];
            for (ptrdiff_t t = 1; t < T; t++) m = (r[t] > m || r[t] != r[t]) ? r[t] : m;
            for (ptrdiff_t t = 0; t < T; t++) p[i * T + t] = r[t] - m;
        }
        for (ptrdiff_t k = 0; k < nT; k++) p[k] = fm_exp_f64(p[k]);   /* one flat SIMD pass */
        for (ptrdiff_t i = 0; i < n; i++) {
            /* one division per row, not per class: divisions are the slow part of the
             * transform; the product is within an ulp of the quotient */
            double *q = p + i * T, sum = 0.0;
            for (ptrdiff_t t = 0; t < T; t++) sum += q[t];
            double inv = 1.0 / sum;
            for (ptrdiff_t t = 0; t < T; t++) q[t] *= inv;
        }
        break;
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
