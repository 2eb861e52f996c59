/* Dense-layer kernels: multi-layer perceptrons and nearest-centroid search.
 *
 * Both are "X @ W + b, then something per row": an MLP layer applies an
 * activation and feeds the next layer; k-means takes the argmin of
 * ||c||^2 - 2 x.c (W = -2 C^T, b = ||c||^2) or turns the same products into
 * distances.  One register-blocked GEMM micro-kernel serves both.
 *
 * Layout
 * ------
 * Weights are packed once into column panels of NR = 2 vectors (32 floats or
 * 16 doubles): panel p holds W[0:F, p*NR : p*NR + NR] as F contiguous rows of
 * NR values, zero-padded past the last column; biases are zero-padded to the
 * same width.  Activations between layers live in per-thread scratch rows of
 * that padded width, so every store is a full vector.
 *
 * Loop order (batches)
 * --------------------
 * Rows run in blocks of FM_BLOCK_F (float) / FM_BLOCK_D (double) rows, one
 * block per OpenMP task (fm_dense_rows); a call with fewer multiply-adds than
 * the caller's threshold runs inline, and a batch too small to give every
 * thread a full block is split evenly across the threads.  Inside a
 * block, for each layer: for each panel, for each group of FM_MR = 8 rows,
 * the micro-kernel keeps 8 x 2 vector accumulators in registers and, per
 * input feature, loads two weight vectors (the panel row, L1-resident while
 * the block's rows sweep past it) and broadcasts one input value per row into
 * 16 FMAs.  Then the activation runs over the block's rows of the layer (in
 * L1/L2), then the next layer reads them.  The output layer's epilogue
 * (softmax, [1 - p, p], argmax, argmin, distances) runs per row; the k-means
 * argmin is vectorised (per-lane minima and first chunk, see FM_ARGMIN), and
 * padded centers carry ||c||^2 = +inf so they never win.
 *
 * Single rows (and the tail rows of a block) use a GEMV: four panels at once,
 * eight independent accumulators, no thread start-up.  Every output value is
 * one accumulator summed in feature order, in the GEMV as in the micro-kernel,
 * so a row's result does not depend on the batch it came in.
 *
 * Precision: the compute type T is float or double (the caller picks it as
 * scikit-learn does: float for float32 X with float32 weights, else double;
 * k-means distances always double); the first layer may read
 * float input into double arithmetic (scikit-learn's float32 X times float64
 * coefs_).  Products accumulate in T with FMA, in feature order.  The bias is
 * added after the sum, as scikit-learn adds intercepts_ after the product.
 *
 * The input is scanned for NaN/inf per block (rows are in cache then), and
 * the kernels report it: scikit-learn refuses such input, and ReLU or tanh
 * could otherwise hide a NaN.
 */
#ifndef FM_DENSE_H
#define FM_DENSE_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fm_activations.h"

typedef float fm_dvf __attribute__((vector_size(64)));
typedef double fm_dvd __attribute__((vector_size(64)));

#define FM_MR 8
#define FM_VLF 16
#define FM_VLD 8

enum { FM_ACT_IDENTITY = 0, FM_ACT_LOGISTIC = 1, FM_ACT_TANH = 2, FM_ACT_RELU = 3,
       FM_ACT_SOFTMAX = 4, FM_ACT_EXP = 5 };
/* what the MLP writes: values (n x K, float64), [1 - p, p] (n x 2), label index (intp) */
enum { FM_OUT_VALUES = 0, FM_OUT_BINARY = 1, FM_OUT_ARGMAX = 2 };
/* what k-means writes: labels (int32) or distances (n x K, float64) */
enum { FM_KM_LABELS = 0, FM_KM_DISTANCES = 1 };

static inline fm_dvf fm_ldvf(const float *p) { fm_dvf v; memcpy(&v, p, sizeof v); return v; }
static inline fm_dvd fm_ldvd(const double *p) { fm_dvd v; memcpy(&v, p, sizeof v); return v; }
static inline void fm_stvf(float *p, fm_dvf v) { memcpy(p, &v, sizeof v); }
static inline void fm_stvd(double *p, fm_dvd v) { memcpy(p, &v, sizeof v); }

/* ------------------------------------------------------------------------ */
/* Micro-kernel and GEMV, per (compute type, input type).                    */
/* ------------------------------------------------------------------------ */

