/* Vector-search kernels: exact top-k, k-means assignment, product-quantization
 * (PQ) encoding, distance tables and the asymmetric-distance (ADC) scan with
 * k-selection, for fastml.search.
 *
 * Conventions
 * -----------
 * Every kernel minimizes.  L2 distances are squared Euclidean; inner-product
 * search hands the kernels negated products and negates the result back
 * (Python side).  Top-k is a bounded max-heap of (distance, id) pairs ordered
 * lexicographically (ties go to the smaller id, as in faiss), never a sort of
 * everything; a heap starts full of (+inf, -1), so k > n pads with -1 / inf.
 *
 * Layouts
 * -------
 * Codebooks are stored transposed per sub-quantizer, cbT[m][dsub][ksub], so the
 * distance from one sub-vector to all ksub centroids is an outer-product loop
 * whose inner loop runs over contiguous centroids (vectorized 16 wide): the
 * table row for sub-quantizer m costs dsub vector passes over ksub floats.
 * Differences are squared directly (no |x|^2 + |c|^2 - 2x.c cancellation).
 *
 * PQ codes for scanning are "packed" in blocks of 64 vectors: for nbits = 8,
 * block b holds M rows of 64 bytes, row m = the m-th code of vectors
 * 64b .. 64b+63; for nbits = 4, ceil(M/2) rows, byte = code[2j] | code[2j+1] << 4.
 * A block is what one AVX-512 register of byte lanes holds, so one load feeds
 * 64 table look-ups.  Inverted lists start on block boundaries ("slots"); pad
 * lanes hold code 0 and are masked out by the list length.
 *
 * ADC scan (fm_pq_search_one), per query, loop order probe -> block -> m:
 *   1. float tables Tf[p][m][ksub] (+ a per-probe bias) come from the caller;
 *   2. they are quantized to uint8 with one scale a per query (per-(p,m) minimum
 *      subtracted, 255 levels for 8-bit codes, 127 for 4-bit so that a pair of
 *      look-ups fits a byte);
 *   3. the block loop sums M uint8 look-ups per vector into uint16 lanes:
 *      AVX-512 VBMI vpermi2b (a 256-entry table in four registers) for 8-bit
 *      codes, vpshufb (16 entries per 128-bit lane) for 4-bit codes; scalar C
 *      elsewhere;
 *   4. a vector is a candidate when its quantized total is at most T_k + M + 2,
 *      T_k the k-th smallest quantized total so far (a bounded heap).  Each
 *      look-up is off by at most 1/2 level, so every member of the exact float
 *      top-k passes: the candidates are re-ranked with the float tables and the
 *      result equals a float ADC scan (up to float summation order).
 *
 * Exact search (fm_topk_ip_block) consumes blocks of inner products that the
 * caller computes with BLAS (GEMM), adds norms, and filters 16 candidates at a
 * time against the heap's top before touching the heap.
 *
 * Nothing here validates input: the Python layer checks shapes, code ranges and
 * list bounds before any call, so kernels trust their arrays.
 */
#ifndef FM_PQ_H
#define FM_PQ_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#if defined(__AVX512BW__)
#include <immintrin.h>
#endif

typedef float fm_v16f __attribute__((vector_size(64)));

static inline fm_v16f fm_ld16(const float *p) { fm_v16f v; memcpy(&v, p, sizeof v); return v; }
static inline void fm_st16(float *p, fm_v16f v) { memcpy(p, &v, sizeof v); }
static inline float fm_hsum16(fm_v16f v)
{
    float s = 0.0f;
    for (int i = 0; i < 16; i++) s += v[i];
    return s;
}

/* Which quantized scan this build has: 2 = AVX-512 (8-bit needs VBMI too), 1 = scalar. */
#if defined(__AVX512BW__) && defined(__AVX512VBMI__)
#define FM_PQ_SIMD8 1
#else
#define FM_PQ_SIMD8 0
#endif
#if defined(__AVX512BW__)
#define FM_PQ_SIMD4 1
#else
#define FM_PQ_SIMD4 0
#endif

