using Frugal.Memory;
using Frugal.Nn;
using Frugal.Optim;
using static Frugal.Tests.TestUtil;

namespace Frugal.Tests;

/// <summary>Mixed precision: under autocast a linear layer equals the float64 product of its BF16/F16-rounded input
/// and weight, its gradients are those of that product, it keeps only the 16-bit input for backward, ReLU keeps a
/// 1-byte mask; the loss scaler skips overflowing steps and grows after good ones.</summary>
public class MixedPrecisionTests
{
    private static double Round(double v, DType dtype)
    {
        using var t = Tensor.FromArray([v], new Shape(1));
        using var low = t.To(dtype);
        using var back = low.To(DType.F64);
        return back.ToArray<double>()[0];
    }

    [Theory]
    [InlineData(DType.BF16)]
    [InlineData(DType.F16)]
    public void LinearUnderAutocastIsTheProductOfRoundedValues(DType low)
    {
        const int n = 6, fin = 20, fout = 5;
        var device = Device.CreateCpu($"autocast-{low}");
        var xs = Uniform(1, n * fin);
        var ws = Uniform(2, fout * fin);
        using var scope = TensorScope.Begin();
        var x = Tensor.FromArray(xs.Select(v => (float)v).ToArray(), new Shape(n, fin), device);
        var w = Tensor.FromArray(ws.Select(v => (float)v).ToArray(), new Shape(fout, fin), device);
        x.RequiresGrad = true;
        w.RequiresGrad = true;
        Tensor y;
        using (Autocast.Enable(low))
            y = F.Linear(x, w);
        // Saved for backward: the 16-bit input only (the weight is referenced), and the result.
        Assert.Equal(2L * n * fin + 4L * n * fout, device.Allocator.Current(MemoryCategory.Activation));
        var xr = xs.Select(v => Round((float)v, low)).ToArray();
        var wr = ws.Select(v => Round((float)v, low)).ToArray();
        var expected = new double[n * fout];
        for (var i = 0; i < n; i++)
        {
            for (var o = 0; o < fout; o++)
            {
                for (var k = 0; k < fin; k++)
                    expected[i * fout + o] += xr[i * fin + k] * wr[o * fin + k];
            }
        }
        AssertClose(expected, Values(y), 1e-5, 1e-5, "forward");
        var mix = Uniform(3, n * fout);
        var tm = Tensor.FromArray(mix.Select(v => (float)v).ToArray(), new Shape(n, fout), device);
        F.Sum(y * tm).Backward();
        var dx = new double[n * fin];
        var dw = new double[fout * fin];
        for (var i = 0; i < n; i++)
        {
            for (var o = 0; o < fout; o++)
            {
                for (var k = 0; k < fin; k++)
                {
                    dx[i * fin + k] += mix[i * fout + o] * wr[o * fin + k];
                    dw[o * fin + k] += mix[i * fout + o] * xr[i * fin + k];
                }
            }
        }
        AssertClose(dx, Values(x.Grad!), 1e-5, 1e-5, "input gradient (through the rounded weight)");
        AssertClose(dw, Values(w.Grad!), 1e-5, 1e-5, "weight gradient (from the rounded input)");
        Assert.Equal(DType.F32, w.Grad!.DType);
    }

    [Theory]
    [InlineData(DType.BF16)]
    [InlineData(DType.F16)]
    public void ConvolutionUnderAutocastIsTheF32ConvolutionOfRoundedValues(DType low)
    {
        var device = Device.CreateCpu($"autocast-conv-{low}");
        using var scope = TensorScope.Begin();
        var xs = Uniform(4, 2 * 3 * 6 * 5).Select(v => (float)v).ToArray();
        var ws = Uniform(5, 4 * 3 * 3 * 3).Select(v => (float)v).ToArray();
        Tensor Leaf(float[] v, params int[] shape)
        {
            var t = Tensor.FromArray(v, new Shape(shape), device);
            t.RequiresGrad = true;
            return t;
        }
        float[] Rounded(float[] v) => [.. v.Select(a => (float)Round(a, low))];
        var x = Leaf(xs, 2, 3, 6, 5);
        var w = Leaf(ws, 4, 3, 3, 3);
        var xr = Leaf(Rounded(xs), 2, 3, 6, 5);
        var wr = Leaf(Rounded(ws), 4, 3, 3, 3);
        Tensor y;
        var before = device.Allocator.Current(MemoryCategory.Activation);
        using (Autocast.Enable(low))
            y = F.Conv2d(x, w, stride: 2, padding: 1);
        // Kept for backward: the 16-bit input; and the result.
        Assert.Equal(2L * x.Numel + 4L * y.Numel, device.Allocator.Current(MemoryCategory.Activation) - before);
        var reference = F.Conv2d(xr, wr, stride: 2, padding: 1);
        AssertClose(Values(reference), Values(y), 1e-6, 1e-6, "forward");
        var mix = Tensor.Uniform(y.Shape, -1, 1, 6, device: device);
        F.Sum(y * mix).Backward();
        F.Sum(reference * mix).Backward();
        AssertClose(Values(xr.Grad!), Values(x.Grad!), 1e-6, 1e-6, "input gradient");
        AssertClose(Values(wr.Grad!), Values(w.Grad!), 1e-6, 1e-6, "weight gradient");
        Assert.Equal(0, device.Allocator.Current(MemoryCategory.Workspace));
    }

