// Packed low-bit weights (the Quantized format; layout: QuantShape and QuantScale in common.cuh). CPU twins:
// engine/Backends/Cpu/QuantKernels.cs, with the same arithmetic per group and per value (sums in group order,
// fused multiply-adds spelled out), so both give the same codes.
#include "common.cuh"
#include "philox.cuh"

// Scale and zero of every group from dense values x [rows, cols]: one thread per group, summing in order.
extern "C" __global__ void quant_scales(const float* x, QuantScale* scales, QuantShape q, int scheme) {
    i64 groups = (i64)q.rows * q.cols / q.group;
    FOR_EACH_ELEMENT(g, groups) {
        const float* w = x + g * q.group;
        int n = q.group, levels = (1 << q.bits) - 1;
        float scale, zero;
        if (scheme == SCHEME_SYMMETRIC) {
            float absmax = 0.0f;
            for (int i = 0; i < n; ++i) absmax = fmaxf(absmax, fabsf(w[i]));
            scale = absmax / (float)((1 << (q.bits - 1)) - 1);
            zero = (float)(1 << (q.bits - 1));
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
        scales[g] = s;
    }
}

// Codes from dense values and the groups' scales: one thread per code byte, so no two threads write one byte.
// code = clamp(⌊x / scale + zero + ½⌋) to nearest, or clamp(⌊x / scale + zero + u⌋) with u = philox(seed, offset + i).
extern "C" __global__ void quant_codes(const float* x, const QuantScale* scales, unsigned char* codes, QuantShape q,
                                       int scheme, int stochastic, unsigned long long seed, unsigned long long offset) {
    i64 count = (i64)q.rows * q.cols, bytes = (count * q.bits + 7) / 8;
    int per_byte = 8 / q.bits, half = 1 << (q.bits - 1);
    int lo = 0, hi = (1 << q.bits) - 1;
    if (scheme == SCHEME_SYMMETRIC) { lo = 1; hi = 2 * half - 1; }
    else if (scheme == SCHEME_TERNARY) hi = 2;
    FOR_EACH_ELEMENT(b, bytes) {
        unsigned int byte = 0;
        for (int k = 0; k < per_byte; ++k) {
            i64 i = b * per_byte + k;
            if (i >= count) break;
            QuantScale s = scales[i / q.group];
            float inv = s.scale > 0.0f ? 1.0f / s.scale : 0.0f;
            float t = fmaf(x[i], inv, s.zero);
            float u = stochastic ? philox_uniform(seed, offset + (unsigned long long)i) : 0.5f;
            int code = (int)floorf(t + u);
            code = code < lo ? lo : code > hi ? hi : code;
            byte |= (unsigned int)code << (k * q.bits);
        }
        codes[b] = (unsigned char)byte;
    }
}

// dense [rows, cols] = scale · (code − zero).
extern "C" __global__ void quant_dequantize(const unsigned char* codes, const QuantScale* scales, float* y, QuantShape q) {
    FOR_EACH_ELEMENT(i, (i64)q.rows * q.cols) y[i] = quant_value(codes, scales, q, i);
}

#define QUANT_TILE 16

// y [batch, rows] = x [batch, cols] · Wᵀ (transposed != 0) or y [batch, cols] = x [batch, rows] · W: 16 × 16 output
// tiles, one per block of 256 threads (grid-stride over tiles), W's tile dequantized as it is loaded into shared
// memory, so no dense W exists.
extern "C" __global__ void quant_matmul(const unsigned char* codes, const QuantScale* scales, const float* x, float* y,
                                        QuantShape q, int transposed, i64 batch) {
    __shared__ float xs[QUANT_TILE][QUANT_TILE];
    __shared__ float ws[QUANT_TILE][QUANT_TILE + 1];
    int ty = threadIdx.x / QUANT_TILE, tx = threadIdx.x % QUANT_TILE;
    i64 out = transposed ? q.rows : q.cols, inner = transposed ? q.cols : q.rows;
    i64 tiles_b = (batch + QUANT_TILE - 1) / QUANT_TILE, tiles_o = (out + QUANT_TILE - 1) / QUANT_TILE;
    for (i64 t = blockIdx.x; t < tiles_b * tiles_o; t += gridDim.x) {
        i64 b0 = t / tiles_o * QUANT_TILE, o0 = t % tiles_o * QUANT_TILE;
        float acc = 0.0f;
        for (i64 k0 = 0; k0 < inner; k0 += QUANT_TILE) {
            i64 xb = b0 + ty, xk = k0 + tx;
            xs[ty][tx] = xb < batch && xk < inner ? x[xb * inner + xk] : 0.0f;
            // ws[o][k]: W[o0 + ty, k0 + tx] when transposed (W's rows are outputs), else W[k0 + ty, o0 + tx].
            i64 wr = transposed ? o0 + ty : k0 + ty, wc = transposed ? k0 + tx : o0 + tx;
            float w = wr < q.rows && wc < q.cols ? quant_value(codes, scales, q, wr * q.cols + wc) : 0.0f;
            if (transposed) ws[ty][tx] = w; else ws[tx][ty] = w;
            __syncthreads();
            for (int k = 0; k < QUANT_TILE; ++k) acc += xs[ty][k] * ws[tx][k];
            __syncthreads();
        }
        i64 yb = b0 + ty, yo = o0 + tx;
        if (yb < batch && yo < out) y[yb * out + yo] = acc;
    }
}
