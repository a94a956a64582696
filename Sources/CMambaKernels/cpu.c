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
// Eight sequential streams (eight equal parts of the buffer, read side by side) of 32-byte loads
// with a prefetch 512 bytes ahead in each: a core reads memory fastest from several streams. On a
// Zen 3 one stream read 11-12 GB/s where two or more read about 17 and eight with the prefetch 18
// (about what the int8 decode products, which read three streams, stream there); 2 threads 27-35.
// The scalar loop below read one stream 8 bytes at a time: 10.8-15.6 GB/s at 1 thread
// (docs/PERFORMANCE.md, "Long prompts").
#define MQ_READ_STREAMS 8
__attribute__((target("avx2"))) static uint64_t read_words_avx2(const uint64_t *p, size_t n, size_t *done) {
    __m256i acc[MQ_READ_STREAMS];
    for (int q = 0; q < MQ_READ_STREAMS; q++) acc[q] = _mm256_setzero_si256();
    const size_t part = n / MQ_READ_STREAMS / 8 * 8;   // words per stream, whole 64-byte steps
    for (size_t i = 0; i < part; i += 8)
        for (int q = 0; q < MQ_READ_STREAMS; q++) {
            const uint64_t *w = p + (size_t)q * part + i;
            _mm_prefetch((const char *)(w + 64), _MM_HINT_T0);
            acc[q] = _mm256_add_epi64(acc[q], _mm256_add_epi64(_mm256_loadu_si256((const __m256i *)w),
                                                               _mm256_loadu_si256((const __m256i *)(w + 4))));
        }
    __m256i total = acc[0];
    for (int q = 1; q < MQ_READ_STREAMS; q++) total = _mm256_add_epi64(total, acc[q]);
    uint64_t lanes[4];
    _mm256_storeu_si256((__m256i *)lanes, total);
    *done = MQ_READ_STREAMS * part;
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
