/* Batch-invariant CPU kernels of the exact target (hvd/targets/exact.py), part 1: quantizing
 * activations, RMS norm, the gated MLP's activation, and the integer linear (AVX2, and the same
 * sums on AVX-512 VNNI) with its argmax for the LM head. Part 2, kernels_int8_layer.c: rotary
 * embedding, the float16 KV cache, attention and one whole decoder layer. Helpers shared with the
 * float32 target: kernels_common.h. All are compiled as one unit by kernels.c.
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
 * - exp is our own (kernels_common.h), so it is the same function in every lane and on every libm.
 * Built with -ffp-contract=off: the compiler fuses nothing we did not write as an fma.
 * Needs AVX2 + FMA + F16C (any x86-64 CPU since 2013); the integer results, and so every bit, do not
 * depend on anything newer: where AVX-512 VNNI is present, the linear and the staged attention
 * tiles take wider instructions that compute the same integers and the same per-lane fma chains.
 */
#include "kernels_common.h"

/* ---- helpers ------------------------------------------------------------------------- */

static inline int32_t hsum8i(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
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

/* sums[r][j] = sum_k x[r][k] * w[j][k] for R <= 3 rows and one tile of 4 weight rows, whose
 * 16-value chunks lie `stride` bytes apart (the weights' layout, below). int16 x int16 -> int32 pairs (vpmaddwd),
 * added in int32 (exact: any order gives the same sums). Written in assembly so that the 12
 * accumulators stay in registers (ymm0-11): each weight vector is widened once (ymm12) and used by
 * every row, whose activations are read at each use from L1. K a multiple of 16, > 0. */
#define MADD(X, ACC) "vpmaddwd (%[" X "]), %%ymm12, %%ymm13\n\tvpaddd %%ymm13, %%ymm" ACC ", %%ymm" ACC "\n\t"
#define WIDEN(J) "vpmovsxbw " J "(%[w]), %%ymm12\n\t"
#define ZERO12 "vpxor %%ymm0, %%ymm0, %%ymm0\n\tvpxor %%ymm1, %%ymm1, %%ymm1\n\tvpxor %%ymm2, %%ymm2, %%ymm2\n\t" \
    "vpxor %%ymm3, %%ymm3, %%ymm3\n\tvpxor %%ymm4, %%ymm4, %%ymm4\n\tvpxor %%ymm5, %%ymm5, %%ymm5\n\t" \
    "vpxor %%ymm6, %%ymm6, %%ymm6\n\tvpxor %%ymm7, %%ymm7, %%ymm7\n\tvpxor %%ymm8, %%ymm8, %%ymm8\n\t" \
    "vpxor %%ymm9, %%ymm9, %%ymm9\n\tvpxor %%ymm10, %%ymm10, %%ymm10\n\tvpxor %%ymm11, %%ymm11, %%ymm11\n\t"
#define STORE(ACC, OFF) "vmovdqu %%ymm" ACC ", " OFF "(%[out])\n\t"
#define YMM_CLOBBERS "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", \
    "xmm11", "xmm12", "xmm13", "memory", "cc"

/* ROW_MADDS_R: the widened weight vector (ymm12) times rows 0..R-1, into accumulators a0, a1, a2. */
#define ROW_MADDS_1(a0, a1, a2) MADD("x0", a0)
#define ROW_MADDS_2(a0, a1, a2) MADD("x0", a0) MADD("x1", a1)
#define ROW_MADDS_3(a0, a1, a2) MADD("x0", a0) MADD("x1", a1) MADD("x2", a2)

/* dot_tileR for R = 1, 2, 3 rows (rows past R are never read; all 12 accumulators are stored). */
#define DOT_TILE(R)                                                                                   \
    static void dot_tile##R(const int16_t* x0, const int16_t* x1, const int16_t* x2, const int8_t* w,   \
                            long K, long stride, int32_t out[12][8]) {                                \
        __asm__ volatile(ZERO12                                                                       \
                         "1:\n\t"                                                                     \
                         "prefetcht0 3072(%[w])\n\t"                                                  \
                         WIDEN("0") ROW_MADDS_##R("0", "4", "8")                                       \
                         WIDEN("16") ROW_MADDS_##R("1", "5", "9")                                      \
                         WIDEN("32") ROW_MADDS_##R("2", "6", "10")                                     \
                         WIDEN("48") ROW_MADDS_##R("3", "7", "11")                                     \
                         "add %[st], %[w]\n\tadd $32, %[x0]\n\tadd $32, %[x1]\n\tadd $32, %[x2]\n\t"  \
                         "sub $16, %[k]\n\tjnz 1b\n\t"                                                \
                         STORE("0", "0") STORE("1", "32") STORE("2", "64") STORE("3", "96")            \
                         STORE("4", "128") STORE("5", "160") STORE("6", "192") STORE("7", "224")       \
                         STORE("8", "256") STORE("9", "288") STORE("10", "320") STORE("11", "352")     \
                         : [w] "+r"(w), [x0] "+r"(x0), [x1] "+r"(x1), [x2] "+r"(x2), [k] "+r"(K)      \
                         : [out] "r"(out), [st] "r"(stride)                                           \
                         : YMM_CLOBBERS);                                                             \
    }
