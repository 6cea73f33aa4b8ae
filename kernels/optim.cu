// Fused optimizer updates of the CUDA backend, one thread per parameter element. CPU twins: SgdT and AdamT in
// engine/Backends/Cpu/CpuBackend.cs (same arithmetic in the parameter's dtype; factors computed on the host).
#include "common.cuh"

// PyTorch's SGD: d = g + wd·p; with momentum m = first ? d : mu·m + damp·d, d = nesterov ? d + mu·m : m; p -= lr·d.
template <typename T>
__device__ void sgd(T* p, const T* g, T* m, T lr, T mu, T damp, T wd, int momentum, int first, int nesterov, i64 n) {
    FOR_EACH_ELEMENT(i, n) {
        T d = g[i] + wd * p[i];
        if (momentum) {
            m[i] = first ? d : mu * m[i] + damp * d;
            d = nesterov ? d + mu * m[i] : m[i];
        }
        p[i] -= lr * d;
    }
}

// Adam (decoupled = 0: g += wd·p) and AdamW (decoupled = 1: p *= 1 - lr·wd); c1 = 1/(1-β1^t), c2 = 1/√(1-β2^t).
template <typename T>
__device__ void adam(T* p, const T* g, T* m, T* v, T lr, T b1, T b2, T omb1, T omb2, T eps, T wd, T c1, T c2,
                     T decay, int decoupled, i64 n) {
    FOR_EACH_ELEMENT(i, n) {
        T gi = g[i];
        if (decoupled)
            p[i] *= decay;
        else
            gi += wd * p[i];
        m[i] = b1 * m[i] + omb1 * gi;
        v[i] = b2 * v[i] + omb2 * gi * gi;
        p[i] -= lr * (m[i] * c1) / (fr_sqrt(v[i]) * c2 + eps);
    }
}

#define FRUGAL_OPTIM_ENTRIES(T, S)                                                                           \
    extern "C" __global__ void sgd_##S(T* p, const T* g, T* m, T lr, T mu, T damp, T wd, int momentum,       \
                                       int first, int nesterov, i64 n) {                                    \
        sgd(p, g, m, lr, mu, damp, wd, momentum, first, nesterov, n);                                       \
    }                                                                                                        \
    extern "C" __global__ void adam_##S(T* p, const T* g, T* m, T* v, T lr, T b1, T b2, T omb1, T omb2,      \
                                        T eps, T wd, T c1, T c2, T decay, int decoupled, i64 n) {           \
        adam(p, g, m, v, lr, b1, b2, omb1, omb2, eps, wd, c1, c2, decay, decoupled, n);                     \
    }

FRUGAL_OPTIM_ENTRIES(float, f32)
FRUGAL_OPTIM_ENTRIES(double, f64)
