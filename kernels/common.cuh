// Frugal's CUDA C prelude, included first by every kernel file.
//
// The kernels are compiled at run time by NVRTC, where CUDA's built-in declarations exist. The KernelCheck
// (build.cake) also compiles them with clang in CUDA device-only mode without the CUDA toolkit's headers
// (-nocudainc -nocudalib); for that case only, this header declares the few built-ins the kernels use.
// Layouts shared with C# are defined here once and mirrored in engine/Backends/Cuda/KernelAbi.cs; both sides
// assert their sizes, and a test checks that every op code below matches its C# enum value.
#pragma once

#if !defined(__CUDACC_RTC__) && !defined(FRUGAL_EMULATED_CUDA)
#if !defined(__clang__) || !defined(__CUDA__)
#error "Frugal kernels are compiled by NVRTC (at run time) or by clang -x cuda (KernelCheck)"
#endif
#define __global__ __attribute__((global))
#define __device__ __attribute__((device))
#define __host__ __attribute__((host))
#define __shared__ __attribute__((shared))
#define __constant__ __attribute__((constant))
#define __forceinline__ __inline__ __attribute__((always_inline))
#include <__clang_cuda_builtin_vars.h>
extern "C" {
__device__ float expf(float);
__device__ float logf(float);
__device__ float tanhf(float);
__device__ float sqrtf(float);
__device__ float fabsf(float);
__device__ float powf(float, float);
__device__ float fmaxf(float, float);
__device__ float fminf(float, float);
__device__ float floorf(float);
__device__ float fmaf(float, float, float);
__device__ double exp(double);
__device__ double log(double);
__device__ double tanh(double);
__device__ double sqrt(double);
__device__ double fabs(double);
__device__ double pow(double, double);
__device__ double cos(double);
__device__ double rint(double);
__device__ float rintf(float);
}
__device__ __forceinline__ float __shfl_down_sync(unsigned mask, float v, unsigned delta) {
    return __nvvm_shfl_sync_down_f32(mask, v, delta, 0x1f);
}
__device__ __forceinline__ double __shfl_down_sync(unsigned mask, double v, unsigned delta) {
    long long bits = __builtin_bit_cast(long long, v);
    int lo = __nvvm_shfl_sync_down_i32(mask, (int)bits, delta, 0x1f);
    int hi = __nvvm_shfl_sync_down_i32(mask, (int)(bits >> 32), delta, 0x1f);
    return __builtin_bit_cast(double, ((long long)hi << 32) | (unsigned int)lo);
}
#endif

typedef long long i64;

// ---- layouts shared with C# (KernelAbi.cs) ----

#define FRUGAL_MAX_DIMS 8

// Shape and strides (in elements) of one operand, passed by value as a kernel parameter. 136 bytes.
struct Strided {
    int rank;
    int pad;
    i64 shape[FRUGAL_MAX_DIMS];
    i64 stride[FRUGAL_MAX_DIMS];
};
static_assert(sizeof(Strided) == 136, "Strided must match KernelAbi.Strided (136 bytes)");

// Geometry of a 2-D convolution or pooling window over NCHW input (out_c unused by pooling; dilation 1 there).
// 64 bytes.
struct Window {
    int n, c, h, w;
    int out_c, kh, kw, out_h;
    int out_w, stride_h, stride_w, pad_h;
    int pad_w, dilation_h, dilation_w, pad;
};
static_assert(sizeof(Window) == 64, "Window must match KernelAbi.Window (64 bytes)");

// Packed low-bit weight (the Quantized format), mirrored by KernelAbi.QuantShape and KernelAbi.QuantScale.
// A [rows, cols] weight of `bits`-bit unsigned codes (bits 1, 2, 4 or 8): value i = r·cols + c is the code at bit
// offset i·bits of the code bytes, least significant bits first, so no code straddles a byte. Every `group`
// consecutive values of a row (group divides cols) share one QuantScale, and value = scale · (code − zero).
// 16 bytes.
struct QuantShape {
    int rows, cols, bits, group;
};
static_assert(sizeof(QuantShape) == 16, "QuantShape must match KernelAbi.QuantShape (16 bytes)");

