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
 * depend on anything newer: where AVX-512 VNNI is present, the linear and the staged attention
 * tiles take wider instructions that compute the same integers and the same per-lane fma chains.
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
 * [-ln2/2, ln2/2], p a degree-6 Taylor polynomial (rel. error < 2e-7); below -87 it is 0.
 * EXP_CORE is the one text of the operations from n (x / ln2 rounded) to 2^n * p(r), expanded
 * for 8 lanes here and for 16 (exp16, the AVX-512 path) below: the same operations in every lane. */
#define EXP_CORE(P, BITS, T, x, n, y)                                                                    \
    do {                                                                                                 \
        T r_ = P##_fnmadd_ps(n, P##_set1_ps(0.693359375f), x);                                           \
        r_ = P##_fnmadd_ps(n, P##_set1_ps(-2.12194440e-4f), r_);                                         \
        T p_ = P##_set1_ps(1.0f / 720);                                                                  \
        p_ = P##_fmadd_ps(p_, r_, P##_set1_ps(1.0f / 120));                                              \
        p_ = P##_fmadd_ps(p_, r_, P##_set1_ps(1.0f / 24));                                               \
        p_ = P##_fmadd_ps(p_, r_, P##_set1_ps(1.0f / 6));                                                \
        p_ = P##_fmadd_ps(p_, r_, P##_set1_ps(0.5f));                                                    \
        p_ = P##_fmadd_ps(p_, r_, P##_set1_ps(1.0f));                                                    \
        p_ = P##_fmadd_ps(p_, r_, P##_set1_ps(1.0f));                                                    \
        y = P##_mul_ps(p_, P##_castsi##BITS##_ps(                                                        \
                                 P##_slli_epi32(P##_add_epi32(P##_cvtps_epi32(n), P##_set1_epi32(127)), 23))); \
    } while (0)
#define EXP_LOG2E 1.44269504088896341f

static inline __m256 exp8(__m256 x) {
    const __m256 lo = _mm256_set1_ps(-87.0f);
    __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_max_ps(x, lo);
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(EXP_LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 y;
    EXP_CORE(_mm256, 256, __m256, x, n, y);
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

static inline float hmax8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

static inline __m256 load_half8(const half* p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)p)); }

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

/* For NR <= 3 rows and NC <= 4 chunks of 8 dims from c0: o_i[d] = fma chain over j = 0..n-1, in
 * order, of p_i[j] * v_j[d], continued from o_i's current value. v_j is row j of v (D values,
 * float16 with HALF, else float); or, with `slots`, the float16 row v[slots[j]]. */
static inline __attribute__((always_inline)) void value_tile(const int NR, const int NC, const int HALF, float* const* o,
                                                             const float* const* p, const void* v, const int32_t* slots,
                                                             int n, int D, int c0) {
    __m256 acc[3][4];
    for (int i = 0; i < NR; i++)
        for (int c = 0; c < NC; c++) acc[i][c] = _mm256_loadu_ps(o[i] + (c0 + c) * 8);
    for (int j = 0; j < n; j++) {
        size_t row = (size_t)(slots ? slots[j] : j) * D + c0 * 8;
        if (HALF && !slots) _mm_prefetch((const char*)((const half*)v + row + 16 * D), _MM_HINT_T0);
        __m256 pj[3];
        for (int i = 0; i < NR; i++) pj[i] = _mm256_broadcast_ss(p[i] + j);
        for (int c = 0; c < NC; c++) {
            __m256 vv = HALF ? load_half8((const half*)v + row + c * 8) : _mm256_loadu_ps((const float*)v + row + c * 8);
            for (int i = 0; i < NR; i++) acc[i][c] = _mm256_fmadd_ps(pj[i], vv, acc[i][c]);
        }
    }
    for (int i = 0; i < NR; i++)
        for (int c = 0; c < NC; c++) _mm256_storeu_ps(o[i] + (c0 + c) * 8, acc[i][c]);
}

#define VT(NR, NC, HALF) value_tile(NR, NC, HALF, o, p, v, slots, n, D, c0)
#define VT_NC(NR, HALF) \
    switch (nc) { case 4: VT(NR, 4, HALF); break; case 3: VT(NR, 3, HALF); break; \
                  case 2: VT(NR, 2, HALF); break; default: VT(NR, 1, HALF); }

static void value_rows(int NR, int HALF, float* const* o, const float* const* p, const void* v, const int32_t* slots,
                       int n, int D) {
    for (int c0 = 0; c0 < D / 8; c0 += 4) {
        int nc = D / 8 - c0 < 4 ? D / 8 - c0 : 4;
        if (HALF) {
            if (NR == 3) { VT_NC(3, 1) } else if (NR == 2) { VT_NC(2, 1) } else { VT_NC(1, 1) }
        } else {
            if (NR == 3) { VT_NC(3, 0) } else if (NR == 2) { VT_NC(2, 0) } else { VT_NC(1, 0) }
        }
    }
}
#undef VT_NC
#undef VT

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

/* Softmax weights of one row over sr[from..to) (a multiple of 8 long) in place: scaled scores,
 * p_j = exp(score_j - max); returns their sum, lane j mod 8 of an 8-lane accumulator added in
 * key order, then hsum8. -inf * scale = -inf: masked keys stay masked. */
static float softmax8(float* sr, int from, int to, float scale) {
    __m256 sv = _mm256_set1_ps(scale), mx = _mm256_set1_ps(-INFINITY);
    for (int j = from; j < to; j += 8) {
        __m256 v = _mm256_mul_ps(_mm256_loadu_ps(sr + j), sv);
        _mm256_storeu_ps(sr + j, v);
        mx = _mm256_max_ps(mx, v);
    }
    __m256 mv = _mm256_set1_ps(hmax8(mx)), sum = _mm256_setzero_ps();
    for (int j = from; j < to; j += 8) {
        __m256 p = exp8(_mm256_sub_ps(_mm256_loadu_ps(sr + j), mv));
        _mm256_storeu_ps(sr + j, p);
        sum = _mm256_add_ps(sum, p);
    }
    return hsum8(sum);
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

void hvd_attention(const float* q, int T, int H, int KVH, int D, const half* kc, const half* vc, int cap,
                   const int32_t* base, const int32_t* path, const int32_t* off, const int32_t* pos, int window,
                   float scale, float* out) {
    int g = H / KVH, ntile = (T + QTILE - 1) / QTILE;
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

/* ---- one decoder layer --------------------------------------------------------------------
 * x (T, hid) += attention(rms_norm(x)); x += mlp(rms_norm(x)), with the ops above, in one call.
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
    hvd_linear(xq, xs, T, hid, L->wqkv, L->sqkv, nqkv, qkv, 0, L->group);
    hvd_rope_store(qkv, T, H, KVH, D, L->qkv_bias, L->q_norm, L->k_norm, L->eps, pos, cos, sin, slots, q, kc, vc,
                   cap);
    hvd_attention(q, T, H, KVH, D, kc, vc, cap, base, path, off, pos, L->window, L->scale, att);
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
