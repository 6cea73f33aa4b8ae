using Frugal.Memory;
using Frugal.Nn;
using Frugal.Optim;

namespace Frugal.Tests;

/// <summary>Exact byte accounting of the categorised allocator, its cache, and what autograd and checkpointing keep.</summary>
public class MemoryTests
{
    private static Tensor Param(Device device, Shape shape, string name, ulong? seed = null)
    {
        var t = seed is { } s
            ? Tensor.Uniform(shape, -0.5, 0.5, s, device: device, category: MemoryCategory.Parameter, owner: name)
            : Tensor.Zeros(shape, device: device, category: MemoryCategory.Parameter, owner: name);
        t.Name = name;
        t.RequiresGrad = true;
        return t.DetachFromScope();
    }

    // ---- exact bytes of a Linear layer ----

    [Theory]
    [InlineData(1)]
    [InlineData(32)]
    public void Linear_ExactParameterGradientAndActivationBytes(int batch)
    {
        var device = Device.CreateCpu("linear-exact");
        var alloc = device.Allocator;
        using var w = Param(device, new Shape(512, 784), "fc.weight");
        using var b = Param(device, new Shape(512), "fc.bias");
        const long paramBytes = 4L * (784 * 512 + 512);
        Assert.Equal(paramBytes, alloc.Current(MemoryCategory.Parameter));
        Assert.Equal(paramBytes, alloc.Stats().CurrentTotal);

        var x = Tensor.Normal(new Shape(batch, 784), 0, 1, 1, device: device);
        Assert.Equal(4L * batch * 784, alloc.Current(MemoryCategory.Other));
        alloc.ResetPeak();

        var y = F.Linear(x, w, b);
        // x·Wᵀ and (x·Wᵀ) + b were both live for a moment; only the sum remains (Add saves nothing).
        Assert.Equal(4L * batch * 512, alloc.Current(MemoryCategory.Activation));
        Assert.Equal(2 * 4L * batch * 512, alloc.Peak(MemoryCategory.Activation));
        var loss = F.Sum(y);
        Assert.Equal(4L * batch * 512 + 4, alloc.Current(MemoryCategory.Activation));
        Assert.Equal(0, alloc.Current(MemoryCategory.Gradient));

        loss.Backward();
        Assert.Equal(paramBytes, alloc.Current(MemoryCategory.Gradient));
        Assert.Equal(paramBytes, alloc.Current(MemoryCategory.Parameter));
        Assert.Equal(4L * batch * 512 + 4, alloc.Current(MemoryCategory.Activation));
        Assert.Equal(0, alloc.Current(MemoryCategory.Workspace));
        Assert.Equal(MemoryCategory.Gradient, w.Grad!.Buffer.Category);
        Assert.Equal("fc.weight", w.Grad.Buffer.Owner);
        Assert.Equal("fc.bias", b.Grad!.Buffer.Owner);
        // d(sum)/db = batch, d(sum)/dW[i, j] = sum over rows of x[:, j].
        Assert.All(b.Grad.ToArray<float>(), v => Assert.Equal(batch, v));

        y.Dispose();
        loss.Dispose();
        x.Dispose();
        Assert.Equal(0, alloc.Current(MemoryCategory.Activation));
        Assert.Equal(0, alloc.Current(MemoryCategory.Other));
        Assert.Equal(2 * paramBytes, alloc.Stats().CurrentTotal);
        w.Grad = null;
        b.Grad = null;
        Assert.Equal(paramBytes, alloc.Stats().CurrentTotal);
    }

