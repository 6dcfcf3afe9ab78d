/* Batch-invariant CPU kernels of the exact target (hvd/targets/exact.py), part 2: rotary
 * embedding and the float16 KV cache, attention (AVX2, and the same sums on AVX-512), and one
 * whole decoder layer built from these and part 1's ops (kernels_int8.c, whose VNNI switch
 * vnni_on and VNNI_ISA this file uses; kernels.c includes part 1 first).
 *
 * Exactness contract (kernels_int8.c's header in full): each output is one fixed sequence of
 * operations that reads only its own token's inputs and the cache, whatever else shares the call
 * (rows, tiles, threads, the AVX-512 path), so a token's logits are bitwise the same decoded
 * alone, in a chain, in a tree or in a prefill chunk. Here: an attention score is one fma chain
 * over the head dimension from 0; a row's softmax and value sums run over the keys plain decoding
 * has at its position, in that order (softmax8 / value_rows, kernels_common.h); the AVX-512 tiles
 * compute the same per-lane chains 16 lanes wide.
 */
#include "kernels_common.h"

/* ---- rotary embedding and the KV cache --------------------------------------------------
 * Cache of one layer, float16 (converted exactly to float32 when read): k (kv_heads, cap/8, D, 8)
 * — keys in groups of 8 slots, transposed so 8 keys' scores come out of one fma chain over d —
 * and v (kv_heads, cap, D). */

static inline half* kslot(half* kc, int cap, int D, int h, int slot, int d) {
    return kc + (((size_t)h * (cap / 8) + slot / 8) * D + d) * 8 + slot % 8;
}

static inline half to_half(float v) { return (half)_cvtss_sh(v, _MM_FROUND_TO_NEAREST_INT); }

/* qkv (T, (H + 2 KVH) D) -> q (T, H, D) rotated; rotated k and v stored at slot[t].
 * First, where given: + bias (per column), then an RMS norm per head of q (weights qn) and of k
 * (weights kn), eps. cos/sin (positions, D), half-split convention:
 * rot(x)_i = -x_{i+D/2} (i < D/2), x_{i-D/2}. D at most 256. */
void hvd_rope_store(float* qkv, int T, int H, int KVH, int D, const float* bias, const float* qn, const float* kn,
                    float eps, const int32_t* pos, const float* cos, const float* sin, const int32_t* slot, float* q,
                    half* kc, half* vc, int cap) {
    int W = (H + 2 * KVH) * D, half_d = D / 2;
    for (int t = 0; t < T; t++) {
        float* row = qkv + (size_t)t * W;
        if (bias)
            for (int j = 0; j < W; j++) row[j] += bias[j];
        const float* c = cos + (size_t)pos[t] * D;
        const float* s = sin + (size_t)pos[t] * D;
        for (int h = 0; h < H + KVH; h++) {
            float* x = row + h * D;
            if (qn) {
                const float* w = h < H ? qn : kn;
                float r = 1.0f / sqrtf(sumsq(x, D) / (float)D + eps);
                for (int i = 0; i < D; i++) x[i] = w[i] * (x[i] * r);
            }
            for (int i = 0; i < D; i++) {
                float rot = i < half_d ? -x[i + half_d] : x[i - half_d];
                float v = x[i] * c[i] + rot * s[i];
                if (h < H)
                    q[((size_t)t * H + h) * D + i] = v;
                else
                    *kslot(kc, cap, D, h - H, slot[t], i) = to_half(v);
            }
        }
        for (int h = 0; h < KVH; h++) {
            half* vr = vc + ((size_t)h * cap + slot[t]) * D;
            const float* x = row + (H + KVH + h) * D;
            for (int i = 0; i < D; i++) vr[i] = to_half(x[i]);
        }
    }
}

/* Move cache slots src[i] -> dst[i] (i ascending, dst[i] <= src[i]) in every layer. */
void hvd_move_slots(half* k, half* v, int layers, int KVH, int D, int cap, const int32_t* src, const int32_t* dst,
                    int n) {
    for (int l = 0; l < layers; l++)
        for (int h = 0; h < KVH; h++) {
            half* kc = k + (size_t)l * KVH * cap * D;
            half* vc = v + (size_t)l * KVH * cap * D;
            for (int i = 0; i < n; i++) {
                if (src[i] == dst[i]) continue;
                for (int d = 0; d < D; d++) *kslot(kc, cap, D, h, dst[i], d) = *kslot(kc, cap, D, h, src[i], d);
                memcpy(vc + ((size_t)h * cap + dst[i]) * D, vc + ((size_t)h * cap + src[i]) * D, sizeof(half) * D);
            }
        }
}

