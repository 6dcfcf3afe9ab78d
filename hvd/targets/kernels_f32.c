/* CPU kernels of the float32 target (HFTarget, hvd/targets/hf.py): its linears and LM head
 * (hvd_linear_f32, hvd/targets/f32_linear.py) and a verify's attention over the transformers
 * float32 cache (hvd_attention_f32, hvd/targets/f32_attention.py). Helpers shared with the exact
 * target: kernels_common.h; compiled with it into one unit by kernels.c.
 *
 * Exactness contract: batch invariance, not agreement with torch. Each output element is one
 * fixed sequence of float operations that reads only its own row's inputs (and the weights / the
 * cache), the same sequence whatever other rows share the call, whichever thread runs it: a
 * linear output is one 8-lane fma chain over k, lanes added by hsum8; an attention row is the
 * key sequence plain decoding has at its position, in that order (scores by fixed fma chains and
 * a fixed lane tree, softmax8, value sums chained over the keys). So verifying draft tokens gives
 * bit for bit the logits plain decoding gives. Built with -ffp-contract=off (no fma the code does
 * not write); needs AVX2 + FMA.
 */
#include "kernels_common.h"

/* ---- float32 linear (HFTarget's float32 model, hvd/targets/f32_linear.py) ----------------
 * y[t, o] = sum_k x[t, k] * w[o, k]: x (T, K), w (N, K) row-major as the checkpoint holds it, K a
 * multiple of 8. Each output is one fixed sequence: lane l of an 8-lane accumulator takes
 * x[t, k] * w[o, k] for k = l, l+8, ... in turn, one fma each, and the lanes are added by hsum8.
 * A tile of rows only shares the weight loads, so an output is the same whatever rows share the
 * call. Weights are read once per call: a block of 4 output rows stays in cache while every
 * pair of token rows passes over it (where a vendor GEMM for 2-9 rows ran up to 3x its one-row
 * time). Threads split the 4-row blocks. */
static inline __attribute__((always_inline)) void f32_tile(const int NT, const int NO, const float* const* x, int K,
                                                          const float* w, float* const* y, int o0, const float* pf) {
    __m256 acc[3][4];
    for (int i = 0; i < NT; i++)
        for (int j = 0; j < NO; j++) acc[i][j] = _mm256_setzero_ps();
    for (int k = 0; k < K; k += 8) {
        if (pf && !(k & 15))  /* the next block's weights, a cache line of each row, while this one computes */
            for (int j = 0; j < 4; j++) _mm_prefetch((const char*)(pf + (size_t)j * K + k), _MM_HINT_T0);
        __m256 wv[4];
        for (int j = 0; j < NO; j++) wv[j] = _mm256_loadu_ps(w + (size_t)j * K + k);
        for (int i = 0; i < NT; i++) {
            __m256 xv = _mm256_loadu_ps(x[i] + k);
            for (int j = 0; j < NO; j++) acc[i][j] = _mm256_fmadd_ps(xv, wv[j], acc[i][j]);
        }
    }
    for (int i = 0; i < NT; i++)
        for (int j = 0; j < NO; j++) y[i][o0 + j] = hsum8(acc[i][j]);
}

#define F32_TILES(NO)                                                                                    \
    for (int t0 = 0; t0 < T; t0 += 3) {                                                                  \
        int nt = T - t0 < 3 ? T - t0 : 3;                                                                \
        const float* xr[3];                                                                              \
        float* yr[3];                                                                                    \
        for (int i = 0; i < 3; i++)                                                                      \
            xr[i] = x + (size_t)(t0 + (i < nt ? i : 0)) * K, yr[i] = y + (size_t)(t0 + (i < nt ? i : 0)) * N; \
        const float* pf = t0 == 0 && T > 1 && b + 1 < nblk ? wb + (size_t)4 * K : NULL;                  \
        if (nt == 3) f32_tile(3, NO, xr, K, wb, yr, o0, pf);                                             \
        else if (nt == 2) f32_tile(2, NO, xr, K, wb, yr, o0, pf);                                        \
        else f32_tile(1, NO, xr, K, wb, yr, o0, pf);                                                     \
    }

