/* Batch-invariant CPU kernels of the exact target (hvd/targets/exact.py).
 *
 * The rule every function here keeps: each output element is computed by one fixed sequence
 * of operations that reads only its own token's inputs (and the weights / the cache), the same
 * sequence whatever else shares the call — how many rows, which rows, which thread. So a token's
 * logits are bitwise the same decoded alone, in a chain, in a tree or in a prefill chunk.
 *
 * - Products of weights and activations are integer: int8 weights (one scale per output
 *   channel) times int8-valued activations (one scale per token) summed in int32 — exact, so
 *   the summation order (tiles, SIMD lanes, threads) cannot change a bit. The float result is
 *   ((float)sum * token_scale) * channel_scale.
 * - Float reductions (RMS norm, attention scores, softmax sums, value sums) are written out in
 *   one order per token: lane l of an 8-lane accumulator takes elements l, l+8, ... in turn and
 *   the lanes are added in one fixed tree; an attention score is one fused multiply-add chain
 *   over the head dimension; a value sum runs over keys in sequence order.
 * - exp is our own (below), so it is the same function in every lane and on every libm.
 * Built with -ffp-contract=off: the compiler fuses nothing we did not write as an fma.
 * Needs AVX2 + FMA + F16C (any x86-64 CPU since 2013); the integer results, and so every bit, do not
 * depend on anything newer.
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

static int n_threads = 1;

void hvd_set_threads(int n) { n_threads = n > 0 ? n : 1; }

/* ---- helpers ------------------------------------------------------------------------- */

static inline float hsum8(__m256 v) { /* fixed tree: (l0+l4)+(l2+l6) + (l1+l5)+(l3+l7) */
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    __m128 s = _mm_add_ps(lo, hi);                 /* l0+l4, l1+l5, l2+l6, l3+l7 */
    __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s)); /* (l0+l4)+(l2+l6), (l1+l5)+(l3+l7) */
    return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

static inline int32_t hsum8i(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}

/* exp(x) for x <= 0 (softmax after subtracting the max): 2^n * p(r), r = x - n ln2 in
 * [-ln2/2, ln2/2], p a degree-6 Taylor polynomial (rel. error < 2e-7); below -87 it is 0. */
static inline __m256 exp8(__m256 x) {
    const __m256 lo = _mm256_set1_ps(-87.0f);
    __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_max_ps(x, lo);
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.0f / 720);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    __m256 y = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
    return _mm256_andnot_ps(under, y);
}

/* 8-lane sum of squares of x[0..K) (K a multiple of 8), lanes added by hsum8. */
static inline float sumsq(const float* x, int K) {
    __m256 acc = _mm256_setzero_ps();
    for (int k = 0; k < K; k += 8) {
        __m256 v = _mm256_loadu_ps(x + k);
        acc = _mm256_add_ps(acc, _mm256_mul_ps(v, v));
    }
    return hsum8(acc);
}

/* int8-valued activations (stored as int16) and their scale: q = round(x / s), s = amax / 127. */
static inline void quant_row(const float* x, int K, int16_t* q, float* s) {
    float amax = 0.0f;
    for (int k = 0; k < K; k++) {
        float a = fabsf(x[k]);
        amax = a > amax ? a : amax;
    }
    float scale = amax / 127.0f;
    float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    for (int k = 0; k < K; k++) {
        float v = nearbyintf(x[k] * inv);
        q[k] = (int16_t)(v > 127.0f ? 127.0f : (v < -127.0f ? -127.0f : v));
    }
    *s = scale;
}

/* ---- row-wise ops ---------------------------------------------------------------------- */

/* q, s = quantize(x) per row. */
void hvd_quantize(const float* x, int T, int K, int16_t* q, float* s) {
#pragma omp parallel for num_threads(n_threads) if (T > 1)
    for (int t = 0; t < T; t++) quant_row(x + (size_t)t * K, K, q + (size_t)t * K, s + t);
}

