using Frugal.Backends;
using Frugal.Formats;
using Frugal.Memory;
using Frugal.Models;
using Frugal.Nn;
using Frugal.Optim;

namespace Frugal.Tests;

/// <summary>Quantized layers in both modes: forward and gradients against float64 references with the dequantized
/// weight (straight-through estimator, with clipping for binary), master-free updates written back by stochastic
/// rounding, DoReFa activations, exact bytes per category, and bad input.</summary>
public class QuantizedLayerTests
{
    private static double[] D(Tensor t) => [.. t.ToArray<float>().Select(v => (double)v)];

    /// <summary>A linear layer whose weight is in <paramref name="format"/> (its group as given: 0 is one per row).</summary>
    private static Linear QuantizedLinear(int inFeatures, int outFeatures, QuantizedFormat format, QuantMode mode = QuantMode.MasterFree, bool bias = true, int activationBits = 0, Device? device = null)
        => new(inFeatures, outFeatures, WeightFormat.Quantized(format.Bits, format.Group, format.Scheme, mode, activationBits), bias: bias, device: device);

    private static QuantizedWeight Q(Linear layer) => (QuantizedWeight)layer.Weight;

    /// <summary>y = x·Wᵀ + b and its gradients for loss Σ y∘r, in float64 from the weight the layer used.</summary>
    private static (double[] Y, double[] Dx, double[] Dw, double[] Db) Reference(double[] x, double[] w, double[] b, double[] r, int batch, int rows, int cols)
    {
        var (y, dx, dw, db) = (new double[batch * rows], new double[batch * cols], new double[rows * cols], new double[rows]);
        for (var n = 0; n < batch; n++)
        {
            for (var o = 0; o < rows; o++)
            {
                y[n * rows + o] = b[o];
                db[o] += r[n * rows + o];
                for (var i = 0; i < cols; i++)
                {
                    y[n * rows + o] += x[n * cols + i] * w[o * cols + i];
                    dx[n * cols + i] += r[n * rows + o] * w[o * cols + i];
                    dw[o * cols + i] += r[n * rows + o] * x[n * cols + i];
                }
            }
        }
        return (y, dx, dw, db);
    }

    [Theory]
    [InlineData(QuantMode.Latent, 4, 16)]
    [InlineData(QuantMode.MasterFree, 4, 16)]
    [InlineData(QuantMode.MasterFree, 8, 0)]
    [InlineData(QuantMode.Latent, 1, 0)]
    public void LinearMatchesTheDenseLayerWithItsQuantizedWeight(QuantMode mode, int bits, int group)
    {
        const int Batch = 5, In = 48, Out = 7;
        Init.ManualSeed(3);
        using var layer = QuantizedLinear(In, Out, TensorFormat.Quantized(bits, group), mode);
        using var scope = TensorScope.Begin();
        var xs = TestUtil.Uniform(1, Batch * In);
        var rs = TestUtil.Uniform(2, Batch * Out);
        var x = Tensor.FromArray(xs.Select(v => (float)v).ToArray(), new Shape(Batch, In));
        x.RequiresGrad = true;
        var w = D(TestUtil.DenseCopy(layer.Weight));
        var (y, dx, dw, db) = Reference(xs, w, D(layer.Bias!), rs, Batch, Out, In);
        var output = layer.Forward(x);
        F.Sum(output * Tensor.FromArray(rs.Select(v => (float)v).ToArray(), new Shape(Batch, Out))).Backward();
        TestUtil.AssertClose(y, D(output), 1e-5, 1e-4, "y");
        TestUtil.AssertClose(dx, D(x.Grad!), 1e-5, 1e-4, "dx");
        TestUtil.AssertClose(db, D(layer.Bias!.Grad!), 1e-5, 1e-4, "dbias");
        // The straight-through estimator: the latent weight (or the codes) receives dL/dWq as it is.
        var weightGrad = mode == QuantMode.Latent ? Q(layer).Latent!.Grad! : Q(layer).Codes!.Grad!;
        Assert.Equal(new Shape(Out, In), weightGrad.Shape);
        if (bits == 1)
        {
            var latent = D(Q(layer).Latent!);
            for (var i = 0; i < dw.Length; i++)
                dw[i] = Math.Abs(latent[i]) <= 1 ? dw[i] : 0;
        }
        TestUtil.AssertClose(dw, D(weightGrad), 1e-5, 1e-4, "dW");
    }