/* ------------------------------------------------------------------ heaps */

static inline int fm_key_lt(float a, int64_t ia, float b, int64_t ib)
{
    return a < b || (a == b && ia < ib);
}

/* Replace the top of a max-heap of size k by (d, id) and restore the heap. */
static inline void fm_heap_replace_top(float *hd, int64_t *hi, ptrdiff_t k, float d, int64_t id)
{
    ptrdiff_t i = 0;
    for (;;) {
        ptrdiff_t l = 2 * i + 1, r = l + 1, c;
        if (l >= k) break;
        c = (r < k && fm_key_lt(hd[l], hi[l], hd[r], hi[r])) ? r : l;
        if (!fm_key_lt(d, id, hd[c], hi[c])) break;
        hd[i] = hd[c]; hi[i] = hi[c];
        i = c;
    }
    hd[i] = d; hi[i] = id;
}

static inline void fm_heap_init(float *hd, int64_t *hi, ptrdiff_t k)
{
    for (ptrdiff_t i = 0; i < k; i++) { hd[i] = INFINITY; hi[i] = -1; }
}

static inline void fm_heap_push(float *hd, int64_t *hi, ptrdiff_t k, float d, int64_t id)
{
    if (fm_key_lt(d, id, hd[0], hi[0])) fm_heap_replace_top(hd, hi, k, d, id);
}

/* Heap -> ascending order, in place (heap sort). */
static inline void fm_heap_sort(float *hd, int64_t *hi, ptrdiff_t k)
{
    for (ptrdiff_t n = k - 1; n > 0; n--) {
        float d = hd[n]; int64_t id = hi[n];
        hd[n] = hd[0]; hi[n] = hi[0];
        hd[0] = INFINITY; hi[0] = INT64_MAX;  /* placeholder, sifted over */
        fm_heap_replace_top(hd, hi, n, d, id);
    }
}

