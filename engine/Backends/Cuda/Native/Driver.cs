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
