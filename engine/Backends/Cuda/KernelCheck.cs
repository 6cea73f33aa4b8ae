using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;
using Frugal.Backends.Cuda.Native;

namespace Frugal.Backends.Cuda;

/// <summary>What one kernel needs per thread and per block on one architecture, as compiled by NVRTC.</summary>
/// <param name="Source">The embedded file, e.g. <c>elementwise.cu</c>.</param>
/// <param name="Architecture">The target, e.g. <c>sm_90</c>.</param>
/// <param name="Kernel">The entry point's (symbol) name.</param>
/// <param name="Registers">Registers per thread.</param>
/// <param name="StackBytes">Stack frame per thread.</param>
/// <param name="SharedBytes">Static shared memory per block, as ptxas reports it (without the 1 KiB per block that
/// sm_90 reserves for the system, which <c>cuobjdump</c> adds).</param>
/// <param name="LocalBytes">Local memory per thread (stack and spills).</param>
/// <param name="ConstantBytes">Constant memory summed over the banks (bank 0 holds the parameters); 0 when only
/// ptxas's report was read and it names none.</param>
/// <param name="SpillStoreBytes">Bytes of register spill stores (ptxas).</param>
/// <param name="SpillLoadBytes">Bytes of register spill loads (ptxas).</param>
public sealed record KernelResources(
    string Source, string Architecture, string Kernel, int Registers, int StackBytes, int SharedBytes, int LocalBytes,
    int ConstantBytes, int SpillStoreBytes, int SpillLoadBytes);

/// <summary>One embedded <c>.cu</c> file compiled for one architecture.</summary>
/// <param name="Source">The embedded file.</param>
/// <param name="Architecture">The target.</param>
/// <param name="CubinBytes">Size of the CUBIN (0 when it did not compile).</param>
/// <param name="CompileSeconds">NVRTC's wall time for the file.</param>
/// <param name="Kernels">Every kernel of the CUBIN, in the order the tools list them.</param>
/// <param name="Error">Why the file failed the check (NVRTC's errors or warnings, or what the tools disagree on);
/// null when it passed.</param>
public sealed record KernelFileCheck(
    string Source, string Architecture, int CubinBytes, double CompileSeconds, IReadOnlyList<KernelResources> Kernels, string? Error);

/// <summary>The outcome of <see cref="KernelCheck.Run"/>.</summary>
/// <param name="Compiler">NVRTC's version, e.g. <c>nvrtc 11.8</c>.</param>
/// <param name="Cuobjdump">The <c>cuobjdump</c> that read the CUBINs, or null when none was found and the resources
/// come from ptxas's verbose report alone.</param>
/// <param name="Files">One entry per embedded <c>.cu</c> file and architecture.</param>
public sealed record KernelCheckReport(string Compiler, string? Cuobjdump, IReadOnlyList<KernelFileCheck> Files)
{
    /// <summary>True when every file compiled for every architecture and the tools agree on its kernels.</summary>
    public bool Passed => Files.All(f => f.Error is null);
}

/// <summary>Compiles every embedded kernel file through the production path (<see cref="NvrtcCompiler"/> and
/// <see cref="KernelCache"/>, in a fresh temporary cache so nothing is reused) and reports each kernel's resources:
/// registers, stack, local and constant memory from <c>cuobjdump -res-usage</c> on the CUBIN, and shared memory and
/// spills from ptxas's verbose report (<c>--ptxas-options=-v</c>, which NVRTC 11.8 and later accept). Needs NVRTC, not a GPU.</summary>
public static partial class KernelCheck
{
    private const string PtxasVerbose = "--ptxas-options=-v";

    /// <summary>The first <c>cuobjdump</c> of: the loader's <c>PATH</c>, <c>$CUDA_PATH/bin</c>,
    /// <c>/usr/local/cuda/bin</c>, <c>/opt/frugal/cuda-11.8/usr/bin</c> (where CI extracts Debian's); null if none.</summary>
    public static string? FindCuobjdump()
    {
        var folders = (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries).ToList();
        if (Environment.GetEnvironmentVariable("CUDA_PATH") is { Length: > 0 } cudaPath)
            folders.Add(Path.Combine(cudaPath, "bin"));
        folders.AddRange(["/usr/local/cuda/bin", "/opt/frugal/cuda-11.8/usr/bin"]);
        return folders.Select(f => Path.Combine(f, "cuobjdump")).FirstOrDefault(File.Exists);
    }

