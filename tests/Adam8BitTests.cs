using Frugal.Formats;
using Frugal.Memory;
using Frugal.Nn;
using Frugal.Optim;
using Frugal.Training.Sparsity;

namespace Frugal.Tests;

/// <summary>Adam with 8-bit states: blockwise-quantized moments of exactly the bytes of the layout, within half a
/// quantization step of the 32-bit moments, training as well, small tensors kept in 32 bits, following a sparse
/// pattern change (RigL, SET) or a change of size within half a step of their new blocks, and not read as momentum
/// by SNFS.</summary>
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
    public void AnEightBitStepAllocatesNoDeviceMemory()
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
        // The fused step reads, steps and requantizes each block of 2,048 values in registers and stack (CPU) or
        // shared memory (CUDA): no F32 copy of the moments, not even a block's, comes from the allocator.
        Assert.Equal(0, device.Allocator.Peak(MemoryCategory.Workspace));
        Assert.Equal(0, device.Allocator.Peak(MemoryCategory.Activation));
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

    /// <summary>A parameter's 8-bit moments read as the step reads them, in float64: m = code · absmax / 127 and
    /// v^¼ = max(code, ½) · absmax / 255, with each entry's block scales.</summary>
    private sealed record Moments(sbyte[] MCodes, float[] MScale, byte[] RCodes, float[] RScale)
    {
        public static Moments Of(Optimizer opt, Tensor p)
        {
            var states = opt.StateDict();
            var key = p.Name ?? "param";
            return new(states[$"{key}.exp_avg.codes"].ToArray<sbyte>(), states[$"{key}.exp_avg.absmax"].ToArray<float>(),
                states[$"{key}.exp_avg_sq.root4_codes"].ToArray<byte>(), states[$"{key}.exp_avg_sq.root4_absmax"].ToArray<float>());
        }

        public double M(int i) => MCodes[i] * (double)MScale[i / Adam.StateBlock] / 127;

        public double Root4(int i) => Math.Max(RCodes[i], 0.5) * RScale[i / Adam.StateBlock] / 255;

        public double MStep(int i) => MScale[i / Adam.StateBlock] / 127.0;

        public double RStep(int i) => RScale[i / Adam.StateBlock] / 255.0;
    }

    private static void TrainStep(Module model, Optimizer opt, int inputs, ulong seed)
    {
        using var scope = TensorScope.Begin();
        var x = Tensor.Uniform(new Shape(8, inputs), -1, 1, seed, device: opt.Parameters[0].Device);
        var y = model.Forward(x);
        F.Sum(y * y).Backward();
        opt.Step();
        opt.ZeroGrad();
    }

    /// <summary>Asserts that <paramref name="after"/>'s entry k holds <paramref name="m"/>[k] and
    /// <paramref name="root4"/>[k] within half a step of its block (a rounding's error), codes 0 where those are
    /// null (an entry mapped from nothing).</summary>
    private static void AssertMovedWithinHalfAStep(Moments after, double?[] m, double?[] root4)
    {
        for (var k = 0; k < m.Length; k++)
        {
            if (m[k] is not { } mk || root4[k] is not { } rk)
            {
                Assert.Equal((0, 0), ((int)after.MCodes[k], (int)after.RCodes[k]));
                Assert.Equal(0.0, after.M(k));
                continue;
            }
            Assert.InRange(after.M(k) - mk, -0.5 * after.MStep(k) * (1 + 1e-5), 0.5 * after.MStep(k) * (1 + 1e-5));
            Assert.InRange(after.Root4(k) - rk, -0.5 * after.RStep(k) * (1 + 1e-5), 0.5 * after.RStep(k) * (1 + 1e-5));
        }
    }

    [Fact]
    public void RemappedQuantizedMomentsMoveWithTheirEntries()
    {
        var device = Device.CreateCpu("adam8-remap");
        Init.ManualSeed(3);
        using var layer = new Linear(128, 96, WeightFormat.Csr(0.5), device: device);
        var weight = Assert.IsType<SparseWeight>(layer.Weight);
        var n = (int)weight.Values.Numel;
        Assert.True(n >= Adam.MinQuantizedState, $"{n} stored values");
        using var opt = new Adam(layer.Parameters(), 1e-2, stateBits: 8);
        for (var step = 0; step < 3; step++)
            TrainStep(layer, opt, 128, (ulong)step);
        var before = Moments.Of(opt, weight.Values);
        var random = new Random(5);
        var source = Enumerable.Range(0, n).OrderBy(_ => random.Next()).Select(k => random.NextDouble() < 0.2 ? -1 : k).ToArray();
        var stateBytes = device.Allocator.Current(MemoryCategory.OptimizerState);

        opt.RemapState(weight.Values, source);

        var after = Moments.Of(opt, weight.Values);
        Assert.Equal(before.MCodes.Length, after.MCodes.Length);
        AssertMovedWithinHalfAStep(after, [.. source.Select(j => j < 0 ? (double?)null : before.M(j))], [.. source.Select(j => j < 0 ? (double?)null : before.Root4(j))]);
        // Each block is re-scaled to its new entries: its largest |m| takes code ±127.
        for (var b = 0; b < after.MScale.Length; b++)
        {
            var kept = Enumerable.Range(b * Adam.StateBlock, Math.Min(Adam.StateBlock, n - b * Adam.StateBlock)).Where(k => source[k] >= 0).ToArray();
            Assert.Equal(kept.Max(k => Math.Abs(before.M(source[k]))), after.MScale[b], 1e-6 * after.MScale[b]);
        }
        Assert.Equal(stateBytes, device.Allocator.Current(MemoryCategory.OptimizerState));
        Assert.Equal(0, device.Allocator.Current(MemoryCategory.Workspace));
        TrainStep(layer, opt, 128, 9);   // the step reads the moved state
        Assert.Equal(stateBytes, device.Allocator.Current(MemoryCategory.OptimizerState));
    }

    [Fact]
    public void QuantizedMomentsFollowAChangeOfSizeAcrossTheQuantizationThreshold()
    {
        var device = Device.CreateCpu("adam8-resize");
        Init.ManualSeed(4);
        using var layer = new Linear(128, 96, WeightFormat.Csr(0.5), bias: false, device: device);
        var weight = Assert.IsType<SparseWeight>(layer.Weight);
        using var opt = new Adam(layer.Parameters(), 1e-2, stateBits: 8);
        for (var step = 0; step < 3; step++)
            TrainStep(layer, opt, 128, (ulong)step);
        var before = Moments.Of(opt, weight.Values);
        var pattern = weight.Pattern;
        var positions = Enumerable.Range(0, pattern.Rows).SelectMany(r => Enumerable.Range(pattern.RowPtr[r], pattern.RowPtr[r + 1] - pattern.RowPtr[r]).Select(k => (long)r * pattern.Cols + pattern.ColIdx[k])).ToArray();
        static CsrPattern Pattern(int rows, int cols, IEnumerable<long> flat)
        {
            var sorted = flat.Order().ToArray();
            var rowPtr = new int[rows + 1];
            foreach (var f in sorted)
                rowPtr[f / cols + 1]++;
            for (var r = 0; r < rows; r++)
                rowPtr[r + 1] += rowPtr[r];
            return CsrPattern.FromParts(rows, cols, rowPtr, [.. sorted.Select(f => (int)(f % cols))]);
        }

        // Shrink to 3,000 stored values (< MinQuantizedState): the moments become F32, each the value the step read.
        const int small = 3000;
        weight.UpdatePattern(Pattern(pattern.Rows, pattern.Cols, positions.Take(small)), [.. Enumerable.Range(0, small)], opt);
        var key = weight.Values.Name ?? "param";
        var states = opt.StateDict();
        Assert.Equal([$"{key}.exp_avg", $"{key}.exp_avg_sq"], states.Keys.Order());
        var m = states[$"{key}.exp_avg"].ToArray<float>();
        var v = states[$"{key}.exp_avg_sq"].ToArray<float>();
        Assert.Equal((DType.F32, small), (states[$"{key}.exp_avg"].DType, m.Length));
        for (var k = 0; k < small; k++)
        {
            Assert.Equal(before.M(k), m[k], 1e-6 * before.MStep(k) * 127);
            Assert.Equal(Math.Pow(before.Root4(k), 4), v[k], 1e-5 * Math.Pow(before.Root4(k), 4));
        }
        Assert.Equal(8L * small, device.Allocator.Current(MemoryCategory.OptimizerState));
        TrainStep(layer, opt, 128, 5);

        // Grow back to 5,000 (>= MinQuantizedState): quantized again, the 3,000 survivors within half a step of
        // their new blocks, the 2,000 new entries at code 0.
        var kept = TestUtil.PatternPositions(weight.Pattern).Order().ToArray();
        var m1 = opt.StateDict()[$"{key}.exp_avg"].ToArray<float>();
        var v1 = opt.StateDict()[$"{key}.exp_avg_sq"].ToArray<float>();
        var random = new Random(6);
        var grown = Enumerable.Range(0, pattern.Rows * pattern.Cols).Select(f => (long)f).Except(kept).OrderBy(_ => random.Next()).Take(2000);
        var larger = Pattern(pattern.Rows, pattern.Cols, kept.Concat(grown));
        var newPositions = TestUtil.PatternPositions(larger).Order().ToArray();
        var source = newPositions.Select(f => Array.BinarySearch(kept, f) is var i && i >= 0 ? i : -1).ToArray();
        weight.UpdatePattern(larger, source, opt);

        key = weight.Values.Name ?? "param";
        states = opt.StateDict();
        const int blocks = (5000 + Adam.StateBlock - 1) / Adam.StateBlock;
        Assert.Equal((DType.I8, new Shape(blocks, Adam.StateBlock)), (states[$"{key}.exp_avg.codes"].DType, states[$"{key}.exp_avg.codes"].Shape));
        Assert.Equal((DType.U8, new Shape(blocks, Adam.StateBlock)), (states[$"{key}.exp_avg_sq.root4_codes"].DType, states[$"{key}.exp_avg_sq.root4_codes"].Shape));
        Assert.Equal(new Shape(blocks, 1), states[$"{key}.exp_avg.absmax"].Shape);
        Assert.Equal(4, states.Count);
        var after = Moments.Of(opt, weight.Values);
        AssertMovedWithinHalfAStep(after, [.. source.Select(j => j < 0 ? (double?)null : m1[j])], [.. source.Select(j => j < 0 ? (double?)null : Math.Pow(v1[j], 0.25))]);
        Assert.All(after.MCodes.Skip(5000), c => Assert.Equal(0, c));   // the last block's padding
        Assert.Equal(2L * (blocks * Adam.StateBlock + 4 * blocks), device.Allocator.Current(MemoryCategory.OptimizerState));
        Assert.Equal(0, device.Allocator.Current(MemoryCategory.Workspace));
        TrainStep(layer, opt, 128, 7);
    }

    [Fact]
    public void QuantizedMomentsFollowARankTruncation()
    {
        var device = Device.CreateCpu("adam8-rank");
        Init.ManualSeed(7);
        using var layer = new Linear(512, 256, WeightFormat.LowRank(32), bias: false, device: device);
        var weight = Assert.IsType<LowRankWeight>(layer.Weight);
        using var opt = new Adam(layer.Parameters(), 1e-2, stateBits: 8);
        for (var step = 0; step < 3; step++)
            TrainStep(layer, opt, 512, (ulong)step);
        weight.Truncate(8, opt);
        // U [256, 8] falls below MinQuantizedState (F32 moments); Vᵀ [8, 512] keeps 8-bit ones, two blocks.
        var (u, vt) = weight.DenseFactors;
        var states = opt.StateDict();
        Assert.Equal(new Shape(256, 8), states[$"{u.Name}.exp_avg"].Shape);
        Assert.Equal(new Shape(256, 8), states[$"{u.Name}.exp_avg_sq"].Shape);
        Assert.Equal((DType.I8, new Shape(2, Adam.StateBlock)), (states[$"{vt.Name}.exp_avg.codes"].DType, states[$"{vt.Name}.exp_avg.codes"].Shape));
        Assert.Equal(6, states.Count);
        Assert.All(states[$"{u.Name}.exp_avg_sq"].ToArray<float>(), x => Assert.True(x >= 0 && float.IsFinite(x)));
        Assert.Contains(states[$"{u.Name}.exp_avg"].ToArray<float>(), x => x != 0);
        Assert.Contains(Moments.Of(opt, vt).MCodes, c => c != 0);
        Assert.Equal(0, device.Allocator.Current(MemoryCategory.Workspace));
        Assert.Equal(8L * 256 * 8 + 2 * (2 * Adam.StateBlock + 4 * 2), device.Allocator.Current(MemoryCategory.OptimizerState));
        TrainStep(layer, opt, 512, 4);
    }

    [Fact]
    public void RigLRunsWithEightBitStates()
    {
        Init.ManualSeed(5);
        var sparse = new Linear(64, 160, WeightFormat.Csr(0.5));
        using var model = new Sequential(sparse, new ReLU(), new Linear(160, 4));
        var weight = Assert.IsType<SparseWeight>(sparse.Weight);
        Assert.True(weight.Values.Numel >= Adam.MinQuantizedState);
        using var opt = new Adam(model.Parameters(), 1e-2, stateBits: 8);
        var rigl = new RigL(model, opt, updateEvery: 5, dropFraction: 0.3, endStep: 50);
        var x = TestUtil.Uniform(31, 64 * 64, -1, 1).Select(v => (float)v).ToArray();
        var labels = Enumerable.Range(0, 64).Select(i => (x[i * 64] > 0 ? 1 : 0) + (x[i * 64 + 1] > 0 ? 2 : 0)).ToArray();
        var losses = new List<double>();
        for (var step = 0; step < 60; step++)
        {
            using (var scope = TensorScope.Begin())
            {
                var loss = F.CrossEntropy(model.Forward(Tensor.FromArray(x, new Shape(64, 64))), Tensor.FromArray(labels, new Shape(64)));
                losses.Add(loss.Item());
                loss.Backward();
                opt.Step();
                opt.ZeroGrad();
            }
            rigl.Step();
        }
        Assert.Equal(9, rigl.Updates);   // steps 5, 10, ..., 45
        Assert.True(losses.TakeLast(5).Average() < 0.5 * losses.Take(5).Average(), $"loss {losses[0]:F4} -> {losses[^1]:F4}");
        var key = weight.Values.Name ?? "param";
        var states = opt.StateDict();
        var blocks = (int)((weight.Values.Numel + Adam.StateBlock - 1) / Adam.StateBlock);
        Assert.Equal((DType.I8, new Shape(blocks, Adam.StateBlock)), (states[$"{key}.exp_avg.codes"].DType, states[$"{key}.exp_avg.codes"].Shape));
        Assert.Equal((DType.U8, new Shape(blocks, Adam.StateBlock)), (states[$"{key}.exp_avg_sq.root4_codes"].DType, states[$"{key}.exp_avg_sq.root4_codes"].Shape));
        Assert.Equal((DType.F32, new Shape(blocks, 1)), (states[$"{key}.exp_avg_sq.root4_absmax"].DType, states[$"{key}.exp_avg_sq.root4_absmax"].Shape));
        Assert.DoesNotContain($"{key}.exp_avg", states.Keys);
    }

    [Fact]
    public void SparseMomentumRefusesToReadQuantizedMomentum()
    {
        Init.ManualSeed(6);
        using var layer = new Linear(128, 96, WeightFormat.Csr(0.5));
        var weight = Assert.IsType<SparseWeight>(layer.Weight);
        using var opt = new Adam(layer.Parameters(), 1e-2, stateBits: 8);
        var snfs = new Snfs(layer, opt, updateEvery: 2, dropFraction: 0.3, endStep: 100);
        TrainStep(layer, opt, 128, 1);
        snfs.Step();
        TrainStep(layer, opt, 128, 2);
        var pattern = weight.Pattern;
        var e = Assert.Throws<NotSupportedException>(() => snfs.Step());
        Assert.Contains("use 32-bit optimizer states with SNFS", e.Message, StringComparison.Ordinal);
        Assert.Same(pattern, weight.Pattern);
        Assert.Throws<NotSupportedException>(() => opt.MomentumOf(weight.Values));
        // A tensor below MinQuantizedState keeps F32 moments, which it returns.
        Assert.Equal(new Shape(96), opt.MomentumOf(layer.Parameters().Single(p => p.Numel == 96))!.Shape);
        Assert.Throws<ArgumentOutOfRangeException>(() => new Adam(layer.Parameters(), stateBits: 4));
    }
}
