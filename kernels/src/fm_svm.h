/* Kernel SVM decision functions: libsvm's one-vs-one sums
 *
 *     dec[p] = sum_s coef[m(s, p)][s] * K(x, s) + b[p]
 *
 * for a block of rows, with the kernel computed from dot products
 * (|x - s|^2 = |x|^2 + |s|^2 - 2 x.s for RBF), the kernel function and the
 * coefficient reduction fused, so no kernel matrix larger than a 8 x 16 tile
 * ever exists.  Everything is float64: scikit-learn converts float32 input to
 * float64 and libsvm works in double, and a float32 dot product over 50
 * features loses ~1e-6 relative -- the whole tolerance -- before the kernel
 * function amplifies it.  float64 costs half the SIMD lanes; it buys answers
 * within ~1e-14 of scikit-learn's and predictions identical to it.
 *
 * Layout (built by fastml/backends/native.py, SVMNative)
 * -------------------------------------------------------
 * Support vectors are cut into panels of 16; a panel holds vectors of one
 * class only (each class is padded with zero vectors of coefficient 0).
 *   sv[(p * F + f) * 16 + l]     feature f of vector l of panel p
 *   sn[p * 16 + l]               its squared norm (RBF)
 *   coef[(p * M + m) * 16 + l]   its coefficient in libsvm's row m (M = k - 1,
 *                                or 1 for regression / one-class)
 *   seg[c] .. seg[c + 1]         the panels of class c
 *   pair[c * M + m]              the pair (output column) that row m of a class-c
 *                                vector feeds: (c, m + 1) for m >= c, else (m, c)
 *
 * Loop order
 * ----------
 * Rows are converted to a float64 block (and checked for NaN/inf on the way).
 * Batches: class, panel, 8-row tile.  The micro-kernel keeps 8 rows x 16
 * vectors of dot products in 16 eight-double registers; per feature it loads
 * two vectors of the panel and broadcasts 8 x values (16 FMAs per 2 loads).
 * The tile then becomes kernel values and is multiplied into per-class
 * accumulators acc[row][m][16] (vector-wide, summed across lanes once per
 * class).  Fewer than 8 rows (batch 1): row, then 4 panels at a time, so
 * 8 independent FMA chains hide the FMA latency.
 *
 * The linear kernel is folded into one weight vector per pair (sum_s coef_s s),
 * computed once in float64: the same sum in another order.
 *
 * Exactness: where |x|^2 + |s|^2 is so large that the cancelling form could
 * lose more than 1e-11 of the exponent (huge norms), that kernel value is
 * recomputed from the differences, as libsvm does.  The polynomial kernel
 * uses libsvm's power by squaring; the sigmoid kernel libm's tanh.
 *
 * Outputs per row: the raw pair values, scikit-learn's one-vs-rest scores,
 * libsvm's vote, argmax of the one-vs-rest scores (break_ties), or libsvm's
 * probabilities (Platt's sigmoid per pair, then Wu-Lin-Weng pairwise coupling,
 * in libsvm's order of operations).
 */
#ifndef FM_SVM_H
#define FM_SVM_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fm_exp.h"

typedef double fm_sv8d __attribute__((vector_size(64)));

static inline fm_sv8d fm_sv_load(const double *p) { fm_sv8d v; memcpy(&v, p, sizeof v); return v; }
static inline void fm_sv_store(double *p, fm_sv8d v) { memcpy(p, &v, sizeof v); }

enum { FM_SVM_LINEAR = 0, FM_SVM_POLY = 1, FM_SVM_RBF = 2, FM_SVM_SIGMOID = 3 };
enum { FM_SVM_RAW = 0, FM_SVM_NEG = 1, FM_SVM_OVR = 2, FM_SVM_VOTE = 3, FM_SVM_TIES = 4, FM_SVM_PROBA = 5 };

#define FM_SVM_LANES 16
#define FM_SVM_TILE 8

typedef struct {
    ptrdiff_t F, P, M, K, NP;    /* features, panels, coefficient rows, classes, pairs */
    int kernel, degree;
    double gamma, coef0;
    double big;                  /* |x|^2 + |s|^2 above which RBF is recomputed exactly */
    double big_row;              /* big - the largest |s|^2: rows below it never need that */
    const double *sv, *sn, *coef, *b, *pa, *pb;
    const double *lin;           /* linear kernel folded: lin[q * F + f] = sum_s coef_s s_f of pair q, or NULL */
    const int32_t *seg, *pair;
} fm_svm_plan;

