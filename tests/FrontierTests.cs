using System.Text.Json;
using Frugal.Formats;
using Frugal.Models;
using Frugal.Nn;

namespace Frugal.Tests;

/// <summary>The frontier: recipes parsed and refused, the logical size of each format, the Pareto frontier and the
/// headline's rule, and <c>frugal frontier</c> end to end (files, budget, probes, resumption, bad options).</summary>
public class FrontierTests
{
    /// <summary>Runs <paramref name="body"/> with a fresh output folder, deleted afterwards.</summary>
    private static void InTempDir(Action<string> body)
    {
        var dir = Path.Combine(Path.GetTempPath(), $"frugal-frontier-{Environment.ProcessId}-{Guid.NewGuid():N}");
        try
        {
            body(dir);
        }
        finally
        {
            if (Directory.Exists(dir))
                Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void ARecipeIsAFormatAndItsTrainingOptionsInAnyOrder()
    {
        var r = Recipe.Parse("csr:0.1+q4/uib/8bit");
        Assert.Equal(WeightFormat.Parse("csr:0.1+q4"), r.Format);
        Assert.Equal((8, true, false, null, false), (r.StateBits, r.InBackward, r.Checkpoint, r.Precision, r.RigL));
        Assert.Equal(WeightFormat.Parse("csr:0.1+q4") + "/8bit/uib", r.ToString());
        Assert.Equal(r, Recipe.Parse(r.ToString()));
        var all = Recipe.Parse("csr:0.2/rigl/bf16/ckpt/uib");
        Assert.Equal((32, true, true, DType.BF16, true), (all.StateBits, all.InBackward, all.Checkpoint, all.Precision, all.RigL));
        Assert.Equal("csr:0.2/uib/ckpt/bf16/rigl", all.ToString());
        Assert.Equal(Recipe.Dense, Recipe.Parse("dense"));
    }

    [Theory]
    [InlineData("dense/8bit/8bit", "/8bit is given twice")]
    [InlineData("dense/fast", "unknown option /fast")]
    [InlineData("q4/rigl", "/rigl needs a sparse format with F32 values")]
    [InlineData("csr:0.1+q4/rigl", "/rigl needs a sparse format with F32 values")]
    [InlineData("nosuch/8bit", "nosuch")]
    public void ABadRecipeIsRefusedNamingWhatIsWrong(string text, string expected)
    {
        var e = Assert.Throws<FormatException>(() => Recipe.Parse(text));
        Assert.Contains(expected, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void TheLogicalSizeCountsEachWeightAtItsDenseShapeAndASharedWeightOnce()
    {
        using var sparse = new Sequential(new Linear(100, 50, WeightFormat.Csr(0.1)), new ReLU(), new Linear(50, 10));
        Assert.Equal(100 * 50 + 50 + 50 * 10 + 10, sparse.LogicalParameterCount());
        Assert.True(sparse.ParameterCount() < 0.3 * sparse.LogicalParameterCount(), $"{sparse.ParameterCount()} stored");
        using var lowRank = new Sequential(new Linear(64, 48, WeightFormat.LowRank(4)));
        Assert.Equal(64 * 48 + 48, lowRank.LogicalParameterCount());
        Assert.Equal(4 * (64 + 48) + 48, lowRank.ParameterCount());
        var hidden = new Linear(32, 32, WeightFormat.Parse("q4"));
        using var shared = new Sequential(hidden, new Tanh(), new Shared(hidden));
        Assert.Equal(32 * 32 + 32, shared.LogicalParameterCount());
    }

    private static FrontierRow Row(string recipe, int width, long logical, long peak, double mean) => new(recipe, width, logical, logical, peak, mean, 0, 1);

    [Fact]
    public void TheParetoFrontierKeepsEachRowNoCheaperRowBeats()
    {
        FrontierRow[] rows = [Row("dense", 64, 100, 1000, 0.80), Row("dense", 128, 200, 2000, 0.85), Row("a", 64, 600, 900, 0.82), Row("b", 64, 600, 1500, 0.81), Row("c", 64, 600, 3000, 0.84)];
        Assert.Equal([rows[2], rows[1]], FrontierRow.Pareto(rows, higherIsBetter: true));
        // A loss: lower is better, so the cheapest row leads and only lower losses follow.
        Assert.Equal([rows[2], rows[0]], FrontierRow.Pareto(rows, higherIsBetter: false));
    }

    [Fact]
    public void TheHeadlineNeedsFactorTimesTheParametersWithinTheBudgetAndAnAtLeastAsGoodMetric()
    {
        var task = new ImageFrontier("mlp", EmbeddedData.FashionMnistSlice(), 1, 32, 1e-3, 1);
        var reference = Row("dense", 128, 1000, 5000, 0.85);
        var holds = FrontierHeadline.Of(reference, [reference, Row("lowrank", 1024, 6500, 4900, 0.86), Row("csr", 2048, 9000, 5100, 0.90), Row("q4", 512, 5000, 3000, 0.95)], 5000, 6, task);
        Assert.True(holds.Holds);
        Assert.Equal("lowrank", holds.Best!.Recipe);
        Assert.StartsWith("holds: lowrank width 1024, 6,500 logical parameters (6.5N)", holds.Text, StringComparison.Ordinal);
        var worse = FrontierHeadline.Of(reference, [reference, Row("lowrank", 1024, 6500, 4900, 0.84)], 5000, 6, task);
        Assert.False(worse.Holds);
        Assert.StartsWith("does not hold: lowrank", worse.Text, StringComparison.Ordinal);
        var none = FrontierHeadline.Of(reference, [reference, Row("csr", 2048, 9000, 5001, 0.90)], 5000, 6, task);
        Assert.Null(none.Best);
        Assert.StartsWith("does not hold: no compressed model of at least 6N", none.Text, StringComparison.Ordinal);
    }

    [Fact]
    public void FrontierTrainsEachPointOnceMeasuresItsWholePeakAndResumes()
    {
        InTempDir(dir =>
        {
            string[] args = ["frontier", "--model", "mlp", "--data", "embedded", "--widths", "8,32", "--budget-of", "dense:16", "--steps-per-epoch", "3", "--batch", "32",
                "--formats", "lowrank:0.25+q8/8bit/uib,csr:0.5/rigl,dense/uib", "--out", dir];
            var (code, output, err) = CliTests.Run(args);
            Assert.True(code == 0, output + err);
            // The reference width joins the widths and is trained first; every point of the sweep is reported.
            Assert.Contains("[1/12] dense width 16 seed 1: test accuracy", output, StringComparison.Ordinal);
            Assert.Contains("[12/12] ", output, StringComparison.Ordinal);
            foreach (var file in new[] { "points.jsonl", "frontier.json", "frontier.csv", "frontier.png", "frontier.svg" })
                Assert.True(new FileInfo(Path.Combine(dir, file)).Length > 0, file);
            using var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "frontier.json")));
            var rows = json.RootElement.GetProperty("rows").EnumerateArray().ToList();
            var dense16 = rows.Single(r => r.GetProperty("recipe").GetString() == "dense" && r.GetProperty("width").GetInt32() == 16);
            var budget = json.RootElement.GetProperty("budgetBytes").GetInt64();
            Assert.Equal(dense16.GetProperty("peakBytes").GetInt64(), budget);
            // The whole run's peak holds at least the weights, gradients, both Adam moments and one input batch.
            var parameters = dense16.GetProperty("logicalParameters").GetInt64();
            Assert.Equal(784 * 16 + 16 + 16 * 16 + 16 + 16 * 10 + 10, parameters);
            Assert.True(budget > 16 * parameters + 32 * 784 * 4, $"peak {budget}");
            // Each recipe trains below, at or above the budget, each point once; the csv has one line per row.
            Assert.Equal(12, File.ReadAllLines(Path.Combine(dir, "points.jsonl")).Count(l => l.Contains("\"Seed\":1", StringComparison.Ordinal)) + json.RootElement.GetProperty("overBudget").GetArrayLength());
            Assert.Equal(rows.Count + 1, File.ReadAllLines(Path.Combine(dir, "frontier.csv")).Length);
            var lowRank8 = rows.Single(r => r.GetProperty("recipe").GetString()!.StartsWith("lowrank", StringComparison.Ordinal) && r.GetProperty("width").GetInt32() == 8);
            Assert.True(lowRank8.GetProperty("peakBytes").GetInt64() < budget);
            Assert.Contains(rows, r => r.GetProperty("pareto").GetBoolean());
            Assert.Contains("headline", output, StringComparison.Ordinal);

            // A re-run trains nothing; a half-written last line is dropped and only that point runs again.
            var lines = File.ReadAllLines(Path.Combine(dir, "points.jsonl"));
            var (again, againOut, _) = CliTests.Run(args);
            Assert.Equal(0, again);
            Assert.Equal(lines.Length, File.ReadAllLines(Path.Combine(dir, "points.jsonl")).Length);
            Assert.Equal(12 - json.RootElement.GetProperty("overBudget").GetArrayLength(), againOut.Split('\n').Count(l => l.EndsWith("(finished before)", StringComparison.Ordinal)));
            var last = lines[^1];
            File.WriteAllText(Path.Combine(dir, "points.jsonl"), string.Join("\n", lines[..^1]) + "\n" + last[..(last.Length / 2)]);
            var (cut, cutOut, _) = CliTests.Run(args);
            Assert.Equal(0, cut);
            Assert.Contains("dropped 1 unreadable line(s)", cutOut, StringComparison.Ordinal);
            var rewritten = File.ReadAllLines(Path.Combine(dir, "points.jsonl"));
            Assert.Equal(lines.Length, rewritten.Length);
            static string Key(string line) => JsonDocument.Parse(line).RootElement.GetProperty("Key").GetString()!;
            Assert.Equal(Key(last), Key(rewritten[^1]));
        });
    }

    [Fact]
    public void ARecipeOverTheBudgetIsProbedNotTrainedAndATooSmallBudgetHasNoReference()
    {
        InTempDir(dir =>
        {
            var (code, output, err) = CliTests.Run("frontier", "--model", "mlp", "--data", "embedded", "--widths", "8", "--budget", "10KiB", "--steps-per-epoch", "2",
                "--formats", "q8/8bit", "--out", dir);
            Assert.True(code == 0, output + err);
            Assert.Contains("budget: 10,240 bytes", output, StringComparison.Ordinal);
            Assert.Matches(@"\[2/2\] q8:\S+/8bit width 8: over budget \([\d,]+ bytes after 2 steps\), not trained", output);
            Assert.Contains("no dense model fits the 10,240-byte budget", output, StringComparison.Ordinal);
        });
    }

    [Fact]
    public void TheGptFrontierMeasuresValidationLossAndReportsARecipeItCannotTrain()
    {
        InTempDir(dir =>
        {
            var (code, output, err) = CliTests.Run("frontier", "--model", "gpt", "--widths", "32", "--budget-of", "dense:32", "--steps", "2", "--layers", "1",
                "--context", "16", "--batch", "2", "--formats", "lowrank:0.5/8bit,csr:0.5/rigl", "--out", dir);
            Assert.True(code == 0, output + err);
            Assert.Matches(@"\[1/3\] dense width 32 seed 1: validation loss \d\.\d{4}", output);
            Assert.Contains("the GPT frontier does not run RigL", output, StringComparison.Ordinal);
            using var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "frontier.json")));
            Assert.False(json.RootElement.GetProperty("higherIsBetter").GetBoolean());
            Assert.Single(json.RootElement.GetProperty("invalid").EnumerateArray());
            Assert.All(json.RootElement.GetProperty("rows").EnumerateArray(), r => Assert.InRange(r.GetProperty("mean").GetDouble(), 1.0, 6.0));

            // Another sweep in the same folder reports only its own points: the RigL error above is not among them.
            var (again, againOut, againErr) = CliTests.Run("frontier", "--model", "gpt", "--widths", "32", "--budget-of", "dense:32", "--steps", "3", "--layers", "1",
                "--context", "16", "--batch", "2", "--formats", "lowrank:0.5/8bit", "--out", dir);
            Assert.True(again == 0, againOut + againErr);
            Assert.DoesNotContain("RigL", againOut, StringComparison.Ordinal);
            using var second = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "frontier.json")));
            Assert.Empty(second.RootElement.GetProperty("invalid").EnumerateArray());
        });
    }

    [Theory]
    [InlineData("--budget", "1MiB", "--budget-of", "dense:8", "give --budget or --budget-of, not both")]
    [InlineData("--budget", "lots", "--seeds", "1", "--budget must be a positive byte count")]
    [InlineData("--budget-of", "csr:64", "--seeds", "1", "--budget-of must be dense:WIDTH")]
    [InlineData("--formats", "dense/turbo", "--seeds", "1", "--formats: 'dense/turbo': unknown option /turbo")]
    [InlineData("--widths", "8,0", "--seeds", "1", "--widths must be comma-separated integers >= 1, got '8,0'")]
    [InlineData("--tokens", "1000", "--seeds", "1", "--tokens is for gpt; mlp and cnn take --epochs, --steps-per-epoch and --data")]
    [InlineData("--steps", "3", "--seeds", "1", "--steps is for gpt; mlp and cnn take --epochs, --steps-per-epoch and --data")]
    public void BadFrontierOptionsAreUsageErrors(string o1, string v1, string o2, string v2, string expected)
    {
        var (code, _, err) = CliTests.Run("frontier", "--model", "mlp", "--data", "embedded", o1, v1, o2, v2, "--out", Path.Combine(Path.GetTempPath(), "frugal-frontier-unused"));
        Assert.Equal(2, code);
        Assert.Contains(expected, err, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("3000000", 3_000_000)]
    [InlineData("2.5MiB", 2_621_440)]
    [InlineData("512 KiB", 524_288)]
    [InlineData("1GB", 1_000_000_000)]
    [InlineData("77B", 77)]
    public void BudgetsTakeBinaryAndDecimalSuffixes(string text, long bytes) => Assert.Equal(bytes, FrontierCommand.ParseBytes(text));
}
