// Reductions over any set of axes of a strided tensor, and argmax along one axis. One thread per output element
// walks its reduced elements in row-major order (the CPU's order). CPU twins: CpuBackend.Reduce.cs.
#include "common.cuh"

// kept: shape and x-strides of the kept axes (row-major order of y); reduced: those of the reduced axes.
template <typename T>
__device__ void reduce(int op, const T* x, Strided kept, Strided reduced, i64 count, T* y, i64 outputs) {
    FOR_EACH_ELEMENT(o, outputs) {
        const T* base = x + offset_of(kept, o);
        T acc = op == REDUCE_MAX ? -fr_infinity<T>() : op == REDUCE_MIN ? fr_infinity<T>() : T(0);
        for (i64 r = 0; r < count; ++r) {
            T v = base[offset_of(reduced, r)];
            acc = op == REDUCE_MAX ? nan_max(acc, v) : op == REDUCE_MIN ? nan_min(acc, v) : acc + v;
        }
        y[o] = op == REDUCE_MEAN ? acc / T(count) : acc;
    }
}

// Few outputs with long reductions (a loss, a norm): one block per output, threads striding over the reduced
// elements, then a block reduction (a different summation order from the CPU's: equal within rounding).
template <typename T>
__device__ void reduce_blocks(int op, const T* x, Strided kept, Strided reduced, i64 count, T* y, i64 outputs) {
    for (i64 o = blockIdx.x; o < outputs; o += gridDim.x) {
        const T* base = x + offset_of(kept, o);
        T identity = op == REDUCE_MAX ? -fr_infinity<T>() : op == REDUCE_MIN ? fr_infinity<T>() : T(0);
        T acc = identity;
        for (i64 r = threadIdx.x; r < count; r += blockDim.x) {
            T v = base[offset_of(reduced, r)];
            acc = op == REDUCE_MAX ? nan_max(acc, v) : op == REDUCE_MIN ? nan_min(acc, v) : acc + v;
        }
        if (op == REDUCE_MAX) acc = block_reduce(acc, MaxOp(), identity);
        else if (op == REDUCE_MIN) acc = -block_reduce(-acc, MaxOp(), -identity);
        else acc = block_reduce(acc, SumOp(), identity);
        if (threadIdx.x == 0) y[o] = op == REDUCE_MEAN ? acc / T(count) : acc;
    }
}

// y[o] = index of the first maximum along the axis (a NaN counts as the maximum).
template <typename T>
__device__ void argmax(const T* x, Strided kept, i64 n, i64 stride, int* y, i64 outputs) {
    FOR_EACH_ELEMENT(o, outputs) {
        const T* p = x + offset_of(kept, o);
        int best = 0;
        T bv = p[0];
        for (i64 i = 1; i < n; ++i) {
            T v = p[i * stride];
            if (v > bv || (v != v && bv == bv)) { bv = v; best = (int)i; }
        }
        y[o] = best;
    }
}

#define FRUGAL_REDUCE_ENTRIES(T, S)                                                                           \
    extern "C" __global__ void reduce_##S(int op, const T* x, Strided kept, Strided reduced, i64 count, T* y, \
                                          i64 outputs) {                                                      \
        reduce(op, x, kept, reduced, count, y, outputs);                                                      \
    }                                                                                                         \
    extern "C" __global__ void reduce_blocks_##S(int op, const T* x, Strided kept, Strided reduced, i64 count, \
                                                 T* y, i64 outputs) {                                         \
        reduce_blocks(op, x, kept, reduced, count, y, outputs);                                               \
    }                                                                                                         \
    extern "C" __global__ void argmax_##S(const T* x, Strided kept, i64 n, i64 stride, int* y, i64 outputs) { \
        argmax(x, kept, n, stride, y, outputs);                                                               \
    }

FRUGAL_REDUCE_ENTRIES(float, f32)
FRUGAL_REDUCE_ENTRIES(double, f64)