    /// <summary>Compiles every embedded <c>.cu</c> file for each of <paramref name="architectures"/> and reads its
    /// kernels' resources. A file that does not compile, or compiles with a warning from NVRTC or ptxas, is reported
    /// (<see cref="KernelFileCheck.Error"/>), not thrown.</summary>
    /// <param name="architectures">Targets such as <c>sm_80</c>, <c>sm_90</c>.</param>
    /// <param name="cuobjdump">The <c>cuobjdump</c> to run; null: <see cref="FindCuobjdump"/>, and when that finds none
    /// the resources come from ptxas's report alone (no constant memory).</param>
    /// <exception cref="ArgumentException">An architecture is not of the form <c>sm_NN</c>, or none is given.</exception>
    /// <exception cref="FileNotFoundException"><paramref name="cuobjdump"/> does not exist.</exception>
    /// <exception cref="InvalidOperationException">NVRTC is not installed: the message names the sonames and places tried.</exception>
    public static KernelCheckReport Run(IReadOnlyList<string> architectures, string? cuobjdump = null)
    {
        ArgumentNullException.ThrowIfNull(architectures);
        if (architectures.Count == 0)
            throw new ArgumentException("no architecture given", nameof(architectures));
        foreach (var arch in architectures)
        {
            if (arch is null || !arch.StartsWith("sm_", StringComparison.Ordinal) || !int.TryParse(arch.AsSpan(3), NumberStyles.None, CultureInfo.InvariantCulture, out _))
                throw new ArgumentException($"architecture must look like sm_90, got '{arch}'", nameof(architectures));
        }
        if (cuobjdump is not null && !File.Exists(cuobjdump))
            throw new FileNotFoundException($"cuobjdump not found at '{cuobjdump}'", cuobjdump);
        cuobjdump ??= FindCuobjdump();

        var folder = Path.Combine(Path.GetTempPath(), $"frugal-kernel-check-{Environment.ProcessId}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(folder);
        try
        {
            string? log = null;
            var compiler = new NvrtcCompiler((_, text) => log = text);
            string version;
            try
            {
                version = compiler.Version;
            }
            catch (DllNotFoundException)
            {
                throw new InvalidOperationException($"NVRTC unavailable: {CudaLibraries.DescribeMissing(CudaLibraries.Nvrtc)}");
            }
            var cache = new KernelCache(Path.Combine(folder, "cache"), compiler);
            var files = new List<KernelFileCheck>();
            foreach (var arch in architectures)
            {
                foreach (var name in KernelSources.Names.Where(n => n.EndsWith(".cu", StringComparison.Ordinal)))
                {
                    log = null;
                    var clock = Stopwatch.StartNew();
                    byte[] cubin;
                    try
                    {
                        cubin = cache.Cubin(name, KernelSources.Read(name), arch, [PtxasVerbose]);
                    }
                    catch (KernelCompileException e)
                    {
                        files.Add(new KernelFileCheck(name, arch, 0, clock.Elapsed.TotalSeconds, [], e.Message));
                        continue;
                    }
                    var seconds = clock.Elapsed.TotalSeconds;
                    files.Add(Inspect(name, arch, cubin, seconds, log, cuobjdump, folder));
                }
            }
            return new KernelCheckReport(version, cuobjdump, files);
        }
        finally
        {
            try
            {
                Directory.Delete(folder, recursive: true);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // A leftover temporary folder is harmless.
            }
        }
    }

    private static KernelFileCheck Inspect(string name, string arch, byte[] cubin, double seconds, string? log, string? cuobjdump, string folder)
    {
        KernelFileCheck Failed(string why) => new(name, arch, cubin.Length, seconds, [], $"{name} ({arch}): {why}");
        if (log is null)
            return Failed("NVRTC returned no log (the kernel cache did not compile it)");
        var warnings = log.Split('\n').Where(l => WarningLine().IsMatch(l)).Select(l => l.Trim()).ToList();
        if (warnings.Count > 0)
            return Failed($"NVRTC warns (the check treats warnings as errors):\n{string.Join('\n', warnings)}");
        var ptxas = ParsePtxas(log);
        if (ptxas.Count == 0)
            return Failed($"ptxas's verbose report ({PtxasVerbose}) names no kernel; NVRTC's log:\n{log}");
        if (cuobjdump is null)
        {
            return new KernelFileCheck(name, arch, cubin.Length, seconds,
                [.. ptxas.Select(p => new KernelResources(name, arch, p.Key, p.Value.Registers, p.Value.Stack, p.Value.Shared, p.Value.Local,
                    p.Value.Constant, p.Value.SpillStores, p.Value.SpillLoads))], null);
        }

        var file = Path.Combine(folder, $"{Path.GetFileNameWithoutExtension(name)}.{arch}.cubin");
        File.WriteAllBytes(file, cubin);
        var (exit, output) = RunTool(cuobjdump, ["-res-usage", file]);
        if (exit != 0)
            return Failed($"{cuobjdump} -res-usage failed (exit {exit}):\n{output}");
        var usage = ParseResUsage(output);
        if (usage.Count == 0)
            return Failed($"{cuobjdump} -res-usage lists no function:\n{output}");
        var problems = new List<string>();
        var kernels = new List<KernelResources>();
        foreach (var (kernel, r) in usage)
        {
            if (!ptxas.TryGetValue(kernel, out var p))
            {
                problems.Add($"{kernel}: in the CUBIN but not in ptxas's report");
                continue;
            }
            if (p.Registers != r.Registers)
                problems.Add($"{kernel}: cuobjdump says {r.Registers} registers, ptxas {p.Registers}");
            // Shared memory as ptxas counts it (the kernel's own): cuobjdump's SHARED for sm_90 adds the 1 KiB the
            // system reserves per block whenever a kernel uses shared memory.
            kernels.Add(new KernelResources(name, arch, kernel, r.Registers, r.Stack, p.Shared, r.Local, r.Constant, p.SpillStores, p.SpillLoads));
        }
        problems.AddRange(ptxas.Keys.Where(k => !usage.ContainsKey(k)).Select(k => $"{k}: in ptxas's report but not in the CUBIN"));
        return new KernelFileCheck(name, arch, cubin.Length, seconds, kernels, problems.Count == 0 ? null : $"{name} ({arch}): {string.Join("; ", problems)}");
    }

    private sealed record Usage(int Registers, int Stack, int Shared, int Local, int Constant);

    /// <summary>Per entry function of ptxas's <c>-v</c> report: "Compiling entry function 'k' for 'sm_90'", then
    /// "Function properties for k" / "N bytes stack frame, N bytes spill stores, N bytes spill loads" and
    /// "Used N registers[, N bytes lmem][, N bytes smem][, N bytes cmem[B]]".</summary>
    internal static Dictionary<string, (int Registers, int Stack, int Shared, int Local, int Constant, int SpillStores, int SpillLoads)> ParsePtxas(string log)
    {
        var entries = new List<string>();
        var used = new Dictionary<string, (int Registers, int Shared, int Local, int Constant)>(StringComparer.Ordinal);
        var properties = new Dictionary<string, (int Stack, int Stores, int Loads)>(StringComparer.Ordinal);
        string? entry = null, described = null;
        foreach (var line in log.Split('\n'))
        {
            if (EntryLine().Match(line) is { Success: true } e)
            {
                entry = e.Groups[1].Value;
                entries.Add(entry);
            }
            else if (PropertiesLine().Match(line) is { Success: true } p)
            {
                described = p.Groups[1].Value;
            }
            else if (StackLine().Match(line) is { Success: true } s && described is not null)
            {
                properties[described] = (Int(s.Groups[1]), Int(s.Groups[2]), Int(s.Groups[3]));
                described = null;
            }
            else if (UsedLine().Match(line) is { Success: true } u && entry is not null)
            {
                static int Bytes(Match m) => m.Success ? Int(m.Groups[1]) : 0;
                var constant = CmemPart().Matches(line).Sum(m => Int(m.Groups[1]));
                used[entry] = (Int(u.Groups[1]), Bytes(SmemPart().Match(line)), Bytes(LmemPart().Match(line)), constant);
            }
        }
        var result = new Dictionary<string, (int, int, int, int, int, int, int)>(StringComparer.Ordinal);
        foreach (var name in entries)
        {
            var (registers, shared, local, constant) = used.GetValueOrDefault(name);
            var (stack, stores, loads) = properties.GetValueOrDefault(name);
            result[name] = (registers, stack, shared, local, constant, stores, loads);
        }
        return result;
    }

    /// <summary>Per function of <c>cuobjdump -res-usage</c>: " Function k:" then
    /// "REG:36 STACK:0 SHARED:0 LOCAL:0 CONSTANT[0]:976 CONSTANT[2]:168 TEXTURE:0 ...".</summary>
    private static Dictionary<string, Usage> ParseResUsage(string output)
    {
        var result = new Dictionary<string, Usage>(StringComparer.Ordinal);
        string? function = null;
        foreach (var line in output.Split('\n'))
        {
            if (FunctionLine().Match(line) is { Success: true } f)
            {
                function = f.Groups[1].Value;
                continue;
            }
            if (function is null || !line.Contains("REG:", StringComparison.Ordinal))
                continue;
            var fields = Field().Matches(line).ToDictionary(m => m.Groups[1].Value, m => Int(m.Groups[2]), StringComparer.Ordinal);
            result[function] = new Usage(fields.GetValueOrDefault("REG"), fields.GetValueOrDefault("STACK"), fields.GetValueOrDefault("SHARED"),
                fields.GetValueOrDefault("LOCAL"), fields.Where(kv => kv.Key.StartsWith("CONSTANT", StringComparison.Ordinal)).Sum(kv => kv.Value));
            function = null;
        }
        return result;
    }

    private static (int Exit, string Output) RunTool(string tool, IEnumerable<string> args)
    {
        var start = new ProcessStartInfo(tool) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args)
            start.ArgumentList.Add(a);
        using var process = Process.Start(start) ?? throw new InvalidOperationException($"cannot start {tool}");
        var error = process.StandardError.ReadToEndAsync();
        var output = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        return (process.ExitCode, output + error.GetAwaiter().GetResult());
    }