DOT_TILE(1)
DOT_TILE(2)
DOT_TILE(3)
#undef DOT_TILE
#undef ROW_MADDS_1
#undef ROW_MADDS_2
#undef ROW_MADDS_3
#undef MADD
#undef WIDEN
#undef ZERO12
#undef STORE
#undef YMM_CLOBBERS

static void dot_tile(const int16_t* const* x, int R, const int8_t* w, int K, long stride, int32_t sums[4][4]) {
    int32_t acc[12][8] __attribute__((aligned(32)));
    if (R == 3)
        dot_tile3(x[0], x[1], x[2], w, K, stride, acc);
    else if (R == 2)
        dot_tile2(x[0], x[1], x[1], w, K, stride, acc);
    else
        dot_tile1(x[0], x[0], x[0], w, K, stride, acc);
    for (int i = 0; i < R; i++)
        for (int j = 0; j < 4; j++) sums[i][j] = hsum8i(_mm256_load_si256((const __m256i*)acc[i * 4 + j]));
}

/* ---- the same sums on AVX-512 VNNI -----------------------------------------------------
 * Where the CPU has it (checked at run time; hvd_set_vnni), vpdpbusd forms the same integer sums
 * four products at a time, 64 per instruction: it multiplies unsigned by signed bytes and adds
 * each group of four into an int32 lane without saturating. The weights become unsigned as
 * w ^ 0x80 = w + 128, so a lane sums (w + 128) * x, and 128 * sum_k x[k] is taken off each row's
 * total. Every partial sum is an integer far inside int32 (|sum| <= K * 255 * 127), so the totals
 * are the AVX2 path's bit for bit. A 64-byte line of the interleaved weights holds 4 output rows
 * x 16 k; an activation row's 16 k are broadcast to the 4 lane groups, so lane l of an
 * accumulator holds weight row l/4's partial sum. The micro-kernel keeps up to VROWS activation
 * rows x VTILES weight tiles of accumulators in registers. */
#define VNNI_ISA __attribute__((target("avx512f,avx512bw,avx512vnni")))
#define VROWS 4  /* 4 x 4 accumulators: more rows spill registers (measured slower) */
#define VTILES 4

static int vnni_on = 0;  /* set by hvd_set_vnni */

/* on = 1: use the VNNI path where this CPU has it; 0: AVX2; < 0: change nothing. Returns 1 if the
 * VNNI path is in use afterwards. */
int hvd_set_vnni(int on) {
    if (on >= 0) {
        __builtin_cpu_init();
        int has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                  __builtin_cpu_supports("avx512vnni");
        vnni_on = on && has;
    }
    return vnni_on;
}

static __thread int8_t* tl_x8 = NULL;
static __thread size_t tl_x8_cap = 0;

/* xq (T, K) int16 holding int8 values -> int8; xsum[t] = sum_k xq[t, k]. */
static int8_t* narrow_rows(const int16_t* xq, int T, int K, int32_t* xsum) {
    size_t n = (size_t)T * K;
    if (n > tl_x8_cap) {
        free(tl_x8);
        tl_x8_cap = n + n / 2;
        tl_x8 = aligned_alloc(64, (tl_x8_cap + 63) / 64 * 64);
    }
    for (int t = 0; t < T; t++) {
        int32_t s = 0;
        for (int k = 0; k < K; k++) {
            tl_x8[(size_t)t * K + k] = (int8_t)xq[(size_t)t * K + k];
            s += xq[(size_t)t * K + k];
        }
        xsum[t] = s;
    }
    return tl_x8;
}

/* sums[i][4 * j + r] = sum_k (w_j[r][k] + 128) * x_i[k] for NR activation rows (int8, stride K)
 * and the first NW 4-row tiles of a 16-row weight group. */
