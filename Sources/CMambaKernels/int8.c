// Int8 GEMM and activation quantization (see mamba_int8.h). The weight matrix is packed once into
// panels of 16 output rows x 4 k-values, so that one k-step of a panel is 64 contiguous bytes: a
// single zmm for vpdpbusd, two ymm for the AVX2 sign trick, and the whole matrix is one forward
// stream (what a memory-bound decode step wants). Every path accumulates the same integers exactly.
#include "mamba_kernels.h"
#include "mamba_int8.h"
#include "int8_internal.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

// No contraction into FMAs anywhere in this file, so that every path rounds an epilogue alike
// (the AVX2 functions may use FMA, and clang contracts a * b + c within a statement by default;
// the AVX2 GEMM's store_block did, and its floats differed from the other paths' in the last bit
// where a bias was added) and an output quantized in the epilogue is the float one, quantized.
#pragma clang fp contract(off)

// MARK: - Dispatch

static int max_level = -1;

static int detected_level(void) {
#if MQ_X86
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
        int vnni = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                   __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
        cached = vnni ? (mq_amx_usable() ? 3 : 2) : (avx2 ? 1 : 0);
    }
    return cached;
#else
    return 0;
#endif
}

int mq_s8_level(void) {
    int level = detected_level();
    return (max_level >= 0 && max_level < level) ? max_level : level;
}

void mq_s8_set_max_level(int level) { max_level = level; }

// MARK: - Packing

int mq_s8_padded_k(int k) { return (k + MQ_S8_KSTEP - 1) / MQ_S8_KSTEP * MQ_S8_KSTEP; }

static int panel_count(int n) { return (n + MQ_S8_PANEL - 1) / MQ_S8_PANEL; }

size_t mq_s8_packed_bytes(int n, int k) {
    return (size_t)panel_count(n) * MQ_S8_PANEL * (size_t)mq_s8_padded_k(k);
}

void mq_s8_pack(const int8_t *w, int n, int k, int ldw, int8_t *packed, int32_t *col_sums) {
    const int kp = mq_s8_padded_k(k);
    const int panels = panel_count(n);
    memset(packed, 0, mq_s8_packed_bytes(n, k));
    for (int p = 0; p < panels; p++) {
        int8_t *dst = packed + (size_t)p * MQ_S8_PANEL * kp;
        for (int r = 0; r < MQ_S8_PANEL; r++) {
            const int row = p * MQ_S8_PANEL + r;
            if (row >= n) break;
            const int8_t *src = w + (size_t)row * ldw;
            int32_t sum = 0;
            for (int j = 0; j < k; j++) {
                dst[(size_t)(j / MQ_S8_KSTEP) * (MQ_S8_PANEL * MQ_S8_KSTEP) + r * MQ_S8_KSTEP + j % MQ_S8_KSTEP] = src[j];
                sum += src[j];
            }
            col_sums[row] = sum;
        }
    }
}

size_t mq_s4_packed_bytes(int n, int k) { return (size_t)panel_count(n) * mq_panel_bytes(k, 4); }

void mq_s4_pack(const int8_t *packed8, int n, int k, uint8_t *packed4) {
    const int steps = mq_s8_padded_k(k) / MQ_S8_KSTEP, pairs = mq_s4_padded_k(k) / 8;
    for (int p = 0; p < panel_count(n); p++) {
        const int8_t *src = packed8 + (size_t)p * mq_panel_bytes(k, 8);
        uint8_t *dst = packed4 + (size_t)p * mq_panel_bytes(k, 4);
        for (int t = 0; t < pairs; t++)
            for (int i = 0; i < 64; i++) {
                const int lo = src[(size_t)(2 * t) * 64 + i];
                const int hi = 2 * t + 1 < steps ? src[(size_t)(2 * t + 1) * 64 + i] : 0;
                dst[(size_t)t * 64 + i] = (uint8_t)((lo + 8) | ((hi + 8) << 4));
            }
    }
}

void mq_packed_row(const int8_t *packed, int weight_bits, int k, int row, int8_t *out) {
    const int8_t *panel = packed + (size_t)(row / MQ_S8_PANEL) * mq_panel_bytes(k, weight_bits);
    const int r = row % MQ_S8_PANEL;
    for (int j = 0; j < k; j++) {
        const int s = j / MQ_S8_KSTEP, t = j % MQ_S8_KSTEP;
        if (weight_bits == 4) {
            const uint8_t b = (uint8_t)panel[(size_t)(s / 2) * 64 + r * MQ_S8_KSTEP + t];
            out[j] = (int8_t)(((s % 2) ? (b >> 4) : (b & 0x0F)) - 8);
        } else {
            out[j] = panel[(size_t)s * 64 + r * MQ_S8_KSTEP + t];
        }
    }
}

#if MQ_X86
MQ_AVX2 static void unpack_panel_avx2(const uint8_t *panel4, int pairs, int8_t *out) {
    const __m256i low = _mm256_set1_epi8(0x0F), eight = _mm256_set1_epi8(8);
    for (int t = 0; t < pairs; t++)
        for (int h = 0; h < 2; h++) {
            const __m256i v = _mm256_loadu_si256((const __m256i *)(panel4 + (size_t)t * 64 + 32 * h));
            _mm256_storeu_si256((__m256i *)(out + (size_t)t * 128 + 32 * h), _mm256_sub_epi8(_mm256_and_si256(v, low), eight));
            _mm256_storeu_si256((__m256i *)(out + (size_t)t * 128 + 64 + 32 * h),
                                _mm256_sub_epi8(_mm256_and_si256(_mm256_srli_epi16(v, 4), low), eight));
        }
}
#endif

void mq_s4_unpack_panel(const uint8_t *panel4, int k, int8_t *out) {
    const int pairs = mq_s4_padded_k(k) / 8;
#if MQ_X86
    if (mq_s8_level() >= 1) { unpack_panel_avx2(panel4, pairs, out); return; }
#endif
    for (int t = 0; t < pairs; t++)
        for (int i = 0; i < 64; i++) {
            const uint8_t b = panel4[(size_t)t * 64 + i];
            out[(size_t)t * 128 + i] = (int8_t)((b & 0x0F) - 8);
            out[(size_t)t * 128 + 64 + i] = (int8_t)((b >> 4) - 8);
        }
}

// MARK: - Activation quantization

