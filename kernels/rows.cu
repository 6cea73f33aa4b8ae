// Row-wise kernels of the CUDA backend over [rows, cols] row-major buffers, one block per row with block
// reductions. CPU twins: engine/Backends/Cpu/CpuBackend.Nn.cs (same formulas).
#include "common.cuh"

template <typename T>
__device__ T row_max(const T* x, i64 cols) {
    T m = -fr_infinity<T>();
    FOR_EACH_COLUMN(c, cols) m = nan_max(m, x[c]);
    return block_reduce(m, MaxOp(), -fr_infinity<T>());
}

template <typename T>
__device__ T row_sum_exp(const T* x, T shift, i64 cols) {
    T s = T(0);
    FOR_EACH_COLUMN(c, cols) s += fr_exp(x[c] - shift);
    return block_reduce(s, SumOp(), T(0));
}

template <typename T>
__device__ void softmax(const T* x, T* y, i64 rows, i64 cols, int log) {
    FOR_EACH_ROW(r, rows) {
        const T* xr = x + r * cols;
        T* yr = y + r * cols;
        T m = row_max(xr, cols);
        T s = row_sum_exp(xr, m, cols);
        if (log) {
            T ls = fr_log(s);
            FOR_EACH_COLUMN(c, cols) yr[c] = (xr[c] - m) - ls;
        } else {
            FOR_EACH_COLUMN(c, cols) yr[c] = fr_exp(xr[c] - m) / s;
        }
    }
}

// log: dx = dy - exp(y)·Σdy; else dx = y·(dy - Σ dy·y).
template <typename T>
__device__ void softmax_backward(const T* y, const T* dy, T* dx, i64 rows, i64 cols, int log) {
    FOR_EACH_ROW(r, rows) {
        const T* yr = y + r * cols;
        const T* gr = dy + r * cols;
        T* dr = dx + r * cols;
        T s = T(0);
        FOR_EACH_COLUMN(c, cols) s += log ? gr[c] : gr[c] * yr[c];
        s = block_reduce(s, SumOp(), T(0));
        FOR_EACH_COLUMN(c, cols) dr[c] = log ? gr[c] - fr_exp(yr[c]) * s : yr[c] * (gr[c] - s);
    }
}

// loss[r] = logsumexp(x[r]) - x[r, t[r]], 0 where t[r] == ignore.
template <typename T>
__device__ void cross_entropy(const T* x, const int* t, T* loss, i64 rows, i64 cols, int ignore) {
    FOR_EACH_ROW(r, rows) {
        const T* xr = x + r * cols;
        T m = row_max(xr, cols);
        T s = row_sum_exp(xr, m, cols);
        if (threadIdx.x == 0) loss[r] = t[r] == ignore ? T(0) : m + fr_log(s) - xr[t[r]];
    }
}

// dx[r] = dloss[r]·(softmax(x[r]) - onehot(t[r])), 0 where t[r] == ignore.
template <typename T>
__device__ void cross_entropy_backward(const T* x, const int* t, const T* dloss, T* dx, i64 rows, i64 cols, int ignore) {
    FOR_EACH_ROW(r, rows) {
        const T* xr = x + r * cols;
        T* dr = dx + r * cols;
        if (t[r] == ignore) {
            FOR_EACH_COLUMN(c, cols) dr[c] = T(0);
            continue;
        }
        T m = row_max(xr, cols);
        T lse = m + fr_log(row_sum_exp(xr, m, cols));
        FOR_EACH_COLUMN(c, cols) dr[c] = (fr_exp(xr[c] - lse) - (c == t[r] ? T(1) : T(0))) * dloss[r];
    }
}

// y = (x - mean)·rstd·gamma + beta (gamma, beta optional); writes mean and rstd per row.
template <typename T>
__device__ void layernorm(const T* x, const T* gamma, const T* beta, T eps, T* y, T* mean, T* rstd, i64 rows, i64 cols) {
    FOR_EACH_ROW(r, rows) {
        const T* xr = x + r * cols;
        T* yr = y + r * cols;
        T s = T(0);
        FOR_EACH_COLUMN(c, cols) s += xr[c];
        T mu = block_reduce(s, SumOp(), T(0)) / T(cols);
        T q = T(0);
        FOR_EACH_COLUMN(c, cols) q += (xr[c] - mu) * (xr[c] - mu);
        T inv = T(1) / fr_sqrt(block_reduce(q, SumOp(), T(0)) / T(cols) + eps);
        if (threadIdx.x == 0) { mean[r] = mu; rstd[r] = inv; }
        FOR_EACH_COLUMN(c, cols) {
            T v = (xr[c] - mu) * inv;
            if (gamma) v *= gamma[c];
            if (beta) v += beta[c];
            yr[c] = v;
        }
    }
}

