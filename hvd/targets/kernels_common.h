/* Shared by both targets' kernels (kernels_int8.c, kernels_int8_layer.c: the exact int8 target;
 * kernels_f32.c: the float32 target): the includes, the thread count, and the float helpers
 * whose fixed orders of operations both targets' contracts rest on — hsum8's lane tree, our own
 * exp (exp8; its operations, EXP_CORE, also give the AVX-512 exp16), hmax8, the 8-lane softmax
 * (softmax8) and the value sums (value_rows: one fma chain per output over the keys in order),
 * and the per-thread scratch that attention uses.
 *
 * Not a translation unit of its own: kernels.c includes it first, then each target's files, so
 * the library is one unit compiled with native.py's flags (-ffp-contract=off, no fast-math: the
 * compiler fuses nothing not written as an fma). Every function here is one fixed sequence of
 * operations per output that reads only its own row's inputs, whatever else shares the call.
 */
#ifndef HVD_KERNELS_COMMON_H
#define HVD_KERNELS_COMMON_H

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

/* exp(x) for x <= 0 (softmax after subtracting the max): 2^n * p(r), r = x - n ln2 in
 * [-ln2/2, ln2/2], p a degree-6 Taylor polynomial (rel. error < 2e-7); below -87 it is 0.
 * EXP_CORE is the one text of the operations from n (x / ln2 rounded) to 2^n * p(r), expanded
 * for 8 lanes here and for 16 (exp16, the AVX-512 path, kernels_int8_layer.c): the same operations in every lane. */
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

/* float16 as the exact target's KV cache holds it (converted exactly to float32 when read). */
typedef uint16_t half;

static inline __m256 load_half8(const half* p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)p)); }

static inline float hmax8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

/* Value sums are taken VBLOCK keys at a time; attention's per-thread scratch. */
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

#endif /* HVD_KERNELS_COMMON_H */