// Round half away from zero, then clamp: quantizeSymmetric in MambaQuantization/QuantizedMatrix.swift.
static inline int8_t quantize_one(float x, float inv, float q) {
    float v = roundf(x * inv);
    return (int8_t)fminf(fmaxf(v, -q), q);
}

#if MQ_X86
// 8 floats -> 8 int32 rounded half away from zero and clamped. _mm256_round_ps rounds ties to even;
// where |v - r| is exactly 0.5 (v a half-integer, so v +- 0.5 is exact) the tie goes away from 0.
MQ_AVX2 static inline __m256i quantize8(__m256 x, __m256 inv, __m256 q) {
    __m256 v = _mm256_mul_ps(x, inv);
    v = _mm256_min_ps(_mm256_max_ps(v, _mm256_sub_ps(_mm256_setzero_ps(), q)), q);
    __m256 r = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 sign = _mm256_set1_ps(-0.0f), half = _mm256_set1_ps(0.5f);
    __m256 tie = _mm256_cmp_ps(_mm256_andnot_ps(sign, _mm256_sub_ps(v, r)), half, _CMP_EQ_OQ);
    __m256 away = _mm256_add_ps(v, _mm256_or_ps(half, _mm256_and_ps(sign, v)));
    return _mm256_cvtps_epi32(_mm256_blendv_ps(r, away, tie));
}

MQ_AVX2 static void quantize_row_avx2(const float *x, int k, float inv_scale, float q, int8_t *out) {
    const __m256 inv = _mm256_set1_ps(inv_scale), qv = _mm256_set1_ps(q);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    int j = 0;
    for (; j + 32 <= k; j += 32) {
        __m256i a = quantize8(_mm256_loadu_ps(x + j), inv, qv);
        __m256i b = quantize8(_mm256_loadu_ps(x + j + 8), inv, qv);
        __m256i c = quantize8(_mm256_loadu_ps(x + j + 16), inv, qv);
        __m256i d = quantize8(_mm256_loadu_ps(x + j + 24), inv, qv);
        // packs works within 128-bit lanes: the permute puts the 4-byte groups back in order.
        __m256i bytes = _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
        _mm256_storeu_si256((__m256i *)(out + j), _mm256_permutevar8x32_epi32(bytes, order));
    }
    for (; j + 8 <= k; j += 8) {
        __m256i a = quantize8(_mm256_loadu_ps(x + j), inv, qv);
        __m128i words = _mm_packs_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
        _mm_storel_epi64((__m128i *)(out + j), _mm_packs_epi16(words, words));
    }
    for (; j < k; j++) out[j] = quantize_one(x[j], inv_scale, q);
}

MQ_AVX2 static void fake_quantize_row_avx2(float *x, int k, float scale, float q) {
    const float inv_scale = 1.0f / scale;
    const __m256 inv = _mm256_set1_ps(inv_scale), qv = _mm256_set1_ps(q), s = _mm256_set1_ps(scale);
    int j = 0;
    for (; j + 8 <= k; j += 8)
        _mm256_storeu_ps(x + j, _mm256_mul_ps(_mm256_cvtepi32_ps(quantize8(_mm256_loadu_ps(x + j), inv, qv)), s));
    for (; j < k; j++) x[j] = (float)quantize_one(x[j], inv_scale, q) * scale;
}

MQ_AVX2 static float absmax_row_avx2(const float *x, int k) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 m = _mm256_setzero_ps();
    int j = 0;
    for (; j + 8 <= k; j += 8) m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + j)));
    float lanes[8];
    _mm256_storeu_ps(lanes, m);
    float r = 0;
    for (int i = 0; i < 8; i++) r = fmaxf(r, lanes[i]);
    for (; j < k; j++) r = fmaxf(r, fabsf(x[j]));
    return r;
}
#endif

#if MQ_X86
// fake_quantize_row_avx2 on 16 lanes (the tail masked): the same floats. (The same for the row
// quantizer measured no faster: it is bound by memory.)
MQ_VNNI static void fake_quantize_row_vnni(float *x, int k, float scale, float q) {
    const __m512 inv = _mm512_set1_ps(1.0f / scale), qv = _mm512_set1_ps(q), s = _mm512_set1_ps(scale);
    for (int j = 0; j < k; j += 16) {
        const __mmask16 m = mq_mask16(k - j);
        // + 0: the other paths convert through an integer, whose 0 is +0; roundscale leaves -0 from
        // (-0.5, 0). (Equal either way; this keeps the paths' bits alike.)
        const __m512 v = _mm512_mul_ps(mq_round_clamp16_vnni(_mm512_maskz_loadu_ps(m, x + j), inv, qv), s);
        _mm512_mask_storeu_ps(x + j, m, _mm512_add_ps(v, _mm512_setzero_ps()));
    }
}
#endif

// One row: out[j] = quantize_one(x[j]) for j < k, vectorized where the CPU can (the same integers).
static void quantize_row(const float *x, int k, float inv_scale, float q, int8_t *out) {
#if MQ_X86
    if (mq_s8_level() >= 1) { quantize_row_avx2(x, k, inv_scale, q, out); return; }
#endif
    for (int j = 0; j < k; j++) out[j] = quantize_one(x[j], inv_scale, q);
}

void mq_quantize_rows_s8(const float *x, int m, int k, int ldx, const float *inv_scale, int qmax,
                         int8_t *q, int ldq) {
    for (int i = 0; i < m; i++) {
        int8_t *out = q + (size_t)i * ldq;
        quantize_row(x + (size_t)i * ldx, k, inv_scale[i], (float)qmax, out);
        if (ldq > k) memset(out + k, 0, (size_t)(ldq - k));
    }
}

void mq_fake_quantize_rows_f32(float *x, int m, int k, int ldx, const float *scales, int per_row, int qmax) {
    const float qf = (float)qmax;
    for (int i = 0; i < m; i++) {
        float *row = x + (size_t)i * ldx;
        const float s = scales[per_row ? i : 0];
        if (!(s > 0)) { memset(row, 0, sizeof(float) * (size_t)k); continue; }
#if MQ_X86
        if (mq_s8_level() >= 2) { fake_quantize_row_vnni(row, k, s, qf); continue; }
        if (mq_s8_level() >= 1) { fake_quantize_row_avx2(row, k, s, qf); continue; }
#endif
        const float inv = 1.0f / s;
        for (int j = 0; j < k; j++) row[j] = (float)quantize_one(row[j], inv, qf) * s;
    }
}

