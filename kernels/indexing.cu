// Gather and scatter-add along one axis. CPU twins: IndexSelect and IndexAdd in CpuBackend.Nn.cs.
#include "common.cuh"

// dst[o, i, k] = src[o, index[i], k] for contiguous src [outer, extent, inner] and dst [outer, n, inner]; any
// element size (copied as `size` bytes).
__device__ void index_select(const unsigned char* src, const int* index, unsigned char* dst, i64 n, i64 extent,
                             i64 inner, i64 size, i64 total) {
    FOR_EACH_ELEMENT(e, total) {
        i64 k = e % inner, i = (e / inner) % n, o = e / (inner * n);
        const unsigned char* from = src + ((o * extent + index[i]) * inner + k) * size;
        unsigned char* to = dst + e * size;
        for (i64 b = 0; b < size; ++b) to[b] = from[b];
    }
}

// dst[o, index[i], k] += src[o, i, k]: one thread per destination column (o, k) adds the indices in order, so
// repeated indices accumulate deterministically, as on the CPU.
template <typename T>
__device__ void index_add(const T* src, const int* index, T* dst, i64 outer, i64 n, i64 extent, i64 inner) {
    FOR_EACH_ELEMENT(e, outer * inner) {
        i64 k = e % inner, o = e / inner;
        for (i64 i = 0; i < n; ++i)
            dst[(o * extent + index[i]) * inner + k] += src[(o * n + i) * inner + k];
    }
}

extern "C" __global__ void index_select_bytes(const unsigned char* src, const int* index, unsigned char* dst, i64 n,
                                              i64 extent, i64 inner, i64 size, i64 total) {
    index_select(src, index, dst, n, extent, inner, size, total);
}
extern "C" __global__ void index_add_f32(const float* src, const int* index, float* dst, i64 outer, i64 n, i64 extent,
                                         i64 inner) {
    index_add(src, index, dst, outer, n, extent, inner);
}
extern "C" __global__ void index_add_f64(const double* src, const int* index, double* dst, i64 outer, i64 n,
                                         i64 extent, i64 inner) {
    index_add(src, index, dst, outer, n, extent, inner);
}
