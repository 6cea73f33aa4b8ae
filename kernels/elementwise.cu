// Elementwise kernels of the CUDA backend. CPU twins: engine/Backends/Cpu/CpuBackend.Elementwise.cs and
// CpuBackend.cs (Fill, Copy); the conformance tests run both against float64 references.
#include "common.cuh"

// ---- memory: fill with a bit pattern, strided copy (element sizes 1, 2, 4, 8 bytes) ----

template <typename T>
__device__ void fill(T* y, Strided ys, T bits, i64 n) {
    FOR_EACH_ELEMENT(i, n) y[offset_of(ys, i)] = bits;
}

template <typename T>
__device__ void copy_strided(const T* x, Strided xs, T* y, Strided ys, i64 n) {
    FOR_EACH_ELEMENT(i, n) y[offset_of(ys, i)] = x[offset_of(xs, i)];
}

// ---- unary functions and their derivatives (same formulas as the CPU backend) ----

template <typename T>
__device__ __forceinline__ T gelu_inner(T x) {
    return T(0.7978845608028654) * (x + T(0.044715) * x * x * x);
}

template <typename T>
__device__ __forceinline__ T unary_value(int op, T x, T alpha) {
    switch (op) {
        case UNARY_NEG: return -x;
        case UNARY_EXP: return fr_exp(x);
        case UNARY_LOG: return fr_log(x);
        case UNARY_TANH: return fr_tanh(x);
        case UNARY_SIGMOID: return T(1) / (T(1) + fr_exp(-x));
        case UNARY_RELU: return x > T(0) ? x : T(0);
        case UNARY_GELU: return T(0.5) * x * (T(1) + fr_tanh(gelu_inner(x)));
        case UNARY_SQRT: return fr_sqrt(x);
        case UNARY_ABS: return fr_abs(x);
        case UNARY_ADD_SCALAR: return x + alpha;
        case UNARY_MUL_SCALAR: return x * alpha;
        default: return fr_pow(x, alpha);  // UNARY_POW_SCALAR
    }
}

// dy · f'(x), with y = f(x) where the derivative is cheaper from it.
template <typename T>
__device__ __forceinline__ T unary_grad(int op, T x, T y, T g, T alpha) {
    switch (op) {
        case UNARY_NEG: return -g;
        case UNARY_EXP: return g * y;
        case UNARY_LOG: return g / x;
        case UNARY_TANH: return g * (T(1) - y * y);
        case UNARY_SIGMOID: return g * y * (T(1) - y);
        case UNARY_RELU: return y > T(0) ? g : T(0);  // from the output: y > 0 exactly where x > 0
        case UNARY_GELU: {
            T t = fr_tanh(gelu_inner(x));
            T d_inner = T(0.7978845608028654) * (T(1) + T(3 * 0.044715) * x * x);
            return g * (T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * d_inner);
        }
        case UNARY_SQRT: return g * T(0.5) / y;
        case UNARY_ABS: return x > T(0) ? g : x < T(0) ? -g : T(0);
        case UNARY_ADD_SCALAR: return g;
        case UNARY_MUL_SCALAR: return g * alpha;
        default: return g * alpha * fr_pow(x, alpha - T(1));  // UNARY_POW_SCALAR
    }
}

template <typename T>
__device__ void unary(int op, const T* x, Strided xs, T* y, T alpha, i64 n) {
    FOR_EACH_ELEMENT(i, n) y[i] = unary_value(op, x[offset_of(xs, i)], alpha);
}

// x and y are only saved (non-null) for the ops whose derivative reads them.
template <typename T>
__device__ void unary_backward(int op, const T* x, const T* y, const T* dy, T* dx, T alpha, i64 n) {
    FOR_EACH_ELEMENT(i, n) dx[i] = unary_grad(op, x ? x[i] : T(0), y ? y[i] : T(0), dy[i], alpha);
}

// ---- binary functions over operands expanded to the output's shape (stride 0 on broadcast axes) ----

