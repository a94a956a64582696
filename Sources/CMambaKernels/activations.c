// Vectorized exp, log1p-exp and SiLU. The polynomials are Cephes' expf/logf (S. L. Moshier),
// the same ones as in many SIMD math libraries: range reduction by powers of two, then a short
// polynomial on the reduced argument.
#include "mamba_kernels.h"
#include "simd_math.h"
#include <math.h>

static int max_level = -1;

// 0 scalar, 1 AVX2 + FMA, 2 AVX-512 F/DQ as well.
static int detected_level(void) {
#if defined(__x86_64__) || defined(__i386__)
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        const int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
        cached = avx2 ? (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") ? 2 : 1) : 0;
    }
    return cached;
#else
    return 0;
#endif
}

int mq_f32_level(void) {
    const int level = detected_level();
    return max_level >= 0 && max_level < level ? max_level : level;
}

void mq_f32_set_max_level(int level) { max_level = level; }

int mq_has_avx2_fma(void) { return mq_f32_level() >= 1; }

void mq_force_scalar(int force) { max_level = force ? 0 : -1; }

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

MQ_AVX512 static void silu_avx512(const float *x, float *out, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(out + i, mq_silu512(_mm512_loadu_ps(x + i)));
    if (i < n) {
        const __mmask16 tail = mq_mask16((int)(n - i));
        _mm512_mask_storeu_ps(out + i, tail, mq_silu512(_mm512_maskz_loadu_ps(tail, x + i)));
    }
}

MQ_AVX2 static void softplus_avx2(const float *x, float *out, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, mq_softplus256(_mm256_loadu_ps(x + i)));
    for (; i < n; i++) out[i] = softplus_scalar(x[i]);
}

MQ_AVX512 static void softplus_avx512(const float *x, float *out, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(out + i, mq_softplus512(_mm512_loadu_ps(x + i)));
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
    if (mq_f32_level() >= 2) { silu_avx512(x, out, n); return; }
    if (mq_has_avx2_fma()) { silu_avx2(x, out, n); return; }
#endif
    for (size_t i = 0; i < n; i++) out[i] = silu_scalar(x[i]);
}

void mq_softplus_f32(const float *x, float *out, size_t n) {
#if MQ_X86
    if (mq_f32_level() >= 2) { softplus_avx512(x, out, n); return; }
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

// The gate of the Mamba block (MambaModel/Ops.swift SiLUGate, MambaModel/TransformOps.swift
// SmoothSiLUGate) in one pass per row: the same operations in the same order as the separate
// passes it replaces (s * z, SiLU, then * y or * (y / s)).
static inline float gate_scalar(float y, float z, const float *s, int j) {
    return s ? silu_scalar(s[j] * z) * (y / s[j]) : silu_scalar(z) * y;
}

#if MQ_X86
MQ_AVX2 static void gate_row_avx2(const float *y, const float *z, const float *s, float *out, int e) {
    const __m256 one = _mm256_set1_ps(1.0f);
    int j = 0;
    for (; j + 8 <= e; j += 8) {
        __m256 v = _mm256_loadu_ps(z + j), yv = _mm256_loadu_ps(y + j);
        if (s) {
            const __m256 sv = _mm256_loadu_ps(s + j);
            v = _mm256_mul_ps(sv, v);
            yv = _mm256_div_ps(yv, sv);
        }
        const __m256 silu = _mm256_div_ps(v, _mm256_add_ps(one, mq_exp256(_mm256_sub_ps(_mm256_setzero_ps(), v))));
        _mm256_storeu_ps(out + j, _mm256_mul_ps(silu, yv));
    }
    for (; j < e; j++) out[j] = gate_scalar(y[j], z[j], s, j);
}

// mq_silu512's SiLU; with s, silu(s z) / s = z sigmoid(s z) times y, the division by s folded
// away (the same function, rounded differently from gate_scalar's y / s).
MQ_AVX512 static void gate_row_avx512(const float *y, const float *z, const float *s, float *out, int e) {
    for (int j = 0; j < e; j += 16) {
        const __mmask16 m = mq_mask16(e - j);
        const __m512 zv = _mm512_maskz_loadu_ps(m, z + j), yv = _mm512_maskz_loadu_ps(m, y + j);
        __m512 g;
        if (s) {
            const __m512 sz = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, s + j), zv);
            g = _mm512_mul_ps(_mm512_mul_ps(zv, yv), mq_sigmoid512(sz));
        } else {
            g = _mm512_mul_ps(mq_silu512(zv), yv);
        }
        _mm512_mask_storeu_ps(out + j, m, g);
    }
}
#endif

void mq_gate_rows_f32(const float *y, const float *z, const float *s, float *out, int rows, int e) {
    for (int r = 0; r < rows; r++) {
        const size_t o = (size_t)r * e;
#if MQ_X86
        if (mq_f32_level() >= 2) { gate_row_avx512(y + o, z + o, s, out + o, e); continue; }
        if (mq_has_avx2_fma()) { gate_row_avx2(y + o, z + o, s, out + o, e); continue; }
#endif
        for (int j = 0; j < e; j++) out[o + j] = gate_scalar(y[o + j], z[o + j], s, j);
    }
}

// ---- the conv and its SiLU (mq_conv_silu_f32) ----

static inline const float *conv_row(const float *history, const float *x, int i, int k, int e) {
    return i < k - 1 ? history + (size_t)i * e : x + (size_t)(i - (k - 1)) * e;
}

