using System.Text.Json;
using Frugal.Formats;
using Frugal.Memory;
using Frugal.Nn;
using Frugal.Optim;

namespace Frugal.Tests;

/// <summary>The memory profiler: its timeline agrees with the allocator's counters, bytes per category, module and
/// format are exact for known models, one profiler per device; gradient checkpointing frees exactly the tensors
/// inside its segments and leaves the gradients unchanged.</summary>
public class ProfilerTests
{
    private static void TrainSteps(Module model, Device device, int steps, MemoryProfiler? profiler = null)
    {
        using var opt = new Adam(model.Parameters(), 1e-3);
        for (var s = 0; s < steps; s++)
        {
            using var scope = TensorScope.Begin();
            profiler?.Mark($"step {s + 1} forward");
            var x = Tensor.Uniform(new Shape(128, 784), -1, 1, (ulong)s, device: device);
            var y = Tensor.FromArray(Enumerable.Range(0, 128).Select(i => (i * 7 + s) % 10).ToArray(), new Shape(128), device);
            var loss = F.CrossEntropy(model.Forward(x), y);
            profiler?.Mark($"step {s + 1} backward");
            loss.Backward();
            profiler?.Mark($"step {s + 1} optimizer");
            opt.Step();
            opt.ZeroGrad();
        }
    }

    [Fact]
    public void TheTimelineAgreesWithTheAllocatorAndTheDenseMlpMatchesTheHandCount()
    {
        var device = Device.CreateCpu("profile-dense");
        using var profiler = MemoryProfiler.Start(device);
        Init.ManualSeed(1);
        using var model = Models.Zoo.Mlp(device: device);
        TrainSteps(model, device, 2, profiler);
        var report = profiler.Report(model.FormatsByPath());
        var stats = device.Allocator.Stats();
        Assert.Equal(stats.PeakTotal, report.PeakTotal);
        Assert.Equal(stats.CurrentTotal, report.CurrentTotal);
        foreach (var c in MemoryCategories.All)
        {
            Assert.Equal(stats.Peak(c), report.Peak[c]);
            Assert.Equal(stats.Current(c), report.Current[c]);
        }
        Assert.Equal(report.PeakTotal, report.Timeline.Max(t => t.Bytes.Sum()));
        Assert.Equal(report.PeakTotal, report.LiveAtPeak.Sum(o => o.Bytes));
        Assert.Equal(report.PeakTotal, report.PerModule.Sum(g => g.Bytes.Values.Sum()));
        // By hand: 669,706 parameters; Adam's two moments; every gradient plus one [128, 512] input gradient in
        // flight; activations: the two saved ReLU outputs and, for an instant, Linear 2's output (3·[128, 512]
        // floats); the batch (x and labels) is Other.
        const long parameters = 784 * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10;
        Assert.Equal(4 * parameters, report.Peak[MemoryCategory.Parameter]);
        Assert.Equal(8 * parameters, report.Peak[MemoryCategory.OptimizerState]);
        Assert.Equal(4 * parameters + 4 * 128 * 512, report.Peak[MemoryCategory.Gradient]);
        Assert.Equal(4 * 3 * 128 * 512, report.Peak[MemoryCategory.Activation]);
        Assert.Equal(4 * 128 * 784 + 4 * 128, report.Peak[MemoryCategory.Other]);
        Assert.Equal(["dense"], report.PerFormat.Where(g => g.Name != "(no weight)").Select(g => g.Name));
        Assert.Null(report.DriverUsedBytes);   // the CPU has no driver count
        Assert.Null(report.DriverAgrees);
        Assert.True(report with { DriverUsedBytes = report.ReservedBytes } is { DriverAgrees: true });
        Assert.True(report with { DriverUsedBytes = report.ReservedBytes - 1 } is { DriverAgrees: false });
        Assert.NotEmpty(report.Window("step 2 "));
        Assert.All(report.Window("step 2 "), t => Assert.StartsWith("step 2 ", t.Phase, StringComparison.Ordinal));
    }

