// Quantization of one group and of one code byte (the Quantized format; layout: QuantShape and QuantScale in
// common.cuh), shared by quant.cu's kernels and optim.cu's master-free 8-bit Adam step. CPU twin:
// engine/Backends/Cpu/QuantKernels.cs, with the same arithmetic per group and per value (sums in group order,
// fused multiply-adds spelled out), so both give the same codes.
#pragma once
#include "common.cuh"
#include "philox.cuh"

// Scale and zero of the group of n values at w under `scheme`, summing in order.
__device__ __forceinline__ QuantScale quant_group_scale(const float* w, int n, int bits, int scheme) {
    int levels = (1 << bits) - 1;
    float scale, zero;
    if (scheme == SCHEME_SYMMETRIC) {
        float absmax = 0.0f;
        for (int i = 0; i < n; ++i) absmax = fmaxf(absmax, fabsf(w[i]));
        scale = absmax / (float)((1 << (bits - 1)) - 1);
        zero = (float)(1 << (bits - 1));
    } else if (scheme == SCHEME_ASYMMETRIC) {
        float lo = w[0], hi = w[0];
        for (int i = 1; i < n; ++i) { lo = fminf(lo, w[i]); hi = fmaxf(hi, w[i]); }
        scale = (hi - lo) / (float)levels;
        if (scale == 0.0f) scale = lo == 0.0f ? 1.0f : fabsf(lo);
        zero = -lo / scale;
    } else if (scheme == SCHEME_TERNARY) {
        float sum = 0.0f;
        for (int i = 0; i < n; ++i) sum += fabsf(w[i]);
        float threshold = 0.7f * (sum / (float)n), above = 0.0f;
        int count = 0;
        for (int i = 0; i < n; ++i)
            if (fabsf(w[i]) > threshold) { above += fabsf(w[i]); ++count; }
        scale = count > 0 ? above / (float)count : 0.0f;
        zero = 1.0f;
    } else {
        float sum = 0.0f;
        for (int i = 0; i < n; ++i) sum += fabsf(w[i]);
        scale = 2.0f * (sum / (float)n);
        zero = 0.5f;
    }
    QuantScale s = {scale, zero};
    return s;
}

// Code byte b of the values x[i - first] (i the value's index in the weight, first the index of x[0]; the weight
// has `count` values) and their groups' scales: code = clamp(⌊x / scale + zero + ½⌋) to nearest, or
// clamp(⌊x / scale + zero + u⌋) with u = philox_rounding_offset(seed, offset + i).
__device__ __forceinline__ unsigned char quant_code_byte(const float* x, i64 first, i64 count, const QuantScale* scales,
                                                         QuantShape q, int scheme, int stochastic,
                                                         unsigned long long seed, unsigned long long offset, i64 b) {
    int per_byte = 8 / q.bits, half = 1 << (q.bits - 1);
    int lo = 0, hi = (1 << q.bits) - 1;
    if (scheme == SCHEME_SYMMETRIC) { lo = 1; hi = 2 * half - 1; }
    else if (scheme == SCHEME_TERNARY) hi = 2;
    unsigned int byte = 0;
    for (int k = 0; k < per_byte; ++k) {
        i64 i = b * per_byte + k;
        if (i >= count) break;
        QuantScale s = scales[i / q.group];
        float inv = s.scale > 0.0f ? 1.0f / s.scale : 0.0f;
        float t = fmaf(x[i - first], inv, s.zero);
        float u = stochastic ? philox_rounding_offset(seed, offset + (unsigned long long)i) : 0.5f;
        int code = (int)floorf(t + u);
        code = code < lo ? lo : code > hi ? hi : code;
        byte |= (unsigned int)code << (k * q.bits);
    }
    return (unsigned char)byte;
}