/* Max-heap of int64 quantized totals (values only). */
static inline void fm_iheap_replace_top(int64_t *h, ptrdiff_t k, int64_t v)
{
    ptrdiff_t i = 0;
    for (;;) {
        ptrdiff_t l = 2 * i + 1, r = l + 1, c;
        if (l >= k) break;
        c = (r < k && h[r] > h[l]) ? r : l;
        if (v >= h[c]) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = v;
}

/* ------------------------------------------------------------ exact search */

/* One block of inner products ip[q][j] (row stride ld) for queries [0, nq) and
 * database vectors base .. base+nb-1.  For L2 (norms != NULL) the candidate
 * distance is norms[j] - 2 ip (the query norm is added by the caller at the
 * end); for inner product (norms == NULL) it is -ip.  Heaps: nq x k. */
static void fm_topk_ip_block(const float *ip, ptrdiff_t ld, ptrdiff_t nq, ptrdiff_t nb,
                             const float *norms, int64_t base, ptrdiff_t k,
                             float *HD, int64_t *HI)
{
    for (ptrdiff_t q = 0; q < nq; q++) {
        const float *row = ip + q * ld;
        float *hd = HD + q * k;
        int64_t *hi = HI + q * k;
        ptrdiff_t j = 0;
#if defined(__AVX512F__)
        const __m512 m2 = _mm512_set1_ps(-2.0f), zero = _mm512_setzero_ps();
        for (; j + 16 <= nb; j += 16) {
            __m512 v = _mm512_loadu_ps(row + j);
            __m512 d = norms ? _mm512_fmadd_ps(v, m2, _mm512_loadu_ps(norms + j)) : _mm512_sub_ps(zero, v);
            /* <= keeps equal distances with smaller ids; NaN never passes */
            __mmask16 mk = _mm512_cmp_ps_mask(d, _mm512_set1_ps(hd[0]), _CMP_LE_OQ);
            if (mk) {
                float tmp[16];
                _mm512_storeu_ps(tmp, d);
                while (mk) {
                    int t = __builtin_ctz(mk);
                    mk &= mk - 1;
                    fm_heap_push(hd, hi, k, tmp[t], base + j + t);
                }
            }
        }
#endif
        for (; j < nb; j++) {
            float d = norms ? norms[j] - 2.0f * row[j] : -row[j];
            if (d <= hd[0]) fm_heap_push(hd, hi, k, d, base + j);
        }
    }
}

/* -------------------------------------------------------- distance tables */

/* out[j] = ||x - c_j||^2 (ip = 0) or -x.c_j (ip = 1) for the ksub centroids of
 * one sub-quantizer, cT = cbT[m] (dsub x ksub). */
static inline void fm_table_row(const float *x, ptrdiff_t dsub, const float *cT, ptrdiff_t ksub,
                                int ip, float *out)
{
    ptrdiff_t j = 0;
    for (; j + 16 <= ksub; j += 16) {
        fm_v16f acc = {0};
        for (ptrdiff_t t = 0; t < dsub; t++) {
            fm_v16f c = fm_ld16(cT + t * ksub + j);
            if (ip) acc -= c * x[t];
            else { fm_v16f df = c - x[t]; acc += df * df; }
        }
        fm_st16(out + j, acc);
    }
    for (; j < ksub; j++) {
        float acc = 0.0f;
        for (ptrdiff_t t = 0; t < dsub; t++) {
            float c = cT[t * ksub + j];
            if (ip) acc -= c * x[t];
            else { float df = c - x[t]; acc += df * df; }
        }
        out[j] = acc;
    }
}

/* Tables of one query: T[m][ksub]. */
static void fm_pq_tables(const float *x, ptrdiff_t M, ptrdiff_t dsub, ptrdiff_t ksub,
                         const float *cbT, int ip, float *T)
{
    for (ptrdiff_t m = 0; m < M; m++)
        fm_table_row(x + m * dsub, dsub, cbT + m * dsub * ksub, ksub, ip, T + m * ksub);
}

/* Encode one vector: code[m] = argmin_j table(m, j) (first index on ties).
 * scratch: ksub floats.  Also the k-means assignment step (M = 1). */
static void fm_pq_encode_one(const float *x, ptrdiff_t M, ptrdiff_t dsub, ptrdiff_t ksub,
                             const float *cbT, float *scratch, int32_t *code, float *dist)
{
    float total = 0.0f;
    for (ptrdiff_t m = 0; m < M; m++) {
        fm_table_row(x + m * dsub, dsub, cbT + m * dsub * ksub, ksub, 0, scratch);
        ptrdiff_t best = 0;
        float bd = scratch[0];
        for (ptrdiff_t j = 1; j < ksub; j++)
            if (scratch[j] < bd) { bd = scratch[j]; best = j; }
        code[m] = (int32_t)best;
        total += bd;
    }
    if (dist) *dist = total;
}

/* ------------------------------------------------------------- k-means */

/* sums[c][:] += x, counts[c] += 1 for every row (single pass, one thread). */
static void fm_centroid_sums(const float *X, ptrdiff_t n, ptrdiff_t d, const int32_t *assign,
                             double *sums, int64_t *counts)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        double *s = sums + (ptrdiff_t)assign[i] * d;
        const float *x = X + i * d;
        for (ptrdiff_t t = 0; t < d; t++) s[t] += x[t];
        counts[assign[i]]++;
    }
}

/* ------------------------------------------------------------- flat lists */

/* Exact distance of q to x in the minimizing sense: squared L2, or -q.x (ip). */
static inline float fm_dist_flat(const float *q, const float *x, ptrdiff_t d, int ip)
{
    fm_v16f acc = {0};
    ptrdiff_t t = 0;
    for (; t + 16 <= d; t += 16) {
        fm_v16f a = fm_ld16(x + t), b = fm_ld16(q + t);
        if (ip) acc -= a * b;
        else { fm_v16f df = a - b; acc += df * df; }
    }
    float s = fm_hsum16(acc);
    for (; t < d; t++) {
        if (ip) s -= x[t] * q[t];
        else { float df = x[t] - q[t]; s += df * df; }
    }
    return s;
}

