// The emulated cuSPARSE (libcusparse.so.12): the handle and descriptor functions and the generic API's SpMM
// (C = alpha·op(A)·op(B) + beta·C, A sparse CSR, B and C dense) and SDDMM (C = alpha·(op(A)·op(B)) ∘ spy(C) + beta·C,
// A and B dense, C sparse CSR), which is all Frugal calls, computed on the CPU. Declarations come from the real
// cuSPARSE header; the semantics follow NVIDIA's cuSPARSE documentation. The descriptors are host objects read when
// a product is called (they may be destroyed as soon as it returns); the product is queued on the handle's stream
// through the emulated driver, and when it runs every array is checked against the live allocations and every index
// against the matrix, as a GPU would fault on them. C is read even when beta is 0: cuBLAS documents that C is then
// not read, cuSPARSE's generic API does not, so the emulator takes the reading a caller must survive.
#include <cusparse.h>

#include "internal.h"
#include "support.h"

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <new>
#include <pthread.h>
#include <stdlib.h>

#define API extern "C" __attribute__((visibility("default")))

struct cusparseContext {
    CUstream stream;
};

struct cusparseSpMatDescr {
    int64_t rows, cols, nnz;
    void* row_offsets;
    void* col_indices;
    void* values;
    cusparseIndexType_t row_offsets_type, col_indices_type;
    cusparseIndexBase_t base;
    cudaDataType type;
};

struct cusparseDnMatDescr {
    int64_t rows, cols, ld;
    void* values;
    cudaDataType type;
    cusparseOrder_t order;
};