    [Fact]
    public void SavedTensors_AreActivationBytesWhileTheGraphLives()
    {
        var device = Device.CreateCpu("saved");
        var alloc = device.Allocator;
        const int batch = 8;
        const long act = 4L * batch * 512;
        using var w = Param(device, new Shape(512, 784), "w", seed: 1);
        using var x = Tensor.Normal(new Shape(batch, 784), 0, 1, 2, device: device);

        var h = F.Linear(x, w);
        Assert.Equal(act, alloc.Current(MemoryCategory.Activation));
        var r = h.Relu();                     // saves its output r (y > 0 exactly where x > 0)
        Assert.Equal(2 * act, alloc.Current(MemoryCategory.Activation));
        var loss = r.Sum();                   // saves nothing
        Assert.Equal(2 * act + 4, alloc.Current(MemoryCategory.Activation));
        h.Dispose();                          // nothing saves the Linear output
        Assert.Equal(act + 4, alloc.Current(MemoryCategory.Activation));
        r.Dispose();                          // still saved by Relu
        Assert.Equal(act + 4, alloc.Current(MemoryCategory.Activation));
        loss.Backward();                      // Relu's saved output is freed by its backward
        Assert.Equal(4, alloc.Current(MemoryCategory.Activation));
        Assert.Equal(4L * 512 * 784, alloc.Current(MemoryCategory.Gradient));
        loss.Dispose();
        Assert.Equal(0, alloc.Current(MemoryCategory.Activation));
    }

    [Fact]
    public void Backward_AllocatesOnlyGradientBytes()
    {
        var device = Device.CreateCpu("backward-categories");
        var alloc = device.Allocator;
        using var w = Param(device, new Shape(64, 32), "w", seed: 3);
        using var x = Tensor.Normal(new Shape(16, 32), 0, 1, 4, device: device);
        using var h = F.Linear(x, w);
        using var t = h.Tanh();
        using var loss = t.Mean();
        var before = alloc.Stats();
        alloc.ResetPeak();
        loss.Backward();
        Assert.Equal(before.Current(MemoryCategory.Activation), alloc.Peak(MemoryCategory.Activation));
        Assert.Equal(before.Current(MemoryCategory.Other), alloc.Peak(MemoryCategory.Other));
        Assert.True(alloc.Peak(MemoryCategory.Gradient) >= 4L * 64 * 32);
        Assert.Equal(4L * 64 * 32, alloc.Current(MemoryCategory.Gradient));
    }

    // ---- size buckets ----

    [Theory]
    [InlineData(0, 64)]
    [InlineData(1, 64)]
    [InlineData(64, 64)]
    [InlineData(65, 128)]
    [InlineData(4000, 4032)]
    [InlineData(4096, 4096)]
    [InlineData(4097, 5120)]
    [InlineData(8192, 8192)]
    [InlineData(8193, 10240)]
    [InlineData(1_000_000, 1_048_576)]
    [InlineData(1_048_577, 1_310_720)]
    public void BucketSize_KnownValues(long bytes, long bucket) => Assert.Equal(bucket, Allocator.BucketSize(bytes));

    [Fact]
    public void BucketSize_64ByteGranularityUpTo4KiB()
    {
        for (long n = 1; n <= 4096; n++)
        {
            var b = Allocator.BucketSize(n);
            Assert.Equal(0, b % 64);
            Assert.True(b >= n && b - n < 64, $"bucket {b} of {n}");
        }
    }

    [Fact]
    public void BucketSize_AtMostAQuarterWasteAndMonotonic()
    {
        var prev = Allocator.BucketSize(0);
        for (long n = 1; n <= 1 << 20; n++)
        {
            var b = Allocator.BucketSize(n);
            Assert.True(b >= n, $"bucket {b} < {n}");
            Assert.True(b >= prev, $"bucket({n}) = {b} < bucket({n - 1}) = {prev}");
            if (n > 4096)
                Assert.True((b - n) * 4 <= n, $"bucket {b} of {n} wastes more than 25%");
            Assert.Equal(b, Allocator.BucketSize(b));  // a bucket size is its own bucket
            prev = b;
        }
        var rng = new Random(5);
        var sizes = Enumerable.Range(0, 2000).Select(_ => (long)(Math.Pow(2, 12 + rng.NextDouble() * 28))).Order().ToArray();
        prev = 0;
        foreach (var n in sizes)
        {
            var b = Allocator.BucketSize(n);
            Assert.True(b >= n && (b - n) * 4 <= n && b >= prev, $"bucket {b} of {n}");
            Assert.Equal(0, b % 64);
            prev = b;
        }
        // Few distinct buckets per octave (so freed blocks are reused): 4 above 4 KiB.
        Assert.Equal(4, Enumerable.Range(1 << 16, (1 << 17) - (1 << 16)).Select(n => Allocator.BucketSize(n + 1)).Distinct().Count());
    }

