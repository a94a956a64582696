// exp, 2^x and softplus on 8 (AVX2) and 16 floats (AVX-512). Private to this target.
#ifndef MQ_SIMD_MATH_H
#define MQ_SIMD_MATH_H

#if defined(__x86_64__) || defined(__i386__)
#define MQ_X86 1
#include <immintrin.h>
#define MQ_AVX2 __attribute__((target("avx2,fma")))

// exp(x): x = n*ln2 + r, |r| <= ln2/2; exp(r) by a degree-5 polynomial; 2^n through the exponent bits.
MQ_AVX2 static inline __m256 mq_exp256(__m256 x) {
    x = _mm256_min_ps(x, _mm256_set1_ps(88.3762626647949f));
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.3365447504f));
    __m256 fx = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500E-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507E-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073E-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894E-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459E-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201E-1f));
    __m256 r2 = _mm256_mul_ps(r, r);
    p = _mm256_fmadd_ps(p, r2, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i n = _mm256_cvtps_epi32(fx);
    n = _mm256_slli_epi32(_mm256_add_epi32(n, _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(n));
}

// 2^(n + r) for n integral in [-126, 127], |r| <= 1/2, on 8 floats: mq_pow2_512's polynomial
// (below), 2^n through the exponent bits (AVX2 has no vscalefps).
MQ_AVX2 static inline __m256 mq_pow2_256(__m256 n, __m256 r) {
    __m256 p = _mm256_set1_ps(1.327647129073739e-3f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(9.675541892647743e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.550713092088699e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(2.402212023735046e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(6.931469440460205e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0000001192092896f));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

// 2^x for x <= 0 on 8 floats, the AVX2 twin of mq_exp2_512_flushed (below: the scan's decays).
// x is clamped at -127, where 2^n's exponent bits are 0, so the result is 0 there and below; a
// caller with MXCSR FTZ set flushes the subnormals between.
MQ_AVX2 static inline __m256 mq_exp2_256_flushed(__m256 x) {
    x = _mm256_max_ps(x, _mm256_set1_ps(-127.0f));
    const __m256 n = _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    return mq_pow2_256(n, _mm256_sub_ps(x, n));
}

// softplus on 8 floats: mq_softplus512's method and coefficients (below, where they are
// explained), so the AVX2 and AVX-512 paths agree. It replaced exp, log, a division and a
// log1p correction (measured with the scan, bench --steps on a Zen 3: docs/PERFORMANCE.md,
// "Long prompts").
MQ_AVX2 static inline __m256 mq_softplus256(__m256 v) {
    const __m256 a = _mm256_max_ps(_mm256_or_ps(v, _mm256_set1_ps(-0.0f)), _mm256_set1_ps(-87.3365447504f));   // -|v|
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(a, _mm256_set1_ps(1.44269502162933349609375f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fmsub_ps(a, _mm256_set1_ps(1.44269502162933349609375f), n);
    r = _mm256_fmadd_ps(a, _mm256_set1_ps(1.925963033500011079e-8f), r);
    const __m256 u = mq_pow2_256(n, r);
    __m256 p = _mm256_set1_ps(5.253457929939032e-3f);
    p = _mm256_fmadd_ps(p, u, _mm256_set1_ps(-2.958850748836994e-2f));
    p = _mm256_fmadd_ps(p, u, _mm256_set1_ps(7.836166769266129e-2f));
    p = _mm256_fmadd_ps(p, u, _mm256_set1_ps(-1.3674770295619965e-1f));
    p = _mm256_fmadd_ps(p, u, _mm256_set1_ps(1.9111430644989014e-1f));
    p = _mm256_fmadd_ps(p, u, _mm256_set1_ps(-2.4844369292259216e-1f));
    p = _mm256_fmadd_ps(p, u, _mm256_set1_ps(3.3319270610809326e-1f));
    p = _mm256_fmadd_ps(p, u, _mm256_set1_ps(-4.9999502301216125e-1f));
    p = _mm256_fmadd_ps(p, u, _mm256_set1_ps(1.0f));
    return _mm256_fmadd_ps(u, p, _mm256_max_ps(v, _mm256_setzero_ps()));
}

#define MQ_AVX512 __attribute__((target("avx2,fma,avx512f,avx512dq")))

// The lanes of a 16-float step with `remaining` values left: all 16, or the first `remaining`
// (a row's masked tail).
static inline __mmask16 mq_mask16(int remaining) {
    return remaining >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << remaining) - 1);
}

// mq_exp256 on 16 floats: the same reduction and polynomial; 2^n by vscalefps.
MQ_AVX512 static inline __m512 mq_exp512(__m512 x) {
    x = _mm512_min_ps(x, _mm512_set1_ps(88.3762626647949f));
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.3365447504f));
    __m512 fx = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(fx, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(fx, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500E-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507E-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073E-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894E-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459E-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201E-1f));
    __m512 r2 = _mm512_mul_ps(r, r);
    p = _mm512_fmadd_ps(p, r2, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, fx);
}

// 2^(n + r) for n integral, |r| <= 1/2: 2^r by a degree-5 polynomial fitted here for relative
// error on [-1/2, 1/2] (2.3e-7 at most in float32 Horner, as mq_exp512's), 2^n by vscalefps.
MQ_AVX512 static inline __m512 mq_pow2_512(__m512 n, __m512 r) {
    __m512 p = _mm512_set1_ps(1.327647129073739e-3f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(9.675541892647743e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.550713092088699e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(2.402212023735046e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(6.931469440460205e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0000001192092896f));
    return _mm512_scalef_ps(p, n);
}

// 2^x for x <= 0, the scan's decays exp(dt A) = 2^(dt A log2 e) with A < 0 (A pre-scaled by
// log2 e, so the base-e reduction's two steps go): x = n + r, |r| <= 1/2, exact. No clamp: the
// caller runs with subnormals flushed to zero (MXCSR FTZ), so x below -126 gives 0 and no decay or
// state goes subnormal (which slows the FMAs down).
MQ_AVX512 static inline __m512 mq_exp2_512_flushed(__m512 x) {
    const __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    return mq_pow2_512(n, _mm512_sub_ps(x, n));
}

// exp(-|v|) on 16 floats, -|v| clamped below at `floor`: -|v| log2 e = n + r in two steps (log2 e
// as a float plus its remainder, so that r keeps its precision at |v| near 87: one product rounded
// there is 4e-6 off), then mq_pow2_512. (mq_softplus512 and mq_sigmoid512 below.)
MQ_AVX512 static inline __m512 mq_exp_minus_abs512(__m512 v, float floor) {
    const __m512 a = _mm512_max_ps(_mm512_or_ps(v, _mm512_set1_ps(-0.0f)), _mm512_set1_ps(floor));   // -|v|
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(a, _mm512_set1_ps(1.44269502162933349609375f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fmsub_ps(a, _mm512_set1_ps(1.44269502162933349609375f), n);
    r = _mm512_fmadd_ps(a, _mm512_set1_ps(1.925963033500011079e-8f), r);
    return mq_pow2_512(n, r);
}

// softplus(v) = max(v, 0) + log1p(u), u = exp(-|v|) in (0, 1] (mq_exp_minus_abs512), for 16 floats.
// log1p(u) = u P(u), P a degree-8 polynomial fitted here (Chebyshev, in double, then checked in
// float32 Horner) to log1p(u)/u on [0, 1]: relative error 2.0e-7 at most. Past v = 20 the sum
// rounds to v (u < 2.1e-9), what the threshold of the reference gives. Against the former AVX2 one
// (exp, log, a division and the log1p correction on 8 lanes): a third of the operations and half
// the dependent chain, which the scan's dt sits on (scan.c).
MQ_AVX512 static inline __m512 mq_softplus512(__m512 v) {
    const __m512 u = mq_exp_minus_abs512(v, -87.3365447504f);
    __m512 p = _mm512_set1_ps(5.253457929939032e-3f);
    p = _mm512_fmadd_ps(p, u, _mm512_set1_ps(-2.958850748836994e-2f));
    p = _mm512_fmadd_ps(p, u, _mm512_set1_ps(7.836166769266129e-2f));
    p = _mm512_fmadd_ps(p, u, _mm512_set1_ps(-1.3674770295619965e-1f));
    p = _mm512_fmadd_ps(p, u, _mm512_set1_ps(1.9111430644989014e-1f));
    p = _mm512_fmadd_ps(p, u, _mm512_set1_ps(-2.4844369292259216e-1f));
    p = _mm512_fmadd_ps(p, u, _mm512_set1_ps(3.3319270610809326e-1f));
    p = _mm512_fmadd_ps(p, u, _mm512_set1_ps(-4.9999502301216125e-1f));
    p = _mm512_fmadd_ps(p, u, _mm512_set1_ps(1.0f));
    return _mm512_fmadd_ps(u, p, _mm512_max_ps(v, _mm512_setzero_ps()));
}

// sigmoid(v) on 16 floats without a division and without overflow: u = exp(-|v|) in (0, 1]
// (mq_exp_minus_abs512, clamped at -104, where u is already 0 in float32), then sigmoid(v) =
// 1 / (1 + u) for v >= 0 and u / (1 + u) below, the reciprocal from vrcp14ps (14 bits) and one
// Newton step (about 2^-23 relative: a few ulp from the quotient).
MQ_AVX512 static inline __m512 mq_sigmoid512(__m512 v) {
    const __m512 u = mq_exp_minus_abs512(v, -104.0f), one = _mm512_set1_ps(1.0f);
    const __m512 d = _mm512_add_ps(one, u);
    __m512 q = _mm512_rcp14_ps(d);
    q = _mm512_mul_ps(q, _mm512_fnmadd_ps(d, q, _mm512_set1_ps(2.0f)));
    const __mmask16 negative = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LT_OQ);
    return _mm512_mul_ps(_mm512_mask_mov_ps(one, negative, u), q);
}

// silu(v) = v sigmoid(v) on 16 floats. Against mq_exp256 and vdivps on 8 lanes (the AVX2 paths):
// 21 instructions for 16 floats instead of about 40 and no divider (measured in
// docs/PERFORMANCE.md, "Issue 31: where its targets stood").
MQ_AVX512 static inline __m512 mq_silu512(__m512 v) { return _mm512_mul_ps(v, mq_sigmoid512(v)); }

#else
#define MQ_X86 0
#endif

#endif