/* ---- attention ----------------------------------------------------------------------------
 * Query t sees key positions 0..base[t]-1 (held in cache slots 0..base[t]-1) and then the rest
 * of its path from the root: slots path[off[t]] .. path[off[t+1]-1], which hold key positions
 * base[t], base[t]+1, ... That is the key sequence plain decoding has at the query's position,
 * in the same order. Per query and head ("row"), in that order:
 *   score_j = (fma chain over d = 0..D-1 of q_d * k_jd, from 0) * scale   — a key read from a
 *             group of 8 or alone gives the same chain;
 *   m = max_j score_j;  p_j = exp(score_j - m);  sum = 8-lane sum over j (lane j mod 8), hsum8;
 *   o_d = fma chain over j of p_j * v_jd;  out_d = o_d / sum.
 * With a window w > 0, query t sees only key positions above pos[t] - w: the scores of the
 * others are -inf before the max, so their weights are exactly 0 and adding them changes no sum
 * (blocks wholly outside every row's window are skipped: the same numbers, less work).
 * Tiles of queries sharing a kv head read each key and value block once for all their rows
 * (the rows' own sequences of operations do not change). q (T, H, D) rotated; out (T, H*D).
 * D a multiple of 8, at most 256; H / KVH at most 8. */

#define QTILE 4

/* Scores of NR <= 3 rows (query heads) against 4 groups of 8 keys, each group (D, 8) — float16
 * straight from the cache (HALF) or float staged: for each row and key, the fma chain over
 * d = 0..D-1 from 0 (lanes are keys; the rows share each key load, the groups each query load). */
static inline __attribute__((always_inline)) void score_tile(const int NR, const int NG, const int HALF,
                                                             const float* const* qr, const void* const* kg, int D,
                                                             __m256 out[3][4]) {
    __m256 acc[3][4];
    for (int i = 0; i < NR; i++)
        for (int g = 0; g < NG; g++) acc[i][g] = _mm256_setzero_ps();
    for (int d = 0; d < D; d++) {
        if (HALF) _mm_prefetch((const char*)kg[0] + (size_t)64 * (D + d), _MM_HINT_T0);  /* the next 4 groups */
        __m256 qd[3];
        for (int i = 0; i < NR; i++) qd[i] = _mm256_broadcast_ss(qr[i] + d);
        for (int g = 0; g < NG; g++) {
            __m256 kv = HALF ? load_half8((const half*)kg[g] + d * 8) : _mm256_load_ps((const float*)kg[g] + d * 8);
            for (int i = 0; i < NR; i++) acc[i][g] = _mm256_fmadd_ps(qd[i], kv, acc[i][g]);
        }
    }
    for (int i = 0; i < NR; i++)
        for (int g = 0; g < NG; g++) out[i][g] = acc[i][g];
}

/* score_tile for NG = 4 groups (or 1, ONE) and NR rows. */
static void score_rows(int NR, int ONE, int HALF, const float* const* qr, const void* const* kg, int D,
                       __m256 out[3][4]) {
#define ST(NR) (ONE ? score_tile(NR, 1, 0, qr, kg, D, out) : HALF ? score_tile(NR, 4, 1, qr, kg, D, out) \
                                                                : score_tile(NR, 4, 0, qr, kg, D, out))
    if (NR == 3) ST(3);
    else if (NR == 2) ST(2);
    else ST(1);
#undef ST
}

/* ---- the same attention sums on AVX-512 (with the VNNI path, vnni_on) ---------------------
 * The score and value tiles run 16 lanes wide, straight from the float16 cache (converting is
 * cheap here: staging float copies measured 20-30% slower): each lane is the same fma chain as
 * in the 8-lane tiles above (scores: over d from 0 for one key; value sums: over keys in order
 * for one dim), so every bit is the same. */
#define WIDE_ROWS 6

/* Scores of NR <= WIDE_ROWS rows against 4 groups of 8 keys kg[h], (D, 8) float16 each, 16 keys
 * (2 groups) a vector; row i's 16-key halves are stored under masks m0[i], m1[i] (keys inside
 * its base) at dst[i]. */