/* doubles of scratch a block of n rows needs */
static inline ptrdiff_t fm_svm_work_size(const fm_svm_plan *pl, ptrdiff_t n)
{
    return n * pl->F + n + n * pl->M * FM_SVM_LANES + n * pl->NP + 4 * FM_SVM_LANES * FM_SVM_TILE
           + 2 * pl->K * pl->K + 4 * pl->K + 64;
}

static inline double fm_svm_powi(double base, int times)
{
    double tmp = base, ret = 1.0;
    for (int t = times; t > 0; t /= 2) {
        if (t % 2 == 1) ret *= tmp;
        tmp = tmp * tmp;
    }
    return ret;
}

/* kernel values of one row against panel p from their dot products, multiplied
 * into the row's accumulators acc[m][16] */
static inline void fm_svm_accumulate(const fm_svm_plan *pl, ptrdiff_t p, const double *x, double xx,
                                     const double *restrict dot, double *restrict acc)
{
    double k[FM_SVM_LANES];
    const double *restrict coef = pl->coef + p * pl->M * FM_SVM_LANES;
    const double g = pl->gamma;
    switch (pl->kernel) {
    case FM_SVM_RBF: {
        const double *restrict sn = pl->sn + p * FM_SVM_LANES;
        int exact = 0;
        for (int l = 0; l < FM_SVM_LANES; l++) {
            double d = xx + sn[l] - 2.0 * dot[l];
            d = d > 0.0 ? d : 0.0;
            k[l] = fm_exp_f64(-g * d);
        }
        if (__builtin_expect(xx > pl->big_row, 0))   /* rare: a row of huge norm */
            for (int l = 0; l < FM_SVM_LANES; l++)
                exact |= (xx + sn[l] > pl->big) & (k[l] > 0.0);
        if (__builtin_expect(exact, 0)) { /* huge norms: libsvm's sum of squared differences */
            const double *s = pl->sv + p * pl->F * FM_SVM_LANES;
            for (int l = 0; l < FM_SVM_LANES; l++) {
                double d = 0.0;
                for (ptrdiff_t f = 0; f < pl->F; f++) {
                    double t = x[f] - s[f * FM_SVM_LANES + l];
                    d += t * t;
                }
                k[l] = exp(-g * d);
            }
        }
        break;
    }
    case FM_SVM_LINEAR:
        for (int l = 0; l < FM_SVM_LANES; l++) k[l] = dot[l];
        break;
    case FM_SVM_POLY:
        for (int l = 0; l < FM_SVM_LANES; l++) k[l] = fm_svm_powi(g * dot[l] + pl->coef0, pl->degree);
        break;
    default:
        for (int l = 0; l < FM_SVM_LANES; l++) k[l] = tanh(g * dot[l] + pl->coef0);
        break;
    }
    for (ptrdiff_t m = 0; m < pl->M; m++)
        for (int l = 0; l < FM_SVM_LANES; l++)
            acc[m * FM_SVM_LANES + l] += k[l] * coef[m * FM_SVM_LANES + l];
}

/* dot products of 8 rows (x, row stride F) with the 16 vectors of one panel */
static inline void fm_svm_dots8(const double *x, ptrdiff_t F, const double *pan, double *dot)
{
    fm_sv8d a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, a4 = {0}, a5 = {0}, a6 = {0}, a7 = {0};
    fm_sv8d c0 = {0}, c1 = {0}, c2 = {0}, c3 = {0}, c4 = {0}, c5 = {0}, c6 = {0}, c7 = {0};
    for (ptrdiff_t f = 0; f < F; f++) {
        fm_sv8d s0 = fm_sv_load(pan + f * 16), s1 = fm_sv_load(pan + f * 16 + 8);
        double x0 = x[f], x1 = x[F + f], x2 = x[2 * F + f], x3 = x[3 * F + f];
        double x4 = x[4 * F + f], x5 = x[5 * F + f], x6 = x[6 * F + f], x7 = x[7 * F + f];
        a0 += x0 * s0; c0 += x0 * s1;
        a1 += x1 * s0; c1 += x1 * s1;
        a2 += x2 * s0; c2 += x2 * s1;
        a3 += x3 * s0; c3 += x3 * s1;
        a4 += x4 * s0; c4 += x4 * s1;
        a5 += x5 * s0; c5 += x5 * s1;
        a6 += x6 * s0; c6 += x6 * s1;
        a7 += x7 * s0; c7 += x7 * s1;
    }
    fm_sv_store(dot + 0, a0); fm_sv_store(dot + 8, c0);
    fm_sv_store(dot + 16, a1); fm_sv_store(dot + 24, c1);
    fm_sv_store(dot + 32, a2); fm_sv_store(dot + 40, c2);
    fm_sv_store(dot + 48, a3); fm_sv_store(dot + 56, c3);
    fm_sv_store(dot + 64, a4); fm_sv_store(dot + 72, c4);
    fm_sv_store(dot + 80, a5); fm_sv_store(dot + 88, c5);
    fm_sv_store(dot + 96, a6); fm_sv_store(dot + 104, c6);
    fm_sv_store(dot + 112, a7); fm_sv_store(dot + 120, c7);
}

