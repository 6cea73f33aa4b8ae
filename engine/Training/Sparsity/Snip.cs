using Frugal.Formats;
using Frugal.Nn;

namespace Frugal.Training.Sparsity;

/// <summary>
/// SNIP (Lee et al., 2019): one-shot pruning at initialisation by connection sensitivity |w · ∂L/∂w| measured on a
/// batch (for BSR a block's sensitivity is the sum over its values). The dense model is only needed for that one
/// batch; the result is the sparse layers to train.
/// </summary>
public static class Snip
{
    private static Tensor Copy(Tensor t)
    {
        var copy = Tensor.Empty(t.Shape, t.DType, t.Device);
        using (Autograd.NoGrad())
            F.CopyInto(copy, t);
        return copy;
    }

    private static Tensor DenseValue(Weight weight, Module layer) => weight is DenseWeight d
        ? d.Value
        : throw new ArgumentException($"SNIP: {layer} is not dense; SNIP prunes dense layers");

    /// <summary>Replaces every <see cref="Linear"/> and <see cref="Conv2d"/> of <paramref name="layers"/> whose
    /// density is below 1 by the same layer with its SNIP-pruned weight (a <see cref="SparseWeight"/>) in
    /// <paramref name="format"/> (the dense layer is disposed); the gradients of the loss on one batch must already
    /// be in the weights' <c>Grad</c>, and are dropped from the layers kept dense. <paramref name="densities"/> gives
    /// one density per weight layer, in order. Returns the layers to train.</summary>
    /// <exception cref="ArgumentException">The number of densities differs from the weight layers', a weight has no
    /// gradient, a layer is not a whole number of the format's blocks, or a layer is shared.</exception>
    public static IReadOnlyList<Module> Prune(IReadOnlyList<Module> layers, IReadOnlyList<double> densities, SparseFormat? format = null)
    {
        ArgumentNullException.ThrowIfNull(layers);
        ArgumentNullException.ThrowIfNull(densities);
        var f = format ?? TensorFormat.Csr;
        if (layers.OfType<Shared>().FirstOrDefault() is { } shared)
            throw new ArgumentException($"SNIP: {shared} reuses a layer that pruning would replace; prune a model without shared layers");
        var weighted = layers.Where(l => l is Linear or Conv2d).ToList();
        if (weighted.Count != densities.Count)
            throw new ArgumentException($"SNIP: {densities.Count} densities for {weighted.Count} Linear and Conv2d layers");
        var result = new List<Module>();
        var i = 0;
        foreach (var layer in layers)
        {
            if (layer is not (Linear or Conv2d))
            {
                result.Add(layer);
                continue;
            }
            var density = densities[i++];
            if (density >= 1)
            {
                layer.ZeroGrad();
                result.Add(layer);
                continue;
            }
            var weight = layer is Linear l ? DenseValue(l.Weight, layer) : DenseValue(((Conv2d)layer).Weight, layer);
            var grad = weight.Grad ?? throw new ArgumentException($"SNIP: {weight.Describe()} has no gradient: run a forward and backward on a batch first");
            var (rows, cols) = (weight.Shape[0], (int)(weight.Numel / weight.Shape[0]));
            var w = weight.ToArray<float>();
            var g = grad.ToArray<float>();
            var sensitivity = new float[w.Length];
            for (var k = 0; k < w.Length; k++)
                sensitivity[k] = w[k] * g[k];
            var scores = f.BlockScores(sensitivity, rows, cols, Math.Abs);
            var pattern = CsrPattern.TopScores(scores, rows / f.Block, cols / f.Block, density);
            var sparse = SparseWeight.FromDense(weight, pattern, f);
            var bias = layer is Linear lb ? lb.Bias : ((Conv2d)layer).Bias;
            var biasCopy = bias is null ? null : Copy(bias);
            result.Add(layer is Conv2d conv ? new Conv2d(sparse, biasCopy, conv.Options) : new Linear(sparse, biasCopy));
            layer.Dispose();
        }
        return result;
    }
}
