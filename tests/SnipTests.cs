using Frugal.Formats;
using Frugal.Nn;
using Frugal.Training.Sparsity;

namespace Frugal.Tests;

/// <summary>SNIP keeps the connections with the largest |w · ∂L/∂w| and their initial values.</summary>
public class SnipTests
{
    [Fact]
    public void KeepsTheMostSensitiveConnectionsWithTheirValues()
    {
        Init.ManualSeed(6);
        var first = new Linear(8, 6);
        var second = new Linear(6, 3);
        using var model = new Sequential(first, new ReLU(), second);
        using (var scope = TensorScope.Begin())
        {
            var x = Tensor.Uniform(new Shape(5, 8), -1, 1, 2);
            var y = Tensor.FromArray([0, 2, 1, 1, 0], new Shape(5));
            F.CrossEntropy(model.Forward(x), y).Backward();
        }
        var w = first.Weight.ToArray<float>();
        var g = first.Weight.Grad!.ToArray<float>();
        var bias = first.Bias!.ToArray<float>();
        var layers = Snip.Prune(model.Layers, [0.25, 1.0]);

        var sparse = Assert.IsType<SparseLinear>(layers[0]);
        Assert.Same(second, layers[2]);
        Assert.Null(second.Weight.Grad);
        var expected = Enumerable.Range(0, w.Length).OrderByDescending(k => Math.Abs(w[k] * g[k])).ThenBy(k => k).Take(12).Order().ToArray();
        var kept = Enumerable.Range(0, sparse.Pattern.Rows)
            .SelectMany(r => Enumerable.Range(sparse.Pattern.RowPtr[r], sparse.Pattern.RowPtr[r + 1] - sparse.Pattern.RowPtr[r]).Select(k => r * 8 + sparse.Pattern.ColIdx[k]))
            .ToArray();
        Assert.Equal(expected, kept);
        Assert.Equal(expected.Select(k => w[k]), sparse.Values.ToArray<float>());
        Assert.Equal(bias, sparse.Bias!.ToArray<float>());
        sparse.Dispose();
    }

    [Fact]
    public void WithoutGradientsOrWithWrongDensitiesItSaysSo()
    {
        Init.ManualSeed(1);
        using var a = new Linear(4, 3);
        var e = Assert.Throws<ArgumentException>(() => Snip.Prune([a], [0.5]));
        Assert.Contains("has no gradient", e.Message, StringComparison.Ordinal);
        e = Assert.Throws<ArgumentException>(() => Snip.Prune([a], [0.5, 0.5]));
        Assert.Contains("2 densities for 1 Linear and Conv2d layers", e.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => SparseLinear.FromDense(a, CsrPattern.Random(4, 3, 0.5, 1)));
    }
}
