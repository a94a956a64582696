// 16-bit float weights read in place (mamba_half.h). BF16 widens by a 16-bit shift; F16 by F16C's
// vcvtph2ps (or the bit manipulation of half_to_float below on the scalar path).
#include "mamba_half.h"
#include "mamba_kernels.h"
#include "simd_math.h"
#include <string.h>

static inline float bf16_to_float(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

// IEEE binary16 -> binary32, subnormals and specials included.
static inline float f16_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1F, mant = h & 0x3FF, bits;
    if (exp == 0x1F) {
        bits = sign | 0x7F800000 | (mant << 13);
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (mant << 13);
    } else if (mant == 0) {
        bits = sign;
    } else {                       // subnormal: normalize
        int e = 113;
        while (!(mant & 0x400)) { mant <<= 1; e--; }
        bits = sign | ((uint32_t)e << 23) | ((mant & 0x3FF) << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline float half_to_float(uint16_t h, int format) {
    return format == MQ_HALF_BF16 ? bf16_to_float(h) : f16_to_float(h);
}

static int has_f16c(void) {
#if MQ_X86
    static int cached = -1;
    if (cached < 0) { __builtin_cpu_init(); cached = __builtin_cpu_supports("f16c"); }
    return cached;
#else
    return 0;
#endif
}

/// 1 when the AVX2 path handles `format` on this CPU.
static int use_avx2(int format) {
    return mq_has_avx2_fma() && (format == MQ_HALF_BF16 || has_f16c());
}

size_t mq_first_nonfinite_half(const uint16_t *w, int format, size_t n) {
    // All exponent bits set: infinity or NaN.
    const uint16_t mask = format == MQ_HALF_BF16 ? 0x7F80 : 0x7C00;
    for (size_t i = 0; i < n; i++)
        if ((w[i] & mask) == mask) return i;
    return n;
}

#if MQ_X86
#define MQ_AVX2_F16C __attribute__((target("avx2,fma,f16c")))

MQ_AVX2_F16C static inline __m256 load8_half(const uint16_t *p, int format) {
    __m128i h = _mm_loadu_si128((const __m128i *)p);
    if (format == MQ_HALF_BF16) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    return _mm256_cvtph_ps(h);
}

MQ_AVX2_F16C static void widen_avx2(const uint16_t *w, int format, float *out, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, load8_half(w + i, format));
    for (; i < n; i++) out[i] = half_to_float(w[i], format);
}

MQ_AVX2 static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// One weight row against up to 4 input rows: each weight vector is widened once and used m times.
MQ_AVX2_F16C static void gemv_avx2(const float *x, int m, int k, const uint16_t *w, int format,
                                   int row_begin, int row_end, float *y, int ldy) {
    for (int i0 = 0; i0 < m; i0 += 4) {
        int mb = m - i0 < 4 ? m - i0 : 4;
        const float *xb = x + (size_t)i0 * k;
        for (int j = row_begin; j < row_end; j++) {
            const uint16_t *wr = w + (size_t)j * k;
            __m256 acc[4][2];
            for (int i = 0; i < 4; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
            int p = 0;
            for (; p + 16 <= k; p += 16) {
                __m256 w0 = load8_half(wr + p, format), w1 = load8_half(wr + p + 8, format);
                for (int i = 0; i < mb; i++) {
                    acc[i][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xb + (size_t)i * k + p), acc[i][0]);
                    acc[i][1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xb + (size_t)i * k + p + 8), acc[i][1]);
                }
            }
            for (int i = 0; i < mb; i++) {
                float s = hsum8(_mm256_add_ps(acc[i][0], acc[i][1]));
                for (int q = p; q < k; q++) s += xb[(size_t)i * k + q] * half_to_float(wr[q], format);
                y[(size_t)(i0 + i) * ldy + j] = s;
            }
        }
    }
}
#endif

void mq_widen_half(const uint16_t *w, int format, float *out, size_t n) {
#if MQ_X86
    if (use_avx2(format)) { widen_avx2(w, format, out, n); return; }
#endif
    for (size_t i = 0; i < n; i++) out[i] = half_to_float(w[i], format);
}

void mq_gemv_half(const float *x, int m, int k, const uint16_t *w, int format,
                  int row_begin, int row_end, float *y, int ldy) {
#if MQ_X86
    if (use_avx2(format)) { gemv_avx2(x, m, k, w, format, row_begin, row_end, y, ldy); return; }
#endif
    for (int i = 0; i < m; i++)
        for (int j = row_begin; j < row_end; j++) {
            const uint16_t *wr = w + (size_t)j * k;
            const float *xr = x + (size_t)i * k;
            float s = 0;
            for (int p = 0; p < k; p++) s += xr[p] * half_to_float(wr[p], format);
            y[(size_t)i * ldy + j] = s;
        }
}