/* Exact distances of one query to n contiguous vectors (IVF-Flat lists). */
static void fm_scan_flat(const float *q, const float *X, ptrdiff_t n, ptrdiff_t d, int ip,
                         const int64_t *ids, ptrdiff_t k, float *hd, int64_t *hi)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        float s = fm_dist_flat(q, X + i * d, d, ip);
        if (s <= hd[0]) fm_heap_push(hd, hi, k, s, ids[i]);
    }
}

/* Exact re-ranking (IndexRefineFlat): distances of one query to the scattered rows
 * X[rows[i]] (rows[i] < 0: no candidate), pushed under the id keys[i]. The next
 * candidate's row is prefetched while this one is summed: rows are random. */
static void fm_scan_rows(const float *q, const float *X, ptrdiff_t d, int ip, const int64_t *rows,
                         const int64_t *keys, ptrdiff_t n, ptrdiff_t k, float *hd, int64_t *hi)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        if (i + 1 < n && rows[i + 1] >= 0)
            for (ptrdiff_t t = 0; t < d; t += 16) __builtin_prefetch(X + rows[i + 1] * d + t);
        if (rows[i] < 0) continue;
        float s = fm_dist_flat(q, X + rows[i] * d, d, ip);
        if (s <= hd[0]) fm_heap_push(hd, hi, k, s, keys[i]);
    }
}

/* ------------------------------------------------------------- ADC scan */

/* The codes an index scans, in packed layout (see top of file). */
typedef struct {
    const uint8_t *packed;
    const int64_t *ids;     /* slot -> user id */
    ptrdiff_t M, nbits;
} fm_pq_codes;

static inline ptrdiff_t fm_pq_rows(const fm_pq_codes *C) { return C->nbits == 8 ? C->M : (C->M + 1) / 2; }

static inline int fm_pq_code_at(const fm_pq_codes *C, int64_t slot, ptrdiff_t m)
{
    const uint8_t *blk = C->packed + (slot >> 6) * 64 * fm_pq_rows(C);
    int lane = (int)(slot & 63);
    if (C->nbits == 8) return blk[m * 64 + lane];
    uint8_t b = blk[(m >> 1) * 64 + lane];
    return (m & 1) ? b >> 4 : b & 15;
}

/* Quantized sums of one block (64 lanes) into s[64], scalar. */
static inline void fm_block_sums_scalar(const uint8_t *blk, const uint8_t *lut, ptrdiff_t M, ptrdiff_t ksub,
                                        int nbits, uint32_t *s)
{
    for (int l = 0; l < 64; l++) s[l] = 0;
    for (ptrdiff_t m = 0; m < M; m++) {
        const uint8_t *t = lut + m * ksub;
        if (nbits == 8) {
            const uint8_t *row = blk + m * 64;
            for (int l = 0; l < 64; l++) s[l] += t[row[l]];
        } else {
            const uint8_t *row = blk + (m >> 1) * 64;
            int sh = (m & 1) * 4;
            for (int l = 0; l < 64; l++) s[l] += t[(row[l] >> sh) & 15];
        }
    }
}

#if FM_PQ_SIMD8
/* 8-bit codes: 64 look-ups per vpermi2b pair.  Word w of *ev holds the sum of
 * lane 2w, word w of *od the sum of lane 2w + 1. */
static inline void fm_block_sums8_avx512(const uint8_t *blk, const uint8_t *lut, ptrdiff_t M,
                                         __m512i *ev, __m512i *od)
{
    const __m512i lo8 = _mm512_set1_epi16(0x00ff);
    __m512i e = _mm512_setzero_si512(), o = _mm512_setzero_si512();
    for (ptrdiff_t m = 0; m < M; m++) {
        __m512i c = _mm512_loadu_si512((const void *)(blk + m * 64));
        const uint8_t *t = lut + m * 256;
        __m512i a = _mm512_permutex2var_epi8(_mm512_loadu_si512((const void *)t), c,
                                             _mm512_loadu_si512((const void *)(t + 64)));
        __m512i b = _mm512_permutex2var_epi8(_mm512_loadu_si512((const void *)(t + 128)), c,
                                             _mm512_loadu_si512((const void *)(t + 192)));
        __m512i r = _mm512_mask_blend_epi8(_mm512_movepi8_mask(c), a, b);
        e = _mm512_add_epi16(e, _mm512_and_si512(r, lo8));
        o = _mm512_add_epi16(o, _mm512_srli_epi16(r, 8));
    }
    *ev = e; *od = o;
}
#endif