void hvd_linear_f32(const float* x, int T, int K, const float* w, int N, float* y) {
    int nblk = (N + 3) / 4;
#pragma omp parallel for num_threads(n_threads) schedule(static) if (nblk > 16)
    for (int b = 0; b < nblk; b++) {
        int o0 = b * 4;
        const float* wb = w + (size_t)o0 * K;
        switch (N - o0 < 4 ? N - o0 : 4) {
            case 4: F32_TILES(4) break;
            case 3: F32_TILES(3) break;
            case 2: F32_TILES(2) break;
            default: F32_TILES(1) break;
        }
    }
}

/* ---- float32 attention (HFTarget) ---------------------------------------------------------
 * Over a transformers-layout float32 cache: key j of kv head h at k + h * hstride + j * D (the
 * same for v). Query t sees keys 0..base[t]-1 and then path[off[t]] .. path[off[t+1]-1] (the
 * root and its draft ancestors, itself last): the key sequence plain decoding has at the query's
 * position, in the same order. Per query and head ("row"):
 *   score_j = (8-lane fma chain over d of q_d * k_jd, lane d mod 8, lanes added by a fixed
 *             tree: `sum8x8`) — the same for a key whoever else shares its group;
 *   then `softmax8` (scale, max, exp, 8-lane sum in key order) and o_d = fma chain over the
 *   keys in order of p_j * v_jd (`value_rows`, continued across blocks); out_d = o_d / sum.
 * So a row's bits do not depend on the other rows of the call: verifying draft tokens gives the
 * logits plain decoding gives. Tiles of up to F32_QTILE queries sharing a kv head read each key
 * group and value block once. q (T, H, D); out (T, H, D). D a multiple of 8, at most 256. */

#define F32_QTILE 8
static const float zero_f32[256];

/* Lane i: the sum of a[i]'s lanes by one fixed tree, ((l0+l1)+(l2+l3)) + ((l4+l5)+(l6+l7)). */
static inline __m256 sum8x8(const __m256 a[8]) {
    __m256 g0 = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
    __m256 g1 = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
    return _mm256_add_ps(_mm256_permute2f128_ps(g0, g1, 0x20), _mm256_permute2f128_ps(g0, g1, 0x31));
}

/* The scores of one row against 8 keys kp[0..7] (rows of D floats). */
static inline __m256 score8_f32(const float* qr, const float* const* kp, int D) {
    __m256 a[8];
    for (int i = 0; i < 8; i++) a[i] = _mm256_setzero_ps();
    for (int c = 0; c < D; c += 8) {
        __m256 qc = _mm256_loadu_ps(qr + c);
        for (int i = 0; i < 8; i++) a[i] = _mm256_fmadd_ps(qc, _mm256_loadu_ps(kp[i] + c), a[i]);
    }
    return sum8x8(a);
}