// Scale and zero point of one group. 8 bytes.
struct QuantScale {
    float scale, zero;
};
static_assert(sizeof(QuantScale) == 8, "QuantScale must match KernelAbi.QuantScale (8 bytes)");

// Factors of one 8-bit Adam step, computed on the host (mirrored by KernelAbi.Adam8BitFactors): Adam's lr, β1, β2,
// 1 − β1, 1 − β2, eps, weight decay, c1 = 1/(1 − β1^t), c2 = 1/√(1 − β2^t), decay = 1 − lr·wd and decoupled (AdamW),
// then the codes' steps 1/127 and 1/255 and the floor 1e-30 of a block maximum. 56 bytes.
struct Adam8BitFactors {
    float lr, b1, b2, omb1, omb2, eps, wd, c1, c2, decay;
    int decoupled;
    float m_step, r_step, tiny;
};
static_assert(sizeof(Adam8BitFactors) == 56, "Adam8BitFactors must match KernelAbi.Adam8BitFactors (56 bytes)");

// The code of value i.
__device__ __forceinline__ unsigned int quant_code(const unsigned char* codes, i64 i, int bits) {
    i64 bit = i * bits;
    return (codes[bit >> 3] >> (bit & 7)) & ((1u << bits) - 1u);
}

// Value i of a packed weight: scale · (code − zero) of its group.
__device__ __forceinline__ float quant_value(const unsigned char* codes, const QuantScale* scales, QuantShape q, i64 i) {
    QuantScale s = scales[i / q.group];
    return s.scale * ((float)quant_code(codes, i, q.bits) - s.zero);
}

// Offset in elements of the element with row-major linear index i.
__device__ __forceinline__ i64 offset_of(const Strided& v, i64 i) {
    i64 off = 0;
    for (int d = v.rank - 1; d >= 0; --d) {
        i64 n = v.shape[d];
        off += (i % n) * v.stride[d];
        i /= n;
    }
    return off;
}

// ---- op codes: the values of Frugal.Backends.UnaryOp, BinaryOp and ReduceOp ----

enum UnaryCode {
    UNARY_NEG = 0, UNARY_EXP = 1, UNARY_LOG = 2, UNARY_TANH = 3, UNARY_SIGMOID = 4, UNARY_RELU = 5,
    UNARY_GELU = 6, UNARY_SQRT = 7, UNARY_ABS = 8, UNARY_ADD_SCALAR = 9, UNARY_MUL_SCALAR = 10, UNARY_POW_SCALAR = 11
};

enum BinaryCode {
    BINARY_ADD = 0, BINARY_SUB = 1, BINARY_MUL = 2, BINARY_DIV = 3, BINARY_POW = 4, BINARY_MAXIMUM = 5,
    BINARY_MINIMUM = 6, BINARY_EQ = 7, BINARY_NE = 8, BINARY_LT = 9, BINARY_LE = 10, BINARY_GT = 11, BINARY_GE = 12
};

enum ReduceCode { REDUCE_SUM = 0, REDUCE_MEAN = 1, REDUCE_MAX = 2, REDUCE_MIN = 3 };

// The values of Frugal.QuantScheme.
enum QuantSchemeCode { SCHEME_SYMMETRIC = 0, SCHEME_ASYMMETRIC = 1, SCHEME_TERNARY = 2, SCHEME_BINARY = 3 };

// The values of Frugal.DType.
enum DTypeCode { DTYPE_F32 = 0, DTYPE_F64 = 1, DTYPE_F16 = 2, DTYPE_BF16 = 3, DTYPE_I8 = 4, DTYPE_U8 = 5, DTYPE_I32 = 6 };

// ---- math overloads over float and double ----

