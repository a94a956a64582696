// 16-bit float weights (BF16, F16) used in place by the float runtime: a checkpoint stored in
// 16 bits runs without a float32 copy of its weights (a 7B BF16 model is 14 GB as stored, 28 GB
// widened). Each kernel has a scalar path (the reference) and an AVX2+FMA path (F16C for F16);
// mq_force_scalar (mamba_kernels.h) selects the scalar one for tests.
#ifndef MAMBA_HALF_H
#define MAMBA_HALF_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// The two 16-bit float formats: bfloat16 (the top half of a float32) and IEEE binary16.
enum { MQ_HALF_BF16 = 0, MQ_HALF_F16 = 1 };

/// out[i] = float(w[i]) for i < n (exact: every 16-bit value is a float32).
void mq_widen_half(const uint16_t *w, int format, float *out, size_t n);

/// The index of the first NaN or infinity among w[0..n), or n when all are finite.
size_t mq_first_nonfinite_half(const uint16_t *w, int format, size_t n);

/// y[i, j] = sum_p x[i, p] * float(w[j, p]) for i < m and rows j in [row_begin, row_end):
/// w is [n, k] row-major, x is [m, k] (row stride k), y is [m, ldy]. For small m (decode): the
/// weights are read once per call, and each row's sum is accumulated in float32.
void mq_gemv_half(const float *x, int m, int k, const uint16_t *w, int format,
                  int row_begin, int row_end, float *y, int ldy);

#ifdef __cplusplus
}
#endif
#endif
