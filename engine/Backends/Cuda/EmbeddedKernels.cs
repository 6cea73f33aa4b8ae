using Frugal.Backends.Cuda.Native;

namespace Frugal.Backends.Cuda;

/// <summary>One embedded kernel file compiled for one architecture.</summary>
public sealed record KernelBinary(string Source, string Architecture, int CubinBytes);

/// <summary>The engine's own CUDA C sources, compiled through NVRTC and the on-disk kernel cache. Needs NVRTC
/// (libnvrtc), not a GPU.</summary>
public static class EmbeddedKernels
{
    /// <summary>Compiles every embedded <c>.cu</c> file for <paramref name="architecture"/> (e.g. <c>sm_90</c>).</summary>
    /// <exception cref="InvalidOperationException">NVRTC is not installed: the message names the libraries and the places searched.</exception>
    /// <exception cref="KernelCompileException">A source does not compile: the message holds NVRTC's log.</exception>
    public static IReadOnlyList<KernelBinary> CompileAll(string architecture)
    {
        ArgumentException.ThrowIfNullOrEmpty(architecture);
        if (!architecture.StartsWith("sm_", StringComparison.Ordinal) || !int.TryParse(architecture.AsSpan(3), out _))
            throw new ArgumentException($"architecture must look like sm_90, got '{architecture}'", nameof(architecture));
        var cache = new KernelCache(KernelCache.DefaultDirectory(), new NvrtcCompiler());
        try
        {
            return [.. KernelSources.Names.Where(n => n.EndsWith(".cu", StringComparison.Ordinal))
                .Select(n => new KernelBinary(n, architecture, cache.Cubin(n, KernelSources.Read(n), architecture).Length))];
        }
        catch (DllNotFoundException)
        {
            throw new InvalidOperationException($"NVRTC unavailable: {CudaLibraries.DescribeMissing(CudaLibraries.Nvrtc)}");
        }
    }
}
