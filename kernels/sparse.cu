// Block-sparse weight kernels of the CUDA backend on batch-minor activations ([features, batch]). The weight is CSR
// over bs × bs blocks (bs = 1: CSR; 8/16/32: BSR): `rows`/`cols` count blocks, values hold bs² floats per stored
// block, row-major within it. CPU twins: engine/Backends/Cpu/CsrKernels.cs (same sums per output element).
// Every kernel takes (row_ptr, col_idx, values, a, b, rows, cols, bs, batch).
#include "common.cuh"

// yT[r, n] = Σ values·xT over logical row r's entries (a = xT, b = yT): one thread per (r, n), n fastest (coalesced).
extern "C" __global__ void csr_multiply_transposed(const int* row_ptr, const int* col_idx, const float* values,
                                                   const float* xT, float* yT, i64 rows, i64 cols, i64 bs, i64 batch) {
    (void)cols;
    FOR_EACH_ELEMENT(e, rows * bs * batch) {
        i64 r = e / batch, n = e % batch, block = r / bs, inner = r % bs;
        float acc = 0.0f;
        for (int k = row_ptr[block]; k < row_ptr[block + 1]; ++k) {
            const float* v = values + ((i64)k * bs + inner) * bs;
            const float* x = xT + (i64)col_idx[k] * bs * batch + n;
            for (i64 j = 0; j < bs; ++j) acc += v[j] * x[j * batch];
        }
        yT[e] = acc;
    }
}

// dxT[c, n] = Σ_r W[r, c]·dyT[r, n] (a = dyT, b = dxT): one thread per (c, n), n fastest; each block row's stored
// block in column c / bs found by binary search (column indices increase within a row), block rows and their inner
// rows summed in order, as the CPU's slices do, so no two threads write one element and no atomics are needed.
extern "C" __global__ void csr_multiply(const int* row_ptr, const int* col_idx, const float* values, const float* dyT,
                                        float* dxT, i64 rows, i64 cols, i64 bs, i64 batch) {
    FOR_EACH_ELEMENT(e, cols * bs * batch) {
        i64 c = e / batch, n = e % batch, block = c / bs, j = c % bs;
        float acc = 0.0f;
        for (i64 r = 0; r < rows; ++r) {
            int lo = row_ptr[r], hi = row_ptr[r + 1] - 1;
            while (lo <= hi) {
                int mid = (lo + hi) / 2;
                if (col_idx[mid] < block) lo = mid + 1; else hi = mid - 1;
            }
            if (lo >= row_ptr[r + 1] || col_idx[lo] != block) continue;
            const float* v = values + (i64)lo * bs * bs + j;
            const float* g = dyT + r * bs * batch + n;
            for (i64 inner = 0; inner < bs; ++inner) acc += v[inner * bs] * g[inner * batch];
        }
        dxT[e] = acc;
    }
}

// d_values[e] = Σ_n dyT[r, n]·xT[c, n] for stored value e (values = d_values, a = dyT, b = xT): one thread per
// stored value, its block row found by binary search over the row pointers.
extern "C" __global__ void csr_sampled_gradient(const int* row_ptr, const int* col_idx, float* d_values,
                                                const float* dyT, const float* xT, i64 rows, i64 cols, i64 bs,
                                                i64 batch) {
    (void)cols;
    i64 nnz = row_ptr[rows];
    FOR_EACH_ELEMENT(e, nnz * bs * bs) {
        i64 k = e / (bs * bs), inner = e / bs % bs, j = e % bs;
        i64 lo = 0, hi = rows - 1;
        while (lo < hi) {  // the last block row whose pointer is <= k
            i64 mid = (lo + hi + 1) / 2;
            if (row_ptr[mid] <= k) lo = mid; else hi = mid - 1;
        }
        const float* g = dyT + (lo * bs + inner) * batch;
        const float* x = xT + ((i64)col_idx[k] * bs + j) * batch;
        float acc = 0.0f;
        for (i64 n = 0; n < batch; ++n) acc += g[n] * x[n];
        d_values[e] = acc;
    }
}
