using Frugal.Formats;
using Frugal.Models;
using Frugal.Nn;
using Frugal.Optim;
using Frugal.Training.Sparsity;

namespace Frugal.Tests;

/// <summary>SET pattern updates keep values, indices and optimizer state consistent, at constant density.</summary>
public class SetTests
{
    private static Dictionary<long, (float Value, float Moment)> Entries(SparseWeight layer, Optimizer opt)
    {
        var p = layer.Pattern;
        var values = layer.Values.ToArray<float>();
        var moments = opt.StateDict()[$"{layer.Values.Name}.exp_avg"].ToArray<float>();
        var map = new Dictionary<long, (float, float)>();
        for (var r = 0; r < p.Rows; r++)
        {
            for (var k = p.RowPtr[r]; k < p.RowPtr[r + 1]; k++)
                map[(long)r * p.Cols + p.ColIdx[k]] = (values[k], moments[k]);
        }
        return map;
    }

    [Fact]
    public void UpdateDropsTheSmallestAndRegrowsAtZeroWithStateMovedAlong()
    {
        Init.ManualSeed(3);
        using var model = new Sequential(new Linear(40, 30, WeightFormat.Csr(0.2)), new ReLU(), new Linear(30, 10, WeightFormat.Csr(0.3)));
        using var opt = new Adam(model.Parameters(), 1e-2);
        var set = new Set(model, opt, updateEvery: 2, dropFraction: 0.3, endStep: 100, seed: 4);
        var layer = Assert.IsType<SparseWeight>(((Linear)model.Layers[0]).Weight);
        void TrainStep()
        {
            using var scope = TensorScope.Begin();
            var x = Tensor.Uniform(new Shape(8, 40), -1, 1, 9);
            F.Sum(model.Forward(x)).Backward();
            opt.Step();
            opt.ZeroGrad();
        }
        TrainStep();
        Assert.False(set.Step());   // step 1: not an update step
        TrainStep();
        var before = Entries(layer, opt);
        var nnz = layer.Pattern.Nnz;
        Assert.True(set.Step());    // step 2: update
        var after = Entries(layer, opt);

        Assert.Equal(nnz, layer.Pattern.Nnz);
        var drop = (int)Math.Round(set.DropFractionAt(2) * nnz);
        var threshold = before.Values.Select(e => Math.Abs(e.Value)).Order().ElementAt(drop - 1);
        var survivors = after.Keys.Where(before.ContainsKey).Where(k => Math.Abs(before[k].Value) > threshold).ToList();
        Assert.Equal(nnz - drop, before.Count(e => Math.Abs(e.Value.Value) > threshold));
        Assert.All(before.Where(e => Math.Abs(e.Value.Value) > threshold), e => Assert.True(after.ContainsKey(e.Key), $"large weight at {e.Key} was dropped"));
        foreach (var k in survivors)
            Assert.Equal(before[k], after[k]);   // value and Adam moment moved with the weight
        var regrown = after.Where(e => !survivors.Contains(e.Key)).ToList();
        Assert.Equal(drop, regrown.Count);
        Assert.All(regrown, e => Assert.Equal((0f, 0f), e.Value));
        // The dense view changed only where weights were dropped (to zero) or regrown (at zero).
        using var dense = TestUtil.DenseCopy(layer);
        Assert.Equal(new Shape(30, 40), dense.Shape);
        var d = dense.ToArray<float>();
        Assert.Equal(nnz - drop, d.Count(v => v != 0));
        TrainStep();   // training continues on the new pattern
    }

    [Fact]
    public void ScheduleDecaysAndStopsAtTheEndStep()
    {
        Init.ManualSeed(1);
        using var model = Zoo.Mlp(inputs: 12, hidden: 8, classes: 3, format: WeightFormat.Csr(0.5));
        using var opt = new SGD(model.Parameters(), 0.1);
        var set = new Set(model, opt, updateEvery: 5, dropFraction: 0.4, endStep: 20, seed: 1);
        Assert.Equal(0.4, set.DropFractionAt(0), 12);
        Assert.Equal(0.2, set.DropFractionAt(10), 12);
        Assert.Equal(0.0, set.DropFractionAt(20), 12);
        var updates = Enumerable.Range(1, 30).Count(_ => set.Step());
        Assert.Equal(3, updates);   // steps 5, 10, 15
        Assert.Equal(3, set.Updates);
    }

    [Fact]
    public void BadInputIsRefusedClearly()
    {
        Init.ManualSeed(1);
        using var dense = Zoo.Mlp(inputs: 4, hidden: 4, classes: 2);
        using var opt = new SGD(dense.Parameters(), 0.1);
        var e = Assert.Throws<ArgumentException>(() => new Set(dense, opt, 10, 0.3, 100));
        Assert.Contains("has no sparse layer", e.Message, StringComparison.Ordinal);
        using var sparseLayer = new Linear(6, 4, WeightFormat.Csr(0.5));
        var sparse = Assert.IsType<SparseWeight>(sparseLayer.Weight);
        using var opt2 = new SGD(sparseLayer.Parameters(), 0.1);
        Assert.Throws<ArgumentException>(() => new Set(sparseLayer, opt2, 10, 1.5, 100));
        var wrong = CsrPattern.Random(6, 4, 0.25, 1);
        var size = Assert.Throws<ArgumentException>(() => sparse.UpdatePattern(wrong, new int[wrong.Nnz]));
        Assert.Contains("does not replace", size.Message, StringComparison.Ordinal);
        var map = Assert.Throws<ArgumentException>(() => opt2.RemapState(sparse.Values, new int[3]));
        Assert.Contains("3 map entries", map.Message, StringComparison.Ordinal);
    }
}