// dx = rstd·(dxhat - mean(dxhat) - xhat·mean(dxhat·xhat)) with dxhat = dy·gamma.
template <typename T>
__device__ void layernorm_backward_input(const T* x, const T* gamma, const T* mean, const T* rstd, const T* dy, T* dx,
                                         i64 rows, i64 cols) {
    FOR_EACH_ROW(r, rows) {
        const T* xr = x + r * cols;
        const T* gr = dy + r * cols;
        T* dr = dx + r * cols;
        T sd = T(0), sdx = T(0);
        FOR_EACH_COLUMN(c, cols) {
            T d = gamma ? gr[c] * gamma[c] : gr[c];
            sd += d;
            sdx += d * (xr[c] - mean[r]) * rstd[r];
        }
        T mean_d = block_reduce(sd, SumOp(), T(0)) / T(cols);
        T mean_dx = block_reduce(sdx, SumOp(), T(0)) / T(cols);
        FOR_EACH_COLUMN(c, cols) {
            T d = gamma ? gr[c] * gamma[c] : gr[c];
            T xhat = (xr[c] - mean[r]) * rstd[r];
            dr[c] = rstd[r] * (d - mean_d - xhat * mean_dx);
        }
    }
}

// dgamma[c] = Σ_r dy·xhat, dbeta[c] = Σ_r dy (either optional): one thread per column, rows in order.
template <typename T>
__device__ void layernorm_backward_params(const T* x, const T* mean, const T* rstd, const T* dy, T* dgamma, T* dbeta,
                                          i64 rows, i64 cols) {
    FOR_EACH_ELEMENT(c, cols) {
        T sg = T(0), sb = T(0);
        for (i64 r = 0; r < rows; ++r) {
            T g = dy[r * cols + c];
            sg += g * (x[r * cols + c] - mean[r]) * rstd[r];
            sb += g;
        }
        if (dgamma) dgamma[c] = sg;
        if (dbeta) dbeta[c] = sb;
    }
}

#define FRUGAL_ROW_ENTRIES(T, S)                                                                              \
    extern "C" __global__ void softmax_##S(const T* x, T* y, i64 rows, i64 cols, int log) {                   \
        softmax(x, y, rows, cols, log);                                                                        \
    }                                                                                                          \
    extern "C" __global__ void softmax_backward_##S(const T* y, const T* dy, T* dx, i64 rows, i64 cols,      \
                                                    int log) {                                                 \
        softmax_backward(y, dy, dx, rows, cols, log);                                                          \
    }                                                                                                          \
    extern "C" __global__ void cross_entropy_##S(const T* x, const int* t, T* loss, i64 rows, i64 cols,      \
                                                 int ignore) {                                                 \
        cross_entropy(x, t, loss, rows, cols, ignore);                                                         \
    }                                                                                                          \
    extern "C" __global__ void cross_entropy_backward_##S(const T* x, const int* t, const T* dloss, T* dx,   \
                                                          i64 rows, i64 cols, int ignore) {                    \
        cross_entropy_backward(x, t, dloss, dx, rows, cols, ignore);                                          \
    }                                                                                                          \
    extern "C" __global__ void layernorm_##S(const T* x, const T* gamma, const T* beta, T eps, T* y,          \
                                             T* mean, T* rstd, i64 rows, i64 cols) {                           \
        layernorm(x, gamma, beta, eps, y, mean, rstd, rows, cols);                                             \
    }                                                                                                          \
    extern "C" __global__ void layernorm_backward_input_##S(const T* x, const T* gamma, const T* mean,        \
                                                            const T* rstd, const T* dy, T* dx, i64 rows,      \
                                                            i64 cols) {                                        \
        layernorm_backward_input(x, gamma, mean, rstd, dy, dx, rows, cols);                                    \
    }                                                                                                          \
    extern "C" __global__ void layernorm_backward_params_##S(const T* x, const T* mean, const T* rstd,        \
                                                             const T* dy, T* dgamma, T* dbeta, i64 rows,       \
                                                             i64 cols) {                                       \
        layernorm_backward_params(x, mean, rstd, dy, dgamma, dbeta, rows, cols);                               \
    }

FRUGAL_ROW_ENTRIES(float, f32)
FRUGAL_ROW_ENTRIES(double, f64)
