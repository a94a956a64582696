// Int8 kernels of the quantized runtime (docs/DESIGN.md section 3): activation quantization and an
// int8 x int8 -> int32 GEMM with a float epilogue. Four paths chosen at run time, all exact in
// int32: Intel AMX tiles (TDPBSSD, for products of 8 rows or more; VNNI below), AVX-512 VNNI
// (vpdpbusd on a+128 with a column-sum correction), AVX2 (the sign trick: vpsignb + vpmaddubsw +
// vpmaddwd), and portable scalar code. mq_gemm_s8_reference is the plain
// definition the tests compare every path with.
#ifndef MAMBA_INT8_H
#define MAMBA_INT8_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Output columns per packed panel; K is padded to a multiple of MQ_S8_KSTEP.
#define MQ_S8_PANEL 16
#define MQ_S8_KSTEP 4

/// 0 scalar, 1 AVX2, 2 AVX-512 VNNI, 3 AMX (and VNNI): the best path this CPU has, capped by
/// mq_s8_set_max_level.
int mq_s8_level(void);
/// Caps the path (tests run every path on the same data); -1 removes the cap.
void mq_s8_set_max_level(int level);

/// K rounded up to MQ_S8_KSTEP: the row stride of quantized activations.
int mq_s8_padded_k(int k);
/// Bytes of a packed [n, k] weight matrix.
size_t mq_s8_packed_bytes(int n, int k);
/// Packs w [n, k] (row stride ldw) into panels of 16 output rows:
/// packed[panel][k / 4][16 rows][4 k], zero padded in n and k. col_sums[n] = sum_k w[n, k].
void mq_s8_pack(const int8_t *w, int n, int k, int ldw, int8_t *packed, int32_t *col_sums);

// MARK: int4 weights (4-bit values in [-8, 7], two per byte)
//
// The int4 panel holds the int8 panel's bytes at half the size: K is padded to a multiple of 8 (two
// k-steps), and the 64 bytes of a step pair (2t, 2t+1) hold, in byte i, step 2t's byte i in the low
// nibble and step 2t+1's byte i in the high nibble, each offset-binary (value + 8). One 64-byte load
// and two mask/shift + subtract give the two steps' int8 registers; the int32 sums are the int8
// GEMM's, so every path stays exact. Chosen over the file's row-major nibble order (FORMAT.md)
// because unpacking is then lane-wise, with no shuffle.

/// Row `row` of a packed [n, k] matrix (int8 panels from mq_s8_pack, weight_bits 8, or int4 panels,
/// 4) as int8 values out[k]: a tied head's table read back as the embedding.
void mq_packed_row(const int8_t *packed, int weight_bits, int k, int row, int8_t *out);

/// Bytes of the int4 panels of an [n, k] matrix.
size_t mq_s4_packed_bytes(int n, int k);
/// Converts int8 panels from mq_s8_pack (every value in [-8, 7]) into int4 panels.
void mq_s4_pack(const int8_t *packed8, int n, int k, uint8_t *packed4);

/// q[i, j] = clamp(round_half_away(x[i, j] * inv_scale[i]), -qmax, qmax) for j < k and 0 for
/// k <= j < ldq (the padding the GEMM reads). Equal to quantizeSymmetric in Swift.
void mq_quantize_rows_s8(const float *x, int m, int k, int ldx, const float *inv_scale,
                         int qmax, int8_t *q, int ldq);

/// In place: x[i, j] = clamp(round_half_away(x[i, j] * (1 / scale)), -qmax, qmax) * scale, with
/// scale = scales[i] (per_row != 0) or scales[0], and 0 where scale is 0. The integer grid of an
/// activation that is consumed in float (conv input, SSM inputs): ActivationQuantizer.fakeQuantize.
void mq_fake_quantize_rows_f32(float *x, int m, int k, int ldx, const float *scales, int per_row, int qmax);

/// absmax[i] = max_j |x[i, j]| over j < k.
void mq_absmax_rows_f32(const float *x, int m, int k, int ldx, float *absmax);

/// The causal depthwise conv on integers, output rows [t_begin, t_end):
/// out[t, c] = (sum_j w[j, c] * q[t + j, c]) * out_scale[c] + bias[c], with q [K-1+L, E] (the
/// state's K-1 rows, then the inputs) and w [K, E].
void mq_conv_s8(const int8_t *q, int t_begin, int t_end, int e, int k, const int8_t *w,
                const float *out_scale, const float *bias, float *out);

/// silu(mq_conv_s8(...)): each row through mq_silu_f32 as it is finished.
void mq_conv_silu_s8(const int8_t *q, int t_begin, int t_end, int e, int k, const int8_t *w,
                     const float *out_scale, const float *bias, float *out);

/// One decode step of mq_conv_s8 (silu: mq_conv_silu_s8) on a state held as floats: state [K-1, E]
/// holds the integers of the last K-1 quantized inputs, oldest first. out[c] is the conv over
/// [state; quantize(x)], then the state moves up a row and takes quantize(x) (x [E], rounded as
/// mq_quantize_rows_s8). Equal to mq_conv_s8 over those rows where K qmax^2 < 2^24.
void mq_conv_step_s8(float *state, const float *x, int e, int k, float inv_scale, int qmax, const int8_t *w,
                     const float *out_scale, const float *bias, float *out, int silu);

