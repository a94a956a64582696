// Int8 GEMM on Intel AMX (Sapphire Rapids and later Xeons): one TDPBSSD multiplies a 16 x 64 tile
// of signed activations by a 64 x 16 tile of signed weights into 16 x 16 int32 sums, 16,384
// multiply-adds in one instruction where vpdpbusd on a zmm does 64. The weight tile's layout, 16
// k-steps of 16 outputs x 4 bytes, is exactly the packed panel's (mamba_int8.h), so a panel's 16
// consecutive k-steps are one tile, read in place with a 64-byte stride; both operands are signed,
// so there is no a + 128 shift and no column-sum correction. The same exact int32 sums as every
// other path. Intel's Architecture Instruction Set Extensions Programming Reference (chapter 3,
// "Intel AMX") defines the instructions; Linux hands the tile state to a process only after
// arch_prctl(ARCH_REQ_XCOMP_PERM) (the kernel's Documentation/arch/x86/xstate.rst).
#include "mamba_int8.h"
#include "int8_internal.h"
#include <stdlib.h>
#include <string.h>
#if MQ_X86
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#pragma clang fp contract(off)   // the epilogue rounds as int8.c's (see there)

#define MQ_AMX_K 64      // bytes of K in a tile row: 16 k-steps
#define MQ_AMX_ROWS 16   // rows of a tile

/// The operands as the tiles read them: a copied with its rows padded to 64 bytes of K (zeros) and
/// to a multiple of 32 rows, and room for two panels' copies where the panels cannot be read in
/// place (int4 panels, unpacked; a K that is not whole tiles, whose last tile would read past the
/// panel, and past the matrix at the last one).
typedef struct {
    int8_t *a;
    int lda, kblocks;
    int8_t *scratch;   // [2][kblocks * 16 k-steps * 64 bytes] or NULL
} mq_amx_operands;

/// Panel p as whole tiles: in place, or copied (and unpacked) into scratch slot `slot`, zero
/// padded to kblocks tiles.
static const int8_t *mq_amx_panel(const mq_gemm_s8_args *g, const mq_amx_operands *o, int p, int slot) {
    const size_t stride = mq_panel_bytes(g->k, g->weight_bits);
    const int8_t *panel = g->packed + (size_t)p * stride;
    if (!o->scratch) return panel;
    const size_t tile_bytes = (size_t)o->kblocks * MQ_AMX_ROWS * MQ_AMX_K;
    int8_t *out = o->scratch + slot * tile_bytes;
    // Written once over, then only the rest zeroed (as a's copy in mq_amx_prepare).
    size_t written = stride;
    if (g->weight_bits == 4) {
        mq_s4_unpack_panel((const uint8_t *)panel, g->k, out);
        written = (size_t)MQ_S8_PANEL * (size_t)mq_s4_padded_k(g->k);
    } else {
        memcpy(out, panel, stride);
    }
    memset(out + written, 0, tile_bytes - written);
    return out;
}

static int mq_amx_prepare(const mq_gemm_s8_args *g, mq_amx_operands *o) {
    const int kp = mq_s8_padded_k(g->k);
    o->kblocks = (kp + MQ_AMX_K - 1) / MQ_AMX_K;
    o->lda = o->kblocks * MQ_AMX_K;
    const int rows = (g->m + 2 * MQ_AMX_ROWS - 1) / (2 * MQ_AMX_ROWS) * (2 * MQ_AMX_ROWS);
    // Tile rows on 64-byte lines, so that no row of a tile load straddles two (the effect alone was
    // not measured apart from the machine's noise).
    o->a = aligned_alloc(64, (size_t)rows * (size_t)o->lda);
    const int in_place = g->weight_bits != 4 && kp % MQ_AMX_K == 0;
    o->scratch = in_place ? NULL : aligned_alloc(64, (size_t)2 * o->kblocks * MQ_AMX_ROWS * MQ_AMX_K);
    if (!o->a || (!in_place && !o->scratch)) {
        free(o->a);
        free(o->scratch);
        return 0;
    }
    // Only the padding is zeroed: a is written once over (zeroing it all first was a memset of
    // every call's whole copy).
    for (int i = 0; i < g->m; i++) {
        int8_t *row = o->a + (size_t)i * o->lda;
        memcpy(row, g->a + (size_t)i * g->lda, (size_t)kp);
        memset(row + kp, 0, (size_t)(o->lda - kp));
    }
    memset(o->a + (size_t)g->m * o->lda, 0, (size_t)(rows - g->m) * (size_t)o->lda);
    return 1;
}

// MARK: - The tile instructions in plain C

typedef union {
    int8_t b[MQ_AMX_ROWS][MQ_AMX_K];
    int32_t d[MQ_AMX_ROWS][MQ_S8_PANEL];
} mq_tile;

static void emu_load(mq_tile *t, const void *p, size_t stride) {
    for (int r = 0; r < MQ_AMX_ROWS; r++) memcpy(t->b[r], (const int8_t *)p + (size_t)r * stride, MQ_AMX_K);
}
static void emu_store(const mq_tile *t, void *p, size_t stride) {
    for (int r = 0; r < MQ_AMX_ROWS; r++) memcpy((int8_t *)p + (size_t)r * stride, t->b[r], MQ_AMX_K);
}
// TDPBSSD: c[i][j] += sum over k of a[i][k] * b[k / 4][4 j + k % 4].
static void emu_dpbssd(mq_tile *c, const mq_tile *a, const mq_tile *b) {
    for (int i = 0; i < MQ_AMX_ROWS; i++)
        for (int j = 0; j < MQ_S8_PANEL; j++) {
            int32_t s = c->d[i][j];
            for (int k = 0; k < MQ_AMX_K; k++) s += (int32_t)a->b[i][k] * (int32_t)b->b[k / 4][4 * j + k % 4];
            c->d[i][j] = s;
        }
}

