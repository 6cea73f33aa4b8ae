// Compile-time check of Frugal's hand-written C# CUDA bindings (engine/Backends/Cuda/Native/*.cs) against the CUDA
// headers. tests/BindingHeaderTests.cs reads the .cs files and writes bindings.inc: one BIND(Class, EntryPoint,
// signature) per [LibraryImport], spelled with the cs:: types below, and one CONST(Class_Name, value) per C# constant.
// It then runs: g++ -std=c++20 -fsyntax-only -isystem <cuda include> -I<folder of bindings.inc> check.cpp
// Compiling is the whole check: every mismatch is a static_assert whose message names the entry point or constant.
// Nothing here is linked or run, so no CUDA library is needed, only the headers (see docs/cuda-bindings.md).
#include <cuda.h>
#include <nvrtc.h>
#include <cublas_v2.h>
#include <cusparse.h>
#include <library_types.h>
#include <cstdint>
#include <string_view>
#include <type_traits>

namespace cs { // What the LibraryImport marshaller passes for each C# type on x86-64 Linux; `out T` / `ref T` is T*.
using i32 = int32_t; using u32 = uint32_t; using i64 = int64_t;
using nint = intptr_t; using nuint = uintptr_t; using byte = unsigned char;
}

// How a C parameter type (C) and the C# one (S) compare. EXACT: the same type. ABI: same size and register class (an
// enum as int, a handle or any pointer as nint/void*, long long as long, char* as byte*). SIGN: CUdeviceptr
// (unsigned long long) as nint, the one accepted signedness difference (docs/cuda-bindings.md, "Signedness"). BAD:
// anything else, including any other difference in signedness. Pointees are compared too, so `out uint` against
// size_t* is BAD.
enum Level { EXACT, ABI, SIGN, BAD };

template <class C0, class S0> constexpr Level cmp() {
    using C = std::remove_cv_t<C0>; using S = std::remove_cv_t<S0>;
    if constexpr (std::is_same_v<C, S>) return EXACT;
    else if constexpr (std::is_pointer_v<C> && std::is_pointer_v<S>) {
        using PC = std::remove_cv_t<std::remove_pointer_t<C>>; using PS = std::remove_cv_t<std::remove_pointer_t<S>>;
        if constexpr (std::is_void_v<PC> || std::is_void_v<PS>) return ABI; // void* either side: an opaque buffer
        else { constexpr Level l = cmp<PC, PS>(); return l == EXACT ? ABI : l; } // differs only in const
    }
    else if constexpr (std::is_pointer_v<C> && std::is_integral_v<S>) return sizeof(S) == sizeof(void*) ? ABI : BAD;
    else if constexpr (std::is_same_v<C, CUdeviceptr> && std::is_same_v<S, cs::nint>) return SIGN;
    else if constexpr ((std::is_integral_v<C> || std::is_enum_v<C>) && std::is_integral_v<S>) {
        if constexpr (sizeof(C) != sizeof(S)) return BAD;
        else if constexpr (std::is_enum_v<C> || sizeof(C) == 1) return ABI; // char's signedness does not matter
        else return std::is_signed_v<C> == std::is_signed_v<S> ? ABI : BAD;
    }
    else return BAD; // e.g. a struct or floating-point type against an integer
}

// CF is the header's function pointer type (decltype(+name)), SF the C# signature from bindings.inc.
template <class CF, class SF> struct Sig;
template <class CR, class... CA, class SR, class... SA> struct Sig<CR (*)(CA...), SR(SA...)> {
    static constexpr bool arity = sizeof...(CA) == sizeof...(SA);
    // 0 when all fit; else -1 for the return type or the 1-based number of the first BAD parameter, so that g++'s
    // "the comparison reduces to '(2 == 0)'" says which one.
    static constexpr int bad() {
        if (cmp<CR, SR>() == BAD) return -1;
        if constexpr (arity) { // only pair parameters up when the counts agree
            const Level params[] = {EXACT, cmp<CA, SA>()...};
            for (int i = 1; i <= int(sizeof...(SA)); i++) if (params[i] == BAD) return i;
        }
        return 0;
    }
};

// cublas_api.h overloads cublasGemmStridedBatchedEx in C++ with a static inline one (cudaDataType computeType, no
// exported symbol), so decltype(+name) is ambiguous. Pick the extern "C" declaration by its exact type (which asserts
// that it exists as written) and make the name stand for a value of that type. frugal_gemm is never defined: it is
// only used in unevaluated contexts.
using GemmC = cublasStatus_t (*)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const void*,
    const void*, cudaDataType, int, long long, const void*, cudaDataType, int, long long, const void*, void*,
    cudaDataType, int, long long, int, cublasComputeType_t, cublasGemmAlgo_t);
