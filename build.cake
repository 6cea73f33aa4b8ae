// Frugal build targets: dotnet cake --target=<Build|Test|Demo|Bench>
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

RunTarget(target);
