// The int8 GEMM with scales per block of K (see mamba_int8.h): llama.cpp's Q8_0 granularity
// (ggml/src/ggml-quants.c, block_q8_0: 32 values and one scale), for activations (dynamic, per row
// and block) and weights (per output channel and block). Each block's int32 sum is exact; the
// float sums follow one order on every path:
//   p = (float)isum[b] * (a_scale[i, b] * w_scale[j, b]);  acc = acc + p;   c = acc + bias[j]
// No contraction into FMAs anywhere in this file, so the paths give the same floats.
#pragma clang fp contract(off)

#include "mamba_int8.h"
#include "int8_internal.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

int mq_s8_block_count(int k, int block) { return (k + block - 1) / block; }

void mq_quantize_blocks_s8(const float *x, int m, int k, int ldx, int block, int qmax, int8_t *q, int ldq, float *scales) {
    const int nb = mq_s8_block_count(k, block);
    for (int i = 0; i < m; i++) {
        const float *row = x + (size_t)i * ldx;
        int8_t *out = q + (size_t)i * ldq;
        for (int b = 0; b < nb; b++) {
            const int k0 = b * block, len = k - k0 < block ? k - k0 : block;
            float absmax;
            mq_absmax_rows_f32(row + k0, 1, len, len, &absmax);
            const float scale = absmax / (float)qmax, inv = scale > 0 ? 1 / scale : 0;
            scales[(size_t)i * nb + b] = scale;
            mq_quantize_rows_s8(row + k0, 1, len, len, &inv, qmax, out + k0, len);
        }
        if (ldq > k) memset(out + k, 0, (size_t)(ldq - k));
    }
}

void mq_s8_pack_block_scales(const float *w_scale, const int32_t *block_sums, int n, int nb, float *packed_scales, int32_t *packed_sums) {
    const int panels = (n + MQ_S8_PANEL - 1) / MQ_S8_PANEL;
    for (int p = 0; p < panels; p++)
        for (int b = 0; b < nb; b++)
            for (int r = 0; r < MQ_S8_PANEL; r++) {
                const int j = p * MQ_S8_PANEL + r;
                const size_t o = ((size_t)p * nb + b) * MQ_S8_PANEL + r;
                packed_scales[o] = j < n ? w_scale[(size_t)j * nb + b] : 0;
                packed_sums[o] = j < n ? block_sums[(size_t)j * nb + b] : 0;
            }
}

void mq_gemm_s8_blocked_reference(const mq_gemm_s8_blocked_args *g, const int8_t *w, int ldw, const float *w_scale) {
    const int nb = mq_s8_block_count(g->k, g->block);
    for (int i = 0; i < g->m; i++)
        for (int j = 0; j < g->n; j++) {
            float acc = 0;
            for (int b = 0; b < nb; b++) {
                int32_t s = 0;
                for (int t = b * g->block; t < g->k && t < (b + 1) * g->block; t++)
                    s += (int32_t)g->a[(size_t)i * g->lda + t] * (int32_t)w[(size_t)j * ldw + t];
                const float p = (float)s * (g->a_scale[(size_t)i * nb + b] * w_scale[(size_t)j * nb + b]);
                acc = acc + p;
            }
            g->c[(size_t)i * g->ldc + j] = g->bias ? acc + g->bias[j] : acc;
        }
}

static inline void store_row(const mq_gemm_s8_blocked_args *g, int i, int j0, const float *acc) {
    const int cols = g->n - j0 < MQ_S8_PANEL ? g->n - j0 : MQ_S8_PANEL;
    float *c = g->c + (size_t)i * g->ldc + j0;
    if (g->bias) {
        for (int j = 0; j < cols; j++) c[j] = acc[j] + g->bias[j0 + j];
    } else {
        for (int j = 0; j < cols; j++) c[j] = acc[j];
    }
}

