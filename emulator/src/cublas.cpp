// The emulated cuBLAS (libcublas.so.12): the handle functions and cublasGemmStridedBatchedEx, which is all Frugal
// calls, computed on the CPU. Declarations come from the real cuBLAS header; the semantics follow NVIDIA's cuBLAS
// documentation (column-major storage, op(X) = X, Xᵀ or Xᴴ, alpha and beta read from host memory, beta == 0 meaning
// C is not read). Work is queued on the handle's stream through the emulated driver and runs in stream order;
// each operand's extent is checked against the live allocations when the work runs, as a GPU faults then.
#include <cublas_v2.h>

#include "internal.h"
#include "support.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <pthread.h>
#include <unistd.h>

#define API extern "C" __attribute__((visibility("default")))

struct cublasContext {
    CUstream stream;
};

namespace {

using namespace frugal_emu_support;

pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

Registry g_handles;

// The stream of a live handle, or false for a null, unknown or destroyed one.
bool Lookup(cublasHandle_t handle, CUstream* stream) {
    Lock lock(&g_lock);
    if (!handle || !g_handles.Contains(handle)) return false;
    if (stream) *stream = handle->stream;
    return true;
}

// ---- numeric formats ----

uint32_t Bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

float FromBits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

float HalfToFloat(uint16_t h) {
    const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
    const uint32_t exponent = (h >> 10) & 0x1Fu;
    const uint32_t mantissa = h & 0x3FFu;
    if (exponent == 0) {
        // Zero or subnormal: mantissa · 2⁻²⁴, exact in float.
        const float magnitude = static_cast<float>(mantissa) * (1.0f / 16777216.0f);
        return sign ? -magnitude : magnitude;
    }
    if (exponent == 31) return FromBits(sign | 0x7F800000u | (mantissa << 13));
    return FromBits(sign | ((exponent - 15 + 127) << 23) | (mantissa << 13));
}

// Round to nearest, ties to even; overflow to infinity; NaN stays NaN (quiet).
uint16_t FloatToHalf(float f) {
    const uint32_t u = Bits(f);
    const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
    const uint32_t field = (u >> 23) & 0xFFu;
    const uint32_t mantissa = u & 0x7FFFFFu;
    if (field == 0xFF) return static_cast<uint16_t>(sign | 0x7C00u | (mantissa ? 0x200u | (mantissa >> 13) : 0u));
    if (field == 0) return sign;  // float zero or subnormal: far below half's smallest subnormal
    const int e = static_cast<int>(field) - 127;
    if (e >= -14) {
        uint32_t m = mantissa >> 13;
        const uint32_t rest = mantissa & 0x1FFFu;
        int exponent = e;
        if (rest > 0x1000u || (rest == 0x1000u && (m & 1u))) ++m;
        if (m == 0x400u) {
            m = 0;
            ++exponent;
        }
        if (exponent > 15) return static_cast<uint16_t>(sign | 0x7C00u);
        return static_cast<uint16_t>(sign | (static_cast<uint32_t>(exponent + 15) << 10) | m);
    }
    // Subnormal half: the value in units of 2⁻²⁴ is (mantissa | 2²³) · 2^(e + 1), with e + 1 <= -14.
    const int shift = -(e + 1);
    if (shift > 25) return sign;
    const uint64_t full = mantissa | 0x800000u;
    uint64_t q = full >> shift;
    const uint64_t rest = full & ((uint64_t{1} << shift) - 1);
    const uint64_t half = uint64_t{1} << (shift - 1);
    if (rest > half || (rest == half && (q & 1u))) ++q;
    return static_cast<uint16_t>(sign | q);  // q == 0x400 is the smallest normal, as the encoding is continuous
}

float Bf16ToFloat(uint16_t h) { return FromBits(static_cast<uint32_t>(h) << 16); }

uint16_t FloatToBf16(float f) {
    const uint32_t u = Bits(f);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
    return static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

// TF32: float with a 10-bit mantissa, rounded to nearest, ties to even.
float RoundTf32(float f) {
    uint32_t u = Bits(f);
    if ((u & 0x7F800000u) == 0x7F800000u) return f;  // infinity or NaN
    u += 0xFFFu + ((u >> 13) & 1u);
    return FromBits(u & 0xFFFFE000u);
}

// ---- the product ----

enum class Rounding { None, Tf32, Half, Bf16 };

size_t ElementSize(cudaDataType type) {
    switch (type) {
        case CUDA_R_16F:
        case CUDA_R_16BF: return 2;
        case CUDA_R_32F: return 4;
        case CUDA_R_64F: return 8;
        default: return 0;
    }
}

template <typename T>
T Load(const void* base, int64_t index, cudaDataType type, Rounding rounding) {
    switch (type) {
        case CUDA_R_64F: return static_cast<T>(static_cast<const double*>(base)[index]);
        case CUDA_R_16F: return static_cast<T>(HalfToFloat(static_cast<const uint16_t*>(base)[index]));
        case CUDA_R_16BF: return static_cast<T>(Bf16ToFloat(static_cast<const uint16_t*>(base)[index]));
        default: break;
    }
    float v = static_cast<const float*>(base)[index];
    switch (rounding) {
        case Rounding::Tf32: v = RoundTf32(v); break;
        case Rounding::Half: v = HalfToFloat(FloatToHalf(v)); break;
        case Rounding::Bf16: v = Bf16ToFloat(FloatToBf16(v)); break;
        case Rounding::None: break;
    }
    return static_cast<T>(v);
}

template <typename T>
void Store(void* base, int64_t index, cudaDataType type, T value) {
    switch (type) {
        case CUDA_R_64F: static_cast<double*>(base)[index] = static_cast<double>(value); break;
        case CUDA_R_32F: static_cast<float*>(base)[index] = static_cast<float>(value); break;
        case CUDA_R_16F: static_cast<uint16_t*>(base)[index] = FloatToHalf(static_cast<float>(value)); break;
        case CUDA_R_16BF: static_cast<uint16_t*>(base)[index] = FloatToBf16(static_cast<float>(value)); break;
        default: break;
    }
}

struct Gemm {
    bool transa, transb;
    int m, n, k, batch;
    const void* a;
    const void* b;
    void* c;
    cudaDataType atype, btype, ctype;
    int lda, ldb, ldc;
    long long stride_a, stride_b, stride_c;
    bool f64;  // compute in double (CUBLAS_COMPUTE_64F*), else in float
    Rounding rounding;
    double alpha64, beta64;
    float alpha32, beta32;
    bool reads_ab;  // alpha != 0 and k > 0
    bool reads_c;   // beta != 0
};

typedef float F4 __attribute__((vector_size(16)));
typedef double D2 __attribute__((vector_size(16)));
typedef float F8 __attribute__((vector_size(32)));
typedef double D4 __attribute__((vector_size(32)));

// A register tile: MR rows (two vectors of V) by NR columns of C.
template <typename T, typename V, int kColumns>
struct Tile {
    static constexpr int kLanes = static_cast<int>(sizeof(V) / sizeof(T));
    static constexpr int kVectors = 2;
    static constexpr int MR = kLanes * kVectors;
    static constexpr int NR = kColumns;
};

// out[c * MR + r] = Σ_p ap[p * MR + r] · bp[p * NR + c]: a multiply then an add for each p, in order of p (no fused
// multiply-add), so that every element's result is independent of the tile, the instruction set and the threads.
template <typename T, typename V, typename L>
__attribute__((always_inline)) inline void MicroKernel(int k, const T* __restrict ap, const T* __restrict bp, T* __restrict out) {
    // The tile's loops unrolled, so that the accumulators live in registers.
    V acc[L::NR][L::kVectors];
#pragma GCC unroll 8
    for (int c = 0; c < L::NR; ++c)
#pragma GCC unroll 2
        for (int v = 0; v < L::kVectors; ++v) acc[c][v] = V{};
    for (int p = 0; p < k; ++p) {
        V a[L::kVectors];
#pragma GCC unroll 2
        for (int v = 0; v < L::kVectors; ++v) memcpy(&a[v], ap + static_cast<size_t>(p) * L::MR + v * L::kLanes, sizeof(V));
#pragma GCC unroll 8
        for (int c = 0; c < L::NR; ++c) {
            const T b = bp[static_cast<size_t>(p) * L::NR + c];
#pragma GCC unroll 2
            for (int v = 0; v < L::kVectors; ++v) acc[c][v] += a[v] * b;
        }
    }
#pragma GCC unroll 8
    for (int c = 0; c < L::NR; ++c)
#pragma GCC unroll 2
        for (int v = 0; v < L::kVectors; ++v) memcpy(out + c * L::MR + v * L::kLanes, &acc[c][v], sizeof(V));
}

typedef Tile<float, F4, 4> TileF4;
typedef Tile<double, D2, 4> TileD2;
typedef Tile<float, F8, 6> TileF8;
typedef Tile<double, D4, 6> TileD4;

void KernelF4(int k, const float* ap, const float* bp, float* out) { MicroKernel<float, F4, TileF4>(k, ap, bp, out); }
void KernelD2(int k, const double* ap, const double* bp, double* out) { MicroKernel<double, D2, TileD2>(k, ap, bp, out); }
#if defined(__x86_64__)
__attribute__((target("avx2"))) void KernelF8(int k, const float* ap, const float* bp, float* out) {
    MicroKernel<float, F8, TileF8>(k, ap, bp, out);
}
__attribute__((target("avx2"))) void KernelD4(int k, const double* ap, const double* bp, double* out) {
    MicroKernel<double, D4, TileD4>(k, ap, bp, out);
}
#endif

// The micro-kernel for T and its tile: 256-bit vectors where the CPU has AVX2 (unless FRUGAL_EMU_BLAS_AVX2=0),
// 128-bit ones otherwise. Both give the same bits.
template <typename T>
struct Kernel {
    int MR, NR;
    void (*run)(int k, const T* ap, const T* bp, T* out);
};

constexpr int kMaxTile = 16 * 6;

bool UseAvx2() {
#if defined(__x86_64__)
    const char* flag = getenv("FRUGAL_EMU_BLAS_AVX2");
    if (flag && strcmp(flag, "0") == 0) return false;
    return __builtin_cpu_supports("avx2");
#else
    return false;
#endif
}

Kernel<float> PickKernel(float) {
#if defined(__x86_64__)
    if (UseAvx2()) return {TileF8::MR, TileF8::NR, KernelF8};
#endif
    return {TileF4::MR, TileF4::NR, KernelF4};
}

Kernel<double> PickKernel(double) {
#if defined(__x86_64__)
    if (UseAvx2()) return {TileD4::MR, TileD4::NR, KernelD4};
#endif
    return {TileD2::MR, TileD2::NR, KernelD2};
}

// op(A) rows [i0, i0 + rows) of batch entry `index`, packed in panels of MR rows: dst[(panel · k + p) · MR + row],
// zero padded.
template <typename T>
void PackA(const Gemm& g, const Kernel<T>& kernel, int index, int i0, int rows, T* dst) {
    const int MR = kernel.MR, m = g.m, k = g.k;
    const char* a = static_cast<const char*>(g.a) + static_cast<int64_t>(index) * g.stride_a * static_cast<int64_t>(ElementSize(g.atype));
    const int panels_m = (rows + MR - 1) / MR;
    for (int ip = 0; ip < panels_m; ++ip) {
        T* panel = dst + static_cast<size_t>(ip) * k * MR;
        for (int p = 0; p < k; ++p)
            for (int r = 0; r < MR; ++r) {
                const int i = i0 + ip * MR + r;
                T value = T(0);
                if (i < m) {
                    const int64_t at = g.transa ? p + static_cast<int64_t>(i) * g.lda : i + static_cast<int64_t>(p) * g.lda;
                    value = Load<T>(a, at, g.atype, g.rounding);
                }
                panel[static_cast<size_t>(p) * MR + r] = value;
            }
    }
}

// Rows in blocks of MC: a block's packed op(A) stays in the cache while the B panels pass.
template <typename T>
int RowBlock(const Gemm& g, const Kernel<T>& kernel) {
    return Max(kernel.MR, ((1 << 17) / static_cast<int>(sizeof(T)) / Max(g.k, 1)) / kernel.MR * kernel.MR);
}

// One task: columns [j0, j1) of batch entry `index`. `packed_a`: op(A) of the entry packed whole by PackA, or null
// (the task packs it, block by block).
template <typename T>
void RunTask(const Gemm& g, const Kernel<T>& kernel, int index, int j0, int j1, const T* packed_a) {
    const int MR = kernel.MR, NR = kernel.NR;
    const int m = g.m, k = g.k;
    const size_t eb = ElementSize(g.btype), ec = ElementSize(g.ctype);
    const char* b = static_cast<const char*>(g.b) + static_cast<int64_t>(index) * g.stride_b * static_cast<int64_t>(eb);
    char* c = static_cast<char*>(g.c) + static_cast<int64_t>(index) * g.stride_c * static_cast<int64_t>(ec);
    const T alpha = g.f64 ? static_cast<T>(g.alpha64) : static_cast<T>(g.alpha32);
    const T beta = g.f64 ? static_cast<T>(g.beta64) : static_cast<T>(g.beta32);
    const int columns = j1 - j0;
    const int panels_n = (columns + NR - 1) / NR;

    // C = beta · C (or 0) when A and B are not read (k == 0 or alpha == 0).
    if (!g.reads_ab) {
        for (int j = j0; j < j1; ++j)
            for (int i = 0; i < m; ++i) {
                const int64_t at = i + static_cast<int64_t>(j) * g.ldc;
                const T value = g.reads_c ? beta * Load<T>(c, at, g.ctype, Rounding::None) : T(0);
                Store<T>(c, at, g.ctype, value);
            }
        return;
    }

    // op(B) for these columns, packed in panels of NR columns: bp[(panel · k + p) · NR + col], zero padded.
    Array<T> bp;
    bp.Reset(static_cast<size_t>(panels_n) * k * NR, T(0));
    for (int jp = 0; jp < panels_n; ++jp)
        for (int cc = 0; cc < NR; ++cc) {
            const int j = j0 + jp * NR + cc;
            if (j >= j1) break;
            T* dst = bp.data() + static_cast<size_t>(jp) * k * NR + cc;
            for (int p = 0; p < k; ++p) {
                const int64_t at = g.transb ? j + static_cast<int64_t>(p) * g.ldb : p + static_cast<int64_t>(j) * g.ldb;
                dst[static_cast<size_t>(p) * NR] = Load<T>(b, at, g.btype, g.rounding);
            }
        }

    const int MC = RowBlock(g, kernel);
    Array<T> own;
    own.Reset(packed_a ? 1 : static_cast<size_t>(Min(MC, ((m + MR - 1) / MR) * MR)) * k, T(0));
    T out[kMaxTile];
    for (int i0 = 0; i0 < m; i0 += MC) {
        const int rows = Min(MC, m - i0);
        const int panels_m = (rows + MR - 1) / MR;
        const T* block = packed_a + static_cast<size_t>(i0) * k;
        if (!packed_a) {
            PackA(g, kernel, index, i0, rows, own.data());
            block = own.data();
        }
        for (int jp = 0; jp < panels_n; ++jp) {
            const T* bpanel = bp.data() + static_cast<size_t>(jp) * k * NR;
            for (int ip = 0; ip < panels_m; ++ip) {
                kernel.run(k, block + static_cast<size_t>(ip) * k * MR, bpanel, out);
                for (int cc = 0; cc < NR; ++cc) {
                    const int j = j0 + jp * NR + cc;
                    if (j >= j1) break;
                    for (int r = 0; r < MR; ++r) {
                        const int i = i0 + ip * MR + r;
                        if (i >= m) break;
                        const int64_t at = i + static_cast<int64_t>(j) * g.ldc;
                        T value = alpha * out[cc * MR + r];
                        if (g.reads_c) value += beta * Load<T>(c, at, g.ctype, Rounding::None);
                        Store<T>(c, at, g.ctype, value);
                    }
                }
            }
        }
    }
}

int Threads() {
    if (const char* text = getenv("FRUGAL_EMU_BLAS_THREADS")) {
        const int n = atoi(text);
        if (n >= 1) return Min(n, 64);
    }
    const long n = sysconf(_SC_NPROCESSORS_ONLN);
    return static_cast<int>(Min(Max(n, 1L), 8L));
}

// Runs f(0), ..., f(count - 1) on `threads` threads (the caller's included). pthreads rather than std::thread,
// whose template instances would be exported from the library.
template <typename F>
void ParallelFor(int64_t count, int threads, const F& f) {
    int64_t next = 0;
    auto worker = [&]() {
        for (int64_t t; (t = __atomic_fetch_add(&next, 1, __ATOMIC_RELAXED)) < count;) f(t);
    };
    threads = static_cast<int>(Min<int64_t>(Min(threads, 64), count));
    if (threads <= 1) {
        worker();
        return;
    }
    struct Start {
        static void* Run(void* w) {
            (*static_cast<decltype(worker)*>(w))();
            return nullptr;
        }
    };
    pthread_t pool[64];
    int started = 0;
    for (int i = 1; i < threads; ++i)
        if (pthread_create(&pool[started], nullptr, Start::Run, &worker) == 0) ++started;
    worker();
    for (int i = 0; i < started; ++i) pthread_join(pool[i], nullptr);
}

template <typename T>
void Compute(const Gemm& g) {
    // Tasks: (batch entry, range of columns); each writes its own elements of C only.
    const Kernel<T> kernel = PickKernel(T());
    const double flops = 2.0 * g.m * g.n * static_cast<double>(Max(g.k, 1)) * g.batch;
    const int threads = flops < 4e6 ? 1 : Threads();
    int pieces = 1;  // column ranges per batch entry
    const int NR = kernel.NR, MR = kernel.MR;
    const int panels = (g.n + NR - 1) / NR;
    if (threads > 1 && g.batch < 2 * threads) pieces = Min(panels, (2 * threads + g.batch - 1) / g.batch);
    const int per = (panels + pieces - 1) / pieces * NR;  // columns per piece, a multiple of NR
    pieces = (g.n + per - 1) / per;
    // With several pieces per batch entry, op(A) is packed once per entry (in parallel, by row blocks) rather than
    // by every piece, when that takes at most 64 MiB.
    const int64_t mp = (static_cast<int64_t>(g.m) + MR - 1) / MR * MR;
    const int64_t per_entry = mp * g.k;
    const bool prepacked = pieces > 1 && g.reads_ab && per_entry * g.batch * static_cast<int64_t>(sizeof(T)) <= (int64_t{64} << 20);
    Array<T> packed;
    packed.Reset(prepacked ? static_cast<size_t>(per_entry * g.batch) : 1, T(0));
    if (prepacked) {
        const int MC = RowBlock(g, kernel);
        const int blocks = (g.m + MC - 1) / MC;
        ParallelFor(static_cast<int64_t>(g.batch) * blocks, threads, [&](int64_t t) {
            const int index = static_cast<int>(t / blocks), i0 = static_cast<int>(t % blocks) * MC;
            PackA(g, kernel, index, i0, Min(MC, g.m - i0), packed.data() + index * per_entry + static_cast<int64_t>(i0) * g.k);
        });
    }
    ParallelFor(static_cast<int64_t>(g.batch) * pieces, threads, [&](int64_t t) {
        const int index = static_cast<int>(t / pieces), piece = static_cast<int>(t % pieces);
        RunTask<T>(g, kernel, index, piece * per, Min(g.n, (piece + 1) * per), prepacked ? packed.data() + index * per_entry : nullptr);
    });
}

// The bytes that batch entries of a stored rows × cols matrix (leading dimension ld) span from the lowest one,
// and the lowest one's offset in elements from the base pointer.
void Span(int rows, int cols, int ld, long long stride, int batch, int64_t* first, int64_t* elements) {
    const int64_t extent = static_cast<int64_t>(cols - 1) * ld + rows;
    const int64_t last = static_cast<int64_t>(batch - 1) * stride;
    *first = Min<int64_t>(0, last);
    *elements = Max<int64_t>(0, last) - *first + extent;
}

bool CheckOperand(const char* name, const void* base, cudaDataType type, int rows, int cols, int ld, long long stride,
                  int batch, char* error, size_t error_len) {
    if (rows == 0 || cols == 0 || batch == 0) return true;
    int64_t first, elements;
    Span(rows, cols, ld, stride, batch, &first, &elements);
    const int64_t size = static_cast<int64_t>(ElementSize(type));
    char what[256];
    snprintf(what, sizeof what, "%s (%d x %d, ld %d, stride %lld, %d batch entries: %lld bytes)", name, rows, cols, ld,
             stride, batch, static_cast<long long>(elements * size));
    const CUdeviceptr start = reinterpret_cast<CUdeviceptr>(base) + static_cast<CUdeviceptr>(first * size);
    return frugal_emu_check_range(start, static_cast<size_t>(elements * size), what, error, error_len) != 0;
}

int RunGemm(void* state, char* error, size_t error_len) {
    const Gemm& g = *static_cast<const Gemm*>(state);
    if (g.reads_ab) {
        if (!CheckOperand("A", g.a, g.atype, g.transa ? g.k : g.m, g.transa ? g.m : g.k, g.lda, g.stride_a, g.batch, error,
                          error_len))
            return 1;
        if (!CheckOperand("B", g.b, g.btype, g.transb ? g.n : g.k, g.transb ? g.k : g.n, g.ldb, g.stride_b, g.batch, error,
                          error_len))
            return 1;
    }
    if (!CheckOperand("C", g.c, g.ctype, g.m, g.n, g.ldc, g.stride_c, g.batch, error, error_len)) return 1;
    if (g.f64)
        Compute<double>(g);
    else
        Compute<float>(g);
    return 0;
}

void DestroyGemm(void* state) { delete static_cast<Gemm*>(state); }

bool ValidOp(cublasOperation_t op) { return op == CUBLAS_OP_N || op == CUBLAS_OP_T || op == CUBLAS_OP_C; }

bool ValidAlgo(cublasGemmAlgo_t algo) {
    const int a = static_cast<int>(algo);
    return a == CUBLAS_GEMM_DEFAULT || (a >= CUBLAS_GEMM_ALGO0 && a <= CUBLAS_GEMM_ALGO23) || a == CUBLAS_GEMM_DEFAULT_TENSOR_OP ||
           (a >= CUBLAS_GEMM_ALGO0_TENSOR_OP && a <= CUBLAS_GEMM_ALGO15_TENSOR_OP);
}

// The real-valued rows of the table of supported combinations of cublasGemmStridedBatchedEx (compute type; A and B
// type; C type). The float compute types scale with float, 64F with double. Returns false for the others.
bool Supported(cublasComputeType_t compute, cudaDataType ab, cudaDataType c, bool* f64, Rounding* rounding) {
    *f64 = false;
    *rounding = Rounding::None;
    switch (compute) {
        case CUBLAS_COMPUTE_32F:
        case CUBLAS_COMPUTE_32F_PEDANTIC:
            return (ab == CUDA_R_32F && c == CUDA_R_32F) || (ab == CUDA_R_16F && (c == CUDA_R_16F || c == CUDA_R_32F)) ||
                   (ab == CUDA_R_16BF && (c == CUDA_R_16BF || c == CUDA_R_32F));
        case CUBLAS_COMPUTE_32F_FAST_TF32:
        case CUBLAS_COMPUTE_32F_FAST_16F:
        case CUBLAS_COMPUTE_32F_FAST_16BF:
            *rounding = compute == CUBLAS_COMPUTE_32F_FAST_TF32  ? Rounding::Tf32
                        : compute == CUBLAS_COMPUTE_32F_FAST_16F ? Rounding::Half
                                                                 : Rounding::Bf16;
            return ab == CUDA_R_32F && c == CUDA_R_32F;
        case CUBLAS_COMPUTE_64F:
        case CUBLAS_COMPUTE_64F_PEDANTIC:
            *f64 = true;
            return ab == CUDA_R_64F && c == CUDA_R_64F;
        default: return false;  // 16F and 32I compute types, complex types: not emulated
    }
}

}  // namespace

API cublasStatus_t CUBLASWINAPI cublasCreate_v2(cublasHandle_t* handle) {
    if (!handle) return CUBLAS_STATUS_INVALID_VALUE;
    cublasContext* context = new (std::nothrow) cublasContext{nullptr};
    if (!context) return CUBLAS_STATUS_ALLOC_FAILED;
    Lock lock(&g_lock);
    if (!g_handles.Add(context)) {
        delete context;
        return CUBLAS_STATUS_ALLOC_FAILED;
    }
    *handle = context;
    return CUBLAS_STATUS_SUCCESS;
}

API cublasStatus_t CUBLASWINAPI cublasDestroy_v2(cublasHandle_t handle) {
    Lock lock(&g_lock);
    if (!handle || !g_handles.Remove(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
    delete handle;
    return CUBLAS_STATUS_SUCCESS;
}

API cublasStatus_t CUBLASWINAPI cublasSetStream_v2(cublasHandle_t handle, cudaStream_t streamId) {
    if (!Lookup(handle, nullptr)) return CUBLAS_STATUS_NOT_INITIALIZED;
    CUstream stream = reinterpret_cast<CUstream>(streamId);
    if (!frugal_emu_stream_valid(stream)) return CUBLAS_STATUS_INVALID_VALUE;
    Lock lock(&g_lock);
    if (!g_handles.Contains(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
    handle->stream = stream;
    return CUBLAS_STATUS_SUCCESS;
}

API cublasStatus_t CUBLASWINAPI cublasGemmStridedBatchedEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                                                           int m, int n, int k, const void* alpha, const void* A, cudaDataType Atype,
                                                           int lda, long long int strideA, const void* B, cudaDataType Btype,
                                                           int ldb, long long int strideB, const void* beta, void* C,
                                                           cudaDataType Ctype, int ldc, long long int strideC, int batchCount,
                                                           cublasComputeType_t computeType, cublasGemmAlgo_t algo) {
    CUstream stream;
    if (!Lookup(handle, &stream)) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!ValidOp(transa) || !ValidOp(transb) || m < 0 || n < 0 || k < 0 || batchCount < 0) return CUBLAS_STATUS_INVALID_VALUE;
    const bool ta = transa != CUBLAS_OP_N, tb = transb != CUBLAS_OP_N;  // real types: Xᴴ = Xᵀ
    if (lda < Max(1, ta ? k : m) || ldb < Max(1, tb ? n : k) || ldc < Max(1, m)) return CUBLAS_STATUS_INVALID_VALUE;
    if (!alpha || !beta) return CUBLAS_STATUS_INVALID_VALUE;
    bool f64;
    Rounding rounding;
    if (Atype != Btype || !Supported(computeType, Atype, Ctype, &f64, &rounding) || !ValidAlgo(algo)) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (m == 0 || n == 0 || batchCount == 0) return CUBLAS_STATUS_SUCCESS;

    Gemm* g = new (std::nothrow) Gemm();
    if (!g) return CUBLAS_STATUS_ALLOC_FAILED;
    g->transa = ta;
    g->transb = tb;
    g->m = m;
    g->n = n;
    g->k = k;
    g->batch = batchCount;
    g->a = A;
    g->b = B;
    g->c = C;
    g->atype = Atype;
    g->btype = Btype;
    g->ctype = Ctype;
    g->lda = lda;
    g->ldb = ldb;
    g->ldc = ldc;
    g->stride_a = strideA;
    g->stride_b = strideB;
    g->stride_c = strideC;
    g->f64 = f64;
    g->rounding = rounding;
    // The default (host) pointer mode: the scalars are read now, as the call returns.
    if (f64) {
        g->alpha64 = *static_cast<const double*>(alpha);
        g->beta64 = *static_cast<const double*>(beta);
        g->reads_ab = g->alpha64 != 0 && k > 0;
        g->reads_c = g->beta64 != 0;
    } else {
        g->alpha32 = *static_cast<const float*>(alpha);
        g->beta32 = *static_cast<const float*>(beta);
        g->reads_ab = g->alpha32 != 0 && k > 0;
        g->reads_c = g->beta32 != 0;
    }
    const bool beta_one = f64 ? g->beta64 == 1 : g->beta32 == 1;
    if (!g->reads_ab && beta_one) {
        delete g;  // C = 1 · C: nothing to do
        return CUBLAS_STATUS_SUCCESS;
    }
    FrugalEmuWork work{RunGemm, DestroyGemm, g, "cublasGemmStridedBatchedEx"};
    if (frugal_emu_enqueue(stream, work) != CUDA_SUCCESS) return CUBLAS_STATUS_EXECUTION_FAILED;
    return CUBLAS_STATUS_SUCCESS;
}

API const char* CUBLASWINAPI cublasGetStatusName(cublasStatus_t status) {
    switch (status) {
        case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
        case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
        case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
        case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
        case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
        case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
        case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
        case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
        case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
        case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
    }
    return "CUBLAS_STATUS_UNKNOWN";
}
