using Frugal.Formats;
using Frugal.Memory;
using Frugal.Nn;
using Frugal.Optim;
using Frugal.Training.Sparsity;

namespace Frugal.Tests;

/// <summary>RigL regrows where the dense gradient is largest among empty positions, computing that gradient only on
/// update steps in bounded Workspace chunks.</summary>
public class RigLTests
{
    [Fact]
    public void RegrowsTheLargestDenseGradientsAmongEmptyPositions_InBoundedWorkspace()
    {
        var device = Device.CreateCpu("rigl");
        Init.ManualSeed(8);
        const int inputs = 300, outputs = 400, batch = 16;   // 400 × 300 > one 64K-element chunk
        using var layer = new Linear(inputs, outputs, WeightFormat.Csr(0.05), bias: false, device: device);
        var weight = Assert.IsType<SparseWeight>(layer.Weight);
        using var opt = new SGD(layer.Parameters(), 0.05);
        var rigl = new RigL(layer, opt, updateEvery: 2, dropFraction: 0.3, endStep: 100);
        var x = TestUtil.Uniform(11, batch * inputs, -1, 1).Select(v => (float)v).ToArray();
        var mix = TestUtil.Uniform(12, batch * outputs, -1, 1).Select(v => (float)v).ToArray();
        void TrainStep()
        {
            using var scope = TensorScope.Begin();
            var tx = Tensor.FromArray(x, new Shape(batch, inputs), device);
            var tm = Tensor.FromArray(mix, new Shape(batch, outputs), device);
            F.Sum(layer.Forward(tx) * tm).Backward();   // dY = mix
            opt.Step();
            opt.ZeroGrad();
        }

        TrainStep();
        Assert.False(rigl.Step());
        var before = weight.Pattern;
        var oldPositions = TestUtil.PatternPositions(before);
        device.Allocator.ResetPeak();
        TrainStep();                                    // backward answers the armed request
        Assert.True(rigl.Step());
        var after = TestUtil.PatternPositions(weight.Pattern);
        Assert.Equal(before.Nnz, weight.Pattern.Nnz);

        // Dense gradient G = dYᵀ·X in double; regrown = the best |G| among positions empty before the update.
        var regrown = after.Where(p => !oldPositions.Contains(p)).ToHashSet();
        var drop = (int)Math.Round(rigl.DropFractionAt(2) * before.Nnz);
        Assert.Equal(drop, regrown.Count);
        var scores = new List<(long Flat, double Score)>();
        for (var r = 0; r < outputs; r++)
        {
            for (var c = 0; c < inputs; c++)
            {
                long flat = (long)r * inputs + c;
                if (oldPositions.Contains(flat))
                    continue;
                double g = 0;
                for (var b = 0; b < batch; b++)
                    g += (double)mix[b * outputs + r] * x[b * inputs + c];
                scores.Add((flat, Math.Abs(g)));
            }
        }
        var expected = scores.OrderByDescending(s => s.Score).Take(drop).Select(s => s.Flat).ToHashSet();
        Assert.Equal(expected.Order(), regrown.Order());

        var workspace = device.Allocator.Stats().Peak(MemoryCategory.Workspace);
        // One F32 chunk of scores and the transposed input the sparse kernels read, never the dense 400 × 300 gradient.
        Assert.InRange(workspace, 1, 4 * GrowthScores.ChunkElements + 4 * inputs * batch);
        Assert.Equal(0, device.Allocator.Current(MemoryCategory.Workspace));
    }

    [Fact]
    public void AnUpdateStepWithoutBackwardIsRefused()
    {
        Init.ManualSeed(1);
        using var layer = new Linear(20, 10, WeightFormat.Csr(0.3), bias: false);
        using var opt = new SGD(layer.Parameters(), 0.1);
        var rigl = new RigL(layer, opt, updateEvery: 2, dropFraction: 0.3, endStep: 100);
        rigl.Step();
        var e = Assert.Throws<InvalidOperationException>(() => rigl.Step());
        Assert.Contains("no dense-gradient scores", e.Message, StringComparison.Ordinal);
    }
}