static void conv_silu_scalar(const float *history, const float *x, int t0, int t1, int e, int k, const float *w,
                             const float *bias, float *out) {
    for (int t = t0; t < t1; t++) {
        float *o = out + (size_t)t * e;
        for (int c = 0; c < e; c++) o[c] = bias[c];
        for (int j = 0; j < k; j++) {
            const float *in = conv_row(history, x, t + j, k, e), *wj = w + (size_t)j * e;
            for (int c = 0; c < e; c++) o[c] += wj[c] * in[c];
        }
        for (int c = 0; c < e; c++) o[c] = silu_scalar(o[c]);
    }
}

#if MQ_X86
// Taps summed in the scalar loop's order (bias first, then j = 0..k-1) with FMAs.
MQ_AVX2 static void conv_silu_avx2(const float *history, const float *x, int t0, int t1, int e, int k, const float *w,
                                   const float *bias, float *out) {
    const __m256 one = _mm256_set1_ps(1.0f);
    const int ev = e - e % 8;
    for (int t = t0; t < t1; t++) {
        float *o = out + (size_t)t * e;
        for (int c = 0; c < ev; c += 8) {
            __m256 acc = _mm256_loadu_ps(bias + c);
            for (int j = 0; j < k; j++)
                acc = _mm256_fmadd_ps(_mm256_loadu_ps(w + (size_t)j * e + c), _mm256_loadu_ps(conv_row(history, x, t + j, k, e) + c), acc);
            const __m256 en = mq_exp256(_mm256_sub_ps(_mm256_setzero_ps(), acc));
            _mm256_storeu_ps(o + c, _mm256_div_ps(acc, _mm256_add_ps(one, en)));
        }
        for (int c = ev; c < e; c++) {
            float acc = bias[c];
            for (int j = 0; j < k; j++) acc = fmaf(w[(size_t)j * e + c], conv_row(history, x, t + j, k, e)[c], acc);
            o[c] = silu_scalar(acc);
        }
    }
}

// conv_silu_avx2 on 16 lanes (a masked tail instead of the scalar one) with mq_silu512.
MQ_AVX512 static void conv_silu_avx512(const float *history, const float *x, int t0, int t1, int e, int k, const float *w,
                                       const float *bias, float *out) {
    for (int t = t0; t < t1; t++) {
        float *o = out + (size_t)t * e;
        for (int c = 0; c < e; c += 16) {
            const __mmask16 m = mq_mask16(e - c);
            __m512 acc = _mm512_maskz_loadu_ps(m, bias + c);
            for (int j = 0; j < k; j++)
                acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w + (size_t)j * e + c),
                                      _mm512_maskz_loadu_ps(m, conv_row(history, x, t + j, k, e) + c), acc);
            _mm512_mask_storeu_ps(o + c, m, mq_silu512(acc));
        }
    }
}
#endif

void mq_conv_silu_f32(const float *history, const float *x, int t_begin, int t_end, int e, int k, const float *w,
                      const float *bias, float *out) {
#if MQ_X86
    if (mq_f32_level() >= 2) { conv_silu_avx512(history, x, t_begin, t_end, e, k, w, bias, out); return; }
    if (mq_has_avx2_fma()) { conv_silu_avx2(history, x, t_begin, t_end, e, k, w, bias, out); return; }
#endif
    conv_silu_scalar(history, x, t_begin, t_end, e, k, w, bias, out);
}

// ---- RMSNorm over groups of a row (mq_rmsnorm_f32) ----

// The sum of squares in lanes (one chain per lane, two registers) and then across them; the
// scalar path keeps the plain loop's single chain. A row's group of `size` channels:
// out = weight * (x * (1 / sqrt(mean(x^2) + eps))), the reference's rounding order after the sum.
static float sum_squares_scalar(const float *x, int n) {
    float s = 0;
    for (int j = 0; j < n; j++) s += x[j] * x[j];
    return s;
}

#if MQ_X86
MQ_AVX2 static float sum_squares_avx2(const float *x, int n) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int j = 0;
    for (; j + 16 <= n; j += 16) {
        const __m256 v0 = _mm256_loadu_ps(x + j), v1 = _mm256_loadu_ps(x + j + 8);
        a0 = _mm256_fmadd_ps(v0, v0, a0);
        a1 = _mm256_fmadd_ps(v1, v1, a1);
    }
    for (; j + 8 <= n; j += 8) {
        const __m256 v = _mm256_loadu_ps(x + j);
        a0 = _mm256_fmadd_ps(v, v, a0);
    }
    a0 = _mm256_add_ps(a0, a1);
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(a0), _mm256_extractf128_ps(a0, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    float s = _mm_cvtss_f32(h);
    for (; j < n; j++) s += x[j] * x[j];
    return s;
}
#endif

static float sum_squares(const float *x, int n) {
#if MQ_X86
    if (mq_has_avx2_fma()) return sum_squares_avx2(x, n);
#endif
    return sum_squares_scalar(x, n);
}

void mq_rmsnorm_f32(const float *x, int rows, int cols, int groups, const float *weight, float eps, float *out) {
    const int size = cols / groups;
    for (int r = 0; r < rows; r++) {
        for (int g = 0; g < groups; g++) {
            const size_t base = (size_t)r * cols + (size_t)g * size;
            const float *xr = x + base;
            float *o = out + base;
            const float inv = 1.0f / sqrtf(sum_squares(xr, size) / (float)size + eps);
            if (weight) {
                const float *w = weight + (size_t)g * size;
                for (int j = 0; j < size; j++) o[j] = w[j] * (xr[j] * inv);
            } else {
                for (int j = 0; j < size; j++) o[j] = xr[j] * inv;
            }
        }
    }
}