    // ---- cache ----

    [Fact]
    public void Cache_ReusesFreedBlocks()
    {
        var device = Device.CreateCpu("cache");
        var alloc = device.Allocator;
        var t = Tensor.Empty(new Shape(1000), device: device);       // 4000 bytes, bucket 4032
        var address = t.Buffer.Address;
        var s = alloc.Stats();
        Assert.Equal(4000, s.CurrentTotal);
        Assert.Equal(4032, s.ReservedBytes);
        Assert.Equal(0, s.CachedBytes);
        Assert.Equal(4032, t.Buffer.ReservedBytes);
        Assert.Equal(4000, t.Buffer.Bytes);
        t.Dispose();
        s = alloc.Stats();
        Assert.Equal(0, s.CurrentTotal);
        Assert.Equal(4032, s.CachedBytes);
        Assert.Equal(4032, s.ReservedBytes);

        // A request of the same bucket (998 floats = 3992 bytes) is served from the cache.
        var u = Tensor.Empty(new Shape(998), device: device);
        Assert.Equal(address, u.Buffer.Address);
        s = alloc.Stats();
        Assert.Equal(0, s.CachedBytes);
        Assert.Equal(4032, s.ReservedBytes);
        Assert.Equal(3992, s.CurrentTotal);
        Assert.Equal(2, s.Allocations);

        // Another bucket needs new memory.
        var v = Tensor.Empty(new Shape(2000), device: device);         // 8000 -> 8192
        s = alloc.Stats();
        Assert.Equal(4032 + 8192, s.ReservedBytes);
        Assert.Equal(0, s.CachedBytes);
        u.Dispose();
        v.Dispose();
        s = alloc.Stats();
        Assert.Equal(4032 + 8192, s.CachedBytes);
        Assert.Equal(4032 + 8192, s.ReservedBytes);

        alloc.EmptyCache();
        s = alloc.Stats();
        Assert.Equal(0, s.CachedBytes);
        Assert.Equal(0, s.ReservedBytes);
        Assert.Equal(0, s.CurrentTotal);

        // After EmptyCache a new allocation reserves again.
        using var w = Tensor.Empty(new Shape(1000), device: device);
        Assert.Equal(4032, alloc.Stats().ReservedBytes);
    }

    [Fact]
    public void Cache_LimitReturnsBlocksToTheSystem()
    {
        var device = Device.CreateCpu("cache-limit");
        var alloc = device.Allocator;
        alloc.CacheLimitBytes = 5000;
        var a = Tensor.Empty(new Shape(1000), device: device);   // 4032 reserved
        var b = Tensor.Empty(new Shape(1000), device: device);   // 4032 reserved
        Assert.Equal(8064, alloc.Stats().ReservedBytes);
        a.Dispose();   // fits under the limit: cached
        b.Dispose();   // would exceed it: released
        var s = alloc.Stats();
        Assert.Equal(4032, s.CachedBytes);
        Assert.Equal(4032, s.ReservedBytes);
    }