void mq_absmax_rows_f32(const float *x, int m, int k, int ldx, float *absmax) {
    for (int i = 0; i < m; i++) {
        const float *row = x + (size_t)i * ldx;
#if MQ_X86
        if (mq_s8_level() >= 1) { absmax[i] = absmax_row_avx2(row, k); continue; }
#endif
        float r = 0;
        for (int j = 0; j < k; j++) r = fmaxf(r, fabsf(row[j]));
        absmax[i] = r;
    }
}

// MARK: - Depthwise conv

// Taps the AVX-512 conv holds in registers (every Mamba conv has 4); longer kernels take conv_rows.
#define MQ_CONV_REGISTER_TAPS 8
// Byte loads need BW and VL, mq_silu512 DQ: the VNNI level and the float AVX-512 level together.
#define MQ_CONV_AVX512 __attribute__((target("avx2,fma,avx512f,avx512dq,avx512bw,avx512vl")))

// Integer sums of at most K products of two int8 values: exact in int32 for any K below 2^17.
// The epilogue is two statements so that no build contracts it into an FMA (every path rounds as
// Int8Conv's definition in Swift). With `silu`, each finished row goes through the SiLU while it
// is in L1 (mq_silu_f32, the float path's own), instead of a second pass over [L, E] afterwards.
static inline __attribute__((always_inline)) void conv_rows(
    const int8_t *restrict q, int t_begin, int t_end, int e, int k, const int8_t *restrict w,
    const float *restrict out_scale, const float *restrict bias, float *restrict out, int silu) {
    enum { BLOCK = 64 };   // channels per block: the int32 sums stay in registers
    for (int t = t_begin; t < t_end; t++) {
        float *restrict o = out + (size_t)t * e;
        for (int c0 = 0; c0 < e; c0 += BLOCK) {
            const int n = e - c0 < BLOCK ? e - c0 : BLOCK;
            int32_t acc[BLOCK] = {0};
            for (int j = 0; j < k; j++) {
                const int8_t *restrict wj = w + (size_t)j * e + c0, *restrict qj = q + (size_t)(t + j) * e + c0;
                for (int c = 0; c < n; c++) acc[c] += (int32_t)wj[c] * (int32_t)qj[c];
            }
            for (int c = 0; c < n; c++) {
                const float v = (float)acc[c] * out_scale[c0 + c];
                o[c0 + c] = v + bias[c0 + c];
            }
        }
        if (silu) mq_silu_f32(o, o, (size_t)e);
    }
}

#if MQ_X86
MQ_AVX2 static void conv_rows_avx2(const int8_t *q, int t_begin, int t_end, int e, int k, const int8_t *w,
                                   const float *out_scale, const float *bias, float *out, int silu) {
    conv_rows(q, t_begin, t_end, e, k, w, out_scale, bias, out, silu);
}
#endif

#if MQ_X86
// conv_rows on 16 channels a register, for a CPU of the VNNI level (AVX-512 BW and VL): a block of
// channels at a time down the rows, its K taps' weights held in registers as floats, each tap's 16
// inputs widened int8 -> int32 -> float and summed with FMAs. Each product and every partial sum
// is an integer below 2^24 (K < 1024 taps of |w q| <= 2^14), so the float sums are exactly
// conv_rows' int32 sums, and the epilogue is the same two statements: the same floats. The SiLU
// (mq_silu512) goes on each vector before it is stored. conv_rows as the compiler vectorizes it ran
// 2.6x slower than this (a stand-alone timing at Mamba-2's 512 x 1792, K 4, without the SiLU).
MQ_CONV_AVX512 static void conv_rows_avx512(const int8_t *q, int t_begin, int t_end, int e, int k, const int8_t *w,
                                            const float *out_scale, const float *bias, float *out, int silu) {
    for (int c = 0; c < e; c += 16) {
        const __mmask16 m = mq_mask16(e - c);
        __m512 wj[MQ_CONV_REGISTER_TAPS];
        for (int j = 0; j < k; j++) wj[j] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, w + (size_t)j * e + c)));
        const __m512 scale = _mm512_maskz_loadu_ps(m, out_scale + c), b = _mm512_maskz_loadu_ps(m, bias + c);
        for (int t = t_begin; t < t_end; t++) {
            __m512 acc = _mm512_setzero_ps();
            for (int j = 0; j < k; j++) {
                const __m128i qj = _mm_maskz_loadu_epi8(m, q + (size_t)(t + j) * e + c);
                acc = _mm512_fmadd_ps(wj[j], _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(qj)), acc);
            }
            __m512 v = _mm512_mul_ps(acc, scale);
            v = _mm512_add_ps(v, b);
            _mm512_mask_storeu_ps(out + (size_t)t * e + c, m, silu ? mq_silu512(v) : v);
        }
    }
}
#endif

static void conv_s8(const int8_t *q, int t_begin, int t_end, int e, int k, const int8_t *w,
                    const float *out_scale, const float *bias, float *out, int silu) {
#if MQ_X86
    if (mq_s8_level() >= 2 && mq_f32_level() >= 2 && k <= MQ_CONV_REGISTER_TAPS) { conv_rows_avx512(q, t_begin, t_end, e, k, w, out_scale, bias, out, silu); return; }
    if (mq_s8_level() >= 1) { conv_rows_avx2(q, t_begin, t_end, e, k, w, out_scale, bias, out, silu); return; }
#endif
    conv_rows(q, t_begin, t_end, e, k, w, out_scale, bias, out, silu);
}

void mq_conv_s8(const int8_t *q, int t_begin, int t_end, int e, int k, const int8_t *w,
                const float *out_scale, const float *bias, float *out) {
    conv_s8(q, t_begin, t_end, e, k, w, out_scale, bias, out, 0);
}

void mq_conv_silu_s8(const int8_t *q, int t_begin, int t_end, int e, int k, const int8_t *w,
                     const float *out_scale, const float *bias, float *out) {
    conv_s8(q, t_begin, t_end, e, k, w, out_scale, bias, out, 1);
}

