using System.Text.Json;
using Frugal.Formats;
using Frugal.Models;
using Frugal.Nn;
using static Frugal.Models.OverparamCommand;

namespace Frugal.Tests;

/// <summary><c>frugal overparam</c>: success rates per hidden width of dense, sparse-from-larger and RigL networks on
/// XOR and a two-unit teacher. Everything is seeded, so the facts asserted are exact.</summary>
public class OverparamTests
{
    [Fact]
    public void SmallXorRunPrintsTheTable_AndWideDenseNetsSolveXorForEverySeed()
    {
        var dir = Path.Combine(Path.GetTempPath(), "frugal-overparam-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            var md = Path.Combine(dir, "xor.md");
            var (code, output, err) = CliTests.Run("overparam", "--widths", "2,8", "--seeds", "6", "--steps", "300", "--markdown", md);
            Assert.True(code == 0, err);
            Assert.Contains("success = all 4 points classified correctly", output, StringComparison.Ordinal);
            Assert.Contains("sparse-from-32 weights", output, StringComparison.Ordinal);
            Assert.Contains("width   8 dense : 6/6 (100%)", output, StringComparison.Ordinal);
            Assert.Contains("width   2 sparse: 0/6 (0%)", output, StringComparison.Ordinal);
            Assert.Contains("smallest width with success >= 95%: dense 8,", output, StringComparison.Ordinal);

            // The Markdown table and the JSON beside it hold the same six cells.
            var text = File.ReadAllText(md);
            Assert.Contains("| width | dense weights | dense success |", text, StringComparison.Ordinal);
            Assert.Contains("| 8 | 32 | 6/6 (100%) [61%–100%] | 32 |", text, StringComparison.Ordinal);
            using var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "xor.json")));
            var cells = json.RootElement.GetProperty("cells").EnumerateArray().ToList();
            Assert.Equal(6, cells.Count);
            var dense2 = cells.Single(c => c.GetProperty("width").GetInt32() == 2 && c.GetProperty("method").GetString() == "dense");
            var dense8 = cells.Single(c => c.GetProperty("width").GetInt32() == 8 && c.GetProperty("method").GetString() == "dense");
            Assert.Equal(6, dense8.GetProperty("successes").GetInt32());
            Assert.True(dense8.GetProperty("successes").GetInt32() >= dense2.GetProperty("successes").GetInt32());
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void WidthsAtLeastTheSparseWidthHaveNoSparseColumns()
    {
        var (code, output, err) = CliTests.Run("overparam", "--widths", "2,4", "--from", "4", "--seeds", "2", "--steps", "20");
        Assert.True(code == 0, err);
        Assert.Contains("sparse-from-4 weights", output, StringComparison.Ordinal);
        Assert.Contains("width   2 rigl  :", output, StringComparison.Ordinal);
        Assert.DoesNotContain("width   4 sparse", output, StringComparison.Ordinal);
        Assert.DoesNotContain("width   4 rigl", output, StringComparison.Ordinal);
        var row = output.Split('\n').Single(l => l.StartsWith("│     4 │", StringComparison.Ordinal));
        Assert.Equal(4, row.Split('—').Length - 1);
    }

    [Fact]
    public void TheCriterionCountsOnlyNetworksThatClassifyEveryXorPoint()
    {
        // XOR's two-unit solution on {-1, 1}²: h₁ = tanh(2(x₁ + x₂ + 1)), h₂ = tanh(2(x₁ + x₂ − 1)), class-1 logit
        // h₁ − h₂ − 1: positive in the middle (x₁ + x₂ = 0), negative at the corners.
        var xor = Xor();
        using var x = Tensor.FromArray<float>(xor.Inputs, new Shape(4, 2));
        using var y = Tensor.FromArray<int>(xor.Labels, new Shape(4));
        using var first = new Linear(2, 2);
        using var second = new Linear(2, 2);
        using var model = new Sequential(first, new Tanh(), second);
        Set(first, [2, 2, 2, 2], [2, -2]);
        Set(second, [0, 0, 1, -1], [0, -1]);
        var (accuracy, _) = Evaluate(model, x, y, xor.Labels);
        Assert.Equal(1.0, accuracy);
        Assert.True(IsSuccess(accuracy, xor));

        Set(second, [0, 0, 1, -1], [0, -1.99f]);   // the middle points' logit is 0.93 − 0.99 < 0: two wrong
        (accuracy, _) = Evaluate(model, x, y, xor.Labels);
        Assert.Equal(0.5, accuracy);
        Assert.False(IsSuccess(accuracy, xor));
        Assert.False(IsSuccess(0.75, xor));

        var teacher = Teacher();
        Assert.True(IsSuccess(254 / 256.0, teacher));
        Assert.False(IsSuccess(253 / 256.0, teacher));
    }

    [Fact]
    public void UntrainedNetworksAreNotSuccesses()
    {
        var xor = Xor();
        var wide = RunCell(xor, Method.Dense, 8, 32, seeds: 10, steps: 1, lr: 0.1, Device.Cpu);
        Assert.True(wide.Successes <= 1, $"{wide.Successes}/10 width-8 nets solved XOR after one step");
        var trained = RunCell(xor, Method.Dense, 8, 32, seeds: 10, steps: 300, lr: 0.1, Device.Cpu);
        Assert.Equal(10, trained.Successes);
    }

    [Fact]
    public void SparseFromLargerNetsStoreTheDenseNetsWeightCount()
    {
        foreach (var features in new[] { 2, TeacherFeatures })
        {
            foreach (var width in new[] { 1, 2, 3, 8, 16 })
            {
                Init.ManualSeed((ulong)width);
                using var dense = Build(Method.Dense, features, width, 32, Device.Cpu);
                using var sparse = Build(Method.Sparse, features, width, 32, Device.Cpu);
                var expected = features * width + 2 * width;
                Assert.Equal(expected, StoredWeights(dense));
                Assert.Equal(expected, StoredWeights(sparse));
                var weights = sparse.Weights().Select(w => Assert.IsType<SparseWeight>(w.Weight)).ToList();
                Assert.Equal(new[] { features * width, 2 * width }, weights.Select(w => w.Pattern.Nnz));
                Assert.All(weights, w => Assert.Equal("csr", w.FormatName));
                Assert.Equal((32, features), (weights[0].Rows, weights[0].Cols));
                // Stored values, plus the 32 + 2 dense biases: what the optimizer trains.
                Assert.Equal(expected + 34, sparse.ParameterCount());
            }
        }
        // RigL moves weights, never adds any.
        var trial = Train(Xor(), Method.RigL, 4, 32, seed: 0, steps: 200, lr: 0.1, Device.Cpu);
        Assert.Equal(16, trial.Weights);
        Assert.Equal((100, 0.3, 1500L), RigLSchedule(2000));
    }

    [Fact]
    public void TheTeacherTaskIsBalancedFixedAndBeyondOneHiddenUnit()
    {
        var teacher = Teacher();
        Assert.Equal(TeacherPoints, teacher.Count);
        Assert.Equal(TeacherPoints * TeacherFeatures, teacher.Inputs.Length);
        var ones = teacher.Labels.Count(l => l == 1);
        Assert.InRange(ones, 0.4 * TeacherPoints, 0.6 * TeacherPoints);
        Assert.Equal(teacher.Inputs, Teacher().Inputs);
        Assert.Equal(teacher.Labels, Teacher().Labels);
        // One tanh unit draws one hyperplane: a slab is out of its reach; three units learn it.
        var one = Train(teacher, Method.Dense, 1, 32, seed: 0, steps: 2000, lr: 0.1, Device.Cpu);
        Assert.InRange(one.Accuracy, 0.5, 0.9);
        Assert.False(one.Success);
        var three = Train(teacher, Method.Dense, 3, 32, seed: 0, steps: 2000, lr: 0.1, Device.Cpu);
        Assert.True(three.Success, $"width 3 reached {three.Accuracy:P1}");
    }

    [Fact]
    public void WilsonIntervalMatchesTheFormula()
    {
        var (low, high) = Wilson(87, 100);
        Assert.Equal(0.7902, low, 3);
        Assert.Equal(0.9224, high, 3);
        Assert.Equal(0.0, Wilson(0, 10).Low, 9);
        Assert.Equal(1.0, Wilson(10, 10).High, 9);
    }

    [Fact]
    public void BadOptionsExitWithCode2NamingTheOption()
    {
        foreach (var (args, message) in new (string[], string)[]
        {
            (["--widths", "0"], "--widths must be comma-separated integers >= 1, got '0'"),
            (["--widths", "2,x"], "--widths must be comma-separated integers >= 1, got '2,x'"),
            (["--widths", "2,2"], "--widths lists 2 twice"),
            (["--task", "mnist"], "--task must be one of xor|teacher, got 'mnist'"),
            (["--seeds", "0"], "--seeds must be an integer >= 1, got '0'"),
            (["--steps", "many"], "--steps must be an integer >= 1, got 'many'"),
            (["--from", "1"], "--from must be an integer >= 2, got '1'"),
            (["--lr", "-1"], "--lr must be a positive number, got '-1'"),
            (["--device", "tpu"], "--device must be cpu, cuda or cuda:N, got 'tpu'"),
            (["--bogus", "1"], "unknown option --bogus"),
        })
        {
            var (code, _, err) = CliTests.Run(["overparam", .. args]);
            Assert.Equal(2, code);
            Assert.Contains(message, err, StringComparison.Ordinal);
            Assert.Contains("frugal overparam", err, StringComparison.Ordinal);
            Assert.DoesNotContain("   at ", err, StringComparison.Ordinal);
        }
    }

    private static void Set(Linear layer, float[] weight, float[] bias)
    {
        using var noGrad = Autograd.NoGrad();
        using var w = Tensor.FromArray(weight, layer.OutFeatures, layer.InFeatures);
        using var b = Tensor.FromArray(bias, layer.OutFeatures);
        F.CopyInto(Assert.IsType<DenseWeight>(layer.Weight).Value, w);
        F.CopyInto(layer.Bias!, b);
    }
}