/* y = rms_norm(x) * w per row (y may be NULL), then q, s = quantize(y). */
void hvd_rmsnorm_quant(const float* x, int T, int K, const float* w, float eps, float* y, int16_t* q,
                       float* s) {
#pragma omp parallel for num_threads(n_threads) if (T > 1)
    for (int t = 0; t < T; t++) {
        const float* xr = x + (size_t)t * K;
        float buf[K];
        float* yr = y ? y + (size_t)t * K : buf;
        float r = 1.0f / sqrtf(sumsq(xr, K) / (float)K + eps);
        for (int k = 0; k < K; k++) yr[k] = w[k] * (xr[k] * r);
        quant_row(yr, K, q + (size_t)t * K, s + t);
    }
}

/* rms_norm(x) * w per row into y (the final norm, before the float head). */
void hvd_rmsnorm(const float* x, int T, int K, const float* w, float eps, float* y) {
    for (int t = 0; t < T; t++) {
        const float* xr = x + (size_t)t * K;
        float r = 1.0f / sqrtf(sumsq(xr, K) / (float)K + eps);
        for (int k = 0; k < K; k++) y[(size_t)t * K + k] = w[k] * (xr[k] * r);
    }
}

/* sigmoid(g) per lane, from exp8 of -|g| (its argument stays <= 0). */
static inline __m256 sigmoid8(__m256 gv) {
    __m256 neg = _mm256_cmp_ps(gv, _mm256_setzero_ps(), _CMP_LT_OQ);
    __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), _mm256_andnot_ps(_mm256_set1_ps(-0.0f), gv)));
    /* g >= 0: sigmoid = 1 / (1 + e); g < 0: sigmoid = e / (1 + e), e = exp(-|g|) */
    __m256 den = _mm256_add_ps(_mm256_set1_ps(1.0f), e);
    return _mm256_div_ps(_mm256_blendv_ps(_mm256_set1_ps(1.0f), e, neg), den);
}

/* gelu(g), tanh approximation: 0.5 g (1 + tanh(u)), u = sqrt(2/pi) (g + 0.044715 g^3);
 * 1 + tanh(u) = 2 sigmoid(2u). */
static inline __m256 gelu_tanh8(__m256 g) {
    __m256 g3 = _mm256_mul_ps(_mm256_mul_ps(g, g), g);
    __m256 inner = _mm256_add_ps(g, _mm256_mul_ps(_mm256_set1_ps(0.044715f), g3));
    __m256 u2 = _mm256_mul_ps(_mm256_set1_ps(2.0f * 0.7978845608028654f), inner);
    return _mm256_mul_ps(g, sigmoid8(u2));
}

/* gu (T, 2I): gate | up. q, s = quantize(act(gate) * up); act 0: silu(g) = g sigmoid(g),
 * act 1: gelu with the tanh approximation. */
void hvd_act_mul_quant(const float* gu, int T, int I, int act, int16_t* q, float* s) {
#pragma omp parallel for num_threads(n_threads) if (T > 1)
    for (int t = 0; t < T; t++) {
        const float* g = gu + (size_t)t * 2 * I;
        const float* u = g + I;
        float h[I];
        for (int i = 0; i < I; i += 8) {
            __m256 gv = _mm256_loadu_ps(g + i);
            __m256 a = act ? gelu_tanh8(gv) : _mm256_mul_ps(gv, sigmoid8(gv));
            _mm256_storeu_ps(h + i, _mm256_mul_ps(a, _mm256_loadu_ps(u + i)));
        }
        quant_row(h, I, q + (size_t)t * I, s + t);
    }
}

/* ---- the integer linear ---------------------------------------------------------------- */

/* sums[r][j] = sum_k x[r][k] * w[j][k] for R rows and one tile of 4 weight rows, stored
 * interleaved (K/16, 4, 16): one sequential stream. int16 x int16 -> int32 pairs (vpmaddwd),
 * added in int32. R is a constant at each call, so the tile is unrolled. */
