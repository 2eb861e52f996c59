/* int8 kernel SVMs: libsvm's one-vs-one sums over int8 support vectors.
 *
 * Scheme
 * ------
 * Support vector j is int8 with one symmetric scale: s_j ~ ss[j] * q_j,
 * q_j in [-127, 127].  A row x is uint8 with a scale and a zero point chosen
 * from the row's own range (fm_int8.h's dynamic quantization, reused:
 * x ~ sx * (u - z)).  Only the cross term is quantized:
 *
 *     x.s_j ~ t_j = (float)(sum_k u_k q_jk - z * cs[j]) * (sx * ss[j])     (cs[j] = sum_k q_jk)
 *
 * with the integer sum exact in int32 (vpdpbusd: u8 x s8, four features per
 * step).  |x|^2 (from the float row, float64 sum) and |s_j|^2 (from the float
 * support vectors, stored by the IR) are not quantized.  Then, in float32,
 *
 *     rbf: exp(-gamma max(|x|^2 + |s_j|^2 - 2 t_j, 0)),  poly: (gamma t_j + coef0)^degree,
 *     sigmoid: tanh(gamma t_j + coef0),
 *
 * multiplied into float32 per-class accumulators; each class's sums are added
 * into float64 pair values.  Why uint8 rows with a zero point rather than int8
 * symmetric rows: vpdpbusd multiplies u8 by s8, the zero point costs nothing
 * in the inner loop (cs is per vector), and a non-negative row (pixels,
 * counts) gets all 256 levels instead of 128.
 *
 * Rotation (optional, chosen by fastml/ir_qsvm.py's quantize_svm): the vectors
 * are stored as R s for an orthogonal R (x.s = Rx.Rs, |x| = |Rx|), and each row
 * is rotated in float64 (F^2 multiply-adds) before it is quantized.  It spreads
 * features of unequal range over all coordinates, so one max/127 scale per
 * vector fits every coordinate; measured: the support-vector rounding error,
 * not the row's, dominates the pair values' error (ir_qsvm.py's docstring).
 *
 * Residual row pass (optional, per model: fm_qsvm.resid, chosen by quantize_svm when the
 * one-pass error on its proxy rows exceeds the tolerance budget): the row's rounding residual
 * gets its own uint8 codes (fm_int8.h's "Residual pass": step sx / 256, zero point 128),
 *
 *     x ~ sx ((u - z) + (v - 128) / 256),
 *     t_j = ((float)(sum_k u_k q_jk - z cs[j]) + (float)(sum_k v_k q_jk - 128 cs[j]) / 256) (sx ss[j])
 *
 * a second int32 dot product against the same int8 vectors (the two code rows of a row sit
 * next to each other in the scratch and go through the same tile, so each vector load serves
 * both).  The row's error drops ~256x; the vectors' own rounding is untouched.  Twice the
 * integer work per row: the RBF models measured keep one pass (their |x|^2 + |s|^2 terms are
 * exact, so the cross term's error is damped), polynomial and sigmoid models, which take x.s
 * alone, are the ones that need it.
 *
 * Residual vector panel (optional, per model: fm_qsvm.w2, chosen by quantize_svm when a
 * value on its proxy rows is outside the tolerance and the panel cuts the proxy error): each
 * vector's own rounding residual kept as a second int8 vector with its own scale (max |e| / 127,
 * at most ss / 254), s ~ ss q + sl q', stored in the same panel layout, so
 *
 *     t_j = (one- or two-pass t_j above) + (float)(sum_k u_k q'_jk - z cl[j]) (sx sl[j])
 *
 * (cl = sum_k q'_jk): one more int32 dot product, of the row's first codes against the panel, in
 * the same tile loop right after the main tile (x_hi.s_hi, x_lo.s_hi, x_hi.s_lo; x_lo.s_lo is
 * left out: measured at most 0.009 on the pair values of the demo datasets, all within tolerance
 * without it).  The vectors' error drops ~250x; the RBF benchmark keeps one level.
 *
 * Why float32 after the dot products is enough: the RBF distance cancels
 * (|x|^2 + |s|^2 and 2 x.s can both be much larger than the distance), but
 * exp(-gamma d) needs d to an absolute error of about 1/gamma * tolerance,
 * not a relative one.  The int8 cross term carries an absolute error of about
 * |x|_inf |s|_inf sqrt(F) / 400 already; float32 rounding of the three terms
 * adds about 6e-8 (|x|^2 + |s|^2), three orders of magnitude less.
 *
 * Layout (built by kernels/_qsvm.pyx)
 * -----------------------------------
 * fm_int8.h's panel layout with the support vectors as the "columns":
 * panels of FM_Q8_NR = 32 vectors, one class per panel (each class padded
 * with zero vectors of coefficient 0); features zero-padded to kpad, a
 * multiple of 4; panel p holds for each group g of four features 32 x 4 bytes.
 * Per vector (panel-major, 32 per panel): ss (scale), cs (sum of q),
 * sn (|s|^2, float32), coef[(p * M + m) * 32 + l].  The integer tiles are
 * fm_int8.h's (VNNI or portable C: the same integers).
 *
 * Loop order
 * ----------
 * Rows run in blocks of FM_QSVM_BLOCK (one OpenMP task each; small calls run
 * inline).  A block's rows are quantized once; then class, panel, 8-code-row tile
 * (8 code rows x 32 vectors of int32 sums; a row is one code row, two with the
 * residual pass), epilogue into the rows' accumulators acc[row][m][32]; once per
 * class they are summed into the pair values.  Fewer than 8 code rows: row, then
 * four panels (eight vectors) per tile, or two panels for both code rows of a
 * residual row.  Integer sums do not depend on the order and the epilogue is one
 * function for every path, so a row's result depends neither on its batch nor on
 * the threads.  Then
 * fm_svm.h's post-processing (raw, one-vs-rest, vote, probabilities).
 * The linear kernel is folded (sum_s coef_s s, computed once in float64 from
 * the dequantized vectors) and runs on fm_svm.h's float64 path.
 */