void hvd_attention_f32(const float* q, int T, int H, int KVH, int D, const float* k, const float* v, long hstride,
                       const int32_t* base, const int32_t* path, const int32_t* off, float scale, float* out) {
    int g = H / KVH, ntile = (T + F32_QTILE - 1) / F32_QTILE;
#pragma omp parallel for num_threads(n_threads) schedule(dynamic) if (ntile * KVH > 1)
    for (int task = 0; task < ntile * KVH; task++) {
        int t0 = (task / KVH) * F32_QTILE, kh = task % KVH;
        int nt = T - t0 < F32_QTILE ? T - t0 : F32_QTILE, R = nt * g, maxbase = 0, Lmax = 0;
        for (int i = 0; i < nt; i++) {
            int L = base[t0 + i] + off[t0 + i + 1] - off[t0 + i];
            maxbase = base[t0 + i] > maxbase ? base[t0 + i] : maxbase;
            Lmax = L > Lmax ? L : Lmax;
        }
        int Lp = (Lmax + 7) / 8 * 8;
        float* sc = scratch_floats((size_t)R * Lp + (size_t)R * D);
        float* o = sc + (size_t)R * Lp; /* (R, D) value sums */
        const float *kh0 = k + (size_t)kh * hstride, *vh = v + (size_t)kh * hstride;
#define FROWQ(r) (q + ((size_t)(t0 + (r) / g) * H + kh * g + (r) % g) * D)
        for (int j0 = 0; j0 < maxbase; j0 += 8) { /* keys in the bases, 8 at a time for every row */
            const float* kp[8];
            for (int i = 0; i < 8; i++) kp[i] = j0 + i < maxbase ? kh0 + (size_t)(j0 + i) * D : zero_f32;
            for (int r = 0; r < R; r++)
                if (j0 < base[t0 + r / g]) _mm256_storeu_ps(sc + (size_t)r * Lp + j0, score8_f32(FROWQ(r), kp, D));
        }
        for (int r = 0; r < R; r++) { /* the path keys, written over what the bases' groups left there */
            int t = t0 + r / g, plen = off[t + 1] - off[t];
            for (int p0 = 0; p0 < plen; p0 += 8) {
                int np = plen - p0 < 8 ? plen - p0 : 8;
                const float* kp[8];
                float lanes[8];
                for (int i = 0; i < 8; i++) kp[i] = i < np ? kh0 + (size_t)path[off[t] + p0 + i] * D : zero_f32;
                _mm256_storeu_ps(lanes, score8_f32(FROWQ(r), kp, D));
                memcpy(sc + (size_t)r * Lp + base[t] + p0, lanes, sizeof(float) * np);
            }
        }
        float total[8 * F32_QTILE];
        for (int r = 0; r < R; r++) {
            int t = t0 + r / g, L = base[t] + off[t + 1] - off[t], Lr = (L + 7) / 8 * 8;
            float* sr = sc + (size_t)r * Lp;
            for (int j = L; j < Lr; j++) sr[j] = -INFINITY;
            total[r] = softmax8(sr, 0, Lr, scale);
            memset(o + (size_t)r * D, 0, sizeof(float) * D);
        }
        /* value sums over the bases, a block of values at a time for every query's g rows (3 at
         * a time), then over the paths; value_rows continues each row's chain from o */
        for (int j0 = 0; j0 < maxbase; j0 += VBLOCK) {
            for (int i = 0; i < nt; i++) {
                int n = base[t0 + i] - j0 < VBLOCK ? base[t0 + i] - j0 : VBLOCK;
                for (int r0 = i * g; n > 0 && r0 < (i + 1) * g; r0 += 3) {
                    int nr = (i + 1) * g - r0 < 3 ? (i + 1) * g - r0 : 3;
                    float* orow[3];
                    const float* prow[3];
                    for (int m = 0; m < nr; m++) orow[m] = o + (size_t)(r0 + m) * D, prow[m] = sc + (size_t)(r0 + m) * Lp + j0;
                    value_rows(nr, 0, orow, prow, vh + (size_t)j0 * D, NULL, n, D);
                }
            }
        }
        for (int r = 0; r < R; r++) {
            int t = t0 + r / g, plen = off[t + 1] - off[t];
            float* orow = o + (size_t)r * D;
            const float* pp = sc + (size_t)r * Lp + base[t];
            if (plen) value_rows(1, 0, &orow, &pp, vh, path + off[t], plen, D);
            __m256 tv = _mm256_set1_ps(total[r]);
            float* dst = out + ((size_t)t * H + kh * g + r % g) * D;
            for (int c = 0; c < D / 8; c++) _mm256_storeu_ps(dst + c * 8, _mm256_div_ps(_mm256_loadu_ps(orow + c * 8), tv));
        }
#undef FROWQ
    }
}