template <typename T>
__device__ __forceinline__ T binary_value(int op, T a, T b) {
    switch (op) {
        case BINARY_ADD: return a + b;
        case BINARY_SUB: return a - b;
        case BINARY_MUL: return a * b;
        case BINARY_DIV: return a / b;
        case BINARY_POW: return fr_pow(a, b);
        case BINARY_MAXIMUM: return (a != a || a >= b) ? a : b;  // NaN propagates from a, as on the CPU
        default: return (a != a || a <= b) ? a : b;              // BINARY_MINIMUM
    }
}

template <typename T>
__device__ __forceinline__ unsigned char compare(int op, T a, T b) {
    switch (op) {
        case BINARY_EQ: return a == b;
        case BINARY_NE: return a != b;
        case BINARY_LT: return a < b;
        case BINARY_LE: return a <= b;
        case BINARY_GT: return a > b;
        default: return a >= b;  // BINARY_GE
    }
}

template <typename T>
__device__ void binary(int op, const T* a, Strided as, const T* b, Strided bs, T* y, i64 n) {
    FOR_EACH_ELEMENT(i, n) y[i] = binary_value(op, a[offset_of(as, i)], b[offset_of(bs, i)]);
}

template <typename T>
__device__ void binary_compare(int op, const T* a, Strided as, const T* b, Strided bs, unsigned char* y, i64 n) {
    FOR_EACH_ELEMENT(i, n) y[i] = compare(op, a[offset_of(as, i)], b[offset_of(bs, i)]);
}

template <typename T>
__device__ void where(const unsigned char* c, Strided cs, const T* a, Strided as, const T* b, Strided bs, T* y, i64 n) {
    FOR_EACH_ELEMENT(i, n) y[i] = c[offset_of(cs, i)] ? a[offset_of(as, i)] : b[offset_of(bs, i)];
}

// ---- entry points (extern "C": names the backend looks up with cuModuleGetFunction) ----

#define FRUGAL_MEMORY_ENTRIES(T, S)                                                                        \
    extern "C" __global__ void fill_##S(T* y, Strided ys, T bits, i64 n) { fill(y, ys, bits, n); }       \
    extern "C" __global__ void copy_strided_##S(const T* x, Strided xs, T* y, Strided ys, i64 n) {        \
        copy_strided(x, xs, y, ys, n);                                                                    \
    }

FRUGAL_MEMORY_ENTRIES(unsigned char, b1)
FRUGAL_MEMORY_ENTRIES(unsigned short, b2)
FRUGAL_MEMORY_ENTRIES(unsigned int, b4)
FRUGAL_MEMORY_ENTRIES(unsigned long long, b8)

#define FRUGAL_FLOAT_ENTRIES(T, S)                                                                         \
    extern "C" __global__ void unary_##S(int op, const T* x, Strided xs, T* y, T alpha, i64 n) {          \
        unary(op, x, xs, y, alpha, n);                                                                    \
    }                                                                                                      \
    extern "C" __global__ void unary_backward_##S(int op, const T* x, const T* y, const T* dy, T* dx,     \
                                                  T alpha, i64 n) {                                       \
        unary_backward(op, x, y, dy, dx, alpha, n);                                                       \
    }                                                                                                      \
    extern "C" __global__ void binary_##S(int op, const T* a, Strided as, const T* b, Strided bs, T* y,   \
                                          i64 n) {                                                        \
        binary(op, a, as, b, bs, y, n);                                                                   \
    }                                                                                                      \
    extern "C" __global__ void compare_##S(int op, const T* a, Strided as, const T* b, Strided bs,        \
                                           unsigned char* y, i64 n) {                                     \
        binary_compare(op, a, as, b, bs, y, n);                                                           \
    }                                                                                                      \
    extern "C" __global__ void where_##S(const unsigned char* c, Strided cs, const T* a, Strided as,      \
                                         const T* b, Strided bs, T* y, i64 n) {                           \
        where(c, cs, a, as, b, bs, y, n);                                                                 \
    }

FRUGAL_FLOAT_ENTRIES(float, f32)
FRUGAL_FLOAT_ENTRIES(double, f64)