namespace {

using namespace frugal_emu_support;

pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

typedef Array<int64_t> Indices;

Registry g_handles, g_sparse, g_dense;

bool LiveHandle(cusparseHandle_t handle, CUstream* stream) {
    Lock lock(&g_lock);
    if (!handle || !g_handles.Contains(handle)) return false;
    if (stream) *stream = handle->stream;
    return true;
}

bool LiveSparse(cusparseSpMatDescr_t d, cusparseSpMatDescr* copy) {
    Lock lock(&g_lock);
    if (!d || !g_sparse.Contains(d)) return false;
    *copy = *d;
    return true;
}

bool LiveDense(cusparseDnMatDescr_t d, cusparseDnMatDescr* copy) {
    Lock lock(&g_lock);
    if (!d || !g_dense.Contains(d)) return false;
    *copy = *d;
    return true;
}

size_t IndexSize(cusparseIndexType_t type) { return type == CUSPARSE_INDEX_64I ? 8 : 4; }

size_t ValueSize(cudaDataType type) { return type == CUDA_R_64F ? 8 : 4; }

bool ValidOp(cusparseOperation_t op) {
    return op == CUSPARSE_OPERATION_NON_TRANSPOSE || op == CUSPARSE_OPERATION_TRANSPOSE || op == CUSPARSE_OPERATION_CONJUGATE_TRANSPOSE;
}

// A dense matrix as seen through op(): element (r, c) of op(M) is values[r · row_step + c · col_step].
struct View {
    const void* values;
    int64_t rows, cols;  // of op(M)
    int64_t row_step, col_step;
};

View MakeView(const cusparseDnMatDescr& d, bool transpose) {
    View v;
    v.values = d.values;
    const bool row_major = d.order == CUSPARSE_ORDER_ROW;
    int64_t r = row_major ? d.ld : 1, c = row_major ? 1 : d.ld;
    v.rows = d.rows;
    v.cols = d.cols;
    if (transpose) {
        const int64_t step = r, rows = v.rows;
        r = c;
        c = step;
        v.rows = v.cols;
        v.cols = rows;
    }
    v.row_step = r;
    v.col_step = c;
    return v;
}

bool CheckDense(const char* name, const cusparseDnMatDescr& d, char* error, size_t error_len) {
    if (d.rows == 0 || d.cols == 0) return true;
    const bool row_major = d.order == CUSPARSE_ORDER_ROW;
    const int64_t outer = row_major ? d.rows : d.cols, inner = row_major ? d.cols : d.rows;
    const size_t bytes = static_cast<size_t>((outer - 1) * d.ld + inner) * ValueSize(d.type);
    char what[200];
    snprintf(what, sizeof what, "%s (dense %lld x %lld, %s, ld %lld: %zu bytes)", name, static_cast<long long>(d.rows),
             static_cast<long long>(d.cols), row_major ? "row-major" : "column-major", static_cast<long long>(d.ld), bytes);
    return frugal_emu_check_range(reinterpret_cast<CUdeviceptr>(d.values), bytes, what, error, error_len) != 0;
}

// The CSR arrays checked and read: offsets[0..rows] and the column index of every stored entry, both without the
// index base. Fails (with the reason in `error`) on an array outside its allocation, row offsets that are not
// non-decreasing within [0, nnz], or a column index outside [0, cols).
bool ReadCsr(const char* name, const cusparseSpMatDescr& d, Indices* offsets, Indices* columns,
             char* error, size_t error_len) {
    char what[200];
    const size_t offset_bytes = static_cast<size_t>(d.rows + 1) * IndexSize(d.row_offsets_type);
    snprintf(what, sizeof what, "%s row offsets (%lld + 1 entries: %zu bytes)", name, static_cast<long long>(d.rows), offset_bytes);
    if (!frugal_emu_check_range(reinterpret_cast<CUdeviceptr>(d.row_offsets), offset_bytes, what, error, error_len)) return false;
    const size_t index_bytes = static_cast<size_t>(d.nnz) * IndexSize(d.col_indices_type);
    snprintf(what, sizeof what, "%s column indices (%lld entries: %zu bytes)", name, static_cast<long long>(d.nnz), index_bytes);
    if (!frugal_emu_check_range(reinterpret_cast<CUdeviceptr>(d.col_indices), index_bytes, what, error, error_len)) return false;
    const size_t value_bytes = static_cast<size_t>(d.nnz) * ValueSize(d.type);
    snprintf(what, sizeof what, "%s values (%lld entries: %zu bytes)", name, static_cast<long long>(d.nnz), value_bytes);
    if (!frugal_emu_check_range(reinterpret_cast<CUdeviceptr>(d.values), value_bytes, what, error, error_len)) return false;

    const int64_t base = d.base == CUSPARSE_INDEX_BASE_ONE ? 1 : 0;
    offsets->Reset(static_cast<size_t>(d.rows + 1), 0);
    for (int64_t i = 0; i <= d.rows; ++i) {
        const int64_t raw = d.row_offsets_type == CUSPARSE_INDEX_64I ? static_cast<const int64_t*>(d.row_offsets)[i]
                                                                     : static_cast<const int32_t*>(d.row_offsets)[i];
        const int64_t o = raw - base;
        if (o < 0 || o > d.nnz || (i > 0 && o < (*offsets)[i - 1])) {
            snprintf(error, error_len, "%s row offsets: entry %lld is %lld, %s (index base %lld, nnz %lld)", name,
                     static_cast<long long>(i), static_cast<long long>(raw),
                     o < 0 || o > d.nnz ? "outside the stored entries" : "less than the one before", static_cast<long long>(base),
                     static_cast<long long>(d.nnz));
            return false;
        }
        (*offsets)[i] = o;
    }
    columns->Reset(static_cast<size_t>(d.nnz), 0);
    for (int64_t t = (*offsets)[0]; t < (*offsets)[d.rows]; ++t) {
        const int64_t raw = d.col_indices_type == CUSPARSE_INDEX_64I ? static_cast<const int64_t*>(d.col_indices)[t]
                                                                     : static_cast<const int32_t*>(d.col_indices)[t];
        const int64_t j = raw - base;
        if (j < 0 || j >= d.cols) {
            int64_t row = 0;  // the last row starting at or before t
            while (row + 1 < d.rows && (*offsets)[row + 1] <= t) ++row;
            snprintf(error, error_len, "%s column index %lld (entry %lld, row %lld) outside the %lld columns (index base %lld)", name,
                     static_cast<long long>(raw), static_cast<long long>(t), static_cast<long long>(row),
                     static_cast<long long>(d.cols), static_cast<long long>(base));
            return false;
        }
        (*columns)[t] = j;
    }
    return true;
}

bool CheckBuffer(const void* buffer, size_t bytes, char* error, size_t error_len) {
    if (!buffer || bytes == 0) return true;
    char what[120];
    snprintf(what, sizeof what, "externalBuffer (%zu bytes, from the _bufferSize call)", bytes);
    return frugal_emu_check_range(reinterpret_cast<CUdeviceptr>(buffer), bytes, what, error, error_len) != 0;
}

struct Product {
    bool sddmm;
    bool trans_a, trans_b;
    cusparseSpMatDescr sparse;      // A of SpMM, C of SDDMM
    cusparseDnMatDescr dense_a;     // A of SDDMM
    cusparseDnMatDescr dense_b;     // B of both
    cusparseDnMatDescr dense_c;     // C of SpMM
    bool f64;
    double alpha64, beta64;
    float alpha32, beta32;
    const void* buffer;
    size_t buffer_bytes;
};

template <typename T>
T At(const View& v, int64_t r, int64_t c) {
    return static_cast<const T*>(v.values)[r * v.row_step + c * v.col_step];
}

template <typename T>
void SpMM(const Product& p, const Indices& offsets, const Indices& columns) {
    const T alpha = p.f64 ? static_cast<T>(p.alpha64) : static_cast<T>(p.alpha32);
    const T beta = p.f64 ? static_cast<T>(p.beta64) : static_cast<T>(p.beta32);
    const cusparseSpMatDescr& a = p.sparse;
    const T* values = static_cast<const T*>(a.values);
    const View b = MakeView(p.dense_b, p.trans_b);
    const View c = MakeView(p.dense_c, false);
    const int64_t m = c.rows, n = c.cols;
    // acc[i · n + col]: Σ over the stored entries of row i of op(A), in storage order (op(A) = A) or in order of the
    // rows of A (op(A) = Aᵀ), of a · op(B)[·, col].
    Array<T> acc;
    acc.Reset(static_cast<size_t>(m * n), T(0));
    for (int64_t i = 0; i < a.rows; ++i)
        for (int64_t t = offsets[i]; t < offsets[i + 1]; ++t) {
            const int64_t j = columns[t];
            const T v = values[t];
            // op(A) = A: entry (i, j) meets row j of op(B); op(A) = Aᵀ: entry (j, i) meets row i.
            const int64_t out = p.trans_a ? j : i, in = p.trans_a ? i : j;
            T* row = acc.data() + out * n;
            const T* src = static_cast<const T*>(b.values) + in * b.row_step;
            for (int64_t col = 0; col < n; ++col) row[col] += v * src[col * b.col_step];
        }
    T* cv = static_cast<T*>(p.dense_c.values);
    for (int64_t i = 0; i < m; ++i)
        for (int64_t col = 0; col < n; ++col) {
            T& dst = cv[i * c.row_step + col * c.col_step];
            const T value = alpha * acc[i * n + col];
            dst = value + beta * dst;
        }
}

template <typename T>
void Sddmm(const Product& p, const Indices& offsets, const Indices& columns) {
    const T alpha = p.f64 ? static_cast<T>(p.alpha64) : static_cast<T>(p.alpha32);
    const T beta = p.f64 ? static_cast<T>(p.beta64) : static_cast<T>(p.beta32);
    const View a = MakeView(p.dense_a, p.trans_a), b = MakeView(p.dense_b, p.trans_b);
    const int64_t k = a.cols;
    T* values = static_cast<T*>(p.sparse.values);
    for (int64_t i = 0; i < p.sparse.rows; ++i)
        for (int64_t t = offsets[i]; t < offsets[i + 1]; ++t) {
            const int64_t j = columns[t];
            T dot = T(0);
            for (int64_t q = 0; q < k; ++q) dot += At<T>(a, i, q) * At<T>(b, q, j);
            const T value = alpha * dot;
            values[t] = value + beta * values[t];
        }
}

int RunProduct(void* state, char* error, size_t error_len) {
    const Product& p = *static_cast<const Product*>(state);
    Indices offsets, columns;
    if (p.sddmm) {
        if (!CheckDense("matA", p.dense_a, error, error_len) || !CheckDense("matB", p.dense_b, error, error_len) ||
            !ReadCsr("matC", p.sparse, &offsets, &columns, error, error_len) || !CheckBuffer(p.buffer, p.buffer_bytes, error, error_len))
            return 1;
        if (p.f64)
            Sddmm<double>(p, offsets, columns);
        else
            Sddmm<float>(p, offsets, columns);
    } else {
        if (!ReadCsr("matA", p.sparse, &offsets, &columns, error, error_len) || !CheckDense("matB", p.dense_b, error, error_len) ||
            !CheckDense("matC", p.dense_c, error, error_len) || !CheckBuffer(p.buffer, p.buffer_bytes, error, error_len))
            return 1;
        if (p.f64)
            SpMM<double>(p, offsets, columns);
        else
            SpMM<float>(p, offsets, columns);
    }
    return 0;
}

void DestroyProduct(void* state) { delete static_cast<Product*>(state); }

// The workspace the emulation asks for: none for SpMM without transposing A, a small one otherwise (so callers'
// workspace paths are exercised, as with the real library, which needs one for some products).
constexpr size_t kWorkspaceBytes = 256;

// Validation shared by a product and its _bufferSize: fills `p` (scalars excepted) or returns the status.
cusparseStatus_t PrepareSpMM(cusparseHandle_t handle, cusparseOperation_t opA, cusparseOperation_t opB, const void* alpha,
                             cusparseSpMatDescr_t matA, cusparseDnMatDescr_t matB, const void* beta, cusparseDnMatDescr_t matC,
                             cudaDataType computeType, cusparseSpMMAlg_t alg, Product* p, CUstream* stream) {
    if (!LiveHandle(handle, stream)) return CUSPARSE_STATUS_NOT_INITIALIZED;
    if (!alpha || !beta || !ValidOp(opA) || !ValidOp(opB)) return CUSPARSE_STATUS_INVALID_VALUE;
    p->sddmm = false;
    if (!LiveSparse(matA, &p->sparse) || !LiveDense(matB, &p->dense_b) || !LiveDense(matC, &p->dense_c))
        return CUSPARSE_STATUS_INVALID_VALUE;
    p->trans_a = opA != CUSPARSE_OPERATION_NON_TRANSPOSE;  // real values: Aᴴ = Aᵀ
    p->trans_b = opB != CUSPARSE_OPERATION_NON_TRANSPOSE;
    switch (alg) {
        case CUSPARSE_SPMM_ALG_DEFAULT:
        case CUSPARSE_SPMM_CSR_ALG1:
        case CUSPARSE_SPMM_CSR_ALG2: break;
        case CUSPARSE_SPMM_CSR_ALG3:
            if (p->trans_a) return CUSPARSE_STATUS_NOT_SUPPORTED;
            break;
        default: return CUSPARSE_STATUS_NOT_SUPPORTED;  // the COO and Blocked-ELL algorithms, unknown values
    }
    const cudaDataType t = p->sparse.type;
    if ((t != CUDA_R_32F && t != CUDA_R_64F) || p->dense_b.type != t || p->dense_c.type != t || computeType != t)
        return CUSPARSE_STATUS_NOT_SUPPORTED;
    // op(A) is m × k, op(B) k × n, C m × n.
    const int64_t m = p->trans_a ? p->sparse.cols : p->sparse.rows, k = p->trans_a ? p->sparse.rows : p->sparse.cols;
    const int64_t b_rows = p->trans_b ? p->dense_b.cols : p->dense_b.rows, n = p->trans_b ? p->dense_b.rows : p->dense_b.cols;
    if (b_rows != k || p->dense_c.rows != m || p->dense_c.cols != n) return CUSPARSE_STATUS_INVALID_VALUE;
    p->f64 = t == CUDA_R_64F;
    p->buffer_bytes = p->trans_a ? kWorkspaceBytes : 0;
    return CUSPARSE_STATUS_SUCCESS;
}

cusparseStatus_t PrepareSddmm(cusparseHandle_t handle, cusparseOperation_t opA, cusparseOperation_t opB, const void* alpha,
                              cusparseDnMatDescr_t matA, cusparseDnMatDescr_t matB, const void* beta, cusparseSpMatDescr_t matC,
                              cudaDataType computeType, cusparseSDDMMAlg_t alg, Product* p, CUstream* stream) {
    if (!LiveHandle(handle, stream)) return CUSPARSE_STATUS_NOT_INITIALIZED;
    if (!alpha || !beta || !ValidOp(opA) || !ValidOp(opB)) return CUSPARSE_STATUS_INVALID_VALUE;
    p->sddmm = true;
    if (!LiveDense(matA, &p->dense_a) || !LiveDense(matB, &p->dense_b) || !LiveSparse(matC, &p->sparse))
        return CUSPARSE_STATUS_INVALID_VALUE;
    p->trans_a = opA != CUSPARSE_OPERATION_NON_TRANSPOSE;
    p->trans_b = opB != CUSPARSE_OPERATION_NON_TRANSPOSE;
    if (alg != CUSPARSE_SDDMM_ALG_DEFAULT) return CUSPARSE_STATUS_NOT_SUPPORTED;
    const cudaDataType t = p->sparse.type;
    if ((t != CUDA_R_32F && t != CUDA_R_64F) || p->dense_a.type != t || p->dense_b.type != t || computeType != t)
        return CUSPARSE_STATUS_NOT_SUPPORTED;
    // op(A) is m × k, op(B) k × n, C m × n.
    const int64_t a_rows = p->trans_a ? p->dense_a.cols : p->dense_a.rows, k = p->trans_a ? p->dense_a.rows : p->dense_a.cols;
    const int64_t b_rows = p->trans_b ? p->dense_b.cols : p->dense_b.rows, b_cols = p->trans_b ? p->dense_b.rows : p->dense_b.cols;
    if (a_rows != p->sparse.rows || b_rows != k || b_cols != p->sparse.cols) return CUSPARSE_STATUS_INVALID_VALUE;
    p->f64 = t == CUDA_R_64F;
    p->buffer_bytes = kWorkspaceBytes;
    return CUSPARSE_STATUS_SUCCESS;
}

void ReadScalars(Product* p, const void* alpha, const void* beta) {
    // The default (host) pointer mode: the scalars are read during the call.
    if (p->f64) {
        p->alpha64 = *static_cast<const double*>(alpha);
        p->beta64 = *static_cast<const double*>(beta);
    } else {
        p->alpha32 = *static_cast<const float*>(alpha);
        p->beta32 = *static_cast<const float*>(beta);
    }
}

cusparseStatus_t Enqueue(CUstream stream, Product* p, const void* buffer, const char* what) {
    if (p->buffer_bytes > 0 && !buffer) {
        delete p;
        return CUSPARSE_STATUS_INVALID_VALUE;
    }
    p->buffer = buffer;
    FrugalEmuWork work{RunProduct, DestroyProduct, p, what};
    if (frugal_emu_enqueue(stream, work) != CUDA_SUCCESS) return CUSPARSE_STATUS_EXECUTION_FAILED;
    return CUSPARSE_STATUS_SUCCESS;
}

}  // namespace