    [Fact]
    public void Cache_ReservedEqualsLiveBucketsPlusCached()
    {
        var device = Device.CreateCpu("reserved");
        var alloc = device.Allocator;
        var rng = new Random(3);
        var live = new List<Tensor>();
        for (var i = 0; i < 300; i++)
        {
            if (live.Count > 0 && rng.Next(3) == 0)
            {
                var k = rng.Next(live.Count);
                live[k].Dispose();
                live.RemoveAt(k);
            }
            else
            {
                live.Add(Tensor.Empty(new Shape(rng.Next(1, 5000)), device: device).DetachFromScope());
            }
            var s = alloc.Stats();
            Assert.Equal(live.Sum(t => t.Buffer.Bytes), s.CurrentTotal);
            Assert.Equal(live.Sum(t => t.Buffer.ReservedBytes) + s.CachedBytes, s.ReservedBytes);
        }
        foreach (var t in live)
            t.Dispose();
        Assert.Equal(0, alloc.Stats().CurrentTotal);
        Assert.Equal(alloc.Stats().CachedBytes, alloc.Stats().ReservedBytes);
    }

    // ---- peaks, categories, context ----

    [Fact]
    public void Peaks_AndResetPeak()
    {
        var device = Device.CreateCpu("peaks");
        var alloc = device.Allocator;
        var a = alloc.Allocate(1000, MemoryCategory.Other, "a");
        var b = alloc.Allocate(2000, MemoryCategory.Other, "b");
        var c = alloc.Allocate(300, MemoryCategory.Activation, "c");
        a.Release();
        Assert.Equal(2000, alloc.Current(MemoryCategory.Other));
        Assert.Equal(3000, alloc.Peak(MemoryCategory.Other));
        Assert.Equal(300, alloc.Peak(MemoryCategory.Activation));
        var s = alloc.Stats();
        Assert.Equal(2300, s.CurrentTotal);
        Assert.Equal(3300, s.PeakTotal);
        Assert.Equal(3000, s.Peak(MemoryCategory.Other));
        alloc.ResetPeak();
        Assert.Equal(2000, alloc.Peak(MemoryCategory.Other));
        Assert.Equal(2300, alloc.Stats().PeakTotal);
        c.Release();
        Assert.Equal(300, alloc.Peak(MemoryCategory.Activation));
        var d = alloc.Allocate(100, MemoryCategory.Activation, "d");
        Assert.Equal(300, alloc.Peak(MemoryCategory.Activation));
        alloc.ResetPeak();
        Assert.Equal(100, alloc.Peak(MemoryCategory.Activation));
        Assert.Equal(2100, alloc.Stats().PeakTotal);
        b.Release();
        d.Release();
        Assert.Equal(0, alloc.Stats().CurrentTotal);
        Assert.Equal(4, alloc.Stats().Allocations);
    }

    [Fact]
    public void Recategorize_MovesBytesBetweenCategories()
    {
        var device = Device.CreateCpu("recategorize");
        var alloc = device.Allocator;
        var t = Tensor.Zeros(new Shape(100), device: device);
        Assert.Equal(400, alloc.Current(MemoryCategory.Other));
        alloc.ResetPeak();
        t.Buffer.Recategorize(MemoryCategory.Parameter, "layer.weight");
        Assert.Equal(0, alloc.Current(MemoryCategory.Other));
        Assert.Equal(400, alloc.Current(MemoryCategory.Parameter));
        Assert.Equal(400, alloc.Peak(MemoryCategory.Parameter));
        Assert.Equal(400, alloc.Stats().CurrentTotal);
        Assert.Equal(MemoryCategory.Parameter, t.Buffer.Category);
        Assert.Equal("layer.weight", t.Buffer.Owner);
        t.Buffer.Recategorize(MemoryCategory.Parameter);   // same category, owner kept
        Assert.Equal("layer.weight", t.Buffer.Owner);
        Assert.Equal(400, alloc.Current(MemoryCategory.Parameter));
        t.Dispose();
        Assert.Equal(0, alloc.Current(MemoryCategory.Parameter));
        Assert.Equal(0, alloc.Current(MemoryCategory.Other));
    }