VNNI_ISA static inline __attribute__((always_inline)) void score_wide_tile(const int NR, const float* const* qr,
                                                                          const half* const* kg, int D,
                                                                          float* const* dst, const __mmask16* m0,
                                                                          const __mmask16* m1) {
#define KEYS16(h) _mm512_cvtph_ps(_mm256_inserti128_si256(                                              \
        _mm256_castsi128_si256(_mm_loadu_si128((const __m128i*)(kg[h] + d * 8))),                         \
        _mm_loadu_si128((const __m128i*)(kg[(h) + 1] + d * 8)), 1))
    __m512 a0[WIDE_ROWS], a1[WIDE_ROWS];
    for (int i = 0; i < NR; i++) a0[i] = a1[i] = _mm512_setzero_ps();
    for (int d = 0; d < D; d++) {
        _mm_prefetch((const char*)kg[0] + (size_t)64 * (D + d), _MM_HINT_T0);  /* the next 4 groups */
        __m512 k0 = KEYS16(0), k1 = KEYS16(2);
        for (int i = 0; i < NR; i++) {
            __m512 qd = _mm512_set1_ps(qr[i][d]);
            a0[i] = _mm512_fmadd_ps(qd, k0, a0[i]);
            a1[i] = _mm512_fmadd_ps(qd, k1, a1[i]);
        }
    }
#undef KEYS16
    for (int i = 0; i < NR; i++) {
        _mm512_mask_storeu_ps(dst[i], m0[i], a0[i]);
        _mm512_mask_storeu_ps(dst[i] + 16, m1[i], a1[i]);
    }
}

VNNI_ISA static void score_wide(int NR, const float* const* qr, const half* const* kg, int D, float* const* dst,
                                const __mmask16* m0, const __mmask16* m1) {
    switch (NR) {
        case 1: score_wide_tile(1, qr, kg, D, dst, m0, m1); break;
        case 2: score_wide_tile(2, qr, kg, D, dst, m0, m1); break;
        case 3: score_wide_tile(3, qr, kg, D, dst, m0, m1); break;
        case 4: score_wide_tile(4, qr, kg, D, dst, m0, m1); break;
        case 5: score_wide_tile(5, qr, kg, D, dst, m0, m1); break;
        default: score_wide_tile(6, qr, kg, D, dst, m0, m1); break;
    }
}

/* value_tile for float16 values (rows of D), 16 dims a vector: NR <= 3 rows, NC <= 4 chunks of
 * 16 dims from c0. */
VNNI_ISA static inline __attribute__((always_inline)) void value_wide_tile(const int NR, const int NC, float* const* o,
                                                                          const float* const* p, const half* v,
                                                                          int n, int D, int c0) {
    __m512 acc[3][4];
    for (int i = 0; i < NR; i++)
        for (int c = 0; c < NC; c++) acc[i][c] = _mm512_loadu_ps(o[i] + (c0 + c) * 16);
    for (int j = 0; j < n; j++) {
        const half* row = v + (size_t)j * D + c0 * 16;
        _mm_prefetch((const char*)(row + 16 * D), _MM_HINT_T0);
        __m512 pj[3];
        for (int i = 0; i < NR; i++) pj[i] = _mm512_set1_ps(p[i][j]);
        for (int c = 0; c < NC; c++) {
            __m512 vv = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(row + c * 16)));
            for (int i = 0; i < NR; i++) acc[i][c] = _mm512_fmadd_ps(pj[i], vv, acc[i][c]);
        }
    }
    for (int i = 0; i < NR; i++)
        for (int c = 0; c < NC; c++) _mm512_storeu_ps(o[i] + (c0 + c) * 16, acc[i][c]);
}

#define VW(NR, NC) value_wide_tile(NR, NC, o, p, v, n, D, c0)
#define VW_NC(NR) \
    switch (nc) { case 4: VW(NR, 4); break; case 3: VW(NR, 3); break; case 2: VW(NR, 2); break; default: VW(NR, 1); }

