using Frugal.Memory;
using Frugal.Models;
using Frugal.Nn;

namespace Frugal.Tests;

/// <summary>Causal attention against a float64 naive reference (values, and gradients by finite differences), its
/// memory-efficient mode (same results, no T × T kept), and a tiny GPT whose F32 logits and gradients (tied head
/// included) equal its float64 twin's.</summary>
public class TransformerTests
{
    /// <summary>softmax(q·kᵀ/√d + mask)·v by loops, in float64: q, k, v row-major [n, t, d].</summary>
    private static double[] NaiveAttention(double[] q, double[] k, double[] v, int n, int t, int d, bool causal)
    {
        var y = new double[n * t * d];
        for (var b = 0; b < n; b++)
        {
            for (var i = 0; i < t; i++)
            {
                var scores = new double[t];
                var max = double.NegativeInfinity;
                for (var j = 0; j < t; j++)
                {
                    double s = 0;
                    for (var c = 0; c < d; c++)
                        s += q[(b * t + i) * d + c] * k[(b * t + j) * d + c];
                    scores[j] = causal && j > i ? double.NegativeInfinity : s / Math.Sqrt(d);
                    max = Math.Max(max, scores[j]);
                }
                var sum = scores.Sum(s => Math.Exp(s - max));
                for (var j = 0; j < t; j++)
                {
                    var p = Math.Exp(scores[j] - max) / sum;
                    for (var c = 0; c < d; c++)
                        y[(b * t + i) * d + c] += p * v[(b * t + j) * d + c];
                }
            }
        }
        return y;
    }

    [Theory]
    [InlineData(true, false)]
    [InlineData(false, false)]
    [InlineData(true, true)]
    public void AttentionEqualsTheNaiveReferenceAndItsGradientsTheFiniteDifferences(bool causal, bool memoryEfficient)
    {
        const int B = 2, H = 2, T = 5, D = 3;
        var (q, k, v) = (TestUtil.Uniform(1, B * H * T * D), TestUtil.Uniform(2, B * H * T * D), TestUtil.Uniform(3, B * H * T * D));
        using (var scope = TensorScope.Begin())
        {
            var y = F.ScaledDotProductAttention(TestUtil.F64(q, B, H, T, D), TestUtil.F64(k, B, H, T, D), TestUtil.F64(v, B, H, T, D), causal, memoryEfficient);
            Assert.Equal(new Shape(B, H, T, D), y.Shape);
            TestUtil.AssertClose(NaiveAttention(q, k, v, B * H, T, D, causal), y.ToArray<double>(), 1e-12, 1e-10, "attention");
        }
        TestUtil.GradCheck(x => F.ScaledDotProductAttention(x[0], x[1], x[2], causal, memoryEfficient),
            [TestUtil.In(q, B, H, T, D), TestUtil.In(k, B, H, T, D), TestUtil.In(v, B, H, T, D)]);
    }

    [Theory]
    [MemberData(nameof(TestUtil.Devices), MemberType = typeof(TestUtil))]
    public void F32AttentionOnEachDeviceEqualsTheReference(string device)
    {
        var dev = TestUtil.DeviceFor(device);
        const int N = 3, T = 17, D = 8;
        var (q, k, v) = (TestUtil.Uniform(4, N * T * D), TestUtil.Uniform(5, N * T * D), TestUtil.Uniform(6, N * T * D));
        foreach (var efficient in new[] { false, true })
        {
            using var scope = TensorScope.Begin();
            Tensor On(double[] x) => Tensor.FromArray(x.Select(e => (float)e).ToArray(), new Shape(N, T, D), dev);
            var y = F.ScaledDotProductAttention(On(q), On(k), On(v), causal: true, efficient);
            TestUtil.AssertClose(NaiveAttention(q, k, v, N, T, D, true), [.. y.ToArray<float>().Select(e => (double)e)], 1e-5, 1e-4, $"{device}, memory-efficient {efficient}");
            // A single [T, d] head (rank 2) takes the same path.
            Tensor First(double[] x) => Tensor.FromArray(x.Take(T * D).Select(e => (float)e).ToArray(), new Shape(T, D), dev);
            var one = F.ScaledDotProductAttention(First(q), First(k), First(v), causal: true, efficient);
            Assert.Equal(new Shape(T, D), one.Shape);
            TestUtil.AssertClose(NaiveAttention(q, k, v, N, T, D, true)[..(T * D)], [.. one.ToArray<float>().Select(e => (double)e)], 1e-5, 1e-4, $"{device}, one head, memory-efficient {efficient}");
        }
    }

