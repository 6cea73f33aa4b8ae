using System.Security.Cryptography;
using System.Text;

namespace Frugal.Backends.Cuda;

/// <summary>CUDA C source could not be compiled: the message holds the kernel's name, the architecture and the
/// compiler's log.</summary>
public sealed class KernelCompileException(string message) : Exception(message);

/// <summary>Compiles CUDA C to CUBIN for one GPU architecture (NVRTC in production, a fake in tests).</summary>
internal interface IKernelCompiler
{
    /// <summary>Compiler name and version: part of the cache key, so a new compiler never reuses old binaries.</summary>
    string Version { get; }

    /// <summary>The CUBIN of <paramref name="source"/>; <paramref name="headers"/> maps include names to their text.</summary>
    /// <exception cref="KernelCompileException">The source does not compile (the message holds the log).</exception>
    byte[] Compile(string name, string source, IReadOnlyDictionary<string, string> headers, IReadOnlyList<string> options);
}

/// <summary>CUBINs of CUDA C sources per architecture, compiled once and kept on disk under
/// <see cref="DefaultDirectory"/> (or a given folder), keyed by a SHA-256 of the compiler version, architecture,
/// options, source and every header it may include. Files are written atomically (temporary file, then rename);
/// a damaged file (not an ELF image) is compiled again; an unwritable folder only costs the caching.</summary>
internal sealed class KernelCache(string directory, IKernelCompiler compiler)
{
    private static readonly byte[] s_elfMagic = [0x7F, (byte)'E', (byte)'L', (byte)'F'];

    /// <summary><c>$FRUGAL_CACHE</c>, else <c>~/.cache/frugal</c>.</summary>
    public static string DefaultDirectory()
    {
        var env = Environment.GetEnvironmentVariable("FRUGAL_CACHE");
        return !string.IsNullOrEmpty(env)
            ? env
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "frugal");
    }

    /// <summary>The folder of the cached files.</summary>
    public string Directory { get; } = directory;

    /// <summary>Compilations run by this cache (hits do not count).</summary>
    public int Compilations { get; private set; }

    /// <summary>The CUBIN of <paramref name="source"/> for <paramref name="arch"/> (e.g. <c>sm_90</c>), from disk
    /// when an identical compilation was cached, else compiled now and cached.</summary>
    public byte[] Cubin(string name, string source, string arch, IReadOnlyList<string>? extraOptions = null)
    {
        var headers = KernelSources.Names.Where(n => n.EndsWith(".cuh", StringComparison.Ordinal))
            .ToDictionary(n => n, KernelSources.Read, StringComparer.Ordinal);
        List<string> options = [$"--gpu-architecture={arch}", "-std=c++17", .. extraOptions ?? []];
        var file = Path.Combine(Directory, $"{Sanitize(name)}-{arch}-{Key(name, source, arch, options, headers)}.cubin");
        if (TryRead(file) is { } cached)
            return cached;
        var cubin = compiler.Compile(name, source, headers, options);
        Compilations++;
        if (!cubin.AsSpan().StartsWith(s_elfMagic))
            throw new KernelCompileException($"{name} ({arch}): {compiler.Version} returned {cubin.Length} bytes that are not a CUBIN (ELF) image");
        TryWrite(file, cubin);
        return cubin;
    }

    private string Key(string name, string source, string arch, List<string> options, Dictionary<string, string> headers)
    {
        var text = new StringBuilder();
        foreach (var part in new[] { compiler.Version, arch, string.Join(' ', options), name, source })
            text.Append(part).Append('\0');
        foreach (var (header, body) in headers.OrderBy(h => h.Key, StringComparer.Ordinal))
            text.Append(header).Append('\0').Append(body).Append('\0');
        return Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text.ToString())))[..20];
    }

    private static string Sanitize(string name)
        => new([.. name.Select(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' ? c : '_')]);

    private static byte[]? TryRead(string file)
    {
        try
        {
            var bytes = File.ReadAllBytes(file);
            return bytes.AsSpan().StartsWith(s_elfMagic) ? bytes : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    private static void TryWrite(string file, byte[] cubin)
    {
        var temp = $"{file}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp";
        try
        {
            System.IO.Directory.CreateDirectory(Path.GetDirectoryName(file)!);
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write))
            {
                stream.Write(cubin);
                stream.Flush(flushToDisk: true);
            }
            File.Move(temp, file, overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Caching is an optimisation: a read-only or full disk must not stop the kernel from running.
            try
            {
                File.Delete(temp);
            }
            catch (Exception cleanup) when (cleanup is IOException or UnauthorizedAccessException)
            {
                // Nothing more to do: the temporary name is unique and never read.
            }
        }
    }
}
