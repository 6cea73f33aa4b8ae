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
        Module low;
        Tensor? lowBias;
        Module dense;
        Tensor dw;
        Tensor? db;
        Tensor input;
        if (kind == "linear")
        {
            var lin = new Linear(12, 10, WeightFormat.LowRank(3), device: dev);
            (low, lowBias) = (lin, lin.Bias);
            var d = new Linear(12, 10, device: dev);
            (dense, dw, db) = (d, d.Weight.Value(), d.Bias);
            input = Tensor.FromArray(Uniform(1, 4 * 12).Select(v => (float)v).ToArray(), new Shape(4, 12), dev);
        }
        else if (kind == "conv")
        {
            var conv = new Conv2d(3, 5, 3, stride: 2, padding: 1, device: dev, format: WeightFormat.LowRank(2));
            (low, lowBias) = (conv, conv.Bias);
            var d = new Conv2d(3, 5, 3, stride: 2, padding: 1, device: dev);
            (dense, dw, db) = (d, d.Weight.Value(), d.Bias);
            input = Tensor.FromArray(Uniform(1, 2 * 3 * 6 * 5).Select(v => (float)v).ToArray(), new Shape(2, 3, 6, 5), dev);
        }
        else
        {
            (low, lowBias) = (new Embedding(9, 6, device: dev, format: WeightFormat.LowRank(2)), null);
            var d = new Embedding(9, 6, device: dev);
            (dense, dw, db) = (d, d.Weight.Value(), null);
            input = Tensor.FromArray([3, 0, 8, 3, 5], new Shape(5), dev);
        }
        using var l = low;
        using var dd = dense;
        using var inp = input;
        var weight = (LowRankWeight)low.Weights().Single().Weight;
        Assert.Equal(dw.Shape, weight.Shape);
        using (var w = DenseCopy(weight))
        using (var wv = w.Reshape(dw.Shape.Dims))
            F.CopyInto(dw, wv);
        if (db is not null)
            F.CopyInto(db, lowBias!);

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
            AssertClose(Values(db.Grad!), Values(lowBias!.Grad!), 1e-5, 1e-5, "bias gradient");
        // Chain rule: dU = G·V (V = Vtᵀ), dVᵀ = Uᵀ·G with G the dense weight's gradient.
        var (rows, cols, r) = (weight.Rows, weight.Cols, weight.Rank);
        var (uFactor, vtFactor) = weight.DenseFactors;
        var g = Values(dw.Grad!);
        var u = Values(uFactor);
        var vt = Values(vtFactor);
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
        AssertClose(du, Values(uFactor.Grad!), 1e-5, 1e-4, "dU");
        AssertClose(dvt, Values(vtFactor.Grad!), 1e-5, 1e-4, "dVᵀ");
        using var sgd = new SGD(low.Parameters(), 0.1);
        sgd.Step();
        AssertClose([.. u.Zip(du, (a, b) => a - 0.1 * b)], Values(uFactor), 1e-6, 1e-5, "U after an SGD step");
    }

    [Fact]
    public void FromScratchTheProductHasTheDenseInitialisationsVariance()
    {
        Init.ManualSeed(4);
        using var layer = new Linear(512, 512, WeightFormat.LowRank(64));
        Assert.Equal(64, ((LowRankWeight)layer.Weight).Rank);
        using var w = DenseCopy(layer.Weight);
        var values = w.ToArray<float>();
        var variance = values.Average(v => (double)v * v);
        Assert.Equal(1.0 / (3 * 512), variance, 0.05 / (3 * 512));
        using var embedding = new Embedding(1000, 64, format: WeightFormat.LowRank(16));
        Assert.Equal(16, ((LowRankWeight)embedding.Weight).Rank);
        using var table = DenseCopy(embedding.Weight);
        Assert.Equal(1.0, table.ToArray<float>().Average(v => (double)v * v), 0.1);
    }

    [Fact]
    public void HoldsExactlyTheFactorsBytes()
    {
        var device = Device.CreateCpu("lowrank-bytes");
        Init.ManualSeed(1);
        using var layer = new Linear(784, 512, WeightFormat.LowRank(77), device: device);
        const long values = 77L * (784 + 512), bias = 512;
        var alloc = device.Allocator;
        Assert.Equal(4 * (values + bias), alloc.Current(MemoryCategory.Parameter));
        // The weight's own bytes are its factors (the bias is the layer's).
        Assert.Equal(4 * values, layer.Weight.StorageBytes()[MemoryCategory.Parameter]);
        Assert.Equal(4 * (values + bias), layer.Weight.StorageBytes()[MemoryCategory.Parameter] + 4L * layer.Bias!.Numel);
        Assert.Single(layer.Weight.StorageBytes());
        Assert.Equal(values, layer.Weight.ParameterCount);
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
        using var low = new Linear(30, 20, WeightFormat.LowRank(20));   // full rank: exact
        Assert.Equal(0, ((LowRankWeight)low.Weight).CopyFromDense(dense.Weight.Value()), 1e-6);
        using (Autograd.NoGrad())
            F.CopyInto(low.Bias!, dense.Bias!);
        using var w = DenseCopy(low.Weight);
        AssertClose(Values(dense.Weight.Value()), Values(w), 1e-5, 1e-4, "full-rank conversion");
        Assert.Equal(dense.Bias!.ToArray<float>(), low.Bias!.ToArray<float>());
    }

    [Fact]
    public void BadRanksAreRefusedWithTheShape()
    {
        // A rank of 0 is refused by the format itself; the weight checks its rank against its shape.
        var zero = Assert.Throws<ArgumentOutOfRangeException>(() => LowRankFormat.CheckRank(6, 8, 0));
        Assert.Contains("rank 0 is outside [1, 6] for a [6, 8] weight", zero.Message, StringComparison.Ordinal);
        Assert.Contains("the rank must be positive, got 0", Assert.Throws<ArgumentOutOfRangeException>(() => new Linear(8, 6, WeightFormat.LowRank(0))).Message, StringComparison.Ordinal);
        var wide = Assert.Throws<ArgumentOutOfRangeException>(() => new Linear(8, 6, WeightFormat.LowRank(7)));
        Assert.Contains("rank 7 is outside [1, 6] for a [6, 8] weight", wide.Message, StringComparison.Ordinal);
        var big = Assert.Throws<ArgumentOutOfRangeException>(() => new Conv2d(2, 4, 3, format: WeightFormat.LowRank(5)));
        Assert.Contains("rank 5 is outside [1, 4] for a [4, 18] weight", big.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentOutOfRangeException>(() => WeightFormat.LowRank(0));
        Assert.Throws<ArgumentOutOfRangeException>(() => WeightFormat.LowRank(1.5));
        Assert.Equal("lowrank:64", WeightFormat.Parse("lowrank:64").ToString());
        Assert.Equal("lowrank:0.25", WeightFormat.Parse("lowrank:0.25").ToString());
        Assert.Throws<FormatException>(() => WeightFormat.Parse("lowrank:-3"));
        Assert.False(WeightFormat.LowRank(64).Fits(new Shape(10, 512)));
        Assert.True(WeightFormat.LowRank(64).Fits(new Shape(64, 512)));
        Assert.Equal(77, Assert.IsType<LowRankWeightFormat>(WeightFormat.LowRank(0.25)).RankFor(512, 784));
        Assert.Contains("is not r·(6 + 8)", Assert.Throws<ArgumentException>(() => TensorFormat.LowRank.StorageBytes(6, 8, 15, DType.F32)).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void TruncationDropsTheSmallestDirectionsAndMapsTheStateAsGradients()
    {
        Init.ManualSeed(5);
        using var layer = new Linear(9, 7, WeightFormat.LowRank(4), bias: false);
        var weight = (LowRankWeight)layer.Weight;
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
        using (var w = DenseCopy(weight))
            dense = w.ToArray<float>();
        // Same rank: W stays, the basis changes; the mapped momentum must be the gradient in the new basis.
        Assert.Equal(0, weight.Truncate(4, opt), 1e-9);
        using (var same = DenseCopy(weight))
            AssertClose([.. dense.Select(v => (double)v)], Values(same), 1e-5, 1e-4, "W after a change of basis");
        Backward();
        var (u4, vt4) = weight.DenseFactors;
        AssertClose(Values(u4.Grad!), Values(opt.MomentumOf(u4)!), 1e-4, 1e-3, "dL/dU' = dL/dU·Tvᵀ");
        AssertClose(Values(vt4.Grad!), Values(opt.MomentumOf(vt4)!), 1e-4, 1e-3, "dL/dV'ᵀ = Tuᵀ·dL/dVᵀ");
        opt.ZeroGrad();

        // Lower rank: the best rank-2 approximation of W, and exactly its discarded energy.
        var (u2, vt2, energy) = TensorFormat.LowRank.FromDense(dense, 7, 9, 2);
        Assert.Equal(energy, weight.Truncate(2, opt), Math.Max(1e-6, energy * 1e-4));
        Assert.Equal(2, weight.Rank);
        var (u, vt) = weight.DenseFactors;
        Assert.Equal(new Shape(7, 2), u.Shape);
        Assert.Equal(new Shape(2, 9), opt.MomentumOf(vt)!.Shape);
        using (var w2 = DenseCopy(weight))
            AssertClose([.. TensorFormat.LowRank.ToDense(u2, vt2, 7, 9).Select(v => (double)v)], Values(w2), 1e-5, 1e-4, "rank-2 product");
        Assert.Contains(u, opt.Parameters);
        // The layer's parameters follow the weight's new factors.
        Assert.Equal([u, vt], layer.Parameters());
        Assert.Throws<ArgumentOutOfRangeException>(() => weight.Truncate(3, opt));
    }

    [Fact]
    public void ARankScheduleLowersEveryLayerAtItsSteps()
    {
        Init.ManualSeed(6);
        using var model = new Sequential(new Linear(12, 10, WeightFormat.LowRank(8)), new ReLU(), new Conv2d(2, 4, 3, format: WeightFormat.LowRank(4)));
        using var opt = new Adam(model.Parameters(), 1e-3);
        var schedule = new Training.LowRank.RankSchedule(model, opt, [(2, 0.5), (4, 0.25)]);
        var layers = model.Weights().Select(w => w.Weight).OfType<LowRankWeight>().ToArray();
        Assert.Equal(2, layers.Length);
        Assert.Equal(0, schedule.Step());
        Assert.Equal([8, 4], layers.Select(l => l.Rank));
        schedule.Step();
        Assert.Equal([4, 2], layers.Select(l => l.Rank));
        schedule.Step();
        schedule.Step();
        Assert.Equal([2, 1], layers.Select(l => l.Rank));
        Assert.Equal(new Shape(4, 1, 1, 1), layers[1].DenseFactors.U.Shape);
        Assert.Equal(new Shape(1, 2, 3, 3), layers[1].DenseFactors.Vt.Shape);
        using var dense = new Sequential(new Linear(2, 2));
        Assert.Throws<ArgumentException>(() => new Training.LowRank.RankSchedule(dense, opt, [(1, 0.5)]));
        Assert.Throws<ArgumentException>(() => new Training.LowRank.RankSchedule(model, opt, [(1, 0.5), (1, 0.2)]));
    }
}
