// Helpers shared by the int8 GEMMs (int8.c: per-channel scales; int8_blocked.c: scales per block
// of K). Private to this target: not in include/.
#ifndef MQ_INT8_INTERNAL_H
#define MQ_INT8_INTERNAL_H

#include "mamba_int8.h"
#include "simd_math.h"
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/// K padded for int4 panels: whole step pairs.
static inline int mq_s4_padded_k(int k) { return (k + 7) / 8 * 8; }

/// Bytes of one packed panel of K = k (padded) values: int8 (weight_bits 8) or int4 (4).
static inline size_t mq_panel_bytes(int k, int weight_bits) {
    return weight_bits == 4 ? (size_t)8 * (size_t)mq_s4_padded_k(k) : (size_t)16 * (size_t)((k + 3) / 4 * 4);
}

/// One int4 panel (mq_s4_pack) back to the int8 panel layout: 16 * mq_s4_padded_k(k) bytes (the
/// paths that read a panel many times from a scratch copy: scalar, the AVX2 int16 form).
void mq_s4_unpack_panel(const uint8_t *panel4, int k, int8_t *out);

/// Rows i0..i0+mr-1 of the 16 output columns from j0 (one panel), exact int32 sums, written as
/// raw int32 or through the float epilogue (int8.c; the scalar and AVX2 GEMMs' store).
void mq_s8_store_block(const mq_gemm_s8_args *g, int i0, int mr, int j0, int32_t sums[][MQ_S8_PANEL]);

/// Row i's finished floats y[0, cols) of output columns j0.. where g->quantized_columns splits
/// the output (mamba_int8.h, mq_s8_column_quantizer).
void mq_s8_store_row_split(const mq_gemm_s8_args *g, int i, int j0, int cols, const float *y);

/// Scratch for one unpacked int4 panel (NULL for int8 weights, which are read in place). The paths
/// that read a panel from memory many times unpack it once per call into this.
static inline int8_t *mq_s4_scratch(int weight_bits, int k) {
    return weight_bits == 4 ? malloc((size_t)16 * (size_t)mq_s4_padded_k(k)) : NULL;
}

/// Panel p of packed weights as int8: in place, or (int4) unpacked into `scratch`.
static inline const int8_t *mq_panel_s8(const int8_t *packed, int p, int k, int weight_bits, int8_t *scratch) {
    const int8_t *panel = packed + (size_t)p * mq_panel_bytes(k, weight_bits);
    if (weight_bits != 4) return panel;
    mq_s4_unpack_panel((const uint8_t *)panel, k, scratch);
    return scratch;
}

#if MQ_X86
#define MQ_VNNI __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni")))

/// Rows at or below this count take the sign trick on int8 in both AVX2 GEMMs (decode is
/// memory-bound and needs no int16 copy of the panel or the activations); above it, the int16 form.
#define MQ_AVX2_I16_MIN_ROWS 4

/// dst[t] = src[t] sign-extended to int16, t < count (the AVX2 int16 form's operands).
void mq_s8_widen(const int8_t *src, size_t count, int16_t *dst);

/// How far ahead a one-row AVX2 product prefetches its panel (bytes; non-temporal). Decode streams
/// every weight once per token, and the prefetch keeps more lines in flight than the hardware
/// prefetcher alone (in_proj's one-row product 5.2 -> 4.6 ms a token, `bench --steps`). Measured on
/// an AMD EPYC Zen 3 (random mamba-130m w8a8 and mamba2-130m w4a8 checkpoints, `generate`, paired
/// alternated runs, medians): decode +11% and +11% at 1 thread, +15% and +2% at 2. 2 KB ahead was
/// no better; T0 instead of NTA was 7% slower on mamba2-130m, whose [H, P, N] states (19 MB a
/// token) also want the cache. The VNNI one-row loop has none: on a Zen 4 a prefetch there made
/// decode slower (docs/PERFORMANCE.md, "Long prompts").
#define MQ_ROW_PREFETCH_AHEAD 1024