#if FM_PQ_SIMD4
/* 4-bit codes: tables of 16 entries broadcast to the four 128-bit lanes
 * (lut4: Mp x 64 bytes, prepared by the caller); two look-ups (entries <= 127)
 * are added in bytes before widening. */
static inline void fm_block_sums4_avx512(const uint8_t *blk, const uint8_t *lut4, ptrdiff_t rows,
                                         __m512i *ev, __m512i *od)
{
    const __m512i lo8 = _mm512_set1_epi16(0x00ff), nib = _mm512_set1_epi8(0x0f);
    __m512i e = _mm512_setzero_si512(), o = _mm512_setzero_si512();
    for (ptrdiff_t j = 0; j < rows; j++) {
        __m512i c = _mm512_loadu_si512((const void *)(blk + j * 64));
        __m512i lo = _mm512_and_si512(c, nib);
        __m512i hi = _mm512_and_si512(_mm512_srli_epi16(c, 4), nib);
        __m512i r = _mm512_add_epi8(
            _mm512_shuffle_epi8(_mm512_loadu_si512((const void *)(lut4 + (2 * j) * 64)), lo),
            _mm512_shuffle_epi8(_mm512_loadu_si512((const void *)(lut4 + (2 * j + 1) * 64)), hi));
        e = _mm512_add_epi16(e, _mm512_and_si512(r, lo8));
        o = _mm512_add_epi16(o, _mm512_srli_epi16(r, 8));
    }
    *ev = e; *od = o;
}
#endif

/* Float ADC distance of one slot. */
static inline float fm_adc_one(const fm_pq_codes *C, const float *T, ptrdiff_t ksub, float bias, int64_t slot)
{
    float d = bias;
    for (ptrdiff_t m = 0; m < C->M; m++) d += T[m * ksub + fm_pq_code_at(C, slot, m)];
    return d;
}

/* Float ADC over one list, a block of 64 vectors at a time: look-ups in the
 * same order as fm_adc_one (bias, then m = 0, 1, ...), so every mode returns
 * the same float distances. */
static void fm_scan_float_list(const fm_pq_codes *C, const float *T, ptrdiff_t ksub, float bias,
                               int64_t start, int64_t len, ptrdiff_t k, float *Dk, int64_t *Ik)
{
    const ptrdiff_t M = C->M, rows = fm_pq_rows(C);
    float acc[64];
    for (int64_t b0 = 0; b0 < len; b0 += 64) {
        const int64_t slot0 = start + b0;
        const uint8_t *blk = C->packed + (slot0 >> 6) * 64 * rows;
        const int valid = len - b0 >= 64 ? 64 : (int)(len - b0);
        for (int l = 0; l < 64; l++) acc[l] = bias;
        if (C->nbits == 8) {
            for (ptrdiff_t m = 0; m < M; m++) {
                const uint8_t *row = blk + m * 64;
                const float *t = T + m * ksub;
                for (int l = 0; l < 64; l++) acc[l] += t[row[l]];
            }
        } else {
            for (ptrdiff_t j = 0; j < rows; j++) {
                const uint8_t *row = blk + j * 64;
                const float *t0 = T + (2 * j) * ksub;
                for (int l = 0; l < 64; l++) acc[l] += t0[row[l] & 15];
                if (2 * j + 1 < M) {
                    const float *t1 = t0 + ksub;
                    for (int l = 0; l < 64; l++) acc[l] += t1[row[l] >> 4];
                }
            }
        }
        for (int l = 0; l < valid; l++)
            if (acc[l] <= Dk[0]) fm_heap_push(Dk, Ik, k, acc[l], slot0 + l);
    }
}