    [Fact]
    public void MemoryContext_SetsCategoryAndOwnerOfOpResults()
    {
        var device = Device.CreateCpu("context");
        var alloc = device.Allocator;
        using var x = Tensor.Ones(new Shape(10), device: device);
        Assert.Equal(MemoryCategory.Activation, MemoryContext.Category);
        Assert.Equal("", MemoryContext.Owner);
        using var plain = x.Exp();
        Assert.Equal(MemoryCategory.Activation, plain.Buffer.Category);
        Tensor ws, owned, nested;
        using (MemoryContext.Use(MemoryCategory.Workspace, "scratch"))
        {
            ws = x.Exp();
            using (MemoryContext.Owned("inner"))
            {
                owned = x.Exp();
                Assert.Equal(MemoryCategory.Workspace, MemoryContext.Category);
            }
            Assert.Equal("scratch", MemoryContext.Owner);
            using (MemoryContext.Use(MemoryCategory.OptimizerState))
            {
                nested = x.Add(1);
                Assert.Equal("scratch", MemoryContext.Owner);   // owner kept when not given
            }
            Assert.Equal(MemoryCategory.Workspace, MemoryContext.Category);
        }
        Assert.Equal(MemoryCategory.Activation, MemoryContext.Category);
        Assert.Equal("", MemoryContext.Owner);
        Assert.Equal((MemoryCategory.Workspace, "scratch"), (ws.Buffer.Category, ws.Buffer.Owner));
        Assert.Equal((MemoryCategory.Workspace, "inner"), (owned.Buffer.Category, owned.Buffer.Owner));
        Assert.Equal((MemoryCategory.OptimizerState, "scratch"), (nested.Buffer.Category, nested.Buffer.Owner));
        Assert.Equal(80, alloc.Current(MemoryCategory.Workspace));
        Assert.Equal(40, alloc.Current(MemoryCategory.OptimizerState));
        ws.Dispose();
        owned.Dispose();
        nested.Dispose();
        Assert.Equal(0, alloc.Current(MemoryCategory.Workspace));
        // Factories: Other outside any scope, the scope's category inside one, an explicit category always wins.
        using (var data = Tensor.Zeros(new Shape(3), device: device))
            Assert.Equal(MemoryCategory.Other, data.Buffer.Category);
        using (MemoryContext.Use(MemoryCategory.Workspace))
        {
            using var z = Tensor.Zeros(new Shape(3), device: device);
            Assert.Equal(MemoryCategory.Workspace, z.Buffer.Category);
            using var u = Tensor.Uniform(new Shape(3), 0, 1, 1, device: device, category: MemoryCategory.FormatMeta);
            Assert.Equal(MemoryCategory.FormatMeta, u.Buffer.Category);
            using var e = Tensor.Empty(new Shape(3), device: device);
            Assert.Equal(MemoryCategory.Workspace, e.Buffer.Category);
        }
    }

    [Fact]
    public void Observed_ReportsAllocationsAndFrees()
    {
        var device = Device.CreateCpu("observed");
        var events = new List<MemoryEvent>();
        device.Allocator.Observed += events.Add;
        var t = Tensor.Zeros(new Shape(5), device: device, category: MemoryCategory.Parameter, owner: "p");
        t.Buffer.Recategorize(MemoryCategory.Gradient);
        t.Dispose();
        Assert.Equal(
            [
                new MemoryEvent(MemoryEventKind.Allocate, 20, MemoryCategory.Parameter, "p"),
                new MemoryEvent(MemoryEventKind.Free, 20, MemoryCategory.Parameter, "p"),
                new MemoryEvent(MemoryEventKind.Allocate, 20, MemoryCategory.Gradient, "p"),
                new MemoryEvent(MemoryEventKind.Free, 20, MemoryCategory.Gradient, "p"),
            ],
            events);
    }