API cusparseStatus_t CUSPARSEAPI cusparseCreate(cusparseHandle_t* handle) {
    if (!handle) return CUSPARSE_STATUS_INVALID_VALUE;
    cusparseContext* context = new (std::nothrow) cusparseContext{nullptr};
    if (!context) return CUSPARSE_STATUS_ALLOC_FAILED;
    Lock lock(&g_lock);
    if (!g_handles.Add(context)) {
        delete context;
        return CUSPARSE_STATUS_ALLOC_FAILED;
    }
    *handle = context;
    return CUSPARSE_STATUS_SUCCESS;
}

API cusparseStatus_t CUSPARSEAPI cusparseDestroy(cusparseHandle_t handle) {
    Lock lock(&g_lock);
    if (!handle || !g_handles.Remove(handle)) return CUSPARSE_STATUS_NOT_INITIALIZED;
    delete handle;
    return CUSPARSE_STATUS_SUCCESS;
}

API cusparseStatus_t CUSPARSEAPI cusparseSetStream(cusparseHandle_t handle, cudaStream_t streamId) {
    if (!LiveHandle(handle, nullptr)) return CUSPARSE_STATUS_NOT_INITIALIZED;
    CUstream stream = reinterpret_cast<CUstream>(streamId);
    if (!frugal_emu_stream_valid(stream)) return CUSPARSE_STATUS_INVALID_VALUE;
    Lock lock(&g_lock);
    if (!g_handles.Contains(handle)) return CUSPARSE_STATUS_NOT_INITIALIZED;
    handle->stream = stream;
    return CUSPARSE_STATUS_SUCCESS;
}

