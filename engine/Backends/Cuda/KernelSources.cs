using System.Reflection;

namespace Frugal.Backends.Cuda;

/// <summary>The CUDA C sources embedded in the engine (<c>kernels/*.cu</c>, <c>*.cuh</c>, logical names
/// <c>kernels/&lt;path&gt;</c>), as the kernel cache compiles them and the tests read them.</summary>
internal static class KernelSources
{
    private const string Prefix = "kernels/";
    private static readonly Assembly s_assembly = typeof(KernelSources).Assembly;

    /// <summary>File names of every embedded kernel source, e.g. <c>elementwise.cu</c>, <c>common.cuh</c>.</summary>
    public static IReadOnlyList<string> Names { get; } =
        [.. s_assembly.GetManifestResourceNames().Where(n => n.StartsWith(Prefix, StringComparison.Ordinal)).Select(n => n[Prefix.Length..]).Order(StringComparer.Ordinal)];

    /// <summary>The text of one embedded source.</summary>
    /// <exception cref="FileNotFoundException">No source of that name is embedded.</exception>
    public static string Read(string name)
    {
        using var stream = s_assembly.GetManifestResourceStream(Prefix + name)
            ?? throw new FileNotFoundException($"kernel source '{name}' is not embedded in the engine (embedded: {string.Join(", ", Names)})", name);
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }
}
