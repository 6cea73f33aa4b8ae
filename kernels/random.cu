// Counter-based randomness of the CUDA backend: the same Philox-4x32-10 stream as the CPU
// (engine/Backends/Philox.cs), so a seed gives the same numbers on every device.
#include "common.cuh"
#include "philox.cuh"

// Standard normal by Box-Muller on one block per element (Philox.Normal on the CPU).
__device__ __forceinline__ double philox_normal(unsigned long long seed, unsigned long long index) {
    Philox4 b = philox_block(index, 1, seed);
    double u1 = ((b.v[0] >> 8) + 1.0) * (1.0 / 16777217.0);
    double u2 = (b.v[1] >> 8) * (1.0 / 16777216.0);
    return sqrt(-2.0 * log(u1)) * cos(2.0 * 3.141592653589793 * u2);
}

template <typename T>
__device__ void random_fill(T* y, int normal, double a, double b, unsigned long long seed, unsigned long long offset, i64 n) {
    FOR_EACH_ELEMENT(i, n) {
        unsigned long long k = offset + (unsigned long long)i;
        double v = normal ? a + b * philox_normal(seed, k) : a + (b - a) * (double)philox_uniform(seed, k);
        y[i] = (T)v;
    }
}

template <typename T>
__device__ void dropout(const T* x, float p, T scale, unsigned long long seed, unsigned long long offset, T* y,
                        unsigned char* mask, i64 n) {
    FOR_EACH_ELEMENT(i, n) {
        bool keep = philox_uniform(seed, offset + (unsigned long long)i) >= p;
        mask[i] = keep ? 1 : 0;
        y[i] = keep ? x[i] * scale : T(0);
    }
}

#define FRUGAL_RANDOM_ENTRIES(T, S)                                                                          \
    extern "C" __global__ void random_##S(T* y, int normal, double a, double b, unsigned long long seed,      \
                                          unsigned long long offset, i64 n) {                               \
        random_fill(y, normal, a, b, seed, offset, n);                                                      \
    }                                                                                                        \
    extern "C" __global__ void dropout_##S(const T* x, float p, T scale, unsigned long long seed,            \
                                           unsigned long long offset, T* y, unsigned char* mask, i64 n) {   \
        dropout(x, p, scale, seed, offset, y, mask, n);                                                     \
    }

FRUGAL_RANDOM_ENTRIES(float, f32)
FRUGAL_RANDOM_ENTRIES(double, f64)
