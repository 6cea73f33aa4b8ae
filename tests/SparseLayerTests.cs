using Frugal.Formats;
using Frugal.Memory;
using Frugal.Nn;
using Frugal.Optim;
using Frugal.Training.Sparsity;
using static Frugal.Tests.TestUtil;

namespace Frugal.Tests;

/// <summary>Sparse Linear and Conv2d layers in CSR and BSR equal the dense layers with the same zeros (forward, every
/// gradient, an Adam step) on each device, hold exactly the bytes of their format's formula, regrow blocks by the
/// dense gradient (RigL) and move entries between layers by momentum (SNFS) with values and optimizer state kept
/// consistent.</summary>
public class SparseLayerTests
{
    /// <summary>Device, layer kind, format ("csr" or "bsrB").</summary>
    public static TheoryData<string, string, string> Cases()
    {
        var data = new TheoryData<string, string, string>();
        foreach (var device in new[] { "cpu", "cuda:0" })
        {
            foreach (var kind in new[] { "linear", "conv" })
            {
                data.Add(device, kind, "csr");
                data.Add(device, kind, "bsr8");
            }
        }
        return data;
    }

    private static SparseFormat FormatOf(string name) => name == "csr" ? TensorFormat.Csr : TensorFormat.Bsr(int.Parse(name[3..], System.Globalization.CultureInfo.InvariantCulture));

    /// <summary>The weight format of a sparse layout at <paramref name="density"/>.</summary>
    private static WeightFormat WeightFormatOf(SparseFormat layout, double density) => layout.Block == 1 ? WeightFormat.Csr(density) : WeightFormat.Bsr(density, layout.Block);

    /// <summary>The sparse weight of a Linear or Conv2d layer.</summary>
    private static SparseWeight SparseOf(Module layer) => Assert.IsType<SparseWeight>(layer is Linear l ? l.Weight : ((Conv2d)layer).Weight);

    /// <summary>The bias of a Linear or Conv2d layer.</summary>
    private static Tensor? BiasOf(Module layer) => layer is Linear l ? l.Bias : ((Conv2d)layer).Bias;

    /// <summary>The sparse weight as a dense [Rows, Cols] tensor by the format's host conversion (independent of the
    /// sparse kernels).</summary>
    private static Tensor HostDense(SparseWeight w) => Tensor.FromArray(w.Layout.ToDense(w.Pattern, w.Values.ToArray<float>(), w.Rows, w.Cols), new Shape(w.Rows, w.Cols), w.Values.Device);