static void blocked_scalar(const mq_gemm_s8_blocked_args *g) {
    const int kp = mq_s8_padded_k(g->k), nb = mq_s8_block_count(g->k, g->block), steps = g->block / MQ_S8_KSTEP;
    int8_t *unpacked = mq_s4_scratch(g->weight_bits, g->k);
    if (g->weight_bits == 4 && !unpacked) abort();   // 16 x K bytes
    for (int p = g->panel_begin; p < g->panel_end; p++) {
        const int8_t *panel = mq_panel_s8(g->packed, p, g->k, g->weight_bits, unpacked);
        const float *ws = g->w_scale + (size_t)p * nb * MQ_S8_PANEL;
        for (int i = 0; i < g->m; i++) {
            const int8_t *a = g->a + (size_t)i * g->lda;
            float acc[MQ_S8_PANEL] = {0};
            for (int b = 0; b < nb; b++) {
                int32_t sums[MQ_S8_PANEL] = {0};
                for (int s = b * steps; s < (b + 1) * steps && s < kp / MQ_S8_KSTEP; s++) {
                    const int8_t *wk = panel + (size_t)s * MQ_S8_PANEL * MQ_S8_KSTEP;
                    for (int r = 0; r < MQ_S8_PANEL; r++)
                        for (int t = 0; t < MQ_S8_KSTEP; t++) sums[r] += (int32_t)a[s * MQ_S8_KSTEP + t] * wk[r * MQ_S8_KSTEP + t];
                }
                const float as = g->a_scale[(size_t)i * nb + b];
                for (int r = 0; r < MQ_S8_PANEL; r++) {
                    const float pr = (float)sums[r] * (as * ws[b * MQ_S8_PANEL + r]);
                    acc[r] = acc[r] + pr;
                }
            }
            store_row(g, i, p * MQ_S8_PANEL, acc);
        }
    }
    free(unpacked);
}

#if MQ_X86
// AVX2: the int16 form of gemm_avx2 (panel widened once, two rows share each quarter register),
// with each block's pair sums folded to 16 int32 by vphaddd + a qword permute.
MQ_AVX2 __attribute__((always_inline)) static inline void blocked_avx2_rows(
    const mq_gemm_s8_blocked_args *g, const int16_t *a16, const int16_t *w16, const float *ws, int kp, int nb, int i, int j0, const int MR) {
    const int steps = g->block / MQ_S8_KSTEP, ksteps = kp / MQ_S8_KSTEP;
    __m256 acc[2][2];
    for (int r = 0; r < MR; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        __m256i s[2][4];
        for (int r = 0; r < MR; r++)
            for (int q = 0; q < 4; q++) s[r][q] = _mm256_setzero_si256();
        const int end = (b + 1) * steps < ksteps ? (b + 1) * steps : ksteps;
        for (int st = b * steps; st < end; st++) {
            __m256i w[4];
            for (int q = 0; q < 4; q++) w[q] = _mm256_loadu_si256((const __m256i *)(w16 + (size_t)st * 64 + q * 16));
            for (int r = 0; r < MR; r++) {
                int64_t a4;
                memcpy(&a4, a16 + (size_t)(i + r) * kp + st * MQ_S8_KSTEP, 8);
                const __m256i ar = _mm256_set1_epi64x(a4);
                for (int q = 0; q < 4; q++) s[r][q] = _mm256_add_epi32(s[r][q], _mm256_madd_epi16(w[q], ar));
            }
        }
        const __m256 ws0 = _mm256_loadu_ps(ws + b * MQ_S8_PANEL), ws1 = _mm256_loadu_ps(ws + b * MQ_S8_PANEL + 8);
        for (int r = 0; r < MR; r++) {
            // [o0 o1 o4 o5 | o2 o3 o6 o7] -> o0..o7 (and o8..o15 from quarters 2, 3).
            const __m256i lo = _mm256_permute4x64_epi64(_mm256_hadd_epi32(s[r][0], s[r][1]), 0xD8);
            const __m256i hi = _mm256_permute4x64_epi64(_mm256_hadd_epi32(s[r][2], s[r][3]), 0xD8);
            const __m256 as = _mm256_set1_ps(g->a_scale[(size_t)(i + r) * nb + b]);
            acc[r][0] = _mm256_add_ps(acc[r][0], _mm256_mul_ps(_mm256_cvtepi32_ps(lo), _mm256_mul_ps(as, ws0)));
            acc[r][1] = _mm256_add_ps(acc[r][1], _mm256_mul_ps(_mm256_cvtepi32_ps(hi), _mm256_mul_ps(as, ws1)));
        }
    }
    for (int r = 0; r < MR; r++) {
        float out[MQ_S8_PANEL];
        _mm256_storeu_ps(out, acc[r][0]);
        _mm256_storeu_ps(out + 8, acc[r][1]);
        store_row(g, i + r, j0, out);
    }
}

