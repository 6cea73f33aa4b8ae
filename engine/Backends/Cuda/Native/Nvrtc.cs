using System.Runtime.InteropServices;

namespace Frugal.Backends.Cuda.Native;

/// <summary>The NVRTC functions the kernel cache calls (run-time compilation of CUDA C to CUBIN).</summary>
internal static unsafe partial class Nvrtc
{
    /// <summary><c>NVRTC_ERROR_COMPILATION</c>: the source has errors; the program log says which.</summary>
    public const int ErrorCompilation = 6;

    /// <summary><c>NVRTC_ERROR_BUILTIN_OPERATION_FAILURE</c>: typically libnvrtc-builtins is missing.</summary>
    public const int ErrorBuiltinOperationFailure = 7;

    static Nvrtc() => CudaLibraries.Register();

    [LibraryImport(CudaLibraries.Nvrtc, EntryPoint = "nvrtcVersion")]
    public static partial int Version(out int major, out int minor);

    [LibraryImport(CudaLibraries.Nvrtc, EntryPoint = "nvrtcCreateProgram")]
    public static partial int CreateProgram(out nint program, byte* source, byte* name, int headerCount, byte** headers, byte** includeNames);

    [LibraryImport(CudaLibraries.Nvrtc, EntryPoint = "nvrtcCompileProgram")]
    public static partial int CompileProgram(nint program, int optionCount, byte** options);

    [LibraryImport(CudaLibraries.Nvrtc, EntryPoint = "nvrtcGetProgramLogSize")]
    public static partial int GetProgramLogSize(nint program, out nuint size);

    [LibraryImport(CudaLibraries.Nvrtc, EntryPoint = "nvrtcGetProgramLog")]
    public static partial int GetProgramLog(nint program, byte* log);

    [LibraryImport(CudaLibraries.Nvrtc, EntryPoint = "nvrtcGetCUBINSize")]
    public static partial int GetCubinSize(nint program, out nuint size);

    [LibraryImport(CudaLibraries.Nvrtc, EntryPoint = "nvrtcGetCUBIN")]
    public static partial int GetCubin(nint program, byte* cubin);

    [LibraryImport(CudaLibraries.Nvrtc, EntryPoint = "nvrtcDestroyProgram")]
    public static partial int DestroyProgram(ref nint program);

    [LibraryImport(CudaLibraries.Nvrtc, EntryPoint = "nvrtcGetErrorString")]
    public static partial byte* GetErrorString(int status);

    /// <summary>Throws <see cref="CudaException"/> naming <paramref name="function"/> for a non-success status.</summary>
    public static void Check(int status, string function)
    {
        if (status != 0)
            throw new CudaException(function, status, Marshal.PtrToStringUTF8((nint)GetErrorString(status)) ?? "unknown NVRTC status");
    }
}
