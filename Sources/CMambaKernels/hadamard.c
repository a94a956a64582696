// The online Hadamard rotation of out_proj's input (MambaTensors/Hadamard.swift has the definition
// in double): x -> (x * signs) (H_m (x) H_p) / sqrt(m p), a fast Walsh-Hadamard transform on each of
// the m blocks of p = 2^k values, then the m x m factor across blocks. Plain loops (the baseline
// and the reference), and the same sums written for AVX2 and for AVX-512.
#include "mamba_kernels.h"
#include "simd_math.h"
#include <math.h>

// After the FWHT of each block: the m x m factor across blocks and the 1/sqrt(n) norm (inlined into
// each path, so it is built for AVX2 and for the baseline like its callers).
static inline __attribute__((always_inline)) void mix_blocks(
    float *restrict x, int p, int m, const float *restrict factor, float *restrict scratch) {
    const int n = m * p;
    const float norm = 1.0f / sqrtf((float)n);
    if (m == 1) {
        for (int i = 0; i < n; i++) x[i] *= norm;
        return;
    }
    for (int i = 0; i < m; i++) {
        float *restrict out = scratch + i * p;
        for (int b = 0; b < p; b++) out[b] = 0;
        for (int j = 0; j < m; j++) {
            const float c = factor[i * m + j] * norm;
            const float *restrict src = x + j * p;
            for (int b = 0; b < p; b++) out[b] += c * src[b];
        }
    }
    for (int i = 0; i < n; i++) x[i] = scratch[i];
}

static inline __attribute__((always_inline)) void hadamard_row(
    float *restrict x, int p, int m, const float *restrict factor, const float *restrict signs, float *restrict scratch) {
    const int n = m * p;
    for (int i = 0; i < n; i++) x[i] *= signs[i];
    for (int a = 0; a < m; a++) {
        float *restrict v = x + a * p;
        for (int h = 1; h < p; h *= 2)
            for (int i = 0; i < p; i += 2 * h)
                for (int j = i; j < i + h; j++) {
                    const float u = v[j], w = v[j + h];
                    v[j] = u + w;
                    v[j + h] = u - w;
                }
    }
    mix_blocks(x, p, m, factor, scratch);
}

#if MQ_X86
// The butterflies of distance h < 8 inside one vector of 8: lane i becomes v[i] + v[i + h] in the
// lower half of each pair of h-blocks and v[i - h] - v[i] in the upper, that is
// swap_h(v) + sign_h * v, one permute and one FMA per stage (the scalar loop above does not
// vectorize at these distances). The same sums in the same order as hadamard_row's, so both
// paths give the same floats.
MQ_AVX2 static inline __m256 fwht8(__m256 v) {
    const __m256 s1 = _mm256_setr_ps(1, -1, 1, -1, 1, -1, 1, -1);
    const __m256 s2 = _mm256_setr_ps(1, 1, -1, -1, 1, 1, -1, -1);
    const __m256 s4 = _mm256_setr_ps(1, 1, 1, 1, -1, -1, -1, -1);
    v = _mm256_fmadd_ps(v, s1, _mm256_permute_ps(v, _MM_SHUFFLE(2, 3, 0, 1)));
    v = _mm256_fmadd_ps(v, s2, _mm256_permute_ps(v, _MM_SHUFFLE(1, 0, 3, 2)));
    return _mm256_fmadd_ps(v, s4, _mm256_permute2f128_ps(v, v, 0x01));
}

