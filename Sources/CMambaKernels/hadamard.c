// The online Hadamard rotation of out_proj's input (MambaTensors/Hadamard.swift has the definition
// in double): x -> (x * signs) (H_m (x) H_p) / sqrt(m p), a fast Walsh-Hadamard transform on each of
// the m blocks of p = 2^k values, then the m x m factor across blocks. Plain loops that the
// compiler vectorizes, built twice: for AVX2 and for the baseline.
#include "mamba_kernels.h"
#include "simd_math.h"
#include <math.h>

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

#if MQ_X86
MQ_AVX2 static void hadamard_rows_avx2(float *x, int rows, int ld, int p, int m, const float *factor, const float *signs, float *scratch) {
    for (int r = 0; r < rows; r++) hadamard_row(x + (size_t)r * ld, p, m, factor, signs, scratch);
}
#endif

static void hadamard_rows_scalar(float *x, int rows, int ld, int p, int m, const float *factor, const float *signs, float *scratch) {
    for (int r = 0; r < rows; r++) hadamard_row(x + (size_t)r * ld, p, m, factor, signs, scratch);
}

void mq_hadamard_rows_f32(float *x, int rows, int ld, int p, int m, const float *factor, const float *signs, float *scratch) {
#if MQ_X86
    if (mq_has_avx2_fma()) { hadamard_rows_avx2(x, rows, ld, p, m, factor, signs, scratch); return; }
#endif
    hadamard_rows_scalar(x, rows, ld, p, m, factor, signs, scratch);
}
