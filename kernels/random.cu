// Counter-based randomness of the CUDA backend: the same Philox-4x32-10 stream as the CPU
// (engine/Backends/Philox.cs), so a seed gives the same numbers on every device.
#include "common.cuh"

struct Philox4 { unsigned int v[4]; };

__device__ __forceinline__ Philox4 philox_block(unsigned long long counter, unsigned long long hi, unsigned long long key) {
    unsigned int c0 = (unsigned int)counter, c1 = (unsigned int)(counter >> 32);
    unsigned int c2 = (unsigned int)hi, c3 = (unsigned int)(hi >> 32);
    unsigned int k0 = (unsigned int)key, k1 = (unsigned int)(key >> 32);
    for (int r = 0; r < 10; ++r) {
        unsigned long long p0 = (unsigned long long)0xD2511F53u * c0;
        unsigned long long p1 = (unsigned long long)0xCD9E8D57u * c2;
        unsigned int n0 = (unsigned int)(p1 >> 32) ^ c1 ^ k0;
        unsigned int n2 = (unsigned int)(p0 >> 32) ^ c3 ^ k1;
        c1 = (unsigned int)p1;
        c3 = (unsigned int)p0;
        c0 = n0;
        c2 = n2;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    Philox4 out = {{c0, c1, c2, c3}};
    return out;
}

// Uniform [0, 1) with 24 random bits, element `index` of stream `seed` (Philox.Uniform on the CPU).
__device__ __forceinline__ float philox_uniform(unsigned long long seed, unsigned long long index) {
    Philox4 b = philox_block(index >> 2, 0, seed);
    return (b.v[index & 3] >> 8) * (1.0f / 16777216.0f);
}

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