    [Fact]
    public void BinaryStraightThroughEstimatorClipsLatentWeightsBeyondOne()
    {
        using var scope = TensorScope.Begin();
        var latent = Tensor.FromArray(new[] { 0.5f, -2f, 1.5f, -0.25f, 0.75f, -0.5f, 3f, 0.1f }, new Shape(2, 4));
        latent.RequiresGrad = true;
        var w = F.QuantizeSte(latent, TensorFormat.Quantized(1));
        var x = Tensor.FromArray(new[] { 1f, 2f, 3f, 4f }, new Shape(1, 4));
        F.Sum(F.QuantizedLinear(x, w, null)).Backward();
        Assert.Equal(new[] { 1f, 0f, 0f, 4f, 1f, 2f, 0f, 4f }, latent.Grad!.ToArray<float>());
        w.DisposeParts();
    }

    [Fact]
    public void MasterFreeLayerHoldsOnlyCodesScalesAndBiasAndADenseTransientGradient()
    {
        var device = Device.CreateCpu("quantized-bytes");
        Init.ManualSeed(1);
        using var layer = QuantizedLinear(768, 512, TensorFormat.Quantized(4, 64), QuantMode.MasterFree, device: device);
        const long Codes = 768 * 512 / 2, Scales = 8L * 512 * (768 / 64), Bias = 4 * 512;
        Assert.Equal(Codes + Bias, device.Allocator.Current(MemoryCategory.Parameter));
        Assert.Equal(Scales, device.Allocator.Current(MemoryCategory.FormatMeta));
        // The weight's own bytes: its codes and scales (the bias is the layer's).
        Assert.Equal(Codes, layer.Weight.StorageBytes()[MemoryCategory.Parameter]);
        Assert.Equal(Codes + Bias, layer.Weight.StorageBytes()[MemoryCategory.Parameter] + 4L * layer.Bias!.Numel);
        Assert.Equal(Scales, layer.Weight.StorageBytes()[MemoryCategory.FormatMeta]);
        Assert.Equal(2, layer.Weight.StorageBytes().Count);
        Assert.Equal(768L * 512, layer.Weight.ParameterCount);
        Assert.Equal(768L * 512, layer.ParameterCount() - 512);
        Assert.Equal(0, device.Allocator.Current(MemoryCategory.Workspace));
        using (var scope = TensorScope.Begin())
            F.Sum(layer.Forward(Tensor.Uniform(new Shape(8, 768), -1, 1, 2, device: device))).Backward();
        Assert.Equal(4L * (768 * 512 + 512), device.Allocator.Current(MemoryCategory.Gradient));
        using var opt = new Adam(layer.Parameters(), 1e-3, stateBits: 8);
        opt.Step();
        opt.ZeroGrad();
        const long Weights = 768 * 512, Blocks = (Weights + Adam.StateBlock - 1) / Adam.StateBlock;
        Assert.Equal(2 * (Blocks * Adam.StateBlock + 4 * Blocks) + 2 * 4L * 512, device.Allocator.Current(MemoryCategory.OptimizerState));
        Assert.Equal(Codes + Bias, device.Allocator.Current(MemoryCategory.Parameter));
        Assert.Equal(0, device.Allocator.Current(MemoryCategory.Workspace));
        // The update's F32 values are Workspace, a chunk of whole rows at a time (SGD needs nothing else): 16 rows of
        // 768 (a multiple of 2048 values, at most Optimizer.ChunkValues).
        using (var scope = TensorScope.Begin())
            F.Sum(layer.Forward(Tensor.Uniform(new Shape(8, 768), -1, 1, 3, device: device))).Backward();
        using var sgd = new SGD(layer.Parameters(), 1e-3);
        device.Allocator.ResetPeak();
        sgd.Step();
        Assert.Equal(4L * 16 * 768, device.Allocator.Peak(MemoryCategory.Workspace));
        Assert.True(16 * 768 <= Optimizer.ChunkValues && 16 * 768 % Adam.StateBlock == 0);
        Assert.Equal(0, device.Allocator.Current(MemoryCategory.Workspace));
    }

