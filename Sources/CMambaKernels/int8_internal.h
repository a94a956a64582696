// Helpers shared by the int8 GEMMs (int8.c: per-channel scales; int8_blocked.c: scales per block
// of K). Private to this target: not in include/.
#ifndef MQ_INT8_INTERNAL_H
#define MQ_INT8_INTERNAL_H

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
/// decode slower (README).
#define MQ_ROW_PREFETCH_AHEAD 1024

/// Panels the AVX2 one-row GEMM reads at once, one from each of as many equal parts of its range
/// (int8.c row_gemm_avx2). A Zen 3 core read 11-12 GB/s from one sequential stream and about 17
/// from two or more (a read test); decode of a random mamba-130m w8a8 checkpoint at 1 thread, 1 ->
/// 2 streams, paired median +20% (`generate`, five alternated pairs); 3 streams about the same at
/// 1 thread and a few % more than 2 at 2 threads and on mamba2-130m and mamba-1.4b; against one
/// stream, 3 gave +18% at 1 thread and +8% at 2 (README, "Decode on every core"). The same
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

/// out[i, t] = a[i, t] xor 0x80 = a + 128 as unsigned, rows of kp bytes (vpdpbusd's unsigned operand).
void mq_s8_flip_rows(const int8_t *a, int m, int kp, int lda, int8_t *out);
#endif

#endif