// A decode step on a state held as floats. Int8Conv's state rows are the integers of the last K-1
// quantized inputs; copying them into int8 and back around mq_conv_s8 was most of a decode step's
// conv. Here the sums are taken in float32, exact while K qmax^2 < 2^24 (the caller checks), so
// they equal mq_conv_s8's int32 sums, and the epilogue is the same two statements.
static inline __attribute__((always_inline)) float conv_step_one(float *restrict state, float qn, int c, int e, int k,
                                                                 const int8_t *restrict w, const float *restrict out_scale,
                                                                 const float *restrict bias) {
    float acc = 0.0f;
    for (int j = 0; j + 1 < k; j++) acc += (float)w[(size_t)j * e + c] * state[(size_t)j * e + c];
    acc += (float)w[(size_t)(k - 1) * e + c] * qn;
    for (int j = 0; j + 2 < k; j++) state[(size_t)j * e + c] = state[(size_t)(j + 1) * e + c];
    if (k > 1) state[(size_t)(k - 2) * e + c] = qn;
    const float v = acc * out_scale[c];
    return v + bias[c];
}

#if MQ_X86
MQ_AVX2 static int conv_step_avx2(float *state, const float *x, int e, int k, float inv_scale, float qf, const int8_t *w,
                                  const float *out_scale, const float *bias, float *out) {
    const __m256 inv = _mm256_set1_ps(inv_scale), qv = _mm256_set1_ps(qf);
    int c = 0;
    for (; c + 8 <= e; c += 8) {
        const __m256 qn = _mm256_cvtepi32_ps(quantize8(_mm256_loadu_ps(x + c), inv, qv));
        __m256 acc = _mm256_setzero_ps();
        for (int j = 0; j < k; j++) {
            const __m256 wj = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(w + (size_t)j * e + c))));
            const __m256 sj = j + 1 < k ? _mm256_loadu_ps(state + (size_t)j * e + c) : qn;
            acc = _mm256_add_ps(acc, _mm256_mul_ps(wj, sj));   // integers: exact either way
            if (j >= 1) _mm256_storeu_ps(state + (size_t)(j - 1) * e + c, sj);
        }
        _mm256_storeu_ps(out + c, _mm256_add_ps(_mm256_mul_ps(acc, _mm256_loadu_ps(out_scale + c)), _mm256_loadu_ps(bias + c)));
    }
    return c;
}
#endif

void mq_conv_step_s8(float *state, const float *x, int e, int k, float inv_scale, int qmax, const int8_t *w,
                     const float *out_scale, const float *bias, float *out, int silu) {
    const float qf = (float)qmax;
    int c = 0;
#if MQ_X86
    if (mq_s8_level() >= 1) c = conv_step_avx2(state, x, e, k, inv_scale, qf, w, out_scale, bias, out);
#endif
    for (; c < e; c++) out[c] = conv_step_one(state, (float)quantize_one(x[c], inv_scale, qf), c, e, k, w, out_scale, bias);
    if (silu) mq_silu_f32(out, out, (size_t)e);
}

// MARK: - GEMM

void mq_gemm_s8_reference(int m, int n, int k, const int8_t *a, int lda, const int8_t *w, int ldw,
                          int32_t *acc, int ldacc) {
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            int32_t s = 0;
            for (int t = 0; t < k; t++) s += (int32_t)a[(size_t)i * lda + t] * (int32_t)w[(size_t)j * ldw + t];
            acc[(size_t)i * ldacc + j] = s;
        }
}

// Row i's finished floats y[0, cols) of output columns j0.. where g->quantized_columns splits the
// output: the columns before its range to c, its range to its q as int8, the rest to its `after`.
void mq_s8_store_row_split(const mq_gemm_s8_args *g, int i, int j0, int cols, const float *y) {
    const mq_s8_column_quantizer *qc = g->quantized_columns;
    for (int j = 0; j < cols;) {
        const int col = j0 + j;
        int run;
        if (col < qc->begin) {
            run = qc->begin - col < cols - j ? qc->begin - col : cols - j;
            memcpy(g->c + (size_t)i * g->ldc + col, y + j, sizeof(float) * (size_t)run);
        } else if (col < qc->end) {
            run = qc->end - col < cols - j ? qc->end - col : cols - j;
            quantize_row(y + j, run, qc->inv_scale, (float)qc->qmax, qc->q + (size_t)i * qc->ldq + (col - qc->begin));
        } else {
            run = cols - j;
            memcpy(qc->after + (size_t)i * qc->ldafter + (col - qc->end), y + j, sizeof(float) * (size_t)run);
        }
        j += run;
    }
}

// Writes an mr x 16 block of sums (rows i0.., output columns j0..) as raw int32 or through the
// float epilogue, dropping the columns past n that the zero padding produced.
static inline void store_block(const mq_gemm_s8_args *g, int i0, int mr, int j0, int32_t sums[][MQ_S8_PANEL]) {
    const int cols = g->n - j0 < MQ_S8_PANEL ? g->n - j0 : MQ_S8_PANEL;
    for (int r = 0; r < mr; r++) {
        const int i = i0 + r;
        if (g->acc) {
            memcpy(g->acc + (size_t)i * g->ldacc + j0, sums[r], sizeof(int32_t) * (size_t)cols);
            continue;
        }
        const float as = g->a_scale[i];
        const float *ws = g->w_scale + j0;
        if (g->quantized_columns) {
            float y[MQ_S8_PANEL];
            for (int j = 0; j < cols; j++) y[j] = (float)sums[r][j] * as * ws[j];
            if (g->bias)
                for (int j = 0; j < cols; j++) y[j] += g->bias[j0 + j];
            mq_s8_store_row_split(g, i, j0, cols, y);
            continue;
        }
        float *c = g->c + (size_t)i * g->ldc + j0;
        // Two loops rather than a bias test per element, which kept this one from vectorizing
        // (measured: the whole GEMM 1.6x slower without a bias).
        if (g->bias) {
            const float *b = g->bias + j0;
            for (int j = 0; j < cols; j++) c[j] = (float)sums[r][j] * as * ws[j] + b[j];
        } else {
            for (int j = 0; j < cols; j++) c[j] = (float)sums[r][j] * as * ws[j];
        }
    }
}

void mq_s8_store_block(const mq_gemm_s8_args *g, int i0, int mr, int j0, int32_t sums[][MQ_S8_PANEL]) {
    store_block(g, i0, mr, j0, sums);
}