    /// <summary>An 8-bit Adam step of a master-free layer is, to the bit, the whole weight dequantized, stepped by
    /// <see cref="IBackend.Adam8BitStep"/> from fresh moments and quantized back at the layer's rounding stream: in one
    /// fused op with no Workspace where the groups divide the state block (64 of 768), chunk by chunk through F32
    /// Workspace where they do not (one group per row of 784).</summary>
    [Theory]
    [InlineData(768, 64, true)]
    [InlineData(784, 0, false)]
    public void MasterFreeAdam8BitStepIsTheWholeWeightsThreeOpsAtItsRoundingStream(int inFeatures, int group, bool fused)
    {
        var device = Device.CreateCpu($"master-free-adam8-{inFeatures}");
        Init.ManualSeed(4);
        using var layer = QuantizedLinear(inFeatures, 64, TensorFormat.Quantized(4, group), QuantMode.MasterFree, bias: false, device: device);
        var weight = Q(layer);
        Assert.Equal(fused, Adam.StateBlock % weight.Group == 0);
        using var scope = TensorScope.Begin();
        F.Sum(layer.Forward(Tensor.Uniform(new Shape(8, inFeatures), -1, 1, 5, device: device))).Backward();
        var n = 64 * inFeatures;
        var blocks = (n + Adam.StateBlock - 1) / Adam.StateBlock;
        var operand = new QuantizedOperand(Tensor.FromArray(weight.Codes!.ToArray<byte>(), weight.Codes.Shape, device), Tensor.FromArray(weight.Scales!.ToArray<float>(), weight.Scales.Shape, device), weight.Layout, weight.StoredRows, weight.StoredCols, weight.Group);
        var (seed, draws) = weight.Codes.Packing!.Stream;
        using var grad = weight.Codes.Grad!.Reshape(-1);
        using (var values = Tensor.Empty(new Shape(n), DType.F32, device))
        {
            device.Backend.Dequantize(operand.View, values.View);
            using var mc = Tensor.Zeros(new Shape(blocks, Adam.StateBlock), DType.I8, device);
            using var rc = Tensor.Zeros(new Shape(blocks, Adam.StateBlock), DType.U8, device);
            using var ms = Tensor.Zeros(new Shape(blocks, 1), DType.F32, device);
            using var rs = Tensor.Zeros(new Shape(blocks, 1), DType.F32, device);
            device.Backend.Adam8BitStep(values.View, grad.View, mc.View, ms.View, rc.View, rs.View, new AdamArgs(1e-3, 0.9, 0.999, 1e-8, 0, false, 1));
            device.Backend.Quantize(operand.View, values.View, new QuantizeArgs(weight.Layout.Scheme, true, seed, draws));
        }
        using var opt = new Adam(layer.Parameters(), 1e-3, stateBits: 8);
        device.Allocator.ResetPeak();
        opt.Step();
        Assert.Equal(operand.Codes.ToArray<byte>(), weight.Codes.ToArray<byte>());
        Assert.Equal(operand.Scales.ToArray<float>(), weight.Scales.ToArray<float>());
        Assert.Equal((seed, draws + (ulong)n), weight.Codes.Packing.Stream);
        Assert.Equal(fused, device.Allocator.Peak(MemoryCategory.Workspace) == 0);
    }