VNNI_ISA static inline __attribute__((always_inline)) void vnni_tile(const int NR, const int NW, const int8_t* x,
                                                                    int K, const int8_t* w,
                                                                    int32_t sums[VROWS][4 * VTILES]) {
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    __m512i acc[VROWS][VTILES];
    for (int i = 0; i < NR; i++)
        for (int j = 0; j < NW; j++) acc[i][j] = _mm512_setzero_si512();
    for (int c = 0; c < K / 16; c++) {
        __m512i wv[VTILES];
        for (int j = 0; j < NW; j++) {
            const int8_t* line = w + (size_t)c * 256 + j * 64;
            _mm_prefetch((const char*)line + 3072, _MM_HINT_T0);  /* 12 steps ahead: measured best of 1-4 KB */
            wv[j] = _mm512_xor_si512(_mm512_loadu_si512(line), flip);
        }
        for (int i = 0; i < NR; i++) {
            __m512i xv = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i*)(x + (size_t)i * K + c * 16)));
            for (int j = 0; j < NW; j++) acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], wv[j], xv);
        }
    }
    /* each tile's 4 lanes per weight row summed by a 4x4 transpose-add per 128-bit lane (lane
     * 4q + j: tile j, row q), then put in order 4j + q */
    const __m512i order = _mm512_set_epi32(15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1, 12, 8, 4, 0);
    for (int i = 0; i < NR; i++) {
        __m512i a[4];
        for (int j = 0; j < 4; j++) a[j] = j < NW ? acc[i][j] : _mm512_setzero_si512();
        __m512i s01 = _mm512_add_epi32(_mm512_unpacklo_epi32(a[0], a[1]), _mm512_unpackhi_epi32(a[0], a[1]));
        __m512i s23 = _mm512_add_epi32(_mm512_unpacklo_epi32(a[2], a[3]), _mm512_unpackhi_epi32(a[2], a[3]));
        __m512i r = _mm512_add_epi32(_mm512_unpacklo_epi64(s01, s23), _mm512_unpackhi_epi64(s01, s23));
        _mm512_storeu_si512((__m512i*)sums[i], _mm512_permutexvar_epi32(order, r));
    }
}

#define VNNI_CASE(R) \
    case R: \
        if (NW == 4) vnni_tile(R, 4, x, K, w, sums); \
        else if (NW == 3) vnni_tile(R, 3, x, K, w, sums); \
        else if (NW == 2) vnni_tile(R, 2, x, K, w, sums); \
        else vnni_tile(R, 1, x, K, w, sums); \
        break;

VNNI_ISA static void vnni_block(int NR, int NW, const int8_t* x, int K, const int8_t* w,
                                int32_t sums[VROWS][4 * VTILES]) {
    switch (NR) { VNNI_CASE(1) VNNI_CASE(2) VNNI_CASE(3) default: VNNI_CASE(4) }
}
#undef VNNI_CASE

/* Where a linear's outputs go: rows of y (added to them with `accumulate`), or, with y NULL, each
 * row's running maximum and its column in the calling thread's slot of best/arg (T entries a
 * thread): columns reach a thread in increasing order, so a strict > keeps the first maximum. */
typedef struct {
    float* y;
    int N, accumulate;
    float* best;
    int32_t* arg;
} sink_t;

/* Row t's outputs for columns col..col+n-1, OUT(j) the j-th, into the sink (one expression for
 * both uses, so the maximum is taken over exactly the floats hvd_linear writes). */
#define SINK_ROW(s, T, t, col, n, OUT)                                                               \
    do {                                                                                             \
        if ((s)->y) {                                                                                \
            float* at_ = (s)->y + (size_t)(t) * (s)->N + (col);                                      \
            for (int j = 0; j < (n); j++) at_[j] = (s)->accumulate ? at_[j] + (OUT) : (OUT);         \
        } else {                                                                                     \
            size_t slot_ = (size_t)thread_num() * (T) + (t);                                          \
            for (int j = 0; j < (n); j++) {                                                           \
                float v_ = (OUT);                                                                    \
                if (v_ > (s)->best[slot_]) (s)->best[slot_] = v_, (s)->arg[slot_] = (col) + j;       \
            }                                                                                        \
        }                                                                                            \
    } while (0)

