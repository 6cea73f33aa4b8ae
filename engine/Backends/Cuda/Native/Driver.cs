using System.Runtime.InteropServices;

namespace Frugal.Backends.Cuda.Native;

/// <summary>The CUDA driver API functions Frugal calls, bound by hand (blittable signatures, versioned symbols).
/// Every call's status goes through <see cref="Check"/>.</summary>
internal static unsafe partial class Driver
{
    /// <summary><c>CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT</c>.</summary>
    public const int AttributeMultiprocessorCount = 16;

    /// <summary><c>CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR</c>.</summary>
    public const int AttributeComputeCapabilityMajor = 75;

    /// <summary><c>CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR</c>.</summary>
    public const int AttributeComputeCapabilityMinor = 76;

    static Driver() => CudaLibraries.Register();

    [LibraryImport(CudaLibraries.Driver, EntryPoint = "cuInit")]
    public static partial int Init(uint flags);

    [LibraryImport(CudaLibraries.Driver, EntryPoint = "cuDriverGetVersion")]
    public static partial int DriverGetVersion(out int version);

    [LibraryImport(CudaLibraries.Driver, EntryPoint = "cuDeviceGetCount")]
    public static partial int DeviceGetCount(out int count);

    [LibraryImport(CudaLibraries.Driver, EntryPoint = "cuDeviceGet")]
    public static partial int DeviceGet(out int device, int ordinal);

    [LibraryImport(CudaLibraries.Driver, EntryPoint = "cuDeviceGetName")]
    public static partial int DeviceGetName(byte* name, int length, int device);

    [LibraryImport(CudaLibraries.Driver, EntryPoint = "cuDeviceGetAttribute")]
    public static partial int DeviceGetAttribute(out int value, int attribute, int device);

    [LibraryImport(CudaLibraries.Driver, EntryPoint = "cuDeviceTotalMem_v2")]
    public static partial int DeviceTotalMem(out nuint bytes, int device);

    [LibraryImport(CudaLibraries.Driver, EntryPoint = "cuDevicePrimaryCtxRetain")]
    public static partial int DevicePrimaryCtxRetain(out nint context, int device);

    [LibraryImport(CudaLibraries.Driver, EntryPoint = "cuDevicePrimaryCtxRelease_v2")]
    public static partial int DevicePrimaryCtxRelease(int device);

    [LibraryImport(CudaLibraries.Driver, EntryPoint = "cuCtxSetCurrent")]
    public static partial int CtxSetCurrent(nint context);

    [LibraryImport(CudaLibraries.Driver, EntryPoint = "cuMemAlloc_v2")]
    public static partial int MemAlloc(out nint devicePointer, nuint bytes);

    [LibraryImport(CudaLibraries.Driver, EntryPoint = "cuMemFree_v2")]
    public static partial int MemFree(nint devicePointer);

    [LibraryImport(CudaLibraries.Driver, EntryPoint = "cuMemGetInfo_v2")]
    public static partial int MemGetInfo(out nuint free, out nuint total);

    [LibraryImport(CudaLibraries.Driver, EntryPoint = "cuMemcpyHtoDAsync_v2")]
    public static partial int MemcpyHtoDAsync(nint destination, void* source, nuint bytes, nint stream);

    [LibraryImport(CudaLibraries.Driver, EntryPoint = "cuMemcpyDtoHAsync_v2")]
    public static partial int MemcpyDtoHAsync(void* destination, nint source, nuint bytes, nint stream);

    [LibraryImport(CudaLibraries.Driver, EntryPoint = "cuStreamCreate")]
    public static partial int StreamCreate(out nint stream, uint flags);

    [LibraryImport(CudaLibraries.Driver, EntryPoint = "cuStreamDestroy_v2")]
    public static partial int StreamDestroy(nint stream);

    [LibraryImport(CudaLibraries.Driver, EntryPoint = "cuStreamSynchronize")]
    public static partial int StreamSynchronize(nint stream);

    [LibraryImport(CudaLibraries.Driver, EntryPoint = "cuModuleLoadData")]
    public static partial int ModuleLoadData(out nint module, void* image);

    [LibraryImport(CudaLibraries.Driver, EntryPoint = "cuModuleUnload")]
    public static partial int ModuleUnload(nint module);

    [LibraryImport(CudaLibraries.Driver, EntryPoint = "cuModuleGetFunction")]
    public static partial int ModuleGetFunction(out nint function, nint module, byte* name);

    [LibraryImport(CudaLibraries.Driver, EntryPoint = "cuLaunchKernel")]
    public static partial int LaunchKernel(nint function, uint gridX, uint gridY, uint gridZ, uint blockX, uint blockY, uint blockZ,
        uint sharedMemoryBytes, nint stream, void** parameters, void** extra);

    /// <summary><c>CUDA_ERROR_OUT_OF_MEMORY</c>.</summary>
    public const int ErrorOutOfMemory = 2;

    /// <summary><c>CU_STREAM_NON_BLOCKING</c>: no implicit synchronisation with the legacy default stream.</summary>
    public const uint StreamNonBlocking = 1;

    [LibraryImport(CudaLibraries.Driver, EntryPoint = "cuGetErrorName")]
    public static partial int GetErrorName(int status, out byte* name);

    /// <summary>Throws <see cref="CudaException"/> naming <paramref name="function"/> when <paramref name="status"/>
    /// is not CUDA_SUCCESS.</summary>
    public static void Check(int status, string function)
    {
        if (status != 0)
            throw new CudaException(function, status, ErrorName(status));
    }

    /// <summary>The driver's name for a status (e.g. CUDA_ERROR_NO_DEVICE), or "unknown status".</summary>
    public static string ErrorName(int status)
        => GetErrorName(status, out var name) == 0 && name != null ? Marshal.PtrToStringUTF8((nint)name) ?? "unknown status" : "unknown status";
}
