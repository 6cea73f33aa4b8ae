using System.Text.RegularExpressions;

namespace Frugal.Tests;

/// <summary>Every C# block of the README stands, exactly as written, in a project under samples/ that the solution
/// builds (so CI compiles each one): a README example cannot drift from the API.</summary>
public partial class ReadmeSamplesTests
{
    [GeneratedRegex("```csharp\n(.*?)```", RegexOptions.Singleline)]
    private static partial Regex CSharpBlock();

    [Fact]
    public void EveryReadmeCSharpBlockIsInASampleProjectVerbatim()
    {
        var root = TestUtil.RepositoryRoot();
        if (root is null)
            Assert.Skip("the repository (README.md, samples/) is not above the test binaries here (the GPU bundle runs the published tests alone)");
        var blocks = CSharpBlock().Matches(File.ReadAllText(Path.Combine(root, "README.md"))).Select(m => m.Groups[1].Value).ToList();
        Assert.True(blocks.Count >= 5, $"{blocks.Count} C# blocks in the README");
        var samples = Directory.GetFiles(Path.Combine(root, "samples"), "*.cs", SearchOption.AllDirectories)
            .Where(f => !f.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}", StringComparison.Ordinal)
                && !f.Contains($"{Path.DirectorySeparatorChar}bin{Path.DirectorySeparatorChar}", StringComparison.Ordinal))
            .Select(File.ReadAllText).ToList();
        foreach (var block in blocks)
            Assert.True(samples.Any(s => s.Contains(block, StringComparison.Ordinal)), $"this README block is in no samples/ file:\n{block}");
        var solution = File.ReadAllText(Path.Combine(root, "Engine.sln"));
        foreach (var project in Directory.GetFiles(Path.Combine(root, "samples"), "*.csproj", SearchOption.AllDirectories))
            Assert.Contains(Path.GetFileName(project), solution, StringComparison.Ordinal);
    }
}