    [Fact]
    public void BytesAreAttributedToEachLayersFormat()
    {
        var device = Device.CreateCpu("profile-formats");
        using var profiler = MemoryProfiler.Start(device);
        Init.ManualSeed(2);
        using var model = new Sequential(new Flatten(), new Linear(784, 512, WeightFormat.Csr(0.1), device: device), new ReLU(),
            new Linear(512, 512, WeightFormat.LowRank(16), device: device), new ReLU(), new Linear(512, 10, device: device));
        TrainSteps(model, device, 2);   // the second step's peak has the optimizer state too
        var report = profiler.Report(model.FormatsByPath());
        var formats = report.PerFormat.ToDictionary(g => g.Name);
        // At the peak every weight, its gradient and state exist; the sparse layer's indices are its own FormatMeta.
        Assert.Equal(4L * (512 * 78 + 512), formats["csr"].Bytes[MemoryCategory.Parameter]);
        Assert.Equal(4L * (513 + 512 * 78), formats["csr"].Bytes[MemoryCategory.FormatMeta]);
        Assert.Equal(4L * (16 * 1024 + 512), formats["lowrank"].Bytes[MemoryCategory.Parameter]);
        Assert.Equal(4L * (512 * 10 + 10), formats["dense"].Bytes[MemoryCategory.Parameter]);
        Assert.Equal(2 * 4L * (16 * 1024 + 512), formats["lowrank"].Bytes[MemoryCategory.OptimizerState]);
    }

    [Fact]
    public void OneProfilerPerDevice()
    {
        var device = Device.CreateCpu("profile-twice");
        using (MemoryProfiler.Start(device))
        {
            var e = Assert.Throws<InvalidOperationException>(() => MemoryProfiler.Start(device));
            Assert.Contains("profile-twice is already being profiled", e.Message, StringComparison.Ordinal);
            using var other = MemoryProfiler.Start(Device.CreateCpu("profile-other"));
        }
        using var again = MemoryProfiler.Start(device);
        using var t = Tensor.Zeros(new Shape(10), device: device);
        Assert.Equal(40, again.Report().Peak[MemoryCategory.Other]);
    }

    [Fact]
    public void CheckpointingFreesExactlyTheTensorsInsideItsSegmentsAndKeepsTheGradients()
    {
        // Two segments of [Linear, Tanh, Linear, Tanh]: without checkpointing forward keeps every Tanh output (four
        // [32, 64] tensors; Linear outputs are not saved); with it, only each segment's output (the next layer's
        // input), so exactly the two inner Tanh outputs, 2 · 32 · 64 floats, are not kept.
        var saved = new long[2];
        var grads = new List<double[]>[2];
        for (var run = 0; run < 2; run++)
        {
            var device = Device.CreateCpu($"checkpoint-{run}");
            Init.ManualSeed(3);
            Module Segment() => new Sequential(new Linear(64, 64, device: device), new Tanh(), new Linear(64, 64, device: device), new Tanh());
            Module Wrap(Module m) => run == 1 ? new Checkpointed(m) : m;
            using var model = new Sequential(Wrap(Segment()), Wrap(Segment()), new Linear(64, 10, device: device));
            using var scope = TensorScope.Begin();
            var x = Tensor.Uniform(new Shape(32, 64), -1, 1, 4, device: device);
            var y = Tensor.FromArray(Enumerable.Range(0, 32).Select(i => i % 10).ToArray(), new Shape(32), device);
            var loss = F.CrossEntropy(model.Forward(x), y);
            saved[run] = device.Allocator.Current(MemoryCategory.Activation);
            loss.Backward();
            grads[run] = [.. model.Parameters().Select(TestUtil.Values)];
        }
        Assert.Equal(2 * 32 * 64 * 4, saved[0] - saved[1]);
        for (var i = 0; i < grads[0].Count; i++)
            TestUtil.AssertClose(grads[0][i], grads[1][i], 1e-7, 1e-6, $"parameter {i}");
    }
}