#ifndef FM_QSVM_H
#define FM_QSVM_H

#include "fm_int8.h"
#include "fm_svm.h"

#define FM_QSVM_BLOCK 64

typedef struct {
    fm_svm_plan fp;              /* F, M, K, NP, kernel, degree, gamma, coef0, b, pa, pb, seg, pair, lin */
    ptrdiff_t kpad, P;           /* padded features, panels of 32 */
    const int8_t *w;             /* packed panels */
    const float *ss, *sn, *coef;
    const int32_t *cs;
    const double *rot;           /* R^T, (F, F) row-major, of the rows' orthogonal rotation R, or NULL */
    int portable;                /* 1: the portable C codes and tiles even where VNNI is compiled in */
    int resid;                   /* 1: rows in two uint8 passes (codes + residual codes) */
    const int8_t *w2;            /* the vectors' residual panels (same layout as w), or NULL */
    const float *sl;             /* their scales (per vector, panel-major like ss) */
    const int32_t *cs2;          /* their sums of codes */
} fm_qsvm;

/* kernel values of one row against 16 vectors (vector v of a panel) from their int32 sums a1
 * (codes) and a2 (residual codes, or NULL), multiplied into the row's accumulators a[m * 32 + l] */
static inline void fm_qsvm_epilogue(const fm_qsvm *m, ptrdiff_t p, int half, const int32_t *a1,
                                    const int32_t *a2, const int32_t *b1, float xs, int32_t z, float xx,
                                    float *restrict a)
{
    const ptrdiff_t o = p * FM_Q8_NR + half * 16, M = m->fp.M;
    const int32_t *restrict cs = m->cs + o;
    const float *restrict ss = m->ss + o;
    const float g = (float)m->fp.gamma, c0 = (float)m->fp.coef0;
    float t[16], k[16];
    /* the cross term t[l]: one pass, or (a2 - 128 cs) / 256 added (exact in float32, so a
     * fused add rounds the same); RBF evaluates it inline (one loop, as fast as before) */
#define FM_QSVM_T1(l) ((float)(a1[l] - z * cs[l]) * (xs * ss[l]))
#define FM_QSVM_T2(l) (((float)(a1[l] - z * cs[l]) + (float)(a2[l] - 128 * cs[l]) * (1.0f / 256.0f)) * (xs * ss[l]))
#define FM_QSVM_RBF(T)                                                                      \
    _Pragma("omp simd")                                                                     \
    for (int l = 0; l < 16; l++) {                                                          \
        float d = xx + sn[l] - 2.0f * T(l);                                                 \
        d = d > 0.0f ? d : 0.0f;                                                            \
        k[l] = fm_exp_f32(-g * d);                                                          \
    }
    if (b1 != NULL) {  /* the vectors' residual panel: (b1 - z cl) (sx sl) added to the cross term */
        const int32_t *restrict cl = m->cs2 + o;
        const float *restrict sl = m->sl + o;
        if (a2 == NULL) {
            _Pragma("omp simd")
            for (int l = 0; l < 16; l++) t[l] = FM_QSVM_T1(l) + (float)(b1[l] - z * cl[l]) * (xs * sl[l]);
        } else {
            _Pragma("omp simd")
            for (int l = 0; l < 16; l++) t[l] = FM_QSVM_T2(l) + (float)(b1[l] - z * cl[l]) * (xs * sl[l]);
        }
    } else if (m->fp.kernel != FM_SVM_RBF) {
        if (a2 == NULL) {
            _Pragma("omp simd")
            for (int l = 0; l < 16; l++) t[l] = FM_QSVM_T1(l);
        } else {
            _Pragma("omp simd")
            for (int l = 0; l < 16; l++) t[l] = FM_QSVM_T2(l);
        }
    }
    switch (m->fp.kernel) {
    case FM_SVM_RBF: {
        const float *restrict sn = m->sn + o;
#define FM_QSVM_T0(l) (t[l])
        if (b1 != NULL) { FM_QSVM_RBF(FM_QSVM_T0) }
        else if (a2 == NULL) { FM_QSVM_RBF(FM_QSVM_T1) } else { FM_QSVM_RBF(FM_QSVM_T2) }
#undef FM_QSVM_T0
        break;
    }
    case FM_SVM_POLY:
        for (int l = 0; l < 16; l++) k[l] = (float)fm_svm_powi((double)(g * t[l] + c0), m->fp.degree);
        break;
    default: /* sigmoid */
        for (int l = 0; l < 16; l++) k[l] = tanhf(g * t[l] + c0);
        break;
    }
#undef FM_QSVM_RBF
#undef FM_QSVM_T2
#undef FM_QSVM_T1
    const float *restrict coef = m->coef + p * M * FM_Q8_NR + half * 16;
    for (ptrdiff_t mm = 0; mm < M; mm++) {
        float *restrict am = a + mm * FM_Q8_NR + half * 16;
        const float *restrict cm = coef + mm * FM_Q8_NR;
        _Pragma("omp simd")
        for (int l = 0; l < 16; l++) am[l] += k[l] * cm[l];
    }
}