static void gemm_scalar(const mq_gemm_s8_args *g) {
    const int kp = mq_s8_padded_k(g->k);
    int32_t sums[1][MQ_S8_PANEL];
    int8_t *unpacked = mq_s4_scratch(g->weight_bits, g->k);
    if (g->weight_bits == 4 && !unpacked) abort();   // 16 x K bytes
    for (int p = g->panel_begin; p < g->panel_end; p++) {
        const int8_t *panel = mq_panel_s8(g->packed, p, g->k, g->weight_bits, unpacked);
        for (int i = 0; i < g->m; i++) {
            const int8_t *a = g->a + (size_t)i * g->lda;
            memset(sums, 0, sizeof sums);
            for (int s = 0; s < kp / MQ_S8_KSTEP; s++) {
                const int8_t *wk = panel + (size_t)s * MQ_S8_PANEL * MQ_S8_KSTEP;
                const int8_t *ak = a + s * MQ_S8_KSTEP;
                for (int r = 0; r < MQ_S8_PANEL; r++)
                    for (int t = 0; t < MQ_S8_KSTEP; t++) sums[0][r] += (int32_t)ak[t] * wk[r * MQ_S8_KSTEP + t];
            }
            store_block(g, i, 1, p * MQ_S8_PANEL, sums);
        }
    }
    free(unpacked);
}

#if MQ_X86
static inline int32_t load4(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

// AVX2: an MR x 16 block, the sign trick of int8_internal.h (mq_step_sign_avx2) per k-step.
MQ_AVX2 __attribute__((always_inline)) static inline void block_avx2(
    const mq_gemm_s8_args *g, const int8_t *panel, int kp, int i0, int j0, const int MR) {
    __m256i acc[4][2];
    for (int r = 0; r < MR; r++) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
    const int8_t *a = g->a + (size_t)i0 * g->lda;
    const int steps = kp / MQ_S8_KSTEP;
    if (g->weight_bits == 4) {
        // Decode reads half the bytes: each 64-byte load feeds two k-steps.
        int s = 0;
        for (; s < steps; s += 2) {
            if (MR == 1) _mm_prefetch((const char *)(panel + (size_t)s * 32 + MQ_ROW_PREFETCH_AHEAD), _MM_HINT_NTA);
            const __m256i v0 = _mm256_loadu_si256((const __m256i *)(panel + (size_t)s * 32));
            const __m256i v1 = _mm256_loadu_si256((const __m256i *)(panel + (size_t)s * 32 + 32));
            mq_step_sign_avx2(acc, a, g->lda, s, mq_s4_low_avx2(v0), mq_s4_low_avx2(v1), MR);
            if (s + 1 < steps) mq_step_sign_avx2(acc, a, g->lda, s + 1, mq_s4_high_avx2(v0), mq_s4_high_avx2(v1), MR);
        }
    } else {
        for (int s = 0; s < steps; s++) {
            if (MR == 1) _mm_prefetch((const char *)(panel + (size_t)s * 64 + MQ_ROW_PREFETCH_AHEAD), _MM_HINT_NTA);
            const __m256i w0 = _mm256_loadu_si256((const __m256i *)(panel + (size_t)s * 64));
            const __m256i w1 = _mm256_loadu_si256((const __m256i *)(panel + (size_t)s * 64 + 32));
            mq_step_sign_avx2(acc, a, g->lda, s, w0, w1, MR);
        }
    }
    int32_t sums[4][MQ_S8_PANEL];
    for (int r = 0; r < MR; r++) {
        _mm256_storeu_si256((__m256i *)sums[r], acc[r][0]);
        _mm256_storeu_si256((__m256i *)(sums[r] + 8), acc[r][1]);
    }
    store_block(g, i0, MR, j0, sums);
}

// AVX2, int16 form for prefill: the panel is widened to int16 once per call (16 rows x K, 32 bytes
// per k-value: cache-resident while every row pair of a passes over it), the activations too. Per
// k-step a quarter of the panel step (4 outputs x 4 k) is one register shared by both rows; a
// row's 4 activations are broadcast as one qword, and vpmaddwd leaves two partial sums per output
// (k0+k1, k2+k3), added at the end. Per 64 multiply-adds of a row: 4 vpmaddwd + 4 vpaddd, where
// the sign trick needs 2 vpsignb + vpabsb + 2 vpmaddubsw + 2 vpmaddwd. Measured on a Zen 4 at
// M = 512: 131 -> 148 GOP/s against widening each panel step per row pair; three rows per block
// run out of the 16 ymm registers (95 GOP/s).
MQ_AVX2 __attribute__((always_inline)) static inline void block_avx2_i16(
    const mq_gemm_s8_args *g, const int16_t *w16, int kp, const int16_t *a16, int i0, int j0, const int MR) {
    __m256i acc[3][4];
    for (int r = 0; r < MR; r++)
        for (int q = 0; q < 4; q++) acc[r][q] = _mm256_setzero_si256();
    for (int s = 0; s < kp / MQ_S8_KSTEP; s++) {
        __m256i w[4];
        for (int q = 0; q < 4; q++) w[q] = _mm256_loadu_si256((const __m256i *)(w16 + (size_t)s * 64 + q * 16));
        for (int r = 0; r < MR; r++) {
            int64_t a4;
            memcpy(&a4, a16 + (size_t)(i0 + r) * kp + s * MQ_S8_KSTEP, 8);
            const __m256i ar = _mm256_set1_epi64x(a4);
            for (int q = 0; q < 4; q++) acc[r][q] = _mm256_add_epi32(acc[r][q], _mm256_madd_epi16(w[q], ar));
        }
    }
    int32_t sums[3][MQ_S8_PANEL];
    for (int r = 0; r < MR; r++) {
        int32_t pairs[32];
        for (int q = 0; q < 4; q++) _mm256_storeu_si256((__m256i *)(pairs + 8 * q), acc[r][q]);
        for (int j = 0; j < MQ_S8_PANEL; j++) sums[r][j] = pairs[2 * j] + pairs[2 * j + 1];
    }
    store_block(g, i0, MR, j0, sums);
}


MQ_AVX2 void mq_s8_widen(const int8_t *src, size_t count, int16_t *dst) {
    size_t t = 0;
    for (; t + 16 <= count; t += 16)
        _mm256_storeu_si256((__m256i *)(dst + t), _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(src + t))));
    for (; t < count; t++) dst[t] = src[t];
}