/* IVF-PQ in float for one query: the table of each probe, pre[list] + qtab
 * (pre NULL: qtab alone), is built in an L1-sized scratch right before its
 * list is scanned, instead of materializing nprobe tables.  Returns 0, or -1
 * when out of memory.  Results are left as a heap (the caller sorts). */
static int fm_ivfpq_float_one(const fm_pq_codes *C, ptrdiff_t np, const float *qtab, const float *pre,
                              const int64_t *lists, const float *coarse, const int64_t *lstart,
                              const int64_t *llen, ptrdiff_t k, float *Dk, int64_t *Ik)
{
    const ptrdiff_t ksub = (ptrdiff_t)1 << C->nbits, per = C->M * ksub;
    float *T = pre ? malloc((size_t)per * sizeof(float)) : NULL;
    if (pre && !T) return -1;
    for (ptrdiff_t p = 0; p < np; p++) {
        const int64_t l = lists[p];
        if (l < 0 || llen[l] == 0) continue;
        const float *t = qtab;
        if (pre) {
            const float *pl = pre + l * per;
            for (ptrdiff_t j = 0; j < per; j++) T[j] = pl[j] + qtab[j];
            t = T;
        }
        fm_scan_float_list(C, t, ksub, coarse[p], lstart[l], llen[l], k, Dk, Ik);
    }
    free(T);
    return 0;
}

static void fm_pq_finish(const fm_pq_codes *C, ptrdiff_t k, float *Dk, int64_t *Ik)
{
    fm_heap_sort(Dk, Ik, k);
    for (ptrdiff_t i = 0; i < k; i++) Ik[i] = Ik[i] < 0 ? -1 : C->ids[Ik[i]];
}

/* Largest quantized sum that can still belong to the top k of list p:
 * sum - M/2 <= a * (d - base_p) for every vector, so a vector whose sum is
 * above a * (limit - base_p) + M/2 (+1 for rounding) is farther than limit. */
static inline int64_t fm_qthr(double a, double limit, double base, ptrdiff_t M)
{
    if (!(limit < INFINITY)) return 65535;
    double t = floor(a * (limit - base) + 0.5 * (double)M + 1.0);
    return t < 0 ? -1 : t > 65535 ? 65535 : (int64_t)t;
}

#ifndef FM_PQ_SAMPLES
#define FM_PQ_SAMPLES 512
#endif

/* Search one query.
 *   Tf     np x M x ksub float tables (one per probed list), bias[np] added to
 *          every distance of that list;
 *   start  first slot of each probed list (a multiple of 64), len its length;
 *   mode   0 = float ADC scan, 1 = quantized scalar, 2 = quantized SIMD where
 *          this build has it (else scalar), 3 = auto (float for short lists);
 *   Dk, Ik k results, ascending, padded with (+inf, -1).
 *
 * Quantized modes: an estimate L of the k-th distance comes from float ADC on
 * FM_PQ_SAMPLES slots spread over the probed lists (L >= the true k-th
 * distance: they are real vectors).  Entries t - tmin are scaled by a so that
 * a budget of (L - base) / min(M, 4)... saturates at 255 (127 for 4-bit);
 * saturation only lowers a sum, so the filter stays a lower bound, and the
 * scale spends the 8 bits on the distances that can reach the top k.  A vector
 * passes the filter when its sum <= fm_qthr(limit), limit = min(L, current
 * k-th float distance); it is then measured with the float tables and pushed.
 * Returns 0, or -1 when out of memory. */
