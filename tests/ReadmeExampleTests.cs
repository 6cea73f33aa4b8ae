using Frugal.Data;
using Frugal.Formats;
using Frugal.Memory;
using Frugal.Models;
using Frugal.Nn;
using Frugal.Optim;

namespace Frugal.Tests;

/// <summary>The README's C# example, kept compiling and working (on the embedded slice, a few steps).</summary>
public class ReadmeExampleTests
{
    [Fact]
    public void ReadmeExampleTrainsAndReportsMemory()
    {
        var data = EmbeddedData.FashionMnistSlice();
        var device = Device.CreateCpu("readme");
        Init.ManualSeed(1);
        using var model = new Sequential(
            new Flatten(), new Linear(784, 512, device: device), new ReLU(),
            new Linear(512, 512, device: device), new ReLU(), new Linear(512, 10, device: device));
        using var opt = new Adam(model.Parameters(), lr: 1e-3);

        double first = double.NaN, last = double.NaN;
        var steps = 0;
        long gradAfterBackward = 0;
        foreach (var (x, y) in data.Train.Batches(128, shuffle: true, seed: 1, device: device))
        {
            using var scope = TensorScope.Begin();
            var loss = F.CrossEntropy(model.Forward(x), y);
            loss.Backward();
            gradAfterBackward = device.Allocator.Current(MemoryCategory.Gradient);
            opt.Step();
            opt.ZeroGrad();
            last = loss.Item();
            if (steps++ == 0)
                first = last;
            if (steps == 40)
                break;
        }
        var stats = device.Allocator.Stats();
        Assert.True(last < first * 0.6, $"loss went from {first} to {last}");
        var paramBytes = 4L * (784 * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10);
        Assert.Equal(paramBytes, stats.Current(MemoryCategory.Parameter));
        Assert.Equal(2 * paramBytes, stats.Current(MemoryCategory.OptimizerState));
        Assert.Equal(0, stats.Current(MemoryCategory.Gradient));
        Assert.Equal(0, stats.Current(MemoryCategory.Activation));
        Assert.Equal(paramBytes, gradAfterBackward);
        Assert.Contains("OptimizerState", stats.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public void ReadmeSparseExampleTrainsWithATenthOfTheBytes()
    {
        var data = EmbeddedData.FashionMnistSlice();
        var device = Device.CreateCpu("readme-sparse");
        Init.ManualSeed(1);
        var csr = WeightFormat.Csr(density: 0.1);
        using var sparse = new Sequential(
            new Flatten(), new Linear(784, 512, csr, device: device), new ReLU(),
            new Linear(512, 512, csr, device: device), new ReLU(), new Linear(512, 10, device: device));
        using var adam = new Adam(sparse.Parameters(), lr: 2e-3);
        var rigl = new Training.Sparsity.RigL(sparse, adam, updateEvery: 10, dropFraction: 0.3, endStep: 3500);

        var (first, last) = Steps(data.Train, device, 40, adam, (x, y) => F.CrossEntropy(sparse.Forward(x), y), () => rigl.Step());
        Assert.Equal(4, rigl.Updates);   // steps 10, 20, 30, 40
        Assert.True(last < first * 0.7, $"loss went from {first} to {last}");
        // round(0.1 · 784) and round(0.1 · 512) values per row of the two sparse layers, the dense head, the biases.
        var values = 512L * 78 + 512 * 51 + 512 * 10 + 512 + 512 + 10;
        Assert.Equal(4 * values, device.Allocator.Current(MemoryCategory.Parameter));
        Assert.Equal(8 * values, device.Allocator.Current(MemoryCategory.OptimizerState));
        Assert.Equal(4L * (513 + 512 * 78 + 513 + 512 * 51), device.Allocator.Current(MemoryCategory.FormatMeta));
    }

    [Fact]
    public void ReadmeLowRankSharedDistilledExampleTrains()
    {
        var data = EmbeddedData.FashionMnistSlice();
        var device = Device.CreateCpu("readme-lowrank");
        Init.ManualSeed(1);
        using var trainedDenseModel = Zoo.Mlp(device: device);
        using (var teacherOpt = new Adam(trainedDenseModel.Parameters(), 1e-3))
            Steps(data.Train, device, 30, teacherOpt, (x, y) => F.CrossEntropy(trainedDenseModel.Forward(x), y));
        var teacherBytes = device.Allocator.Current(MemoryCategory.Parameter);

        var low = WeightFormat.LowRank(0.25);
        var hidden = new Linear(512, 512, low, device: device);
        using var student = new Sequential(new Flatten(), new Linear(784, 512, low, device: device), new ReLU(),
            hidden, new ReLU(), new Shared(hidden), new ReLU(), new Linear(512, 10, device: device));
        var teacher = new Training.Distillation.Teacher(trainedDenseModel, temperature: 4, alpha: 0.9);
        using var opt = new Adam(student.Parameters(), 1e-3);
        var (first, last) = Steps(data.Train, device, 40, opt, (x, y) => teacher.Loss(x, student.Forward(x), y));
        Assert.True(last < first * 0.5, $"loss went from {first} to {last}");
        // Ranks 77 and 64 (a quarter of each layer's values), the hidden factors counted once, the dense head.
        var values = 77L * (784 + 512) + 512 + 64 * (512 + 512) + 512 + 512 * 10 + 10;
        Assert.Equal(4 * values, device.Allocator.Current(MemoryCategory.Parameter) - teacherBytes);
    }

    /// <summary>The README's loop for <paramref name="count"/> steps: loss, backward, step, zero, then
    /// <paramref name="after"/>; returns the first and last losses.</summary>
    private static (double First, double Last) Steps(Data.ImageDataset train, Device device, int count, Optimizer opt, Func<Tensor, Tensor, Tensor> loss, Action? after = null)
    {
        double first = double.NaN, last = double.NaN;
        var steps = 0;
        foreach (var (x, y) in train.Batches(128, shuffle: true, seed: 1, device: device))
        {
            using var scope = TensorScope.Begin();
            var l = loss(x, y);
            l.Backward();
            opt.Step();
            opt.ZeroGrad();
            after?.Invoke();
            last = l.Item();
            if (steps++ == 0)
                first = last;
            if (steps == count)
                break;
        }
        return (first, last);
    }
}