/* o[r][0:NR] = sum_f x[r][f] * wp[f][0:NR] + bias[0:NR] for r < 8 */
#define FM_MICRO(NAME, T, V, VL, TX, LD, ST)                                                  \
static inline void NAME(const TX *const *x, ptrdiff_t F, const T *wp, const T *bias,        \
                        T *const *o)                                                         \
{                                                                                             \
    V a00 = {0}, a01 = {0}, a10 = {0}, a11 = {0}, a20 = {0}, a21 = {0}, a30 = {0}, a31 = {0}; \
    V a40 = {0}, a41 = {0}, a50 = {0}, a51 = {0}, a60 = {0}, a61 = {0}, a70 = {0}, a71 = {0}; \
    const TX *x0 = x[0], *x1 = x[1], *x2 = x[2], *x3 = x[3];                                 \
    const TX *x4 = x[4], *x5 = x[5], *x6 = x[6], *x7 = x[7];                                 \
    for (ptrdiff_t f = 0; f < F; f++) {                                                       \
        V w0 = LD(wp + f * 2 * VL), w1 = LD(wp + f * 2 * VL + VL);                          \
        T y;                                                                                  \
        y = (T)x0[f]; a00 += y * w0; a01 += y * w1;                                           \
        y = (T)x1[f]; a10 += y * w0; a11 += y * w1;                                           \
        y = (T)x2[f]; a20 += y * w0; a21 += y * w1;                                           \
        y = (T)x3[f]; a30 += y * w0; a31 += y * w1;                                           \
        y = (T)x4[f]; a40 += y * w0; a41 += y * w1;                                           \
        y = (T)x5[f]; a50 += y * w0; a51 += y * w1;                                           \
        y = (T)x6[f]; a60 += y * w0; a61 += y * w1;                                           \
        y = (T)x7[f]; a70 += y * w0; a71 += y * w1;                                           \
    }                                                                                         \
    V b0 = LD(bias), b1 = LD(bias + VL);                                                      \
    ST(o[0], a00 + b0); ST(o[0] + VL, a01 + b1);                                              \
    ST(o[1], a10 + b0); ST(o[1] + VL, a11 + b1);                                              \
    ST(o[2], a20 + b0); ST(o[2] + VL, a21 + b1);                                              \
    ST(o[3], a30 + b0); ST(o[3] + VL, a31 + b1);                                              \
    ST(o[4], a40 + b0); ST(o[4] + VL, a41 + b1);                                              \
    ST(o[5], a50 + b0); ST(o[5] + VL, a51 + b1);                                              \
    ST(o[6], a60 + b0); ST(o[6] + VL, a61 + b1);                                              \
    ST(o[7], a70 + b0); ST(o[7] + VL, a71 + b1);                                              \
}

/* one row: o[0 : np*NR] = x @ W + bias, four panels (8 accumulators) at a time */
#define FM_GEMV(NAME, T, V, VL, TX, LD, ST)                                                   \
static inline void NAME(const TX *x, ptrdiff_t F, const T *Wp, ptrdiff_t np, const T *bias,  \
                        T *o)                                                                 \
{                                                                                             \
    const ptrdiff_t NR = 2 * VL, P = F * NR;                                                  \
    ptrdiff_t p = 0;                                                                          \
    for (; p + 4 <= np; p += 4) {                                                             \
        const T *w = Wp + p * P;                                                              \
        V a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, a4 = {0}, a5 = {0}, a6 = {0}, a7 = {0};     \
        for (ptrdiff_t f = 0; f < F; f++) {                                                   \
            T y = (T)x[f];                                                                    \
            const T *q = w + f * NR;                                                          \
            a0 += y * LD(q);         a1 += y * LD(q + VL);                                    \
            a2 += y * LD(q + P);     a3 += y * LD(q + P + VL);                                \
            a4 += y * LD(q + 2 * P); a5 += y * LD(q + 2 * P + VL);                            \
            a6 += y * LD(q + 3 * P); a7 += y * LD(q + 3 * P + VL);                            \
        }                                                                                     \
        const T *b = bias + p * NR;                                                           \
        T *r = o + p * NR;                                                                    \
        ST(r, a0 + LD(b));                   ST(r + VL, a1 + LD(b + VL));                     \
        ST(r + NR, a2 + LD(b + NR));         ST(r + NR + VL, a3 + LD(b + NR + VL));           \
        ST(r + 2 * NR, a4 + LD(b + 2 * NR)); ST(r + 2 * NR + VL, a5 + LD(b + 2 * NR + VL));   \
        ST(r + 3 * NR, a6 + LD(b + 3 * NR)); ST(r + 3 * NR + VL, a7 + LD(b + 3 * NR + VL));   \
    }                                                                                         \
    for (; p < np; p++) {                                                                     \
        const T *w = Wp + p * P;                                                              \
        /* one accumulator per column, features in order: the micro-kernel's rounding */     \
        V a0 = {0}, a1 = {0};                                                                 \
        for (ptrdiff_t f = 0; f < F; f++) {                                                   \
            T y = (T)x[f];                                                                    \
            a0 += y * LD(w + f * NR); a1 += y * LD(w + f * NR + VL);                          \
        }                                                                                     \
        const T *b = bias + p * NR;                                                           \
        ST(o + p * NR, a0 + LD(b)); ST(o + p * NR + VL, a1 + LD(b + VL));                     \
    }                                                                                         \
}