API cusparseStatus_t CUSPARSEAPI cusparseCreateCsr(cusparseSpMatDescr_t* spMatDescr, int64_t rows, int64_t cols, int64_t nnz,
                                                   void* csrRowOffsets, void* csrColInd, void* csrValues,
                                                   cusparseIndexType_t csrRowOffsetsType, cusparseIndexType_t csrColIndType,
                                                   cusparseIndexBase_t idxBase, cudaDataType valueType) {
    if (!spMatDescr || rows < 0 || cols < 0 || nnz < 0) return CUSPARSE_STATUS_INVALID_VALUE;
    if ((rows > 0 && !csrRowOffsets) || (nnz > 0 && (!csrColInd || !csrValues))) return CUSPARSE_STATUS_INVALID_VALUE;
    if (idxBase != CUSPARSE_INDEX_BASE_ZERO && idxBase != CUSPARSE_INDEX_BASE_ONE) return CUSPARSE_STATUS_INVALID_VALUE;
    const cusparseIndexType_t types[] = {csrRowOffsetsType, csrColIndType};
    for (cusparseIndexType_t type : types) {
        if (type == CUSPARSE_INDEX_16U) return CUSPARSE_STATUS_NOT_SUPPORTED;  // not for CSR
        if (type != CUSPARSE_INDEX_32I && type != CUSPARSE_INDEX_64I) return CUSPARSE_STATUS_INVALID_VALUE;
    }
    // 32-bit indices must be able to hold the sizes.
    const int64_t limit = INT32_MAX;
    if (csrRowOffsetsType == CUSPARSE_INDEX_32I && (nnz > limit || rows > limit)) return CUSPARSE_STATUS_INVALID_VALUE;
    if (csrColIndType == CUSPARSE_INDEX_32I && cols > limit) return CUSPARSE_STATUS_INVALID_VALUE;
    cusparseSpMatDescr* d = new (std::nothrow) cusparseSpMatDescr{rows, cols, nnz, csrRowOffsets, csrColInd, csrValues,
                                                                  csrRowOffsetsType, csrColIndType, idxBase, valueType};
    if (!d) return CUSPARSE_STATUS_ALLOC_FAILED;
    Lock lock(&g_lock);
    if (!g_sparse.Add(d)) {
        delete d;
        return CUSPARSE_STATUS_ALLOC_FAILED;
    }
    *spMatDescr = d;
    return CUSPARSE_STATUS_SUCCESS;
}

