// Hot float kernels of the Mamba forward: the selective scan and the elementwise nonlinearities.
// Each has a portable scalar path and an AVX2+FMA path chosen at run time (docs/DESIGN.md section 3);
// the Swift side keeps a plain reference of each and tests compare the two.
#ifndef MAMBA_KERNELS_H
#define MAMBA_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// 1 when the AVX2+FMA paths are in use on this CPU.
int mq_has_avx2_fma(void);
/// Forces the scalar paths (for tests of the fallback); 0 restores the automatic choice.
void mq_force_scalar(int force);
/// The float kernels' path: 0 scalar, 1 AVX2 + FMA, 2 AVX-512 (F, DQ) where a kernel has one (the
/// Mamba-1 scan), capped by mq_f32_set_max_level (-1 removes the cap; tests run every path).
int mq_f32_level(void);
void mq_f32_set_max_level(int level);

/// The OpenBLAS core (OPENBLAS_CORETYPE) whose kernels this CPU runs: "SkylakeX" with AVX-512
/// F/BW/VL/DQ, "Haswell" with AVX2+FMA, NULL otherwise (or off x86-64).
const char *mq_blas_core_for_cpu(void);

/// A spin-wait hint (x86 PAUSE; nothing elsewhere): spinning workers call it between polls.
void mq_cpu_relax(void);

/// The wrapping sum of `n` 64-bit words: a streaming read of 8n bytes (the read-bandwidth test;
/// four independent sums so the loads, not the adds, bound it; on AVX2, eight streams of 32-byte
/// loads with a prefetch ahead: the fastest a core reads).
uint64_t mq_read_words(const uint64_t *p, size_t n);

/// SHA-256's compression of `blocks` 64-byte blocks into state[8] (FIPS 180-4); the x86 SHA
/// extensions where the CPU has them unless `portable` is set (tests compare the two).
void mq_sha256_blocks(uint32_t state[8], const uint8_t *data, size_t blocks, int portable);
/// 1 when the CPU has the SHA extensions (mq_sha256_blocks uses them).
int mq_has_sha_ni(void);

/// out[i] = x[i] * sigmoid(x[i]).
void mq_silu_f32(const float *x, float *out, size_t n);

/// RMSNorm of each row's `groups` groups of cols / groups channels: out = weight * (x * (1 /
/// sqrt(mean(x^2) + eps))), weight [cols] or NULL (ones). The sum of squares runs in vector lanes
/// where the CPU has them (its order is the only difference from the plain loop).
void mq_rmsnorm_f32(const float *x, int rows, int cols, int groups, const float *weight, float eps, float *out);

/// The Mamba blocks' causal depthwise conv and its SiLU in one pass, for output rows
/// [t_begin, t_end): out[t, c] = silu(bias[c] + sum_j w[j, c] * in(t + j, c)), where in(i) is row i
/// of [history (k - 1 rows); x (L rows)], rows of e floats; w is [k, e] (the checkpoint's [e, k]
/// transposed); out is the whole [L, e] output, of which rows [t_begin, t_end) are written.
void mq_conv_silu_f32(const float *history, const float *x, int t_begin, int t_end, int e, int k, const float *w,
                      const float *bias, float *out);

/// The block's gate on [rows, e]: out = y * silu(z), or with s (smoothing, [e]) the S-SiLU
/// out = silu(s * z) * (y / s), per channel j.
void mq_gate_rows_f32(const float *y, const float *z, const float *s, float *out, int rows, int e);

/// out[i] = softplus(x[i]) = log(1 + exp(x)), and x itself above 20 (torch's threshold).
void mq_softplus_f32(const float *x, float *out, size_t n);

/// out[i] = exp(x[i]) (a polynomial to about 2 ulp; used where the scan needs exp).
void mq_exp_f32(const float *x, float *out, size_t n);

/// In place on each of `rows` rows of n = m * p floats (row stride ld): x = (x * signs) H / sqrt(n)
/// with H = H_m (x) H_p, p a power of two, `factor` the m x m matrix H_m (row-major, +-1).
/// `scratch` holds n floats.
void mq_hadamard_rows_f32(float *x, int rows, int ld, int p, int m, const float *factor, const float *signs, float *scratch);