    [Fact]
    public void MemoryEfficientAttentionKeepsNoScoresAndGivesTheSameGradients()
    {
        const int B = 2, H = 4, T = 64, D = 16;
        (long Peak, float[] Y, float[][] Grads) Run(bool efficient)
        {
            var device = Device.CreateCpu($"attention-{efficient}");
            using var scope = TensorScope.Begin();
            var inputs = Enumerable.Range(0, 3).Select(i =>
            {
                var t = Tensor.Uniform(new Shape(B, H, T, D), -1, 1, (ulong)i + 1, device: device);
                t.RequiresGrad = true;
                return t;
            }).ToArray();
            device.Allocator.ResetPeak();
            var before = device.Allocator.Current(MemoryCategory.Activation);
            var y = F.ScaledDotProductAttention(inputs[0], inputs[1], inputs[2], causal: true, efficient);
            var kept = device.Allocator.Current(MemoryCategory.Activation) - before;
            F.Sum(y * y).Backward();
            return (kept, y.ToArray<float>(), [.. inputs.Select(t => t.Grad!.ToArray<float>())]);
        }
        var plain = Run(false);
        var efficient = Run(true);
        Assert.Equal(plain.Y, efficient.Y);
        for (var i = 0; i < 3; i++)
            TestUtil.AssertClose([.. plain.Grads[i].Select(g => (double)g)], [.. efficient.Grads[i].Select(g => (double)g)], 1e-6, 1e-5, $"gradient {i}");
        // Kept for backward: the plain op holds the [B, H, T, T] softmax output (and masked scores); the efficient one
        // only its output and the inputs it references.
        var scores = 4L * B * H * T * T;
        Assert.True(plain.Peak >= scores + 4L * B * H * T * D, $"plain kept {plain.Peak} bytes");
        Assert.True(efficient.Peak <= 2 * 4L * B * H * T * D, $"memory-efficient kept {efficient.Peak} bytes");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void TinyGptLogitsAndGradientsEqualTheFloat64Model(bool shareBlocks)
    {
        var config = new GptConfig(Vocab: 11, Context: 8, Layers: 2, Width: 16, Heads: 4, ShareBlocks: shareBlocks);
        Init.ManualSeed(5);
        using var reference = new Gpt(config, dtype: DType.F64);
        Init.ManualSeed(5);
        using var model = new Gpt(config);
        using (Autograd.NoGrad())
        {
            var refParams = reference.NamedParameters().ToDictionary(p => p.Name, p => p.Parameter);
            foreach (var (name, p) in model.NamedParameters())
            {
                using var cast = refParams[name].To(DType.F32);
                F.CopyInto(p, cast);
            }
        }
        Assert.Equal(reference.ParameterCount(), model.ParameterCount());
        var tokens = new[] { 1, 4, 7, 2, 9, 0, 3, 3, 10, 5, 6, 8 };
        var targets = tokens.Skip(1).Append(0).ToArray();
        using var scope = TensorScope.Begin();
        var x = Tensor.FromArray(tokens, 2, 6);
        var yTargets = Tensor.FromArray(targets, 2, 6);
        var expected = reference.Forward(x);
        var logits = model.Forward(x);
        Assert.Equal(new Shape(2, 6, 11), logits.Shape);
        TestUtil.AssertClose(expected.ToArray<double>(), [.. logits.ToArray<float>().Select(v => (double)v)], 1e-4, 1e-4, "logits");
        Gpt.Loss(expected, yTargets).Backward();
        Gpt.Loss(logits, yTargets).Backward();
        var refGrads = reference.NamedParameters().ToDictionary(p => p.Name, p => p.Parameter.Grad!.ToArray<double>());
        foreach (var (name, p) in model.NamedParameters())
            TestUtil.AssertClose(refGrads[name], [.. p.Grad!.ToArray<float>().Select(v => (double)v)], 2e-5, 1e-3, name);
        // The head is the token embedding: its gradient holds both uses (lookup rows and head columns).
        Assert.Contains(model.NamedParameters(), p => p.Name == "wte.weight");
        Assert.DoesNotContain(model.NamedParameters(), p => p.Name.Contains("head", StringComparison.Ordinal));
        var blocks = model.Modules().OfType<TransformerBlock>().Count();
        Assert.Equal(shareBlocks ? 1 : 2, blocks);
    }

    [Fact]
    public void CheckpointedBlocksKeepOnlyTheirInputsAndGiveTheSameGradients()
    {
        var kept = new long[2];
        var grads = new List<double[]>[2];
        for (var run = 0; run < 2; run++)
        {
            var device = Device.CreateCpu($"gpt-checkpoint-{run}");
            Init.ManualSeed(8);
            using var model = new Gpt(new GptConfig(13, 16, Layers: 3, Width: 16, Heads: 2, Checkpoint: run == 1), device);
            using var scope = TensorScope.Begin();
            var x = Tensor.FromArray(Enumerable.Range(0, 32).Select(i => i * 7 % 13).ToArray(), new Shape(2, 16), device);
            var y = Tensor.FromArray(Enumerable.Range(0, 32).Select(i => i * 5 % 13).ToArray(), new Shape(2, 16), device);
            var loss = Gpt.Loss(model.Forward(x), y);
            kept[run] = device.Allocator.Current(MemoryCategory.Activation);
            loss.Backward();
            grads[run] = [.. model.Parameters().Select(TestUtil.Values)];
        }
        // A block's input [2, 16, 16] is all a checkpointed block keeps; the plain block keeps its attention
        // weights, layer-norm and MLP inputs and more: far less is held at the end of the forward pass.
        Assert.True(kept[1] * 3 < kept[0], $"checkpointed {kept[1]} bytes, plain {kept[0]}");
        for (var i = 0; i < grads[0].Count; i++)
            TestUtil.AssertClose(grads[0][i], grads[1][i], 1e-7, 1e-5, $"parameter {i}");
    }

    [Fact]
    public void BadShapesAreRefusedByName()
    {
        using var scope = TensorScope.Begin();
        var q = Tensor.Zeros(new Shape(2, 3, 4));
        Assert.Contains("must be [..., T, d]", Assert.Throws<ShapeMismatchException>(() => F.ScaledDotProductAttention(q, Tensor.Zeros(new Shape(2, 3, 5)), q)).Message, StringComparison.Ordinal);
        Assert.Contains("causal mask needs as many queries as keys", Assert.Throws<ShapeMismatchException>(() => F.ScaledDotProductAttention(q, Tensor.Zeros(new Shape(2, 5, 4)), Tensor.Zeros(new Shape(2, 5, 4)))).Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => new CausalSelfAttention(10, 3));
        using var gpt = new Gpt(new GptConfig(5, 4, 1, 8, 2));
        Assert.Contains("1 ≤ T ≤ 4", Assert.Throws<ShapeMismatchException>(() => gpt.Forward(Tensor.FromArray(new int[10], 2, 5))).Message, StringComparison.Ordinal);
    }
}