static int fm_pq_search_one(const fm_pq_codes *C, ptrdiff_t np, const float *Tf, const double *bias,
                            const int64_t *start, const int64_t *len, ptrdiff_t k, int mode,
                            float *Dk, int64_t *Ik)
{
    const ptrdiff_t M = C->M, ksub = (ptrdiff_t)1 << C->nbits, rows = fm_pq_rows(C);
    const int nbits = (int)C->nbits;
    if (k < 1) return 0;
    fm_heap_init(Dk, Ik, k);
    int finite = 1;
    for (ptrdiff_t i = 0; i < np * M * ksub && finite; i++) finite = isfinite(Tf[i]);
    for (ptrdiff_t p = 0; p < np && finite; p++) finite = isfinite(bias[p]);
    if (mode == 3) {
        /* auto: quantizing costs about M * ksub per probed list, a float look-up
         * about 4x a quantized one; short lists (IVF) are scanned in float */
        int64_t total = 0;
        for (ptrdiff_t p = 0; p < np; p++) total += len[p];
        mode = total >= (int64_t)np * 2 * ksub ? 2 : 0;
    }
    if (mode == 0 || !finite || M > 256) {
        /* Float ADC: the reference path (and the one for non-finite tables). */
        for (ptrdiff_t p = 0; p < np; p++)
            fm_scan_float_list(C, Tf + p * M * ksub, ksub, (float)bias[p], start[p], len[p], k, Dk, Ik);
        goto finish;
    }
    {
        const ptrdiff_t Mp = nbits == 8 ? M : 2 * rows;
        const double levels = nbits == 8 ? 255.0 : 127.0;
        uint8_t *lut = malloc((size_t)np * Mp * ksub + 64);
        uint8_t *lut4 = nbits == 4 ? malloc((size_t)Mp * 64 + 64) : NULL;
        double *base = malloc((size_t)np * sizeof(double) + 8);
        double *tmin = malloc((size_t)np * M * sizeof(double) + 8);
        float *sd = malloc((size_t)k * sizeof(float));
        int64_t *si = malloc((size_t)k * sizeof(int64_t));
        int rc = 0;
        if (!lut || (nbits == 4 && !lut4) || !base || !tmin || !sd || !si) { rc = -1; goto done; }
        /* Per-(probe, m) minimum, per-probe base, and the widest table. */
        double range = 0.0, minbase = INFINITY;
        int64_t total = 0;
        for (ptrdiff_t p = 0; p < np; p++) {
            base[p] = bias[p];
            for (ptrdiff_t m = 0; m < M; m++) {
                const float *t = Tf + (p * M + m) * ksub;
                float lo = t[0], hi = t[0];
                for (ptrdiff_t j = 1; j < ksub; j++) { lo = t[j] < lo ? t[j] : lo; hi = t[j] > hi ? t[j] : hi; }
                tmin[p * M + m] = lo;
                base[p] += lo;
                if ((double)hi - lo > range) range = (double)hi - lo;
            }
            if (len[p] > 0 && base[p] < minbase) minbase = base[p];
            total += len[p];
        }
        /* Estimate of the k-th distance from a spread sample of real vectors. */
        fm_heap_init(sd, si, k);
        {
            int64_t stride = total / FM_PQ_SAMPLES > 1 ? total / FM_PQ_SAMPLES : 1, pos = 0, seen = 0;
            for (ptrdiff_t p = 0; p < np; p++) {
                const float *T = Tf + p * M * ksub;
                for (; pos < seen + len[p]; pos += stride) {
                    int64_t slot = start[p] + (pos - seen);
                    fm_heap_push(sd, si, k, fm_adc_one(C, T, ksub, (float)bias[p], slot), slot);
                }
                seen += len[p];
            }
        }
        double L = sd[0];
        double budget = L - minbase;
        double sat = (budget > 0 && isfinite(budget)) ? budget / (M < 4 ? (double)M : 4.0) : 0.0;
        if (!(sat > 0) || sat > range) sat = range;
        const double a = sat > 0.0 ? levels / sat : 0.0;
        for (ptrdiff_t p = 0; p < np; p++) {
            for (ptrdiff_t m = 0; m < M; m++) {
                const float *t = Tf + (p * M + m) * ksub;
                uint8_t *u = lut + (p * Mp + m) * ksub;
                double lo = tmin[p * M + m];
                for (ptrdiff_t j = 0; j < ksub; j++) {
                    double v = nearbyint(((double)t[j] - lo) * a);
                    u[j] = (uint8_t)(v > levels ? levels : v);
                }
            }
            for (ptrdiff_t m = M; m < Mp; m++) memset(lut + (p * Mp + m) * ksub, 0, ksub);
        }
        int simd = mode == 2 && ((nbits == 8 && FM_PQ_SIMD8) || (nbits == 4 && FM_PQ_SIMD4));
        uint32_t s[64];
        for (ptrdiff_t p = 0; p < np; p++) {
            const uint8_t *Lq = lut + p * Mp * ksub;
            const float *T = Tf + p * M * ksub;
            const float bp = (float)bias[p];
            if (nbits == 4)
                for (ptrdiff_t m = 0; m < Mp; m++)
                    for (int r = 0; r < 4; r++) memcpy(lut4 + m * 64 + r * 16, Lq + m * 16, 16);
            const int64_t nblk = (len[p] + 63) / 64;
            double limit = Dk[0] < L ? Dk[0] : L;
            int64_t thr = fm_qthr(a, limit, base[p], M);
            for (int64_t bk = 0; bk < nblk && thr >= 0; bk++) {
                const int64_t slot0 = start[p] + bk * 64;
                const uint8_t *blk = C->packed + (slot0 >> 6) * 64 * rows;
                const int valid = len[p] - bk * 64 >= 64 ? 64 : (int)(len[p] - bk * 64);
                uint64_t pass = valid == 64 ? ~(uint64_t)0 : (((uint64_t)1 << valid) - 1);
#if FM_PQ_SIMD8 || FM_PQ_SIMD4
                if (simd) {
                    __m512i ev = _mm512_setzero_si512(), od = _mm512_setzero_si512();
#if FM_PQ_SIMD8
                    if (nbits == 8) fm_block_sums8_avx512(blk, Lq, M, &ev, &od);
#endif
#if FM_PQ_SIMD4
                    if (nbits == 4) fm_block_sums4_avx512(blk, lut4, rows, &ev, &od);
#endif
                    __m512i tv = _mm512_set1_epi16((short)(uint16_t)thr);
                    uint64_t me = _mm512_cmple_epu16_mask(ev, tv), mo = _mm512_cmple_epu16_mask(od, tv);
                    /* interleave: bit 2w <- me bit w, bit 2w+1 <- mo bit w */
                    uint64_t bits = 0;
                    for (uint64_t x = me; x; x &= x - 1) bits |= (uint64_t)1 << (2 * __builtin_ctzll(x));
                    for (uint64_t x = mo; x; x &= x - 1) bits |= (uint64_t)1 << (2 * __builtin_ctzll(x) + 1);
                    pass &= bits;
                    if (!pass) continue;
                    uint16_t se[32], so[32];
                    _mm512_storeu_si512((void *)se, ev);
                    _mm512_storeu_si512((void *)so, od);
                    for (int w = 0; w < 32; w++) { s[2 * w] = se[w]; s[2 * w + 1] = so[w]; }
                } else
#endif
                {
                    fm_block_sums_scalar(blk, Lq, Mp, ksub, nbits, s);
                }
                for (; pass; pass &= pass - 1) {
                    int l = __builtin_ctzll(pass);
                    if ((int64_t)s[l] > thr) continue;
                    float d = fm_adc_one(C, T, ksub, bp, slot0 + l);
                    if (d <= Dk[0] && fm_key_lt(d, slot0 + l, Dk[0], Ik[0])) {
                        fm_heap_replace_top(Dk, Ik, k, d, slot0 + l);
                        if (Dk[0] < limit) {
                            limit = Dk[0];
                            thr = fm_qthr(a, limit, base[p], M);
                            if (thr < 0) break;
                        }
                    }
                }
            }
        }
    done:
        free(lut); free(lut4); free(base); free(tmin); free(sd); free(si);
        if (rc) return rc;
    }
finish:
    fm_heap_sort(Dk, Ik, k);
    for (ptrdiff_t i = 0; i < k; i++) Ik[i] = Ik[i] < 0 ? -1 : C->ids[Ik[i]];
    return 0;
}

#endif