static inline __attribute__((always_inline)) void dot_tile(const int16_t* const* x, int R, const int8_t* w, int K,
                                                           int32_t sums[4][4]) {
    __m256i acc[4][4];
    for (int i = 0; i < R; i++)
        for (int j = 0; j < 4; j++) acc[i][j] = _mm256_setzero_si256();
    for (int k = 0; k < K; k += 16) {
        const int8_t* wk = w + (size_t)k * 4;
        _mm_prefetch((const char*)(wk + 1024), _MM_HINT_T0);
        __m256i wv[4];
        for (int j = 0; j < 4; j++) wv[j] = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)(wk + 16 * j)));
        for (int i = 0; i < R; i++) {
            __m256i xv = _mm256_loadu_si256((const __m256i*)(x[i] + k));
            for (int j = 0; j < 4; j++) acc[i][j] = _mm256_add_epi32(acc[i][j], _mm256_madd_epi16(xv, wv[j]));
        }
    }
    for (int i = 0; i < R; i++)
        for (int j = 0; j < 4; j++) sums[i][j] = hsum8i(acc[i][j]);
}

/* y[t, o] (+)= ((float)sum_k xq[t, k] * w[o, k] * xs[t]) * ws[o].
 * xq (T, K) int16 holding int8 values; w int8 in tiles of 4 output rows, interleaved
 * (ceil(N/4), K/16, 4, 16) (rows past N zero); K a multiple of 16. Threads split the tiles;
 * row tiles of 3 share each weight load. */
void hvd_linear(const int16_t* xq, const float* xs, int T, int K, const int8_t* w, const float* ws, int N,
                float* y, int accumulate) {
    int nblk = (N + 3) / 4;
#pragma omp parallel for num_threads(n_threads) schedule(static) if (nblk > 16)
    for (int b = 0; b < nblk; b++) {
        int o0 = b * 4, no = N - o0 < 4 ? N - o0 : 4;
        const int8_t* wt = w + (size_t)b * 4 * K;
        for (int t0 = 0; t0 < T; t0 += 3) {
            int nt = T - t0 < 3 ? T - t0 : 3;
            const int16_t* xr[3];
            for (int i = 0; i < nt; i++) xr[i] = xq + (size_t)(t0 + i) * K;
            int32_t sums[4][4];
            if (nt == 3)
                dot_tile(xr, 3, wt, K, sums);
            else if (nt == 2)
                dot_tile(xr, 2, wt, K, sums);
            else
                dot_tile(xr, 1, wt, K, sums);
            for (int i = 0; i < nt; i++) {
                float* yr = y + (size_t)(t0 + i) * N + o0;
                for (int j = 0; j < no; j++) {
                    float v = ((float)sums[i][j] * xs[t0 + i]) * ws[o0 + j];
                    yr[j] = accumulate ? yr[j] + v : v;
                }
            }
        }
    }
}

/* ---- rotary embedding and the KV cache --------------------------------------------------
 * Cache of one layer, float16 (converted exactly to float32 when read): k (kv_heads, cap/8, D, 8)
 * — keys in groups of 8 slots, transposed so 8 keys' scores come out of one fma chain over d —
 * and v (kv_heads, cap, D). */

typedef uint16_t half;

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
#define VBLOCK 64

static __thread float* tl_buf = NULL;
static __thread size_t tl_cap = 0;

static float* scratch_floats(size_t n) {
    if (n > tl_cap) {
        free(tl_buf);
        tl_cap = n + n / 2;
        tl_buf = aligned_alloc(32, (tl_cap * sizeof(float) + 31) / 32 * 32);
    }
    return tl_buf;
}

static inline __m256 load_half8(const half* p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)p)); }

/* Scores of NR rows (query heads) against 16 keys kb (D, 16): for each row and key, the fma
 * chain over d = 0..D-1 from 0 (lanes are keys; the rows share each key load). */