// AVX2 for few rows (decode): the sign trick on the panel as stored (int4 unpacked in registers),
// read once, as int8.c's block_avx2 does; per block, the 16 int32 sums come out in output order.
MQ_AVX2 __attribute__((always_inline)) static inline void blocked_avx2_sign_rows(
    const mq_gemm_s8_blocked_args *g, const int8_t *panel, const float *ws, int kp, int nb, int i0, int j0, const int MR, const int W4) {
    const int steps = g->block / MQ_S8_KSTEP, ksteps = kp / MQ_S8_KSTEP;
    const int8_t *a = g->a + (size_t)i0 * g->lda;
    __m256 acc[4][2];
    for (int r = 0; r < MR; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        __m256i s[4][2];
        for (int r = 0; r < MR; r++) s[r][0] = s[r][1] = _mm256_setzero_si256();
        const int end = (b + 1) * steps < ksteps ? (b + 1) * steps : ksteps;
        if (W4) {
            // Blocks are whole step pairs (block % 8 == 0): one pair of loads feeds two k-steps.
            for (int st = b * steps; st < end; st += 2) {
                if (MR == 1) _mm_prefetch((const char *)(panel + (size_t)st * 32 + MQ_ROW_PREFETCH_AHEAD), _MM_HINT_NTA);
                const __m256i v0 = _mm256_loadu_si256((const __m256i *)(panel + (size_t)st * 32));
                const __m256i v1 = _mm256_loadu_si256((const __m256i *)(panel + (size_t)st * 32 + 32));
                mq_step_sign_avx2(s, a, g->lda, st, mq_s4_low_avx2(v0), mq_s4_low_avx2(v1), MR);
                if (st + 1 < end) mq_step_sign_avx2(s, a, g->lda, st + 1, mq_s4_high_avx2(v0), mq_s4_high_avx2(v1), MR);
            }
        } else {
            for (int st = b * steps; st < end; st++) {
                if (MR == 1) _mm_prefetch((const char *)(panel + (size_t)st * 64 + MQ_ROW_PREFETCH_AHEAD), _MM_HINT_NTA);
                const __m256i w0 = _mm256_loadu_si256((const __m256i *)(panel + (size_t)st * 64));
                const __m256i w1 = _mm256_loadu_si256((const __m256i *)(panel + (size_t)st * 64 + 32));
                mq_step_sign_avx2(s, a, g->lda, st, w0, w1, MR);
            }
        }
        const __m256 ws0 = _mm256_loadu_ps(ws + b * MQ_S8_PANEL), ws1 = _mm256_loadu_ps(ws + b * MQ_S8_PANEL + 8);
        for (int r = 0; r < MR; r++) {
            const __m256 as = _mm256_set1_ps(g->a_scale[(size_t)(i0 + r) * nb + b]);
            acc[r][0] = _mm256_add_ps(acc[r][0], _mm256_mul_ps(_mm256_cvtepi32_ps(s[r][0]), _mm256_mul_ps(as, ws0)));
            acc[r][1] = _mm256_add_ps(acc[r][1], _mm256_mul_ps(_mm256_cvtepi32_ps(s[r][1]), _mm256_mul_ps(as, ws1)));
        }
    }
    for (int r = 0; r < MR; r++) {
        float out[MQ_S8_PANEL];
        _mm256_storeu_ps(out, acc[r][0]);
        _mm256_storeu_ps(out + 8, acc[r][1]);
        store_row(g, i0 + r, j0, out);
    }
}

MQ_AVX2 __attribute__((always_inline)) static inline void blocked_avx2_sign(const mq_gemm_s8_blocked_args *g, const int W4) {
    const int kp = mq_s8_padded_k(g->k), nb = mq_s8_block_count(g->k, g->block);
    for (int p = g->panel_begin; p < g->panel_end; p++) {
        const int8_t *panel = g->packed + (size_t)p * mq_panel_bytes(g->k, W4 ? 4 : 8);
        const float *ws = g->w_scale + (size_t)p * nb * MQ_S8_PANEL;
        switch (g->m) {
        case 4: blocked_avx2_sign_rows(g, panel, ws, kp, nb, 0, p * MQ_S8_PANEL, 4, W4); break;
        case 3: blocked_avx2_sign_rows(g, panel, ws, kp, nb, 0, p * MQ_S8_PANEL, 3, W4); break;
        case 2: blocked_avx2_sign_rows(g, panel, ws, kp, nb, 0, p * MQ_S8_PANEL, 2, W4); break;
        default: blocked_avx2_sign_rows(g, panel, ws, kp, nb, 0, p * MQ_S8_PANEL, 1, W4); break;
        }
    }
}

