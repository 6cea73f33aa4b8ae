using Frugal.Formats;
using Frugal.Memory;
using Frugal.Nn;
using Frugal.Optim;
using static Frugal.Tests.TestUtil;

namespace Frugal.Tests;

/// <summary>The low-rank format: the SVD it converts with, truncation error, layers equal to the dense layer with
/// W = U·Vᵀ on each device (forward, every gradient by the chain rule, an SGD step), the from-scratch variance, exact
/// bytes, and bad ranks refused.</summary>
public class LowRankTests
{
    [Theory]
    [InlineData(7, 5)]
    [InlineData(4, 9)]
    [InlineData(6, 6)]
    public void SvdReconstructsWithOrthonormalFactors(int m, int n)
    {
        var a = Uniform(m * 10 + n, m * n);
        var (u, s, v) = Svd.Decompose(a, m, n);
        var k = Math.Min(m, n);
        Assert.Equal(k, s.Length);
        for (var i = 1; i < k; i++)
            Assert.True(s[i - 1] >= s[i] && s[i] >= 0, "singular values descend");
        for (var i = 0; i < m; i++)
        {
            for (var j = 0; j < n; j++)
            {
                double sum = 0;
                for (var t = 0; t < k; t++)
                    sum += u[i * k + t] * s[t] * v[j * k + t];
                Assert.Equal(a[i * n + j], sum, 1e-12);
            }
        }
        foreach (var (f, rows) in new[] { (u, m), (v, n) })
        {
            for (var p = 0; p < k; p++)
            {
                for (var q = 0; q < k; q++)
                {
                    var dot = Enumerable.Range(0, rows).Sum(i => f[i * k + p] * f[i * k + q]);
                    Assert.Equal(p == q ? 1 : 0, dot, 1e-12);
                }
            }
        }
    }

    [Fact]
    public void TruncationErrorIsTheDiscardedEnergy()
    {
        var dense = Uniform(3, 20 * 12).Select(x => (float)x).ToArray();
        var format = TensorFormat.LowRank;
        foreach (var rank in new[] { 1, 4, 12 })
        {
            var (u, vt, discarded) = format.FromDense(dense, 20, 12, rank);
            var product = format.ToDense(u, vt, 20, 12);
            var error = dense.Zip(product, (a, b) => (double)(a - b) * (a - b)).Sum();
            Assert.Equal(discarded, error, Math.Max(1e-6, discarded * 1e-4));
        }
        Assert.Equal(0, format.FromDense(dense, 20, 12, 12).DiscardedEnergy, 1e-9);
    }