/* rows [0, n) of X (row stride rs) through one layer into out (row stride np*NR) */
#define FM_LAYER(NAME, MICRO, GEMV, T, VL, TX)                                                \
static inline void NAME(const TX *X, ptrdiff_t rs, ptrdiff_t n, ptrdiff_t F, const T *Wp,   \
                        ptrdiff_t np, const T *bias, T *out)                                  \
{                                                                                             \
    const ptrdiff_t NR = 2 * VL, ldo = np * NR;                                               \
    ptrdiff_t n8 = n - n % FM_MR;                                                             \
    for (ptrdiff_t p = 0; p < np; p++) {                                                      \
        const T *w = Wp + p * F * NR;                                                         \
        for (ptrdiff_t i = 0; i < n8; i += FM_MR) {                                           \
            const TX *xr[FM_MR];                                                              \
            T *orow[FM_MR];                                                                   \
            for (int r = 0; r < FM_MR; r++) {                                                 \
                xr[r] = X + (i + r) * rs;                                                     \
                orow[r] = out + (i + r) * ldo + p * NR;                                       \
            }                                                                                 \
            MICRO(xr, F, w, bias + p * NR, orow);                                             \
        }                                                                                     \
    }                                                                                         \
    for (ptrdiff_t i = n8; i < n; i++) GEMV(X + i * rs, F, Wp, np, bias, out + i * ldo);      \
}

FM_MICRO(fm_micro_ff, float, fm_dvf, FM_VLF, float, fm_ldvf, fm_stvf)
FM_MICRO(fm_micro_dd, double, fm_dvd, FM_VLD, double, fm_ldvd, fm_stvd)
FM_MICRO(fm_micro_df, double, fm_dvd, FM_VLD, float, fm_ldvd, fm_stvd)
FM_GEMV(fm_gemv_ff, float, fm_dvf, FM_VLF, float, fm_ldvf, fm_stvf)
FM_GEMV(fm_gemv_dd, double, fm_dvd, FM_VLD, double, fm_ldvd, fm_stvd)
FM_GEMV(fm_gemv_df, double, fm_dvd, FM_VLD, float, fm_ldvd, fm_stvd)
FM_LAYER(fm_layer_ff, fm_micro_ff, fm_gemv_ff, float, FM_VLF, float)
FM_LAYER(fm_layer_dd, fm_micro_dd, fm_gemv_dd, double, FM_VLD, double)
FM_LAYER(fm_layer_df, fm_micro_df, fm_gemv_df, double, FM_VLD, float)

/* 1 if rows [0, n) x [0, F) of X hold NaN or +-inf (x * 0 is NaN exactly then) */
#define FM_NONFINITE(NAME, TX)                                                                \
static inline int NAME(const TX *X, ptrdiff_t rs, ptrdiff_t n, ptrdiff_t F)                  \
{                                                                                             \
    TX s = 0;                                                                                 \
    for (ptrdiff_t i = 0; i < n; i++) {                                                       \
        const TX *x = X + i * rs;                                                             \
        _Pragma("omp simd reduction(+:s)")                                                    \
        for (ptrdiff_t f = 0; f < F; f++) s += x[f] * (TX)0;                                  \
    }                                                                                         \
    return s != s;                                                                            \
}
FM_NONFINITE(fm_nonfinite_f, float)
FM_NONFINITE(fm_nonfinite_d, double)