    /// <summary>A sparse layer and the dense layer with the same weights and bias; an input shape and output shape.</summary>
    private static (Module Sparse, SparseWeight Weight, Module Dense, Tensor DenseWeight, Tensor DenseBias, int[] In) Twins(string kind, SparseFormat format, Device device)
    {
        Init.ManualSeed(5);
        if (kind == "linear")
        {
            var sparse = new Linear(32, 24, WeightFormatOf(format, 0.3), device: device);
            var dense = new Linear(32, 24, device: device);
            using (var w = HostDense(SparseOf(sparse)))
                F.CopyInto(dense.Weight.Value(), w);
            F.CopyInto(dense.Bias!, sparse.Bias!);
            return (sparse, SparseOf(sparse), dense, dense.Weight.Value(), dense.Bias!, [5, 32]);
        }
        // 16 output channels, 8 input channels · 3 · 3 = 72 patch values: whole 8×8 blocks.
        var conv = new Conv2d(8, 16, 3, stride: 2, padding: 1, device: device, format: WeightFormatOf(format, 0.3));
        var denseConv = new Conv2d(8, 16, 3, stride: 2, padding: 1, device: device);
        using (var w = HostDense(SparseOf(conv)))
        using (var w4 = w.Reshape(16, 8, 3, 3))
            F.CopyInto(denseConv.Weight.Value(), w4);
        F.CopyInto(denseConv.Bias!, conv.Bias!);
        return (conv, SparseOf(conv), denseConv, denseConv.Weight.Value(), denseConv.Bias!, [3, 8, 9, 7]);
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void EqualsTheDenseLayerWithTheSameZeros(string device, string kind, string format)
    {
        var dev = DeviceFor(device);
        var (sparse, sw, dense, dw, db, shape) = Twins(kind, FormatOf(format), dev);
        using var s = sparse;
        using var d = dense;
        using var scope = TensorScope.Begin();
        // The weight's differentiable dense fallback is the format's dense matrix in the logical shape.
        Assert.Equal(dw.Shape, sw.Shape);
        using (Autograd.NoGrad())
        using (var fallback = sw.ToDense())
        {
            Assert.Equal(dw.Shape, fallback.Shape);
            AssertClose(Values(dw), Values(fallback), 0, 0, "ToDense");
        }
        var n = (int)new Shape(shape).Numel;
        var xs = Tensor.FromArray(Uniform(6, n).Select(v => (float)v).ToArray(), new Shape(shape), dev);
        var xd = Tensor.FromArray(Uniform(6, n).Select(v => (float)v).ToArray(), new Shape(shape), dev);
        xs.RequiresGrad = true;
        xd.RequiresGrad = true;
        var ys = sparse.Forward(xs);
        var yd = dense.Forward(xd);
        Assert.Equal(yd.Shape, ys.Shape);
        AssertClose(Values(yd), Values(ys), 1e-5, 1e-5, "forward");
        var mix = Tensor.FromArray(Uniform(7, (int)ys.Numel).Select(v => (float)v).ToArray(), ys.Shape, dev);
        F.Sum(ys * mix).Backward();
        F.Sum(yd * mix).Backward();
        AssertClose(Values(xd.Grad!), Values(xs.Grad!), 1e-5, 1e-5, "input gradient");
        AssertClose(Values(db.Grad!), Values(BiasOf(sparse)!.Grad!), 1e-5, 1e-5, "bias gradient");
        var onPattern = sw.Layout.FromDense(dw.Grad!.ToArray<float>(), sw.Rows, sw.Cols, sw.Pattern);
        AssertClose([.. onPattern.Select(v => (double)v)], Values(sw.Values.Grad!), 1e-5, 1e-5, "weight gradient on the pattern");

        using var optS = new Adam(sparse.Parameters(), 1e-2);
        using var optD = new Adam(dense.Parameters(), 1e-2);
        optS.Step();
        optD.Step();
        var stepped = sw.Layout.FromDense(dw.ToArray<float>(), sw.Rows, sw.Cols, sw.Pattern);
        AssertClose([.. stepped.Select(v => (double)v)], Values(sw.Values), 1e-6, 1e-5, "values after one Adam step");
    }

    [Fact]
    public void AConvolutionOverSeveralImageChunksEqualsTheDenseOne()
    {
        // 60 images of 8 × 32 × 32 with a 3×3 kernel: 72 · 1024 column values each, more than one 4M-value chunk.
        var (sparse, sw, dense, dw, _, _) = Twins("conv", TensorFormat.Csr, Device.Cpu);
        using var s = sparse;
        using var d = dense;
        using var scope = TensorScope.Begin();
        var x = Tensor.FromArray(Uniform(9, 60 * 8 * 32 * 32).Select(v => (float)v).ToArray(), new Shape(60, 8, 32, 32));
        var ys = sparse.Forward(x);
        var yd = dense.Forward(x);
        AssertClose(Values(yd), Values(ys), 1e-5, 1e-5, "forward");
        F.Sum(ys * ys).Backward();
        F.Sum(yd * yd).Backward();
        var onPattern = sw.Layout.FromDense(dw.Grad!.ToArray<float>(), sw.Rows, sw.Cols, sw.Pattern);
        AssertClose([.. onPattern.Select(v => (double)v)], Values(sw.Values.Grad!), 2e-3, 1e-4, "weight gradient summed over chunks");
    }

    [Theory]
    [InlineData("linear")]
    [InlineData("conv")]
    public void HoldsExactlyTheFormatsBytes(string kind)
    {
        var device = Device.CreateCpu($"bsr-bytes-{kind}");
        Init.ManualSeed(3);
        using Module layer = kind == "linear"
            ? new Linear(784, 512, WeightFormat.Bsr(0.1, 16), device: device)
            : new Conv2d(32, 64, 3, padding: 1, device: device, format: WeightFormat.Bsr(0.2, 16));
        var weight = SparseOf(layer);
        var (rows, cols) = kind == "linear" ? (512, 784) : (64, 288);
        var blocksPerRow = (int)Math.Round((kind == "linear" ? 0.1 : 0.2) * (cols / 16));
        var blocks = rows / 16 * blocksPerRow;
        Assert.Equal(blocks, weight.Pattern.Nnz);
        Assert.Equal((rows, cols), (weight.Rows, weight.Cols));
        var values = blocks * 256L;
        Assert.Equal(values, weight.ParameterCount);
        Assert.Equal(values + rows, layer.ParameterCount());
        var alloc = device.Allocator;
        Assert.Equal(4L * (values + rows), alloc.Current(MemoryCategory.Parameter));
        Assert.Equal(4L * (rows / 16 + 1 + blocks), alloc.Current(MemoryCategory.FormatMeta));
        // The weight's bytes exclude the (dense) bias.
        var declared = weight.StorageBytes();
        Assert.Equal(alloc.Current(MemoryCategory.Parameter), declared[MemoryCategory.Parameter] + 4L * BiasOf(layer)!.Numel);
        Assert.Equal(alloc.Current(MemoryCategory.FormatMeta), declared[MemoryCategory.FormatMeta]);
        using var opt = new Adam(layer.Parameters(), 1e-3);
        using (var scope = TensorScope.Begin())
        {
            var x = kind == "linear" ? Tensor.Zeros(new Shape(4, 784), device: device) : Tensor.Zeros(new Shape(2, 32, 6, 6), device: device);
            F.Sum(layer.Forward(x)).Backward();
        }
        Assert.Equal(4L * (values + rows), alloc.Current(MemoryCategory.Gradient));
        opt.Step();
        Assert.Equal(8L * (values + rows), alloc.Current(MemoryCategory.OptimizerState));
        Assert.Equal(0, alloc.Current(MemoryCategory.Workspace));
    }

    [Theory]
    [InlineData("linear", "bsr8")]
    [InlineData("conv", "csr")]
    [InlineData("conv", "bsr8")]
    public void RigLRegrowsTheBlocksOfLargestDenseGradient(string kind, string formatName)
    {
        var format = FormatOf(formatName);
        var (sparse, sw, dense, dw, db, shape) = Twins(kind, format, Device.Cpu);
        using var s = sparse;
        using var d = dense;
        using var opt = new SGD(sparse.Parameters(), 0.05);
        var rigl = new RigL(sparse, opt, updateEvery: 2, dropFraction: 0.4, endStep: 100);
        var x = Uniform(11, (int)new Shape(shape).Numel).Select(v => (float)v).ToArray();
        float[]? denseGrad = null;
        void TrainStep()
        {
            using var scope = TensorScope.Begin();
            var tx = Tensor.FromArray(x, new Shape(shape));
            var ys = sparse.Forward(tx);
            F.Sum(ys * ys).Backward();
            // The dense twin with the current weights gives the dense gradient RigL ranks by.
            using (var w = HostDense(sw))
            using (var wv = w.Reshape(dw.Shape.Dims))
                F.CopyInto(dw, wv);
            F.CopyInto(db, BiasOf(sparse)!);
            var yd = dense.Forward(tx);
            F.Sum(yd * yd).Backward();
            denseGrad = dw.Grad!.ToArray<float>();
            dense.ZeroGrad();
            opt.Step();
            opt.ZeroGrad();
        }

        TrainStep();
        Assert.False(rigl.Step());
        var before = TestUtil.PatternPositions(sw.Pattern);
        var nnz = sw.Pattern.Nnz;
        TrainStep();
        Assert.True(rigl.Step());
        Assert.Equal(nnz, sw.Pattern.Nnz);
        var regrown = TestUtil.PatternPositions(sw.Pattern).Where(p => !before.Contains(p)).ToHashSet();
        var drop = (int)Math.Round(rigl.DropFractionAt(2) * nnz);
        Assert.Equal(drop, regrown.Count);
        var scores = format.BlockScores(denseGrad!, sw.Rows, sw.Cols, Math.Abs);
        var expected = Enumerable.Range(0, scores.Length).Where(p => !before.Contains(p))
            .OrderByDescending(p => scores[p]).ThenBy(p => p).Take(drop).Select(p => (long)p).ToHashSet();
        Assert.Equal(expected.Order(), regrown.Order());
        // Regrown blocks start at zero.
        var values = sw.Values.ToArray<float>();
        var area = format.Block * format.Block;
        var p = sw.Pattern;
        for (var r = 0; r < p.Rows; r++)
        {
            for (var k = p.RowPtr[r]; k < p.RowPtr[r + 1]; k++)
            {
                if (regrown.Contains((long)r * p.Cols + p.ColIdx[k]))
                    Assert.All(values.Skip(k * area).Take(area), v => Assert.Equal(0f, v));
            }
        }
    }

    [Fact]
    public void SnfsMovesEntriesToTheLayerWithMoreMomentumAndKeepsStateConsistent()
    {
        var device = Device.CreateCpu("snfs");
        Init.ManualSeed(4);
        var firstLayer = new Linear(40, 30, WeightFormat.Csr(0.2), device: device);
        var secondLayer = new Linear(30, 20, WeightFormat.Csr(0.2), device: device);
        using var model = new Sequential(firstLayer, new Tanh(), secondLayer);
        var (first, second) = (SparseOf(firstLayer), SparseOf(secondLayer));
        Assert.Equal([first, second], model.Weights().Select(w => w.Weight).OfType<SparseWeight>());
        using var opt = new Adam(model.Parameters(), 1e-2);
        var snfs = new Snfs(model, opt, updateEvery: 2, dropFraction: 0.3, endStep: 100);
        var x = Uniform(21, 8 * 40).Select(v => (float)v).ToArray();
        void TrainStep(double secondScale)
        {
            using var scope = TensorScope.Begin();
            var tx = Tensor.FromArray(x, new Shape(8, 40), device);
            var y = model.Forward(tx);
            F.Sum(y * y).Backward();
            // Scale the second layer's gradient so its momentum is much larger: SNFS must favour it.
            using (var g = second.Values.Grad!.Mul(secondScale))
                F.CopyInto(second.Values.Grad!, g);
            opt.Step();
            opt.ZeroGrad();
        }

        TrainStep(50);
        snfs.Step();
        TrainStep(50);
        var mean = new[] { first, second }.Select(l => opt.MomentumOf(l.Values)!.ToArray<float>().Average(v => Math.Abs((double)v))).ToArray();
        var oldNnz = new[] { first.Pattern.Nnz, second.Pattern.Nnz };
        var oldValues = new[] { first, second }.Select(l => Entries(l, l.Values.ToArray<float>())).ToArray();
        var oldState = new[] { first, second }.Select(l => Entries(l, opt.MomentumOf(l.Values)!.ToArray<float>())).ToArray();
        Assert.True(snfs.Step());

        Assert.Equal(mean[1] / mean.Sum(), snfs.LastShares[1], 1e-6);
        Assert.Equal(oldNnz.Sum(), first.Pattern.Nnz + second.Pattern.Nnz);
        Assert.True(second.Pattern.Nnz > oldNnz[1], $"the layer with more momentum grew: {oldNnz[1]} -> {second.Pattern.Nnz}");
        var layers = new[] { first, second };
        for (var i = 0; i < 2; i++)
        {
            var l = layers[i];
            Assert.Contains(l.Values, opt.Parameters);
            Assert.Contains(l.Values, model.Parameters());
            var state = opt.MomentumOf(l.Values)!;
            Assert.Equal(l.Values.Shape, state.Shape);
            var values = Entries(l, l.Values.ToArray<float>());
            var moments = Entries(l, state.ToArray<float>());
            foreach (var (position, value) in values)
            {
                // Survivors keep value and momentum; regrown entries start at zero with zeroed state.
                Assert.Equal(oldValues[i].GetValueOrDefault(position), value);
                Assert.Equal(oldState[i].GetValueOrDefault(position), moments[position]);
            }
        }
        var totalValues = first.Pattern.Nnz + second.Pattern.Nnz;
        Assert.Equal(4L * (totalValues + 30 + 20), device.Allocator.Current(MemoryCategory.Parameter));
        Assert.Equal(8L * (totalValues + 30 + 20), device.Allocator.Current(MemoryCategory.OptimizerState));
        Assert.Equal(4L * (31 + 21 + totalValues), device.Allocator.Current(MemoryCategory.FormatMeta));
        TrainStep(1);   // training goes on with the resized parameters
        Assert.Equal(4L * (totalValues + 30 + 20), device.Allocator.Current(MemoryCategory.Parameter));

        using var plain = new SGD(model.Parameters(), 0.1);
        var e = Assert.Throws<ArgumentException>(() => new Snfs(model, plain, 2, 0.3, 100));
        Assert.Contains("keeps no momentum", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void WeightFormatsParseBuildAndCountBytes()
    {
        Assert.Equal("csr:0.1", WeightFormat.Parse("csr:0.1").ToString());
        Assert.Equal("bsr:0.25:16", WeightFormat.Parse("bsr:0.25").ToString());
        Assert.Equal("bsr:0.1:32", WeightFormat.Bsr(0.1, 32).ToString());
        Assert.Same(WeightFormat.Dense, WeightFormat.Parse("dense"));
        foreach (var bad in new[] { "csr", "csr:0", "csr:1.5", "bsr:0.1:12", "bsr:0.1:16:1", "q3", "" })
            Assert.Contains($"'{bad}'", Assert.Throws<FormatException>(() => WeightFormat.Parse(bad)).Message, StringComparison.Ordinal);
        Init.ManualSeed(1);
        using (var linear = new Linear(16, 8, WeightFormat.Bsr(0.5, 8)))
        {
            Assert.Equal("Linear(16, 8, bsr8, density: 0.500, bias: True)", linear.ToString());
            Assert.Equal("bsr8 [8, 16], density 0.500", linear.Weight.ToString());
            Assert.Equal("bsr8", linear.Weight.FormatName);
            Assert.Equal(0.5, SparseOf(linear).Density);
        }
        using (var conv = new Conv2d(2, 4, 3, format: WeightFormat.Csr(0.5)))
        {
            var w = SparseOf(conv);
            Assert.Equal(new Shape(4, 2, 3, 3), w.Shape);
            Assert.Equal((4, 18), (w.Rows, w.Cols));
            Assert.Equal("csr", w.FormatName);
        }
        // A sparse format at density 1 stores every value (models give such layers the dense format).
        var full = WeightFormat.Csr(0.5).WithDensity(1);
        Assert.Equal("csr:1", full.ToString());
        Assert.Equal(1, full.Density);
        using (var dense = new Linear(4, 2, full))
        {
            Assert.Equal(8, SparseOf(dense).Pattern.Nnz);
            Assert.Equal(1, SparseOf(dense).Density);
        }
        using (var dense = new Linear(4, 2, WeightFormat.Dense))
            Assert.IsType<DenseWeight>(dense.Weight);
        Assert.Same(WeightFormat.Dense, WeightFormat.Dense.WithDensity(0.5));
        Assert.Equal(TensorFormat.All.Select(f => f.Name), ["dense", "csr", "bsr8", "bsr16", "bsr32", "lowrank", "q8", "q4", "q2", "q1"]);
        var bytes = TensorFormat.Bsr(16).StorageBytes(512, 784, 160 * 256, DType.F32);
        Assert.Equal(4L * 160 * 256, bytes[MemoryCategory.Parameter]);
        Assert.Equal(4L * (33 + 160), bytes[MemoryCategory.FormatMeta]);
        Assert.Equal(4L * 1000, TensorFormat.Csr.GradientBytes(1000, DType.F32));
        Assert.Contains("not a whole number", Assert.Throws<ArgumentException>(() => TensorFormat.Bsr(16).StorageBytes(512, 784, 100, DType.F32)).Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => TensorFormat.Dense.StorageBytes(2, 3, 5, DType.F32));
        Assert.Throws<ArgumentOutOfRangeException>(() => TensorFormat.Bsr(4));
    }

    [Fact]
    public void BlockPatternsConvertToAndFromDense()
    {
        var format = TensorFormat.Bsr(8);
        var dense = Uniform(2, 16 * 24).Select(v => (float)v).ToArray();
        // Make block (1, 2) the strongest and block (0, 0) the next.
        for (var r = 0; r < 8; r++)
        {
            for (var c = 0; c < 8; c++)
            {
                dense[(8 + r) * 24 + 16 + c] = 5;
                dense[r * 24 + c] = -3;
            }
        }
        var (pattern, values) = format.FromDense(dense, 16, 24, density: 2.0 / 6);
        Assert.Equal([0, 1, 2], pattern.RowPtr);
        Assert.Equal([0, 2], pattern.ColIdx);
        Assert.All(values.Take(64), v => Assert.Equal(-3f, v));
        Assert.All(values.Skip(64), v => Assert.Equal(5f, v));
        var back = format.ToDense(pattern, values, 16, 24);
        for (var i = 0; i < back.Length; i++)
        {
            var (r, c) = (i / 24, i % 24);
            var stored = (r < 8 && c < 8) || (r >= 8 && c >= 16);
            Assert.Equal(stored ? dense[i] : 0f, back[i]);
        }
        Assert.Contains("does not cover", Assert.Throws<ArgumentException>(() => format.ToDense(pattern, values, 16, 16)).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void BadInputIsNamed()
    {
        Init.ManualSeed(1);
        var e = Assert.Throws<ArgumentException>(() => new Linear(20, 10, WeightFormat.Bsr(0.5, 8)));
        Assert.Contains("bsr8: a [10, 20] weight is not a whole number of 8×8 blocks", e.Message, StringComparison.Ordinal);
        using var conv = new Conv2d(2, 4, 3, format: WeightFormat.Csr(0.5));
        using var x = Tensor.Zeros(new Shape(1, 3, 5, 5));
        var c = Assert.Throws<ShapeMismatchException>(() => conv.Forward(x));
        Assert.Contains("SparseConv2d: input", c.Message, StringComparison.Ordinal);
        Assert.Contains("3·3·3 patch values, the [4, 18] weight expects 18", c.Message, StringComparison.Ordinal);
        using var big = Tensor.Zeros(new Shape(1, 2, 1, 1));
        Assert.Contains("does not fit input", Assert.Throws<ShapeMismatchException>(() => conv.Forward(big)).Message, StringComparison.Ordinal);
        using var layerModule = new Linear(6, 4, WeightFormat.Csr(0.5));
        var layer = SparseOf(layerModule);
        using var wrongBias = Tensor.Zeros(new Shape(5));
        using var input = Tensor.Zeros(new Shape(2, 6));
        var w = new SparseOperand(4, 6, 1, layer.RowPtr, layer.ColIdx, layer.Values);
        Assert.Contains("bias", Assert.Throws<ShapeMismatchException>(() => F.SparseLinear(input, w, wrongBias)).Message, StringComparison.Ordinal);
        Assert.Contains("not a whole number of 4×4 blocks", Assert.Throws<ShapeMismatchException>(() => F.SparseLinear(input, w with { Block = 4 })).Message, StringComparison.Ordinal);
    }

    /// <summary>Value (or state) of every stored scalar by its dense position.</summary>
    private static Dictionary<long, float> Entries(SparseWeight layer, float[] values)
    {
        var result = new Dictionary<long, float>();
        var dense = layer.Layout.ToDense(layer.Pattern, values, layer.Rows, layer.Cols);
        var ones = layer.Layout.ToDense(layer.Pattern, [.. values.Select(_ => 1f)], layer.Rows, layer.Cols);
        for (var i = 0; i < dense.Length; i++)
        {
            if (ones[i] != 0)
                result[i] = dense[i];
        }
        return result;
    }
}