// AVX2 for more rows: the int16 form of gemm_avx2 (see blocked_avx2_rows).
MQ_AVX2 static void blocked_avx2(const mq_gemm_s8_blocked_args *g) {
    if (g->m <= MQ_AVX2_I16_MIN_ROWS) {
        if (g->weight_bits == 4) blocked_avx2_sign(g, 1);
        else blocked_avx2_sign(g, 0);
        return;
    }
    const int kp = mq_s8_padded_k(g->k), nb = mq_s8_block_count(g->k, g->block);
    int16_t *a16 = malloc(sizeof(int16_t) * (size_t)g->m * kp), *w16 = malloc(sizeof(int16_t) * (size_t)MQ_S8_PANEL * kp);
    int8_t *unpacked = mq_s4_scratch(g->weight_bits, g->k);
    if (!a16 || !w16 || (g->weight_bits == 4 && !unpacked)) { free(a16); free(w16); free(unpacked); blocked_scalar(g); return; }
    for (int i = 0; i < g->m; i++)
        mq_s8_widen(g->a + (size_t)i * g->lda, (size_t)kp, a16 + (size_t)i * kp);
    for (int p = g->panel_begin; p < g->panel_end; p++) {
        mq_s8_widen(mq_panel_s8(g->packed, p, g->k, g->weight_bits, unpacked), (size_t)MQ_S8_PANEL * kp, w16);
        const float *ws = g->w_scale + (size_t)p * nb * MQ_S8_PANEL;
        int i = 0;
        for (; i + 2 <= g->m; i += 2) blocked_avx2_rows(g, a16, w16, ws, kp, nb, i, p * MQ_S8_PANEL, 2);
        if (i < g->m) blocked_avx2_rows(g, a16, w16, ws, kp, nb, i, p * MQ_S8_PANEL, 1);
    }
    free(a16);
    free(w16);
    free(unpacked);
}


// VNNI: a flipped to a + 128 once; per block, 128 * the block's column sums come off each int32
// sum before it is scaled. MR rows x 2 panels.
// One k-step: each row's 4 (flipped) bytes broadcast, one vpdpbusd per panel.
MQ_VNNI __attribute__((always_inline)) static inline void blocked_step_vnni(
    __m512i s[4][2], const int8_t *a, int kp, int i0, int st, const __m512i *w, const int np, const int MR) {
    for (int r = 0; r < MR; r++) {
        int32_t a4;
        memcpy(&a4, a + (size_t)(i0 + r) * kp + st * MQ_S8_KSTEP, 4);
        const __m512i ar = _mm512_set1_epi32(a4);
        for (int q = 0; q < np; q++) s[r][q] = _mm512_dpbusd_epi32(s[r][q], ar, w[q]);
    }
}