API cusparseStatus_t CUSPARSEAPI cusparseDestroySpMat(cusparseSpMatDescr_t spMatDescr) {
    Lock lock(&g_lock);
    if (!spMatDescr || !g_sparse.Remove(spMatDescr)) return CUSPARSE_STATUS_INVALID_VALUE;
    delete spMatDescr;
    return CUSPARSE_STATUS_SUCCESS;
}

API cusparseStatus_t CUSPARSEAPI cusparseCreateDnMat(cusparseDnMatDescr_t* dnMatDescr, int64_t rows, int64_t cols, int64_t ld,
                                                     void* values, cudaDataType valueType, cusparseOrder_t order) {
    if (!dnMatDescr || rows < 0 || cols < 0) return CUSPARSE_STATUS_INVALID_VALUE;
    if (order != CUSPARSE_ORDER_COL && order != CUSPARSE_ORDER_ROW) return CUSPARSE_STATUS_INVALID_VALUE;
    if (ld < (order == CUSPARSE_ORDER_ROW ? cols : rows)) return CUSPARSE_STATUS_INVALID_VALUE;
    if (rows > 0 && cols > 0 && !values) return CUSPARSE_STATUS_INVALID_VALUE;
    cusparseDnMatDescr* d = new (std::nothrow) cusparseDnMatDescr{rows, cols, ld, values, valueType, order};
    if (!d) return CUSPARSE_STATUS_ALLOC_FAILED;
    Lock lock(&g_lock);
    if (!g_dense.Add(d)) {
        delete d;
        return CUSPARSE_STATUS_ALLOC_FAILED;
    }
    *dnMatDescr = d;
    return CUSPARSE_STATUS_SUCCESS;
}

