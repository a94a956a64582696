// SHA-256's compression function (FIPS 180-4, section 6.2.2) over whole 64-byte blocks, for
// MambaTensors/SHA256.swift, which keeps the padding and the digest. Checkpoints are hashed whole on
// every calibrate and quantize (7B: 14 GB), so the x86 SHA extensions are used where the CPU has
// them (Intel since Ice Lake and Goldmont, AMD since Zen); the portable loop is the reference and
// the path elsewhere. Both are tested against each other and the FIPS vectors.
#include "mamba_kernels.h"
#include <string.h>

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static inline uint32_t ror(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

static void blocks_portable(uint32_t h[8], const uint8_t *p, size_t blocks) {
    for (; blocks > 0; blocks--, p += 64) {
        uint32_t w[64];
        for (int t = 0; t < 16; t++)
            w[t] = (uint32_t)p[4 * t] << 24 | (uint32_t)p[4 * t + 1] << 16 | (uint32_t)p[4 * t + 2] << 8 | (uint32_t)p[4 * t + 3];
        for (int t = 16; t < 64; t++) {
            const uint32_t s0 = ror(w[t - 15], 7) ^ ror(w[t - 15], 18) ^ (w[t - 15] >> 3);
            const uint32_t s1 = ror(w[t - 2], 17) ^ ror(w[t - 2], 19) ^ (w[t - 2] >> 10);
            w[t] = w[t - 16] + s0 + w[t - 7] + s1;
        }
        uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
        for (int t = 0; t < 64; t++) {
            const uint32_t t1 = hh + (ror(e, 6) ^ ror(e, 11) ^ ror(e, 25)) + ((e & f) ^ (~e & g)) + K[t] + w[t];
            const uint32_t t2 = (ror(a, 2) ^ ror(a, 13) ^ ror(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
            hh = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
        }
        h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
    }
}

#if defined(__x86_64__)
#include <immintrin.h>
#define MQ_SHA __attribute__((target("sha,sse4.1,ssse3")))

// The SHA extensions keep the state as two registers, (A, B, E, F) and (C, D, G, H), each
// sha256rnds2 doing two rounds; sha256msg1 and sha256msg2 compute the schedule's sigma0 and sigma1
// parts: w[t] = sigma1(w[t-2]) + w[t-7] + sigma0(w[t-15]) + w[t-16], four words at a time.
MQ_SHA static void blocks_sha_ni(uint32_t h[8], const uint8_t *p, size_t blocks) {
    const __m128i byteswap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i abcd = _mm_loadu_si128((const __m128i *)h), efgh = _mm_loadu_si128((const __m128i *)(h + 4));
    // (A, B, C, D), (E, F, G, H) -> (A, B, E, F), (C, D, G, H) in the lane order the instructions use.
    const __m128i cdab = _mm_shuffle_epi32(abcd, 0xB1), hgfe = _mm_shuffle_epi32(efgh, 0x1B);
    __m128i abef = _mm_alignr_epi8(cdab, hgfe, 8), cdgh = _mm_blend_epi16(hgfe, cdab, 0xF0);
    for (; blocks > 0; blocks--, p += 64) {
        const __m128i abef0 = abef, cdgh0 = cdgh;
        __m128i w[16];
        for (int g = 0; g < 4; g++) w[g] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * g)), byteswap);
        for (int g = 4; g < 16; g++)
            w[g] = _mm_sha256msg2_epu32(_mm_add_epi32(_mm_sha256msg1_epu32(w[g - 4], w[g - 3]), _mm_alignr_epi8(w[g - 1], w[g - 2], 4)),
                                        w[g - 1]);
        for (int g = 0; g < 16; g++) {
            __m128i m = _mm_add_epi32(w[g], _mm_loadu_si128((const __m128i *)(K + 4 * g)));
            cdgh = _mm_sha256rnds2_epu32(cdgh, abef, m);      // two rounds: the new (A, B, E, F)
            m = _mm_shuffle_epi32(m, 0x0E);
            abef = _mm_sha256rnds2_epu32(abef, cdgh, m);      // two more, roles swapped
        }
        abef = _mm_add_epi32(abef, abef0);
        cdgh = _mm_add_epi32(cdgh, cdgh0);
    }
    const __m128i feba = _mm_shuffle_epi32(abef, 0x1B), dchg = _mm_shuffle_epi32(cdgh, 0xB1);
    _mm_storeu_si128((__m128i *)h, _mm_blend_epi16(feba, dchg, 0xF0));
    _mm_storeu_si128((__m128i *)(h + 4), _mm_alignr_epi8(dchg, feba, 8));
}

int mq_has_sha_ni(void) {
    __builtin_cpu_init();
    unsigned eax, ebx, ecx, edx;
    __asm__("cpuid" : "=a"(eax), "=b"(ebx), "=c"(ecx), "=d"(edx) : "a"(7), "c"(0));
    return (ebx >> 29) & 1 && __builtin_cpu_supports("sse4.1") && __builtin_cpu_supports("ssse3");
}
#else
int mq_has_sha_ni(void) { return 0; }
#endif

void mq_sha256_blocks(uint32_t state[8], const uint8_t *data, size_t blocks, int portable) {
#if defined(__x86_64__)
    static int sha_ni = -1;  // -1: not yet probed
    int has = __atomic_load_n(&sha_ni, __ATOMIC_RELAXED);
    if (has < 0) __atomic_store_n(&sha_ni, has = mq_has_sha_ni(), __ATOMIC_RELAXED);
    if (has && !portable) { blocks_sha_ni(state, data, blocks); return; }
#endif
    blocks_portable(state, data, blocks);
}
