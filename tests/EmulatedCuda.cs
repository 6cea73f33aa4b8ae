using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Frugal.Tests;

/// <summary>Points the CUDA bindings at the emulated device (emulator/: libcuda, libnvrtc, libcublas and libcusparse
/// run on the CPU) when no real driver is present: <c>FRUGAL_CUDA_EMULATOR</c> names its output folder (.ci/run
/// sets it), else <c>emulator/out</c> of this checkout is used when it has been built. With a real
/// <c>libcuda.so.1</c> and no <c>FRUGAL_CUDA_EMULATOR</c>, the GPU is used. Runs before any test touches CUDA.</summary>
internal static class EmulatedCuda
{
    /// <summary>The emulator folder in use, or null when the tests see a real driver or none.</summary>
    public static string? Folder { get; private set; }

#pragma warning disable CA2255 // The test assembly is the program: its CUDA environment must be set before any test runs.
    [ModuleInitializer]
#pragma warning restore CA2255
    internal static void Select()
    {
        var folder = Environment.GetEnvironmentVariable("FRUGAL_CUDA_EMULATOR");
        if (string.IsNullOrEmpty(folder))
        {
            if (NativeLibrary.TryLoad("libcuda.so.1", out var real))
            {
                NativeLibrary.Free(real);
                return;
            }
            folder = Path.Combine(RepositoryRoot(), "emulator", "out");
        }
        if (!File.Exists(Path.Combine(folder, "lib64", "libcuda.so.1")))
            return;
        Folder = Path.GetFullPath(folder);
        Environment.SetEnvironmentVariable("CUDA_PATH", Folder);
        // Emulated modules are host code: never mix them with a real GPU's cached CUBINs.
        Environment.SetEnvironmentVariable("FRUGAL_CACHE", Path.Combine(Path.GetTempPath(), "frugal-emulated-kernels"));
    }

    /// <summary>The checkout's root (the folder of Engine.sln), or the test binaries' folder outside a checkout.</summary>
    public static string RepositoryRoot() => TestUtil.RepositoryRoot() ?? AppContext.BaseDirectory;
}