    [Fact]
    public void MemoryStats_ToStringListsEveryCategory()
    {
        var device = Device.CreateCpu("stats");
        using var p = Tensor.Zeros(new Shape(512), device: device, category: MemoryCategory.Parameter);
        var text = device.Allocator.Stats().ToString();
        foreach (var c in MemoryCategories.All)
            Assert.Contains(c.ToString(), text, StringComparison.Ordinal);
        Assert.Contains("total", text, StringComparison.Ordinal);
        Assert.Contains("2.00 KiB", text, StringComparison.Ordinal);
        Assert.Contains("cache", text, StringComparison.Ordinal);
        Assert.Equal("stats", device.Allocator.Stats().Device);
        Assert.Equal(7, MemoryCategories.All.Count);
    }

    [Theory]
    [InlineData(0, "0 B")]
    [InlineData(1023, "1023 B")]
    [InlineData(1536, "1.50 KiB")]
    [InlineData(3L << 20, "3.00 MiB")]
    [InlineData(5L << 30, "5.00 GiB")]
    [InlineData(-2048, "-2.00 KiB")]
    public void FormatBytes(long bytes, string text) => Assert.Equal(text, MemoryStats.FormatBytes(bytes));

    [Fact]
    public void Allocate_NegativeSizeThrows()
    {
        var device = Device.CreateCpu("negative");
        Assert.Throws<ArgumentOutOfRangeException>(() => device.Allocator.Allocate(-1, MemoryCategory.Other, "x"));
    }

    // ---- checkpointing ----

    private sealed record MlpRun(long PeakActivation, long ForwardPeakActivation, long SavedAfterForward, float Loss, Dictionary<string, float[]> Grads, long LiveDelta, long FinalTotal);

    /// <summary>loss = Σ tanh(L3(tanh(L2(tanh(L1(x)))))), optionally with the middle layer checkpointed. Every
    /// intermediate is disposed as soon as the next op has consumed it, so the Activation bytes are exactly the
    /// tensors autograd saved plus the op result being computed.</summary>
    private static MlpRun RunMlp(bool checkpoint, int batch, int inDim, int hidden)
    {
        var device = Device.CreateCpu(checkpoint ? "mlp-ckpt" : "mlp-plain");
        var alloc = device.Allocator;
        var ps = new Dictionary<string, Tensor>
        {
            ["w1"] = Param(device, new Shape(hidden, inDim), "w1", 1),
            ["b1"] = Param(device, new Shape(hidden), "b1", 2),
            ["w2"] = Param(device, new Shape(hidden, hidden), "w2", 3),
            ["b2"] = Param(device, new Shape(hidden), "b2", 4),
            ["w3"] = Param(device, new Shape(hidden, hidden), "w3", 5),
            ["b3"] = Param(device, new Shape(hidden), "b3", 6),
        };
        var x = Tensor.Normal(new Shape(batch, inDim), 0, 1, 7, device: device);
        var live = Tensor.LiveCount;
        alloc.ResetPeak();
        Assert.Equal(0, alloc.Current(MemoryCategory.Activation));

        static Tensor Layer(Tensor input, Tensor w, Tensor b)
        {
            using var y = F.Linear(input, w, b);
            return y.Tanh();
        }

        Tensor Layers23(Tensor h1)
        {
            using var h2 = Layer(h1, ps["w2"], ps["b2"]);
            return Layer(h2, ps["w3"], ps["b3"]);
        }

        Tensor loss;
        using (var h1 = Layer(x, ps["w1"], ps["b1"]))
        using (var h3 = checkpoint ? Checkpoint.Run(i => Layers23(i[0]), h1) : Layers23(h1))
            loss = h3.Sum();
        var forwardPeak = alloc.Peak(MemoryCategory.Activation);
        var saved = alloc.Current(MemoryCategory.Activation);
        loss.Backward();
        var peak = alloc.Peak(MemoryCategory.Activation);
        var value = (float)loss.Item();
        loss.Dispose();
        Assert.Equal(0, alloc.Current(MemoryCategory.Activation));
        var grads = ps.ToDictionary(kv => kv.Key, kv => kv.Value.Grad!.ToArray<float>());
        foreach (var p in ps.Values)
            p.Grad = null;
        var liveDelta = Tensor.LiveCount - live;
        x.Dispose();
        foreach (var p in ps.Values)
            p.Dispose();
        return new MlpRun(peak, forwardPeak, saved, value, grads, liveDelta, alloc.Stats().CurrentTotal);
    }

