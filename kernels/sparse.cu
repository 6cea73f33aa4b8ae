// CSR weight kernels of the CUDA backend on batch-minor activations ([features, batch]). CPU twins:
// engine/Backends/Cpu/CsrKernels.cs (same sums in the same order per output element).
#include "common.cuh"

// yT[r, b] = Σ_k values[k]·xT[colIdx[k], b] over row r's entries: one thread per (r, b), b fastest (coalesced).
extern "C" __global__ void csr_multiply_transposed(const int* row_ptr, const int* col_idx, const float* values,
                                                   const float* xT, float* yT, i64 rows, i64 batch) {
    FOR_EACH_ELEMENT(e, rows * batch) {
        i64 r = e / batch, b = e % batch;
        float acc = 0.0f;
        for (int k = row_ptr[r]; k < row_ptr[r + 1]; ++k) acc += values[k] * xT[(i64)col_idx[k] * batch + b];
        yT[e] = acc;
    }
}

// dxT[:, b] = Wᵀ·dyT[:, b]: one thread per batch column walks every entry in order (as the CPU's slices do), so
// no two threads write one element.
extern "C" __global__ void csr_multiply(const int* row_ptr, const int* col_idx, const float* values, const float* dyT,
                                        float* dxT, i64 rows, i64 cols, i64 batch) {
    FOR_EACH_ELEMENT(b, batch) {
        for (i64 c = 0; c < cols; ++c) dxT[c * batch + b] = 0.0f;
        for (i64 r = 0; r < rows; ++r) {
            float g = dyT[r * batch + b];
            for (int k = row_ptr[r]; k < row_ptr[r + 1]; ++k) dxT[(i64)col_idx[k] * batch + b] += g * values[k];
        }
    }
}

// dValues[k] = Σ_b dyT[r, b]·xT[colIdx[k], b]: one thread per stored entry, its row found by binary search.
extern "C" __global__ void csr_sampled_gradient(const int* row_ptr, const int* col_idx, const float* dyT,
                                                const float* xT, float* d_values, i64 rows, i64 nnz, i64 batch) {
    FOR_EACH_ELEMENT(k, nnz) {
        i64 lo = 0, hi = rows - 1;
        while (lo < hi) {  // the last row whose pointer is <= k
            i64 mid = (lo + hi + 1) / 2;
            if (row_ptr[mid] <= k) lo = mid; else hi = mid - 1;
        }
        const float* g = dyT + lo * batch;
        const float* x = xT + (i64)col_idx[k] * batch;
        float acc = 0.0f;
        for (i64 b = 0; b < batch; ++b) acc += g[b] * x[b];
        d_values[k] = acc;
    }
}
