using Frugal.Memory;
using Frugal.Nn;
using Frugal.Optim;

namespace Frugal.Tests;

/// <summary>Update in backward: the same parameters as Step, with each gradient freed as soon as its update is
/// applied (a lower gradient peak), shared weights updated once with their whole gradient, and accumulation refused.</summary>
public class StepInBackwardTests
{
    private static (float[][] Parameters, long GradientPeak) OneStep(bool inBackward, bool shared)
    {
        var device = Device.CreateCpu($"in-backward-{inBackward}-{shared}");
        Init.ManualSeed(4);
        var hidden = new Linear(64, 64, device: device);
        using var model = shared
            ? new Sequential(new Linear(32, 64, device: device), new Tanh(), hidden, new Tanh(), new Shared(hidden), new Tanh(), new Linear(64, 10, device: device))
            : new Sequential(new Linear(32, 64, device: device), new Tanh(), hidden, new Tanh(), new Linear(64, 10, device: device));
        using var opt = new Adam(model.Parameters(), 1e-2);
        device.Allocator.ResetPeak();
        using (var scope = TensorScope.Begin())
        {
            var x = Tensor.Uniform(new Shape(16, 32), -1, 1, 5, device: device);
            var y = Tensor.FromArray(Enumerable.Range(0, 16).Select(i => i % 10).ToArray(), new Shape(16), device);
            opt.BackwardAndStep(F.CrossEntropy(model.Forward(x), y), inBackward);
        }
        Assert.Equal(0, device.Allocator.Current(MemoryCategory.Gradient));
        return ([.. model.Parameters().Select(p => p.ToArray<float>())], device.Allocator.Peak(MemoryCategory.Gradient));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void GivesStepsParametersWithALowerGradientPeak(bool shared)
    {
        var (stepped, peak) = OneStep(inBackward: false, shared);
        var (updated, peakInBackward) = OneStep(inBackward: true, shared);
        Assert.Equal(stepped.Length, updated.Length);
        for (var i = 0; i < stepped.Length; i++)
            Assert.Equal(stepped[i], updated[i]);   // the same arithmetic, bit for bit
        Assert.True(peakInBackward < peak, $"gradient peak {peakInBackward} in backward vs {peak} with Step");
    }

    [Fact]
    public void AccumulationIsRefused()
    {
        Init.ManualSeed(5);
        using var layer = new Linear(4, 3);
        using var opt = new SGD(layer.Parameters(), 0.1);
        using (var scope = TensorScope.Begin())
            F.Sum(layer.Forward(Tensor.Ones(new Shape(2, 4)))).Backward();
        var held = Assert.Throws<InvalidOperationException>(() => opt.StepInBackward());
        Assert.Contains("cannot accumulate gradients over micro-batches", held.Message, StringComparison.Ordinal);
        opt.ZeroGrad();
        var before = layer.Weight.Value().ToArray<float>();
        using var scopeIn = opt.StepInBackward();
        using (var scope = TensorScope.Begin())
            F.Sum(layer.Forward(Tensor.Ones(new Shape(2, 4)))).Backward();
        var once = layer.Weight.Value().ToArray<float>();
        Assert.NotEqual(before, once);
        using (var scope = TensorScope.Begin())
        {
            var loss = F.Sum(layer.Forward(Tensor.Ones(new Shape(2, 4))));
            var second = Assert.Throws<InvalidOperationException>(() => loss.Backward());
            Assert.Contains("second backward in one scope", second.Message, StringComparison.Ordinal);
        }
        Assert.Equal(once, layer.Weight.Value().ToArray<float>());   // nothing was computed
    }
}