    [Fact]
    public void ReluUnderAutocastKeepsAOneByteMaskAndTheSameGradient()
    {
        var device = Device.CreateCpu("autocast-relu");
        using var scope = TensorScope.Begin();
        var x = Tensor.FromArray([-1f, 2f, 0f, 3f, -0.5f, 4f], new Shape(2, 3), device);
        x.RequiresGrad = true;
        Tensor y;
        using (Autocast.Enable(DType.BF16))
            y = x.Relu();
        Assert.Equal(4L * 6 + 6, device.Allocator.Current(MemoryCategory.Activation));   // the output and its mask
        var g = Tensor.FromArray([1f, 2f, 3f, 4f, 5f, 6f], new Shape(2, 3), device);
        F.Sum(y * g).Backward();
        Assert.Equal([0f, 2f, 0f, 4f, 0f, 6f], x.Grad!.ToArray<float>());
        Assert.Throws<ArgumentException>(() => Autocast.Enable(DType.F64));
    }

    [Fact]
    public void TheLossScalerSkipsOverflowsAndGrowsAfterGoodSteps()
    {
        Init.ManualSeed(1);
        using var layer = new Linear(3, 2, bias: false);
        using var opt = new SGD(layer.Parameters(), 0.1);
        var scaler = new GradScaler(initialScale: 1024, growthInterval: 2);
        var before = layer.Weight.Value().ToArray<float>();
        using (var scope = TensorScope.Begin())
        {
            var x = Tensor.FromArray([1f, 2f, 3f], new Shape(1, 3));
            using var scaled = scaler.ScaleLoss(F.Sum(layer.Forward(x)));
            scaled.Backward();
            Assert.Equal(1024f * 1, layer.Weight.Value().Grad!.ToArray<float>()[0]);   // d/dw of the scaled loss
            Assert.True(scaler.Step(opt));
        }
        // The update used the unscaled gradient x: w -= 0.1 · x.
        var after = layer.Weight.Value().ToArray<float>();
        Assert.Equal(before[0] - 0.1f, after[0], 1e-6f);
        opt.ZeroGrad();
        using (var inf = Tensor.Full(layer.Weight.Value().Shape, double.PositiveInfinity))
            layer.Weight.Value().Grad = inf.Alias();
        Assert.False(scaler.Step(opt));
        Assert.Null(layer.Weight.Value().Grad);
        Assert.Equal(512, scaler.Scale);
        Assert.Equal(1, scaler.SkippedSteps);
        Assert.Equal(after, layer.Weight.Value().ToArray<float>());   // the skipped step changed nothing
        for (var i = 0; i < 2; i++)
        {
            using var g = Tensor.Ones(layer.Weight.Value().Shape);
            layer.Weight.Value().Grad = g.Alias();
            Assert.True(scaler.Step(opt));
            opt.ZeroGrad();
        }
        Assert.Equal(1024, scaler.Scale);
    }

    [Fact]
    public void Bf16TrainingOfTheMlpMatchesFp32WithinHalfAPoint()
    {
        var data = Models.EmbeddedData.FashionMnistSlice();
        double Accuracy(DType? precision)
        {
            var device = Device.CreateCpu($"mixed-{precision}");
            Init.ManualSeed(1);
            Rng.ManualSeed(1);
            using var model = Models.Zoo.Mlp(device: device);
            using var opt = new Adam(model.Parameters(), 1e-3);
            var trainer = new Models.Trainer(model, opt, device) { Precision = precision };
            return trainer.TrainEpoch(data.Train, data.Test, epoch: 1, batchSize: 128, seed: 1).TestAccuracy;
        }

        var fp32 = Accuracy(null);
        var bf16 = Accuracy(DType.BF16);
        Assert.True(Math.Abs(bf16 - fp32) <= 0.005, $"bf16 {bf16:F4} vs fp32 {fp32:F4}");
        Assert.True(fp32 > 0.7, $"fp32 trained: {fp32:F4}");
    }
}
