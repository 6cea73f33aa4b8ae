// Fused optimizer updates of the CUDA backend: SGD and Adam one thread per parameter element, 8-bit Adam one block
// per state block. CPU twins: SgdT, AdamT and Adam8BitStep in engine/Backends/Cpu/CpuBackend.cs (same arithmetic
// in the parameter's dtype; factors computed on the host).
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

// 8-bit Adam (CPU twin: Adam8BitStep in engine/Backends/Cpu/CpuBackend.cs), one CUDA block per state block of
// FR_STATE_BLOCK values: m = code·(absmax·1/127), r = max(code, ½)·(absmax·1/255), v = (r·r)·(r·r); the Adam step
// on the block's parameter values (i < n); then codes = round-half-even(x / max(absmax, 1e-30)·levels), saturated
// (NaN to 0), of m and of v^¼ = √√v, with absmax the block's largest |m| and v^¼. m and v^¼ wait in shared memory.
#define FR_STATE_BLOCK 2048

__device__ __forceinline__ float fr_code(float x, float lo, float hi) {
    float r = rintf(x);
    return r != r ? 0.0f : r < lo ? lo : r > hi ? hi : r;
}

extern "C" __global__ void adam8bit_f32(float* p, const float* g, signed char* mc, float* ms, unsigned char* rc, float* rs,
                                        float lr, float b1, float b2, float omb1, float omb2, float eps, float wd,
                                        float c1, float c2, float decay, int decoupled, float m_step, float r_step,
                                        float tiny, i64 n, i64 blocks) {
    __shared__ float sm[FR_STATE_BLOCK];
    __shared__ float sr[FR_STATE_BLOCK];
    FOR_EACH_ROW(b, blocks) {
        float mstep = ms[b] * m_step, rstep = rs[b] * r_step;
        float mmax = -fr_infinity<float>(), rmax = -fr_infinity<float>();
        FOR_EACH_COLUMN(c, FR_STATE_BLOCK) {
            i64 i = b * FR_STATE_BLOCK + c;
            float m = (float)mc[i] * mstep;
            float raw = (float)rc[i];
            float r = (raw >= 0.5f ? raw : 0.5f) * rstep;
            float r2 = r * r;
            float v = r2 * r2;
            if (i < n) {
                float gi = g[i];
                if (decoupled)
                    p[i] *= decay;
                else
                    gi += wd * p[i];
                m = b1 * m + omb1 * gi;
                v = b2 * v + omb2 * gi * gi;
                p[i] -= lr * (m * c1) / (fr_sqrt(v) * c2 + eps);
            }
            float root = fr_sqrt(fr_sqrt(v));
            sm[c] = m;
            sr[c] = root;
            mmax = nan_max(mmax, fr_abs(m));
            rmax = nan_max(rmax, root);
        }
        mmax = block_reduce(mmax, MaxOp(), -fr_infinity<float>());
        rmax = block_reduce(rmax, MaxOp(), -fr_infinity<float>());
        float msafe = (mmax != mmax || mmax >= tiny) ? mmax : tiny;
        float rsafe = (rmax != rmax || rmax >= tiny) ? rmax : tiny;
        FOR_EACH_COLUMN(c, FR_STATE_BLOCK) {
            i64 i = b * FR_STATE_BLOCK + c;
            mc[i] = (signed char)fr_code(sm[c] / msafe * 127.0f, -128.0f, 127.0f);
            rc[i] = (unsigned char)fr_code(sr[c] / rsafe * 255.0f, 0.0f, 255.0f);
        }
        if (threadIdx.x == 0) {
            ms[b] = mmax;
            rs[b] = rmax;
        }
        __syncthreads();  // sm and sr are refilled for the next block
    }
}