static inline int thread_num(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

static void linear_vnni(const int16_t* xq, const float* xs, int T, int K, const int8_t* w, const float* ws, int N,
                        const sink_t* out) {
    int32_t xsum_stack[64];
    int32_t* xsum = T <= 64 ? xsum_stack : malloc((size_t)T * sizeof(int32_t));
    const int8_t* x8 = narrow_rows(xq, T, K, xsum);
    int ntile = (N + 3) / 4, ngroup = (ntile + VTILES - 1) / VTILES, passes = (T + VROWS - 1) / VROWS;
#pragma omp parallel for num_threads(n_threads) schedule(static) if (ngroup > 4)
    for (int g = 0; g < ngroup; g++) {
        int b0 = g * VTILES, nw = ntile - b0 < VTILES ? ntile - b0 : VTILES;
        int o0 = b0 * 4, no = N - o0 < 4 * nw ? N - o0 : 4 * nw;
        for (int p = 0, t0 = 0; p < passes; p++) {
            int nt = (T - t0) / (passes - p); /* rows spread evenly over the passes */
            int32_t sums[VROWS][4 * VTILES];
            vnni_block(nt, nw, x8 + (size_t)t0 * K, K, w + (size_t)g * 16 * K, sums);
            for (int i = 0; i < nt; i++) {
                int32_t off = 128 * xsum[t0 + i];
                SINK_ROW(out, T, t0 + i, o0, no, ((float)(sums[i][j] - off) * xs[t0 + i]) * ws[o0 + j]);
            }
            t0 += nt;
        }
    }
    if (xsum != xsum_stack) free(xsum);
}

/* y[t, o] (+)= ((float)sum_k xq[t, k] * w[o, k] * xs[t]) * ws[o].
 * xq (T, K) int16 holding int8 values; w int8 in groups of G = `group` output rows (4 or 16),
 * interleaved (ceil(N/G), K/16, G, 16) (rows past N zero): a group is one sequential stream.
 * K a multiple of 16. The VNNI path takes groups of 16 (its 4 weight tiles side by side); the
 * AVX2 path either (4 is its faster stream). Threads split the 4-row tiles; row tiles of 3 share
 * each weight load. */
static void linear_into(const int16_t* xq, const float* xs, int T, int K, const int8_t* w, const float* ws, int N,
                        int group, const sink_t* out) {
    if (vnni_on && group == 16) {
        linear_vnni(xq, xs, T, K, w, ws, N, out);
        return;
    }
    int nblk = (N + 3) / 4, per = group / 4;
#pragma omp parallel for num_threads(n_threads) schedule(static) if (nblk > 16)
    for (int b = 0; b < nblk; b++) {
        int o0 = b * 4, no = N - o0 < 4 ? N - o0 : 4;
        const int8_t* wt = w + (size_t)(b / per) * group * K + (b % per) * 64;
        for (int t0 = 0; t0 < T; t0 += 3) {
            int nt = T - t0 < 3 ? T - t0 : 3;
            const int16_t* xr[3];
            for (int i = 0; i < nt; i++) xr[i] = xq + (size_t)(t0 + i) * K;
            int32_t sums[4][4];
            dot_tile(xr, nt, wt, K, (long)group * 16, sums);
            for (int i = 0; i < nt; i++) SINK_ROW(out, T, t0 + i, o0, no, ((float)sums[i][j] * xs[t0 + i]) * ws[o0 + j]);
        }
    }
}

void hvd_linear(const int16_t* xq, const float* xs, int T, int K, const int8_t* w, const float* ws, int N,
                float* y, int accumulate, int group) {
    sink_t out = {y, N, accumulate, NULL, NULL};
    linear_into(xq, xs, T, K, w, ws, N, group, &out);
}

/* arg[t] = the first column of row t's maximum among hvd_linear's outputs (the same floats,
 * never written out: a greedy verify of a 262k-token vocabulary wrote and re-read 1 MB a row).
 * NaN is never a maximum; a row of -inf only gives 0. */
void hvd_linear_argmax(const int16_t* xq, const float* xs, int T, int K, const int8_t* w, const float* ws, int N,
                       int group, int32_t* arg) {
    size_t n = (size_t)n_threads * T;
    float* best = malloc(n * sizeof(float));
    int32_t* at = malloc(n * sizeof(int32_t));
    for (size_t i = 0; i < n; i++) best[i] = -INFINITY, at[i] = 0;
    sink_t out = {NULL, N, 0, best, at};
    linear_into(xq, xs, T, K, w, ws, N, group, &out);
    for (int t = 0; t < T; t++) {  /* threads hold increasing column ranges (static schedule): the first wins ties */
        float b = best[t];
        arg[t] = at[t];
        for (int k = 1; k < n_threads; k++)
            if (best[(size_t)k * T + t] > b) b = best[(size_t)k * T + t], arg[t] = at[(size_t)k * T + t];
    }
    free(best);
    free(at);
}