/* value_rows for float16 values, 16 dims a vector, D a multiple of 16. */
VNNI_ISA static void value_wide(int NR, float* const* o, const float* const* p, const half* v, int n, int D) {
    for (int c0 = 0; c0 < D / 16; c0 += 4) {
        int nc = D / 16 - c0 < 4 ? D / 16 - c0 : 4;
        if (NR == 3) { VW_NC(3) } else if (NR == 2) { VW_NC(2) } else { VW_NC(1) }
    }
}
#undef VW_NC
#undef VW

/* value_rows over keys from..to-1 of a block: v its first row, `row` bytes a row, p[i] row i's
 * weights for the block. */
static void value_span(int NR, int HALF, float* const* o, const float* const* p, const char* v, size_t row, int from,
                       int to, int D) {
    const float* pp[3];
    for (int i = 0; i < NR; i++) pp[i] = p[i] + from;
    if (HALF && vnni_on && D % 16 == 0)
        value_wide(NR, o, pp, (const half*)(v + (size_t)from * row), to - from, D);
    else
        value_rows(NR, HALF, o, pp, v + (size_t)from * row, NULL, to - from, D);
}

/* exp8, 16 lanes: the same operations in every lane (the same rounding to an integer n). */
VNNI_ISA static inline __m512 exp16(__m512 x) {
    const __m512 lo = _mm512_set1_ps(-87.0f);
    __mmask16 under = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ);
    x = _mm512_max_ps(x, lo);
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(EXP_LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 y;
    EXP_CORE(_mm512, 512, __m512, x, n, y);
    return _mm512_maskz_mov_ps((__mmask16)~under, y);
}

/* softmax8, 16 keys a step: the same products, the same max (max is exact in any order), the
 * same exp per key, and the same 8-lane sum in key order (each 16 keys' halves added in turn). */
VNNI_ISA static float softmax_wide(float* sr, int from, int to, float scale) {
    __m512 sv = _mm512_set1_ps(scale), mx = _mm512_set1_ps(-INFINITY);
    int j = from;
    for (; j + 16 <= to; j += 16) {
        __m512 v = _mm512_mul_ps(_mm512_loadu_ps(sr + j), sv);
        _mm512_storeu_ps(sr + j, v);
        mx = _mm512_max_ps(mx, v);
    }
    float m = _mm512_reduce_max_ps(mx);
    if (j < to) {
        __m256 v = _mm256_mul_ps(_mm256_loadu_ps(sr + j), _mm256_set1_ps(scale));
        _mm256_storeu_ps(sr + j, v);
        float t = hmax8(v);
        m = t > m ? t : m;
    }
    __m512 mv = _mm512_set1_ps(m);
    __m256 sum = _mm256_setzero_ps();
    for (j = from; j + 16 <= to; j += 16) {
        __m512 p = exp16(_mm512_sub_ps(_mm512_loadu_ps(sr + j), mv));
        _mm512_storeu_ps(sr + j, p);
        sum = _mm256_add_ps(sum, _mm512_castps512_ps256(p));
        sum = _mm256_add_ps(sum, _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(p), 1)));
    }
    if (j < to) {
        __m256 p = exp8(_mm256_sub_ps(_mm256_loadu_ps(sr + j), _mm256_set1_ps(m)));
        _mm256_storeu_ps(sr + j, p);
        sum = _mm256_add_ps(sum, p);
    }
    return hsum8(sum);
}

static const half zero_keys[256 * 8];  /* a group of absent keys (D at most 256) */

