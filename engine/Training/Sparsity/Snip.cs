using Frugal.Formats;
using Frugal.Nn;

namespace Frugal.Training.Sparsity;

/// <summary>
/// SNIP (Lee et al., 2019): one-shot pruning at initialisation by connection sensitivity |w · ∂L/∂w| measured on a
/// batch. The dense model is only needed for that one batch; the result is the sparse layers to train.
/// </summary>
public static class Snip
{
    /// <summary>Replaces every <see cref="Linear"/> of <paramref name="layers"/> whose density is below 1 by its
    /// SNIP-pruned <see cref="SparseLinear"/> (the dense layer is disposed); the gradients of the loss on one batch
    /// must already be in the weights' <c>Grad</c>, and are dropped from the layers kept dense.
    /// <paramref name="densities"/> gives one density per Linear layer, in order. Returns the layers to train.</summary>
    /// <exception cref="ArgumentException">The number of densities differs from the Linear layers', or a weight has no gradient.</exception>
    public static IReadOnlyList<Module> Prune(IReadOnlyList<Module> layers, IReadOnlyList<double> densities)
    {
        ArgumentNullException.ThrowIfNull(layers);
        ArgumentNullException.ThrowIfNull(densities);
        var linears = layers.OfType<Linear>().ToList();
        if (linears.Count != densities.Count)
            throw new ArgumentException($"SNIP: {densities.Count} densities for {linears.Count} Linear layers");
        var result = new List<Module>();
        var i = 0;
        foreach (var layer in layers)
        {
            if (layer is not Linear dense)
            {
                result.Add(layer);
                continue;
            }
            var density = densities[i++];
            if (density >= 1)
            {
                dense.ZeroGrad();
                result.Add(dense);
                continue;
            }
            var grad = dense.Weight.Grad ?? throw new ArgumentException($"SNIP: {dense.Weight.Describe()} has no gradient: run a forward and backward on a batch first");
            var w = dense.Weight.ToArray<float>();
            var g = grad.ToArray<float>();
            var scores = new float[w.Length];
            for (var k = 0; k < w.Length; k++)
                scores[k] = Math.Abs(w[k] * g[k]);
            var pattern = CsrPattern.TopScores(scores, dense.OutFeatures, dense.InFeatures, density);
            result.Add(SparseLinear.FromDense(dense, pattern));
            dense.Dispose();
        }
        return result;
    }
}
