using Frugal.Formats;
using Frugal.Memory;
using Frugal.Models;
using Frugal.Nn;
using Frugal.Optim;
using static Frugal.Tests.TestUtil;

namespace Frugal.Tests;

/// <summary><c>Module.To(device)</c> and <c>Optimizer.To(device)</c>: parameters, buffers, gradients and optimizer
/// state move in place (the same tensor objects), all or nothing, and training goes on where it would have.</summary>
public class ModuleToTests
{
    private static (Tensor X, Tensor Y) Batch(int step, Device device)
        => (Tensor.Uniform(new Shape(16, 1, 28, 28), -1, 1, (ulong)(50 + step), device: device),
            Tensor.FromArray(Enumerable.Range(0, 16).Select(i => (i + step) % 10).ToArray(), new Shape(16), device));

    private static void Step(Module model, Optimizer opt, int step, Device device)
    {
        using var scope = TensorScope.Begin();
        var (x, y) = Batch(step, device);
        opt.BackwardAndStep(F.CrossEntropy(model.Forward(x), y));
    }

    private static float[] Values(Module model) => [.. model.NamedTensors().SelectMany(t => t.Tensor.DType == DType.F32 ? t.Tensor.ToArray<float>() : [])];

    [Theory]
    [InlineData("dense")]
    [InlineData("csr:0.1")]
    [InlineData("lowrank:0.25")]
    [InlineData("q4")]
    public void AModelAndItsOptimizerMoveInPlaceAndTrainOnAsTheyWouldHave(string format)
    {
        var from = Device.CreateCpu("to-from");
        var to = Device.CreateCpu("to-target");
        Sequential Build(Device d)
        {
            Init.ManualSeed(3);
            return Zoo.Mlp(hidden: 32, device: d, format: WeightFormat.Parse(format));
        }

        // The reference: trained 4 steps where it was made (a device of its own, so that the others' bytes are the
        // moving model's alone).
        var home = Device.CreateCpu("to-stay");
        using var stay = Build(home);
        var stayOpt = new Adam(stay.Parameters(), 1e-2);
        for (var s = 0; s < 4; s++)
            Step(stay, stayOpt, s, home);

        using var moving = Build(from);
        var opt = new Adam(moving.Parameters(), 1e-2);
        Step(moving, opt, 0, from);
        Step(moving, opt, 1, from);
        var tensors = moving.NamedTensors().Select(t => t.Tensor).ToList();
        var bytes = from.Allocator.Stats();
        Assert.True(moving.To(to) == moving);
        opt.To(to);
        Assert.All(tensors, t => Assert.Same(to, t.Device));
        Assert.Equal(tensors, moving.NamedTensors().Select(t => t.Tensor));   // the same objects
        foreach (var category in new[] { MemoryCategory.Parameter, MemoryCategory.OptimizerState, MemoryCategory.FormatMeta })
        {
            Assert.Equal(0, from.Allocator.Current(category));
            Assert.Equal(bytes.Current(category), to.Allocator.Current(category));
        }
        Step(moving, opt, 2, to);
        Step(moving, opt, 3, to);
        Assert.Equal(Values(stay), Values(moving));   // two CPU backends: bit for bit
    }

    [Fact]
    public void GradientsMoveWithTheirParameters()
    {
        var from = Device.CreateCpu("to-grad-from");
        var to = Device.CreateCpu("to-grad-target");
        Init.ManualSeed(3);
        using var model = Zoo.Mlp(hidden: 16, device: from, format: WeightFormat.Parse("csr:0.3"));
        using (var scope = TensorScope.Begin())
        {
            var (x, y) = Batch(0, from);
            F.CrossEntropy(model.Forward(x), y).Backward();
        }
        var grads = model.Parameters().Select(p => p.Grad!.ToArray<float>()).ToList();
        model.To(to);
        Assert.All(model.Parameters(), p => Assert.Same(to, p.Grad!.Device));
        Assert.Equal(grads, model.Parameters().Select(p => p.Grad!.ToArray<float>()));
        Assert.Equal(0, from.Allocator.Stats().CurrentTotal);
    }