/* add each row's class accumulators into its pair values, then zero them */
static inline void fm_qsvm_flush(const fm_qsvm *m, ptrdiff_t c, ptrdiff_t n, float *acc, double *dec)
{
    const ptrdiff_t M = m->fp.M, NP = m->fp.NP;
    for (ptrdiff_t r = 0; r < n; r++) {
        float *a = acc + r * M * FM_Q8_NR;
        for (ptrdiff_t mm = 0; mm < M; mm++) {
            double s = 0.0;
            for (int l = 0; l < FM_Q8_NR; l++) s += (double)a[mm * FM_Q8_NR + l];
            dec[r * NP + m->fp.pair[c * M + mm]] += s;
        }
        memset(a, 0, sizeof(float) * M * FM_Q8_NR);
    }
}

/* The int32 sums of code rows xr[0:mr] against nv 16-vector pieces starting at panel p
 * (fm_int8.h's tiles: VNNI, or portable C with the same integers). */
static inline void fm_qsvm_tile(const fm_qsvm *m, const int8_t *w, int mr, int nv, const uint8_t *const *xr,
                                ptrdiff_t p, int32_t acc[][16])
{
    const ptrdiff_t kg = m->kpad / 4, pstride = kg * 4 * FM_Q8_NR;
    const int8_t *wv[8];
    for (int v = 0; v < nv; v++) wv[v] = w + (p + v / 2) * pstride + (v % 2) * 64;
    fm_q8_tiles(!FM_Q8_VNNI || m->portable, mr, nv, xr, kg, wv, acc);
}

