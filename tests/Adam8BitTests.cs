using Frugal.Formats;
using Frugal.Memory;
using Frugal.Nn;
using Frugal.Optim;

namespace Frugal.Tests;

/// <summary>Adam with 8-bit states: blockwise-quantized moments of exactly the bytes of the layout, within half a
/// quantization step of the 32-bit moments, training as well, small tensors kept in 32 bits, and refused where a
/// state would have to follow a pattern change.</summary>
public class Adam8BitTests
{
    [Fact]
    public void HoldsOneBytePerMomentValuePlusBlockScales()
    {
        var device = Device.CreateCpu("adam8");
        Init.ManualSeed(1);
        using var layer = new Linear(784, 512, device: device);
        using var opt = new Adam(layer.Parameters(), 1e-3, stateBits: 8);
        using (var scope = TensorScope.Begin())
        {
            var x = Tensor.Uniform(new Shape(16, 784), -1, 1, 2, device: device);
            F.Sum(layer.Forward(x)).Backward();
        }
        opt.Step();
        const long weight = 784 * 512, blocks = (weight + Adam.StateBlock - 1) / Adam.StateBlock;
        // Weight: two code arrays of whole blocks and two F32 scales per block; bias (512 < 4096 values): 32-bit.
        var expected = 2 * (blocks * Adam.StateBlock + 4 * blocks) + 2 * 4L * 512;
        Assert.Equal(expected, device.Allocator.Current(MemoryCategory.OptimizerState));
        Assert.True(expected < 0.26 * 8 * (weight + 512), $"{expected} bytes");
        Assert.Equal(0, device.Allocator.Current(MemoryCategory.Workspace));
    }

    [Fact]
    public void AnEightBitStepsTransientsStaySmallWhateverTheTensorsSize()
    {
        var device = Device.CreateCpu("adam8-workspace");
        Init.ManualSeed(1);
        using var layer = new Linear(784, 512, device: device);
        using var opt = new Adam(layer.Parameters(), 1e-3, stateBits: 8);
        for (var step = 0; step < 2; step++)
        {
            using (var scope = TensorScope.Begin())
            {
                var x = Tensor.Uniform(new Shape(16, 784), -1, 1, 2, device: device);
                F.Sum(layer.Forward(x)).Backward();
            }
            device.Allocator.ResetPeak();
            opt.Step();
            opt.ZeroGrad();
        }
        // Two blocks of 2,048 values per chunk: a few F32 transients of 32 KiB, not the 784 × 512 weight's 1.6 MB.
        var peak = device.Allocator.Peak(MemoryCategory.Workspace);
        Assert.InRange(peak, 2 * 2 * Adam.StateBlock * 4, 6 * 2 * Adam.StateBlock * 4);
    }

    [Fact]
    public void TheQuantizedMomentsAreWithinHalfAStepOfThe32BitOnes()
    {
        Init.ManualSeed(2);
        using var a = new Linear(100, 64, bias: false);
        Init.ManualSeed(2);
        using var b = new Linear(100, 64, bias: false);
        using var opt8 = new Adam(a.Parameters(), 1e-2, stateBits: 8);
        using var opt32 = new Adam(b.Parameters(), 1e-2);
        for (var step = 0; step < 3; step++)
        {
            foreach (var (layer, opt) in new[] { (a, (Optimizer)opt8), (b, opt32) })
            {
                using var scope = TensorScope.Begin();
                var x = Tensor.Uniform(new Shape(8, 100), -1, 1, (ulong)step);
                var y = layer.Forward(x);
                F.Sum(y * y).Backward();
                opt.Step();
                opt.ZeroGrad();
            }
        }
        var states8 = opt8.StateDict();
        var states32 = opt32.StateDict();
        var m32 = states32.Single(kv => kv.Key.EndsWith(".exp_avg", StringComparison.Ordinal)).Value.ToArray<float>();
        var v32 = states32.Single(kv => kv.Key.EndsWith(".exp_avg_sq", StringComparison.Ordinal)).Value.ToArray<float>();
        var mCodes = states8.Single(kv => kv.Key.EndsWith(".exp_avg.codes", StringComparison.Ordinal)).Value.ToArray<sbyte>();
        var mScale = states8.Single(kv => kv.Key.EndsWith(".exp_avg.absmax", StringComparison.Ordinal)).Value.ToArray<float>();
        var sCodes = states8.Single(kv => kv.Key.EndsWith(".exp_avg_sq.root4_codes", StringComparison.Ordinal)).Value.ToArray<byte>();
        var sScale = states8.Single(kv => kv.Key.EndsWith(".exp_avg_sq.root4_absmax", StringComparison.Ordinal)).Value.ToArray<float>();
        // The weights moved apart a little over three steps (each rounding changes the next update), so compare
        // with a tolerance of a few quantization steps relative to the block's scale.
        for (var i = 0; i < m32.Length; i++)
        {
            var blk = i / Adam.StateBlock;
            Assert.InRange(mCodes[i] * mScale[blk] / 127 - m32[i], -3 * mScale[blk] / 127, 3 * mScale[blk] / 127);
            Assert.InRange(sCodes[i] * sScale[blk] / 255 - Math.Pow(v32[i], 0.25), -3 * sScale[blk] / 255, 3 * sScale[blk] / 255);
        }
        var wa = a.Weight.Value().ToArray<float>();
        var wb = b.Weight.Value().ToArray<float>();
        Assert.True(wa.Zip(wb).Max(p => Math.Abs(p.First - p.Second)) < 0.01, "the 8-bit run follows the 32-bit one");
    }

    [Fact]
    public void TrainsTheMlpAsWellAs32BitStates()
    {
        var data = Models.EmbeddedData.FashionMnistSlice();
        double Accuracy(int bits)
        {
            var device = Device.CreateCpu($"adam{bits}-mlp");
            Init.ManualSeed(1);
            using var model = Models.Zoo.Mlp(device: device);
            using var opt = new Adam(model.Parameters(), 1e-3, stateBits: bits);
            return new Models.Trainer(model, opt, device).TrainEpoch(data.Train, data.Test, epoch: 1, batchSize: 128, seed: 1).TestAccuracy;
        }

        var full = Accuracy(32);
        var eight = Accuracy(8);
        Assert.True(Math.Abs(eight - full) <= 0.01, $"8-bit {eight:F4} vs 32-bit {full:F4}");
    }

    [Fact]
    public void QuantizedStateCannotFollowAPatternChange()
    {
        Init.ManualSeed(3);
        using var layer = new Linear(512, 64, WeightFormat.Csr(0.5));
        var weight = Assert.IsType<SparseWeight>(layer.Weight);
        using var opt = new Adam(layer.Parameters(), 1e-3, stateBits: 8);
        using (var scope = TensorScope.Begin())
        {
            F.Sum(layer.Forward(Tensor.Ones(new Shape(2, 512)))).Backward();
        }
        opt.Step();
        opt.ZeroGrad();
        var e = Assert.Throws<NotSupportedException>(() => opt.RemapState(weight.Values, new int[weight.Values.Numel]));
        Assert.Contains("blockwise-quantized", e.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentOutOfRangeException>(() => new Adam(layer.Parameters(), stateBits: 4));
    }
}