/* dot products of one row with 4 consecutive panels (8 independent chains) */
static inline void fm_svm_dots1x4(const double *x, ptrdiff_t F, const double *pan, double *dot)
{
    const ptrdiff_t ps = F * 16;
    fm_sv8d a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, a4 = {0}, a5 = {0}, a6 = {0}, a7 = {0};
    for (ptrdiff_t f = 0; f < F; f++) {
        double xf = x[f];
        const double *q = pan + f * 16;
        a0 += xf * fm_sv_load(q);          a1 += xf * fm_sv_load(q + 8);
        a2 += xf * fm_sv_load(q + ps);     a3 += xf * fm_sv_load(q + ps + 8);
        a4 += xf * fm_sv_load(q + 2 * ps); a5 += xf * fm_sv_load(q + 2 * ps + 8);
        a6 += xf * fm_sv_load(q + 3 * ps); a7 += xf * fm_sv_load(q + 3 * ps + 8);
    }
    fm_sv_store(dot + 0, a0); fm_sv_store(dot + 8, a1);
    fm_sv_store(dot + 16, a2); fm_sv_store(dot + 24, a3);
    fm_sv_store(dot + 32, a4); fm_sv_store(dot + 40, a5);
    fm_sv_store(dot + 48, a6); fm_sv_store(dot + 56, a7);
}

/* one row, one panel (the last panels of a class): the same order of operations as
 * the tiles above, so a row's answer does not depend on the batch it came in */
static inline void fm_svm_dots1(const double *x, ptrdiff_t F, const double *pan, double *dot)
{
    fm_sv8d a0 = {0}, a1 = {0};
    for (ptrdiff_t f = 0; f < F; f++) {
        a0 += x[f] * fm_sv_load(pan + f * 16);
        a1 += x[f] * fm_sv_load(pan + f * 16 + 8);
    }
    fm_sv_store(dot, a0);
    fm_sv_store(dot + 8, a1);
}

/* add each row's class accumulators into its pair values, then zero them */
static inline void fm_svm_flush(const fm_svm_plan *pl, ptrdiff_t c, ptrdiff_t n, double *acc, double *dec)
{
    for (ptrdiff_t r = 0; r < n; r++) {
        double *a = acc + r * pl->M * FM_SVM_LANES;
        for (ptrdiff_t m = 0; m < pl->M; m++) {
            double s = 0.0;
            for (int l = 0; l < FM_SVM_LANES; l++) s += a[m * FM_SVM_LANES + l];
            dec[r * pl->NP + pl->pair[c * pl->M + m]] += s;
        }
        memset(a, 0, sizeof(double) * pl->M * FM_SVM_LANES);
    }
}

static inline double fm_svm_sigmoid_predict(double dec, double A, double B)
{
    double fApB = dec * A + B;
    return fApB >= 0 ? exp(-fApB) / (1.0 + exp(-fApB)) : 1.0 / (1.0 + exp(fApB));
}

/* libsvm's probabilities for one row from its pair values (Wu, Lin and Weng's
 * second method, with libsvm's iteration limit and stopping rule) */
