// The AMX GEMM's loop nest (int8_amx.c), written once and included twice: over the hardware tile
// instructions and over their plain-C definitions (so that the tiling, the padding and the tails are
// tested on every CPU, not only on one with AMX). The includer defines:
//   MQ_AMX_FN                 the function's name, with MQ_AMX_ATTR its attributes;
//   MQ_TILE_CONFIG()          load the tile configuration (8 tiles of 16 rows x 64 bytes);
//   MQ_TILE_RELEASE()         release the tiles;
//   MQ_TILE_ZERO(t), MQ_TILE_LOAD(t, p, stride), MQ_TILE_STORE(t, p, stride), MQ_TILE_DP(c, a, b)
//                             (t, c, a, b: literal tile numbers; DP is TDPBSSD, signed x signed);
//   MQ_AMX_STORE(g, i0, mr, j, sums)
//                             write mr rows of one 16 x 16 block of exact sums (raw or epilogue).
// Tiles 0-3 hold a 32 x 32 block of int32 sums (0: rows 0-15 x panel 0, 1: rows 0-15 x panel 1,
// 2: rows 16-31 x panel 0, 3: rows 16-31 x panel 1), 4-5 the two 16-row halves of a's 64 bytes of
// K, 6-7 the two panels' 16 k-steps of the same K.

MQ_AMX_ATTR static void MQ_AMX_FN(const mq_gemm_s8_args *g, const mq_amx_operands *o) {
    MQ_TILE_CONFIG();
    for (int p = g->panel_begin; p < g->panel_end; p += 2) {
        const int np = g->panel_end - p >= 2 ? 2 : 1;
        const int8_t *b0 = mq_amx_panel(g, o, p, 0), *b1 = np == 2 ? mq_amx_panel(g, o, p + 1, 1) : b0;
        for (int i0 = 0; i0 < g->m; i0 += 2 * MQ_AMX_ROWS) {
            // Rows past m are zeros in a's copy; the second half is skipped when it holds only those.
            const int lower = i0 + MQ_AMX_ROWS < g->m;
            const int8_t *a = o->a + (size_t)i0 * o->lda;
            MQ_TILE_ZERO(0);
            MQ_TILE_ZERO(1);
            MQ_TILE_ZERO(2);
            MQ_TILE_ZERO(3);
            for (int kb = 0; kb < o->kblocks; kb++) {
                const size_t ka = (size_t)kb * MQ_AMX_K, kw = (size_t)kb * MQ_AMX_ROWS * MQ_AMX_K;
                MQ_TILE_LOAD(4, a + ka, o->lda);
                MQ_TILE_LOAD(6, b0 + kw, MQ_AMX_K);
                MQ_TILE_DP(0, 4, 6);
                if (np == 2) {
                    MQ_TILE_LOAD(7, b1 + kw, MQ_AMX_K);
                    MQ_TILE_DP(1, 4, 7);
                }
                if (lower) {
                    MQ_TILE_LOAD(5, a + (size_t)MQ_AMX_ROWS * o->lda + ka, o->lda);
                    MQ_TILE_DP(2, 5, 6);
                    if (np == 2) MQ_TILE_DP(3, 5, 7);
                }
            }
            int32_t sums[4][MQ_AMX_ROWS][MQ_S8_PANEL];
            MQ_TILE_STORE(0, sums[0], MQ_AMX_K);
            if (np == 2) MQ_TILE_STORE(1, sums[1], MQ_AMX_K);
            if (lower) {
                MQ_TILE_STORE(2, sums[2], MQ_AMX_K);
                if (np == 2) MQ_TILE_STORE(3, sums[3], MQ_AMX_K);
            }
            for (int h = 0; h < 1 + lower; h++) {
                const int r0 = i0 + h * MQ_AMX_ROWS;
                const int mr = g->m - r0 < MQ_AMX_ROWS ? g->m - r0 : MQ_AMX_ROWS;
                for (int q = 0; q < np; q++) MQ_AMX_STORE(g, r0, mr, (p + q) * MQ_S8_PANEL, sums[2 * h + q]);
            }
        }
    }
    MQ_TILE_RELEASE();
}
