using System.Runtime.InteropServices;

namespace Frugal.Bench;

/// <summary>The system's OpenBLAS, loaded when installed, as the peer column of the SGEMM benchmark.
/// OpenBLAS picks its kernel from the CPU at load time; <c>OPENBLAS_CORETYPE</c> (set before the process starts)
/// overrides it, e.g. SkylakeX for its AVX-512 kernels on CPUs it does not know.</summary>
public sealed unsafe class OpenBlas : IDisposable
{
    private const int RowMajor = 101, NoTrans = 111;
    private readonly nint _library;
    private readonly delegate* unmanaged<int, int, int, int, int, int, float, float*, int, float*, int, float, float*, int, void> _sgemm;
    private readonly delegate* unmanaged<byte*> _coreName;
    private readonly delegate* unmanaged<int> _threads;

    private readonly string? _coreType;

    private OpenBlas(nint library, string? coreType)
    {
        _library = library;
        _coreType = coreType;
        _sgemm = (delegate* unmanaged<int, int, int, int, int, int, float, float*, int, float*, int, float, float*, int, void>)
            NativeLibrary.GetExport(library, "cblas_sgemm");
        _coreName = (delegate* unmanaged<byte*>)NativeLibrary.GetExport(library, "openblas_get_corename");
        _threads = (delegate* unmanaged<int>)NativeLibrary.GetExport(library, "openblas_get_num_threads");
    }

    /// <summary>OpenBLAS from the loader path, or null when it is not installed.</summary>
    public static OpenBlas? TryLoad()
    {
        // Read before loading: OpenBLAS sets the variable itself when it picks a kernel.
        var coreType = Environment.GetEnvironmentVariable("OPENBLAS_CORETYPE");
        return NativeLibrary.TryLoad("libopenblas.so.0", out var handle) ? new OpenBlas(handle, coreType) : null;
    }

    /// <summary>C = A·B, n×n, row-major.</summary>
    public void Sgemm(int n, float* a, float* b, float* c)
        => _sgemm(RowMajor, NoTrans, NoTrans, n, n, n, 1f, a, n, b, n, 0f, c, n);

    /// <summary>Kernel family and thread count, as OpenBLAS reports them.</summary>
    public string Describe()
    {
        var core = Marshal.PtrToStringUTF8((nint)_coreName()) ?? "?";
        return $"kernel {core}{(_coreType is null ? " (auto-detected)" : $" (OPENBLAS_CORETYPE={_coreType})")}, {_threads()} threads";
    }

    public void Dispose() => NativeLibrary.Free(_library);
}