/* One task of the attention: query rows t0 .. t0+QTILE-1 (fewer at the end) of kv head kh. */
static void attention_task(const float* q, int T, int H, int KVH, int D, const half* kc, const half* vc, int cap,
                           const int32_t* base, const int32_t* path, const int32_t* off, const int32_t* pos,
                           int window, float scale, float* out, int t0, int kh) {
    int g = H / KVH;
#define LO(t) (window > 0 && pos[t] - window + 1 > 0 ? pos[t] - window + 1 : 0)
    {
        int nt = T - t0 < QTILE ? T - t0 : QTILE, R = nt * g;
        int maxbase = 0, Lmax = 0, minlo = 1 << 30;
        for (int i = 0; i < nt; i++) {
            int L = base[t0 + i] + off[t0 + i + 1] - off[t0 + i];
            maxbase = base[t0 + i] > maxbase ? base[t0 + i] : maxbase;
            Lmax = L > Lmax ? L : Lmax;
            minlo = LO(t0 + i) < minlo ? LO(t0 + i) : minlo;
        }
        /* on AVX2 up to 3 rows read keys and values as float16 from the cache, more share a float
         * copy; on AVX-512 (wide) every row reads float16 */
        int wide = vnni_on, stage = !wide && R > 3;
        int Lp = (Lmax + 7) / 8 * 8;
        float* sc = scratch_floats((size_t)R * Lp + (size_t)R * D + 32 * D + VBLOCK * D);
        float* o = sc + (size_t)R * Lp;   /* (R, D) value sums */
        float* kb = o + (size_t)R * D;     /* 4 groups of keys (D, 8) in float */
        float* vb = kb + 32 * D;           /* (VBLOCK, D) one value block in float */
        const half* kh_base = kc + (size_t)kh * (cap / 8) * D * 8;
        const half* vh = vc + (size_t)kh * cap * D;
#define ROWQ(r) (q + ((size_t)(t0 + (r) / g) * H + kh * g + (r) % g) * D)
#define ROWBASE(r) (base[t0 + (r) / g])
        /* scores of keys in the rows' bases: 4 groups of 8 keys at a time, 3 rows at a time (wide:
         * 16 keys a vector, WIDE_ROWS rows at a time) */
        for (int j0 = minlo / 32 * 32; j0 < maxbase; j0 += 32) {
            const void* kg[4];
            for (int h = 0; h < 4; h++) {
                const half* src = j0 + 8 * h < maxbase ? kh_base + (size_t)(j0 / 8 + h) * D * 8 : zero_keys;
                if (stage) {
                    float* dst = kb + (size_t)h * D * 8;
                    for (int d = 0; d < D; d++) {
                        _mm_prefetch((const char*)(src + d * 8) + 64 * D, _MM_HINT_T0);  /* the next 4 groups */
                        _mm256_store_ps(dst + d * 8, load_half8(src + d * 8));
                    }
                    kg[h] = dst;
                } else {
                    kg[h] = src;
                }
            }
            for (int r0 = 0; wide && r0 < R; r0 += WIDE_ROWS) {
                int nr = R - r0 < WIDE_ROWS ? R - r0 : WIDE_ROWS;
                const float* qr[WIDE_ROWS];
                float* dst[WIDE_ROWS];
                __mmask16 m0[WIDE_ROWS], m1[WIDE_ROWS];
                for (int i = 0; i < nr; i++) {
                    int nb = ROWBASE(r0 + i) - j0, ng = nb <= 0 ? 0 : nb >= 32 ? 4 : (nb + 7) / 8;  /* groups inside */
                    qr[i] = ROWQ(r0 + i), dst[i] = sc + (size_t)(r0 + i) * Lp + j0;
                    m0[i] = (__mmask16)(ng >= 2 ? 0xFFFF : ng == 1 ? 0x00FF : 0);
                    m1[i] = (__mmask16)(ng >= 4 ? 0xFFFF : ng == 3 ? 0x00FF : 0);
                }
                score_wide(nr, qr, (const half* const*)kg, D, dst, m0, m1);
            }
            for (int r0 = 0; !wide && r0 < R; r0 += 3) {
                int nr = R - r0 < 3 ? R - r0 : 3;
                const float* qr[3];
                for (int i = 0; i < nr; i++) qr[i] = ROWQ(r0 + i);
                __m256 sv[3][4];
                score_rows(nr, 0, !stage, qr, kg, D, sv);
                for (int i = 0; i < nr; i++)
                    for (int h = 0; h < 4; h++)
                        if (j0 + 8 * h < ROWBASE(r0 + i)) _mm256_storeu_ps(sc + (size_t)(r0 + i) * Lp + j0 + 8 * h, sv[i][h]);
            }
        }
        /* scores of the path keys: the same fma chain, 8 path keys in the lanes (gathered into kb
         * as (D, 8)), the query's g heads 3 at a time */
        for (int i = 0; i < nt; i++) {
            int t = t0 + i, b = base[t], plen = off[t + 1] - off[t];
            for (int p0 = 0; p0 < plen; p0 += 8) {
                int np = plen - p0 < 8 ? plen - p0 : 8;
                for (int d = 0; d < D; d++)
                    for (int l = 0; l < 8; l++)
                        kb[d * 8 + l] = l < np ? _cvtsh_ss(*kslot((half*)kc, cap, D, kh, path[off[t] + p0 + l], d)) : 0.0f;
                const void* kg[1] = {kb};
                for (int r = i * g; r < (i + 1) * g; r += 3) {
                    int nr = (i + 1) * g - r < 3 ? (i + 1) * g - r : 3;
                    const float* qr[3];
                    for (int k = 0; k < nr; k++) qr[k] = ROWQ(r + k);
                    __m256 sv[3][4];
                    score_rows(nr, 1, 0, qr, kg, D, sv);
                    for (int k = 0; k < nr; k++) {
                        float lanes[8];
                        _mm256_storeu_ps(lanes, sv[k][0]);
                        memcpy(sc + (size_t)(r + k) * Lp + b + p0, lanes, sizeof(float) * np);
                    }
                }
            }
        }
        /* the softmax weights */
        float total[8 * QTILE];
        int lo8[8 * QTILE];
        for (int r = 0; r < R; r++) {
            int t = t0 + r / g, L = base[t] + off[t + 1] - off[t], Lr = (L + 7) / 8 * 8;
            float* sr = sc + (size_t)r * Lp;
            int lo = LO(t);
            lo8[r] = lo / 8 * 8;
            for (int j = lo8[r]; j < lo; j++) sr[j] = -INFINITY;
            for (int j = L; j < Lr; j++) sr[j] = -INFINITY;
            total[r] = (vnni_on ? softmax_wide : softmax8)(sr, lo8[r], Lr, scale);
            memset(o + (size_t)r * D, 0, sizeof(float) * D);
        }
        /* value sums over the bases: row r sums keys lo8[r] .. base - 1 in order; one block of
         * values at a time, 3 rows at a time over the keys they share, alone over the rest */
        for (int j0 = minlo / VBLOCK * VBLOCK; j0 < maxbase; j0 += VBLOCK) {
            int jn = maxbase - j0 < VBLOCK ? maxbase - j0 : VBLOCK;
            const char* v = (const char*)(vh + (size_t)j0 * D);
            size_t row = (size_t)D * (stage ? sizeof(float) : sizeof(half));
            if (stage) {
                for (int j = 0; j < jn; j++)
                    for (int c = 0; c < D / 8; c++) {
                        const half* src = vh + (size_t)(j0 + j) * D + c * 8;
                        _mm_prefetch((const char*)(src + VBLOCK * D), _MM_HINT_T0);  /* the next block */
                        _mm256_store_ps(vb + j * D + c * 8, load_half8(src));
                    }
                v = (const char*)vb;
            }
            for (int r0 = 0; r0 < R; r0 += 3) {
                int nr = R - r0 < 3 ? R - r0 : 3, s[3], e[3], S = 0, E = jn, n = 0;
                float* orow[3];
                const float* prow[3];
                for (int i = 0; i < nr; i++) {
                    int r = r0 + i;
                    s[n] = lo8[r] - j0 > 0 ? lo8[r] - j0 : 0;
                    e[n] = ROWBASE(r) - j0 < jn ? ROWBASE(r) - j0 : jn;
                    if (e[n] <= s[n]) continue;
                    orow[n] = o + (size_t)r * D, prow[n] = sc + (size_t)r * Lp + j0;
                    S = s[n] > S ? s[n] : S, E = e[n] < E ? e[n] : E;
                    n++;
                }
                if (n == 0) continue;
                if (S >= E) E = S;  /* no keys shared by all: each row alone below */
                for (int i = 0; i < n; i++) {  /* each row's keys before the shared ones */
                    int end = e[i] < S ? e[i] : S;
                    if (end > s[i]) value_span(1, !stage, &orow[i], &prow[i], v, row, s[i], end, D);
                }
                if (E > S) value_span(n, !stage, orow, prow, v, row, S, E, D);
                for (int i = 0; i < n; i++) {  /* and after them */
                    int start = s[i] > E ? s[i] : E;
                    if (e[i] > start) value_span(1, !stage, &orow[i], &prow[i], v, row, start, e[i], D);
                }
            }
        }
        /* value sums over the path keys, then the division */
        for (int r = 0; r < R; r++) {
            int t = t0 + r / g, b = base[t], plen = off[t + 1] - off[t];
            float* orow = o + (size_t)r * D;
            const float* pp = sc + (size_t)r * Lp + b;
            value_rows(1, 1, &orow, &pp, vh, path + off[t], plen, D);
            __m256 tv = _mm256_set1_ps(total[r]);
            float* dst = out + ((size_t)t * H + kh * g + r % g) * D;
            for (int c = 0; c < D / 8; c++) _mm256_storeu_ps(dst + c * 8, _mm256_div_ps(_mm256_loadu_ps(orow + c * 8), tv));
        }
#undef ROWQ
#undef ROWBASE
#undef LO
    }
}