static void fm_svm_proba(const fm_svm_plan *pl, const double *dec, double *prob, double *work)
{
    const ptrdiff_t k = pl->K;
    const double min_prob = 1e-7;
    double *r = work, *Q = r + k * k, *Qp = Q + k * k;
    ptrdiff_t p = 0;
    for (ptrdiff_t i = 0; i < k; i++)
        for (ptrdiff_t j = i + 1; j < k; j++, p++) {
            double v = fm_svm_sigmoid_predict(dec[p], pl->pa[p], pl->pb[p]);
            v = v > min_prob ? v : min_prob;
            v = v < 1 - min_prob ? v : 1 - min_prob;
            r[i * k + j] = v;
            r[j * k + i] = 1 - v;
        }
    /* two classes go through the iteration too: scikit-learn's libsvm predates
     * libsvm 3.17's shortcut (prob = r01), and its answers differ by ~1e-4 */
    for (ptrdiff_t t = 0; t < k; t++) {
        prob[t] = 1.0 / k;
        Q[t * k + t] = 0;
        for (ptrdiff_t j = 0; j < t; j++) {
            Q[t * k + t] += r[j * k + t] * r[j * k + t];
            Q[t * k + j] = Q[j * k + t];
        }
        for (ptrdiff_t j = t + 1; j < k; j++) {
            Q[t * k + t] += r[j * k + t] * r[j * k + t];
            Q[t * k + j] = -r[j * k + t] * r[t * k + j];
        }
    }
    const ptrdiff_t max_iter = k > 100 ? k : 100;
    const double eps = 0.005 / k;
    for (ptrdiff_t iter = 0; iter < max_iter; iter++) {
        double pQp = 0;
        for (ptrdiff_t t = 0; t < k; t++) {
            Qp[t] = 0;
            for (ptrdiff_t j = 0; j < k; j++) Qp[t] += Q[t * k + j] * prob[j];
            pQp += prob[t] * Qp[t];
        }
        double max_error = 0;
        for (ptrdiff_t t = 0; t < k; t++) {
            double e = fabs(Qp[t] - pQp);
            if (e > max_error) max_error = e;
        }
        if (max_error < eps) break;
        for (ptrdiff_t t = 0; t < k; t++) {
            double diff = (-Qp[t] + pQp) / Q[t * k + t];
            prob[t] += diff;
            pQp = (pQp + diff * (diff * Q[t * k + t] + 2 * Qp[t])) / (1 + diff) / (1 + diff);
            for (ptrdiff_t j = 0; j < k; j++) {
                Qp[j] = (Qp[j] + diff * Q[t * k + j]) / (1 + diff);
                prob[j] /= (1 + diff);
            }
        }
    }
}

/* scikit-learn's one-vs-rest scores from the pair values (_ovr_decision_function) */
static inline void fm_svm_ovr(ptrdiff_t k, const double *dec, double *out)
{
    double votes[k > 0 ? k : 1];
    ptrdiff_t p = 0;
    for (ptrdiff_t c = 0; c < k; c++) { votes[c] = 0; out[c] = 0; }
    for (ptrdiff_t i = 0; i < k; i++)
        for (ptrdiff_t j = i + 1; j < k; j++, p++) {
            double conf = -dec[p];
            out[i] -= conf;
            out[j] += conf;
            if (dec[p] < 0) votes[j] += 1; else votes[i] += 1;
        }
    for (ptrdiff_t c = 0; c < k; c++) out[c] = votes[c] + out[c] / (3 * (fabs(out[c]) + 1));
}

static inline ptrdiff_t fm_svm_vote(ptrdiff_t k, const double *dec)
{
    int votes[k > 0 ? k : 1];
    ptrdiff_t p = 0, best = 0;
    for (ptrdiff_t c = 0; c < k; c++) votes[c] = 0;
    for (ptrdiff_t i = 0; i < k; i++)
        for (ptrdiff_t j = i + 1; j < k; j++, p++)
            votes[dec[p] > 0 ? i : j]++;
    for (ptrdiff_t c = 1; c < k; c++)
        if (votes[c] > votes[best]) best = c;
    return best;
}

/* Rows [i0, i1) of X (float32 or float64, unit column stride, row stride rs)
 * into out (kind) or idx (FM_SVM_VOTE / FM_SVM_TIES).  work holds
 * fm_svm_work_size(pl, i1 - i0) doubles.  Returns 1 when X holds NaN or inf
 * (nothing is written then), else 0. */
