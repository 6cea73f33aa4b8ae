// Fused optimizer updates of the CUDA backend: SGD and Adam one thread per parameter element, 8-bit Adam (of F32
// values or of a packed weight's) one block per state block. CPU twins: SgdT, AdamT, Adam8BitStep and
// QuantAdam8BitStep in engine/Backends/Cpu/CpuBackend.cs (same arithmetic in the parameter's dtype; factors computed
// on the host).
#include "quant.cuh"

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
// on the block's parameter values (i < n); then codes = round-half-even(x·(levels / max(absmax, 1e-30))), saturated
// (NaN to 0), of m and of v^¼ = √√v, with absmax the block's largest |m| and v^¼. m and v^¼ wait in shared memory.
#define FR_STATE_BLOCK 2048

__device__ __forceinline__ float fr_code(float x, float lo, float hi) {
    float r = rintf(x);
    return r != r ? 0.0f : r < lo ? lo : r > hi ? hi : r;
}

// The 8-bit step of one state block: p, g, mc and rc at the block's first value, ms and rs its absmax, `active` of
// its values in the tensor; sm and sr are the block's shared buffers. Ends with a barrier, so they may be refilled.
__device__ void adam8bit_block(float* p, const float* g, signed char* mc, float* ms, unsigned char* rc, float* rs,
                               Adam8BitFactors f, i64 active, float* sm, float* sr) {
    float mstep = *ms * f.m_step, rstep = *rs * f.r_step;
    float mmax = -fr_infinity<float>(), rmax = -fr_infinity<float>();
    FOR_EACH_COLUMN(c, FR_STATE_BLOCK) {
        float m = (float)mc[c] * mstep;
        float raw = (float)rc[c];
        float r = (raw >= 0.5f ? raw : 0.5f) * rstep;
        float r2 = r * r;
        float v = r2 * r2;
        if (c < active) {
            float gi = g[c];
            if (f.decoupled)
                p[c] *= f.decay;
            else
                gi += f.wd * p[c];
            m = f.b1 * m + f.omb1 * gi;
            v = f.b2 * v + f.omb2 * gi * gi;
            p[c] -= f.lr * (m * f.c1) / (fr_sqrt(v) * f.c2 + f.eps);
        }
        float root = fr_sqrt(fr_sqrt(v));
        sm[c] = m;
        sr[c] = root;
        mmax = nan_max(mmax, fr_abs(m));
        rmax = nan_max(rmax, root);
    }
    mmax = block_reduce(mmax, MaxOp(), -fr_infinity<float>());
    rmax = block_reduce(rmax, MaxOp(), -fr_infinity<float>());
    float mfactor = 127.0f / ((mmax != mmax || mmax >= f.tiny) ? mmax : f.tiny);
    float rfactor = 255.0f / ((rmax != rmax || rmax >= f.tiny) ? rmax : f.tiny);
    FOR_EACH_COLUMN(c, FR_STATE_BLOCK) {
        mc[c] = (signed char)fr_code(sm[c] * mfactor, -128.0f, 127.0f);
        rc[c] = (unsigned char)fr_code(sr[c] * rfactor, 0.0f, 255.0f);
    }
    if (threadIdx.x == 0) {
        *ms = mmax;
        *rs = rmax;
    }
    __syncthreads();
}

extern "C" __global__ void adam8bit_f32(float* p, const float* g, signed char* mc, float* ms, unsigned char* rc, float* rs,
                                        Adam8BitFactors f, i64 n, i64 blocks) {
    __shared__ float sm[FR_STATE_BLOCK];
    __shared__ float sr[FR_STATE_BLOCK];
    FOR_EACH_ROW(b, blocks) {
        i64 at = b * FR_STATE_BLOCK;
        adam8bit_block(p + at, g + at, mc + at, ms + b, rc + at, rs + b, f, n - at, sm, sr);
    }
}

// Master-free 8-bit Adam of a packed weight (CPU twin: QuantAdam8BitStep in engine/Backends/Cpu/CpuBackend.cs), one
// CUDA block per state block (the weight's groups divide it): the block's values dequantized into shared memory,
// stepped as adam8bit_f32 steps them, then each group's scale (a thread per group) and the codes (a thread per code
// byte) as quant_scales and quant_codes compute them. No F32 copy of the weight exists outside shared memory.
extern "C" __global__ void quant_adam8bit(unsigned char* codes, QuantScale* scales, QuantShape q, const float* g,
                                          signed char* mc, float* ms, unsigned char* rc, float* rs,
                                          Adam8BitFactors f, int scheme, int stochastic,
                                          unsigned long long seed, unsigned long long offset, i64 blocks) {
    __shared__ float sm[FR_STATE_BLOCK];
    __shared__ float sr[FR_STATE_BLOCK];
    __shared__ float sp[FR_STATE_BLOCK];
    i64 n = (i64)q.rows * q.cols;
    FOR_EACH_ROW(b, blocks) {
        i64 at = b * FR_STATE_BLOCK, active = n - at < FR_STATE_BLOCK ? n - at : FR_STATE_BLOCK;
        FOR_EACH_COLUMN(c, active) sp[c] = quant_value(codes, scales, q, at + c);
        __syncthreads();
        adam8bit_block(sp, g + at, mc + at, ms + b, rc + at, rs + b, f, active, sm, sr);
        FOR_EACH_COLUMN(j, active / q.group) scales[at / q.group + j] = quant_group_scale(sp + j * q.group, q.group, q.bits, scheme);
        __syncthreads();
        i64 first = at * q.bits / 8, last = ((at + active) * q.bits + 7) / 8;
        FOR_EACH_COLUMN(c, last - first)
            codes[first + c] = quant_code_byte(sp, at, at + active, scales, q, scheme, stochastic, seed, offset, first + c);
        __syncthreads();  // sp is refilled for the next block
    }
}
