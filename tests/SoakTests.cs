using Frugal.Formats;
using Frugal.Memory;
using Frugal.Nn;
using Frugal.Optim;
using Frugal.Training.Sparsity;

namespace Frugal.Tests;

/// <summary>Long training leaks nothing: after the first steps, the live tensor count, every category's current
/// bytes and the allocator's reserved bytes stay exactly flat, per format and training option. CI runs 300 steps
/// each; <c>FRUGAL_SOAK_STEPS=10000</c> runs the long soak on demand.</summary>
public class SoakTests
{
    [Theory]
    [InlineData("dense", 32, false, false)]
    [InlineData("dense", 8, true, false)]
    [InlineData("csr:0.1", 32, false, true)]
    [InlineData("csr:0.1", 8, false, true)]
    [InlineData("bsr:0.25:8", 32, false, false)]
    [InlineData("lowrank:0.25", 32, false, false)]
    [InlineData("q8", 8, true, false)]
    [InlineData("q4", 32, false, false)]
    [InlineData("q4:latent", 32, false, false)]
    [InlineData("q1", 8, false, false)]
    [InlineData("csr:0.1+q4", 8, true, false)]
    [InlineData("lowrank:0.25+q8", 8, true, false)]
    public void LiveTensorsAndBytesStayFlatOverALongRun(string format, int stateBits, bool inBackward, bool rigl)
    {
        var steps = int.TryParse(Environment.GetEnvironmentVariable("FRUGAL_SOAK_STEPS"), out var n) && n > 0 ? n : 300;
        var device = Device.CreateCpu($"soak {format}");
        Init.ManualSeed(1);
        using var model = Models.Zoo.Mlp(hidden: 64, device: device, format: WeightFormat.Parse(format));
        using var opt = new Adam(model.Parameters(), 1e-3, stateBits: stateBits);
        var pattern = rigl ? new RigL(model, opt, updateEvery: 25, dropFraction: 0.3, endStep: steps) : null;
        (long Live, long[] Bytes, long Reserved)? settled = null;
        for (var step = 1; step <= steps; step++)
        {
            using (var scope = TensorScope.Begin())
            {
                var x = Tensor.Uniform(new Shape(32, 1, 28, 28), -1, 1, (ulong)step, device: device);
                var y = Tensor.FromArray(Enumerable.Range(0, 32).Select(i => (i * 7 + step) % 10).ToArray(), new Shape(32), device);
                opt.BackwardAndStep(F.CrossEntropy(model.Forward(x), y), inBackward);
                opt.ZeroGrad();
            }
            pattern?.Step();
            // Sampled at the same phase of RigL's cycle (just after an update), once every state exists.
            if (step % 50 == 0)
            {
                var now = (Tensor.LiveCount, MemoryCategories.All.Select(device.Allocator.Current).ToArray(), device.Allocator.Stats().ReservedBytes);
                if (settled is { } s)
                {
                    Assert.True(now.LiveCount == s.Live, $"step {step}: {now.LiveCount} live tensors, {s.Live} at step 50");
                    Assert.Equal(s.Bytes, now.Item2);
                    Assert.True(now.ReservedBytes == s.Reserved, $"step {step}: {now.ReservedBytes} bytes reserved, {s.Reserved} at step 50");
                }
                settled ??= now;
            }
        }
        Assert.NotNull(settled);
    }
}
