using System.Runtime.InteropServices;

namespace Frugal.Backends.Cuda.Native;

/// <summary>The cuBLAS functions Frugal calls.</summary>
internal static unsafe partial class Cublas
{
    /// <summary><c>CUBLAS_OP_N</c>, <c>CUBLAS_OP_T</c>.</summary>
    public const int OpN = 0, OpT = 1;

    /// <summary><c>cudaDataType</c>: CUDA_R_32F, CUDA_R_64F, CUDA_R_16F, CUDA_R_16BF.</summary>
    public const int R32F = 0, R64F = 1, R16F = 2, R16BF = 14;

    /// <summary><c>cublasComputeType_t</c>: CUBLAS_COMPUTE_32F, CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_COMPUTE_64F.</summary>
    public const int Compute32F = 68, Compute32FFastTf32 = 77, Compute64F = 70;

    /// <summary><c>CUBLAS_GEMM_DEFAULT</c>.</summary>
    public const int GemmDefault = -1;

    static Cublas() => CudaLibraries.Register();

    [LibraryImport(CudaLibraries.Cublas, EntryPoint = "cublasCreate_v2")]
    public static partial int Create(out nint handle);

    [LibraryImport(CudaLibraries.Cublas, EntryPoint = "cublasDestroy_v2")]
    public static partial int Destroy(nint handle);

    [LibraryImport(CudaLibraries.Cublas, EntryPoint = "cublasSetStream_v2")]
    public static partial int SetStream(nint handle, nint stream);

    [LibraryImport(CudaLibraries.Cublas, EntryPoint = "cublasGemmStridedBatchedEx")]
    public static partial int GemmStridedBatchedEx(nint handle, int transA, int transB, int m, int n, int k,
        void* alpha, nint a, int aType, int lda, long strideA, nint b, int bType, int ldb, long strideB,
        void* beta, nint c, int cType, int ldc, long strideC, int batchCount, int computeType, int algorithm);

    [LibraryImport(CudaLibraries.Cublas, EntryPoint = "cublasGetStatusName")]
    public static partial byte* GetStatusName(int status);

    /// <summary>Throws <see cref="CudaException"/> naming <paramref name="function"/> for a non-success status.</summary>
    public static void Check(int status, string function)
    {
        if (status != 0)
            throw new CudaException(function, status, Marshal.PtrToStringUTF8((nint)GetStatusName(status)) ?? "unknown cuBLAS status");
    }
}
