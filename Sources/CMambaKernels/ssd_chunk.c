// The two elementwise passes of Mamba-2's chunked SSD (MambaModel/ChunkedSSD.swift): what is left
// of a chunk besides its matrix products. Each is one plain loop nest, compiled three times (no
// target, AVX2 + FMA, AVX-512) so the compiler vectorizes it for each; mq_f32_level picks one, and
// the scalar one is the reference the tests run the others against.
#include "mamba_kernels.h"
#include "simd_math.h"

__attribute__((always_inline)) static inline void chunk_inputs(const mq_ssd_chunk_inputs_args *a) {
    const int P = a->head_dim, width = a->heads * P;
    for (int t = 0; t < a->rows; t++) {
        const float *xr = a->x + (size_t)t * a->ldx, *dr = a->dt + (size_t)t * a->ldd;
        float *sr = a->xs + (size_t)t * width, *er = a->xe + (size_t)t * width;
        for (int k = 0; k < a->heads; k++) {
            const float d = dr[k], u = a->e_neg[(size_t)k * a->q + t] * d, v = a->to_end[(size_t)k * a->q + t] * d;
            const float *restrict xi = xr + (size_t)k * P;
            float *restrict si = sr + (size_t)k * P;
            float *restrict ei = er + (size_t)k * P;
            for (int i = 0; i < P; i++) {
                si[i] = u * xi[i];
                ei[i] = v * xi[i];
            }
        }
    }
}

__attribute__((always_inline)) static inline void chunk_output(const mq_ssd_chunk_output_args *a) {
    const int P = a->head_dim;
    for (int t = 0; t < a->rows; t++) {
        const float *ar = a->intra + (size_t)t * a->ldw, *xr = a->x + (size_t)t * a->ldx;
        const float *sr = a->inter ? a->inter + (size_t)t * a->ldw : NULL;
        float *yr = a->y + (size_t)t * a->ldy;
        for (int k = 0; k < a->heads; k++) {
            const float m = a->e_mid[(size_t)k * a->q + t], d = a->D[k];
            const float *restrict ai = ar + (size_t)k * P, *restrict xi = xr + (size_t)k * P;
            float *restrict yi = yr + (size_t)k * P;
            if (sr) {
                const float e = a->e_pos[(size_t)k * a->q + t];
                const float *restrict si = sr + (size_t)k * P;
                for (int i = 0; i < P; i++) yi[i] = e * si[i] + m * ai[i] + d * xi[i];
            } else {
                for (int i = 0; i < P; i++) yi[i] = m * ai[i] + d * xi[i];
            }
        }
    }
}

static void chunk_inputs_scalar(const mq_ssd_chunk_inputs_args *a) { chunk_inputs(a); }
static void chunk_output_scalar(const mq_ssd_chunk_output_args *a) { chunk_output(a); }
#if MQ_X86
MQ_AVX2 static void chunk_inputs_avx2(const mq_ssd_chunk_inputs_args *a) { chunk_inputs(a); }
MQ_AVX2 static void chunk_output_avx2(const mq_ssd_chunk_output_args *a) { chunk_output(a); }
MQ_AVX512 static void chunk_inputs_avx512(const mq_ssd_chunk_inputs_args *a) { chunk_inputs(a); }
MQ_AVX512 static void chunk_output_avx512(const mq_ssd_chunk_output_args *a) { chunk_output(a); }
#endif

void mq_ssd_chunk_inputs_f32(const mq_ssd_chunk_inputs_args *args) {
#if MQ_X86
    if (mq_f32_level() >= 2) { chunk_inputs_avx512(args); return; }
    if (mq_f32_level() >= 1) { chunk_inputs_avx2(args); return; }
#endif
    chunk_inputs_scalar(args);
}

void mq_ssd_chunk_output_f32(const mq_ssd_chunk_output_args *args) {
#if MQ_X86
    if (mq_f32_level() >= 2) { chunk_output_avx512(args); return; }
    if (mq_f32_level() >= 1) { chunk_output_avx2(args); return; }
#endif
    chunk_output_scalar(args);
}
