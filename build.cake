// Frugal build targets: dotnet cake --target=<Build|Test|Demo|Bench|KernelCheck|Emulator|GpuBundle>
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
    // 1. The real compiler: `frugal kernels` compiles every embedded kernel file through the engine's own NVRTC path
    //    (fresh cache) for sm_80 and sm_90 and reads each kernel's registers, stack, shared, local and constant memory
    //    and spills (cuobjdump -res-usage and ptxas -v). Any error or NVRTC/ptxas warning fails the target. CUDA_PATH
    //    is emptied so that the emulator's libnvrtc (emulator/out) is never the one checked.
    var markdown = MakeAbsolute(File("artifacts/kernelcheck/kernels.md"));
    EnsureDirectoryExists(Directory("artifacts/kernelcheck"));
    var arguments = $"run -c {configuration} --project models -- kernels --arch sm_80,sm_90 --markdown \"{markdown.FullPath}\"";
    var cuobjdump = Argument("cuobjdump", "/opt/frugal/cuda-11.8/usr/bin/cuobjdump");
    if (FileExists(cuobjdump)) arguments += $" --cuobjdump \"{cuobjdump}\"";
    else Warning($"KernelCheck: no {cuobjdump} (emulator/install-cuda-parts.sh extracts it): frugal kernels looks for one itself");
    var exit = StartProcess("dotnet", new ProcessSettings {
        Arguments = arguments,
        EnvironmentVariables = new Dictionary<string, string> { ["CUDA_PATH"] = "", ["FRUGAL_CUDA_EMULATOR"] = "" },
    });
    if (exit != 0) throw new Exception($"KernelCheck: frugal kernels failed (exit {exit}); NVRTC is Debian's libnvrtc11.2 + libnvrtc-builtins11.8 (emulator/install-cuda-parts.sh)");
    Information($"KernelCheck: every kernel compiles with NVRTC for sm_80 and sm_90; table in {markdown.FullPath}");

    // 2. clang-19 in CUDA device-only mode with -Wall -Wextra -Werror (kernels/common.cuh declares what NVRTC would
    //    provide): it warns where NVRTC does not (unused parameters, signed/unsigned comparisons). --clang=none skips it.
    var clang = Argument("clang", "clang-19");
    if (clang == "none") { Warning("KernelCheck: clang pass skipped (--clang=none)"); return; }
    var sources = GetFiles("kernels/**/*.cu");
    if (sources.Count == 0) throw new Exception("KernelCheck: no kernels/*.cu found");
    var outDir = Directory("artifacts/kernelcheck");
    var failures = new List<string>();
    foreach (var cu in sources)
    {
        foreach (var arch in new[] { "sm_80", "sm_90" })
        {
            var ptx = outDir + File($"{cu.GetFilenameWithoutExtension()}.{arch}.ptx");
            try
            {
                exit = StartProcess(clang, new ProcessSettings {
                    Arguments = $"-x cuda --cuda-device-only --cuda-gpu-arch={arch} --cuda-feature=+ptx80 -nocudainc -nocudalib -std=c++17 -Wall -Wextra -Werror -S \"{cu.FullPath}\" -o \"{MakeAbsolute(ptx).FullPath}\"",
                });
            }
            catch (Exception e)
            {
                throw new Exception($"KernelCheck: cannot run {clang} ({e.Message}); install it with: apt-get install -y clang-19 (or give --clang=none)");
            }
            Information($"{(exit == 0 ? "ok  " : "FAIL")} {cu.GetFilename()} {arch} (clang)");
            if (exit != 0) failures.Add($"{cu.GetFilename()} ({arch})");
        }
    }
    if (failures.Count > 0) throw new Exception($"KernelCheck (clang) failed: {string.Join(", ", failures)}");
    Information($"KernelCheck: {sources.Count} kernel files also compile warning-free with {clang} for sm_80 and sm_90");
});