    [Fact]
    public void MasterFreeUpdateLandsWithinOneStepOfTheF32UpdateAndIsUnbiased()
    {
        const int In = 64, Out = 16, Trials = 2000;
        const double Lr = 1.5e-2;
        Init.ManualSeed(10);
        using var layer = QuantizedLinear(In, Out, TensorFormat.Quantized(4, 32), QuantMode.MasterFree, bias: false);
        var weight = Q(layer);
        using var scope = TensorScope.Begin();
        var (codes, scales) = (Tensor.FromArray(weight.Codes!.ToArray<byte>(), weight.Codes.Shape), Tensor.FromArray(weight.Scales!.ToArray<float>(), weight.Scales.Shape));
        var before = D(TestUtil.DenseCopy(weight));
        F.Sum(layer.Forward(Tensor.Uniform(new Shape(4, In), -1, 1, 3))).Backward();
        var g = D(weight.Codes!.Grad!);
        var expected = before.Select((b, i) => b - Lr * g[i]).ToArray();
        using var opt = new SGD(layer.Parameters(), Lr);
        var sum = new double[In * Out];
        double step = 0;
        for (var trial = 0; trial < Trials; trial++)
        {
            // The same weights and gradient each time; every step draws a fresh rounding stream.
            using (Autograd.NoGrad())
            {
                F.CopyInto(weight.Codes!, codes);
                F.CopyInto(weight.Scales!, scales);
            }
            opt.Step();
            var after = D(TestUtil.DenseCopy(weight));
            step = weight.Scales!.ToArray<float>().Where((_, i) => i % 2 == 0).Max();
            for (var i = 0; i < after.Length; i++)
            {
                Assert.True(Math.Abs(after[i] - expected[i]) <= step * 1.0001, $"trial {trial}, value {i}: {after[i]} is more than a step {step} from {expected[i]}");
                sum[i] += after[i];
            }
        }
        // Unbiased: the mean over rounding streams approaches the F32 update (5 standard errors of a step/2 spread,
        // 0.056 step), though single updates are a fraction of a step that rounding to nearest would mostly lose.
        var mean = expected.Select((e, i) => Math.Abs(e - before[i])).Average();
        Assert.True(mean > step / 5 && mean < step, $"the test needs updates of a fraction of a step {step}, got {mean} on average");
        for (var i = 0; i < sum.Length; i++)
            Assert.True(Math.Abs(sum[i] / Trials - expected[i]) <= 5 * step / 2 / Math.Sqrt(Trials), $"value {i}: mean {sum[i] / Trials}, F32 update {expected[i]}");
    }

    [Theory]
    [InlineData(QuantMode.MasterFree)]
    [InlineData(QuantMode.Latent)]
    public void ConvolutionEqualsTheDenseConvolutionOfItsQuantizedWeight(QuantMode mode)
    {
        Init.ManualSeed(5);
        using var layer = new Conv2d(3, 4, 3, padding: 1, format: WeightFormat.Quantized(4, 9, mode: mode));
        var weight = (QuantizedWeight)layer.Weight;
        using var scope = TensorScope.Begin();
        var x = Tensor.Uniform(new Shape(2, 3, 6, 6), -1, 1, 6);
        var dense = TestUtil.DenseCopy(weight);
        dense.RequiresGrad = true;
        var expected = F.Conv2d(x, dense, layer.Bias, padding: 1);
        F.Sum(expected * expected).Backward();
        var y = layer.Forward(x);
        F.Sum(y * y).Backward();
        TestUtil.AssertClose(D(expected), D(y), 1e-6, 1e-5, "y");
        var grad = mode == QuantMode.Latent ? weight.Latent!.Grad! : weight.Codes!.Grad!;
        Assert.Equal(new Shape(4, 3, 3, 3), grad.Shape);
        TestUtil.AssertClose(D(dense.Grad!), D(grad), 1e-5, 1e-4, "dW");
    }