void hvd_attention(const float* q, int T, int H, int KVH, int D, const half* kc, const half* vc, int cap,
                   const int32_t* base, const int32_t* path, const int32_t* off, const int32_t* pos, int window,
                   float scale, float* out) {
    int ntile = (T + QTILE - 1) / QTILE;
#pragma omp parallel for num_threads(n_threads) schedule(dynamic) if (ntile * KVH > 1)
    for (int task = 0; task < ntile * KVH; task++)
        attention_task(q, T, H, KVH, D, kc, vc, cap, base, path, off, pos, window, scale, out, (task / KVH) * QTILE,
                       task % KVH);
}

/* The attention of several sequences' rows, each over its own cache (hvd_layer_batch's
 * arguments), as one set of tasks in one parallel region: every task is hvd_attention's. */
static void attention_batch(const float* q, int H, int KVH, int D, int nseq, const int32_t* rows, half* const* kcs,
                            half* const* vcs, const int32_t* caps, const int32_t* base, const int32_t* path,
                            const int32_t* off, const int32_t* pos, int window, float scale, float* out) {
    int total = 0;
    for (int s = 0; s < nseq; s++) total += (rows[s + 1] - rows[s] + QTILE - 1) / QTILE * KVH;
#pragma omp parallel for num_threads(n_threads) schedule(dynamic) if (total > 1)
    for (int task = 0; task < total; task++) {
        int s = 0, first = 0;  /* the task's sequence, and the number of tasks before it */
        for (;; s++) {
            int n = (rows[s + 1] - rows[s] + QTILE - 1) / QTILE * KVH;
            if (task < first + n) break;
            first += n;
        }
        int r0 = rows[s], local = task - first;
        attention_task(q + (size_t)r0 * H * D, rows[s + 1] - r0, H, KVH, D, kcs[s], vcs[s], caps[s], base + r0, path,
                       off + r0, pos + r0, window, scale, out + (size_t)r0 * H * D, (local / KVH) * QTILE, local % KVH);
    }
}

