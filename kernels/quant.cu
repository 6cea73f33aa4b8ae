// Packed low-bit weights (the Quantized format; layout: QuantShape and QuantScale in common.cuh). CPU twins:
// engine/Backends/Cpu/QuantKernels.cs, with the same arithmetic per group and per value (quant.cuh), so both give
// the same codes.
#include "quant.cuh"

// Scale and zero of every group from dense values x [rows, cols]: one thread per group.
extern "C" __global__ void quant_scales(const float* x, QuantScale* scales, QuantShape q, int scheme) {
    i64 groups = (i64)q.rows * q.cols / q.group;
    FOR_EACH_ELEMENT(g, groups) scales[g] = quant_group_scale(x + g * q.group, q.group, q.bits, scheme);
}

// Codes from dense values and the groups' scales: one thread per code byte, so no two threads write one byte.
extern "C" __global__ void quant_codes(const float* x, const QuantScale* scales, unsigned char* codes, QuantShape q,
                                       int scheme, int stochastic, unsigned long long seed, unsigned long long offset) {
    i64 count = (i64)q.rows * q.cols, bytes = (count * q.bits + 7) / 8;
    FOR_EACH_ELEMENT(b, bytes) codes[b] = quant_code_byte(x, 0, count, scales, q, scheme, stochastic, seed, offset, b);
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