API cusparseStatus_t CUSPARSEAPI cusparseDestroyDnMat(cusparseDnMatDescr_t dnMatDescr) {
    Lock lock(&g_lock);
    if (!dnMatDescr || !g_dense.Remove(dnMatDescr)) return CUSPARSE_STATUS_INVALID_VALUE;
    delete dnMatDescr;
    return CUSPARSE_STATUS_SUCCESS;
}

namespace {

// The workspace size of a product `prepare` (PrepareSpMM or PrepareSddmm) validates from the call's arguments.
template <typename Prepare, typename... Args>
cusparseStatus_t BufferSize(Prepare prepare, size_t* bufferSize, Args... args) {
    Product p;
    CUstream stream;
    if (cusparseStatus_t s = prepare(args..., &p, &stream)) return s;
    if (!bufferSize) return CUSPARSE_STATUS_INVALID_VALUE;
    *bufferSize = p.buffer_bytes;
    return CUSPARSE_STATUS_SUCCESS;
}

// Validates a product with `prepare`, reads alpha and beta now and queues the product on the handle's stream.
template <typename Prepare, typename... Args>
cusparseStatus_t Queue(const char* what, Prepare prepare, const void* alpha, const void* beta, void* externalBuffer, Args... args) {
    Product* p = new (std::nothrow) Product();
    if (!p) return CUSPARSE_STATUS_ALLOC_FAILED;
    CUstream stream;
    if (cusparseStatus_t s = prepare(args..., p, &stream)) {
        delete p;
        return s;
    }
    ReadScalars(p, alpha, beta);
    return Enqueue(stream, p, externalBuffer, what);
}

}  // namespace