/// Panels the AVX2 one-row GEMM reads at once, one from each of as many equal parts of its range
/// (int8.c row_gemm_avx2). A Zen 3 core read 11-12 GB/s from one sequential stream and about 17
/// from two or more (a read test); decode of a random mamba-130m w8a8 checkpoint at 1 thread, 1 ->
/// 2 streams, paired median +20% (`generate`, five alternated pairs); 3 streams about the same at
/// 1 thread and a few % more than 2 at 2 threads and on mamba2-130m and mamba-1.4b; against one
/// stream, 3 gave +18% at 1 thread and +8% at 2 (docs/PERFORMANCE.md, "Long prompts"). The same
/// integers in any order.
#define MQ_ROW_STREAMS 3

/// One k-step of the AVX2 sign trick for MR rows x 16 outputs, on int8 weights as packed (the
/// few-row form of both GEMMs: decode reads the panel once and needs no widened copy). Each row's
/// 4 bytes are broadcast; vpsignb moves a's sign onto the weights so vpmaddubsw can take |a| as its
/// unsigned operand (|a| <= 127, so the int16 pair sums stay below 2 * 127 * 127 and never
/// saturate); vpmaddwd with ones widens to int32. acc[r][0] holds outputs 0-7, acc[r][1] 8-15.
MQ_AVX2 __attribute__((always_inline)) static inline void mq_step_sign_avx2(
    __m256i acc[4][2], const int8_t *a, int lda, int s, __m256i w0, __m256i w1, const int MR) {
    const __m256i ones = _mm256_set1_epi16(1);
    for (int r = 0; r < MR; r++) {
        int32_t a4;
        memcpy(&a4, a + (size_t)r * lda + s * MQ_S8_KSTEP, 4);
        const __m256i ar = _mm256_set1_epi32(a4);
        const __m256i abs = _mm256_abs_epi8(ar);
        const __m256i p0 = _mm256_maddubs_epi16(abs, _mm256_sign_epi8(w0, ar));
        const __m256i p1 = _mm256_maddubs_epi16(abs, _mm256_sign_epi8(w1, ar));
        acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(p0, ones));
        acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(p1, ones));
    }
}

/// The two int8 halves of a 32-byte int4 register: low nibbles (the pair's first step), high
/// nibbles (the second).
MQ_AVX2 static inline __m256i mq_s4_low_avx2(__m256i v) {
    return _mm256_sub_epi8(_mm256_and_si256(v, _mm256_set1_epi8(0x0F)), _mm256_set1_epi8(8));
}
MQ_AVX2 static inline __m256i mq_s4_high_avx2(__m256i v) {
    return _mm256_sub_epi8(_mm256_and_si256(_mm256_srli_epi16(v, 4), _mm256_set1_epi8(0x0F)), _mm256_set1_epi8(8));
}

/// The two int8 halves of a 64-byte int4 register (mamba_int8.h): the pair's first k-step from the
/// low nibbles, the second from the high ones.
MQ_VNNI static inline __m512i mq_s4_low_vnni(__m512i v) {
    return _mm512_sub_epi8(_mm512_and_si512(v, _mm512_set1_epi8(0x0F)), _mm512_set1_epi8(8));
}
MQ_VNNI static inline __m512i mq_s4_high_vnni(__m512i v) {
    return _mm512_sub_epi8(_mm512_and_si512(_mm512_srli_epi16(v, 4), _mm512_set1_epi8(0x0F)), _mm512_set1_epi8(8));
}

/// 16 floats quantized as mq_quantize_rows_s8 does (x * inv, clamped to +-q, rounded half away
/// from zero: roundscale rounds ties to even, and where |v - r| is exactly 0.5 the tie goes away),
/// as integral floats; mq_quantize16_vnni narrows them to int8.
MQ_VNNI static inline __m512 mq_round_clamp16_vnni(__m512 x, __m512 inv, __m512 q) {
    __m512 v = _mm512_mul_ps(x, inv);
    v = _mm512_min_ps(_mm512_max_ps(v, _mm512_sub_ps(_mm512_setzero_ps(), q)), q);
    const __m512 r = _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 half = _mm512_set1_ps(0.5f);
    const __mmask16 tie = _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_sub_ps(v, r)), half, _CMP_EQ_OQ);
    const __m512 away = _mm512_add_ps(v, _mm512_castsi512_ps(_mm512_or_si512(
        _mm512_castps_si512(half), _mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32((int32_t)0x80000000u)))));
    return _mm512_mask_blend_ps(tie, r, away);
}

MQ_VNNI static inline __m128i mq_quantize16_vnni(__m512 x, __m512 inv, __m512 q) {
    return _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(mq_round_clamp16_vnni(x, inv, q)));
}