/* tests: the exact cross terms of one row against 16 vectors, pass one (a1 - z cs), then with
 * the residual row pass (a2 - 128 cs), then with the vectors' residual panel (b1 - z cl), each one
 * panel row further: dots[(row, pass, column)] */
static inline void fm_qsvm_dots(const fm_qsvm *m, int32_t *dots, ptrdiff_t row, ptrdiff_t p, int half,
                                const int32_t *a1, const int32_t *a2, const int32_t *b1, int32_t z)
{
    const ptrdiff_t W = m->P * FM_Q8_NR, o = p * FM_Q8_NR + half * 16;
    int32_t *d = dots + row * (1 + (a2 != NULL) + (b1 != NULL)) * W + o;
    for (int l = 0; l < 16; l++) d[l] = a1[l] - z * m->cs[o + l];
    if (a2 != NULL) {
        d += W;
        for (int l = 0; l < 16; l++) d[l] = a2[l] - 128 * m->cs[o + l];
    }
    if (b1 != NULL) {
        d += W;
        for (int l = 0; l < 16; l++) d[l] = b1[l] - z * m->cs2[o + l];
    }
}

/* y = R x in float64 from Rt = R^T (row-major): each y[k] summed in feature order,
 * the F outputs in SIMD lanes */
static inline void fm_qsvm_rotate(const double *Rt, ptrdiff_t F, const void *X, int x32, ptrdiff_t off,
                                  double *restrict y)
{
    for (ptrdiff_t k = 0; k < F; k++) y[k] = 0.0;
    for (ptrdiff_t f = 0; f < F; f++) {
        const double xf = x32 ? (double)((const float *)X)[off + f] : ((const double *)X)[off + f];
        const double *restrict rf = Rt + f * F;
        _Pragma("omp simd")
        for (ptrdiff_t k = 0; k < F; k++) y[k] += rf[k] * xf;
    }
}

/* bytes of scratch a block of n rows needs */
static inline size_t fm_qsvm_scratch_bytes(const fm_qsvm *m, ptrdiff_t n)
{
    const ptrdiff_t K = m->fp.K, NP = m->fp.NP, F = m->fp.F;
    size_t q = ((size_t)n * (m->resid ? 2 : 1) * m->kpad + 63) & ~(size_t)63;
    return q + (size_t)n * (sizeof(float) * 2 + sizeof(int32_t)) + sizeof(float) * n * m->fp.M * FM_Q8_NR
           + sizeof(double) * ((size_t)n * NP + 2 * K * K + 4 * K + 64) + sizeof(double) * F * (m->fp.lin ? n : 0)
           + sizeof(double) * (m->rot ? F : 0) + 256;
}

typedef struct {
    const fm_qsvm *m;
    const void *X;
    int x32;
    ptrdiff_t rs;
    int kind;
    double *out;
    ptrdiff_t *idx;
    int32_t *dots;               /* tests: the int32 sums minus the zero point terms, or NULL */
} fm_qsvm_call;