API cusparseStatus_t CUSPARSEAPI cusparseSpMM_bufferSize(cusparseHandle_t handle, cusparseOperation_t opA, cusparseOperation_t opB,
                                                         const void* alpha, cusparseSpMatDescr_t matA, cusparseDnMatDescr_t matB,
                                                         const void* beta, cusparseDnMatDescr_t matC, cudaDataType computeType,
                                                         cusparseSpMMAlg_t alg, size_t* bufferSize) {
    return BufferSize(PrepareSpMM, bufferSize, handle, opA, opB, alpha, matA, matB, beta, matC, computeType, alg);
}

API cusparseStatus_t CUSPARSEAPI cusparseSpMM(cusparseHandle_t handle, cusparseOperation_t opA, cusparseOperation_t opB,
                                              const void* alpha, cusparseSpMatDescr_t matA, cusparseDnMatDescr_t matB,
                                              const void* beta, cusparseDnMatDescr_t matC, cudaDataType computeType,
                                              cusparseSpMMAlg_t alg, void* externalBuffer) {
    return Queue("cusparseSpMM", PrepareSpMM, alpha, beta, externalBuffer, handle, opA, opB, alpha, matA, matB, beta, matC,
                 computeType, alg);
}

API cusparseStatus_t CUSPARSEAPI cusparseSDDMM_bufferSize(cusparseHandle_t handle, cusparseOperation_t opA, cusparseOperation_t opB,
                                                          const void* alpha, cusparseDnMatDescr_t matA, cusparseDnMatDescr_t matB,
                                                          const void* beta, cusparseSpMatDescr_t matC, cudaDataType computeType,
                                                          cusparseSDDMMAlg_t alg, size_t* bufferSize) {
    return BufferSize(PrepareSddmm, bufferSize, handle, opA, opB, alpha, matA, matB, beta, matC, computeType, alg);
}