    public static TheoryData<string, string> Cases()
    {
        var data = new TheoryData<string, string>();
        foreach (var device in new[] { "cpu", "cuda:0" })
        {
            foreach (var kind in new[] { "linear", "conv", "embedding" })
                data.Add(device, kind);
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void EqualsTheDenseLayerWithTheProductWeight(string device, string kind)
    {
        var dev = DeviceFor(device);
        Init.ManualSeed(9);
        LowRankLayer low;
        Module dense;
        Tensor dw;
        Tensor? db;
        Tensor input;
        if (kind == "linear")
        {
            low = new LowRankLinear(12, 10, 3, device: dev);
            var d = new Linear(12, 10, device: dev);
            (dense, dw, db) = (d, d.Weight, d.Bias);
            input = Tensor.FromArray(Uniform(1, 4 * 12).Select(v => (float)v).ToArray(), new Shape(4, 12), dev);
        }
        else if (kind == "conv")
        {
            low = new LowRankConv2d(3, 5, 3, 2, stride: 2, padding: 1, device: dev);
            var d = new Conv2d(3, 5, 3, stride: 2, padding: 1, device: dev);
            (dense, dw, db) = (d, d.Weight, d.Bias);
            input = Tensor.FromArray(Uniform(1, 2 * 3 * 6 * 5).Select(v => (float)v).ToArray(), new Shape(2, 3, 6, 5), dev);
        }
        else
        {
            low = new LowRankEmbedding(9, 6, 2, device: dev);
            var d = new Embedding(9, 6, device: dev);
            (dense, dw, db) = (d, d.Weight, null);
            input = Tensor.FromArray([3, 0, 8, 3, 5], new Shape(5), dev);
        }
        using var l = low;
        using var dd = dense;
        using var inp = input;
        using (var w = low.DenseWeight())
        using (var wv = w.Reshape(dw.Shape.Dims))
            F.CopyInto(dw, wv);
        if (db is not null)
            F.CopyInto(db, low.Bias!);

        using var scope = TensorScope.Begin();
        Tensor xs = input, xd = input;
        if (kind != "embedding")
        {
            xs = input.Detach();
            xd = input.Detach();
            xs.RequiresGrad = true;
            xd.RequiresGrad = true;
        }
        var ys = low.Forward(xs);
        var yd = dense.Forward(xd);
        AssertClose(Values(yd), Values(ys), 1e-5, 1e-5, "forward");
        var mix = Tensor.FromArray(Uniform(2, (int)ys.Numel).Select(v => (float)v).ToArray(), ys.Shape, dev);
        F.Sum(ys * mix).Backward();
        F.Sum(yd * mix).Backward();
        if (kind != "embedding")
            AssertClose(Values(xd.Grad!), Values(xs.Grad!), 1e-5, 1e-5, "input gradient");
        if (db is not null)
            AssertClose(Values(db.Grad!), Values(low.Bias!.Grad!), 1e-5, 1e-5, "bias gradient");
        // Chain rule: dU = G·V (V = Vtᵀ), dVᵀ = Uᵀ·G with G the dense weight's gradient.
        var (rows, cols, r) = (low.Rows, low.Cols, low.Rank);
        var g = Values(dw.Grad!);
        var u = Values(low.U);
        var vt = Values(low.Vt);
        var du = new double[rows * r];
        var dvt = new double[r * cols];
        for (var i = 0; i < rows; i++)
        {
            for (var c = 0; c < cols; c++)
            {
                for (var j = 0; j < r; j++)
                {
                    du[i * r + j] += g[i * cols + c] * vt[j * cols + c];
                    dvt[j * cols + c] += u[i * r + j] * g[i * cols + c];
                }
            }
        }
        AssertClose(du, Values(low.U.Grad!), 1e-5, 1e-4, "dU");
        AssertClose(dvt, Values(low.Vt.Grad!), 1e-5, 1e-4, "dVᵀ");
        using var sgd = new SGD(low.Parameters(), 0.1);
        sgd.Step();
        AssertClose([.. u.Zip(du, (a, b) => a - 0.1 * b)], Values(low.U), 1e-6, 1e-5, "U after an SGD step");
    }

    [Fact]
    public void FromScratchTheProductHasTheDenseInitialisationsVariance()
    {
        Init.ManualSeed(4);
        using var layer = new LowRankLinear(512, 512, 64);
        using var w = layer.DenseWeight();
        var values = w.ToArray<float>();
        var variance = values.Average(v => (double)v * v);
        Assert.Equal(1.0 / (3 * 512), variance, 0.05 / (3 * 512));
        using var embedding = new LowRankEmbedding(1000, 64, 16);
        using var table = embedding.DenseWeight();
        Assert.Equal(1.0, table.ToArray<float>().Average(v => (double)v * v), 0.1);
    }

    [Fact]
    public void HoldsExactlyTheFactorsBytes()
    {
        var device = Device.CreateCpu("lowrank-bytes");
        Init.ManualSeed(1);
        using var layer = new LowRankLinear(784, 512, 77, device: device);
        const long values = 77L * (784 + 512), bias = 512;
        var alloc = device.Allocator;
        Assert.Equal(4 * (values + bias), alloc.Current(MemoryCategory.Parameter));
        Assert.Equal(4 * (values + bias), layer.StorageBytes()[MemoryCategory.Parameter]);
        using var opt = new Adam(layer.Parameters(), 1e-3);
        using (var scope = TensorScope.Begin())
        {
            var x = Tensor.Zeros(new Shape(8, 784), device: device);
            F.Sum(layer.Forward(x)).Backward();
        }
        Assert.Equal(4 * (values + bias), alloc.Current(MemoryCategory.Gradient));
        opt.Step();
        Assert.Equal(8 * (values + bias), alloc.Current(MemoryCategory.OptimizerState));
        Assert.Equal(0, alloc.Current(MemoryCategory.FormatMeta));
        Assert.True(4 * 4 * (values + bias) < 0.3 * 4 * 4 * (784 * 512 + bias));
    }

    [Fact]
    public void ConversionKeepsTheDenseLayersBestApproximation()
    {
        Init.ManualSeed(2);
        using var dense = new Linear(30, 20);
        using var low = LowRankLinear.FromDense(dense, 20);   // full rank: exact
        using var w = low.DenseWeight();
        AssertClose(Values(dense.Weight), Values(w), 1e-5, 1e-4, "full-rank conversion");
        Assert.Equal(dense.Bias!.ToArray<float>(), low.Bias!.ToArray<float>());
    }

    [Fact]
    public void BadRanksAreRefusedWithTheShape()
    {
        var zero = Assert.Throws<ArgumentOutOfRangeException>(() => new LowRankLinear(8, 6, 0));
        Assert.Contains("rank 0 is outside [1, 6] for a [6, 8] weight", zero.Message, StringComparison.Ordinal);
        var big = Assert.Throws<ArgumentOutOfRangeException>(() => new LowRankConv2d(2, 4, 3, 5));
        Assert.Contains("rank 5 is outside [1, 4] for a [4, 18] weight", big.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentOutOfRangeException>(() => WeightFormat.LowRank(0));
        Assert.Throws<ArgumentOutOfRangeException>(() => WeightFormat.LowRank(1.5));
        Assert.Equal("lowrank:64", WeightFormat.Parse("lowrank:64").ToString());
        Assert.Equal("lowrank:0.25", WeightFormat.Parse("lowrank:0.25").ToString());
        Assert.Throws<FormatException>(() => WeightFormat.Parse("lowrank:-3"));
        Assert.False(WeightFormat.LowRank(64).Fits(10, 512));
        Assert.Equal(77, WeightFormat.LowRank(0.25).RankFor(512, 784));
        Assert.Contains("is not r·(6 + 8)", Assert.Throws<ArgumentException>(() => TensorFormat.LowRank.StorageBytes(6, 8, 15, DType.F32)).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void TruncationDropsTheSmallestDirectionsAndMapsTheStateAsGradients()
    {
        Init.ManualSeed(5);
        using var layer = new LowRankLinear(9, 7, 4, bias: false);
        // A rate so small the weights do not move: the momentum buffer is exactly the last gradient.
        using var opt = new SGD(layer.Parameters(), 1e-30, momentum: 0.9);
        var x = Uniform(6, 5 * 9).Select(v => (float)v).ToArray();
        void Backward()
        {
            using var scope = TensorScope.Begin();
            var y = layer.Forward(Tensor.FromArray(x, new Shape(5, 9)));
            F.Sum(y * y).Backward();
        }

        Backward();
        opt.Step();
        opt.ZeroGrad();
        float[] dense;
        using (var w = layer.DenseWeight())
            dense = w.ToArray<float>();
        // Same rank: W stays, the basis changes; the mapped momentum must be the gradient in the new basis.
        Assert.Equal(0, layer.Truncate(4, opt), 1e-9);
        using (var same = layer.DenseWeight())
            AssertClose([.. dense.Select(v => (double)v)], Values(same), 1e-5, 1e-4, "W after a change of basis");
        Backward();
        AssertClose(Values(layer.U.Grad!), Values(opt.MomentumOf(layer.U)!), 1e-4, 1e-3, "dL/dU' = dL/dU·Tvᵀ");
        AssertClose(Values(layer.Vt.Grad!), Values(opt.MomentumOf(layer.Vt)!), 1e-4, 1e-3, "dL/dV'ᵀ = Tuᵀ·dL/dVᵀ");
        opt.ZeroGrad();

        // Lower rank: the best rank-2 approximation of W, and exactly its discarded energy.
        var (u2, vt2, energy) = TensorFormat.LowRank.FromDense(dense, 7, 9, 2);
        Assert.Equal(energy, layer.Truncate(2, opt), Math.Max(1e-6, energy * 1e-4));
        Assert.Equal(2, layer.Rank);
        Assert.Equal(new Shape(7, 2), layer.U.Shape);
        Assert.Equal(new Shape(2, 9), opt.MomentumOf(layer.Vt)!.Shape);
        using (var w2 = layer.DenseWeight())
            AssertClose([.. TensorFormat.LowRank.ToDense(u2, vt2, 7, 9).Select(v => (double)v)], Values(w2), 1e-5, 1e-4, "rank-2 product");
        Assert.Contains(layer.U, opt.Parameters);
        Assert.Throws<ArgumentOutOfRangeException>(() => layer.Truncate(3, opt));
    }

    [Fact]
    public void ARankScheduleLowersEveryLayerAtItsSteps()
    {
        Init.ManualSeed(6);
        using var model = new Sequential(new LowRankLinear(12, 10, 8), new ReLU(), new LowRankConv2d(2, 4, 3, 4));
        using var opt = new Adam(model.Parameters(), 1e-3);
        var schedule = new Training.LowRank.RankSchedule(model, opt, [(2, 0.5), (4, 0.25)]);
        var layers = model.Modules().OfType<LowRankLayer>().ToArray();
        Assert.Equal(0, schedule.Step());
        Assert.Equal([8, 4], layers.Select(l => l.Rank));
        schedule.Step();
        Assert.Equal([4, 2], layers.Select(l => l.Rank));
        schedule.Step();
        schedule.Step();
        Assert.Equal([2, 1], layers.Select(l => l.Rank));
        Assert.Equal(new Shape(4, 1, 1, 1), ((LowRankConv2d)layers[1]).U.Shape);
        using var dense = new Sequential(new Linear(2, 2));
        Assert.Throws<ArgumentException>(() => new Training.LowRank.RankSchedule(dense, opt, [(1, 0.5)]));
        Assert.Throws<ArgumentException>(() => new Training.LowRank.RankSchedule(model, opt, [(1, 0.5), (1, 0.2)]));
    }
}
