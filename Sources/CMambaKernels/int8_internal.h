// Helpers shared by the int8 GEMMs (int8.c: per-channel scales; int8_blocked.c: scales per block
// of K). Private to this target: not in include/.
#ifndef MQ_INT8_INTERNAL_H
#define MQ_INT8_INTERNAL_H

#include "simd_math.h"
#include <stddef.h>
#include <stdint.h>

#if MQ_X86
#define MQ_VNNI __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni")))

/// dst[t] = src[t] sign-extended to int16, t < count (the AVX2 int16 form's operands).
void mq_s8_widen(const int8_t *src, size_t count, int16_t *dst);

/// out[i, t] = a[i, t] xor 0x80 = a + 128 as unsigned, rows of kp bytes (vpdpbusd's unsigned operand).
void mq_s8_flip_rows(const int8_t *a, int m, int kp, int lda, int8_t *out);
#endif

#endif