/* ------------------------------------------------------------------------ */
/* Per compute type: activations, epilogues, the MLP and k-means drivers.    */
/* ------------------------------------------------------------------------ */

typedef struct {
    int n_layers;
    const ptrdiff_t *dims;      /* n_layers + 1: F, H1, ..., K */
    const ptrdiff_t *panels;    /* n_layers: panels per layer */
    const void *const *w;       /* n_layers packed weight panels (compute type) */
    const void *const *b;       /* n_layers padded biases (compute type) */
    int hidden, outact;
    ptrdiff_t width;            /* widest padded layer (scratch row length) */
} fm_mlp;

#define FM_BLOCK_F 128
#define FM_BLOCK_D 64
#define FM_SCRATCH_STACK 16384  /* bytes: small calls use the stack, not malloc */

/* Runs fn over every row of a call, in blocks.  Few rows (or one thread): inline on the
 * calling thread, scratch on the stack when it fits.  Otherwise blocks of at most `block`
 * rows (fewer when that would leave a thread idle) are OpenMP tasks, each thread with its
 * own scratch.  Returns 0, 1 (a block saw NaN/inf) or -1 (out of memory). */
typedef int (*fm_rows_fn)(const void *ctx, ptrdiff_t i0, ptrdiff_t n, void *scratch);

static int fm_dense_rows(fm_rows_fn fn, const void *ctx, ptrdiff_t n, ptrdiff_t block,
                         size_t row_bytes, int n_threads, ptrdiff_t min_parallel)
{
    ptrdiff_t blk = block;
    int par = n_threads > 1 && n >= min_parallel;
    if (par) {
        ptrdiff_t per = (n + n_threads - 1) / n_threads;
        per = (per + FM_MR - 1) / FM_MR * FM_MR;
        blk = per < blk ? per : blk;
    }
    ptrdiff_t nb = (n + blk - 1) / blk;
    size_t need = ((size_t)(n < blk ? n : blk) * row_bytes + 63) & ~(size_t)63;
    if (!par || nb < 2) {
        _Alignas(64) char stack[FM_SCRATCH_STACK];
        void *buf = need <= sizeof stack ? (void *)stack : aligned_alloc(64, need);
        if (buf == NULL) return -1;
        int bad = 0;
        for (ptrdiff_t b = 0; b < nb && !bad; b++) {
            ptrdiff_t i0 = b * blk;
            bad = fn(ctx, i0, (i0 + blk < n ? i0 + blk : n) - i0, buf);
        }
        if (buf != (void *)stack) free(buf);
        return bad;
    }
    int bad = 0, oom = 0;
    #pragma omp parallel num_threads(n_threads) reduction(|:bad) reduction(|:oom)
    {
        void *buf = aligned_alloc(64, need);
        oom |= buf == NULL;
        #pragma omp for schedule(dynamic)
        for (ptrdiff_t b = 0; b < nb; b++) {
            if (buf == NULL || bad) continue;
            ptrdiff_t i0 = b * blk;
            bad |= fn(ctx, i0, (i0 + blk < n ? i0 + blk : n) - i0, buf);
        }
        free(buf);
    }
    return oom ? -1 : bad;
}

typedef struct {
    const void *m;
    const void *X;
    int x32;
    ptrdiff_t rs;
    int kind;
    double *out;      /* MLP values / k-means distances */
    ptrdiff_t *idx;   /* MLP labels */
    int32_t *lab;     /* k-means labels */
} fm_call;

#define FM_XROW(c, i0) ((const char *)(c)->X + (i0) * (c)->rs * ((c)->x32 ? sizeof(float) : sizeof(double)))

#define FM_DENSE_TYPE(SFX, T, VL, EXP, BLOCK)                                                 \
static inline void fm_activate_##SFX(T *a, ptrdiff_t n, int act)                             \
{                                                                                             \
    switch (act) {                                                                            \
    case FM_ACT_LOGISTIC: fm_sigmoid_##SFX(a, a, n); break;                                   \
    case FM_ACT_TANH: fm_tanh_##SFX(a, a, n); break;                                          \
    case FM_ACT_RELU: fm_relu_##SFX(a, a, n); break;                                          \
    case FM_ACT_EXP:                                                                          \
        _Pragma("omp simd")                                                                   \
        for (ptrdiff_t i = 0; i < n; i++) a[i] = EXP(a[i]);                                   \
        break;                                                                                \
    default: break;                                                                           \
    }                                                                                         \
}                                                                                             \
                                                                                              \