/// Output columns [begin, end) of a GEMM written as int8 for the op that reads them next (in_proj's
/// x for the int8 conv) instead of as floats: q[i, j - begin] is y[i, j], the float the epilogue
/// would have written, quantized as mq_quantize_rows_s8 does with inv_scale. The float pass that
/// quantized them after the GEMM, and the floats themselves, are not written. The columns before
/// the range go to the GEMM's c, those after it to `after`, each part its own tensor (Mamba-2's z
/// and dt around xBC).
typedef struct {
    int begin, end;
    float inv_scale;
    int qmax;
    int8_t *q;                // [m, ldq]
    int ldq;
    float *after;             // [m, ldafter]: y[i, j] at after[i, j - end] for j >= end
    int ldafter;
} mq_s8_column_quantizer;

typedef struct {
    int m, n, k;
    const int8_t *a;          // [m, lda], lda = mq_s8_padded_k(k), zero padded
    int lda;
    const int8_t *packed;     // from mq_s8_pack
    const int32_t *col_sums;  // from mq_s8_pack
    int panel_begin, panel_end; // panels [begin, end) of ceil(n / 16): the unit of threading
    // Float epilogue: c[i, j] = acc * a_scale[i] * w_scale[j] + (bias ? bias[j] : 0).
    const float *a_scale;     // [m]
    const float *w_scale;     // [n]
    const float *bias;        // [n] or NULL
    float *c;                 // [m, ldc]
    int ldc;
    int32_t *acc;             // if not NULL, the raw int32 sums are written here ([m, ldacc]) instead
    int ldacc;
    int weight_bits;          // 8: `packed` from mq_s8_pack; 4: from mq_s4_pack
    // NULL: every column to c. Otherwise those columns go to the quantizer's q, the columns after
    // them to its `after`, and c ([m, ldc]) holds the columns before them; not with acc.
    const mq_s8_column_quantizer *quantized_columns;
} mq_gemm_s8_args;

/// The packed GEMM over the panels [panel_begin, panel_end), int8 or int4 weights.
void mq_gemm_s8(const mq_gemm_s8_args *args);

/// mq_gemm_s8's AMX path with each tile instruction done in plain C, on any CPU (the tests'
/// check of the tiling, the padding and the tails where the CPU has no tiles; slow).
void mq_gemm_s8_amx_emulated(const mq_gemm_s8_args *args);

/// The compute roofline of the int8 GEMM on this core, in GOP/s (2 per multiply-add): the path's
/// multiply-add instruction in independent register chains, no memory traffic (TDPBSSD into four
/// accumulator tiles on AMX; vpdpbusd on VNNI; vpmaddwd + vpaddd, the int16 prefill form, on AVX2),
/// timed for at least `seconds`. 0 on scalar.
double mq_s8_peak_gops(double seconds);

// MARK: Scales per block of K (CMambaKernels/int8_blocked.c)

/// ceil(k / block): blocks per row.
int mq_s8_block_count(int k, int block);

/// Dynamic per-row, per-block quantization (llama.cpp's Q8_0 activations): for each row i and
/// block b of `block` columns, scales[i * nb + b] = absmax / qmax and q = round_half_away(x / scale)
/// clamped (0 where the block is all zeros); q zero padded from k to ldq.
void mq_quantize_blocks_s8(const float *x, int m, int k, int ldx, int block, int qmax, int8_t *q, int ldq, float *scales);

/// Rearranges per-block weight scales and column sums ([n, nb] row-major) into the panel order the
/// blocked GEMM reads: [panel][block][16], zero padded past n.
void mq_s8_pack_block_scales(const float *w_scale, const int32_t *block_sums, int n, int nb, float *packed_scales, int32_t *packed_sums);

typedef struct {
    int m, n, k;
    int block;                // columns per block, a multiple of MQ_S8_KSTEP
    const int8_t *a;          // [m, lda], lda = mq_s8_padded_k(k), zero padded
    int lda;
    const int8_t *packed;     // from mq_s8_pack
    const int32_t *col_sums;  // per-block column sums, from mq_s8_pack_block_scales
    int panel_begin, panel_end;
    const float *a_scale;     // [m, nb]
    const float *w_scale;     // per-block weight scales, from mq_s8_pack_block_scales
    const float *bias;        // [n] or NULL
    float *c;                 // [m, ldc]
    int ldc;
    int weight_bits;          // 8, or 4 (mq_s4_pack; then block is a multiple of 8)
} mq_gemm_s8_blocked_args;

/// c[i, j] = sum over blocks b of (float)isum_b * (a_scale[i, b] * w_scale[j, b]), accumulated in
/// float in block order, + bias[j]; isum_b the exact int32 sum over the block's columns.
void mq_gemm_s8_blocked(const mq_gemm_s8_blocked_args *args);

/// The definition, on the unpacked weights w [n, ldw] and their scales [n, nb] (args->packed,
/// col_sums, w_scale and the panel range are not read).
void mq_gemm_s8_blocked_reference(const mq_gemm_s8_blocked_args *args, const int8_t *w, int ldw, const float *w_scale);

/// The definition: acc[i, j] = sum_k a[i, k] * w[j, k], w row-major [n, k] (row stride ldw).
void mq_gemm_s8_reference(int m, int n, int k, const int8_t *a, int lda, const int8_t *w, int ldw,
                          int32_t *acc, int ldacc);

#ifdef __cplusplus
}
#endif
#endif
