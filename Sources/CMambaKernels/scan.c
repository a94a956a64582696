// The selective scan (state-spaces/mamba, mamba_ssm/ops/selective_scan_interface.py,
// selective_scan_ref), time-major: for each step t the state h [E, N] of the channel range stays
// in cache while B[t] and C[t] are reused by every channel.
#include "mamba_kernels.h"
#include "simd_math.h"
#include <math.h>
#include <stdlib.h>

static void scan_scalar(const mq_scan_args *a) {
    const int E = a->channels, N = a->state;
    for (int t = 0; t < a->length; t++) {
        const float *B = a->B + (size_t)t * a->ldb;
        const float *C = a->C + (size_t)t * a->ldc;
        for (int e = a->channel_begin; e < a->channel_end; e++) {
            float v = a->dt_raw[(size_t)t * E + e];
            float dt = v > 20.0f ? v : log1pf(expf(v));
            float xv = a->x[(size_t)t * E + e];
            float dtx = dt * xv;
            float *h = a->h + (size_t)e * N;
            const float *A = a->A + (size_t)e * N;
            float acc = 0.0f;
            for (int n = 0; n < N; n++) {
                h[n] = expf(dt * A[n]) * h[n] + dtx * B[n];
                acc += h[n] * C[n];
            }
            a->y[(size_t)t * E + e] = acc + a->D[e] * xv;
        }
    }
}

#if MQ_X86
MQ_AVX2 static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

MQ_AVX2 static void scan_avx2(const mq_scan_args *a) {
    const int E = a->channels, N = a->state;
    const int e0 = a->channel_begin, width = a->channel_end - a->channel_begin;
    const int Nv = N - N % 8;
    float *dt = malloc(sizeof(float) * (size_t)(width > 0 ? width : 1));
    if (!dt) { scan_scalar(a); return; }   // the scalar path needs no scratch
    const unsigned csr = _mm_getcsr();
    _mm_setcsr(csr | 0x8040);   // FTZ | DAZ, as in scan_avx2_c8
    for (int t = 0; t < a->length; t++) {
        const float *B = a->B + (size_t)t * a->ldb;
        const float *C = a->C + (size_t)t * a->ldc;
        const float *xrow = a->x + (size_t)t * E;
        const float *dtrow = a->dt_raw + (size_t)t * E;
        int i = 0;
        for (; i + 8 <= width; i += 8) _mm256_storeu_ps(dt + i, mq_softplus256(_mm256_loadu_ps(dtrow + e0 + i)));
        for (; i < width; i++) { float v = dtrow[e0 + i]; dt[i] = v > 20.0f ? v : log1pf(expf(v)); }
        for (int e = e0; e < a->channel_end; e++) {
            const float d = dt[e - e0], xv = xrow[e], dtx = d * xv;
            const __m256 vd = _mm256_set1_ps(d), vdtx = _mm256_set1_ps(dtx);
            float *h = a->h + (size_t)e * N;
            const float *A = a->A + (size_t)e * N;
            __m256 acc = _mm256_setzero_ps();
            for (int n = 0; n < Nv; n += 8) {
                // scan_avx2_c8's decay: 2^(dt (A log2 e)), subnormals flushed (FTZ set above).
                const __m256 At = _mm256_mul_ps(_mm256_loadu_ps(A + n), _mm256_set1_ps(1.44269504088896341f));
                __m256 decay = mq_exp2_256_flushed(_mm256_mul_ps(vd, At));
                __m256 hv = _mm256_fmadd_ps(decay, _mm256_loadu_ps(h + n), _mm256_mul_ps(vdtx, _mm256_loadu_ps(B + n)));
                _mm256_storeu_ps(h + n, hv);
                acc = _mm256_fmadd_ps(hv, _mm256_loadu_ps(C + n), acc);
            }
            float s = hsum256(acc);
            for (int n = Nv; n < N; n++) {
                h[n] = expf(d * A[n]) * h[n] + dtx * B[n];
                s += h[n] * C[n];
            }
            a->y[(size_t)t * E + e] = s + a->D[e] * xv;
        }
    }
    free(dt);
    _mm_setcsr(csr);
}
#endif