/* scikit-learn's inplace_softmax on one row: x - max, exp, divide by the sum */             \
static inline void fm_softmax_row_##SFX(T *r, ptrdiff_t K)                                    \
{                                                                                             \
    T m = r[0];                                                                               \
    for (ptrdiff_t k = 1; k < K; k++) m = r[k] > m ? r[k] : m;                                \
    T s = 0;                                                                                  \
    for (ptrdiff_t k = 0; k < K; k++) { r[k] = EXP(r[k] - m); s += r[k]; }                   \
    for (ptrdiff_t k = 0; k < K; k++) r[k] /= s;                                              \
}                                                                                             \
                                                                                              \
/* the output layer's values of n rows (row stride ld) into what the caller asked for */      \
static inline void fm_mlp_emit_##SFX(T *a, ptrdiff_t ld, ptrdiff_t n, ptrdiff_t K, int outact,\
                                     int kind, double *out, ptrdiff_t *idx)                   \
{                                                                                             \
    if (outact == FM_ACT_SOFTMAX)                                                             \
        for (ptrdiff_t i = 0; i < n; i++) fm_softmax_row_##SFX(a + i * ld, K);               \
    else if (outact != FM_ACT_IDENTITY)                                                       \
        fm_activate_##SFX(a, n * ld, outact);                                                 \
    for (ptrdiff_t i = 0; i < n; i++) {                                                       \
        const T *r = a + i * ld;                                                              \
        if (kind == FM_OUT_VALUES) {                                                          \
            for (ptrdiff_t k = 0; k < K; k++) out[i * K + k] = (double)r[k];                  \
        } else if (kind == FM_OUT_BINARY) {                                                   \
            out[2 * i] = (double)((T)1 - r[0]);                                               \
            out[2 * i + 1] = (double)r[0];                                                    \
        } else if (K == 1) {                                                                  \
            idx[i] = r[0] > (T)0.5;                                                           \
        } else {                                                                              \
            ptrdiff_t best = 0;                                                               \
            T m = r[0];                                                                       \
            for (ptrdiff_t k = 1; k < K; k++) if (r[k] > m) { m = r[k]; best = k; }           \
            idx[i] = best;                                                                    \
        }                                                                                     \
    }                                                                                         \
}                                                                                             \
                                                                                              \
/* rows [0, n) (n <= BLOCK) of X through every layer; buf holds 2 * n * width values */        \
static inline int fm_mlp_block_##SFX(const fm_mlp *m, const void *X, int x32, ptrdiff_t rs,   \
                                     ptrdiff_t n, T *buf, int kind, double *out, ptrdiff_t *idx) \
{                                                                                             \
    T *cur = buf, *nxt = buf + n * m->width;                                                  \
    const ptrdiff_t NR = 2 * VL;                                                              \
    int bad;                                                                                  \
    ptrdiff_t F = m->dims[0];                                                                 \
    const T *W0 = (const T *)m->w[0], *B0 = (const T *)m->b[0];                               \
    if (x32) {                                                                                \
        bad = fm_nonfinite_f((const float *)X, rs, n, F);                                     \
        FM_LAYER0_##SFX((const float *)X, rs, n, F, W0, m->panels[0], B0, cur);               \
    } else {                                                                                  \
        bad = fm_nonfinite_d((const double *)X, rs, n, F);                                    \
        FM_LAYER0D_##SFX((const double *)X, rs, n, F, W0, m->panels[0], B0, cur);             \
    }                                                                                         \
    if (bad) return 1;                                                                        \
    for (int l = 1; l < m->n_layers; l++) {                                                   \
        ptrdiff_t ld = m->panels[l - 1] * NR;                                                 \
        fm_activate_##SFX(cur, n * ld, m->hidden);                                            \
        fm_layer_##SFX##SFX(cur, ld, n, m->dims[l], (const T *)m->w[l], m->panels[l],         \
                            (const T *)m->b[l], nxt);                                         \
        T *t = cur; cur = nxt; nxt = t;                                                       \
    }                                                                                         \
    fm_mlp_emit_##SFX(cur, m->panels[m->n_layers - 1] * NR, n, m->dims[m->n_layers],          \
                      m->outact, kind, out, idx);                                             \
    return 0;                                                                                 \
}                                                                                             \
                                                                                              \