/// The selective scan of Mamba-1 (state-spaces/mamba selective_scan_ref) over channels
/// [channel_begin, channel_end), time steps in order:
///   dt = softplus(dt_raw[t, e]);  h[e, n] = exp(dt * A[e, n]) * h[e, n] + dt * B[t, n] * x[t, e]
///   y[t, e] = sum_n h[e, n] * C[t, n] + D[e] * x[t, e]
/// Activations are row-major [L, ...] with the given row strides (B and C may point into x_proj's
/// output). h is float32 in and out: the decode state.
typedef struct {
    int length;          // L
    int channels;        // E
    int state;           // N
    int channel_begin, channel_end;
    const float *x;      // [L, E], row stride E
    const float *dt_raw; // [L, E], row stride E, before softplus
    const float *B;      // [L, N] with row stride ldb
    const float *C;      // [L, N] with row stride ldc
    int ldb, ldc;
    const float *A;      // [E, N], already -exp(A_log)
    const float *D;      // [E]
    float *h;            // [E, N] state, updated
    float *y;            // [L, E], row stride E
} mq_scan_args;

void mq_selective_scan_f32(const mq_scan_args *args);

/// The state space recurrence of Mamba-2 (SSD: a scalar decay per head; transformers
/// models/mamba2/modeling_mamba2.py, the recurrent form of its chunked scan) over heads
/// [head_begin, head_end), time steps in order, with dt already softplus'd and clamped:
///   dA = exp(dt[t, h] * A[h]);  g = h / (H / G)
///   s[h, p, n] = dA * s[h, p, n] + dt[t, h] * B[t, g, n] * x[t, h, p]
///   y[t, h, p] = sum_n s[h, p, n] * C[t, g, n] + D[h] * x[t, h, p]
/// x is [L, H * P] with row stride ldx and y [L, H * P] (head h is channels h*P ..< (h+1)*P); B and
/// C are [L, G * N] with row strides ldb and ldc (all three may be column blocks of the conv's
/// output); s is the decode state [H, P, N], updated.
typedef struct {
    int length;          // L
    int heads;           // H
    int head_dim;        // P
    int state;           // N
    int groups;          // G, dividing H
    int head_begin, head_end;
    const float *x;      // [L, H * P] with row stride ldx
    int ldx;
    const float *dt;     // [L, H], row stride H
    const float *B;      // [L, G * N] with row stride ldb
    const float *C;      // [L, G * N] with row stride ldc
    int ldb, ldc;
    const float *A;      // [H], already -exp(A_log)
    const float *D;      // [H]
    float *s;            // [H, P, N] state, updated
    float *y;            // [L, H * P]
} mq_ssd_args;

void mq_ssd_scan_f32(const mq_ssd_args *args);

/// The chunked SSD's (MambaModel/ChunkedSSD.swift) input pass over one chunk of `rows` tokens and a
/// range of `heads` heads: per token t and head k, with d = dt[t, k],
///   xs[t, k, :] = e_neg[k, t] d x[t, k, :]     (exp(r - cum_t) dt x: the intra-chunk product's input)
///   xe[t, k, :] = to_end[k, t] d x[t, k, :]    (exp(cum_last - cum_t) dt x: the state update's)
/// x and dt point at the chunk's first token and the range's first head (row strides ldx, ldd);
/// e_neg and to_end are [heads, q]; xs and xe are [rows, heads * head_dim].
typedef struct {
    int rows, heads, head_dim, q;
    const float *x;
    int ldx;
    const float *dt;
    int ldd;
    const float *e_neg, *to_end;
    float *xs, *xe;
} mq_ssd_chunk_inputs_args;

void mq_ssd_chunk_inputs_f32(const mq_ssd_chunk_inputs_args *args);

/// Its output pass: y[t, k, :] = e_pos[k, t] inter[t, k, :] + e_mid[k, t] intra[t, k, :] + D[k] x[t, k, :]
/// (inter: the chunk's C s_in^T, or NULL where the state was zero; intra: its causal product; both
/// with row stride ldw; e_pos and e_mid [heads, q] are exp(cum_t) and exp(cum_t - r)).
typedef struct {
    int rows, heads, head_dim, q;
    const float *inter, *intra;
    int ldw;
    const float *e_pos, *e_mid, *D, *x;
    int ldx;
    float *y;
    int ldy;
} mq_ssd_chunk_output_args;

void mq_ssd_chunk_output_f32(const mq_ssd_chunk_output_args *args);

#ifdef __cplusplus
}
#endif
#endif