// AVX2, one row (decode): NS panels at once, one from each of NS equal parts of the call's panel
// range, each k-step as block_avx2 takes it (the prefetch included). One core streams memory
// faster from a few sequential streams than from one (more misses in flight than one stream's
// prefetchers keep): MQ_ROW_STREAMS.
MQ_AVX2 __attribute__((always_inline)) static inline void row_streams_avx2(
    const mq_gemm_s8_args *g, const int8_t *const *panels, const int *j0, int kp, const int NS) {
    __m256i acc[MQ_ROW_STREAMS][4][2];
    for (int q = 0; q < NS; q++) acc[q][0][0] = acc[q][0][1] = _mm256_setzero_si256();
    const int steps = kp / MQ_S8_KSTEP;
    if (g->weight_bits == 4) {
        for (int s = 0; s < steps; s += 2)
            for (int q = 0; q < NS; q++) {
                const int8_t *w = panels[q] + (size_t)s * 32;
                _mm_prefetch((const char *)(w + MQ_ROW_PREFETCH_AHEAD), _MM_HINT_NTA);
                const __m256i v0 = _mm256_loadu_si256((const __m256i *)w), v1 = _mm256_loadu_si256((const __m256i *)(w + 32));
                mq_step_sign_avx2(acc[q], g->a, g->lda, s, mq_s4_low_avx2(v0), mq_s4_low_avx2(v1), 1);
                if (s + 1 < steps) mq_step_sign_avx2(acc[q], g->a, g->lda, s + 1, mq_s4_high_avx2(v0), mq_s4_high_avx2(v1), 1);
            }
    } else {
        for (int s = 0; s < steps; s++)
            for (int q = 0; q < NS; q++) {
                const int8_t *w = panels[q] + (size_t)s * 64;
                _mm_prefetch((const char *)(w + MQ_ROW_PREFETCH_AHEAD), _MM_HINT_NTA);
                mq_step_sign_avx2(acc[q], g->a, g->lda, s, _mm256_loadu_si256((const __m256i *)w),
                                  _mm256_loadu_si256((const __m256i *)(w + 32)), 1);
            }
    }
    int32_t sums[1][MQ_S8_PANEL];
    for (int q = 0; q < NS; q++) {
        _mm256_storeu_si256((__m256i *)sums[0], acc[q][0][0]);
        _mm256_storeu_si256((__m256i *)(sums[0] + 8), acc[q][0][1]);
        store_block(g, 0, 1, j0[q], sums);
    }
}

// The one-row GEMM over the call's panels in MQ_ROW_STREAMS streams; the panels past the last
// whole set (fewer than MQ_ROW_STREAMS) one stream at a time.
MQ_AVX2 static void row_gemm_avx2(const mq_gemm_s8_args *g) {
    const int kp = mq_s8_padded_k(g->k), part = (g->panel_end - g->panel_begin) / MQ_ROW_STREAMS;
    const size_t bytes = mq_panel_bytes(g->k, g->weight_bits);
    for (int p = g->panel_begin; p < g->panel_begin + part; p++) {
        const int8_t *panels[MQ_ROW_STREAMS];
        int j0[MQ_ROW_STREAMS];
        for (int q = 0; q < MQ_ROW_STREAMS; q++) {
            panels[q] = g->packed + (size_t)(p + q * part) * bytes;
            j0[q] = (p + q * part) * MQ_S8_PANEL;
        }
        row_streams_avx2(g, panels, j0, kp, MQ_ROW_STREAMS);
    }
    for (int p = g->panel_begin + MQ_ROW_STREAMS * part; p < g->panel_end; p++) {
        const int8_t *panel = g->packed + (size_t)p * bytes;
        const int j0 = p * MQ_S8_PANEL;
        row_streams_avx2(g, &panel, &j0, kp, 1);
    }
}

MQ_AVX2 static void gemm_avx2(const mq_gemm_s8_args *g) {
    if (g->m == 1) {
        row_gemm_avx2(g);
        return;
    }
    const int kp = mq_s8_padded_k(g->k);
    int16_t *a16 = NULL, *w16 = NULL;
    if (g->m > MQ_AVX2_I16_MIN_ROWS) {
        a16 = malloc(sizeof(int16_t) * (size_t)g->m * kp);
        w16 = malloc(sizeof(int16_t) * (size_t)MQ_S8_PANEL * kp);
        if (!a16 || !w16) { free(a16); free(w16); a16 = w16 = NULL; }   // the sign trick needs no scratch
    }
    // The int16 form reads a panel many times: int4 panels are unpacked once into this copy.
    int8_t *unpacked = a16 ? mq_s4_scratch(g->weight_bits, g->k) : NULL;
    if (a16 && g->weight_bits == 4 && !unpacked) { free(a16); free(w16); a16 = w16 = NULL; }
    if (a16)
        for (int i = 0; i < g->m; i++) mq_s8_widen(g->a + (size_t)i * g->lda, (size_t)kp, a16 + (size_t)i * kp);
    for (int p = g->panel_begin; p < g->panel_end; p++) {
        const int8_t *panel = g->packed + (size_t)p * mq_panel_bytes(g->k, g->weight_bits);
        const int j0 = p * MQ_S8_PANEL;
        int i = 0;
        if (a16) {
            mq_s8_widen(mq_panel_s8(g->packed, p, g->k, g->weight_bits, unpacked), (size_t)MQ_S8_PANEL * kp, w16);
            for (; i + 2 <= g->m; i += 2) block_avx2_i16(g, w16, kp, a16, i, j0, 2);
            if (i < g->m) block_avx2_i16(g, w16, kp, a16, i, j0, 1);
            continue;
        }
        for (; i + 4 <= g->m; i += 4) block_avx2(g, panel, kp, i, j0, 4);
        switch (g->m - i) {
        case 3: block_avx2(g, panel, kp, i, j0, 3); break;
        case 2: block_avx2(g, panel, kp, i, j0, 2); break;
        case 1: block_avx2(g, panel, kp, i, j0, 1); break;
        }
    }
    free(a16);
    free(w16);
    free(unpacked);
}


// One k-step of an MR x (16 * NP) block: each row's 4 bytes broadcast (flipped to a + 128 here
// unless the caller did), one vpdpbusd per panel.
MQ_VNNI __attribute__((always_inline)) static inline __m512i broadcast_a_vnni(const int8_t *row, const int flipped, int s) {
    const __m512i a = _mm512_set1_epi32(load4(row + (size_t)s * MQ_S8_KSTEP));
    return flipped ? a : _mm512_xor_si512(a, _mm512_set1_epi32((int32_t)0x80808080u));
}

MQ_VNNI __attribute__((always_inline)) static inline void step_vnni(
    __m512i acc[6][2], const int8_t *a, int lda, const int flipped, int s, const __m512i *w, const int MR, const int NP) {
    for (int r = 0; r < MR; r++) {
        const __m512i ar = broadcast_a_vnni(a + (size_t)r * lda, flipped, s);
        for (int q = 0; q < NP; q++) acc[r][q] = _mm512_dpbusd_epi32(acc[r][q], ar, w[q]);
    }
}

