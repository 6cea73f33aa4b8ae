using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text.RegularExpressions;
using Frugal.Backends.Cuda;

namespace Frugal.Tests;

/// <summary><c>frugal kernels</c> on the real NVRTC (CUDA 13, 12 or 11.x: Debian's libnvrtc11.2 is NVRTC 11.8) and
/// the parsing of ptxas's verbose report. The command runs in a child process without <c>CUDA_PATH</c>: this
/// process may have pointed the CUDA bindings at the emulator (<see cref="EmulatedCuda"/>), and the resolver binds
/// NVRTC once per process.</summary>
public sealed partial class KernelCheckTests
{
    [Fact]
    public void EveryKernelOfEveryFileCompilesForSm90WithTheRealNvrtcAndHasAResourceRow()
    {
        var markdown = Path.Combine(Path.GetTempPath(), $"frugal-kernels-{Guid.NewGuid():N}.md");
        try
        {
            var (code, output, error) = RunCli("kernels", "--arch", "sm_90", "--markdown", markdown);
            if (code == 1 && error.Contains("NVRTC unavailable: ", StringComparison.Ordinal))
            {
                Assert.Contains("libnvrtc.so.13 / libnvrtc.so.12 / libnvrtc.so.11.2 not found", error, StringComparison.Ordinal);
                Assert.Skip($"no real NVRTC (packages libnvrtc11.2 + libnvrtc-builtins11.8, or a CUDA toolkit): {error.Trim()}");
            }
            Assert.True(code == 0, $"frugal kernels exited {code}\n{error}\n{output}");
            Assert.DoesNotContain("FAILED", output, StringComparison.Ordinal);
            var rows = File.ReadAllLines(markdown).Select(l => MarkdownRow().Match(l)).Where(m => m.Success)
                .Select(m => (File: m.Groups[1].Value, Kernel: m.Groups[2].Value, Registers: int.Parse(m.Groups[3].Value, System.Globalization.CultureInfo.InvariantCulture)))
                .ToList();
            var files = KernelSources.Names.Where(n => n.EndsWith(".cu", StringComparison.Ordinal)).ToList();
            Assert.NotEmpty(files);
            foreach (var file in files)
            {
                Assert.Contains($"{file}: sm_90 CUBIN", output, StringComparison.Ordinal);
                var kernels = rows.Where(r => r.File == file).ToList();
                Assert.True(kernels.Count > 0, $"{file}: no kernel row");
                Assert.All(kernels, k => Assert.True(k.Registers > 0, $"{file}: {k.Kernel} uses {k.Registers} registers"));
                // Every __global__ of the source has a row: plain names exactly, macro-made ones (name_##S) by prefix.
                foreach (Match g in GlobalKernel().Matches(KernelSources.Read(file)))
                {
                    var name = g.Groups[1].Value;
                    var hash = name.IndexOf("##", StringComparison.Ordinal);
                    Assert.True(hash < 0 ? kernels.Any(k => k.Kernel == name) : kernels.Any(k => k.Kernel.StartsWith(name[..hash], StringComparison.Ordinal)),
                        $"{file}: kernel {name} has no resource row");
                }
            }
        }
        finally
        {
            File.Delete(markdown);
        }
    }

    [Fact]
    public void PtxasReportGivesRegistersStackSpillsAndMemoryPerEntry()
    {
        const string log = """
            ptxas info    : 0 bytes gmem
            ptxas info    : Compiling entry function 'heavy' for 'sm_80'
            ptxas info    : Function properties for heavy
            ptxas         .     40 bytes stack frame, 24 bytes spill stores, 16 bytes spill loads
            ptxas info    : Used 255 registers, 40 bytes lmem, 2112 bytes smem, 416 bytes cmem[0], 8 bytes cmem[2]
            ptxas info    : Function properties for __internal_accurate_pow
            ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
            ptxas info    : Compiling entry function 'light' for 'sm_80'
            ptxas info    : Function properties for light
            ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
            ptxas info    : Used 12 registers, used 0 barriers, 380 bytes cmem[0]
            """;
        var parsed = KernelCheck.ParsePtxas(log.Replace("\r", "", StringComparison.Ordinal));
        Assert.Equal(["heavy", "light"], parsed.Keys.Order(StringComparer.Ordinal));
        Assert.Equal((255, 40, 2112, 40, 424, 24, 16), parsed["heavy"]);
        Assert.Equal((12, 0, 0, 0, 380, 0, 0), parsed["light"]);
    }

    /// <summary>Runs the CLI built next to the tests (<c>Frugal.Cli.dll</c>) with the emulator out of its environment.</summary>
    private static (int Code, string Out, string Err) RunCli(params string[] args)
    {
        var here = AppContext.BaseDirectory;
        var dotnet = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host && File.Exists(host)
            ? host
            : Path.GetFullPath(Path.Combine(RuntimeEnvironment.GetRuntimeDirectory(), "..", "..", "..", "dotnet"));
        var start = new ProcessStartInfo(dotnet) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false, WorkingDirectory = here };
        start.ArgumentList.Add("exec");
        if (!File.Exists(Path.Combine(here, "Frugal.Cli.runtimeconfig.json")))
        {
            // A published test folder may hold the CLI's assembly without its own runtime files: borrow the tests'.
            foreach (var (option, file) in new[] { ("--runtimeconfig", "Frugal.Tests.runtimeconfig.json"), ("--depsfile", "Frugal.Tests.deps.json") })
            {
                start.ArgumentList.Add(option);
                start.ArgumentList.Add(Path.Combine(here, file));
            }
        }
        start.ArgumentList.Add(Path.Combine(here, "Frugal.Cli.dll"));
        foreach (var a in args)
            start.ArgumentList.Add(a);
        foreach (var name in new[] { "CUDA_PATH", "FRUGAL_CUDA_EMULATOR", "FRUGAL_CACHE" })
            start.Environment.Remove(name);
        if (EmulatedCuda.Folder is { } emulator && start.Environment.TryGetValue("LD_LIBRARY_PATH", out var paths) && paths is not null)
            start.Environment["LD_LIBRARY_PATH"] = string.Join(':', paths.Split(':').Where(p => !p.StartsWith(emulator, StringComparison.Ordinal)));
        using var process = Process.Start(start)!;
        var stderr = process.StandardError.ReadToEndAsync(TestContext.Current.CancellationToken);
        var stdout = process.StandardOutput.ReadToEndAsync(TestContext.Current.CancellationToken);
        if (!process.WaitForExit(TimeSpan.FromMinutes(5)))
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"frugal {string.Join(' ', args)} did not finish in 5 minutes");
        }
        return (process.ExitCode, stdout.GetAwaiter().GetResult(), stderr.GetAwaiter().GetResult());
    }

    [GeneratedRegex(@"^\| (\S+) \| `([^`]+)` \| (\d+) \|")]
    private static partial Regex MarkdownRow();

    [GeneratedRegex(@"__global__\s+void\s+([A-Za-z_]\w*(?:##\w+)?)\s*\(")]
    private static partial Regex GlobalKernel();
}