/* ---- one decoder layer --------------------------------------------------------------------
 * x (T, hid) += attention(rms_norm(x)); x += mlp(rms_norm(x)), with the ops above and kernels_int8.c's, in one call.
 * With sandwich norms (Gemma): x += rms_norm(attention(...)); x += rms_norm(mlp(...)).
 * The layer's weights and switches come in one struct (family.py / exact.py build it).
 * scratch: hvd_layer_scratch(...) bytes, 32-byte aligned. */

typedef struct {
    int hid, H, KVH, D, inter, act, window, group;
    float eps, scale;
    const float *ln_attn, *ln_mlp, *post_attn, *post_mlp, *q_norm, *k_norm, *qkv_bias; /* the last 5 may be NULL */
    const int8_t *wqkv, *wo, *wgu, *wd;
    const float *sqkv, *so, *sgu, *sd;
} hvd_layer_spec;

static size_t up32(size_t n) { return (n + 31) / 32 * 32; }

static int widest_of(int hid, int H, int D, int inter) {
    int widest = hid > inter ? hid : inter;
    return widest > H * D ? widest : H * D;
}

size_t hvd_layer_scratch(int T, int hid, int H, int KVH, int D, int inter) {
    return up32((size_t)T * widest_of(hid, H, D, inter) * 2) + up32((size_t)T * 4) +
           up32((size_t)T * (H + 2 * KVH) * D * 4) + up32((size_t)T * H * D * 4) * 2 +
           up32((size_t)T * 2 * inter * 4) + up32((size_t)T * hid * 4);
}

/* x += rms_norm(y) * w per row, each element one add. */
static void add_normed(float* x, const float* y, int T, int K, const float* w, float eps) {
    for (int t = 0; t < T; t++) {
        const float* yr = y + (size_t)t * K;
        float* xr = x + (size_t)t * K;
        float r = 1.0f / sqrtf(sumsq(yr, K) / (float)K + eps);
        for (int k = 0; k < K; k++) xr[k] += w[k] * (yr[k] * r);
    }
}

