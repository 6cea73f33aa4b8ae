using System.Diagnostics;

namespace Frugal.Tests;

/// <summary>The emulated CUDA device's own checks (emulator/tests): the driver's memory, launch and fault checks, the
/// kernel prelude's CUDA semantics (barriers, warp operations, atomics) and the reference cuBLAS and cuSPARSE against
/// float64 references. Native programs, each running its cases in child processes since a fault leaves a context's
/// error sticky, as on a GPU.</summary>
public class EmulatorTests
{
    public static TheoryData<string> Checks => new() { "driver_test", "prelude_test", "libs_test" };

    [Theory]
    [MemberData(nameof(Checks))]
    public async Task NativeChecksPass(string check)
    {
        if (EmulatedCuda.Folder is null)
            Assert.Skip("the CUDA emulator is not in use: not built (make -C emulator all tests, as .ci/run does), or a real CUDA driver is present");
        var program = Path.Combine(EmulatedCuda.Folder, "tests", check);
        Assert.True(File.Exists(program), $"{program} is missing: build it with make -C emulator tests");
        var start = new ProcessStartInfo(program) { RedirectStandardOutput = true, RedirectStandardError = true };
        if (check == "prelude_test")
        {
            // It compiles every kernel file of the checkout through the emulated NVRTC.
            start.ArgumentList.Add(Path.Combine(EmulatedCuda.Folder, "lib64", "libnvrtc.so.12"));
            start.ArgumentList.Add(Path.Combine(EmulatedCuda.RepositoryRoot(), "kernels"));
        }
        using var process = Process.Start(start)!;
        var token = TestContext.Current.CancellationToken;
        var stderr = process.StandardError.ReadToEndAsync(token);
        var stdout = await process.StandardOutput.ReadToEndAsync(token);
        await process.WaitForExitAsync(token);
        var lines = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(process.ExitCode == 0 && lines.Length > 0 && lines[^1].EndsWith(" 0 failed", StringComparison.Ordinal),
            $"{check} exited with {process.ExitCode}:\n{stdout}\n{await stderr}");
    }
}