#if MQ_X86
// N = 16 on AVX2: scan_avx512_c16's form (below: tiles of MQ_SCAN_TILE steps, the blocks of a tile
// one after another, dt and dt x first, decays as powers of 2) with eight channels per register.
// Sixteen state registers fill the sixteen ymm, so the compiler keeps some of a block's state in
// L1 between steps; the exp is still the work. Measured (bench --steps, mamba-130m shape, L 512,
// 1 thread, AMD EPYC Zen 3 without AVX-512): docs/PERFORMANCE.md, "Long prompts", the AVX2
// scan paragraph.
#define MQ_SCAN_TILE 32
#define MQ_SCAN_C16_MIN_LENGTH 4
MQ_AVX2 static void scan_avx2_c8(const mq_scan_args *a) {
    const int E = a->channels, begin = a->channel_begin;
    const int blocks = (a->channel_end - begin) / 8;
    if (blocks > 0) {
        const unsigned csr = _mm_getcsr();
        _mm_setcsr(csr | 0x8040);   // FTZ | DAZ, as in scan_avx512_c16
        float *At = malloc(sizeof(float) * 128 * (size_t)blocks), *hs = malloc(sizeof(float) * 128 * (size_t)blocks);
        if (!At || !hs) { free(At); free(hs); _mm_setcsr(csr); scan_avx2(a); return; }   // per channel, no transposed state
        for (int b = 0; b < blocks; b++)
            for (int j = 0; j < 8; j++) {
                const size_t ch = (size_t)(begin + 8 * b + j) * 16;
                for (int n = 0; n < 16; n++) {
                    At[128 * b + 8 * n + j] = a->A[ch + n] * 1.44269504088896341f;
                    hs[128 * b + 8 * n + j] = a->h[ch + n];
                }
            }
        float dts[MQ_SCAN_TILE][8], dxs[MQ_SCAN_TILE][8];
        for (int t0 = 0; t0 < a->length; t0 += MQ_SCAN_TILE) {
            const int tile = a->length - t0 < MQ_SCAN_TILE ? a->length - t0 : MQ_SCAN_TILE;
            for (int b = 0; b < blocks; b++) {
                const int e = begin + 8 * b;
                for (int i = 0; i < tile; i++) {
                    const size_t at = (size_t)(t0 + i) * E + e;
                    const __m256 d = mq_softplus256(_mm256_loadu_ps(a->dt_raw + at));
                    _mm256_storeu_ps(dts[i], d);
                    _mm256_storeu_ps(dxs[i], _mm256_mul_ps(d, _mm256_loadu_ps(a->x + at)));
                }
                const float *Ab = At + 128 * b;
                float *hb = hs + 128 * b;
                __m256 h[16];
                for (int n = 0; n < 16; n++) h[n] = _mm256_loadu_ps(hb + 8 * n);
                const __m256 vD = _mm256_loadu_ps(a->D + e);
                for (int i = 0; i < tile; i++) {
                    const int t = t0 + i;
                    const float *B = a->B + (size_t)t * a->ldb;
                    const float *C = a->C + (size_t)t * a->ldc;
                    const __m256 d = _mm256_loadu_ps(dts[i]), dx = _mm256_loadu_ps(dxs[i]);
                    __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
#pragma clang loop unroll(full)
                    for (int n = 0; n < 16; n++) {
                        const __m256 decay = mq_exp2_256_flushed(_mm256_mul_ps(d, _mm256_loadu_ps(Ab + 8 * n)));
                        h[n] = _mm256_fmadd_ps(decay, h[n], _mm256_mul_ps(dx, _mm256_broadcast_ss(B + n)));
                        acc[n & 1] = _mm256_fmadd_ps(h[n], _mm256_broadcast_ss(C + n), acc[n & 1]);
                    }
                    const size_t at = (size_t)t * E + e;
                    _mm256_storeu_ps(a->y + at, _mm256_fmadd_ps(vD, _mm256_loadu_ps(a->x + at), _mm256_add_ps(acc[0], acc[1])));
                }
                for (int n = 0; n < 16; n++) _mm256_storeu_ps(hb + 8 * n, h[n]);
            }
        }
        for (int b = 0; b < blocks; b++)
            for (int j = 0; j < 8; j++)
                for (int n = 0; n < 16; n++) a->h[(size_t)(begin + 8 * b + j) * 16 + n] = hs[128 * b + 8 * n + j];
        free(At);
        free(hs);
        _mm_setcsr(csr);
    }
    if (begin + 8 * blocks < a->channel_end) {
        mq_scan_args rest = *a;
        rest.channel_begin = begin + 8 * blocks;
        scan_avx2(&rest);
    }
}
#endif

