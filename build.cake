// Frugal build targets: dotnet cake --target=<Build|Test|Demo|Bench|KernelCheck>
var target = Argument("target", "Test");
var configuration = Argument("configuration", "Release");

Task("Build")
    .Does(() =>
{
    DotNetBuild("Engine.sln", new DotNetBuildSettings { Configuration = configuration });
});

Task("Test")
    .IsDependentOn("Build")
    .Does(() =>
{
    // Microsoft Testing Platform runner (global.json): the same command as the README's.
    var exit = StartProcess("dotnet", new ProcessSettings {
        Arguments = $"test --solution Engine.sln -c {configuration} --no-build",
    });
    if (exit != 0) throw new Exception($"tests failed (exit {exit})");
});

Task("Demo")
    .IsDependentOn("Build")
    .Does(() =>
{
    // The main job: MLP on Fashion-MNIST (or the embedded slice), then memory by category.
    var exit = StartProcess("dotnet", new ProcessSettings {
        Arguments = $"run -c {configuration} --no-build --project models -- train --model mlp --epochs 1",
    });
    if (exit != 0) throw new Exception($"demo failed (exit {exit})");
});

Task("Bench")
    .IsDependentOn("Build")
    .Does(() =>
{
    foreach (var runner in new[] { "sgemm", "train", "ops" })
    {
        var exit = StartProcess("dotnet", new ProcessSettings {
            Arguments = $"run -c {configuration} --no-build --project bench -- {runner}",
        });
        if (exit != 0) throw new Exception($"bench {runner} failed (exit {exit})");
    }
});

Task("KernelCheck")
    .Does(() =>
{
    // Every kernels/*.cu compiled to PTX for sm_80 and sm_90 by clang in CUDA device-only mode, without the CUDA
    // toolkit (kernels/common.cuh declares what NVRTC would provide). Any warning or error fails the target.
    var clang = Argument("clang", "clang-19");
    var sources = GetFiles("kernels/**/*.cu");
    if (sources.Count == 0) throw new Exception("KernelCheck: no kernels/*.cu found");
    var outDir = Directory("artifacts/kernelcheck");
    EnsureDirectoryExists(outDir);
    var failures = new List<string>();
    foreach (var cu in sources)
    {
        foreach (var arch in new[] { "sm_80", "sm_90" })
        {
            var ptx = outDir + File($"{cu.GetFilenameWithoutExtension()}.{arch}.ptx");
            int exit;
            try
            {
                exit = StartProcess(clang, new ProcessSettings {
                    Arguments = $"-x cuda --cuda-device-only --cuda-gpu-arch={arch} --cuda-feature=+ptx80 -nocudainc -nocudalib -std=c++17 -Wall -Wextra -Werror -S \"{cu.FullPath}\" -o \"{MakeAbsolute(ptx).FullPath}\"",
                });
            }
            catch (Exception e)
            {
                throw new Exception($"KernelCheck: cannot run {clang} ({e.Message}); install it with: apt-get install -y clang-19");
            }
            Information($"{(exit == 0 ? "ok  " : "FAIL")} {cu.GetFilename()} {arch}");
            if (exit != 0) failures.Add($"{cu.GetFilename()} ({arch})");
        }
    }
    if (failures.Count > 0) throw new Exception($"KernelCheck failed: {string.Join(", ", failures)}");
    Information($"KernelCheck: {sources.Count} kernel files compile for sm_80 and sm_90");
});

RunTarget(target);