    [Fact]
    public void AMoveThatDoesNotFitMovesNothing()
    {
        var from = Device.CreateCpu("to-fits-from");
        var small = Device.CreateCpu("to-fits-small");
        Init.ManualSeed(3);
        using var model = Zoo.Mlp(hidden: 64, device: from, format: WeightFormat.Parse("csr:0.2"));
        var before = Values(model);
        var held = from.Allocator.Current(MemoryCategory.Parameter) + from.Allocator.Current(MemoryCategory.FormatMeta);
        small.Allocator.LimitBytes = held / 2;
        Assert.Throws<OutOfMemoryException>(() => model.To(small));
        Assert.All(model.NamedTensors(), t => Assert.Same(from, t.Tensor.Device));
        Assert.Equal(held, from.Allocator.Current(MemoryCategory.Parameter) + from.Allocator.Current(MemoryCategory.FormatMeta));
        Assert.Equal(0, small.Allocator.Stats().CurrentTotal);   // the copies made before the failure are freed
        Assert.Equal(before, Values(model));
    }

    [Theory]
    [InlineData("dense")]
    [InlineData("csr:0.1")]
    [InlineData("q8")]
    public void AModelMovedToCudaComputesWhatItDidOnTheCpuAndComesBack(string format)
    {
        var cuda = DeviceFor("cuda:0");
        Init.ManualSeed(5);
        using var model = Zoo.Mlp(hidden: 32, device: Device.Cpu, format: WeightFormat.Parse(format));
        using var scope = TensorScope.Begin();
        var (x, _) = Batch(0, Device.Cpu);
        var onCpu = model.Eval().Forward(x).ToArray<float>();
        var stored = Values(model);
        model.To(cuda);
        var onCuda = model.Forward(x.ToDevice(cuda)).ToArray<float>();
        // A 784-32-32-10 product: each output a sum of at most 784 F32 products, differently ordered on each device.
        for (var i = 0; i < onCpu.Length; i++)
            Assert.True(Math.Abs(onCpu[i] - onCuda[i]) <= 1e-4 * (1 + Math.Abs(onCpu[i])), $"output {i}: cpu {onCpu[i]}, cuda {onCuda[i]}");
        model.To(Device.Cpu);
        Assert.All(model.NamedTensors(), t => Assert.Same(Device.Cpu, t.Tensor.Device));
        Assert.Equal(stored, Values(model));   // copied there and back: the same bits
    }

    [Fact]
    public void TensorsSharingABufferAreNotPartedByAMove()
    {
        var from = Device.CreateCpu("to-share-from");
        var to = Device.CreateCpu("to-share-target");
        using var state = Tensor.Zeros(new Shape(8), DType.F32, from).DetachFromScope();
        using var half = state.Narrow(0, 0, 4).DetachFromScope();
        state.Name = "state";
        half.Name = "half";
        var e = Assert.Throws<InvalidOperationException>(() => Tensor.MoveAll([state, half], to, "test.To"));
        Assert.Contains("half and state share one buffer", e.Message, StringComparison.Ordinal);
        Assert.Same(from, state.Device);
        Assert.Equal(0, to.Allocator.Stats().CurrentTotal);
    }

    [Fact]
    public void AnOptimizerLeftBehindIsAClearError()
    {
        var from = Device.CreateCpu("to-left-from");
        var to = Device.CreateCpu("to-left-target");
        Init.ManualSeed(3);
        using var model = Zoo.Mlp(hidden: 16, device: from);
        var opt = new Adam(model.Parameters(), 1e-2);
        Step(model, opt, 0, from);
        model.To(to);
        var e = Assert.ThrowsAny<Exception>(() => Step(model, opt, 1, to));
        Assert.Contains("to-left-from", e.Message, StringComparison.Ordinal);
        Assert.Contains("to-left-target", e.Message, StringComparison.Ordinal);
    }
}