/* One layer over the rows of `nseq` sequences, each with a KV cache of its own: sequence s owns
 * rows rows[s] .. rows[s+1]-1 (in order), its layer cache is kcs[s], vcs[s] with caps[s] slots,
 * and `slots`, `base`, `path` and `off` index that cache for its rows. The linears, norms and
 * activations run over all T rows together; rotary storing and attention run per sequence over
 * its own cache. Every op is batch-invariant, so each row's outputs are bitwise those of its
 * sequence run alone. */
void hvd_layer_batch(const hvd_layer_spec* L, float* x, int T, const int32_t* pos, const float* cos,
                     const float* sin, const int32_t* slots, int nseq, const int32_t* rows, half* const* kcs,
                     half* const* vcs, const int32_t* caps, const int32_t* base, const int32_t* path,
                     const int32_t* off, char* scratch) {
    int hid = L->hid, H = L->H, KVH = L->KVH, D = L->D, inter = L->inter;
    int16_t* xq = (int16_t*)scratch;
    float* xs = (float*)(scratch + up32((size_t)T * widest_of(hid, H, D, inter) * 2));
    float* qkv = (float*)((char*)xs + up32((size_t)T * 4));
    float* q = (float*)((char*)qkv + up32((size_t)T * (H + 2 * KVH) * D * 4));
    float* att = (float*)((char*)q + up32((size_t)T * H * D * 4));
    float* gu = (float*)((char*)att + up32((size_t)T * H * D * 4));
    float* tmp = (float*)((char*)gu + up32((size_t)T * 2 * inter * 4));
    int nqkv = (H + 2 * KVH) * D;
    hvd_rmsnorm_quant(x, T, hid, L->ln_attn, L->eps, NULL, xq, xs);
    hvd_linear(xq, xs, T, hid, L->wqkv, L->sqkv, nqkv, qkv, 0, L->group);
    for (int s = 0; s < nseq; s++) {
        int r0 = rows[s], n = rows[s + 1] - rows[s];
        if (n <= 0) continue;
        hvd_rope_store(qkv + (size_t)r0 * nqkv, n, H, KVH, D, L->qkv_bias, L->q_norm, L->k_norm, L->eps, pos + r0,
                       cos, sin, slots + r0, q + (size_t)r0 * H * D, kcs[s], vcs[s], caps[s]);
    }
    attention_batch(q, H, KVH, D, nseq, rows, kcs, vcs, caps, base, path, off, pos, L->window, L->scale, att);
    hvd_quantize(att, T, H * D, xq, xs);
    if (L->post_attn) {
        hvd_linear(xq, xs, T, H * D, L->wo, L->so, hid, tmp, 0, L->group);
        add_normed(x, tmp, T, hid, L->post_attn, L->eps);
    } else {
        hvd_linear(xq, xs, T, H * D, L->wo, L->so, hid, x, 1, L->group);
    }
    hvd_rmsnorm_quant(x, T, hid, L->ln_mlp, L->eps, NULL, xq, xs);
    hvd_linear(xq, xs, T, hid, L->wgu, L->sgu, 2 * inter, gu, 0, L->group);
    hvd_act_mul_quant(gu, T, inter, L->act, xq, xs);
    if (L->post_mlp) {
        hvd_linear(xq, xs, T, inter, L->wd, L->sd, hid, tmp, 0, L->group);
        add_normed(x, tmp, T, hid, L->post_mlp, L->eps);
    } else {
        hvd_linear(xq, xs, T, inter, L->wd, L->sd, hid, x, 1, L->group);
    }
}

/* One sequence's rows: hvd_layer_batch with one cache. */
void hvd_layer(const hvd_layer_spec* L, float* x, int T, const int32_t* pos, const float* cos, const float* sin,
               const int32_t* slots, half* kc, half* vc, int cap, const int32_t* base, const int32_t* path,
               const int32_t* off, char* scratch) {
    int32_t rows[2] = {0, T};
    hvd_layer_batch(L, x, T, pos, cos, sin, slots, 1, rows, &kc, &vc, &cap, base, path, off, scratch);
}
