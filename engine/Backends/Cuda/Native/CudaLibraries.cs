using System.Reflection;
using System.Runtime.InteropServices;

namespace Frugal.Backends.Cuda.Native;

/// <summary>Finds the CUDA libraries by their versioned sonames. The bindings name logical libraries
/// (<see cref="Driver"/>, ...); the resolver tries, in order, <c>$CUDA_PATH/lib64</c>, <c>/usr/local/cuda/lib64</c>
/// and the loader's own search path, and within each the newest major version first. What was tried is kept so
/// that a missing library is reported by name with the places searched.</summary>
internal static class CudaLibraries
{
    /// <summary>The driver API (libcuda, installed with the NVIDIA driver).</summary>
    public const string Driver = "frugal-cuda-driver";

    /// <summary>The run-time compiler: CUDA 13, 12, then 11.x (whose soname is <c>libnvrtc.so.11.2</c> for every 11.2+
    /// release; Debian's <c>libnvrtc11.2</c> package is NVRTC 11.8).</summary>
    public const string Nvrtc = "frugal-nvrtc";

    /// <summary>cuBLAS.</summary>
    public const string Cublas = "frugal-cublas";

    /// <summary>cuSPARSE (its soname major is still 12 under CUDA 13).</summary>
    public const string Cusparse = "frugal-cusparse";

    private static readonly Dictionary<string, string[]> s_sonames = new(StringComparer.Ordinal)
    {
        [Driver] = ["libcuda.so.1"],
        [Nvrtc] = ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2"],
        [Cublas] = ["libcublas.so.13", "libcublas.so.12"],
        [Cusparse] = ["libcusparse.so.12"],
    };

    private static readonly Lock s_lock = new();
    private static readonly Dictionary<string, IReadOnlyList<string>> s_tried = new(StringComparer.Ordinal);
    private static readonly Dictionary<string, string> s_loaded = new(StringComparer.Ordinal);
    private static bool s_registered;

    /// <summary>Installs the resolver for this assembly's bindings (once).</summary>
    public static void Register()
    {
        lock (s_lock)
        {
            if (s_registered)
                return;
            NativeLibrary.SetDllImportResolver(typeof(CudaLibraries).Assembly, Resolve);
            s_registered = true;
        }
    }

    /// <summary>Where <paramref name="library"/> is looked for, in order: full paths under the CUDA folders, then
    /// bare sonames for the loader.</summary>
    public static IReadOnlyList<string> Candidates(string library, string? cudaPath)
    {
        var sonames = s_sonames[library];
        var folders = new List<string>();
        if (!string.IsNullOrEmpty(cudaPath))
            folders.Add(Path.Combine(cudaPath, "lib64"));
        folders.Add("/usr/local/cuda/lib64");
        var list = new List<string>();
        foreach (var folder in folders.Distinct(StringComparer.Ordinal))
            list.AddRange(sonames.Select(s => Path.Combine(folder, s)));
        list.AddRange(sonames);
        return list;
    }

    /// <summary>The candidate <paramref name="library"/> was loaded from (a path or a bare soname), or null before it is.</summary>
    public static string? LoadedFrom(string library)
    {
        lock (s_lock)
            return s_loaded.GetValueOrDefault(library);
    }

    /// <summary>Why <paramref name="library"/> could not be loaded: its sonames and every place tried.</summary>
    public static string DescribeMissing(string library)
    {
        IReadOnlyList<string>? tried;
        lock (s_lock)
            s_tried.TryGetValue(library, out tried);
        tried ??= Candidates(library, Environment.GetEnvironmentVariable("CUDA_PATH"));
        var places = tried.Select(t => Path.IsPathRooted(t) ? t : $"{t} (loader path)");
        return $"{string.Join(" / ", s_sonames[library])} not found; tried {string.Join(", ", places)}";
    }

    private static nint Resolve(string name, Assembly assembly, DllImportSearchPath? searchPath)
    {
        if (!s_sonames.ContainsKey(name))
            return 0;
        var candidates = Candidates(name, Environment.GetEnvironmentVariable("CUDA_PATH"));
        lock (s_lock)
            s_tried[name] = candidates;
        foreach (var candidate in candidates)
        {
            if ((!Path.IsPathRooted(candidate) || File.Exists(candidate)) && NativeLibrary.TryLoad(candidate, out var handle))
            {
                lock (s_lock)
                    s_loaded[name] = candidate;
                return handle;
            }
        }
        return 0;
    }
}