#define MQ_AMX_FN amx_emulated
#define MQ_AMX_ATTR
#define MQ_TILE_CONFIG() mq_tile tiles[8]
#define MQ_TILE_RELEASE() (void)tiles
#define MQ_TILE_ZERO(t) memset(&tiles[t], 0, sizeof(mq_tile))
#define MQ_TILE_LOAD(t, p, stride) emu_load(&tiles[t], p, (size_t)(stride))
#define MQ_TILE_STORE(t, p, stride) emu_store(&tiles[t], p, (size_t)(stride))
#define MQ_TILE_DP(c, a, b) emu_dpbssd(&tiles[c], &tiles[a], &tiles[b])
#define MQ_AMX_STORE(g, i0, mr, j, sums) mq_s8_store_block(g, i0, mr, j, sums)
#include "int8_amx_tiles.h"
#undef MQ_AMX_FN
#undef MQ_AMX_ATTR
#undef MQ_TILE_CONFIG
#undef MQ_TILE_RELEASE
#undef MQ_TILE_ZERO
#undef MQ_TILE_LOAD
#undef MQ_TILE_STORE
#undef MQ_TILE_DP
#undef MQ_AMX_STORE

void mq_gemm_s8_amx_emulated(const mq_gemm_s8_args *g) {
    if (g->m <= 0 || g->panel_begin >= g->panel_end) return;
    mq_amx_operands o;
    if (!mq_amx_prepare(g, &o)) abort();
    amx_emulated(g, &o);
    free(o.a);
    free(o.scratch);
}

// MARK: - The hardware tiles

#if MQ_X86
#define MQ_AMX __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni,amx-tile,amx-int8")))

/// The 64-byte tile configuration (palette 1): every tile 16 rows x 64 bytes.
typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} mq_tile_config;

static mq_tile_config full_tiles(void) {
    mq_tile_config c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    for (int t = 0; t < 8; t++) {
        c.rows[t] = MQ_AMX_ROWS;
        c.colsb[t] = MQ_AMX_K;
    }
    return c;
}

MQ_VNNI static void amx_store_vnni(const mq_gemm_s8_args *g, int i0, int mr, int j, int32_t sums[][MQ_S8_PANEL]) {
    __m512i rows[MQ_AMX_ROWS];
    for (int r = 0; r < mr; r++) rows[r] = _mm512_loadu_si512((const void *)sums[r]);
    mq_store_panel_rows_vnni(g, i0, mr, j, rows);
}

#define MQ_AMX_FN amx_tiles
#define MQ_AMX_ATTR MQ_AMX
#define MQ_TILE_CONFIG()                          \
    const mq_tile_config config = full_tiles();   \
    _tile_loadconfig(&config)
#define MQ_TILE_RELEASE() _tile_release()
#define MQ_TILE_ZERO(t) _tile_zero(t)
#define MQ_TILE_LOAD(t, p, stride) _tile_loadd(t, p, stride)
#define MQ_TILE_STORE(t, p, stride) _tile_stored(t, p, stride)
#define MQ_TILE_DP(c, a, b) _tile_dpbssd(c, a, b)
#define MQ_AMX_STORE(g, i0, mr, j, sums) amx_store_vnni(g, i0, mr, j, sums)
#include "int8_amx_tiles.h"

int mq_amx_usable(void) {
    static int cached = -1;
    if (cached < 0) {
        unsigned eax, ebx, ecx, edx;
        // CPUID.(EAX=7, ECX=0):EDX bit 24 AMX-TILE, bit 25 AMX-INT8.
        const int cpu = __get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) && (edx >> 24 & 1) && (edx >> 25 & 1);
        // ARCH_REQ_XCOMP_PERM (0x1023) for XFEATURE_XTILEDATA (18): without it the first tile
        // instruction faults. It fails on a kernel or hypervisor that does not hand out the state.
        cached = cpu && syscall(SYS_arch_prctl, 0x1023, 18) == 0;
    }
    return cached;
}

void mq_gemm_s8_amx(const mq_gemm_s8_args *g) {
    mq_amx_operands o;
    if (!mq_amx_prepare(g, &o)) abort();
    amx_tiles(g, &o);
    free(o.a);
    free(o.scratch);
}

// Four independent accumulator tiles, operands loaded once: the most TDPBSSD this core retires
// (16,384 multiply-adds each).
MQ_AMX double mq_amx_peak(long iterations) {
    const mq_tile_config config = full_tiles();
    _tile_loadconfig(&config);
    int8_t a[MQ_AMX_ROWS * MQ_AMX_K], b[MQ_AMX_ROWS * MQ_AMX_K];
    for (int i = 0; i < MQ_AMX_ROWS * MQ_AMX_K; i++) a[i] = (int8_t)(i % 7 - 3), b[i] = (int8_t)(i % 5 - 2);
    _tile_loadd(4, a, MQ_AMX_K);
    _tile_loadd(5, b, MQ_AMX_K);
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (long it = 0; it < iterations; it++) {
        _tile_dpbssd(0, 4, 5);
        _tile_dpbssd(1, 4, 5);
        _tile_dpbssd(2, 4, 5);
        _tile_dpbssd(3, 4, 5);
    }
    int32_t out[MQ_AMX_ROWS * MQ_S8_PANEL];
    _tile_stored(0, out, MQ_AMX_K);
    _tile_release();
    return (double)out[0];
}
#endif
