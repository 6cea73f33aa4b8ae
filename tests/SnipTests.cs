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
        var firstWeight = first.Weight.Value();
        var w = firstWeight.ToArray<float>();
        var g = firstWeight.Grad!.ToArray<float>();
        var bias = first.Bias!.ToArray<float>();
        var layers = Snip.Prune(model.Layers, [0.25, 1.0]);

        var sparseLayer = Assert.IsType<Linear>(layers[0]);
        Assert.NotSame(first, sparseLayer);
        Assert.True(firstWeight.IsDisposed);   // the dense layer is gone
        var sparse = Assert.IsType<SparseWeight>(sparseLayer.Weight);
        Assert.Equal(new Shape(6, 8), sparse.Shape);
        Assert.Same(second, layers[2]);
        Assert.Null(second.Weight.Value().Grad);
        var expected = Enumerable.Range(0, w.Length).OrderByDescending(k => Math.Abs(w[k] * g[k])).ThenBy(k => k).Take(12).Order().ToArray();
        var kept = Enumerable.Range(0, sparse.Pattern.Rows)
            .SelectMany(r => Enumerable.Range(sparse.Pattern.RowPtr[r], sparse.Pattern.RowPtr[r + 1] - sparse.Pattern.RowPtr[r]).Select(k => r * 8 + sparse.Pattern.ColIdx[k]))
            .ToArray();
        Assert.Equal(expected, kept);
        Assert.Equal(expected.Select(k => w[k]), sparse.Values.ToArray<float>());
        Assert.Equal(bias, sparseLayer.Bias!.ToArray<float>());
        sparseLayer.Dispose();
    }

    [Fact]
    public void PrunesConvolutionsByBlocksOfSensitivity()
    {
        Init.ManualSeed(7);
        var conv = new Conv2d(16, 8, 1);   // an [8, 16] weight: 1 × 2 blocks of 8×8
        using var model = new Sequential(conv, new Flatten(), new Linear(8 * 3 * 3, 2));
        using (var scope = TensorScope.Begin())
        {
            var x = Tensor.Uniform(new Shape(4, 16, 3, 3), -1, 1, 3);
            var y = Tensor.FromArray([0, 1, 1, 0], new Shape(4));
            F.CrossEntropy(model.Forward(x), y).Backward();
        }
        var convWeight = conv.Weight.Value();
        var w = convWeight.ToArray<float>();
        var g = convWeight.Grad!.ToArray<float>();
        var score = new double[2];
        for (var k = 0; k < w.Length; k++)
            score[k % 16 / 8] += Math.Abs((double)w[k] * g[k]);
        var layers = Snip.Prune(model.Layers, [0.5, 1.0], TensorFormat.Bsr(8));

        using var sparseConv = Assert.IsType<Conv2d>(layers[0]);
        Assert.Equal(conv.Options, sparseConv.Options);
        var sparse = Assert.IsType<SparseWeight>(sparseConv.Weight);
        Assert.Equal(8, sparse.Block);
        Assert.Equal(new Shape(8, 16, 1, 1), sparse.Shape);
        var best = score[0] >= score[1] ? 0 : 1;
        Assert.Equal([best], sparse.Pattern.ColIdx);
        var kept = Enumerable.Range(0, 64).Select(t => w[t / 8 * 16 + best * 8 + t % 8]);
        Assert.Equal(kept, sparse.Values.ToArray<float>());
        Assert.True(convWeight.IsDisposed);   // the dense layer is gone
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
        Assert.Throws<ArgumentException>(() => SparseWeight.FromDense(a.Weight.Value(), CsrPattern.Random(4, 3, 0.5, 1)));
    }
}
