using Frugal.Formats;
using Frugal.Memory;
using Frugal.Nn;
using Frugal.Optim;
using static Frugal.Tests.TestUtil;

namespace Frugal.Tests;

/// <summary>Cross-layer sharing: the shared weight's gradient is the sum of what two separate copies would get, it is
/// listed, updated, stored and counted once, for dense and other formats; incompatible sharing is refused.</summary>
public class SharingTests
{
    [Theory]
    [InlineData("dense")]
    [InlineData("csr:0.5")]
    [InlineData("lowrank:3")]
    public void TheSharedGradientIsTheSumOfTwoCopiesGradients(string formatText)
    {
        var format = WeightFormat.Parse(formatText);
        Init.ManualSeed(3);
        var shared = new Linear(8, 8, format);
        using var tied = new Sequential(shared, new Tanh(), new Shared(shared));
        Init.ManualSeed(3);
        var first = new Linear(8, 8, format);
        Init.ManualSeed(3);
        var second = new Linear(8, 8, format);
        using var copies = new Sequential(first, new Tanh(), second);
        Assert.Equal(Values(first.Parameters().First()), Values(second.Parameters().First()));

        using var scope = TensorScope.Begin();
        var x = Tensor.FromArray(Uniform(5, 4 * 8).Select(v => (float)v).ToArray(), new Shape(4, 8));
        var yt = tied.Forward(x);
        var yc = copies.Forward(x);
        F.Sum(yt * yt).Backward();
        F.Sum(yc * yc).Backward();
        // The three layers were built alike, so their parameters come in the same order.
        foreach (var (p, a, b) in shared.Parameters().Zip(first.Parameters(), second.Parameters()))
        {
            var sum = Values(a.Grad!).Zip(Values(b.Grad!), (u, v) => u + v).ToArray();
            AssertClose(sum, Values(p.Grad!), 1e-5, 1e-5, p.Name!);
        }
        Assert.Equal(shared.Parameters().Count(), tied.Parameters().Count());
        Assert.Equal(shared.StateDict().Count, tied.StateDict().Count);   // parameters and buffers, the shared weight once
        using var opt = new SGD(tied.Parameters(), 0.1);   // listed once: no "listed twice"
        opt.Step();
    }

    [Fact]
    public void TheFourLayerSharedMlpHoldsOneHiddenWeight()
    {
        var device = Device.CreateCpu("shared-mlp");
        Init.ManualSeed(1);
        using var model = Models.Zoo.SharedMlp(device: device);
        Assert.Equal(4, model.Layers.Count(l => l is Linear or Shared));
        const long hidden = 512 * 512 + 512;
        var expected = 4L * (784 * 512 + 512 + hidden + 512 * 10 + 10);
        Assert.Equal(expected, device.Allocator.Current(MemoryCategory.Parameter));
        using var opt = new Adam(model.Parameters(), 1e-3);
        using (var scope = TensorScope.Begin())
        {
            var x = Tensor.Uniform(new Shape(16, 784), -1, 1, 2, device: device);
            var y = Tensor.FromArray(Enumerable.Range(0, 16).Select(i => i % 10).ToArray(), new Shape(16), device);
            F.CrossEntropy(model.Forward(x), y).Backward();
        }
        opt.Step();
        Assert.Equal(2 * expected, device.Allocator.Current(MemoryCategory.OptimizerState));
    }

    [Fact]
    public void IncompatibleSharingIsRefused()
    {
        Init.ManualSeed(1);
        using var target = new Linear(8, 8);
        var shape = Assert.Throws<ArgumentException>(() => Shared.Like(target, new Linear(8, 6)));
        Assert.Contains("cannot be", shape.Message, StringComparison.Ordinal);
        Assert.Contains("[6, 8]", shape.Message, StringComparison.Ordinal);
        var device = Assert.Throws<ArgumentException>(() => Shared.Like(target, new Linear(8, 8, device: Device.CreateCpu("other"))));
        Assert.Contains("other", device.Message, StringComparison.Ordinal);
        var kind = Assert.Throws<ArgumentException>(() => Shared.Like(target, new Conv2d(8, 8, 1)));
        Assert.Contains("different kinds of layer", kind.Message, StringComparison.Ordinal);
        // A layer of the same kind with its weight in another format does not fit either.
        var format = Assert.Throws<ArgumentException>(() => Shared.Like(target, new Linear(8, 8, WeightFormat.LowRank(2))));
        Assert.Contains("lowrank", format.Message, StringComparison.Ordinal);
        var sparse = Assert.Throws<ArgumentException>(() => Shared.Like(target, new Linear(8, 8, WeightFormat.Csr(0.5))));
        Assert.Contains("other formats (csr:0.5 vs dense)", sparse.Message, StringComparison.Ordinal);
        // Same parameter names, shapes and dtypes, another format: refused by the formats.
        var latent = Assert.Throws<ArgumentException>(() => Shared.Like(target, new Linear(8, 8, WeightFormat.Quantized(8, mode: QuantMode.Latent))));
        Assert.Contains("other formats (q8:auto:latent vs dense)", latent.Message, StringComparison.Ordinal);
        using var ok = Shared.Like(target, new Linear(8, 8));
        Assert.Same(target, ok.Target);
    }
}
