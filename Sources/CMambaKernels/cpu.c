// CPU features for the BLAS core choice (see MambaTensors/BLASCore.swift).
#include "mamba_kernels.h"

const char *mq_blas_core_for_cpu(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return "Haswell";
#endif
    return 0;
}

#if defined(__x86_64__)
#include <immintrin.h>
// 32-byte loads into four vector sums: a core streams memory about as fast as the int8 decode
// products do (which read with 32-byte loads and a prefetch ahead); the scalar loop below read
// 10.8 GB/s on a Zen 3 core whose int8 products streamed 17-18 (README, "Decode on every core").
__attribute__((target("avx2"))) static uint64_t read_words_avx2(const uint64_t *p, size_t n, size_t *done) {
    __m256i a = _mm256_setzero_si256(), b = a, c = a, d = a;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        a = _mm256_add_epi64(a, _mm256_loadu_si256((const __m256i *)(p + i)));
        b = _mm256_add_epi64(b, _mm256_loadu_si256((const __m256i *)(p + i + 4)));
        c = _mm256_add_epi64(c, _mm256_loadu_si256((const __m256i *)(p + i + 8)));
        d = _mm256_add_epi64(d, _mm256_loadu_si256((const __m256i *)(p + i + 12)));
    }
    uint64_t lanes[4];
    _mm256_storeu_si256((__m256i *)lanes, _mm256_add_epi64(_mm256_add_epi64(a, b), _mm256_add_epi64(c, d)));
    *done = i;
    return lanes[0] + lanes[1] + lanes[2] + lanes[3];
}
#endif

uint64_t mq_read_words(const uint64_t *p, size_t n) {
    uint64_t a = 0, b = 0, c = 0, d = 0;
    size_t i = 0;
#if defined(__x86_64__)
    if (mq_f32_level() >= 1) a = read_words_avx2(p, n, &i);
#endif
    for (; i + 4 <= n; i += 4) {
        a += p[i];
        b += p[i + 1];
        c += p[i + 2];
        d += p[i + 3];
    }
    for (; i < n; i++) a += p[i];
    return a + b + c + d;
}

void mq_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}
