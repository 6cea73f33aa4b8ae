// Philox-4x32-10, the counter-based generator of engine/Backends/Philox.cs: the same numbers for a seed and an
// index on every device. Included by the kernels that draw random numbers.
#pragma once
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

// Stochastic rounding offset, uniform [0, 1) with 16 random bits (Philox.RoundingOffset on the CPU): element i of the
// 32 elements 32q .. 32q + 31 takes half (i / 16) % 2 (low bits first) of word (i / 4) % 4 of block 4q + i % 4.
__device__ __forceinline__ float philox_rounding_offset(unsigned long long seed, unsigned long long index) {
    Philox4 b = philox_block((index >> 5) * 4 + (index & 3), 0, seed);
    return ((b.v[(index >> 2) & 3] >> (16 * ((index >> 4) & 1))) & 0xFFFFu) * (1.0f / 65536.0f);
}