Task("Emulator")
    .Does(() =>
{
    // The emulated CUDA device (emulator/out/lib64: libcuda, libnvrtc, libcublas, libcusparse), built against the
    // real CUDA headers that emulator/install-cuda-parts.sh extracts.
    var include = Argument("cuda-include", "/opt/frugal/cuda-11.8/usr/include");
    var exit = StartProcess("make", new ProcessSettings { Arguments = $"-C emulator CUDA_INCLUDE={include}" });
    if (exit != 0) throw new Exception($"Emulator: make failed (exit {exit})");
});

Task("GpuBundle")
    .Does(() =>
{
    // A folder (< 60 MiB) that runs on a Linux x86-64 CUDA machine with no .NET and no network: the .NET runtime
    // this build uses and the framework-dependent test, bench and CLI builds, each as tar.xz, plus run.sh
    // (bench/gpu/run.sh) which writes one Markdown report.
    var bundle = Directory("gpu-bundle");
    var stage = Directory("artifacts/gpu-bundle-stage");
    CleanDirectory(bundle);
    CleanDirectory(stage);
    foreach (var (project, name) in new[] { ("tests", "tests"), ("bench", "bench"), ("models", "cli") })
    {
        // linux-x64 only: native packages (SkiaSharp for the plots) would otherwise ship every platform's library.
        DotNetPublish(project, new DotNetPublishSettings {
            Configuration = configuration, SelfContained = false, Runtime = "linux-x64", OutputDirectory = stage + Directory($"app/{name}"),
        });
    }

    // The shared runtime the projects target: the newest Microsoft.NETCore.App 10.x that `dotnet` lists.
    IEnumerable<string> listed;
    StartProcess("dotnet", new ProcessSettings { Arguments = "--list-runtimes", RedirectStandardOutput = true }, out listed);
    var runtime = listed.Select(l => System.Text.RegularExpressions.Regex.Match(l, @"^Microsoft\.NETCore\.App (10\.\S+) \[(.+)\]$"))
        .Where(m => m.Success).Select(m => (Version: m.Groups[1].Value, Dir: m.Groups[2].Value))
        .OrderBy(r => Version.Parse(r.Version.Split('-')[0])).LastOrDefault();
    if (runtime.Version is null) throw new Exception("GpuBundle: no Microsoft.NETCore.App 10.x runtime found by `dotnet --list-runtimes`");
    var dotnetRoot = System.IO.Path.GetFullPath(System.IO.Path.Combine(runtime.Dir, "..", ".."));

    void Tar(string archive, string from, string what)
    {
        var exit = StartProcess("tar", new ProcessSettings {
            // One stream with a dictionary larger than the input: the three apps' shared assemblies and native
            // libraries are stored once.
            Arguments = $"-c -I \"xz -T1 --lzma2=preset=6,dict=192MiB\" -f \"{MakeAbsolute(File(archive)).FullPath}\" -C \"{from}\" {what}",
        });
        if (exit != 0) throw new Exception($"GpuBundle: tar of {what} failed (exit {exit})");
    }
    Tar($"{bundle}/runtime.tar.xz", dotnetRoot, $"dotnet host shared/Microsoft.NETCore.App/{runtime.Version}");
    Tar($"{bundle}/app.tar.xz", MakeAbsolute(stage).FullPath, "app");
    CopyFile("bench/gpu/run.sh", $"{bundle}/run.sh");
    StartProcess("chmod", new ProcessSettings { Arguments = $"+x {bundle}/run.sh" });
    if (DirectoryExists("bench/torch")) CopyDirectory("bench/torch", $"{bundle}/torch");
    IEnumerable<string> head;
    StartProcess("git", new ProcessSettings { Arguments = "describe --always --dirty", RedirectStandardOutput = true }, out head);
    System.IO.File.WriteAllText($"{bundle}/VERSION", $"{string.Join("", head)}, .NET runtime {runtime.Version}\n");

    var bytes = GetFiles($"{bundle}/**/*").Sum(f => new System.IO.FileInfo(f.FullPath).Length);
    Information($"GpuBundle: {bundle} holds {bytes / 1048576.0:F1} MiB (runtime {runtime.Version} from {dotnetRoot})");
    if (bytes >= 60L * 1024 * 1024) throw new Exception($"GpuBundle: {bytes / 1048576.0:F1} MiB is over the 60 MiB limit");
});

RunTarget(target);