/// mq_s8_store_block in registers (the VNNI and AMX GEMMs): mr rows of one panel's exact sums, from
/// row i0 and output column j, as raw int32 or as acc * a_scale[i] * w_scale[j] (+ bias[j]),
/// unfused so that every path rounds alike, masked to the columns below n. Where the output is
/// split (g->quantized_columns) a panel inside one part is stored there in registers, as int8 in
/// the quantized range (in_proj's x for the int8 conv: a call per row and panel cost Mamba-2's
/// in_proj twice its product); a panel across a boundary goes through mq_s8_store_row_split.
MQ_VNNI __attribute__((always_inline)) static inline void mq_store_panel_rows_vnni(
    const mq_gemm_s8_args *g, int i0, int mr, int j, const __m512i *sums) {
    const int cols = g->n - j < MQ_S8_PANEL ? g->n - j : MQ_S8_PANEL;
    const __mmask16 mask = (__mmask16)((1u << cols) - 1);
    if (g->acc) {
        for (int r = 0; r < mr; r++) _mm512_mask_storeu_epi32(g->acc + (size_t)(i0 + r) * g->ldacc + j, mask, sums[r]);
        return;
    }
    const __m512 ws = _mm512_maskz_loadu_ps(mask, g->w_scale + j);
    const __m512 bias = g->bias ? _mm512_maskz_loadu_ps(mask, g->bias + j) : _mm512_setzero_ps(); // y + 0 = y
    const mq_s8_column_quantizer *qc = g->quantized_columns;
    // The panel's part: c (also without a split), the quantized range, `after`, or across a boundary.
    enum { to_c, to_q, to_after, split } part = to_c;
    if (qc) part = j + cols <= qc->begin ? to_c : (j >= qc->begin && j + cols <= qc->end) ? to_q : j >= qc->end ? to_after : split;
    for (int r = 0; r < mr; r++) {
        const int i = i0 + r;
        const __m512 v = _mm512_cvtepi32_ps(sums[r]);
        const __m512 y = _mm512_add_ps(_mm512_mul_ps(_mm512_mul_ps(v, _mm512_set1_ps(g->a_scale[i])), ws), bias);
        switch (part) {
        case to_c: _mm512_mask_storeu_ps(g->c + (size_t)i * g->ldc + j, mask, y); break;
        case to_after: _mm512_mask_storeu_ps(qc->after + (size_t)i * qc->ldafter + (j - qc->end), mask, y); break;
        case to_q:
            _mm_mask_storeu_epi8(qc->q + (size_t)i * qc->ldq + (j - qc->begin), mask,
                                 mq_quantize16_vnni(y, _mm512_set1_ps(qc->inv_scale), _mm512_set1_ps((float)qc->qmax)));
            break;
        case split: {
            float row[MQ_S8_PANEL];
            _mm512_storeu_ps(row, y);
            mq_s8_store_row_split(g, i, j, cols, row);
            break;
        }
        }
    }
}

/// Rows from which mq_gemm_s8 takes the AMX tiles on a CPU that has them (level 3). A stand-alone
/// timing at in_proj's mamba2-130m shape (N 3352, K 768, best of 300, Emerald Rapids): VNNI 0.130
/// and 0.143 ms at 8 and 12 rows against the tiles' 0.093 and 0.099; at 1 and 5 rows the two were
/// within 5% (0.074 / 0.078, 0.085 / 0.088), at 2 and 4 the tiles 8-19% ahead.
#define MQ_AMX_MIN_ROWS 8

/// The CPU has AMX-TILE and AMX-INT8 and the kernel granted this process the tile state
/// (int8_amx.c; asked once).
int mq_amx_usable(void);
/// The packed GEMM on AMX tiles (int8_amx.c).
void mq_gemm_s8_amx(const mq_gemm_s8_args *args);
/// `iterations` rounds of four independent TDPBSSD (the AMX roofline of mq_s8_peak_gops).
double mq_amx_peak(long iterations);

/// out[i, t] = a[i, t] xor 0x80 = a + 128 as unsigned, rows of kp bytes (vpdpbusd's unsigned operand).
void mq_s8_flip_rows(const int8_t *a, int m, int kp, int lda, int8_t *out);
#endif

#endif