    private static int Int(Group g) => int.Parse(g.Value, NumberStyles.None, CultureInfo.InvariantCulture);

    [GeneratedRegex(@"\bwarning\b", RegexOptions.CultureInvariant | RegexOptions.IgnoreCase)]
    private static partial Regex WarningLine();

    [GeneratedRegex(@"Compiling entry function '([^']+)' for '", RegexOptions.CultureInvariant)]
    private static partial Regex EntryLine();

    [GeneratedRegex(@"Function properties for (\S+)", RegexOptions.CultureInvariant)]
    private static partial Regex PropertiesLine();

    [GeneratedRegex(@"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", RegexOptions.CultureInvariant)]
    private static partial Regex StackLine();

    [GeneratedRegex(@"Used (\d+) registers", RegexOptions.CultureInvariant)]
    private static partial Regex UsedLine();

    [GeneratedRegex(@"(\d+) bytes smem\b", RegexOptions.CultureInvariant)]
    private static partial Regex SmemPart();

    [GeneratedRegex(@"(\d+) bytes lmem\b", RegexOptions.CultureInvariant)]
    private static partial Regex LmemPart();

    [GeneratedRegex(@"(\d+) bytes cmem\[\d+\]", RegexOptions.CultureInvariant)]
    private static partial Regex CmemPart();

    [GeneratedRegex(@"^\s*Function (\S+):\s*$", RegexOptions.CultureInvariant)]
    private static partial Regex FunctionLine();

    [GeneratedRegex(@"([A-Z]+(?:\[\d+\])?):(\d+)", RegexOptions.CultureInvariant)]
    private static partial Regex Field();
}