MQ_VNNI __attribute__((always_inline)) static inline void blocked_vnni_block(
    const mq_gemm_s8_blocked_args *g, const int8_t *a, int kp, int nb, int p, const int np, int i0, const int MR, const int W4) {
    const int steps = g->block / MQ_S8_KSTEP, ksteps = kp / MQ_S8_KSTEP;
    const size_t stride = mq_panel_bytes(g->k, W4 ? 4 : 8);
    __m512 acc[4][2];
    for (int r = 0; r < MR; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (int b = 0; b < nb; b++) {
        __m512i s[4][2];
        for (int r = 0; r < MR; r++) s[r][0] = s[r][1] = _mm512_setzero_si512();
        const int end = (b + 1) * steps < ksteps ? (b + 1) * steps : ksteps;
        if (W4) {
            // Blocks are whole step pairs (block % 8 == 0): one load feeds two k-steps.
            for (int st = b * steps; st < end; st += 2) {
                __m512i lo[2], hi[2];
                for (int q = 0; q < np; q++) {
                    const __m512i v = _mm512_loadu_si512((const void *)(g->packed + (size_t)(p + q) * stride + (size_t)st * 32));
                    lo[q] = mq_s4_low_vnni(v);
                    hi[q] = mq_s4_high_vnni(v);
                }
                blocked_step_vnni(s, a, kp, i0, st, lo, np, MR);
                if (st + 1 < end) blocked_step_vnni(s, a, kp, i0, st + 1, hi, np, MR);
            }
        } else {
            for (int st = b * steps; st < end; st++) {
                __m512i w[2];
                for (int q = 0; q < np; q++) w[q] = _mm512_loadu_si512((const void *)(g->packed + (size_t)(p + q) * stride + (size_t)st * 64));
                blocked_step_vnni(s, a, kp, i0, st, w, np, MR);
            }
        }
        for (int q = 0; q < np; q++) {
            const size_t o = ((size_t)(p + q) * nb + b) * MQ_S8_PANEL;
            const __m512i correction = _mm512_slli_epi32(_mm512_loadu_si512((const void *)(g->col_sums + o)), 7);
            const __m512 ws = _mm512_loadu_ps(g->w_scale + o);
            for (int r = 0; r < MR; r++) {
                const __m512 v = _mm512_cvtepi32_ps(_mm512_sub_epi32(s[r][q], correction));
                const __m512 scale = _mm512_mul_ps(_mm512_set1_ps(g->a_scale[(size_t)(i0 + r) * nb + b]), ws);
                acc[r][q] = _mm512_add_ps(acc[r][q], _mm512_mul_ps(v, scale));
            }
        }
    }
    for (int q = 0; q < np; q++) {
        const int j = (p + q) * MQ_S8_PANEL;
        const int cols = g->n - j < MQ_S8_PANEL ? g->n - j : MQ_S8_PANEL;
        const __mmask16 mask = (__mmask16)((1u << cols) - 1);
        const __m512 bias = g->bias ? _mm512_maskz_loadu_ps(mask, g->bias + j) : _mm512_setzero_ps();
        for (int r = 0; r < MR; r++)
            _mm512_mask_storeu_ps(g->c + (size_t)(i0 + r) * g->ldc + j, mask, g->bias ? _mm512_add_ps(acc[r][q], bias) : acc[r][q]);
    }
}

MQ_VNNI __attribute__((always_inline)) static inline void blocked_vnni_panels(const mq_gemm_s8_blocked_args *g, const int8_t *a, const int W4) {
    const int kp = mq_s8_padded_k(g->k), nb = mq_s8_block_count(g->k, g->block);
    int p = g->panel_begin;
    for (; p + 2 <= g->panel_end; p += 2) {
        int i = 0;
        for (; i + 4 <= g->m; i += 4) blocked_vnni_block(g, a, kp, nb, p, 2, i, 4, W4);
        for (; i < g->m; i++) blocked_vnni_block(g, a, kp, nb, p, 2, i, 1, W4);
    }
    if (p < g->panel_end) {
        int i = 0;
        for (; i + 4 <= g->m; i += 4) blocked_vnni_block(g, a, kp, nb, p, 1, i, 4, W4);
        for (; i < g->m; i++) blocked_vnni_block(g, a, kp, nb, p, 1, i, 1, W4);
    }
}

MQ_VNNI static void blocked_vnni(const mq_gemm_s8_blocked_args *g) {
    const int kp = mq_s8_padded_k(g->k);
    int8_t *a = malloc((size_t)g->m * kp);
    if (!a) { blocked_avx2(g); return; }
    mq_s8_flip_rows(g->a, g->m, kp, g->lda, a);
    if (g->weight_bits == 4) blocked_vnni_panels(g, a, 1);
    else blocked_vnni_panels(g, a, 0);
    free(a);
}
#endif

void mq_gemm_s8_blocked(const mq_gemm_s8_blocked_args *g) {
    if (g->m <= 0 || g->panel_begin >= g->panel_end) return;
#if MQ_X86
    switch (mq_s8_level()) {
    case 3:   // not on the tiles: each K block's sums would leave them to be scaled (VNNI instead)
    case 2: blocked_vnni(g); return;
    case 1: blocked_avx2(g); return;
    default: break;
    }
#endif
    blocked_scalar(g);
}
