using Frugal.Nn;
using Frugal.Optim;

namespace Frugal.Tests;

/// <summary>Gradient clipping by global norm (PyTorch's clip_grad_norm_): the norm over all gradients against a
/// float64 reference, scaling only above the maximum, and refusal inside update in backward.</summary>
public class ClipGradNormTests
{
    [Theory]
    [InlineData(0.5)]
    [InlineData(1e6)]
    public void ScalesAllGradientsByOneCoefficientAboveTheMaximum(double maxNorm)
    {
        Init.ManualSeed(3);
        using var model = new Sequential(new Linear(6, 5), new Tanh(), new Linear(5, 3));
        using var opt = new SGD(model.Parameters(), 0.1);
        using var scope = TensorScope.Begin();
        F.Sum(model.Forward(Tensor.Uniform(new Shape(4, 6), -1, 1, 4))).Backward();
        var before = model.Parameters().Select(p => p.Grad!.ToArray<float>().Select(v => (double)v).ToArray()).ToList();
        var expected = Math.Sqrt(before.Sum(g => g.Sum(v => v * v)));
        var norm = opt.ClipGradNorm(maxNorm);
        Assert.Equal(expected, norm, expected * 1e-6);
        var coefficient = Math.Min(1, maxNorm / (expected + 1e-6));
        var after = model.Parameters().Select(p => p.Grad!.ToArray<float>().Select(v => (double)v).ToArray()).ToList();
        for (var i = 0; i < before.Count; i++)
            TestUtil.AssertClose([.. before[i].Select(v => v * coefficient)], after[i], 1e-7, 1e-6, $"gradient {i}");
        Assert.True(maxNorm > expected || Math.Abs(Math.Sqrt(after.Sum(g => g.Sum(v => v * v))) - maxNorm) < 1e-5);
        Assert.Throws<ArgumentOutOfRangeException>(() => opt.ClipGradNorm(0));
    }

    [Fact]
    public void IsRefusedWithUpdateInBackward()
    {
        Init.ManualSeed(3);
        using var model = new Linear(4, 2);
        using var opt = new Adam(model.Parameters(), 0.1);
        using var scope = TensorScope.Begin();
        var loss = F.Sum(model.Forward(Tensor.Uniform(new Shape(3, 4), -1, 1, 5)));
        using (opt.StepInBackward())
        {
            loss.Backward();
            var e = Assert.Throws<InvalidOperationException>(() => opt.ClipGradNorm(1));
            Assert.Contains("update in backward applies each update before all gradients exist", e.Message, StringComparison.Ordinal);
        }
        Assert.Equal(0, opt.ClipGradNorm(1));   // outside the scope: no gradients left, norm 0
    }
}