static int fm_svm_block(const fm_svm_plan *pl, const void *X, int f32, ptrdiff_t rs, ptrdiff_t i0,
                        ptrdiff_t i1, int kind, double *out, ptrdiff_t *idx, double *work)
{
    const ptrdiff_t n = i1 - i0, F = pl->F, M = pl->M, NP = pl->NP;
    double *xb = work, *xx = xb + n * F, *acc = xx + n, *dec = acc + n * M * FM_SVM_LANES;
    double *tile = dec + n * NP, *scratch = tile + 4 * FM_SVM_LANES * FM_SVM_TILE;

    /* rows to float64, their squared norms, and the NaN/inf check */
    double poison = 0.0;
    for (ptrdiff_t r = 0; r < n; r++) {
        double *xr = xb + r * F, s = 0.0;
        if (f32) {
            const float *src = (const float *)X + (i0 + r) * rs;
            for (ptrdiff_t f = 0; f < F; f++) xr[f] = src[f];
        } else {
            memcpy(xr, (const double *)X + (i0 + r) * rs, sizeof(double) * F);
        }
        for (ptrdiff_t f = 0; f < F; f++) {
            s += xr[f] * xr[f];
            poison += xr[f] * 0.0;   /* NaN for NaN or inf */
        }
        xx[r] = s;
    }
    if (poison != 0.0 || poison != poison) return 1;

    memset(acc, 0, sizeof(double) * n * M * FM_SVM_LANES);
    memset(dec, 0, sizeof(double) * n * NP);
    if (pl->lin) /* linear kernel: sum_s coef_s x.s = x . (sum_s coef_s s) */
        for (ptrdiff_t r = 0; r < n; r++)
            for (ptrdiff_t q = 0; q < NP; q++) {
                double s = 0.0;
                for (ptrdiff_t f = 0; f < F; f++) s += xb[r * F + f] * pl->lin[q * F + f];
                dec[r * NP + q] = s;
            }
    const ptrdiff_t full = n / FM_SVM_TILE * FM_SVM_TILE;
    for (ptrdiff_t c = 0; c < pl->K && !pl->lin; c++) {
        const ptrdiff_t p0 = pl->seg[c], p1 = pl->seg[c + 1];
        if (p0 == p1) continue;
        /* whole tiles of 8 rows: panel outer, so a panel is read from L1 for every tile */
        for (ptrdiff_t p = p0; p < p1 && full; p++) {
            const double *pan = pl->sv + p * F * FM_SVM_LANES;
            for (ptrdiff_t r = 0; r < full; r += FM_SVM_TILE) {
                fm_svm_dots8(xb + r * F, F, pan, tile);
                for (ptrdiff_t t = 0; t < FM_SVM_TILE; t++)
                    fm_svm_accumulate(pl, p, xb + (r + t) * F, xx[r + t], tile + t * FM_SVM_LANES,
                                      acc + (r + t) * M * FM_SVM_LANES);
            }
        }
        /* the last n % 8 rows: one row against 4 panels at a time */
        for (ptrdiff_t r = full; r < n; r++) {
            const double *x = xb + r * F;
            double *a = acc + r * M * FM_SVM_LANES;
            ptrdiff_t p = p0;
            for (; p + 4 <= p1; p += 4) {
                fm_svm_dots1x4(x, F, pl->sv + p * F * FM_SVM_LANES, tile);
                for (ptrdiff_t q = 0; q < 4; q++)
                    fm_svm_accumulate(pl, p + q, x, xx[r], tile + q * FM_SVM_LANES, a);
            }
            for (; p < p1; p++) {
                fm_svm_dots1(x, F, pl->sv + p * F * FM_SVM_LANES, tile);
                fm_svm_accumulate(pl, p, x, xx[r], tile, a);
            }
        }
        fm_svm_flush(pl, c, n, acc, dec);
    }

    for (ptrdiff_t r = 0; r < n; r++) {
        double *d = dec + r * NP;
        for (ptrdiff_t q = 0; q < NP; q++) d[q] += pl->b[q];
        const ptrdiff_t i = i0 + r;
        switch (kind) {
        case FM_SVM_RAW: memcpy(out + i * NP, d, sizeof(double) * NP); break;
        case FM_SVM_NEG: for (ptrdiff_t q = 0; q < NP; q++) out[i * NP + q] = -d[q]; break;
        case FM_SVM_OVR: fm_svm_ovr(pl->K, d, out + i * pl->K); break;
        case FM_SVM_VOTE: idx[i] = fm_svm_vote(pl->K, d); break;
        case FM_SVM_TIES: {
            double *o = scratch;
            ptrdiff_t best = 0;
            fm_svm_ovr(pl->K, d, o);
            for (ptrdiff_t c = 1; c < pl->K; c++)
                if (o[c] > o[best]) best = c;
            idx[i] = best;
            break;
        }
        default: fm_svm_proba(pl, d, out + i * pl->K, scratch); break;
        }
    }
    return 0;
}

#endif