#if MQ_X86
// AVX-512 for N a multiple of 16 (Mamba-1's N = 16: one register per channel): half the
// instructions of the AVX2 path for the same lanes; measured 1.9x faster at L 512, E 1536 on a Zen 4
// (which runs each 512-bit operation as two 256-bit halves: the gain is in the front end and the
// horizontal sum, one reduction per channel instead of two registers' worth).
MQ_AVX512 static void scan_avx512(const mq_scan_args *a) {
    const int E = a->channels, N = a->state;
    const int e0 = a->channel_begin, width = a->channel_end - a->channel_begin;
    float *dt = malloc(sizeof(float) * (size_t)(width > 0 ? width : 1));
    if (!dt) { scan_scalar(a); return; }
    for (int t = 0; t < a->length; t++) {
        const float *B = a->B + (size_t)t * a->ldb;
        const float *C = a->C + (size_t)t * a->ldc;
        const float *xrow = a->x + (size_t)t * E;
        mq_softplus_f32(a->dt_raw + (size_t)t * E + e0, dt, (size_t)width);
        for (int e = e0; e < a->channel_end; e++) {
            const float d = dt[e - e0], xv = xrow[e], dtx = d * xv;
            const __m512 vd = _mm512_set1_ps(d), vdtx = _mm512_set1_ps(dtx);
            float *h = a->h + (size_t)e * N;
            const float *A = a->A + (size_t)e * N;
            __m512 acc = _mm512_setzero_ps();
            for (int n = 0; n < N; n += 16) {
                const __m512 decay = mq_exp512(_mm512_mul_ps(vd, _mm512_loadu_ps(A + n)));
                const __m512 hv = _mm512_fmadd_ps(decay, _mm512_loadu_ps(h + n), _mm512_mul_ps(vdtx, _mm512_loadu_ps(B + n)));
                _mm512_storeu_ps(h + n, hv);
                acc = _mm512_fmadd_ps(hv, _mm512_loadu_ps(C + n), acc);
            }
            a->y[(size_t)t * E + e] = _mm512_reduce_add_ps(acc) + a->D[e] * xv;
        }
    }
    free(dt);
}