    [Fact]
    public void DoReFaActivationsKeepOneBytePerInputAndClipTheirGradient()
    {
        var device = Device.CreateCpu("dorefa");
        const int Batch = 6, In = 32, Out = 5, Bits = 3;
        Init.ManualSeed(7);
        using var layer = QuantizedLinear(In, Out, TensorFormat.Quantized(8), QuantMode.MasterFree, activationBits: Bits, device: device);
        Assert.Equal(Bits, Q(layer).Spec.ActivationBits);
        using var scope = TensorScope.Begin();
        var xs = TestUtil.Uniform(8, Batch * In, -0.5, 1.5);
        var x = Tensor.FromArray(xs.Select(v => (float)v).ToArray(), new Shape(Batch, In), device);
        x.RequiresGrad = true;
        var before = device.Allocator.Current(MemoryCategory.Activation);
        var y = layer.Forward(x);
        // Saved for backward: the 1-byte codes of x (the output y is Activation too).
        Assert.Equal(Batch * In + 4L * Batch * Out, device.Allocator.Current(MemoryCategory.Activation) - before);
        var quantized = xs.Select(v => Math.Round(Math.Clamp(v, 0, 1) * 7) / 7).ToArray();
        var rs = TestUtil.Uniform(9, Batch * Out);
        var (ey, edx, edw, _) = Reference(quantized, D(TestUtil.DenseCopy(layer.Weight)), D(layer.Bias!), rs, Batch, Out, In);
        F.Sum(y * Tensor.FromArray(rs.Select(v => (float)v).ToArray(), new Shape(Batch, Out), device)).Backward();
        TestUtil.AssertClose(ey, D(y), 1e-5, 1e-4, "y");
        TestUtil.AssertClose(edx.Select((d, i) => xs[i] is >= 0 and <= 1 ? d : 0).ToArray(), D(x.Grad!), 1e-5, 1e-4, "dx (clipped outside [0, 1])");
        TestUtil.AssertClose(edw, D(Q(layer).Codes!.Grad!), 1e-5, 1e-4, "dW from the quantized input");
    }

