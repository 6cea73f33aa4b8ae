using Frugal.Data;
using Frugal.Memory;
using Frugal.Models;
using Frugal.Nn;
using Frugal.Optim;

namespace Frugal.Tests;

/// <summary>Whole models on CUDA against the CPU: the same seeded initialisation, forward, backward and one Adam
/// step give the same numbers within float tolerance (skipped, with the driver's reason, without a GPU).</summary>
public class CudaModelTests
{
    private const double Lr = 1e-3;

    [Theory]
    [InlineData("mlp")]
    [InlineData("cnn")]
    public void ForwardBackwardAndAdamStepMatchTheCpu(string name)
    {
        var gpu = TestUtil.DeviceFor("cuda:0");
        var data = EmbeddedData.FashionMnistSlice();
        var cpu = Step(name, Device.Cpu, data);
        var cuda = Step(name, gpu, data);
        Assert.Equal(cpu.Loss, cuda.Loss, 1e-4 * Math.Abs(cpu.Loss));
        Assert.Equal(cpu.Params.Length, cuda.Params.Length);
        for (var i = 0; i < cpu.Params.Length; i++)
        {
            var scale = cpu.Grads[i].Max(Math.Abs);
            TestUtil.AssertClose(cpu.Grads[i], cuda.Grads[i], 1e-4 * scale, 1e-3, $"{name} gradient {i}");
            // Adam's first step moves each weight by about lr·sign(g): where |g| is at rounding level the two devices
            // may disagree on the sign, so only there the bound is the step size itself.
            for (var j = 0; j < cpu.Params[i].Length; j++)
            {
                var bound = Math.Abs(cpu.Grads[i][j]) > 1e-3 * scale ? 1e-5 + 1e-4 * Math.Abs(cpu.Params[i][j]) : 2 * Lr + 1e-5;
                Assert.True(Math.Abs(cpu.Params[i][j] - cuda.Params[i][j]) <= bound,
                    $"{name} parameter {i}[{j}] after one Adam step: cpu {cpu.Params[i][j]}, cuda {cuda.Params[i][j]}");
            }
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void GptForwardBackwardAndAdamWStepMatchTheCpu(bool memoryEfficient)
    {
        var gpu = TestUtil.DeviceFor("cuda:0");
        // Real text: Debian's fortunes when installed, else the project's README (the CLI's embedded corpus).
        var corpus = TextCorpus.FromFortunes() ?? TextCorpus.FromFile(Path.Combine(RepositoryRoot(), "README.md"));
        var config = new GptConfig(TextCorpus.Vocab, Context: 32, Layers: 2, Width: 32, Heads: 4,
            MemoryEfficientAttention: memoryEfficient, Checkpoint: memoryEfficient);
        var cpu = GptStep(config, Device.Cpu, corpus);
        var cuda = GptStep(config, gpu, corpus);
        Assert.Equal(cpu.Loss, cuda.Loss, 1e-4 * Math.Abs(cpu.Loss));
        for (var i = 0; i < cpu.Params.Length; i++)
        {
            var scale = cpu.Grads[i].Max(Math.Abs);
            TestUtil.AssertClose(cpu.Grads[i], cuda.Grads[i], 1e-4 * scale, 1e-3, $"gpt gradient {i}");
            TestUtil.AssertClose(cpu.Params[i], cuda.Params[i], 2 * Lr + 1e-5, 0, $"gpt parameter {i} after one AdamW step");
        }
    }

    [Fact]
    public void TheAllocatorAndProfilerCountTheSameBytesOnCudaAsOnTheCpu()
    {
        var gpu = TestUtil.DeviceFor("cuda:0");
        var data = EmbeddedData.FashionMnistSlice();
        var reports = new[] { Device.CreateCpu("profiled-cpu"), gpu }.Select(device =>
        {
            Init.ManualSeed(5);
            using var model = Zoo.Create("mlp", device);
            using var opt = new Adam(model.Parameters(), Lr);
            device.Allocator.EmptyCache();
            using var profiler = MemoryProfiler.Start(device);
            var steps = 0;
            foreach (var (x, y) in data.Train.Batches(64, shuffle: true, seed: 5, device: device))
            {
                using var scope = TensorScope.Begin();
                F.CrossEntropy(model.Forward(x), y).Backward();
                opt.Step();
                opt.ZeroGrad();
                if (++steps == 2)
                    break;
            }
            return profiler.Report();
        }).ToArray();
        foreach (var category in MemoryCategories.All)
            Assert.Equal(reports[0].Peak[category], reports[1].Peak[category]);
        // The driver's own count (cuMemGetInfo) covers every block the caching allocator holds.
        Assert.True(reports[1].DriverAgrees, $"driver {reports[1].DriverUsedBytes} bytes, allocator reserved {reports[1].ReservedBytes}");
        Assert.Null(reports[0].DriverAgrees);
    }

    private static Result GptStep(GptConfig config, Device device, TextCorpus corpus)
    {
        Init.ManualSeed(31);
        using var model = new Gpt(config, device);
        using var opt = new AdamW(model.Parameters(), Lr, beta2: 0.95, weightDecay: 0.1, decay: Adam.MatricesOnly);
        using var scope = TensorScope.Begin();
        var (x, y) = TextCorpus.Batch(corpus.Train, batch: 4, config.Context, seed: 3, index: 0, device);
        var loss = Gpt.Loss(model.Forward(x), y);
        loss.Backward();
        var grads = model.Parameters().Select(p => Values(p.Grad!)).ToArray();
        opt.Step();
        return new Result(loss.Item(), grads, [.. model.Parameters().Select(Values)]);
    }

    private static string RepositoryRoot()
    {
        if (TestUtil.RepositoryRoot() is { } root)
            return root;
        Assert.Skip("neither Debian's fortunes nor the repository's README.md (a text corpus) is here");
        return "";
    }

    private sealed record Result(double Loss, double[][] Grads, double[][] Params);

    private static double[] Values(Tensor t) => [.. t.ToArray<float>().Select(v => (double)v)];

    private static Result Step(string name, Device device, FashionMnist data)
    {
        Init.ManualSeed(21);
        using var model = Zoo.Create(name, device);
        using var opt = new Adam(model.Parameters(), Lr);
        foreach (var (x, y) in data.Train.Batches(64, shuffle: true, seed: 21, device: device))
        {
            using var scope = TensorScope.Begin();
            var loss = F.CrossEntropy(model.Forward(x), y);
            loss.Backward();
            var grads = model.Parameters().Select(p => Values(p.Grad!)).ToArray();
            opt.Step();
            return new Result(loss.Item(), grads, [.. model.Parameters().Select(Values)]);
        }
        throw new InvalidOperationException("the embedded slice has no batch");
    }
}