// N = 16 (every Mamba-1 and Vim checkpoint): sixteen channels per register, a block's whole state
// in registers. h[n] holds state n of channels e..e+15, so the update and the C contraction are
// vertical (no horizontal sum per channel and step, B[t, n] and C[t, n] broadcast), dt's softplus
// is one vector per step, and each exp is a power of 2 of A log2 e (9 vector operations instead
// of mq_exp512's 15). Channels past the last full block take the per-channel path.
//
// The order of work is what the memory asks for. A step of a block touches 64 bytes of dt_raw, x
// and y, one row (E floats) apart from the previous step's. Sweeping one block down the whole
// sequence walked a new page per row and array and missed every line; so the sequence goes in
// tiles of MQ_SCAN_TILE steps, and within a tile block after block: the next block's lines are
// the neighbours of this one's, in pages just used, and are prefetched while this block computes.
// The states wait between tiles in a transposed buffer ([block][n][channel], 1 KB a block). Within
// a block's tile, each step's dt (softplus) and dt x go first: they depend on no earlier step, so
// the core overlaps their long exp/log chains, which fused into the recurrence sat on its
// critical path. Measured (bench --steps, mamba-130m shape, L 512, 1 thread, Zen 4): 286 ms over
// the 24 layers with one block swept down the sequence and the softplus fused, 83 ms so.
// (MQ_SCAN_TILE and MQ_SCAN_C16_MIN_LENGTH above: below that many steps, decode's one, the
// per-channel path runs: the blocks' transposes in and out and their buffers cost more than they
// save over so few steps.)
MQ_AVX512 static void scan_avx512_c16(const mq_scan_args *a) {
    const int E = a->channels, begin = a->channel_begin;
    const int blocks = (a->channel_end - begin) / 16;
    if (blocks > 0) {
        // Subnormal results flushed to zero for the kernel's duration (the caller's mode restored
        // after): a decay below 2^-126 then comes out as 0 without the exp's clamp, one operation
        // of the thirteen per state and step, and no state ever goes subnormal (which slows FMAs).
        const unsigned csr = _mm_getcsr();
        _mm_setcsr(csr | 0x8040);   // FTZ | DAZ
        float *At = malloc(sizeof(float) * 256 * (size_t)blocks), *hs = malloc(sizeof(float) * 256 * (size_t)blocks);
        if (!At || !hs) { free(At); free(hs); _mm_setcsr(csr); scan_avx512(a); return; }   // per channel, no transposed state
        for (int b = 0; b < blocks; b++) {
            for (int j = 0; j < 16; j++) {
                const size_t ch = (size_t)(begin + 16 * b + j) * 16;
                for (int n = 0; n < 16; n++) {
                    At[256 * b + 16 * n + j] = a->A[ch + n] * 1.44269504088896341f;  // log2 e: decays as powers of 2
                    hs[256 * b + 16 * n + j] = a->h[ch + n];
                }
            }
        }
        float dts[MQ_SCAN_TILE][16], dxs[MQ_SCAN_TILE][16];
        for (int t0 = 0; t0 < a->length; t0 += MQ_SCAN_TILE) {
            const int tile = a->length - t0 < MQ_SCAN_TILE ? a->length - t0 : MQ_SCAN_TILE;
            for (int b = 0; b < blocks; b++) {
                const int e = begin + 16 * b;
                // Where the next block (or the next tile's first) reads, a row per step.
                const int more = b + 1 < blocks || t0 + MQ_SCAN_TILE < a->length;
                const size_t next = b + 1 < blocks ? (size_t)t0 * E + (size_t)(e + 16) : (size_t)(t0 + MQ_SCAN_TILE) * E + (size_t)begin;
                const int next_rows = b + 1 < blocks ? tile : (a->length - t0 - MQ_SCAN_TILE < MQ_SCAN_TILE ? a->length - t0 - MQ_SCAN_TILE : MQ_SCAN_TILE);
                for (int i = 0; i < tile; i++) {
                    const size_t at = (size_t)(t0 + i) * E + e;
                    if (more && i < next_rows) {
                        const size_t ahead = next + (size_t)i * E;
                        _mm_prefetch((const char *)(a->dt_raw + ahead), _MM_HINT_T0);
                        _mm_prefetch((const char *)(a->x + ahead), _MM_HINT_T0);
                        _mm_prefetch((const char *)(a->y + ahead), _MM_HINT_T0);
                    }
                    const __m512 raw = _mm512_loadu_ps(a->dt_raw + at);
                    const __m512 d = mq_softplus512(raw);
                    _mm512_storeu_ps(dts[i], d);
                    _mm512_storeu_ps(dxs[i], _mm512_mul_ps(d, _mm512_loadu_ps(a->x + at)));
                }
                const float *Ab = At + 256 * b;
                float *hb = hs + 256 * b;
                __m512 h[16];
                for (int n = 0; n < 16; n++) h[n] = _mm512_loadu_ps(hb + 16 * n);
                const __m512 vD = _mm512_loadu_ps(a->D + e);
                for (int i = 0; i < tile; i++) {
                    const int t = t0 + i;
                    const float *B = a->B + (size_t)t * a->ldb;
                    const float *C = a->C + (size_t)t * a->ldc;
                    const __m512 d = _mm512_loadu_ps(dts[i]), dx = _mm512_loadu_ps(dxs[i]);
                    __m512 acc[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
#pragma clang loop unroll(full)
                    for (int n = 0; n < 16; n++) {
                        const __m512 decay = mq_exp2_512_flushed(_mm512_mul_ps(d, _mm512_loadu_ps(Ab + 16 * n)));
                        h[n] = _mm512_fmadd_ps(decay, h[n], _mm512_mul_ps(dx, _mm512_set1_ps(B[n])));
                        acc[n & 1] = _mm512_fmadd_ps(h[n], _mm512_set1_ps(C[n]), acc[n & 1]);
                    }
                    const size_t at = (size_t)t * E + e;
                    _mm512_storeu_ps(a->y + at, _mm512_fmadd_ps(vD, _mm512_loadu_ps(a->x + at), _mm512_add_ps(acc[0], acc[1])));
                }
                for (int n = 0; n < 16; n++) _mm512_storeu_ps(hb + 16 * n, h[n]);
            }
        }
        for (int b = 0; b < blocks; b++) {
            for (int j = 0; j < 16; j++) {
                for (int n = 0; n < 16; n++) a->h[(size_t)(begin + 16 * b + j) * 16 + n] = hs[256 * b + 16 * n + j];
            }
        }
        free(At);
        free(hs);
        _mm_setcsr(csr);
    }
    if (begin + 16 * blocks < a->channel_end) {
        mq_scan_args rest = *a;
        rest.channel_begin = begin + 16 * blocks;
        scan_avx512(&rest);
    }
}
#endif

void mq_selective_scan_f32(const mq_scan_args *args) {
#if MQ_X86
    if (mq_f32_level() >= 2 && args->state == 16 && args->length >= MQ_SCAN_C16_MIN_LENGTH) { scan_avx512_c16(args); return; }
    if (mq_f32_level() >= 2 && args->state % 16 == 0) { scan_avx512(args); return; }
    if (mq_has_avx2_fma() && args->state == 16 && args->length >= MQ_SCAN_C16_MIN_LENGTH) { scan_avx2_c8(args); return; }
    if (mq_has_avx2_fma()) { scan_avx2(args); return; }
#endif
    scan_scalar(args);
}

// Mamba-2's recurrence (mq_ssd_args). One exp per (t, head), not per state element: the decay is a
// scalar per head. The n loop is the state update and the C contraction in one pass.
static void ssd_scalar(const mq_ssd_args *a) {
    const int H = a->heads, P = a->head_dim, N = a->state, per_group = a->heads / a->groups;
    for (int t = 0; t < a->length; t++) {
        for (int h = a->head_begin; h < a->head_end; h++) {
            const float d = a->dt[(size_t)t * H + h], dA = expf(d * a->A[h]);
            const float *B = a->B + (size_t)t * a->ldb + (size_t)(h / per_group) * N;
            const float *C = a->C + (size_t)t * a->ldc + (size_t)(h / per_group) * N;
            for (int p = 0; p < P; p++) {
                const size_t ch = (size_t)h * P + p;
                const float xv = a->x[(size_t)t * a->ldx + ch], dx = d * xv;
                float *s = a->s + ch * N, acc = 0.0f;
                for (int n = 0; n < N; n++) {
                    s[n] = dA * s[n] + dx * B[n];
                    acc += s[n] * C[n];
                }
                a->y[(size_t)t * H * P + ch] = acc + a->D[h] * xv;
            }
        }
    }
}

#if MQ_X86
MQ_AVX2 static void ssd_avx2(const mq_ssd_args *a) {
    const int H = a->heads, P = a->head_dim, N = a->state, per_group = a->heads / a->groups;
    const int Nv = N - N % 8;
    for (int t = 0; t < a->length; t++) {
        for (int h = a->head_begin; h < a->head_end; h++) {
            const float d = a->dt[(size_t)t * H + h], dA = expf(d * a->A[h]);
            const float *B = a->B + (size_t)t * a->ldb + (size_t)(h / per_group) * N;
            const float *C = a->C + (size_t)t * a->ldc + (size_t)(h / per_group) * N;
            const __m256 vdA = _mm256_set1_ps(dA);
            for (int p = 0; p < P; p++) {
                const size_t ch = (size_t)h * P + p;
                const float xv = a->x[(size_t)t * a->ldx + ch], dx = d * xv;
                const __m256 vdx = _mm256_set1_ps(dx);
                float *s = a->s + ch * N;
                __m256 acc = _mm256_setzero_ps();
                for (int n = 0; n < Nv; n += 8) {
                    __m256 sv = _mm256_fmadd_ps(vdA, _mm256_loadu_ps(s + n), _mm256_mul_ps(vdx, _mm256_loadu_ps(B + n)));
                    _mm256_storeu_ps(s + n, sv);
                    acc = _mm256_fmadd_ps(sv, _mm256_loadu_ps(C + n), acc);
                }
                float sum = hsum256(acc);
                for (int n = Nv; n < N; n++) {
                    s[n] = dA * s[n] + dx * B[n];
                    sum += s[n] * C[n];
                }
                a->y[(size_t)t * H * P + ch] = sum + a->D[h] * xv;
            }
        }
    }
}
#endif

void mq_ssd_scan_f32(const mq_ssd_args *args) {
#if MQ_X86
    if (mq_has_avx2_fma()) { ssd_avx2(args); return; }
#endif
    ssd_scalar(args);
}
