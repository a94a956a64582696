// Vectorized exp, log1p-exp and SiLU. The polynomials are Cephes' expf/logf (S. L. Moshier),
// the same ones as in many SIMD math libraries: range reduction by powers of two, then a short
// polynomial on the reduced argument.
#include "mamba_kernels.h"
#include "simd_math.h"
#include <math.h>

static int forced_scalar = 0;

int mq_has_avx2_fma(void) {
#if defined(__x86_64__) || defined(__i386__)
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    return cached && !forced_scalar;
#else
    return 0;
#endif
}

void mq_force_scalar(int force) { forced_scalar = force; }

static inline float softplus_scalar(float v) { return v > 20.0f ? v : log1pf(expf(v)); }
static inline float silu_scalar(float v) { return v / (1.0f + expf(-v)); }

#if MQ_X86
MQ_AVX2 static void silu_avx2(const float *x, float *out, size_t n) {
    size_t i = 0;
    const __m256 one = _mm256_set1_ps(1.0f);
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        __m256 e = mq_exp256(_mm256_sub_ps(_mm256_setzero_ps(), v));
        _mm256_storeu_ps(out + i, _mm256_div_ps(v, _mm256_add_ps(one, e)));
    }
    for (; i < n; i++) out[i] = silu_scalar(x[i]);
}

MQ_AVX2 static void softplus_avx2(const float *x, float *out, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, mq_softplus256(_mm256_loadu_ps(x + i)));
    for (; i < n; i++) out[i] = softplus_scalar(x[i]);
}

MQ_AVX2 static void exp_avx2(const float *x, float *out, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, mq_exp256(_mm256_loadu_ps(x + i)));
    for (; i < n; i++) out[i] = expf(x[i]);
}
#endif

void mq_silu_f32(const float *x, float *out, size_t n) {
#if MQ_X86
    if (mq_has_avx2_fma()) { silu_avx2(x, out, n); return; }
#endif
    for (size_t i = 0; i < n; i++) out[i] = silu_scalar(x[i]);
}

void mq_softplus_f32(const float *x, float *out, size_t n) {
#if MQ_X86
    if (mq_has_avx2_fma()) { softplus_avx2(x, out, n); return; }
#endif
    for (size_t i = 0; i < n; i++) out[i] = softplus_scalar(x[i]);
}

void mq_exp_f32(const float *x, float *out, size_t n) {
#if MQ_X86
    if (mq_has_avx2_fma()) { exp_avx2(x, out, n); return; }
#endif
    for (size_t i = 0; i < n; i++) out[i] = expf(x[i]);
}