/* Rows [i0, i0 + n) into the call's outputs.  Returns 1 when X holds NaN or inf. */
static int fm_qsvm_block(const fm_qsvm_call *c, ptrdiff_t i0, ptrdiff_t n, char *buf)
{
    const fm_qsvm *m = c->m;
    const ptrdiff_t F = m->fp.F, M = m->fp.M, NP = m->fp.NP, kp = m->kpad;
    if (m->fp.lin)  /* linear kernel: the folded float64 path */
        return fm_svm_block(&m->fp, c->X, c->x32, c->rs, i0, i0 + n, c->kind, c->out, c->idx, (double *)buf);
    const int rp = m->resid ? 2 : 1;  /* code rows per row: codes, then residual codes */
    uint8_t *xq = (uint8_t *)buf;
    double *dec = (double *)(buf + (((size_t)n * rp * kp + 63) & ~(size_t)63));
    double *scratch = dec + n * NP;
    float *acc = (float *)(scratch + 2 * m->fp.K * m->fp.K + 4 * m->fp.K + 64);
    float *xs = acc + n * M * FM_Q8_NR, *xx = xs + n;
    int32_t *xz = (int32_t *)(xx + n);
    double *xrot = (double *)(((uintptr_t)(xz + n) + 63) & ~(uintptr_t)63);  /* one rotated row */
    int32_t tacc[16][16] __attribute__((aligned(64)));
    int32_t tlo[16][16] __attribute__((aligned(64)));   /* sums against the vectors' residual panel */
    const uint8_t *xr[FM_Q8_MR], *xh[FM_Q8_MR];
    const int lo = m->w2 != NULL;

    for (ptrdiff_t r = 0; r < n; r++) {
        uint8_t *u = xq + r * rp * kp, *v = rp == 2 ? u + kp : NULL;
        double s = 0.0;
        if (m->rot) {
            if (c->x32 ? fm_q8_nonfinite_f((const float *)c->X + (i0 + r) * c->rs, F)
                       : fm_q8_nonfinite_d((const double *)c->X + (i0 + r) * c->rs, F)) return 1;
            fm_qsvm_rotate(m->rot, F, c->X, c->x32, (i0 + r) * c->rs, xrot);
            fm_q8_quant_d_rows(xrot, F, kp, NULL, NULL, m->portable, u, v, xs + r, xz + r);
        }
        if (c->x32) {
            const float *x = (const float *)c->X + (i0 + r) * c->rs;
            if (!m->rot && fm_q8_quant_f_rows(x, F, kp, NULL, NULL, m->portable, u, v, xs + r, xz + r)) return 1;
            for (ptrdiff_t f = 0; f < F; f++) s += (double)x[f] * (double)x[f];
        } else {
            const double *x = (const double *)c->X + (i0 + r) * c->rs;
            if (!m->rot && fm_q8_quant_d_rows(x, F, kp, NULL, NULL, m->portable, u, v, xs + r, xz + r)) return 1;
            for (ptrdiff_t f = 0; f < F; f++) s += x[f] * x[f];
        }
        xx[r] = (float)s;
    }
    memset(acc, 0, sizeof(float) * n * M * FM_Q8_NR);
    memset(dec, 0, sizeof(double) * n * NP);
    const ptrdiff_t nc = n * rp;                           /* code rows */
    const int full = nc >= FM_Q8_MR;                       /* tiles of 8 code rows, or the 1-row path */
    for (ptrdiff_t k = 0; k < m->fp.K; k++) {
        const ptrdiff_t p0 = m->fp.seg[k], p1 = m->fp.seg[k + 1];
        if (p0 == p1) continue;
        for (ptrdiff_t p = p0; p < p1 && full; p++)
            for (ptrdiff_t i = 0; i < nc; i += FM_Q8_MR) {  /* i and mr are multiples of rp */
                int mr = nc - i < FM_Q8_MR ? (int)(nc - i) : FM_Q8_MR;
                for (int r = 0; r < mr; r++) xr[r] = xq + (i + r) * kp;
                fm_qsvm_tile(m, m->w, mr, 2, xr, p, tacc);
                if (lo) {  /* the rows' first codes against the residual panel: x_hi . s_lo */
                    for (int r = 0; r < mr / rp; r++) xh[r] = xr[r * rp];
                    fm_qsvm_tile(m, m->w2, mr / rp, 2, xh, p, tlo);
                }
                for (int r = 0; r < mr; r += rp) {
                    const ptrdiff_t row = (i + r) / rp;
                    for (int h = 0; h < 2; h++) {
                        const int32_t *a1 = tacc[2 * r + h], *a2 = rp == 2 ? tacc[2 * (r + 1) + h] : NULL;
                        const int32_t *b1 = lo ? tlo[2 * (r / rp) + h] : NULL;
                        if (c->dots) fm_qsvm_dots(m, c->dots, i0 + row, p, h, a1, a2, b1, xz[row]);
                        fm_qsvm_epilogue(m, p, h, a1, a2, b1, xs[row], xz[row], xx[row], acc + row * M * FM_Q8_NR);
                    }
                }
            }
        for (ptrdiff_t r = 0; r < n && !full; r++) {
            xr[0] = xq + r * rp * kp;
            xr[1] = xr[0] + kp;  /* the residual codes (rp = 2) */
            const ptrdiff_t pmax = 4 / rp;
            for (ptrdiff_t p = p0; p < p1; p += pmax) {
                int npp = p1 - p < pmax ? (int)(p1 - p) : (int)pmax, nv = 2 * npp;
                fm_qsvm_tile(m, m->w, rp, nv, xr, p, tacc);
                if (lo) fm_qsvm_tile(m, m->w2, 1, nv, xr, p, tlo);
                for (int v = 0; v < nv; v++) {
                    const ptrdiff_t pp = p + v / 2;
                    const int32_t *a1 = tacc[v], *a2 = rp == 2 ? tacc[nv + v] : NULL, *b1 = lo ? tlo[v] : NULL;
                    if (c->dots) fm_qsvm_dots(m, c->dots, i0 + r, pp, v % 2, a1, a2, b1, xz[r]);
                    fm_qsvm_epilogue(m, pp, v % 2, a1, a2, b1, xs[r], xz[r], xx[r], acc + r * M * FM_Q8_NR);
                }
            }
        }
        fm_qsvm_flush(m, k, n, acc, dec);
    }

    for (ptrdiff_t r = 0; r < n; r++) {
        double *d = dec + r * NP;
        for (ptrdiff_t q = 0; q < NP; q++) d[q] += m->fp.b[q];
        const ptrdiff_t i = i0 + r;
        const ptrdiff_t K = m->fp.K;
        switch (c->kind) {
        case FM_SVM_RAW: memcpy(c->out + i * NP, d, sizeof(double) * NP); break;
        case FM_SVM_NEG: for (ptrdiff_t q = 0; q < NP; q++) c->out[i * NP + q] = -d[q]; break;
        case FM_SVM_OVR: fm_svm_ovr(K, d, c->out + i * K); break;
        case FM_SVM_VOTE: c->idx[i] = fm_svm_vote(K, d); break;
        case FM_SVM_TIES: {
            double *o = scratch;
            ptrdiff_t best = 0;
            fm_svm_ovr(K, d, o);
            for (ptrdiff_t q = 1; q < K; q++)
                if (o[q] > o[best]) best = q;
            c->idx[i] = best;
            break;
        }
        default: fm_svm_proba(&m->fp, d, c->out + i * K, scratch); break;
        }
    }
    return 0;
}

static int fm_qsvm_block_any(const void *c, ptrdiff_t i0, ptrdiff_t n, char *buf)
{
    return fm_qsvm_block((const fm_qsvm_call *)c, i0, n, buf);
}

/* Every row of X: 0, 1 (NaN/inf in X) or -1 (out of memory). */
static int fm_qsvm_run(const fm_qsvm *m, const void *X, int x32, ptrdiff_t rs, ptrdiff_t n, int kind,
                       double *out, ptrdiff_t *idx, int32_t *dots, int n_threads, ptrdiff_t min_parallel)
{
    fm_qsvm_call c = {m, X, x32, rs, kind, out, idx, dots};
    int par = n_threads > 1 && n >= min_parallel;
    ptrdiff_t blk = fm_q8_block_rows(n, FM_QSVM_BLOCK, par, n_threads);
    size_t need = fm_qsvm_scratch_bytes(m, n < blk ? n : blk);
    if (m->fp.lin) {
        size_t lin = sizeof(double) * (size_t)fm_svm_work_size(&m->fp, n < blk ? n : blk);
        need = lin > need ? lin : need;
    }
    return fm_q8_run_blocks(fm_qsvm_block_any, &c, n, blk, need, par, n_threads);
}

#endif
