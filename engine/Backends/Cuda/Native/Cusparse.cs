using System.Runtime.InteropServices;

namespace Frugal.Backends.Cuda.Native;

/// <summary>The cuSPARSE functions Frugal calls: the generic API's CSR SpMM and SDDMM on row-major dense matrices.</summary>
internal static unsafe partial class Cusparse
{
    /// <summary><c>CUSPARSE_OPERATION_NON_TRANSPOSE</c>, <c>CUSPARSE_OPERATION_TRANSPOSE</c>.</summary>
    public const int OpN = 0, OpT = 1;

    /// <summary><c>CUSPARSE_INDEX_32I</c>, <c>CUSPARSE_INDEX_BASE_ZERO</c>, <c>CUSPARSE_ORDER_ROW</c>.</summary>
    public const int Index32I = 2, IndexBaseZero = 0, OrderRow = 2;

    /// <summary><c>CUDA_R_32F</c>.</summary>
    public const int R32F = 0;

    /// <summary><c>CUSPARSE_SPMM_ALG_DEFAULT</c>, <c>CUSPARSE_SDDMM_ALG_DEFAULT</c>.</summary>
    public const int SpMMDefault = 0, SddmmDefault = 0;

    static Cusparse() => CudaLibraries.Register();

    [LibraryImport(CudaLibraries.Cusparse, EntryPoint = "cusparseCreate")]
    public static partial int Create(out nint handle);

    [LibraryImport(CudaLibraries.Cusparse, EntryPoint = "cusparseDestroy")]
    public static partial int Destroy(nint handle);

    [LibraryImport(CudaLibraries.Cusparse, EntryPoint = "cusparseSetStream")]
    public static partial int SetStream(nint handle, nint stream);

    [LibraryImport(CudaLibraries.Cusparse, EntryPoint = "cusparseCreateCsr")]
    public static partial int CreateCsr(out nint descriptor, long rows, long cols, long nnz, nint rowOffsets, nint colIndices, nint values,
        int rowOffsetsType, int colIndicesType, int indexBase, int valueType);

    [LibraryImport(CudaLibraries.Cusparse, EntryPoint = "cusparseDestroySpMat")]
    public static partial int DestroySpMat(nint descriptor);

    [LibraryImport(CudaLibraries.Cusparse, EntryPoint = "cusparseCreateDnMat")]
    public static partial int CreateDnMat(out nint descriptor, long rows, long cols, long ld, nint values, int valueType, int order);

    [LibraryImport(CudaLibraries.Cusparse, EntryPoint = "cusparseDestroyDnMat")]
    public static partial int DestroyDnMat(nint descriptor);

    [LibraryImport(CudaLibraries.Cusparse, EntryPoint = "cusparseSpMM_bufferSize")]
    public static partial int SpMMBufferSize(nint handle, int opA, int opB, void* alpha, nint a, nint b, void* beta, nint c,
        int computeType, int algorithm, out nuint bytes);

    [LibraryImport(CudaLibraries.Cusparse, EntryPoint = "cusparseSpMM")]
    public static partial int SpMM(nint handle, int opA, int opB, void* alpha, nint a, nint b, void* beta, nint c,
        int computeType, int algorithm, nint buffer);

    [LibraryImport(CudaLibraries.Cusparse, EntryPoint = "cusparseSDDMM_bufferSize")]
    public static partial int SddmmBufferSize(nint handle, int opA, int opB, void* alpha, nint a, nint b, void* beta, nint c,
        int computeType, int algorithm, out nuint bytes);

    [LibraryImport(CudaLibraries.Cusparse, EntryPoint = "cusparseSDDMM")]
    public static partial int Sddmm(nint handle, int opA, int opB, void* alpha, nint a, nint b, void* beta, nint c,
        int computeType, int algorithm, nint buffer);

    [LibraryImport(CudaLibraries.Cusparse, EntryPoint = "cusparseGetErrorName")]
    public static partial byte* GetErrorName(int status);

    /// <summary>Throws <see cref="CudaException"/> naming <paramref name="function"/> for a non-success status.</summary>
    public static void Check(int status, string function)
    {
        if (status != 0)
            throw new CudaException(function, status, Marshal.PtrToStringUTF8((nint)GetErrorName(status)) ?? "unknown cuSPARSE status");
    }
}