    [Fact]
    public void Checkpoint_SameGradientsWithLessActivationMemory()
    {
        const int batch = 16, inDim = 24, hidden = 40;
        var plain = RunMlp(checkpoint: false, batch, inDim, hidden);
        var ckpt = RunMlp(checkpoint: true, batch, inDim, hidden);

        Assert.Equal(plain.Loss, ckpt.Loss);
        foreach (var (name, g) in plain.Grads)
            Assert.Equal(g, ckpt.Grads[name]);
        Assert.Equal(0, plain.LiveDelta);
        Assert.Equal(0, ckpt.LiveDelta);
        Assert.Equal(0, plain.FinalTotal);
        Assert.Equal(0, ckpt.FinalTotal);

        // One [batch, hidden] f32 activation is a.
        const long a = 4L * batch * hidden;
        // Tanh keeps only its output (its derivative is 1 - tanh²), and each output is also the next Linear's saved
        // input: after forward, plain training keeps h1, h2, h3 and the 4-byte loss; the checkpoint segment
        // (layers 2 and 3) keeps only its input h1: h2 and h3 were saved inside it, and Sum saves nothing.
        Assert.Equal(3 * a + 4, plain.SavedAfterForward);
        Assert.Equal(a + 4, ckpt.SavedAfterForward);
        // The peak is a transient in both: layer 3's Linear output beside h1, h2 and h3, in forward; with the
        // checkpoint, again in its recomputation during backward, while the 4-byte loss is still alive. On a model
        // this shallow checkpointing lowers what is kept between forward and backward, not the peak.
        Assert.Equal(4 * a, plain.PeakActivation);
        Assert.Equal(plain.ForwardPeakActivation, plain.PeakActivation);
        Assert.Equal(4 * a + 4, ckpt.PeakActivation);
    }

    [Fact]
    public void Checkpoint_UnderNoGradJustRunsTheFunction()
    {
        using var x = Tensor.Ones(new Shape(3));
        x.RequiresGrad = true;
        using (Autograd.NoGrad())
        {
            using var y = Checkpoint.Run(i => i[0].Exp(), x);
            Assert.False(y.RequiresGrad);
        }
    }

    [Fact]
    public void Checkpoint_ReplaysRandomDraws()
    {
        var saved = Rng.State;
        try
        {
            Rng.ManualSeed(3);
            using var x = Param(Device.Cpu, new Shape(200), "x", 9);
            using var y = Checkpoint.Run(i => F.Dropout(i[0], 0.5, training: true), x);
            using var s = y.Sum();
            s.Backward();
            // The gradient is the mask of the forward (scaled by 2): zero exactly where the output is zero.
            var yv = y.ToArray<float>();
            var g = x.Grad!.ToArray<float>();
            for (var k = 0; k < yv.Length; k++)
                Assert.Equal(yv[k] == 0 ? 0f : 2f, g[k]);
            Assert.Contains(0f, g);
            Assert.Contains(2f, g);
        }
        finally
        {
            Rng.State = saved;
        }
    }

    // ---- exact peaks of a whole training step ----