    [Fact]
    public void BadInputIsRefusedWithClearMessages()
    {
        Assert.Contains("bits must be 1, 2, 4 or 8, got 3", Assert.Throws<ArgumentOutOfRangeException>(() => TensorFormat.Quantized(3)).Message, StringComparison.Ordinal);
        Assert.Contains("symmetric needs 2 bits", Assert.Throws<ArgumentOutOfRangeException>(() => TensorFormat.Quantized(1, 0, QuantScheme.Symmetric)).Message, StringComparison.Ordinal);
        var e = Assert.Throws<ArgumentException>(() => QuantizedLinear(784, 512, TensorFormat.Quantized(4, 64)));
        Assert.Contains("group of 64 values does not divide the input dimension 784 of a [512, 784] weight", e.Message, StringComparison.Ordinal);
        Assert.Contains("does not divide the input dimension 784", Assert.Throws<ArgumentException>(() => new Linear(784, 512, WeightFormat.Parse("q4:64"))).Message, StringComparison.Ordinal);
        Assert.False(WeightFormat.Parse("q4:64").Fits(new Shape(512, 784)));
        Assert.True(WeightFormat.Parse("q4:64").Fits(new Shape(512, 768)));
        Assert.Throws<ArgumentOutOfRangeException>(() => QuantizedLinear(8, 4, TensorFormat.Quantized(8), activationBits: 8));

        var format = TensorFormat.Quantized(4, 4);
        var good = format.FromDense([.. TestUtil.Uniform(1, 16).Select(v => (float)v)], 2, 8);
        Assert.Contains("7 code bytes, expected 8", Assert.Throws<ArgumentException>(() => format.FromParts(good.Codes[..7], good.Scales, 2, 8)).Message, StringComparison.Ordinal);
        Assert.Contains("3 scales, expected 4", Assert.Throws<ArgumentException>(() => format.FromParts(good.Codes, good.Scales[..3], 2, 8)).Message, StringComparison.Ordinal);
        var nan = (QuantScale[])good.Scales.Clone();
        nan[2] = nan[2] with { Scale = float.NaN };
        Assert.Contains("group 2 has scale NaN", Assert.Throws<ArgumentException>(() => format.FromParts(good.Codes, nan, 2, 8)).Message, StringComparison.Ordinal);
        var zero = (QuantScale[])good.Scales.Clone();
        zero[1] = zero[1] with { Zero = 3 };
        Assert.Contains("and zero 8", Assert.Throws<ArgumentException>(() => format.FromParts(good.Codes, zero, 2, 8)).Message, StringComparison.Ordinal);
        var codes = (byte[])good.Codes.Clone();
        codes[5] &= 0xF0;   // value 10's code 0: outside a symmetric grid [1, 15]
        Assert.Contains("value 10 (row 1, column 2) has code 0, outside [1, 15]", Assert.Throws<ArgumentException>(() => format.FromParts(codes, good.Scales, 2, 8)).Message, StringComparison.Ordinal);
        var ternary = TensorFormat.Quantized(2, 0);
        var t = ternary.FromDense([.. TestUtil.Uniform(2, 12).Select(v => (float)v)], 3, 4);
        var three = (byte[])t.Codes.Clone();
        three[0] |= 3;
        Assert.Contains("has code 3, outside [0, 2]", Assert.Throws<ArgumentException>(() => ternary.FromParts(three, t.Scales, 3, 4)).Message, StringComparison.Ordinal);
        var binary = TensorFormat.Quantized(1, 0);
        var b = binary.FromDense([.. TestUtil.Uniform(3, 9).Select(v => (float)v)], 3, 3);
        var tail = (byte[])b.Codes.Clone();
        tail[^1] |= 0x80;
        Assert.Contains("bits after the last code are not zero", Assert.Throws<ArgumentException>(() => binary.FromParts(tail, b.Scales, 3, 3)).Message, StringComparison.Ordinal);
        Assert.Equal(binary.ToDense(b), binary.ToDense(binary.FromParts(b.Codes, b.Scales, 3, 3)));

        // Operands are checked before a kernel reads them.
        using var scope = TensorScope.Begin();
        var q = F.Quantize(Tensor.FromArray([.. TestUtil.Uniform(4, 16).Select(v => (float)v)], new Shape(2, 8)), format);
        var shortCodes = q with { Codes = Tensor.Zeros(new Shape(7), DType.U8) };
        Assert.Contains("codes of a q4:4 [2, 8] weight", Assert.Throws<ShapeMismatchException>(() => F.Dequantize(shortCodes, new Shape(2, 8))).Message, StringComparison.Ordinal);
        var wideScales = q with { Scales = Tensor.Zeros(new Shape(4, 2), DType.F64) };
        Assert.Contains("needs contiguous u8 codes and f32 scales", Assert.Throws<ShapeMismatchException>(() => F.QuantizedLinear(Tensor.Zeros(new Shape(1, 8)), wideScales)).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void ParsesTheCliForms()
    {
        var q = Assert.IsType<QuantizedWeightFormat>(WeightFormat.Parse("q4:64:latent"));
        Assert.Equal((4, 64, QuantMode.Latent, false), (q.Layout.Bits, q.Layout.Group, q.Mode, q.AutoGroup));
        Assert.Equal("q4:64:latent", q.ToString());
        Assert.Equal("q8:auto:masterfree", WeightFormat.Parse("q8").ToString());
        Assert.Equal("q1:row:latent", WeightFormat.Parse("q1:row:latent").ToString());
        Assert.Equal("q2:auto:masterfree:asymmetric:a4", WeightFormat.Parse("q2:asymmetric:a4").ToString());
        foreach (var text in new[] { "q8", "q4:64:latent", "q1:row:latent", "q2:asymmetric:a4" })
            Assert.Equal(WeightFormat.Parse(text), WeightFormat.Parse(WeightFormat.Parse(text).ToString()));
        foreach (var bad in new[] { "q3", "q4:abc", "q4:a8", "q1:symmetric", "q4:-2" })
            Assert.Throws<FormatException>(() => WeightFormat.Parse(bad));
        // The default group: 64 where it divides the layer's inputs, else one group per row.
        using var wide = new Linear(512, 10, WeightFormat.Parse("q4"));
        using var first = new Linear(784, 16, WeightFormat.Parse("q4"));
        Assert.Equal((64, 784), (Q(wide).Group, Q(first).Group));
        Assert.Equal((64, 0), (Q(wide).Layout.Group, Q(first).Layout.Group));
    }
}