static_assert(std::is_same_v<decltype(static_cast<GemmC>(&cublasGemmStridedBatchedEx)), GemmC>);
GemmC frugal_gemm();
#define cublasGemmStridedBatchedEx frugal_gemm()

// The C constant that each C# constant (Class_Name in bindings.inc) stands for.
#define C_Driver_AttributeMultiprocessorCount CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT
#define C_Driver_AttributeComputeCapabilityMajor CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
#define C_Driver_AttributeComputeCapabilityMinor CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR
#define C_Driver_ErrorOutOfMemory CUDA_ERROR_OUT_OF_MEMORY
#define C_Driver_StreamNonBlocking CU_STREAM_NON_BLOCKING
#define C_Nvrtc_ErrorCompilation NVRTC_ERROR_COMPILATION
#define C_Nvrtc_ErrorBuiltinOperationFailure NVRTC_ERROR_BUILTIN_OPERATION_FAILURE
#define C_Cublas_OpN CUBLAS_OP_N
#define C_Cublas_OpT CUBLAS_OP_T
#define C_Cublas_R32F CUDA_R_32F
#define C_Cublas_R64F CUDA_R_64F
#define C_Cublas_R16F CUDA_R_16F
#define C_Cublas_R16BF CUDA_R_16BF
#define C_Cublas_Compute32F CUBLAS_COMPUTE_32F
#define C_Cublas_Compute32FFastTf32 CUBLAS_COMPUTE_32F_FAST_TF32
#define C_Cublas_Compute64F CUBLAS_COMPUTE_64F
#define C_Cublas_GemmDefault CUBLAS_GEMM_DEFAULT
#define C_Cusparse_OpN CUSPARSE_OPERATION_NON_TRANSPOSE
#define C_Cusparse_OpT CUSPARSE_OPERATION_TRANSPOSE
#define C_Cusparse_Index32I CUSPARSE_INDEX_32I
#define C_Cusparse_IndexBaseZero CUSPARSE_INDEX_BASE_ZERO
#define C_Cusparse_OrderRow CUSPARSE_ORDER_ROW
#define C_Cusparse_R32F CUDA_R_32F
#define C_Cusparse_SpMMDefault CUSPARSE_SPMM_ALG_DEFAULT
#define C_Cusparse_SddmmDefault CUSPARSE_SDDMM_ALG_DEFAULT

// A C# constant with no C_ line above fails to compile (undeclared identifier C_Class_Name): add its mapping here.
#define BIND(L, E, S) static_assert(Sig<decltype(+E), S>::arity, #E ": parameter count differs from the header"); \
                      static_assert(Sig<decltype(+E), S>::bad() == 0, #E ": this parameter (-1: return type) differs");
#define CONST(N, V) static_assert((long long)(C_##N) == (long long)(V), #N ": value differs from the header");
#include "bindings.inc"

// The unversioned names a C program calls expand, in a default build (no per-thread default stream), to the symbols
// that the C# side binds, e.g. cuMemAlloc is #defined to cuMemAlloc_v2.
#define XSTR(x) STR(x)
#define STR(x) #x
#define SYM(api, bound) static_assert(std::string_view(XSTR(api)) == #bound, #api " is not " #bound " in this header");
SYM(cuDeviceTotalMem, cuDeviceTotalMem_v2) SYM(cuDevicePrimaryCtxRelease, cuDevicePrimaryCtxRelease_v2)
SYM(cuMemAlloc, cuMemAlloc_v2) SYM(cuMemFree, cuMemFree_v2) SYM(cuMemGetInfo, cuMemGetInfo_v2)
SYM(cuMemcpyHtoDAsync, cuMemcpyHtoDAsync_v2) SYM(cuMemcpyDtoHAsync, cuMemcpyDtoHAsync_v2)
SYM(cuStreamDestroy, cuStreamDestroy_v2) SYM(cuStreamSynchronize, cuStreamSynchronize) SYM(cuLaunchKernel, cuLaunchKernel)
SYM(cuStreamCreate, cuStreamCreate) SYM(cuCtxSetCurrent, cuCtxSetCurrent) SYM(cuModuleLoadData, cuModuleLoadData)
SYM(cublasCreate, cublasCreate_v2) SYM(cublasDestroy, cublasDestroy_v2) SYM(cublasSetStream, cublasSetStream_v2)