// One row against one panel with four accumulators (block_vnni's decode case). W4: each 64-byte
// load holds two k-steps (low and high nibbles).
MQ_VNNI __attribute__((always_inline)) static inline __m512i single_row_vnni(
    const int8_t *a, const int flipped, const int8_t *panel, int steps, const int W4) {
#define MQ_A(s) broadcast_a_vnni(a, flipped, s)
    __m512i c0 = _mm512_setzero_si512(), c1 = c0, c2 = c0, c3 = c0;
    int s = 0;
    if (W4) {
        for (; s + 4 <= steps; s += 4) {
            const __m512i v0 = _mm512_loadu_si512((const void *)(panel + (size_t)s * 32));
            const __m512i v1 = _mm512_loadu_si512((const void *)(panel + (size_t)(s + 2) * 32));
            c0 = _mm512_dpbusd_epi32(c0, MQ_A(s), mq_s4_low_vnni(v0));
            c1 = _mm512_dpbusd_epi32(c1, MQ_A(s + 1), mq_s4_high_vnni(v0));
            c2 = _mm512_dpbusd_epi32(c2, MQ_A(s + 2), mq_s4_low_vnni(v1));
            c3 = _mm512_dpbusd_epi32(c3, MQ_A(s + 3), mq_s4_high_vnni(v1));
        }
        for (; s < steps; s += 2) {
            const __m512i v = _mm512_loadu_si512((const void *)(panel + (size_t)s * 32));
            c0 = _mm512_dpbusd_epi32(c0, MQ_A(s), mq_s4_low_vnni(v));
            if (s + 1 < steps) c1 = _mm512_dpbusd_epi32(c1, MQ_A(s + 1), mq_s4_high_vnni(v));
        }
    } else {
        for (; s + 4 <= steps; s += 4) {
            c0 = _mm512_dpbusd_epi32(c0, MQ_A(s), _mm512_loadu_si512((const void *)(panel + (size_t)s * 64)));
            c1 = _mm512_dpbusd_epi32(c1, MQ_A(s + 1), _mm512_loadu_si512((const void *)(panel + (size_t)(s + 1) * 64)));
            c2 = _mm512_dpbusd_epi32(c2, MQ_A(s + 2), _mm512_loadu_si512((const void *)(panel + (size_t)(s + 2) * 64)));
            c3 = _mm512_dpbusd_epi32(c3, MQ_A(s + 3), _mm512_loadu_si512((const void *)(panel + (size_t)(s + 3) * 64)));
        }
        for (; s < steps; s++) c0 = _mm512_dpbusd_epi32(c0, MQ_A(s), _mm512_loadu_si512((const void *)(panel + (size_t)s * 64)));
    }
#undef MQ_A
    return _mm512_add_epi32(_mm512_add_epi32(c0, c1), _mm512_add_epi32(c2, c3));
}

// AVX-512 VNNI: vpdpbusd multiplies unsigned by signed bytes, so a is shifted to a + 128 (a xor
// 0x80) and 128 * col_sum is subtracted at the end. An MR x (16 * NP) block: NP panels share each
// broadcast of a. W4: int4 panels.
MQ_VNNI __attribute__((always_inline)) static inline void block_vnni(
    const mq_gemm_s8_args *g, const int8_t *a_rows, int lda, const int flipped, const int8_t *panel, size_t panel_stride,
    int kp, int i0, int j0, const int MR, const int NP, const int W4) {
    __m512i acc[6][2];
    for (int r = 0; r < MR; r++)
        for (int q = 0; q < NP; q++) acc[r][q] = _mm512_setzero_si512();
    const int8_t *a = a_rows + (size_t)i0 * lda;
    const int steps = kp / MQ_S8_KSTEP;
    if (MR == 1 && NP == 1) {
        // One row (decode): one accumulator would chain every vpdpbusd on the last (5 cycles of
        // latency per 64 bytes of weights, slower than memory streams them); four chains over
        // consecutive k-steps, summed at the end (integer sums: the same result).
        acc[0][0] = single_row_vnni(a, flipped, panel, steps, W4);
    } else if (W4) {
        // Each 64-byte load of a panel feeds two k-steps (mamba_int8.h, int4 panels).
        int s = 0;
        for (; s < steps; s += 2) {
            __m512i lo[2], hi[2];
            for (int q = 0; q < NP; q++) {
                const __m512i v = _mm512_loadu_si512((const void *)(panel + q * panel_stride + (size_t)s * 32));
                lo[q] = mq_s4_low_vnni(v);
                hi[q] = mq_s4_high_vnni(v);
            }
            step_vnni(acc, a, lda, flipped, s, lo, MR, NP);
            if (s + 1 < steps) step_vnni(acc, a, lda, flipped, s + 1, hi, MR, NP);
        }
    } else {
        for (int s = 0; s < steps; s++) {
            __m512i w[2];
            for (int q = 0; q < NP; q++) w[q] = _mm512_loadu_si512((const void *)(panel + q * panel_stride + (size_t)s * 64));
            step_vnni(acc, a, lda, flipped, s, w, MR, NP);
        }
    }
    // The 128 * col_sum correction, then the shared epilogue (int8_internal.h).
    for (int q = 0; q < NP; q++) {
        const int j = j0 + q * MQ_S8_PANEL;
        const int cols = g->n - j < MQ_S8_PANEL ? g->n - j : MQ_S8_PANEL;
        const __mmask16 mask = (__mmask16)((1u << cols) - 1);
        const __m512i correction = _mm512_slli_epi32(_mm512_maskz_loadu_epi32(mask, g->col_sums + j), 7);
        __m512i sums[6];
        for (int r = 0; r < MR; r++) sums[r] = _mm512_sub_epi32(acc[r][q], correction);
        mq_store_panel_rows_vnni(g, i0, MR, j, sums);
    }
}

