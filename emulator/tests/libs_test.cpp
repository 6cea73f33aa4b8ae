// Checks of the emulated cuBLAS and cuSPARSE against a naive float64 reference, through the emulated driver: each
// case runs in a child process (a fault leaves the context's error sticky, as on a GPU), prints its outcome, and
// the last line is "N passed, M failed".
#include <cublas_v2.h>
#include <cuda.h>
#include <cusparse.h>

#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

extern "C" const char* frugal_emu_last_error(void);

namespace {

#define EXPECT(condition)                                                                     \
    do {                                                                                      \
        if (!(condition)) {                                                                   \
            fprintf(stderr, "  %s:%d: expected %s\n", __FILE__, __LINE__, #condition);        \
            _exit(1);                                                                         \
        }                                                                                     \
    } while (0)

CUcontext g_context;
CUstream g_stream;

void Setup() {
    EXPECT(cuInit(0) == CUDA_SUCCESS);
    CUdevice device;
    EXPECT(cuDeviceGet(&device, 0) == CUDA_SUCCESS);
    EXPECT(cuDevicePrimaryCtxRetain(&g_context, device) == CUDA_SUCCESS);
    EXPECT(cuCtxSetCurrent(g_context) == CUDA_SUCCESS);
    EXPECT(cuStreamCreate(&g_stream, CU_STREAM_NON_BLOCKING) == CUDA_SUCCESS);
}

bool LastErrorHas(const char* text) {
    const char* e = frugal_emu_last_error();
    if (strstr(e, text)) return true;
    fprintf(stderr, "  last error \"%s\" lacks \"%s\"\n", e, text);
    return false;
}

// ---- device memory ----

CUdeviceptr Alloc(size_t bytes) {
    CUdeviceptr p;
    EXPECT(cuMemAlloc(&p, bytes) == CUDA_SUCCESS);
    return p;
}

CUdeviceptr Upload(const std::vector<unsigned char>& bytes, size_t allocation = 0) {
    CUdeviceptr p = Alloc(std::max(allocation, bytes.size()));
    EXPECT(cuMemcpyHtoDAsync(p, bytes.data(), bytes.size(), g_stream) == CUDA_SUCCESS);
    EXPECT(cuStreamSynchronize(g_stream) == CUDA_SUCCESS);
    return p;
}

std::vector<unsigned char> Download(CUdeviceptr p, size_t bytes) {
    std::vector<unsigned char> out(bytes);
    EXPECT(cuMemcpyDtoHAsync(out.data(), p, bytes, g_stream) == CUDA_SUCCESS);
    EXPECT(cuStreamSynchronize(g_stream) == CUDA_SUCCESS);
    return out;
}

template <typename T>
std::vector<unsigned char> Bytes(const std::vector<T>& values) {
    std::vector<unsigned char> out(values.size() * sizeof(T));
    memcpy(out.data(), values.data(), out.size());
    return out;
}

template <typename T>
std::vector<T> As(const std::vector<unsigned char>& bytes) {
    std::vector<T> out(bytes.size() / sizeof(T));
    memcpy(out.data(), bytes.data(), out.size() * sizeof(T));
    return out;
}

template <typename T>
CUdeviceptr UploadValues(const std::vector<T>& values) {
    return Upload(Bytes(values));
}

template <typename T>
std::vector<T> DownloadValues(CUdeviceptr p, size_t count) {
    return As<T>(Download(p, count * sizeof(T)));
}

// ---- numbers: an independent float64 view of each stored type ----

uint64_t g_seed = 12345;

double Random() {  // in [-1, 1)
    g_seed = g_seed * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<double>(g_seed >> 11) / 4503599627370496.0 - 1.0;
}

size_t SizeOf(cudaDataType t) { return t == CUDA_R_64F ? 8 : t == CUDA_R_32F ? 4 : 2; }

// Stores v (rounded to the type: nearest-even for F16 through the compiler's _Float16, truncation for BF16, whose
// inputs here are made exact) at element i.
void Put(std::vector<unsigned char>& bytes, cudaDataType t, size_t i, double v) {
    unsigned char* at = bytes.data() + i * SizeOf(t);
    if (t == CUDA_R_64F) {
        memcpy(at, &v, 8);
    } else if (t == CUDA_R_32F) {
        float f = static_cast<float>(v);
        memcpy(at, &f, 4);
    } else if (t == CUDA_R_16F) {
        _Float16 h = static_cast<_Float16>(static_cast<float>(v));
        memcpy(at, &h, 2);
    } else {
        float f = static_cast<float>(v);
        uint32_t u;
        memcpy(&u, &f, 4);
        uint16_t h = static_cast<uint16_t>(u >> 16);
        memcpy(at, &h, 2);
    }
}

double Get(const std::vector<unsigned char>& bytes, cudaDataType t, size_t i) {
    const unsigned char* at = bytes.data() + i * SizeOf(t);
    if (t == CUDA_R_64F) {
        double v;
        memcpy(&v, at, 8);
        return v;
    }
    if (t == CUDA_R_32F) {
        float f;
        memcpy(&f, at, 4);
        return f;
    }
    if (t == CUDA_R_16F) {
        _Float16 h;
        memcpy(&h, at, 2);
        return static_cast<double>(h);
    }
    uint16_t h;
    memcpy(&h, at, 2);
    uint32_t u = static_cast<uint32_t>(h) << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

double Tf32(double v) {  // nearest-even to a 10-bit mantissa, written differently from the library (frexp)
    if (v == 0 || !std::isfinite(v)) return v;
    int e;
    const double m = std::frexp(v, &e);  // |m| in [0.5, 1): 11 significant bits are m · 2¹¹
    return std::ldexp(std::nearbyint(m * 2048.0), e - 11);
}

// ---- cuBLAS ----

cublasHandle_t NewCublas() {
    cublasHandle_t h;
    EXPECT(cublasCreate(&h) == CUBLAS_STATUS_SUCCESS);
    EXPECT(cublasSetStream(h, g_stream) == CUBLAS_STATUS_SUCCESS);
    return h;
}

struct GemmCase {
    cublasOperation_t ta = CUBLAS_OP_N, tb = CUBLAS_OP_N;
    int m = 13, n = 11, k = 17;
    int pad_a = 0, pad_b = 0, pad_c = 0;  // leading dimension beyond the minimum
    int batch = 1;
    long long gap = 0;  // batch stride beyond one matrix
    bool broadcast_a = false;  // strideA = 0
    cudaDataType ab = CUDA_R_32F, c = CUDA_R_32F;
    cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
    double alpha = 1, beta = 0;
    bool nan_c = false;  // C starts as NaN (with beta 0 it must not be read)
};

// Runs the case and compares every element of C (and that C's padding is untouched) with the float64 reference.
void CheckGemm(const GemmCase& g) {
    cublasHandle_t h = NewCublas();
    const bool ta = g.ta != CUBLAS_OP_N, tb = g.tb != CUBLAS_OP_N;
    const int a_rows = ta ? g.k : g.m, a_cols = ta ? g.m : g.k, b_rows = tb ? g.n : g.k, b_cols = tb ? g.k : g.n;
    const int lda = std::max(1, a_rows) + g.pad_a, ldb = std::max(1, b_rows) + g.pad_b, ldc = std::max(1, g.m) + g.pad_c;
    const long long sa = g.broadcast_a ? 0 : static_cast<long long>(lda) * a_cols + g.gap, sb = static_cast<long long>(ldb) * b_cols + g.gap,
                    sc = static_cast<long long>(ldc) * g.n + g.gap;
    const size_t na = static_cast<size_t>(g.broadcast_a ? lda * a_cols : sa * g.batch), nb = static_cast<size_t>(sb * g.batch),
                 nc = static_cast<size_t>(sc * g.batch);
    std::vector<unsigned char> a(std::max<size_t>(na, 1) * SizeOf(g.ab)), b(std::max<size_t>(nb, 1) * SizeOf(g.ab)),
        c(std::max<size_t>(nc, 1) * SizeOf(g.c));
    for (size_t i = 0; i < na; ++i) Put(a, g.ab, i, Random());
    for (size_t i = 0; i < nb; ++i) Put(b, g.ab, i, Random());
    for (size_t i = 0; i < nc; ++i) Put(c, g.c, i, g.nan_c ? NAN : Random());
    CUdeviceptr da = Upload(a), db = Upload(b), dc = Upload(c);
    const bool f64 = g.compute == CUBLAS_COMPUTE_64F;
    float alpha32 = static_cast<float>(g.alpha), beta32 = static_cast<float>(g.beta);
    const void* alpha = f64 ? static_cast<const void*>(&g.alpha) : &alpha32;
    const void* beta = f64 ? static_cast<const void*>(&g.beta) : &beta32;
    EXPECT(cublasGemmStridedBatchedEx(h, g.ta, g.tb, g.m, g.n, g.k, alpha, reinterpret_cast<void*>(da), g.ab, lda, sa,
                                      reinterpret_cast<void*>(db), g.ab, ldb, sb, beta, reinterpret_cast<void*>(dc), g.c, ldc, sc,
                                      g.batch, g.compute, CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS);
    EXPECT(cuStreamSynchronize(g_stream) == CUDA_SUCCESS);
    std::vector<unsigned char> out = Download(dc, c.size());
    const bool tf32 = g.compute == CUBLAS_COMPUTE_32F_FAST_TF32;
    const double eps = f64 ? std::ldexp(1.0, -52) : std::ldexp(1.0, -23);
    const double out_ulp = g.c == CUDA_R_16F ? std::ldexp(1.0, -11) : g.c == CUDA_R_16BF ? std::ldexp(1.0, -8) : 0;
    for (int q = 0; q < g.batch; ++q)
        for (int j = 0; j < g.n; ++j)
            for (int i = 0; i < ldc; ++i) {
                const size_t at = static_cast<size_t>(q * sc + static_cast<long long>(j) * ldc + i);
                const double got = Get(out, g.c, at);
                if (i >= g.m) {  // padding: untouched
                    EXPECT(memcmp(out.data() + at * SizeOf(g.c), c.data() + at * SizeOf(g.c), SizeOf(g.c)) == 0);
                    continue;
                }
                double sum = 0, magnitude = 0;
                for (int p = 0; p < g.k; ++p) {
                    const size_t ia = static_cast<size_t>(q * sa + (ta ? p + static_cast<long long>(i) * lda : i + static_cast<long long>(p) * lda));
                    const size_t ib = static_cast<size_t>(q * sb + (tb ? j + static_cast<long long>(p) * ldb : p + static_cast<long long>(j) * ldb));
                    double x = Get(a, g.ab, ia), y = Get(b, g.ab, ib);
                    if (tf32) {
                        x = Tf32(x);
                        y = Tf32(y);
                    }
                    sum += x * y;
                    magnitude += std::fabs(x * y);
                }
                double expected = g.alpha * sum, bound = std::fabs(g.alpha) * magnitude;
                if (g.beta != 0) {
                    const double old = Get(c, g.c, at);
                    expected += g.beta * old;
                    bound += std::fabs(g.beta * old);
                }
                const double tolerance = eps * (g.k + 4) * bound * (1 + out_ulp) + out_ulp * std::fabs(expected) +
                                         (g.c == CUDA_R_16F ? std::ldexp(1.0, -25) : 0) + 1e-300;
                if (!(std::fabs(got - expected) <= tolerance)) {
                    fprintf(stderr, "  C[%d](%d, %d) = %.17g, expected %.17g (tolerance %.3g)\n", q, i, j, got, expected, tolerance);
                    _exit(1);
                }
            }
    EXPECT(cublasDestroy(h) == CUBLAS_STATUS_SUCCESS);
}

// A 1 × 1 × k product's value, for the rounding checks.
template <typename In, typename Out, typename Scale>
Out Dot(cudaDataType ab, cudaDataType ct, cublasComputeType_t compute, const std::vector<In>& x, const std::vector<In>& y, Scale alpha) {
    cublasHandle_t h = NewCublas();
    const int k = static_cast<int>(x.size());
    CUdeviceptr a = UploadValues(x), b = UploadValues(y), c = UploadValues(std::vector<Out>(1));
    Scale beta = 0;
    EXPECT(cublasGemmStridedBatchedEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, k, &alpha, reinterpret_cast<void*>(a), ab, 1, 0,
                                      reinterpret_cast<void*>(b), ab, k, 0, &beta, reinterpret_cast<void*>(c), ct, 1, 0, 1, compute,
                                      CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS);
    EXPECT(cuStreamSynchronize(g_stream) == CUDA_SUCCESS);
    return DownloadValues<Out>(c, 1)[0];
}

uint16_t Half(float f) {
    _Float16 h = static_cast<_Float16>(f);
    uint16_t u;
    memcpy(&u, &h, 2);
    return u;
}

float FromHalf(uint16_t u) {
    _Float16 h;
    memcpy(&h, &u, 2);
    return static_cast<float>(h);
}

float FromBf16(uint16_t u) {
    uint32_t w = static_cast<uint32_t>(u) << 16;
    float f;
    memcpy(&f, &w, 4);
    return f;
}

// Valid 4 × 4 × 4 F32 operands and a call with one argument changed.
struct Args {
    cublasHandle_t h;
    cublasOperation_t ta = CUBLAS_OP_N, tb = CUBLAS_OP_N;
    int m = 4, n = 4, k = 4, lda = 4, ldb = 4, ldc = 4, batch = 1;
    const void* alpha;
    const void* beta;
    CUdeviceptr a, b, c;
    cudaDataType at = CUDA_R_32F, bt = CUDA_R_32F, ct = CUDA_R_32F;
    cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
    cublasGemmAlgo_t algo = CUBLAS_GEMM_DEFAULT;
    cublasStatus_t Call() const {
        return cublasGemmStridedBatchedEx(h, ta, tb, m, n, k, alpha, reinterpret_cast<void*>(a), at, lda, 16, reinterpret_cast<void*>(b), bt,
                                          ldb, 16, beta, reinterpret_cast<void*>(c), ct, ldc, 16, batch, compute, algo);
    }
};

const float kOne = 1.0f, kZero = 0.0f;

Args ValidArgs() {
    Args x;
    x.h = NewCublas();
    x.alpha = &kOne;
    x.beta = &kZero;
    x.a = Alloc(64 * 8);
    x.b = Alloc(64 * 8);
    x.c = Alloc(64 * 8);
    return x;
}

// ---- cuSPARSE ----

cusparseHandle_t NewCusparse() {
    cusparseHandle_t h;
    EXPECT(cusparseCreate(&h) == CUSPARSE_STATUS_SUCCESS);
    EXPECT(cusparseSetStream(h, g_stream) == CUSPARSE_STATUS_SUCCESS);
    return h;
}

struct Csr {
    int rows, cols;
    std::vector<int> offsets, columns;
    std::vector<float> values;
};

// A random pattern with about `density` of the entries stored, some rows empty, columns ascending.
Csr RandomCsr(int rows, int cols, double density) {
    Csr s{rows, cols, {0}, {}, {}};
    for (int i = 0; i < rows; ++i) {
        if (i % 5 != 3)
            for (int j = 0; j < cols; ++j)
                if ((Random() + 1) / 2 < density) {
                    s.columns.push_back(j);
                    s.values.push_back(static_cast<float>(Random()));
                }
        s.offsets.push_back(static_cast<int>(s.columns.size()));
    }
    return s;
}

struct DeviceCsr {
    CUdeviceptr offsets, columns, values;
    cusparseSpMatDescr_t d;
};

DeviceCsr Describe(const Csr& s) {
    DeviceCsr x;
    x.offsets = UploadValues(s.offsets);
    x.columns = UploadValues(s.columns.empty() ? std::vector<int>{0} : s.columns);
    x.values = UploadValues(s.values.empty() ? std::vector<float>{0} : s.values);
    EXPECT(cusparseCreateCsr(&x.d, s.rows, s.cols, static_cast<int64_t>(s.values.size()), reinterpret_cast<void*>(x.offsets),
                             reinterpret_cast<void*>(x.columns), reinterpret_cast<void*>(x.values), CUSPARSE_INDEX_32I,
                             CUSPARSE_INDEX_32I, CUSPARSE_INDEX_BASE_ZERO, CUDA_R_32F) == CUSPARSE_STATUS_SUCCESS);
    return x;
}

// A dense rows × cols float matrix with leading dimension ld, host values in storage order.
struct Dense {
    int rows, cols, ld;
    cusparseOrder_t order;
    std::vector<float> values;
    double At(int r, int c) const { return values[order == CUSPARSE_ORDER_ROW ? static_cast<size_t>(r) * ld + c : static_cast<size_t>(c) * ld + r]; }
};

Dense RandomDense(int rows, int cols, cusparseOrder_t order, int pad, bool nan = false) {
    Dense m{rows, cols, (order == CUSPARSE_ORDER_ROW ? cols : rows) + pad, order, {}};
    m.values.resize(static_cast<size_t>(m.ld) * (order == CUSPARSE_ORDER_ROW ? rows : cols));
    for (float& v : m.values) v = nan ? NAN : static_cast<float>(Random());
    return m;
}

cusparseDnMatDescr_t DescribeDense(const Dense& m, CUdeviceptr* p) {
    *p = UploadValues(m.values);
    cusparseDnMatDescr_t d;
    EXPECT(cusparseCreateDnMat(&d, m.rows, m.cols, m.ld, reinterpret_cast<void*>(*p), CUDA_R_32F, m.order) == CUSPARSE_STATUS_SUCCESS);
    return d;
}

double SparseAt(const Csr& s, int i, int j) {
    for (int t = s.offsets[i]; t < s.offsets[i + 1]; ++t)
        if (s.columns[t] == j) return s.values[t];
    return 0;
}

void Close(double got, double expected, double magnitude, const char* what, int i, int j) {
    const double tolerance = 1e-5 * magnitude + 1e-6;
    if (!(std::fabs(got - expected) <= tolerance)) {
        fprintf(stderr, "  %s(%d, %d) = %.9g, expected %.9g\n", what, i, j, got, expected);
        _exit(1);
    }
}

void CheckSpMM(cusparseOperation_t opA, cusparseOperation_t opB, cusparseOrder_t orderB, cusparseOrder_t orderC, float alpha,
               float beta, bool nan_c) {
    cusparseHandle_t h = NewCusparse();
    const int rows = 23, cols = 19, n = 7;
    const bool ta = opA != CUSPARSE_OPERATION_NON_TRANSPOSE, tb = opB != CUSPARSE_OPERATION_NON_TRANSPOSE;
    const int m = ta ? cols : rows, k = ta ? rows : cols;
    Csr s = RandomCsr(rows, cols, 0.3);
    DeviceCsr a = Describe(s);
    Dense b = tb ? RandomDense(n, k, orderB, 3) : RandomDense(k, n, orderB, 3);
    Dense c = RandomDense(m, n, orderC, 2, nan_c);
    CUdeviceptr pb, pc;
    cusparseDnMatDescr_t db = DescribeDense(b, &pb), dc = DescribeDense(c, &pc);
    size_t bytes = 12345;
    EXPECT(cusparseSpMM_bufferSize(h, opA, opB, &alpha, a.d, db, &beta, dc, CUDA_R_32F, CUSPARSE_SPMM_ALG_DEFAULT, &bytes) ==
           CUSPARSE_STATUS_SUCCESS);
    CUdeviceptr buffer = bytes ? Alloc(bytes) : 0;
    EXPECT(cusparseSpMM(h, opA, opB, &alpha, a.d, db, &beta, dc, CUDA_R_32F, CUSPARSE_SPMM_ALG_DEFAULT, reinterpret_cast<void*>(buffer)) ==
           CUSPARSE_STATUS_SUCCESS);
    // The descriptors may go as soon as the call returns: the queued work has what it needs.
    EXPECT(cusparseDestroySpMat(a.d) == CUSPARSE_STATUS_SUCCESS);
    EXPECT(cusparseDestroyDnMat(db) == CUSPARSE_STATUS_SUCCESS);
    EXPECT(cusparseDestroyDnMat(dc) == CUSPARSE_STATUS_SUCCESS);
    EXPECT(cuStreamSynchronize(g_stream) == CUDA_SUCCESS);
    Dense out = c;
    out.values = DownloadValues<float>(pc, c.values.size());
    for (int i = 0; i < m; ++i)
        for (int j = 0; j < n; ++j) {
            double sum = 0, magnitude = 0;
            for (int p = 0; p < k; ++p) {
                const double x = ta ? SparseAt(s, p, i) : SparseAt(s, i, p), y = tb ? b.At(j, p) : b.At(p, j);
                sum += x * y;
                magnitude += std::fabs(x * y);
            }
            const double expected = alpha * sum + beta * c.At(i, j);   // C is read even when beta is 0
            if (nan_c) {
                if (!std::isnan(out.At(i, j))) Close(out.At(i, j), expected, 0, "C (NaN expected)", i, j);
                continue;
            }
            Close(out.At(i, j), expected, magnitude + std::fabs(beta), "C", i, j);
        }
    EXPECT(cusparseDestroy(h) == CUSPARSE_STATUS_SUCCESS);
}

void CheckSddmm(cusparseOperation_t opA, cusparseOperation_t opB, cusparseOrder_t orderA, cusparseOrder_t orderB, float alpha,
                float beta, bool nan_c) {
    cusparseHandle_t h = NewCusparse();
    const int rows = 17, cols = 21, k = 9;
    const bool ta = opA != CUSPARSE_OPERATION_NON_TRANSPOSE, tb = opB != CUSPARSE_OPERATION_NON_TRANSPOSE;
    Csr s = RandomCsr(rows, cols, 0.35);
    if (nan_c)
        for (float& v : s.values) v = NAN;
    DeviceCsr c = Describe(s);
    Dense a = ta ? RandomDense(k, rows, orderA, 1) : RandomDense(rows, k, orderA, 1);
    Dense b = tb ? RandomDense(cols, k, orderB, 2) : RandomDense(k, cols, orderB, 2);
    CUdeviceptr pa, pb;
    cusparseDnMatDescr_t da = DescribeDense(a, &pa), db = DescribeDense(b, &pb);
    size_t bytes = 0;
    EXPECT(cusparseSDDMM_bufferSize(h, opA, opB, &alpha, da, db, &beta, c.d, CUDA_R_32F, CUSPARSE_SDDMM_ALG_DEFAULT, &bytes) ==
           CUSPARSE_STATUS_SUCCESS);
    CUdeviceptr buffer = bytes ? Alloc(bytes) : 0;
    EXPECT(cusparseSDDMM(h, opA, opB, &alpha, da, db, &beta, c.d, CUDA_R_32F, CUSPARSE_SDDMM_ALG_DEFAULT, reinterpret_cast<void*>(buffer)) ==
           CUSPARSE_STATUS_SUCCESS);
    EXPECT(cuStreamSynchronize(g_stream) == CUDA_SUCCESS);
    std::vector<float> got = DownloadValues<float>(c.values, s.values.size());
    EXPECT(DownloadValues<int>(c.columns, s.columns.size()) == s.columns);  // the pattern is C's own, unchanged
    for (int i = 0; i < rows; ++i)
        for (int t = s.offsets[i]; t < s.offsets[i + 1]; ++t) {
            const int j = s.columns[t];
            double sum = 0, magnitude = 0;
            for (int p = 0; p < k; ++p) {
                const double x = ta ? a.At(p, i) : a.At(i, p), y = tb ? b.At(j, p) : b.At(p, j);
                sum += x * y;
                magnitude += std::fabs(x * y);
            }
            const double expected = alpha * sum + beta * s.values[t];   // C is read even when beta is 0
            if (nan_c) {
                if (!std::isnan(got[t])) Close(got[t], expected, 0, "C (NaN expected)", i, j);
                continue;
            }
            Close(got[t], expected, magnitude + std::fabs(beta), "C", i, j);
        }
    EXPECT(cusparseDestroySpMat(c.d) == CUSPARSE_STATUS_SUCCESS);
    EXPECT(cusparseDestroyDnMat(da) == CUSPARSE_STATUS_SUCCESS);
    EXPECT(cusparseDestroyDnMat(db) == CUSPARSE_STATUS_SUCCESS);
    EXPECT(cusparseDestroy(h) == CUSPARSE_STATUS_SUCCESS);
}

// A valid SpMM setup (A 6 × 5 CSR, B 5 × 3, C 6 × 3, row-major) for the failure cases.
struct SpMMSetup {
    cusparseHandle_t h;
    Csr s;
    DeviceCsr a;
    CUdeviceptr pb, pc;
    cusparseDnMatDescr_t b, c;
    float alpha = 1, beta = 0;
    cusparseStatus_t Call(cusparseOperation_t opA = CUSPARSE_OPERATION_NON_TRANSPOSE, void* buffer = nullptr) {
        return cusparseSpMM(h, opA, CUSPARSE_OPERATION_NON_TRANSPOSE, &alpha, a.d, b, &beta, c, CUDA_R_32F, CUSPARSE_SPMM_ALG_DEFAULT, buffer);
    }
};

SpMMSetup NewSpMM() {
    SpMMSetup x;
    x.h = NewCusparse();
    x.s = Csr{6, 5, {0, 2, 3, 3, 5, 6, 8}, {0, 4, 2, 1, 3, 0, 2, 4}, {1, 2, 3, 4, 5, 6, 7, 8}};
    x.a = Describe(x.s);
    x.b = DescribeDense(RandomDense(5, 3, CUSPARSE_ORDER_ROW, 0), &x.pb);
    x.c = DescribeDense(RandomDense(6, 3, CUSPARSE_ORDER_ROW, 0), &x.pc);
    return x;
}

double Seconds(const std::function<void()>& f) {
    const auto start = std::chrono::steady_clock::now();
    f();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

const cusparseOperation_t kN = CUSPARSE_OPERATION_NON_TRANSPOSE, kT = CUSPARSE_OPERATION_TRANSPOSE;
const cusparseOrder_t kRow = CUSPARSE_ORDER_ROW, kCol = CUSPARSE_ORDER_COL;

GemmCase With(std::function<void(GemmCase&)> f) {
    GemmCase g;
    f(g);
    return g;
}

const std::vector<std::pair<const char*, std::function<void()>>> kCases = {
    // ---- cuBLAS: results ----
    {"gemm f32 N,N", [] { CheckGemm(With([](GemmCase& g) { g.alpha = 0.75; g.beta = -0.5; })); }},
    {"gemm f32 T,N with non-tight leading dimensions", [] {
         CheckGemm(With([](GemmCase& g) { g.ta = CUBLAS_OP_T; g.pad_a = 3; g.pad_b = 2; g.pad_c = 5; g.alpha = -1.5; g.beta = 0.25; }));
     }},
    {"gemm f32 N,T", [] { CheckGemm(With([](GemmCase& g) { g.tb = CUBLAS_OP_T; g.pad_b = 1; g.beta = 1; })); }},
    {"gemm f32 T,T", [] { CheckGemm(With([](GemmCase& g) { g.ta = g.tb = CUBLAS_OP_T; g.m = 31; g.n = 5; g.k = 40; g.pad_c = 1; })); }},
    {"gemm f32: CUBLAS_OP_C is the transpose for real types", [] {
         CheckGemm(With([](GemmCase& g) { g.ta = CUBLAS_OP_C; g.tb = CUBLAS_OP_C; }));
     }},
    {"gemm f32 batched, with gaps between batch entries", [] {
         CheckGemm(With([](GemmCase& g) { g.batch = 5; g.gap = 7; g.pad_a = 1; g.ta = CUBLAS_OP_T; g.beta = 0.5; }));
     }},
    {"gemm f32 batched, strideA 0 broadcasts A", [] {
         CheckGemm(With([](GemmCase& g) { g.batch = 4; g.broadcast_a = true; g.tb = CUBLAS_OP_T; }));
     }},
    {"gemm beta 0: C is not read (NaN in C does not propagate)", [] {
         CheckGemm(With([](GemmCase& g) { g.nan_c = true; g.batch = 2; }));
     }},
    {"gemm k 0: C = beta C", [] { CheckGemm(With([](GemmCase& g) { g.k = 0; g.beta = 2; g.batch = 2; })); }},
    {"gemm k 0 and beta 0: C = 0 without reading C", [] { CheckGemm(With([](GemmCase& g) { g.k = 0; g.nan_c = true; })); }},
    {"gemm alpha 0: A and B are not read", [] {
         cublasHandle_t h = NewCublas();
         CUdeviceptr a = UploadValues(std::vector<float>(4, NAN)), b = UploadValues(std::vector<float>(4, NAN)),
                     c = UploadValues(std::vector<float>{1, 2, 3, 4});
         float alpha = 0, beta = 3;
         EXPECT(cublasGemmStridedBatchedEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &alpha, reinterpret_cast<void*>(a), CUDA_R_32F, 2, 0,
                                           reinterpret_cast<void*>(b), CUDA_R_32F, 2, 0, &beta, reinterpret_cast<void*>(c), CUDA_R_32F, 2, 0,
                                           1, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS);
         EXPECT(cuStreamSynchronize(g_stream) == CUDA_SUCCESS);
         EXPECT((DownloadValues<float>(c, 4) == std::vector<float>{3, 6, 9, 12}));
     }},
    {"gemm large f32 (the register tiles, row blocks and threads)", [] {
         CheckGemm(With([](GemmCase& g) { g.m = 203; g.n = 67; g.k = 301; g.tb = CUBLAS_OP_T; g.pad_a = 4; g.beta = 0.5; }));
     }},
    {"gemm f32: the result does not depend on the number of threads or the instruction set", [] {
         cublasHandle_t h = NewCublas();
         const int m = 150, n = 90, k = 400;
         std::vector<float> a(static_cast<size_t>(m) * k), b(static_cast<size_t>(k) * n);
         for (float& v : a) v = static_cast<float>(Random());
         for (float& v : b) v = static_cast<float>(Random());
         CUdeviceptr da = UploadValues(a), db = UploadValues(b), dc = Alloc(static_cast<size_t>(m) * n * 4);
         std::vector<std::vector<float>> results;
         for (const char* threads : {"1", "2", "3", "7", "2"}) {
             setenv("FRUGAL_EMU_BLAS_THREADS", threads, 1);
             if (results.size() == 4) setenv("FRUGAL_EMU_BLAS_AVX2", "0", 1);  // the 128-bit kernel
             float alpha = 1, beta = 0;
             EXPECT(cublasGemmStridedBatchedEx(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &alpha, reinterpret_cast<void*>(da), CUDA_R_32F, m, 0,
                                               reinterpret_cast<void*>(db), CUDA_R_32F, k, 0, &beta, reinterpret_cast<void*>(dc), CUDA_R_32F,
                                               m, 0, 1, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS);
             EXPECT(cuStreamSynchronize(g_stream) == CUDA_SUCCESS);
             results.push_back(DownloadValues<float>(dc, static_cast<size_t>(m) * n));
         }
         for (const auto& r : results) EXPECT(memcmp(r.data(), results[0].data(), r.size() * 4) == 0);
     }},
    {"gemm f32 fast TF32 matches a reference on TF32-rounded inputs", [] {
         CheckGemm(With([](GemmCase& g) { g.compute = CUBLAS_COMPUTE_32F_FAST_TF32; g.ta = CUBLAS_OP_T; g.beta = 0.5; g.batch = 2; }));
     }},
    {"gemm TF32 rounds A and B to 10 mantissa bits, nearest-even; 32F does not", [] {
         const float tiny = std::ldexp(1.0f, -12), tie = std::ldexp(1.0f, -11);
         EXPECT((Dot<float, float, float>(CUDA_R_32F, CUDA_R_32F, CUBLAS_COMPUTE_32F, {1 + tiny}, {1}, 1) == 1 + tiny));
         EXPECT((Dot<float, float, float>(CUDA_R_32F, CUDA_R_32F, CUBLAS_COMPUTE_32F_FAST_TF32, {1 + tiny}, {1}, 1) == 1));
         EXPECT((Dot<float, float, float>(CUDA_R_32F, CUDA_R_32F, CUBLAS_COMPUTE_32F_FAST_TF32, {1 + tie}, {1}, 1) == 1));
         EXPECT((Dot<float, float, float>(CUDA_R_32F, CUDA_R_32F, CUBLAS_COMPUTE_32F_FAST_TF32, {1 + 3 * tie}, {1}, 1) == 1 + 4 * tie));
         EXPECT((Dot<float, float, float>(CUDA_R_32F, CUDA_R_32F, CUBLAS_COMPUTE_32F_FAST_TF32, {1}, {1 + 3 * tie}, 1) == 1 + 4 * tie));
         // Accumulation stays in float: 1 + 2⁻¹⁰ (exact in TF32) summed 3 times.
         const float step = 1 + std::ldexp(1.0f, -10);
         EXPECT((Dot<float, float, float>(CUDA_R_32F, CUDA_R_32F, CUBLAS_COMPUTE_32F_FAST_TF32, {step, step, step}, {1, 1, 1}, 1) == 3 * step));
     }},
    {"gemm f64", [] {
         CheckGemm(With([](GemmCase& g) { g.ab = g.c = CUDA_R_64F; g.compute = CUBLAS_COMPUTE_64F; g.ta = CUBLAS_OP_T; g.alpha = 0.3; g.beta = -2; g.batch = 3; g.pad_c = 2; }));
         CheckGemm(With([](GemmCase& g) { g.ab = g.c = CUDA_R_64F; g.compute = CUBLAS_COMPUTE_64F; g.tb = CUBLAS_OP_T; g.nan_c = true; }));
     }},
    {"gemm f16 in, f16 out, f32 compute", [] {
         CheckGemm(With([](GemmCase& g) { g.ab = g.c = CUDA_R_16F; g.ta = CUBLAS_OP_T; g.beta = 0.5; g.batch = 2; g.pad_a = 1; }));
         CheckGemm(With([](GemmCase& g) { g.ab = g.c = CUDA_R_16F; g.tb = CUBLAS_OP_T; g.nan_c = true; }));
     }},
    {"gemm bf16 in, bf16 out, f32 compute", [] {
         CheckGemm(With([](GemmCase& g) { g.ab = g.c = CUDA_R_16BF; g.ta = g.tb = CUBLAS_OP_T; g.beta = -1; g.batch = 3; g.gap = 2; }));
         CheckGemm(With([](GemmCase& g) { g.ab = g.c = CUDA_R_16BF; g.nan_c = true; }));
     }},
    {"gemm f16 and bf16 in, f32 out", [] {
         CheckGemm(With([](GemmCase& g) { g.ab = CUDA_R_16F; g.beta = 0.5; }));
         CheckGemm(With([](GemmCase& g) { g.ab = CUDA_R_16BF; g.tb = CUBLAS_OP_T; }));
     }},
    {"gemm f16 output rounds to nearest-even (ties, overflow, subnormals)", [] {
         const std::vector<uint16_t> one{Half(1)};
         auto f16 = [&](float alpha) { return Dot<uint16_t, uint16_t, float>(CUDA_R_16F, CUDA_R_16F, CUBLAS_COMPUTE_32F, one, one, alpha); };
         const float u = std::ldexp(1.0f, -11);
         EXPECT(f16(1 + u) == Half(1));              // tie: to the even 1
         EXPECT(f16(1 + 3 * u) == Half(1 + 4 * u));  // tie: to the even 1 + 2⁻⁸
         EXPECT(f16(1 + 1.5f * u) == Half(1 + 2 * u));
         EXPECT(f16(70000) == 0x7C00);               // overflow: infinity
         EXPECT(f16(-65519) == Half(-65504));        // below the rounding threshold: the largest half
         EXPECT(f16(std::ldexp(1.0f, -20)) == 16);   // subnormal, exact
         EXPECT(f16(std::ldexp(3.0f, -26)) == 1);    // 0.75 of the smallest subnormal: rounds up
         EXPECT(f16(std::ldexp(1.0f, -25)) == 0);    // half of it: tie to even 0
         EXPECT(f16(std::ldexp(3.0f, -25)) == 2);    // 1.5 of it: tie to even 2
         for (int i = 0; i < 2000; ++i) {
             const float v = static_cast<float>(Random() * std::ldexp(1.0, static_cast<int>(Random() * 20)));
             EXPECT(FromHalf(f16(v)) == FromHalf(Half(v)));
         }
     }},
    {"gemm bf16 output rounds to nearest-even", [] {
         const std::vector<uint16_t> one{0x3F80};
         auto bf = [&](float alpha) { return Dot<uint16_t, uint16_t, float>(CUDA_R_16BF, CUDA_R_16BF, CUBLAS_COMPUTE_32F, one, one, alpha); };
         const float u = std::ldexp(1.0f, -8);
         EXPECT(FromBf16(bf(1 + u)) == 1);
         EXPECT(FromBf16(bf(1 + 3 * u)) == 1 + 4 * u);
         EXPECT(FromBf16(bf(1 + 1.25f * u)) == 1 + 2 * u);
         EXPECT(FromBf16(bf(-1 - 1.25f * u)) == -1 - 2 * u);
         EXPECT(bf(3.39e38f) == 0x7F7F);  // the largest bf16
         EXPECT(bf(3.4e38f) == 0x7F80);   // beyond it by more than half a step: infinity
     }},
    {"gemm reads alpha and beta when called, not when the work runs", [] {
         cublasHandle_t h = NewCublas();
         CUdeviceptr a = UploadValues(std::vector<float>{2}), b = UploadValues(std::vector<float>{3}), c = UploadValues(std::vector<float>{1});
         float alpha = 1, beta = 1;
         EXPECT(cublasGemmStridedBatchedEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &alpha, reinterpret_cast<void*>(a), CUDA_R_32F, 1, 0,
                                           reinterpret_cast<void*>(b), CUDA_R_32F, 1, 0, &beta, reinterpret_cast<void*>(c), CUDA_R_32F, 1, 0,
                                           1, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS);
         alpha = 100;
         beta = 100;
         EXPECT(cuStreamSynchronize(g_stream) == CUDA_SUCCESS);
         EXPECT(DownloadValues<float>(c, 1)[0] == 7);
     }},
    {"gemm runs on the handle's stream, in order, at synchronisation", [] {
         cublasHandle_t h = NewCublas();
         CUdeviceptr a = UploadValues(std::vector<float>{2}), b = UploadValues(std::vector<float>{3}), c = UploadValues(std::vector<float>{1});
         float alpha = 1, beta = 1;
         for (int i = 0; i < 3; ++i)
             EXPECT(cublasGemmStridedBatchedEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &alpha, reinterpret_cast<void*>(a), CUDA_R_32F, 1, 0,
                                               reinterpret_cast<void*>(b), CUDA_R_32F, 1, 0, &beta, reinterpret_cast<void*>(c), CUDA_R_32F, 1,
                                               0, 1, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS);
         EXPECT(*reinterpret_cast<float*>(c) == 1);  // device memory is host memory here; nothing has run yet
         EXPECT(cuStreamSynchronize(g_stream) == CUDA_SUCCESS);
         EXPECT(DownloadValues<float>(c, 1)[0] == 19);
     }},
    {"gemm of an empty shape (m, n or batchCount 0) does nothing", [] {
         Args x = ValidArgs();
         x.a = x.b = x.c = 0;  // not read
         x.m = 0;
         EXPECT(x.Call() == CUBLAS_STATUS_SUCCESS);
         x.m = 4;
         x.n = 0;
         EXPECT(x.Call() == CUBLAS_STATUS_SUCCESS);
         x.n = 4;
         x.batch = 0;
         EXPECT(x.Call() == CUBLAS_STATUS_SUCCESS);
         EXPECT(cuStreamSynchronize(g_stream) == CUDA_SUCCESS);
     }},
    // ---- cuBLAS: statuses ----
    {"cublas handles: null, unknown and destroyed handles are not initialized", [] {
         EXPECT(cublasCreate(nullptr) == CUBLAS_STATUS_INVALID_VALUE);
         Args x = ValidArgs();
         EXPECT(x.Call() == CUBLAS_STATUS_SUCCESS);
         EXPECT(cuStreamSynchronize(g_stream) == CUDA_SUCCESS);
         cublasHandle_t h = x.h;
         EXPECT(cublasDestroy(h) == CUBLAS_STATUS_SUCCESS);
         EXPECT(x.Call() == CUBLAS_STATUS_NOT_INITIALIZED);
         EXPECT(cublasDestroy(h) == CUBLAS_STATUS_NOT_INITIALIZED);
         EXPECT(cublasSetStream(h, g_stream) == CUBLAS_STATUS_NOT_INITIALIZED);
         EXPECT(cublasDestroy(nullptr) == CUBLAS_STATUS_NOT_INITIALIZED);
         x.h = nullptr;
         EXPECT(x.Call() == CUBLAS_STATUS_NOT_INITIALIZED);
         int bogus = 0;
         x.h = reinterpret_cast<cublasHandle_t>(&bogus);
         EXPECT(x.Call() == CUBLAS_STATUS_NOT_INITIALIZED);
     }},
    {"cublasSetStream: a destroyed stream is refused; 0 is the default stream", [] {
         cublasHandle_t h = NewCublas();
         CUstream s;
         EXPECT(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING) == CUDA_SUCCESS);
         EXPECT(cuStreamDestroy(s) == CUDA_SUCCESS);
         EXPECT(cublasSetStream(h, s) == CUBLAS_STATUS_INVALID_VALUE);
         EXPECT(cublasSetStream(h, nullptr) == CUBLAS_STATUS_SUCCESS);
     }},
    {"gemm invalid values: negative sizes, bad ops, short leading dimensions, null scalars", [] {
         Args x = ValidArgs();
         auto with = [&](std::function<void(Args&)> f) {
             Args y = x;
             f(y);
             return y.Call();
         };
         EXPECT(with([](Args& y) { y.m = -1; }) == CUBLAS_STATUS_INVALID_VALUE);
         EXPECT(with([](Args& y) { y.n = -1; }) == CUBLAS_STATUS_INVALID_VALUE);
         EXPECT(with([](Args& y) { y.k = -1; }) == CUBLAS_STATUS_INVALID_VALUE);
         EXPECT(with([](Args& y) { y.batch = -1; }) == CUBLAS_STATUS_INVALID_VALUE);
         EXPECT(with([](Args& y) { y.ta = static_cast<cublasOperation_t>(7); }) == CUBLAS_STATUS_INVALID_VALUE);
         EXPECT(with([](Args& y) { y.tb = static_cast<cublasOperation_t>(-1); }) == CUBLAS_STATUS_INVALID_VALUE);
         EXPECT(with([](Args& y) { y.lda = 3; }) == CUBLAS_STATUS_INVALID_VALUE);                        // N: lda >= m
         EXPECT(with([](Args& y) { y.ta = CUBLAS_OP_T; y.m = 2; y.lda = 3; }) == CUBLAS_STATUS_INVALID_VALUE);  // T: lda >= k
         EXPECT(with([](Args& y) { y.ta = CUBLAS_OP_T; y.m = 8; y.lda = 4; y.ldc = 8; }) == CUBLAS_STATUS_SUCCESS);
         EXPECT(with([](Args& y) { y.ldb = 3; }) == CUBLAS_STATUS_INVALID_VALUE);                        // N: ldb >= k
         EXPECT(with([](Args& y) { y.tb = CUBLAS_OP_T; y.k = 2; y.ldb = 3; }) == CUBLAS_STATUS_INVALID_VALUE);  // T: ldb >= n
         EXPECT(with([](Args& y) { y.ldc = 3; }) == CUBLAS_STATUS_INVALID_VALUE);                        // ldc >= m
         EXPECT(with([](Args& y) { y.m = 0; y.lda = 0; }) == CUBLAS_STATUS_INVALID_VALUE);               // >= max(1, ·)
         EXPECT(with([](Args& y) { y.alpha = nullptr; }) == CUBLAS_STATUS_INVALID_VALUE);
         EXPECT(with([](Args& y) { y.beta = nullptr; }) == CUBLAS_STATUS_INVALID_VALUE);
         EXPECT(cuStreamSynchronize(g_stream) == CUDA_SUCCESS);
     }},
    {"gemm unsupported combinations of types, compute types and algorithms", [] {
         Args x = ValidArgs();
         auto with = [&](std::function<void(Args&)> f) {
             Args y = x;
             f(y);
             return y.Call();
         };
         EXPECT(with([](Args& y) { y.ct = CUDA_R_64F; }) == CUBLAS_STATUS_NOT_SUPPORTED);
         EXPECT(with([](Args& y) { y.bt = CUDA_R_16F; }) == CUBLAS_STATUS_NOT_SUPPORTED);
         EXPECT(with([](Args& y) { y.compute = CUBLAS_COMPUTE_64F; }) == CUBLAS_STATUS_NOT_SUPPORTED);
         EXPECT(with([](Args& y) { y.at = y.bt = y.ct = CUDA_R_64F; }) == CUBLAS_STATUS_NOT_SUPPORTED);  // 64F needs COMPUTE_64F
         EXPECT(with([](Args& y) { y.at = y.bt = CUDA_R_16F; y.compute = CUBLAS_COMPUTE_32F_FAST_TF32; }) == CUBLAS_STATUS_NOT_SUPPORTED);
         EXPECT(with([](Args& y) { y.at = y.bt = CUDA_R_16F; y.ct = CUDA_R_16BF; }) == CUBLAS_STATUS_NOT_SUPPORTED);
         EXPECT(with([](Args& y) { y.compute = static_cast<cublasComputeType_t>(CUDA_R_32F); }) == CUBLAS_STATUS_NOT_SUPPORTED);
         EXPECT(with([](Args& y) { y.algo = static_cast<cublasGemmAlgo_t>(42); }) == CUBLAS_STATUS_NOT_SUPPORTED);
         EXPECT(with([](Args& y) { y.algo = CUBLAS_GEMM_DEFAULT_TENSOR_OP; }) == CUBLAS_STATUS_SUCCESS);
         EXPECT(with([](Args& y) { y.compute = CUBLAS_COMPUTE_32F_PEDANTIC; }) == CUBLAS_STATUS_SUCCESS);
         EXPECT(with([](Args& y) { y.at = y.bt = y.ct = CUDA_R_64F; y.compute = CUBLAS_COMPUTE_64F; }) == CUBLAS_STATUS_SUCCESS);
         EXPECT(cuStreamSynchronize(g_stream) == CUDA_SUCCESS);
     }},
    {"cublasGetStatusName names the statuses", [] {
         EXPECT(strcmp(cublasGetStatusName(CUBLAS_STATUS_SUCCESS), "CUBLAS_STATUS_SUCCESS") == 0);
         EXPECT(strcmp(cublasGetStatusName(CUBLAS_STATUS_INVALID_VALUE), "CUBLAS_STATUS_INVALID_VALUE") == 0);
         EXPECT(strcmp(cublasGetStatusName(CUBLAS_STATUS_NOT_SUPPORTED), "CUBLAS_STATUS_NOT_SUPPORTED") == 0);
         EXPECT(strcmp(cublasGetStatusName(CUBLAS_STATUS_NOT_INITIALIZED), "CUBLAS_STATUS_NOT_INITIALIZED") == 0);
     }},
    // ---- cuBLAS: faults when the work runs ----
    {"gemm: B one element past its allocation is an illegal address when the work runs", [] {
         cublasHandle_t h = NewCublas();
         CUdeviceptr a = Alloc(16 * 4), b = Alloc(16 * 4 - 4), c = Alloc(16 * 4);
         float alpha = 1, beta = 0;
         EXPECT(cublasGemmStridedBatchedEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 4, 4, 4, &alpha, reinterpret_cast<void*>(a), CUDA_R_32F, 4, 0,
                                           reinterpret_cast<void*>(b), CUDA_R_32F, 4, 0, &beta, reinterpret_cast<void*>(c), CUDA_R_32F, 4, 0,
                                           1, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS);
         EXPECT(cuStreamSynchronize(g_stream) == CUDA_ERROR_ILLEGAL_ADDRESS);
         EXPECT(LastErrorHas("cublasGemmStridedBatchedEx"));
         EXPECT(LastErrorHas("B ("));
     }},
    {"gemm: the last batch entry of C past its allocation is an illegal address", [] {
         cublasHandle_t h = NewCublas();
         CUdeviceptr a = Alloc(4 * 4), b = Alloc(4 * 4), c = Alloc(3 * 4 * 4);
         float alpha = 1, beta = 0;
         EXPECT(cublasGemmStridedBatchedEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &alpha, reinterpret_cast<void*>(a), CUDA_R_32F, 2, 0,
                                           reinterpret_cast<void*>(b), CUDA_R_32F, 2, 0, &beta, reinterpret_cast<void*>(c), CUDA_R_32F, 2, 5,
                                           3, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS);
         EXPECT(cuStreamSynchronize(g_stream) == CUDA_ERROR_ILLEGAL_ADDRESS);
         EXPECT(LastErrorHas("C ("));
     }},
    {"gemm: a transposed A with a long leading dimension past its allocation is an illegal address", [] {
         cublasHandle_t h = NewCublas();
         // op(A) = Aᵀ is 3 × 2, so A is 2 × 3 with lda 8: its last element is at 2 · 8 + 1.
         CUdeviceptr a = Alloc(17 * 4), b = Alloc(6 * 4), c = Alloc(9 * 4);
         float alpha = 1, beta = 0;
         EXPECT(cublasGemmStridedBatchedEx(h, CUBLAS_OP_T, CUBLAS_OP_N, 3, 3, 2, &alpha, reinterpret_cast<void*>(a), CUDA_R_32F, 8, 0,
                                           reinterpret_cast<void*>(b), CUDA_R_32F, 2, 0, &beta, reinterpret_cast<void*>(c), CUDA_R_32F, 3, 0,
                                           1, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS);
         EXPECT(cuStreamSynchronize(g_stream) == CUDA_ERROR_ILLEGAL_ADDRESS);
         EXPECT(LastErrorHas("A ("));
     }},
    {"gemm: the exact extents are accepted (no false alarms)", [] {
         cublasHandle_t h = NewCublas();
         CUdeviceptr a = Alloc(18 * 4), b = Alloc(6 * 4), c = Alloc((2 * 5 + 9) * 4);
         float alpha = 1, beta = 0;
         EXPECT(cublasGemmStridedBatchedEx(h, CUBLAS_OP_T, CUBLAS_OP_N, 3, 3, 2, &alpha, reinterpret_cast<void*>(a), CUDA_R_32F, 8, 0,
                                           reinterpret_cast<void*>(b), CUDA_R_32F, 2, 0, &beta, reinterpret_cast<void*>(c), CUDA_R_32F, 3, 5,
                                           3, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS);
         EXPECT(cuStreamSynchronize(g_stream) == CUDA_SUCCESS);
     }},
    {"gemm: a freed operand is an illegal address", [] {
         cublasHandle_t h = NewCublas();
         CUdeviceptr a = Alloc(16), b = Alloc(16), c = Alloc(16);
         EXPECT(cuMemFree(a) == CUDA_SUCCESS);
         float alpha = 1, beta = 0;
         EXPECT(cublasGemmStridedBatchedEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &alpha, reinterpret_cast<void*>(a), CUDA_R_32F, 2, 0,
                                           reinterpret_cast<void*>(b), CUDA_R_32F, 2, 0, &beta, reinterpret_cast<void*>(c), CUDA_R_32F, 2, 0,
                                           1, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS);
         EXPECT(cuStreamSynchronize(g_stream) == CUDA_ERROR_ILLEGAL_ADDRESS);
     }},
    // ---- cuSPARSE: results ----
    {"spmm A·B (row-major B and C)", [] { CheckSpMM(kN, kN, kRow, kRow, 1, 0, false); }},
    {"spmm Aᵀ·B with alpha and beta", [] { CheckSpMM(kT, kN, kRow, kRow, 0.5f, -1.5f, false); }},
    {"spmm A·Bᵀ", [] { CheckSpMM(kN, kT, kRow, kRow, -2, 0.25f, false); }},
    {"spmm Aᵀ·Bᵀ", [] { CheckSpMM(kT, kT, kRow, kRow, 1, 1, false); }},
    {"spmm column-major and mixed layouts", [] {
         CheckSpMM(kN, kN, kCol, kCol, 1, 0.5f, false);
         CheckSpMM(kT, kT, kCol, kRow, 1, 0, false);
         CheckSpMM(kN, kT, kRow, kCol, 0.75f, 0, false);
         CheckSpMM(kT, kN, kCol, kRow, 1, 2, false);
     }},
    {"spmm beta 0 still reads C (cuSPARSE does not document otherwise): NaN in C propagates", [] {
         CheckSpMM(kN, kN, kRow, kRow, 1, 0, true);
         CheckSpMM(kT, kN, kRow, kRow, 1, 0, true);
     }},
    {"spmm f64", [] {
         cusparseHandle_t h = NewCusparse();
         // A = [[1, 0], [0, 2], [3, 4]]; B = [[1, 2], [3, 4]] (row-major): A·B = [[1, 2], [6, 8], [15, 22]]
         CUdeviceptr off = UploadValues(std::vector<int64_t>{0, 1, 2, 4}), col = UploadValues(std::vector<int64_t>{0, 1, 0, 1}),
                     val = UploadValues(std::vector<double>{1, 2, 3, 4}), b = UploadValues(std::vector<double>{1, 2, 3, 4}),
                     c = UploadValues(std::vector<double>(6, 0.0));
         cusparseSpMatDescr_t a;
         EXPECT(cusparseCreateCsr(&a, 3, 2, 4, reinterpret_cast<void*>(off), reinterpret_cast<void*>(col), reinterpret_cast<void*>(val),
                                  CUSPARSE_INDEX_64I, CUSPARSE_INDEX_64I, CUSPARSE_INDEX_BASE_ZERO, CUDA_R_64F) == CUSPARSE_STATUS_SUCCESS);
         cusparseDnMatDescr_t db, dc;
         EXPECT(cusparseCreateDnMat(&db, 2, 2, 2, reinterpret_cast<void*>(b), CUDA_R_64F, kRow) == CUSPARSE_STATUS_SUCCESS);
         EXPECT(cusparseCreateDnMat(&dc, 3, 2, 2, reinterpret_cast<void*>(c), CUDA_R_64F, kRow) == CUSPARSE_STATUS_SUCCESS);
         double alpha = 1, beta = 0;
         EXPECT(cusparseSpMM(h, kN, kN, &alpha, a, db, &beta, dc, CUDA_R_64F, CUSPARSE_SPMM_CSR_ALG2, nullptr) == CUSPARSE_STATUS_SUCCESS);
         EXPECT(cuStreamSynchronize(g_stream) == CUDA_SUCCESS);
         EXPECT((DownloadValues<double>(c, 6) == std::vector<double>{1, 2, 6, 8, 15, 22}));
     }},
    {"spmm with one-based indices", [] {
         cusparseHandle_t h = NewCusparse();
         CUdeviceptr off = UploadValues(std::vector<int>{1, 2, 3, 5}), col = UploadValues(std::vector<int>{1, 2, 1, 2}),
                     val = UploadValues(std::vector<float>{1, 2, 3, 4}), b = UploadValues(std::vector<float>{1, 2, 3, 4}),
                     c = UploadValues(std::vector<float>(6, 0));
         cusparseSpMatDescr_t a;
         EXPECT(cusparseCreateCsr(&a, 3, 2, 4, reinterpret_cast<void*>(off), reinterpret_cast<void*>(col), reinterpret_cast<void*>(val),
                                  CUSPARSE_INDEX_32I, CUSPARSE_INDEX_32I, CUSPARSE_INDEX_BASE_ONE, CUDA_R_32F) == CUSPARSE_STATUS_SUCCESS);
         cusparseDnMatDescr_t db, dc;
         EXPECT(cusparseCreateDnMat(&db, 2, 2, 2, reinterpret_cast<void*>(b), CUDA_R_32F, kRow) == CUSPARSE_STATUS_SUCCESS);
         EXPECT(cusparseCreateDnMat(&dc, 3, 2, 2, reinterpret_cast<void*>(c), CUDA_R_32F, kRow) == CUSPARSE_STATUS_SUCCESS);
         float alpha = 1, beta = 0;
         EXPECT(cusparseSpMM(h, kN, kN, &alpha, a, db, &beta, dc, CUDA_R_32F, CUSPARSE_SPMM_ALG_DEFAULT, nullptr) == CUSPARSE_STATUS_SUCCESS);
         EXPECT(cuStreamSynchronize(g_stream) == CUDA_SUCCESS);
         EXPECT((DownloadValues<float>(c, 6) == std::vector<float>{1, 2, 6, 8, 15, 22}));
     }},
    {"sddmm A·B on C's pattern", [] { CheckSddmm(kN, kN, kRow, kRow, 1, 0, false); }},
    {"sddmm A·Bᵀ (Frugal's sampled gradient) with alpha and beta", [] { CheckSddmm(kN, kT, kRow, kRow, 0.5f, 2, false); }},
    {"sddmm Aᵀ·B and Aᵀ·Bᵀ", [] {
         CheckSddmm(kT, kN, kRow, kRow, 1, -1, false);
         CheckSddmm(kT, kT, kRow, kRow, -1, 0, false);
     }},
    {"sddmm column-major and mixed layouts", [] {
         CheckSddmm(kN, kN, kCol, kCol, 1, 0.5f, false);
         CheckSddmm(kT, kN, kCol, kRow, 1, 0, false);
         CheckSddmm(kN, kT, kRow, kCol, 2, 0, false);
     }},
    {"sddmm beta 0 still reads C's values (cuSPARSE does not document otherwise): NaN propagates", [] { CheckSddmm(kN, kT, kRow, kRow, 1, 0, true); }},
    // ---- cuSPARSE: statuses ----
    {"cusparse handles: null, unknown and destroyed handles are not initialized", [] {
         EXPECT(cusparseCreate(nullptr) == CUSPARSE_STATUS_INVALID_VALUE);
         SpMMSetup x = NewSpMM();
         EXPECT(x.Call() == CUSPARSE_STATUS_SUCCESS);
         EXPECT(cuStreamSynchronize(g_stream) == CUDA_SUCCESS);
         EXPECT(cusparseDestroy(x.h) == CUSPARSE_STATUS_SUCCESS);
         EXPECT(x.Call() == CUSPARSE_STATUS_NOT_INITIALIZED);
         EXPECT(cusparseDestroy(x.h) == CUSPARSE_STATUS_NOT_INITIALIZED);
         EXPECT(cusparseSetStream(x.h, g_stream) == CUSPARSE_STATUS_NOT_INITIALIZED);
         EXPECT(cusparseDestroy(nullptr) == CUSPARSE_STATUS_NOT_INITIALIZED);
         CUstream s;
         cusparseHandle_t h = NewCusparse();
         EXPECT(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING) == CUDA_SUCCESS);
         EXPECT(cuStreamDestroy(s) == CUDA_SUCCESS);
         EXPECT(cusparseSetStream(h, s) == CUSPARSE_STATUS_INVALID_VALUE);
     }},
    {"cusparse descriptors: invalid values, unsupported index types, destroyed descriptors", [] {
         CUdeviceptr p = Alloc(256);
         void* v = reinterpret_cast<void*>(p);
         cusparseSpMatDescr_t s;
         auto csr = [&](int64_t rows, int64_t cols, int64_t nnz, void* off, cusparseIndexType_t it, cusparseIndexBase_t base) {
             return cusparseCreateCsr(&s, rows, cols, nnz, off, v, v, it, it, base, CUDA_R_32F);
         };
         EXPECT(csr(-1, 2, 2, v, CUSPARSE_INDEX_32I, CUSPARSE_INDEX_BASE_ZERO) == CUSPARSE_STATUS_INVALID_VALUE);
         EXPECT(csr(2, -1, 2, v, CUSPARSE_INDEX_32I, CUSPARSE_INDEX_BASE_ZERO) == CUSPARSE_STATUS_INVALID_VALUE);
         EXPECT(csr(2, 2, -1, v, CUSPARSE_INDEX_32I, CUSPARSE_INDEX_BASE_ZERO) == CUSPARSE_STATUS_INVALID_VALUE);
         EXPECT(csr(2, 2, 2, nullptr, CUSPARSE_INDEX_32I, CUSPARSE_INDEX_BASE_ZERO) == CUSPARSE_STATUS_INVALID_VALUE);
         EXPECT(csr(2, 2, 2, v, CUSPARSE_INDEX_32I, static_cast<cusparseIndexBase_t>(5)) == CUSPARSE_STATUS_INVALID_VALUE);
         EXPECT(csr(2, 2, 2, v, static_cast<cusparseIndexType_t>(9), CUSPARSE_INDEX_BASE_ZERO) == CUSPARSE_STATUS_INVALID_VALUE);
         EXPECT(csr(2, 2, 2, v, CUSPARSE_INDEX_16U, CUSPARSE_INDEX_BASE_ZERO) == CUSPARSE_STATUS_NOT_SUPPORTED);
         EXPECT(csr(int64_t{1} << 32, 2, 2, v, CUSPARSE_INDEX_32I, CUSPARSE_INDEX_BASE_ZERO) == CUSPARSE_STATUS_INVALID_VALUE);
         EXPECT(cusparseCreateCsr(nullptr, 2, 2, 2, v, v, v, CUSPARSE_INDEX_32I, CUSPARSE_INDEX_32I, CUSPARSE_INDEX_BASE_ZERO, CUDA_R_32F) ==
                CUSPARSE_STATUS_INVALID_VALUE);
         EXPECT(csr(2, 2, 2, v, CUSPARSE_INDEX_32I, CUSPARSE_INDEX_BASE_ZERO) == CUSPARSE_STATUS_SUCCESS);
         EXPECT(cusparseDestroySpMat(s) == CUSPARSE_STATUS_SUCCESS);
         EXPECT(cusparseDestroySpMat(s) == CUSPARSE_STATUS_INVALID_VALUE);
         EXPECT(cusparseDestroySpMat(nullptr) == CUSPARSE_STATUS_INVALID_VALUE);
         cusparseDnMatDescr_t d;
         EXPECT(cusparseCreateDnMat(&d, 3, 4, 3, v, CUDA_R_32F, kRow) == CUSPARSE_STATUS_INVALID_VALUE);  // row-major: ld >= cols
         EXPECT(cusparseCreateDnMat(&d, 4, 3, 3, v, CUDA_R_32F, kCol) == CUSPARSE_STATUS_INVALID_VALUE);  // column-major: ld >= rows
         EXPECT(cusparseCreateDnMat(&d, -1, 3, 3, v, CUDA_R_32F, kRow) == CUSPARSE_STATUS_INVALID_VALUE);
         EXPECT(cusparseCreateDnMat(&d, 3, 3, 3, v, CUDA_R_32F, static_cast<cusparseOrder_t>(0)) == CUSPARSE_STATUS_INVALID_VALUE);
         EXPECT(cusparseCreateDnMat(&d, 3, 3, 3, nullptr, CUDA_R_32F, kRow) == CUSPARSE_STATUS_INVALID_VALUE);
         EXPECT(cusparseCreateDnMat(&d, 3, 4, 4, v, CUDA_R_32F, kRow) == CUSPARSE_STATUS_SUCCESS);
         EXPECT(cusparseDestroyDnMat(d) == CUSPARSE_STATUS_SUCCESS);
         EXPECT(cusparseDestroyDnMat(d) == CUSPARSE_STATUS_INVALID_VALUE);
         EXPECT(cusparseCreateDnMat(&d, 4, 3, 4, v, CUDA_R_32F, kCol) == CUSPARSE_STATUS_SUCCESS);
     }},
    {"spmm invalid values and unsupported types", [] {
         SpMMSetup x = NewSpMM();
         auto spmm = [&](cusparseOperation_t opA, cusparseOperation_t opB, cusparseSpMatDescr_t a, cusparseDnMatDescr_t b, cusparseDnMatDescr_t c,
                         cudaDataType compute, cusparseSpMMAlg_t alg) {
             return cusparseSpMM(x.h, opA, opB, &x.alpha, a, b, &x.beta, c, compute, alg, nullptr);
         };
         EXPECT(spmm(kN, kN, x.a.d, x.b, x.c, CUDA_R_32F, CUSPARSE_SPMM_ALG_DEFAULT) == CUSPARSE_STATUS_SUCCESS);
         EXPECT(spmm(kT, kN, x.a.d, x.b, x.c, CUDA_R_32F, CUSPARSE_SPMM_ALG_DEFAULT) == CUSPARSE_STATUS_INVALID_VALUE);  // Aᵀ is 5 × 6
         EXPECT(spmm(kN, kT, x.a.d, x.b, x.c, CUDA_R_32F, CUSPARSE_SPMM_ALG_DEFAULT) == CUSPARSE_STATUS_INVALID_VALUE);  // Bᵀ is 3 × 5
         EXPECT(spmm(kN, kN, x.a.d, x.c, x.b, CUDA_R_32F, CUSPARSE_SPMM_ALG_DEFAULT) == CUSPARSE_STATUS_INVALID_VALUE);
         EXPECT(spmm(static_cast<cusparseOperation_t>(5), kN, x.a.d, x.b, x.c, CUDA_R_32F, CUSPARSE_SPMM_ALG_DEFAULT) == CUSPARSE_STATUS_INVALID_VALUE);
         EXPECT(spmm(kN, kN, nullptr, x.b, x.c, CUDA_R_32F, CUSPARSE_SPMM_ALG_DEFAULT) == CUSPARSE_STATUS_INVALID_VALUE);
         EXPECT(spmm(kN, kN, x.a.d, nullptr, x.c, CUDA_R_32F, CUSPARSE_SPMM_ALG_DEFAULT) == CUSPARSE_STATUS_INVALID_VALUE);
         EXPECT(spmm(kN, kN, x.a.d, x.b, x.c, CUDA_R_64F, CUSPARSE_SPMM_ALG_DEFAULT) == CUSPARSE_STATUS_NOT_SUPPORTED);
         EXPECT(spmm(kN, kN, x.a.d, x.b, x.c, CUDA_R_32F, CUSPARSE_SPMM_COO_ALG1) == CUSPARSE_STATUS_NOT_SUPPORTED);
         EXPECT(spmm(kN, kN, x.a.d, x.b, x.c, CUDA_R_32F, CUSPARSE_SPMM_CSR_ALG1) == CUSPARSE_STATUS_SUCCESS);
         EXPECT(cusparseSpMM(x.h, kN, kN, nullptr, x.a.d, x.b, &x.beta, x.c, CUDA_R_32F, CUSPARSE_SPMM_ALG_DEFAULT, nullptr) ==
                CUSPARSE_STATUS_INVALID_VALUE);
         cusparseDnMatDescr_t f64;
         EXPECT(cusparseCreateDnMat(&f64, 5, 3, 3, reinterpret_cast<void*>(x.pb), CUDA_R_64F, kRow) == CUSPARSE_STATUS_SUCCESS);
         EXPECT(spmm(kN, kN, x.a.d, f64, x.c, CUDA_R_32F, CUSPARSE_SPMM_ALG_DEFAULT) == CUSPARSE_STATUS_NOT_SUPPORTED);
         cusparseDnMatDescr_t gone = x.b;
         EXPECT(cusparseDestroyDnMat(gone) == CUSPARSE_STATUS_SUCCESS);
         EXPECT(spmm(kN, kN, x.a.d, gone, x.c, CUDA_R_32F, CUSPARSE_SPMM_ALG_DEFAULT) == CUSPARSE_STATUS_INVALID_VALUE);
         EXPECT(cuStreamSynchronize(g_stream) == CUDA_SUCCESS);
     }},
    {"spmm buffer: none without transposing A; with Aᵀ a buffer of the size asked for is required", [] {
         SpMMSetup x = NewSpMM();
         size_t bytes = 1;
         EXPECT(cusparseSpMM_bufferSize(x.h, kN, kN, &x.alpha, x.a.d, x.b, &x.beta, x.c, CUDA_R_32F, CUSPARSE_SPMM_ALG_DEFAULT, &bytes) ==
                CUSPARSE_STATUS_SUCCESS);
         EXPECT(bytes == 0);
         EXPECT(cusparseSpMM_bufferSize(x.h, kN, kN, &x.alpha, x.a.d, x.b, &x.beta, x.c, CUDA_R_32F, CUSPARSE_SPMM_ALG_DEFAULT, nullptr) ==
                CUSPARSE_STATUS_INVALID_VALUE);
         // Aᵀ (5 × 6) · B (6 × 3) = C (5 × 3)
         CUdeviceptr pb, pc;
         cusparseDnMatDescr_t b = DescribeDense(RandomDense(6, 3, kRow, 0), &pb), c = DescribeDense(RandomDense(5, 3, kRow, 0), &pc);
         EXPECT(cusparseSpMM_bufferSize(x.h, kT, kN, &x.alpha, x.a.d, b, &x.beta, c, CUDA_R_32F, CUSPARSE_SPMM_ALG_DEFAULT, &bytes) ==
                CUSPARSE_STATUS_SUCCESS);
         EXPECT(bytes > 0);
         auto call = [&](CUdeviceptr buffer) {
             return cusparseSpMM(x.h, kT, kN, &x.alpha, x.a.d, b, &x.beta, c, CUDA_R_32F, CUSPARSE_SPMM_ALG_DEFAULT, reinterpret_cast<void*>(buffer));
         };
         EXPECT(call(0) == CUSPARSE_STATUS_INVALID_VALUE);
         EXPECT(call(Alloc(bytes)) == CUSPARSE_STATUS_SUCCESS);
         EXPECT(cuStreamSynchronize(g_stream) == CUDA_SUCCESS);
         EXPECT(call(Alloc(bytes - 1)) == CUSPARSE_STATUS_SUCCESS);  // too small: found when the work runs
         EXPECT(cuStreamSynchronize(g_stream) == CUDA_ERROR_ILLEGAL_ADDRESS);
         EXPECT(LastErrorHas("externalBuffer"));
     }},
    {"sddmm invalid values and its buffer", [] {
         cusparseHandle_t h = NewCusparse();
         Csr s = RandomCsr(4, 5, 0.5);
         DeviceCsr c = Describe(s);
         CUdeviceptr pa, pb;
         cusparseDnMatDescr_t a = DescribeDense(RandomDense(4, 3, kRow, 0), &pa), b = DescribeDense(RandomDense(3, 5, kRow, 0), &pb);
         float alpha = 1, beta = 0;
         size_t bytes = 0;
         EXPECT(cusparseSDDMM_bufferSize(h, kN, kN, &alpha, a, b, &beta, c.d, CUDA_R_32F, CUSPARSE_SDDMM_ALG_DEFAULT, &bytes) == CUSPARSE_STATUS_SUCCESS);
         EXPECT(bytes > 0);
         CUdeviceptr buffer = Alloc(bytes);
         auto sddmm = [&](cusparseOperation_t opA, cusparseOperation_t opB, cusparseDnMatDescr_t x, cusparseDnMatDescr_t y, cudaDataType t,
                          int alg, CUdeviceptr buf) {
             return cusparseSDDMM(h, opA, opB, &alpha, x, y, &beta, c.d, t, static_cast<cusparseSDDMMAlg_t>(alg), reinterpret_cast<void*>(buf));
         };
         EXPECT(sddmm(kN, kN, a, b, CUDA_R_32F, 0, buffer) == CUSPARSE_STATUS_SUCCESS);
         EXPECT(sddmm(kN, kN, a, b, CUDA_R_32F, 0, 0) == CUSPARSE_STATUS_INVALID_VALUE);
         EXPECT(sddmm(kT, kN, a, b, CUDA_R_32F, 0, buffer) == CUSPARSE_STATUS_INVALID_VALUE);
         EXPECT(sddmm(kN, kT, a, b, CUDA_R_32F, 0, buffer) == CUSPARSE_STATUS_INVALID_VALUE);
         EXPECT(sddmm(kN, kN, b, a, CUDA_R_32F, 0, buffer) == CUSPARSE_STATUS_INVALID_VALUE);
         EXPECT(sddmm(kN, kN, a, b, CUDA_R_64F, 0, buffer) == CUSPARSE_STATUS_NOT_SUPPORTED);
         EXPECT(sddmm(kN, kN, a, b, CUDA_R_32F, 1, buffer) == CUSPARSE_STATUS_NOT_SUPPORTED);
         EXPECT(sddmm(kN, kN, a, nullptr, CUDA_R_32F, 0, buffer) == CUSPARSE_STATUS_INVALID_VALUE);
         EXPECT(cuStreamSynchronize(g_stream) == CUDA_SUCCESS);
     }},
    {"cusparseGetErrorName names the statuses", [] {
         EXPECT(strcmp(cusparseGetErrorName(CUSPARSE_STATUS_SUCCESS), "CUSPARSE_STATUS_SUCCESS") == 0);
         EXPECT(strcmp(cusparseGetErrorName(CUSPARSE_STATUS_INVALID_VALUE), "CUSPARSE_STATUS_INVALID_VALUE") == 0);
         EXPECT(strcmp(cusparseGetErrorName(CUSPARSE_STATUS_NOT_SUPPORTED), "CUSPARSE_STATUS_NOT_SUPPORTED") == 0);
         EXPECT(strcmp(cusparseGetErrorName(CUSPARSE_STATUS_NOT_INITIALIZED), "CUSPARSE_STATUS_NOT_INITIALIZED") == 0);
     }},
    // ---- cuSPARSE: faults when the work runs ----
    {"spmm: a column index outside the matrix is an illegal address", [] {
         SpMMSetup x = NewSpMM();
         std::vector<int> bad = x.s.columns;
         bad[3] = 5;  // A has 5 columns
         CUdeviceptr col = UploadValues(bad);
         cusparseSpMatDescr_t a;
         EXPECT(cusparseCreateCsr(&a, 6, 5, 8, reinterpret_cast<void*>(x.a.offsets), reinterpret_cast<void*>(col), reinterpret_cast<void*>(x.a.values),
                                  CUSPARSE_INDEX_32I, CUSPARSE_INDEX_32I, CUSPARSE_INDEX_BASE_ZERO, CUDA_R_32F) == CUSPARSE_STATUS_SUCCESS);
         x.a.d = a;
         EXPECT(x.Call() == CUSPARSE_STATUS_SUCCESS);
         EXPECT(cuStreamSynchronize(g_stream) == CUDA_ERROR_ILLEGAL_ADDRESS);
         EXPECT(LastErrorHas("cusparseSpMM"));
         EXPECT(LastErrorHas("column index 5 (entry 3, row 3)"));
     }},
    {"spmm: row offsets beyond nnz, or decreasing, are faults", [] {
         for (const std::vector<int>& offsets : {std::vector<int>{0, 2, 3, 3, 5, 6, 9}, std::vector<int>{0, 2, 3, 1, 5, 6, 8}}) {
             pid_t child = fork();
             if (child == 0) {
                 SpMMSetup x = NewSpMM();
                 CUdeviceptr off = UploadValues(offsets);
                 EXPECT(cusparseCreateCsr(&x.a.d, 6, 5, 8, reinterpret_cast<void*>(off), reinterpret_cast<void*>(x.a.columns),
                                          reinterpret_cast<void*>(x.a.values), CUSPARSE_INDEX_32I, CUSPARSE_INDEX_32I, CUSPARSE_INDEX_BASE_ZERO,
                                          CUDA_R_32F) == CUSPARSE_STATUS_SUCCESS);
                 EXPECT(x.Call() == CUSPARSE_STATUS_SUCCESS);
                 EXPECT(cuStreamSynchronize(g_stream) == CUDA_ERROR_ILLEGAL_ADDRESS);
                 EXPECT(LastErrorHas("row offsets: entry"));
                 _exit(0);
             }
             int status = 0;
             waitpid(child, &status, 0);
             EXPECT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
         }
     }},
    {"spmm: a row-offset array one entry short is an illegal address", [] {
         SpMMSetup x = NewSpMM();
         CUdeviceptr off = UploadValues(std::vector<int>{0, 2, 3, 3, 5, 6});  // 6 entries, 7 needed
         EXPECT(cusparseCreateCsr(&x.a.d, 6, 5, 8, reinterpret_cast<void*>(off), reinterpret_cast<void*>(x.a.columns), reinterpret_cast<void*>(x.a.values),
                                  CUSPARSE_INDEX_32I, CUSPARSE_INDEX_32I, CUSPARSE_INDEX_BASE_ZERO, CUDA_R_32F) == CUSPARSE_STATUS_SUCCESS);
         EXPECT(x.Call() == CUSPARSE_STATUS_SUCCESS);
         EXPECT(cuStreamSynchronize(g_stream) == CUDA_ERROR_ILLEGAL_ADDRESS);
         EXPECT(LastErrorHas("matA row offsets"));
     }},
    {"spmm: values shorter than nnz are an illegal address", [] {
         SpMMSetup x = NewSpMM();
         CUdeviceptr val = UploadValues(std::vector<float>(7, 1));
         EXPECT(cusparseCreateCsr(&x.a.d, 6, 5, 8, reinterpret_cast<void*>(x.a.offsets), reinterpret_cast<void*>(x.a.columns), reinterpret_cast<void*>(val),
                                  CUSPARSE_INDEX_32I, CUSPARSE_INDEX_32I, CUSPARSE_INDEX_BASE_ZERO, CUDA_R_32F) == CUSPARSE_STATUS_SUCCESS);
         EXPECT(x.Call() == CUSPARSE_STATUS_SUCCESS);
         EXPECT(cuStreamSynchronize(g_stream) == CUDA_ERROR_ILLEGAL_ADDRESS);
         EXPECT(LastErrorHas("matA values"));
     }},
    {"spmm: a dense B past its allocation is an illegal address", [] {
         SpMMSetup x = NewSpMM();
         CUdeviceptr small = Alloc(5 * 3 * 4 - 4);
         EXPECT(cusparseCreateDnMat(&x.b, 5, 3, 3, reinterpret_cast<void*>(small), CUDA_R_32F, kRow) == CUSPARSE_STATUS_SUCCESS);
         EXPECT(x.Call() == CUSPARSE_STATUS_SUCCESS);
         EXPECT(cuStreamSynchronize(g_stream) == CUDA_ERROR_ILLEGAL_ADDRESS);
         EXPECT(LastErrorHas("matB (dense 5 x 3"));
     }},
    {"sddmm: a column index outside C or a short dense A is an illegal address", [] {
         for (int which = 0; which < 2; ++which) {
             pid_t child = fork();
             if (child == 0) {
                 cusparseHandle_t h = NewCusparse();
                 Csr s{2, 3, {0, 2, 3}, {0, which == 0 ? 3 : 2, 1}, {1, 1, 1}};
                 DeviceCsr c = Describe(s);
                 CUdeviceptr pa = Alloc(which == 1 ? 2 * 4 * 4 - 4 : 2 * 4 * 4), pb = Alloc(4 * 3 * 4);
                 cusparseDnMatDescr_t a, b;
                 EXPECT(cusparseCreateDnMat(&a, 2, 4, 4, reinterpret_cast<void*>(pa), CUDA_R_32F, kRow) == CUSPARSE_STATUS_SUCCESS);
                 EXPECT(cusparseCreateDnMat(&b, 4, 3, 3, reinterpret_cast<void*>(pb), CUDA_R_32F, kRow) == CUSPARSE_STATUS_SUCCESS);
                 float alpha = 1, beta = 0;
                 size_t bytes;
                 EXPECT(cusparseSDDMM_bufferSize(h, kN, kN, &alpha, a, b, &beta, c.d, CUDA_R_32F, CUSPARSE_SDDMM_ALG_DEFAULT, &bytes) == CUSPARSE_STATUS_SUCCESS);
                 EXPECT(cusparseSDDMM(h, kN, kN, &alpha, a, b, &beta, c.d, CUDA_R_32F, CUSPARSE_SDDMM_ALG_DEFAULT, reinterpret_cast<void*>(Alloc(bytes))) ==
                        CUSPARSE_STATUS_SUCCESS);
                 EXPECT(cuStreamSynchronize(g_stream) == CUDA_ERROR_ILLEGAL_ADDRESS);
                 EXPECT(LastErrorHas(which == 0 ? "matC column index 3" : "matA (dense 2 x 4"));
                 _exit(0);
             }
             int status = 0;
             waitpid(child, &status, 0);
             EXPECT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
         }
     }},
    // ---- speed ----
    {"speed: f32 GEMM 512 x 784 x 128 and an MLP-sized SpMM", [] {
         cublasHandle_t h = NewCublas();
         const int m = 128, n = 512, k = 784;  // Frugal's row-major [512, 784] · [784, 128], seen column-major
         CUdeviceptr a = Alloc(static_cast<size_t>(m) * k * 4), b = Alloc(static_cast<size_t>(k) * n * 4), c = Alloc(static_cast<size_t>(m) * n * 4);
         float alpha = 1, beta = 0;
         for (int compute : {CUBLAS_COMPUTE_32F, CUBLAS_COMPUTE_32F_FAST_TF32}) {
             const int reps = 10;
             const double s = Seconds([&] {
                 for (int r = 0; r < reps; ++r)
                     EXPECT(cublasGemmStridedBatchedEx(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &alpha, reinterpret_cast<void*>(a), CUDA_R_32F, m, 0,
                                                       reinterpret_cast<void*>(b), CUDA_R_32F, k, 0, &beta, reinterpret_cast<void*>(c), CUDA_R_32F, m, 0,
                                                       1, static_cast<cublasComputeType_t>(compute), CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS);
                 EXPECT(cuStreamSynchronize(g_stream) == CUDA_SUCCESS);
             });
             printf("  gemm %s: %.1f GFLOP/s\n", compute == CUBLAS_COMPUTE_32F ? "32F" : "TF32", 2.0 * m * n * k * reps / s / 1e9);
         }
         cusparseHandle_t sh = NewCusparse();
         Csr w = RandomCsr(256, 784, 0.1);
         DeviceCsr dw = Describe(w);
         CUdeviceptr px, py;
         cusparseDnMatDescr_t x = DescribeDense(RandomDense(784, 128, kRow, 0), &px), y = DescribeDense(RandomDense(256, 128, kRow, 0), &py);
         const int reps = 20;
         const double s = Seconds([&] {
             for (int r = 0; r < reps; ++r)
                 EXPECT(cusparseSpMM(sh, kN, kN, &alpha, dw.d, x, &beta, y, CUDA_R_32F, CUSPARSE_SPMM_ALG_DEFAULT, nullptr) == CUSPARSE_STATUS_SUCCESS);
             EXPECT(cuStreamSynchronize(g_stream) == CUDA_SUCCESS);
         });
         printf("  spmm (256 x 784 at 10%%, batch 128): %.1f GFLOP/s\n", 2.0 * w.values.size() * 128 * reps / s / 1e9);
         fflush(stdout);
     }},
};

}  // namespace

int main() {
    int passed = 0, failed = 0;
    for (const auto& [name, body] : kCases) {
        fflush(stdout);
        pid_t child = fork();
        if (child == 0) {
            Setup();
            body();
            fflush(stdout);
            _exit(0);
        }
        int status = 0;
        waitpid(child, &status, 0);
        bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
        printf("%s %s\n", ok ? "passed" : "FAILED", name);
        (ok ? passed : failed)++;
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
