using System.Globalization;
using Frugal.IO;
using Frugal.Formats;
using Frugal.Models;
using Frugal.Nn;
using Frugal.Optim;

namespace Frugal.Tests;

/// <summary>Checkpoints written by an earlier main (tests/data/checkpoints-v1, see its README) still load into
/// today's layers of the same formats, and the loaded model gives the saved output: bit for bit, or within
/// <c>tolerance</c> where a kernel's rounding has changed since (the GPT's GELU runs vectorized as x·σ(2u) since
/// 2026-12-03, an identity of the tanh form that rounds differently in the last bits).</summary>
public class CheckpointCompatibilityTests
{
    private static string Fixture(string name) => Path.Combine(AppContext.BaseDirectory, "data", "checkpoints-v1", name + ".safetensors");

    private static void AssertSavedLogits(IReadOnlyDictionary<string, string> meta, Tensor output, double tolerance = 0)
    {
        var expected = meta["logits"].Split(',').Select(s => BitConverter.Int32BitsToSingle(int.Parse(s, CultureInfo.InvariantCulture))).ToArray();
        var actual = output.ToArray<float>();
        Assert.Equal(expected.Length, actual.Length);
        for (var i = 0; i < expected.Length; i++)
        {
            var same = tolerance == 0
                ? BitConverter.SingleToInt32Bits(expected[i]) == BitConverter.SingleToInt32Bits(actual[i])
                : Math.Abs(expected[i] - actual[i]) <= tolerance * (1 + Math.Abs(expected[i]));
            Assert.True(same, $"logit {i}: saved {expected[i]:R}, loaded model gives {actual[i]:R}");
        }
    }

    [Theory]
    [InlineData("mlp", "dense")]
    [InlineData("mlp", "csr:0.1")]
    [InlineData("mlp", "bsr:0.25:16")]
    [InlineData("mlp", "lowrank:0.25")]
    [InlineData("mlp", "q4")]
    [InlineData("mlp", "q8:latent")]
    [InlineData("mlp", "q1:row")]
    [InlineData("cnn", "dense")]
    [InlineData("cnn", "csr:0.2")]
    [InlineData("cnn", "lowrank:0.25")]
    [InlineData("cnn", "q4")]
    public void AnOlderCheckpointLoadsAndGivesItsOutput(string model, string format)
    {
        var device = Device.CreateCpu($"compat-{model}-{format}");
        Init.ManualSeed(5);   // not the saved model's seed: everything must come from the file
        var f = WeightFormat.Parse(format);
        using var m = model == "mlp" ? Zoo.Mlp(64, 32, 10, device, f) : Zoo.Cnn(1, 8, 10, 32, device, f);
        using var opt = new Adam(m.Parameters(), 1e-2, stateBits: format == "q4" ? 8 : 32);
        var meta = Checkpoints.Load(Fixture($"{model}-{format.Replace(':', '_')}"), m, opt);
        Assert.Equal(3, opt.StepCount);
        using (Autograd.NoGrad())
        {
            using var x = Tensor.Uniform(model == "mlp" ? new Shape(8, 64) : new Shape(8, 1, 8, 8), -1, 1, 999, device: device);
            using var y = m.Forward(x);
            AssertSavedLogits(meta, y);
        }
    }

    [Fact]
    public void AnOlderGptCheckpointLoadsAndGivesItsOutput()
    {
        var device = Device.CreateCpu("compat-gpt");
        Init.ManualSeed(5);
        var config = new GptConfig(16, 8, 2, 32, 2, WeightFormat.Parse("csr:0.25"), WeightFormat.Parse("q4"), EmbeddingFormat: WeightFormat.Parse("lowrank:8"));
        using var m = new Gpt(config, device);
        using var opt = new AdamW(m.Parameters(), 1e-2);
        var meta = Checkpoints.Load(Fixture("gpt-csr_q4_lowrank"), m, opt);
        using (Autograd.NoGrad())
        {
            using var x = Tensor.FromArray(Enumerable.Range(0, 16).Select(i => (i * 3 + 1) % 16).ToArray(), new Shape(2, 8), device);
            using var y = m.Forward(x);
            AssertSavedLogits(meta, y, tolerance: 1e-5);
        }
    }
}