static int fm_mlp_rows_##SFX(const void *ctx, ptrdiff_t i0, ptrdiff_t n, void *buf)          \
{                                                                                             \
    const fm_call *c = (const fm_call *)ctx;                                                  \
    const fm_mlp *m = (const fm_mlp *)c->m;                                                   \
    ptrdiff_t oc = c->kind == FM_OUT_BINARY ? 2 : m->dims[m->n_layers];                       \
    return fm_mlp_block_##SFX(m, FM_XROW(c, i0), c->x32, c->rs, n, (T *)buf, c->kind,         \
                              c->out ? c->out + i0 * oc : NULL, c->idx ? c->idx + i0 : NULL); \
}                                                                                             \
                                                                                              \
/* every row of X: 0, 1 (NaN/inf in X) or -1 (out of memory) */                              \
static int fm_mlp_run_##SFX(const fm_mlp *m, const void *X, int x32, ptrdiff_t rs, ptrdiff_t n, \
                            int kind, double *out, ptrdiff_t *idx, int n_threads,             \
                            ptrdiff_t min_parallel)                                           \
{                                                                                             \
    fm_call c = {m, X, x32, rs, kind, out, idx, NULL};                                        \
    return fm_dense_rows(fm_mlp_rows_##SFX, &c, n, BLOCK, 2 * (size_t)m->width * sizeof(T),  \
                         n_threads, min_parallel);                                            \
}

#define FM_LAYER0_f fm_layer_ff
#define FM_LAYER0D_f(...) ((void)0)   /* float compute never reads double input */
#define FM_LAYER0_d fm_layer_df
#define FM_LAYER0D_d fm_layer_dd

#define fm_sigmoid_f fm_sigmoid_f32
#define fm_tanh_f fm_tanh_f32
#define fm_relu_f fm_relu_f32
#define fm_sigmoid_d fm_sigmoid_f64
#define fm_tanh_d fm_tanh_f64
#define fm_relu_d fm_relu_f64

FM_DENSE_TYPE(f, float, FM_VLF, fm_exp_f32, FM_BLOCK_F)
FM_DENSE_TYPE(d, double, FM_VLD, fm_exp_f64, FM_BLOCK_D)

/* ------------------------------------------------------------------------ */
/* k-means: labels = first argmin of ||c||^2 - 2 x.c; distances in double.   */
/* ------------------------------------------------------------------------ */

typedef int32_t fm_dvi32 __attribute__((vector_size(64)));
typedef int64_t fm_dvi64 __attribute__((vector_size(64)));

/* First index of the minimum of r[0 : ld) (ld a multiple of VL; padding holds +inf).
 * Each lane keeps its smallest value and the first chunk holding it (strict <); the
 * winner is the smallest index among the lanes that hold the overall minimum: exactly
 * the first minimum a scalar scan finds (scikit-learn's rule), in ld / VL vector steps. */
#define FM_ARGMIN(NAME, T, V, VI, VL, LD)                                                    \
static inline int32_t NAME(const T *r, ptrdiff_t ld)                                        \
{                                                                                            \
    V bv = LD(r);                                                                            \
    VI bi = {0}, ci = {0};                                                                   \
    for (ptrdiff_t j = VL; j < ld; j += VL) {                                                \
        V v = LD(r + j);                                                                     \
        ci += 1;                                                                             \
        VI m = (VI)(v < bv);                                                                 \
        bv = (V)(((VI)v & m) | ((VI)bv & ~m));                                               \
        bi = (ci & m) | (bi & ~m);                                                           \
    }                                                                                        \
    T best = bv[0];                                                                          \
    int64_t idx = (int64_t)bi[0] * VL;                                                       \
    for (int l = 1; l < VL; l++) {                                                           \
        int64_t k = (int64_t)bi[l] * VL + l;                                                 \
        if (bv[l] < best || (bv[l] == best && k < idx)) { best = bv[l]; idx = k; }           \
    }                                                                                        \
    return (int32_t)idx;                                                                     \
}
FM_ARGMIN(fm_argmin_f, float, fm_dvf, fm_dvi32, FM_VLF, fm_ldvf)
FM_ARGMIN(fm_argmin_d, double, fm_dvd, fm_dvi64, FM_VLD, fm_ldvd)