#define MQ_VNNI_ROWS(NP, W4)                                                                           \
    do {                                                                                            \
        int i = 0;                                                                                  \
        for (; i + 6 <= g->m; i += 6) block_vnni(g, a, lda, flipped, panel, stride, kp, i, j0, 6, NP, W4);              \
        switch (g->m - i) {                                                                         \
        case 5: block_vnni(g, a, lda, flipped, panel, stride, kp, i, j0, 5, NP, W4); break;                             \
        case 4: block_vnni(g, a, lda, flipped, panel, stride, kp, i, j0, 4, NP, W4); break;                             \
        case 3: block_vnni(g, a, lda, flipped, panel, stride, kp, i, j0, 3, NP, W4); break;                             \
        case 2: block_vnni(g, a, lda, flipped, panel, stride, kp, i, j0, 2, NP, W4); break;                             \
        case 1: block_vnni(g, a, lda, flipped, panel, stride, kp, i, j0, 1, NP, W4); break;                             \
        }                                                                                           \
    } while (0)

#define MQ_VNNI_SINGLE_PANEL_ROWS 4

MQ_VNNI void mq_s8_flip_rows(const int8_t *a, int m, int kp, int lda, int8_t *out) {
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    for (int i = 0; i < m; i++) {
        const int8_t *src = a + (size_t)i * lda;
        int8_t *dst = out + (size_t)i * kp;
        int t = 0;
        for (; t + 64 <= kp; t += 64) _mm512_storeu_si512((void *)(dst + t), _mm512_xor_si512(_mm512_loadu_si512((const void *)(src + t)), flip));
        for (; t < kp; t++) dst[t] = (int8_t)(src[t] ^ 0x80);
    }
}

MQ_VNNI __attribute__((always_inline)) static inline void gemm_vnni_panels(const mq_gemm_s8_args *g, const int W4) {
    const int kp = mq_s8_padded_k(g->k);
    const size_t stride = mq_panel_bytes(g->k, g->weight_bits);
    // Above a few rows a is read once per panel pair: flip it to a + 128 once here instead of
    // with a vpxord per broadcast in the inner loop.
    int8_t *copy = g->m > MQ_VNNI_SINGLE_PANEL_ROWS ? malloc((size_t)g->m * kp) : NULL;
    const int flipped = copy != NULL;
    if (copy) mq_s8_flip_rows(g->a, g->m, kp, g->lda, copy);
    const int8_t *a = copy ? copy : g->a;
    const int lda = copy ? kp : g->lda;
    int p = g->panel_begin;
    // Pairs of panels share each broadcast of a (compute-bound prefill); a few rows (decode) are
    // memory-bound and stream faster from one panel at a time.
    for (; g->m > MQ_VNNI_SINGLE_PANEL_ROWS && p + 2 <= g->panel_end; p += 2) {
        const int8_t *panel = g->packed + p * stride;
        const int j0 = p * MQ_S8_PANEL;
        MQ_VNNI_ROWS(2, W4);
    }
    for (; p < g->panel_end; p++) {
        const int8_t *panel = g->packed + p * stride;
        const int j0 = p * MQ_S8_PANEL;
        MQ_VNNI_ROWS(1, W4);
    }
    free(copy);
}

MQ_VNNI static void gemm_vnni(const mq_gemm_s8_args *g) {
    if (g->weight_bits == 4) gemm_vnni_panels(g, 1);
    else gemm_vnni_panels(g, 0);
}
#endif

void mq_gemm_s8(const mq_gemm_s8_args *args) {
    if (args->m <= 0 || args->panel_begin >= args->panel_end) return;
#if MQ_X86
    switch (mq_s8_level()) {
    case 3:
        // A few rows (decode) are bound by the weights' bytes, which VNNI streams as fast without
        // the tiles' set-up and a's copy (MQ_AMX_MIN_ROWS).
        if (args->m >= MQ_AMX_MIN_ROWS) mq_gemm_s8_amx(args);
        else gemm_vnni(args);
        return;
    case 2: gemm_vnni(args); return;
    case 1: gemm_avx2(args); return;
    default: break;
    }
#endif
    gemm_scalar(args);
}

// MARK: - Roofline

#include <time.h>

static double now_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

#if MQ_X86
// Twelve independent accumulators (the GEMM's 6 x 2 block), no loads: the most vpdpbusd this core
// retires; 64 multiply-adds each.
MQ_VNNI static double peak_vnni(long iterations) {
    __m512i acc[12];
    for (int i = 0; i < 12; i++) acc[i] = _mm512_set1_epi32(i);
    const __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(-2);
    for (long it = 0; it < iterations; it++) {
        for (int i = 0; i < 12; i++) acc[i] = _mm512_dpbusd_epi32(acc[i], a, b);
    }
    __m512i sum = acc[0];
    for (int i = 1; i < 12; i++) sum = _mm512_add_epi32(sum, acc[i]);
    return (double)_mm512_reduce_add_epi32(sum);
}

// The AVX2 int16 form's inner step (block_avx2_i16): vpmaddwd + vpaddd into 8 accumulators,
// 16 multiply-adds per vpmaddwd.
MQ_AVX2 static double peak_avx2(long iterations) {
    __m256i acc[8], b[8];
    for (int i = 0; i < 8; i++) acc[i] = _mm256_set1_epi32(i), b[i] = _mm256_set1_epi16((short)(i - 4));
    __m256i a = _mm256_set1_epi16(3);
    for (long it = 0; it < iterations; it++) {
        // a "changes" every iteration, so the products cannot be hoisted out of the loop.
        __asm__ volatile("" : "+v"(a));
        for (int i = 0; i < 8; i++) acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(a, b[i]));
    }
    __m256i sum = acc[0];
    for (int i = 1; i < 8; i++) sum = _mm256_add_epi32(sum, acc[i]);
    int32_t lanes[8];
    _mm256_storeu_si256((__m256i *)lanes, sum);
    double r = 0;
    for (int i = 0; i < 8; i++) r += lanes[i];
    return r;
}
#endif

double mq_s8_peak_gops(double seconds) {
#if MQ_X86
    const int level = mq_s8_level();
    if (level == 0) return 0;
    const double macs_per_iteration = level == 3 ? 4.0 * 16384 : level == 2 ? 12.0 * 64 : 8.0 * 16;
    long iterations = 1 << 16;
    volatile double sink = 0;
    for (;;) {
        const double t0 = now_seconds();
        sink += level == 3 ? mq_amx_peak(iterations) : level == 2 ? peak_vnni(iterations) : peak_avx2(iterations);
        const double t = now_seconds() - t0;
        if (t >= seconds || iterations > (1L << 40)) return 2.0 * macs_per_iteration * (double)iterations / t / 1e9;
        iterations *= 2;
    }
#else
    (void)seconds;
    return 0;
#endif
}