// The m x m factor (m = 12, 20 or 28: multiples of 4; scaled is NULL for any other) with its entries pre-scaled by 1/sqrt(n):
// per 8 lanes, four output blocks at a time accumulate in registers over the m input blocks, where
// mix_blocks' loop read and wrote its output row from memory m times over (it was most of the
// rotation: 3 ms of a 50 ms Vim-T int8 forward). Each output sums its inputs in mix_blocks' order.
MQ_AVX2 static void mix_blocks_avx2(float *restrict x, int p, int m, const float *restrict scaled, float *restrict scratch) {
    for (int b = 0; b < p; b += 8) {
        for (int i = 0; i < m; i += 4) {
            __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
            for (int j = 0; j < m; j++) {
                const __m256 v = _mm256_loadu_ps(x + j * p + b);
                acc0 = _mm256_fmadd_ps(_mm256_broadcast_ss(scaled + i * m + j), v, acc0);
                acc1 = _mm256_fmadd_ps(_mm256_broadcast_ss(scaled + (i + 1) * m + j), v, acc1);
                acc2 = _mm256_fmadd_ps(_mm256_broadcast_ss(scaled + (i + 2) * m + j), v, acc2);
                acc3 = _mm256_fmadd_ps(_mm256_broadcast_ss(scaled + (i + 3) * m + j), v, acc3);
            }
            _mm256_storeu_ps(scratch + i * p + b, acc0);
            _mm256_storeu_ps(scratch + (i + 1) * p + b, acc1);
            _mm256_storeu_ps(scratch + (i + 2) * p + b, acc2);
            _mm256_storeu_ps(scratch + (i + 3) * p + b, acc3);
        }
    }
    for (int i = 0; i < m * p; i += 8) _mm256_storeu_ps(x + i, _mm256_loadu_ps(scratch + i));
}

MQ_AVX2 static void hadamard_row_avx2(float *restrict x, int p, int m, const float *restrict factor, const float *restrict scaled,
                                      const float *restrict signs, float *restrict scratch) {
    if (p < 8) { hadamard_row(x, p, m, factor, signs, scratch); return; }
    const int n = m * p;
    for (int i = 0; i < n; i += 8)
        _mm256_storeu_ps(x + i, fwht8(_mm256_mul_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(signs + i))));
    for (int a = 0; a < m; a++) {
        float *restrict v = x + a * p;
        for (int h = 8; h < p; h *= 2)
            for (int i = 0; i < p; i += 2 * h)
                for (int j = i; j < i + h; j += 8) {
                    const __m256 u = _mm256_loadu_ps(v + j), w = _mm256_loadu_ps(v + j + h);
                    _mm256_storeu_ps(v + j, _mm256_add_ps(u, w));
                    _mm256_storeu_ps(v + j + h, _mm256_sub_ps(u, w));
                }
    }
    if (scaled && m % 4 == 0) mix_blocks_avx2(x, p, m, scaled, scratch);
    else mix_blocks(x, p, m, factor, scratch);
}

// The rows of either vector path: the factor pre-scaled once (as mix_blocks computes each entry),
// then one row at a time.
typedef void (*hadamard_row_fn)(float *restrict x, int p, int m, const float *restrict factor, const float *restrict scaled,
                                const float *restrict signs, float *restrict scratch);

static void hadamard_rows_with(hadamard_row_fn row, float *x, int rows, int ld, int p, int m, const float *factor,
                               const float *signs, float *scratch) {
    float scaled[28 * 28];  // factor x 1/sqrt(n)
    const float norm = 1.0f / sqrtf((float)(m * p));
    if (m <= 28)
        for (int k = 0; k < m * m; k++) scaled[k] = factor[k] * norm;
    for (int r = 0; r < rows; r++) row(x + (size_t)r * ld, p, m, factor, m <= 28 ? scaled : NULL, signs, scratch);
}