typedef struct {
    ptrdiff_t F, K, panels;
    const void *w;      /* packed -2 C^T in the compute type */
    const void *cn;     /* ||c||^2, padded with +inf (labels: padding never wins) */
    const double *zero; /* zeros, padded (distances add ||c||^2 last, like scikit-learn) */
    const double *cn64; /* ||c||^2 in double */
} fm_kmeans;

#define FM_KMEANS_TYPE(SFX, T, VL, BLOCK)                                                     \
static inline int fm_kmeans_block_##SFX(const fm_kmeans *m, const void *X, int x32, ptrdiff_t rs, \
                                        ptrdiff_t n, T *buf, int kind, int32_t *lab, double *dist) \
{                                                                                             \
    const ptrdiff_t ld = m->panels * 2 * VL, K = m->K, F = m->F;                              \
    const T *bias = kind == FM_KM_LABELS ? (const T *)m->cn : (const T *)m->zero;             \
    int bad;                                                                                  \
    if (x32) {                                                                                \
        bad = fm_nonfinite_f((const float *)X, rs, n, F);                                     \
        FM_LAYER0_##SFX((const float *)X, rs, n, F, (const T *)m->w, m->panels, bias, buf);   \
    } else {                                                                                  \
        bad = fm_nonfinite_d((const double *)X, rs, n, F);                                    \
        FM_LAYER0D_##SFX((const double *)X, rs, n, F, (const T *)m->w, m->panels, bias, buf); \
    }                                                                                         \
    if (bad) return 1;                                                                        \
    for (ptrdiff_t i = 0; i < n; i++) {                                                       \
        const T *r = buf + i * ld;                                                            \
        if (kind == FM_KM_LABELS) {                                                           \
            lab[i] = fm_argmin_##SFX(r, ld);                                                  \
        } else {                                                                              \
            double xx = 0;                                                                    \
            if (x32) {                                                                        \
                const float *x = (const float *)X + i * rs;                                   \
                for (ptrdiff_t f = 0; f < F; f++) xx += (double)x[f] * (double)x[f];          \
            } else {                                                                          \
                const double *x = (const double *)X + i * rs;                                 \
                for (ptrdiff_t f = 0; f < F; f++) xx += x[f] * x[f];                          \
            }                                                                                 \
            double *o = dist + i * K;                                                         \
            for (ptrdiff_t k = 0; k < K; k++) {                                               \
                double d = ((double)r[k] + xx) + m->cn64[k];                                  \
                o[k] = sqrt(d > 0.0 ? d : 0.0);                                               \
            }                                                                                 \
        }                                                                                     \
    }                                                                                         \
    return 0;                                                                                 \
}                                                                                             \
                                                                                              \
static int fm_kmeans_rows_##SFX(const void *ctx, ptrdiff_t i0, ptrdiff_t n, void *buf)       \
{                                                                                             \
    const fm_call *c = (const fm_call *)ctx;                                                  \
    const fm_kmeans *m = (const fm_kmeans *)c->m;                                             \
    return fm_kmeans_block_##SFX(m, FM_XROW(c, i0), c->x32, c->rs, n, (T *)buf, c->kind,      \
                                 c->lab ? c->lab + i0 : NULL, c->out ? c->out + i0 * m->K : NULL); \
}                                                                                             \
                                                                                              \
static int fm_kmeans_run_##SFX(const fm_kmeans *m, const void *X, int x32, ptrdiff_t rs,     \
                               ptrdiff_t n, int kind, int32_t *lab, double *dist, int n_threads, \
                               ptrdiff_t min_parallel)                                        \
{                                                                                             \
    fm_call c = {m, X, x32, rs, kind, dist, NULL, lab};                                       \
    return fm_dense_rows(fm_kmeans_rows_##SFX, &c, n, BLOCK, (size_t)m->panels * 2 * VL * sizeof(T), \
                         n_threads, min_parallel);                                            \
}

FM_KMEANS_TYPE(f, float, FM_VLF, FM_BLOCK_F)
FM_KMEANS_TYPE(d, double, FM_VLD, FM_BLOCK_D)

#endif