static inline __attribute__((always_inline)) void score_tile(const int NR, const float* const* qr, const float* kb,
                                                             int D, __m256 out[6][2]) {
    __m256 acc[6][2];
    for (int i = 0; i < NR; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    for (int d = 0; d < D; d++) {
        __m256 k0 = _mm256_load_ps(kb + d * 16), k1 = _mm256_load_ps(kb + d * 16 + 8);
        for (int i = 0; i < NR; i++) {
            __m256 qd = _mm256_broadcast_ss(qr[i] + d);
            acc[i][0] = _mm256_fmadd_ps(qd, k0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(qd, k1, acc[i][1]);
        }
    }
    for (int i = 0; i < NR; i++) out[i][0] = acc[i][0], out[i][1] = acc[i][1];
}

/* o[0..D) += sum over n keys, in order, of p[j] * v_j, v_j a float row of vb (D floats each) or,
 * with `slots`, the float16 cache row vh[slots[j]]. ND = D / 8 is a constant where it can be, so
 * the accumulators stay in registers. */
static inline __attribute__((always_inline)) void value_sum(const int ND, float* o, const float* p, const float* vb,
                                                            const half* vh, const int32_t* slots, int n, int D) {
    __m256 acc[32];
    for (int c = 0; c < ND; c++) acc[c] = _mm256_loadu_ps(o + c * 8);
    if (slots) {
        for (int j = 0; j < n; j++) {
            __m256 pj = _mm256_broadcast_ss(p + j);
            const half* vr = vh + (size_t)slots[j] * D;
            for (int c = 0; c < ND; c++) acc[c] = _mm256_fmadd_ps(pj, load_half8(vr + c * 8), acc[c]);
        }
    } else {
        for (int j = 0; j < n; j++) {
            __m256 pj = _mm256_broadcast_ss(p + j);
            for (int c = 0; c < ND; c++) acc[c] = _mm256_fmadd_ps(pj, _mm256_load_ps(vb + j * D + c * 8), acc[c]);
        }
    }
    for (int c = 0; c < ND; c++) _mm256_storeu_ps(o + c * 8, acc[c]);
}

void hvd_attention(const float* q, int T, int H, int KVH, int D, const half* kc, const half* vc, int cap,
                   const int32_t* base, const int32_t* path, const int32_t* off, const int32_t* pos, int window,
                   float scale, float* out) {
    int g = H / KVH, ntile = (T + QTILE - 1) / QTILE, nd = D / 8;
#define LO(t) (window > 0 && pos[t] - window + 1 > 0 ? pos[t] - window + 1 : 0)
#pragma omp parallel for num_threads(n_threads) schedule(dynamic) if (ntile * KVH > 1)
    for (int task = 0; task < ntile * KVH; task++) {
        int t0 = (task / KVH) * QTILE, kh = task % KVH;
        int nt = T - t0 < QTILE ? T - t0 : QTILE, R = nt * g;
        int maxbase = 0, Lmax = 0, minlo = 1 << 30;
        for (int i = 0; i < nt; i++) {
            int L = base[t0 + i] + off[t0 + i + 1] - off[t0 + i];
            maxbase = base[t0 + i] > maxbase ? base[t0 + i] : maxbase;
            Lmax = L > Lmax ? L : Lmax;
            minlo = LO(t0 + i) < minlo ? LO(t0 + i) : minlo;
        }
        int Lp = (Lmax + 7) / 8 * 8;
        float* sc = scratch_floats((size_t)R * Lp + (size_t)R * D + 16 * D + VBLOCK * D);
        float* o = sc + (size_t)R * Lp;   /* (R, D) value sums */
        float* kb = o + (size_t)R * D;     /* (D, 16) two key groups in float */
        float* vb = kb + 16 * D;           /* (VBLOCK, D) one value block in float */
        const half* kh_base = kc + (size_t)kh * (cap / 8) * D * 8;
        const half* vh = vc + (size_t)kh * cap * D;
#define ROWQ(r) (q + ((size_t)(t0 + (r) / g) * H + kh * g + (r) % g) * D)
#define ROWBASE(r) (base[t0 + (r) / g])
        /* scores of keys in the rows' bases: two groups of 8 keys at a time, up to 6 rows at a time */
        for (int j0 = minlo / 16 * 16; j0 < maxbase; j0 += 16) {
            int two = j0 + 8 < maxbase;
            const half* kg = kh_base + (size_t)(j0 / 8) * D * 8;
            for (int d = 0; d < D; d++) {
                _mm256_store_ps(kb + d * 16, load_half8(kg + d * 8));
                _mm256_store_ps(kb + d * 16 + 8, two ? load_half8(kg + (size_t)D * 8 + d * 8) : _mm256_setzero_ps());
            }
            for (int r0 = 0; r0 < R; r0 += 6) {
                int nr = R - r0 < 6 ? R - r0 : 6;
                const float* qr[6];
                for (int i = 0; i < nr; i++) qr[i] = ROWQ(r0 + i);
                __m256 sv[6][2];
                switch (nr) {
                    case 6: score_tile(6, qr, kb, D, sv); break;
                    case 5: score_tile(5, qr, kb, D, sv); break;
                    case 4: score_tile(4, qr, kb, D, sv); break;
                    case 3: score_tile(3, qr, kb, D, sv); break;
                    case 2: score_tile(2, qr, kb, D, sv); break;
                    default: score_tile(1, qr, kb, D, sv); break;
                }
                for (int i = 0; i < nr; i++)
                    for (int h = 0; h < 2; h++)
                        if (j0 + 8 * h < ROWBASE(r0 + i)) _mm256_storeu_ps(sc + (size_t)(r0 + i) * Lp + j0 + 8 * h, sv[i][h]);
            }
        }
        /* scores of the path keys: the same fma chain, one lane; then the softmax weights */
        float total[8 * QTILE];
        for (int r = 0; r < R; r++) {
            int t = t0 + r / g, b = base[t], plen = off[t + 1] - off[t], L = b + plen, Lr = (L + 7) / 8 * 8;
            const float* qr = ROWQ(r);
            float* sr = sc + (size_t)r * Lp;
            for (int i = 0; i < plen; i++) {
                float a = 0.0f;
                for (int d = 0; d < D; d++)
                    a = fmaf(qr[d], _cvtsh_ss(*kslot((half*)kc, cap, D, kh, path[off[t] + i], d)), a);
                sr[b + i] = a;
            }
            float m = -INFINITY;
            int lo = LO(t), lo8 = lo / 8 * 8;
            for (int j = lo8; j < lo; j++) sr[j] = -INFINITY;
            for (int j = lo; j < L; j++) {
                sr[j] *= scale;
                m = sr[j] > m ? sr[j] : m;
            }
            for (int j = L; j < Lr; j++) sr[j] = -INFINITY;
            __m256 mv = _mm256_set1_ps(m), sum = _mm256_setzero_ps();
            for (int j = lo8; j < Lr; j += 8) {
                __m256 p = exp8(_mm256_sub_ps(_mm256_loadu_ps(sr + j), mv));
                _mm256_storeu_ps(sr + j, p);
                sum = _mm256_add_ps(sum, p);
            }
            total[r] = hsum8(sum);
            memset(o + (size_t)r * D, 0, sizeof(float) * D);
        }
        /* value sums over the bases: one block of values at a time, every row in turn */
        for (int j0 = minlo / VBLOCK * VBLOCK; j0 < maxbase; j0 += VBLOCK) {
            int jn = maxbase - j0 < VBLOCK ? maxbase - j0 : VBLOCK;
            for (int j = 0; j < jn; j++)
                for (int c = 0; c < nd; c++) _mm256_store_ps(vb + j * D + c * 8, load_half8(vh + (size_t)(j0 + j) * D + c * 8));
            for (int r = 0; r < R; r++) {
                int end = ROWBASE(r) - j0 < jn ? ROWBASE(r) - j0 : jn;
                /* keys below the row's window start: weights 0, skipped (8 at a time, as summed) */
                int start = (LO(t0 + r / g) - j0) / 8 * 8;
                start = start < 0 ? 0 : start;
                if (end <= start) continue;
                float* orow = o + (size_t)r * D;
                const float* pr = sc + (size_t)r * Lp + j0 + start;
                const float* vr = vb + (size_t)start * D;
                if (nd == 8)
                    value_sum(8, orow, pr, vr, NULL, 0, end - start, D);
                else if (nd == 32)
                    value_sum(32, orow, pr, vr, NULL, 0, end - start, D);
                else
                    value_sum(nd, orow, pr, vr, NULL, 0, end - start, D);
            }
        }
        /* value sums over the path keys, then the division */
        for (int r = 0; r < R; r++) {
            int t = t0 + r / g, b = base[t], plen = off[t + 1] - off[t];
            float* orow = o + (size_t)r * D;
            value_sum(nd, orow, sc + (size_t)r * Lp + b, NULL, vh, path + off[t], plen, D);
            __m256 tv = _mm256_set1_ps(total[r]);
            float* dst = out + ((size_t)t * H + kh * g + r % g) * D;
            for (int c = 0; c < nd; c++) _mm256_storeu_ps(dst + c * 8, _mm256_div_ps(_mm256_loadu_ps(orow + c * 8), tv));
        }
#undef ROWQ
#undef ROWBASE
#undef LO
    }
}

/* ---- one decoder layer --------------------------------------------------------------------
 * x (T, hid) += attention(rms_norm(x)); x += mlp(rms_norm(x)), with the ops above, in one call.
 * With sandwich norms (Gemma): x += rms_norm(attention(...)); x += rms_norm(mlp(...)).
 * The layer's weights and switches come in one struct (family.py / exact.py build it).
 * scratch: hvd_layer_scratch(...) bytes, 32-byte aligned. */

typedef struct {
    int hid, H, KVH, D, inter, act, window;
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

void hvd_layer(const hvd_layer_spec* L, float* x, int T, const int32_t* pos, const float* cos, const float* sin,
               const int32_t* slots, half* kc, half* vc, int cap, const int32_t* base, const int32_t* path,
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
    hvd_linear(xq, xs, T, hid, L->wqkv, L->sqkv, nqkv, qkv, 0);
    hvd_rope_store(qkv, T, H, KVH, D, L->qkv_bias, L->q_norm, L->k_norm, L->eps, pos, cos, sin, slots, q, kc, vc,
                   cap);
    hvd_attention(q, T, H, KVH, D, kc, vc, cap, base, path, off, pos, L->window, L->scale, att);
    hvd_quantize(att, T, H * D, xq, xs);
    if (L->post_attn) {
        hvd_linear(xq, xs, T, H * D, L->wo, L->so, hid, tmp, 0);
        add_normed(x, tmp, T, hid, L->post_attn, L->eps);
    } else {
        hvd_linear(xq, xs, T, H * D, L->wo, L->so, hid, x, 1);
    }
    hvd_rmsnorm_quant(x, T, hid, L->ln_mlp, L->eps, NULL, xq, xs);
    hvd_linear(xq, xs, T, hid, L->wgu, L->sgu, 2 * inter, gu, 0);
    hvd_act_mul_quant(gu, T, inter, L->act, xq, xs);
    if (L->post_mlp) {
        hvd_linear(xq, xs, T, inter, L->wd, L->sd, hid, tmp, 0);
        add_normed(x, tmp, T, hid, L->post_mlp, L->eps);
    } else {
        hvd_linear(xq, xs, T, inter, L->wd, L->sd, hid, x, 1);
    }
}