    [Fact]
    public void MlpTrainingStep_PeakBytesPerCategoryMatchTheHandCount()
    {
        var device = Device.CreateCpu("mlp-step");
        var data = Frugal.Models.EmbeddedData.FashionMnistSlice();
        Frugal.Nn.Init.ManualSeed(1);
        using var model = new Frugal.Nn.Sequential(
            new Frugal.Nn.Flatten(), new Frugal.Nn.Linear(784, 512, device: device), new Frugal.Nn.ReLU(),
            new Frugal.Nn.Linear(512, 512, device: device), new Frugal.Nn.ReLU(), new Frugal.Nn.Linear(512, 10, device: device));
        using var opt = new Frugal.Optim.Adam(model.Parameters(), 1e-3);
        const int batch = 128;
        foreach (var (x, y) in Frugal.Data.DataLoader.Batches(data.Train, batch, shuffle: true, seed: 1, device: device))
        {
            using var scope = TensorScope.Begin();
            F.CrossEntropy(model.Forward(x), y).Backward();
            opt.Step();
            opt.ZeroGrad();
            break;
        }
        var stats = device.Allocator.Stats();
        const long parameters = 784L * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10;
        Assert.Equal(4 * parameters, stats.Peak(MemoryCategory.Parameter));
        Assert.Equal(2 * 4 * parameters, stats.Peak(MemoryCategory.OptimizerState));
        // Saved for backward: the two ReLU outputs of [128, 512] (each also the next Linear's input); the peak is
        // the instant the second ReLU's output is made while its input, Linear 2's output, still exists: three
        // [128, 512] tensors (the [128, 10] logits and softmax come after Linear 2's output is freed).
        Assert.Equal(4L * 3 * batch * 512, stats.Peak(MemoryCategory.Activation));
        // Every parameter's gradient, plus the one [128, 512] input gradient in flight when the first layer's
        // weight gradient is made.
        Assert.Equal(4 * parameters + 4L * batch * 512, stats.Peak(MemoryCategory.Gradient));
        // The batch itself: [128, 1, 28, 28] floats and [128] int labels.
        Assert.Equal(4L * batch * 784 + 4L * batch, stats.Peak(MemoryCategory.Other));
        Assert.Equal(0, stats.Peak(MemoryCategory.Workspace));
        Assert.Equal(0, stats.Current(MemoryCategory.Activation) + stats.Current(MemoryCategory.Gradient));
    }

    [Fact]
    public void AnAllocationBeyondTheLimitFailsWithTheBytesPerCategory()
    {
        var device = Device.CreateCpu("limited");
        device.Allocator.LimitBytes = 3_000_000;
        Init.ManualSeed(1);
        using var model = Models.Zoo.Mlp(device: device);   // 2.7 MB of weights: the Adam moments cannot fit
        using var opt = new Adam(model.Parameters(), 1e-3);
        var e = Assert.Throws<OutOfMemoryException>(() =>
        {
            using var scope = TensorScope.Begin();
            var x = Tensor.Uniform(new Shape(16, 1, 28, 28), -1, 1, 1, device: device);
            var y = Tensor.FromArray(new int[16], new Shape(16), device);
            opt.BackwardAndStep(F.CrossEntropy(model.Forward(x), y));
        });
        Assert.Contains("limited: out of memory allocating", e.Message, StringComparison.Ordinal);
        Assert.Contains("(limit 3,000,000 bytes", e.Message, StringComparison.Ordinal);
        Assert.Matches(@"Parameter\s+2\.\d+ MiB", e.Message);
        Assert.Contains("total", e.Message, StringComparison.Ordinal);
        // Within a larger limit the same model trains.
        opt.ZeroGrad();
        device.Allocator.LimitBytes = 64_000_000;
        using (var scope = TensorScope.Begin())
        {
            var x = Tensor.Uniform(new Shape(16, 1, 28, 28), -1, 1, 1, device: device);
            var y = Tensor.FromArray(new int[16], new Shape(16), device);
            opt.BackwardAndStep(F.CrossEntropy(model.Forward(x), y));
        }
        Assert.Equal(1, opt.StepCount);
    }
}
