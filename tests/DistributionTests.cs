using Frugal.Training.Sparsity;

namespace Frugal.Tests;

/// <summary>Global density spread over layers: uniform, and ERK with its scaling and dense capping.</summary>
public class DistributionTests
{
    private static readonly (int Rows, int Cols)[] Mlp = [(512, 784), (512, 512), (10, 512)];

    [Fact]
    public void ErkKeepsTheGlobalDensityAndFollowsTheFanSum()
    {
        var d = Distribution.Erk(Mlp, 0.1);
        var sizes = Mlp.Select(s => (double)s.Rows * s.Cols).ToArray();
        Assert.Equal(0.1 * sizes.Sum(), d.Zip(sizes, (a, b) => a * b).Sum(), 6);
        Assert.Equal(1.0, d[2]);   // the 10×512 head would exceed 1: it becomes dense
        // Uncapped layers keep density ∝ (rows + cols) / (rows · cols).
        Assert.Equal((512.0 + 784) / (512 * 784) / ((512.0 + 512) / (512 * 512)), d[0] / d[1], 9);
        Assert.All(d, v => Assert.InRange(v, 0, 1));
        Assert.Equal([0.3, 0.3, 0.3], Distribution.Uniform(Mlp, 0.3));
        Assert.Throws<ArgumentOutOfRangeException>(() => Distribution.Erk(Mlp, 0));
    }

    [Fact]
    public void ErkMlpHasTheGlobalDensityInStoredValues()
    {
        Frugal.Nn.Init.ManualSeed(1);
        using var model = Frugal.Models.Zoo.Mlp(format: Frugal.Formats.WeightFormat.Csr(0.1), erk: true);
        var sparse = model.Weights().Select(w => w.Weight).OfType<Frugal.Formats.SparseWeight>().ToList();
        Assert.Equal(2, sparse.Count);   // the head is dense
        Assert.IsType<Frugal.Formats.DenseWeight>(model.Layers.OfType<Frugal.Nn.Linear>().Last().Weight);
        var stored = sparse.Sum(l => (long)l.Pattern.Nnz) + 10 * 512;
        Assert.InRange(stored / (double)(512 * 784 + 512 * 512 + 10 * 512), 0.099, 0.101);
    }
}