// The AVX2 path on 16 lanes: the same butterflies and the same sums in the same order (so the
// same floats), half the instructions. Distances 1, 2 and 4 are fwht8's permutes within each
// 128-bit lane and 8 swaps the 256-bit halves.
MQ_AVX512 static inline __m512 fwht16(__m512 v) {
    const __m512 s1 = _mm512_setr_ps(1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1);
    const __m512 s2 = _mm512_setr_ps(1, 1, -1, -1, 1, 1, -1, -1, 1, 1, -1, -1, 1, 1, -1, -1);
    const __m512 s4 = _mm512_setr_ps(1, 1, 1, 1, -1, -1, -1, -1, 1, 1, 1, 1, -1, -1, -1, -1);
    const __m512 s8 = _mm512_setr_ps(1, 1, 1, 1, 1, 1, 1, 1, -1, -1, -1, -1, -1, -1, -1, -1);
    v = _mm512_fmadd_ps(v, s1, _mm512_permute_ps(v, _MM_SHUFFLE(2, 3, 0, 1)));
    v = _mm512_fmadd_ps(v, s2, _mm512_permute_ps(v, _MM_SHUFFLE(1, 0, 3, 2)));
    v = _mm512_fmadd_ps(v, s4, _mm512_shuffle_f32x4(v, v, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm512_fmadd_ps(v, s8, _mm512_shuffle_f32x4(v, v, _MM_SHUFFLE(1, 0, 3, 2)));
}

MQ_AVX512 static void mix_blocks_avx512(float *restrict x, int p, int m, const float *restrict scaled, float *restrict scratch) {
    for (int b = 0; b < p; b += 16) {
        for (int i = 0; i < m; i += 4) {
            __m512 acc0 = _mm512_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
            for (int j = 0; j < m; j++) {
                const __m512 v = _mm512_loadu_ps(x + j * p + b);
                acc0 = _mm512_fmadd_ps(_mm512_set1_ps(scaled[i * m + j]), v, acc0);
                acc1 = _mm512_fmadd_ps(_mm512_set1_ps(scaled[(i + 1) * m + j]), v, acc1);
                acc2 = _mm512_fmadd_ps(_mm512_set1_ps(scaled[(i + 2) * m + j]), v, acc2);
                acc3 = _mm512_fmadd_ps(_mm512_set1_ps(scaled[(i + 3) * m + j]), v, acc3);
            }
            _mm512_storeu_ps(scratch + i * p + b, acc0);
            _mm512_storeu_ps(scratch + (i + 1) * p + b, acc1);
            _mm512_storeu_ps(scratch + (i + 2) * p + b, acc2);
            _mm512_storeu_ps(scratch + (i + 3) * p + b, acc3);
        }
    }
    for (int i = 0; i < m * p; i += 16) _mm512_storeu_ps(x + i, _mm512_loadu_ps(scratch + i));
}

MQ_AVX512 static void hadamard_row_avx512(float *restrict x, int p, int m, const float *restrict factor, const float *restrict scaled,
                                          const float *restrict signs, float *restrict scratch) {
    const int n = m * p;
    for (int i = 0; i < n; i += 16)
        _mm512_storeu_ps(x + i, fwht16(_mm512_mul_ps(_mm512_loadu_ps(x + i), _mm512_loadu_ps(signs + i))));
    for (int a = 0; a < m; a++) {
        float *restrict v = x + a * p;
        for (int h = 16; h < p; h *= 2)
            for (int i = 0; i < p; i += 2 * h)
                for (int j = i; j < i + h; j += 16) {
                    const __m512 u = _mm512_loadu_ps(v + j), w = _mm512_loadu_ps(v + j + h);
                    _mm512_storeu_ps(v + j, _mm512_add_ps(u, w));
                    _mm512_storeu_ps(v + j + h, _mm512_sub_ps(u, w));
                }
    }
    if (scaled && m % 4 == 0) mix_blocks_avx512(x, p, m, scaled, scratch);
    else mix_blocks(x, p, m, factor, scratch);
}

#endif

static void hadamard_rows_scalar(float *x, int rows, int ld, int p, int m, const float *factor, const float *signs, float *scratch) {
    for (int r = 0; r < rows; r++) hadamard_row(x + (size_t)r * ld, p, m, factor, signs, scratch);
}

void mq_hadamard_rows_f32(float *x, int rows, int ld, int p, int m, const float *factor, const float *signs, float *scratch) {
#if MQ_X86
    // AVX-512 for blocks of p >= 16 (every model's p is 64 or more); smaller ones take the AVX2 path.
    if (mq_f32_level() >= 2 && p >= 16) { hadamard_rows_with(hadamard_row_avx512, x, rows, ld, p, m, factor, signs, scratch); return; }
    if (mq_has_avx2_fma()) { hadamard_rows_with(hadamard_row_avx2, x, rows, ld, p, m, factor, signs, scratch); return; }
#endif
    hadamard_rows_scalar(x, rows, ld, p, m, factor, signs, scratch);
}