API cusparseStatus_t CUSPARSEAPI cusparseSDDMM(cusparseHandle_t handle, cusparseOperation_t opA, cusparseOperation_t opB,
                                               const void* alpha, cusparseDnMatDescr_t matA, cusparseDnMatDescr_t matB,
                                               const void* beta, cusparseSpMatDescr_t matC, cudaDataType computeType,
                                               cusparseSDDMMAlg_t alg, void* externalBuffer) {
    return Queue("cusparseSDDMM", PrepareSddmm, alpha, beta, externalBuffer, handle, opA, opB, alpha, matA, matB, beta, matC,
                 computeType, alg);
}

API const char* CUSPARSEAPI cusparseGetErrorName(cusparseStatus_t status) {
    switch (status) {
        case CUSPARSE_STATUS_SUCCESS: return "CUSPARSE_STATUS_SUCCESS";
        case CUSPARSE_STATUS_NOT_INITIALIZED: return "CUSPARSE_STATUS_NOT_INITIALIZED";
        case CUSPARSE_STATUS_ALLOC_FAILED: return "CUSPARSE_STATUS_ALLOC_FAILED";
        case CUSPARSE_STATUS_INVALID_VALUE: return "CUSPARSE_STATUS_INVALID_VALUE";
        case CUSPARSE_STATUS_ARCH_MISMATCH: return "CUSPARSE_STATUS_ARCH_MISMATCH";
        case CUSPARSE_STATUS_MAPPING_ERROR: return "CUSPARSE_STATUS_MAPPING_ERROR";
        case CUSPARSE_STATUS_EXECUTION_FAILED: return "CUSPARSE_STATUS_EXECUTION_FAILED";
        case CUSPARSE_STATUS_INTERNAL_ERROR: return "CUSPARSE_STATUS_INTERNAL_ERROR";
        case CUSPARSE_STATUS_MATRIX_TYPE_NOT_SUPPORTED: return "CUSPARSE_STATUS_MATRIX_TYPE_NOT_SUPPORTED";
        case CUSPARSE_STATUS_ZERO_PIVOT: return "CUSPARSE_STATUS_ZERO_PIVOT";
        case CUSPARSE_STATUS_NOT_SUPPORTED: return "CUSPARSE_STATUS_NOT_SUPPORTED";
        case CUSPARSE_STATUS_INSUFFICIENT_RESOURCES: return "CUSPARSE_STATUS_INSUFFICIENT_RESOURCES";
    }
    return "CUSPARSE_STATUS_UNKNOWN";
}