__device__ __forceinline__ float fr_exp(float x) { return expf(x); }
__device__ __forceinline__ double fr_exp(double x) { return exp(x); }
__device__ __forceinline__ float fr_log(float x) { return logf(x); }
__device__ __forceinline__ double fr_log(double x) { return log(x); }
__device__ __forceinline__ float fr_tanh(float x) { return tanhf(x); }
__device__ __forceinline__ double fr_tanh(double x) { return tanh(x); }
__device__ __forceinline__ float fr_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double fr_sqrt(double x) { return sqrt(x); }
__device__ __forceinline__ float fr_abs(float x) { return fabsf(x); }
__device__ __forceinline__ double fr_abs(double x) { return fabs(x); }
__device__ __forceinline__ float fr_pow(float x, float y) { return powf(x, y); }
__device__ __forceinline__ double fr_pow(double x, double y) { return pow(x, y); }

// Bit casts: CUDA's intrinsics under NVRTC, the compiler built-in under clang.
#if defined(__CUDACC_RTC__)
__device__ __forceinline__ unsigned int fr_float_bits(float f) { return __float_as_uint(f); }
__device__ __forceinline__ float fr_bits_float(unsigned int u) { return __uint_as_float(u); }
__device__ __forceinline__ double fr_bits_double(unsigned long long u) { return __longlong_as_double((long long)u); }
#else
__device__ __forceinline__ unsigned int fr_float_bits(float f) { return __builtin_bit_cast(unsigned int, f); }
__device__ __forceinline__ float fr_bits_float(unsigned int u) { return __builtin_bit_cast(float, u); }
__device__ __forceinline__ double fr_bits_double(unsigned long long u) { return __builtin_bit_cast(double, u); }
#endif

// +infinity of float and double (identities of max and min reductions).
template <typename T> __device__ __forceinline__ T fr_infinity();
template <> __device__ __forceinline__ float fr_infinity<float>() { return fr_bits_float(0x7F800000u); }
template <> __device__ __forceinline__ double fr_infinity<double>() { return fr_bits_double(0x7FF0000000000000ull); }

// NaN-propagating maximum and minimum (as .NET's Math.Max/Min and the CPU backend).
template <typename T> __device__ __forceinline__ T nan_max(T a, T b) { return a != a ? a : b != b ? b : (a > b ? a : b); }
template <typename T> __device__ __forceinline__ T nan_min(T a, T b) { return a != a ? a : b != b ? b : (a < b ? a : b); }

struct SumOp { template <typename T> __device__ __forceinline__ T operator()(T a, T b) const { return a + b; } };
struct MaxOp { template <typename T> __device__ __forceinline__ T operator()(T a, T b) const { return nan_max(a, b); } };

// Reduction of one value per thread over the whole block (blockDim.x a multiple of 32, at most 1024): warp
// shuffles, then one value per warp through shared memory. Every thread gets the result.
template <typename T, typename Op>
__device__ T block_reduce(T v, Op op, T identity) {
    __shared__ T partial[32];
    for (int offset = 16; offset > 0; offset >>= 1)
        v = op(v, __shfl_down_sync(0xffffffffu, v, offset));
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();  // partial[] may still be read by a previous call
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    v = (int)threadIdx.x < (int)(blockDim.x >> 5) ? partial[threadIdx.x] : identity;
    if (warp == 0)
        for (int offset = 16; offset > 0; offset >>= 1)
            v = op(v, __shfl_down_sync(0xffffffffu, v, offset));
    if (threadIdx.x == 0) partial[0] = v;
    __syncthreads();
    return partial[0];
}

// One block per row over a grid-stride loop of rows; threads stride over the row's columns.
#define FOR_EACH_ROW(r, rows) for (i64 r = blockIdx.x; r < (rows); r += gridDim.x)
#define FOR_EACH_COLUMN(c, cols) for (i64 c = threadIdx.x; c < (cols); c += blockDim.x)

// One thread per element over a grid-stride loop.
#define FOR_EACH_ELEMENT(i, n) \
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < (n); i += (i64)gridDim.x * blockDim.x)
