using Frugal.Formats;
using Frugal.IO;
using Frugal.Models;
using Frugal.Nn;
using Frugal.Optim;
using Frugal.Training.Sparsity;

namespace Frugal.Tests;

/// <summary>Training checkpoints: every format's parts round-trip exactly (sparse patterns whose size changed, lowered
/// ranks, master-free codes with their rounding stream), a loaded model and optimizer continue exactly as the saved
/// ones, and a checkpoint that does not fit is refused by name with nothing changed.</summary>
public class CheckpointTests
{
    private static string TempPath() => Path.Combine(Path.GetTempPath(), $"frugal-ckpt-{Environment.ProcessId}-{Guid.NewGuid():N}.safetensors");

    private static void Steps(Module model, Optimizer opt, int seed, int steps, Device device, Action? afterStep = null)
    {
        for (var s = 0; s < steps; s++)
        {
            using var scope = TensorScope.Begin();
            var x = Tensor.Uniform(new Shape(16, 1, 28, 28), -1, 1, (ulong)(seed * 100 + s), device: device);
            var y = Tensor.FromArray(Enumerable.Range(0, 16).Select(i => (i + s) % 10).ToArray(), new Shape(16), device);
            opt.BackwardAndStep(F.CrossEntropy(model.Forward(x), y));
            afterStep?.Invoke();
        }
    }

    private static Dictionary<string, byte[]> Snapshot(Module model, Optimizer opt)
    {
        var all = model.NamedTensors().Concat(opt.NamedStates());
        return all.ToDictionary(t => t.Name, t =>
        {
            using var c = t.Tensor.Contiguous();
            var bytes = new byte[c.Numel * c.DType.SizeOf()];
            c.Backend.Download(c.View.Data, bytes);
            return bytes;
        });
    }

    private static void AssertSame(Dictionary<string, byte[]> expected, Dictionary<string, byte[]> actual)
    {
        Assert.Equal(expected.Keys.Order(), actual.Keys.Order());
        foreach (var (name, bytes) in expected)
            Assert.True(bytes.AsSpan().SequenceEqual(actual[name]), $"'{name}' differs");
    }

    [Theory]
    [InlineData("dense", 32, "")]
    [InlineData("csr:0.1", 32, "snfs")]
    [InlineData("bsr:0.1:16", 32, "")]
    [InlineData("lowrank:0.25", 32, "truncate")]
    [InlineData("q4", 8, "")]
    [InlineData("q4:latent", 32, "")]
    [InlineData("q1:row", 32, "")]
    public void EveryFormatRoundTripsAndContinuesExactly(string format, int stateBits, string change)
    {
        var device = Device.CreateCpu($"ckpt-{format}");
        var path = TempPath();
        Init.ManualSeed(1);
        using var model = Zoo.Mlp(device: device, format: WeightFormat.Parse(format));
        using var opt = new Adam(model.Parameters(), 1e-3, stateBits: stateBits);
        // SNFS moves weights between layers: the saved layers' sizes differ from a fresh model's.
        var snfs = change == "snfs" ? new Snfs(model, opt, updateEvery: 2, dropFraction: 0.3, endStep: 100) : null;
        int[] Sizes() => [.. model.Weights().Select(w => w.Weight).OfType<SparseWeight>().Select(w => w.Pattern.Nnz)];
        var freshSizes = Sizes();
        Steps(model, opt, 1, 4, device, snfs is null ? null : () => snfs.Step());
        if (snfs is not null)
            Assert.NotEqual(freshSizes, Sizes());
        if (change == "truncate")
        {
            var lowRank = Assert.IsType<LowRankWeight>(((Linear)model.Layers[1]).Weight);
            lowRank.Truncate(20, opt);
            Assert.Equal(20, lowRank.Rank);
        }
        try
        {
            Rng.ManualSeed(77);
            Checkpoints.Save(path, model, opt, new Dictionary<string, string> { ["note"] = "test" });
            var saved = Snapshot(model, opt);

            Init.ManualSeed(2);   // another initialisation: everything must come from the file
            using var loaded = Zoo.Mlp(device: device, format: WeightFormat.Parse(format));
            using var opt2 = new Adam(loaded.Parameters(), 1e-3, stateBits: stateBits);
            Rng.ManualSeed(5);
            var meta = Checkpoints.Load(path, loaded, opt2);
            Assert.Equal("test", meta["note"]);
            Assert.Equal((77UL, 0UL), Rng.State);
            AssertSame(saved, Snapshot(loaded, opt2));
            Assert.Equal(opt.StepCount, opt2.StepCount);

            Steps(model, opt, 3, 2, device);
            Steps(loaded, opt2, 3, 2, device);
            AssertSame(Snapshot(model, opt), Snapshot(loaded, opt2));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void ACheckpointThatDoesNotFitIsRefusedAndChangesNothing()
    {
        var device = Device.CreateCpu("ckpt-bad");
        var path = TempPath();
        Init.ManualSeed(1);
        using var mlp = Zoo.Mlp(device: device);
        using var opt = new Adam(mlp.Parameters(), 1e-3);
        Steps(mlp, opt, 1, 1, device);
        Init.ManualSeed(3);
        using var other = Zoo.Mlp(device: device, format: WeightFormat.Parse("q4"));
        using var otherOpt = new SGD(other.Parameters(), 0.1, momentum: 0.9);
        try
        {
            Checkpoints.Save(path, mlp, opt);
            var before = Snapshot(other, otherOpt);
            var e = Assert.Throws<ArgumentException>(() => Checkpoints.Load(path, other, otherOpt));
            Assert.Contains($"checkpoint {path}: '1.weight' must be u8", e.Message, StringComparison.Ordinal);
            AssertSame(before, Snapshot(other, otherOpt));

            Init.ManualSeed(4);
            using var same = Zoo.Mlp(device: device);
            using var sgd = new SGD(same.Parameters(), 0.1, momentum: 0.9);
            Assert.Contains("optimizer is 'Adam', not SGD", Assert.Throws<ArgumentException>(() => Checkpoints.Load(path, same, sgd)).Message, StringComparison.Ordinal);

            var bytes = File.ReadAllBytes(path);
            File.WriteAllBytes(path, bytes[..(bytes.Length - 3)]);
            Assert.Throws<SafeTensorsException>(() => Checkpoints.Load(path, same));
            Assert.Contains("is reserved", Assert.Throws<ArgumentException>(() => Checkpoints.Save(path, same, null, new Dictionary<string, string> { [SafeTensors.HashKey] = "x" })).Message, StringComparison.Ordinal);
            Assert.Equal(bytes.Length - 3, new FileInfo(path).Length);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Theory]
    [InlineData("drop", "optimizer/1.weight/exp_avg_sq", "the checkpoint's optimizer state of '1.weight' lacks 'exp_avg_sq'")]
    [InlineData("drop-parameter", "optimizer/3.weight/", "the checkpoint says it saved 12 optimizer states but holds 10")]
    [InlineData("meta", "optimizer.lr=-0.001", "optimizer.lr '-0.001' is not a learning rate")]
    [InlineData("meta", "optimizer.lr=0", "optimizer.lr '0' is not a learning rate")]
    [InlineData("meta", "optimizer.lr=NaN", "optimizer.lr 'NaN' is not a learning rate")]
    [InlineData("meta", "optimizer.step=-3", "optimizer.step '-3' is not a step count")]
    public void ACheckpointWithAValidHashButAWrongMeaningIsRefusedAndChangesNothing(string change, string what, string expected)
    {
        var device = Device.CreateCpu("ckpt-meaning");
        var path = TempPath();
        Init.ManualSeed(1);
        using var mlp = Zoo.Mlp(hidden: 32, device: device);
        using var opt = new Adam(mlp.Parameters(), 1e-3);
        Steps(mlp, opt, 1, 2, device);
        try
        {
            Checkpoints.Save(path, mlp, opt);
            // Rewritten through the writer, so the integrity hash is valid and only the meaning is wrong.
            using var file = SafeTensors.Read(path, requireHash: true);
            var kept = file.Entries.Where(e => change switch
            {
                "drop" => e.Name != what,
                "drop-parameter" => !e.Name.StartsWith(what, StringComparison.Ordinal),
                _ => true,
            }).Select(e => (e.Name, file.ToTensor(e.Name))).ToList();
            var meta = file.Metadata.Where(kv => kv.Key != SafeTensors.HashKey).ToDictionary(kv => kv.Key, kv => kv.Value);
            if (change == "meta")
                meta[what.Split('=')[0]] = what.Split('=')[1];
            SafeTensors.Write(path, kept, meta);
            foreach (var (_, t) in kept)
                t.Dispose();

            Init.ManualSeed(2);
            using var fresh = Zoo.Mlp(hidden: 32, device: device);
            using var freshOpt = new Adam(fresh.Parameters(), 1e-3);
            Steps(fresh, freshOpt, 2, 1, device);
            var before = Snapshot(fresh, freshOpt);
            var e = Assert.Throws<ArgumentException>(() => Checkpoints.Load(path, fresh, freshOpt));
            Assert.Contains(expected, e.Message, StringComparison.Ordinal);
            Assert.Contains(path, e.Message, StringComparison.Ordinal);
            AssertSame(before, Snapshot(fresh, freshOpt));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void ACopyGivenTheExtraStateContinuesTheMasterFreeRoundingStream()
    {
        var device = Device.CreateCpu("extra-state");
        Init.ManualSeed(1);
        using var trained = Zoo.Mlp(hidden: 64, device: device, format: WeightFormat.Parse("q4"));
        Steps(trained, new SGD(trained.Parameters(), 0.05), 1, 3, device);
        var extra = trained.ExtraState();
        Assert.Equal(3, extra.Count);   // one master-free rounding stream per layer
        Assert.All(extra, kv => Assert.EndsWith(".rounding_stream", kv.Key, StringComparison.Ordinal));

        Dictionary<string, byte[]> Continued(IReadOnlyDictionary<string, string>? extraState)
        {
            Init.ManualSeed(7);
            var copy = Zoo.Mlp(hidden: 64, device: device, format: WeightFormat.Parse("q4"));
            copy.LoadStateDict(trained.StateDict(), extraState: extraState);
            var opt = new SGD(copy.Parameters(), 0.05);
            Steps(copy, opt, 2, 3, device);   // stochastic rounding draws from each weight's stream
            var snapshot = Snapshot(copy, opt);
            copy.Dispose();
            return snapshot;
        }

        var withStream = Continued(extra);
        AssertSame(withStream, Continued(extra));
        Steps(trained, new SGD(trained.Parameters(), 0.05), 2, 3, device);
        AssertSame(Snapshot(trained, new SGD(trained.Parameters(), 0.05)), withStream);
        // Left out, the copy keeps its own streams: the same steps round differently.
        Assert.Contains(Continued(null), kv => !kv.Value.AsSpan().SequenceEqual(withStream[kv.Key]));

        var missing = extra.Skip(1).ToDictionary();
        Assert.Contains($"extra state: missing [{extra.Keys.First()}]", Assert.Throws<ArgumentException>(() => trained.LoadStateDict(trained.StateDict(), extraState: missing)).Message, StringComparison.Ordinal);
        var bad = extra.ToDictionary(kv => kv.Key, kv => "not,a,stream");
        Assert.Contains("rounding_stream", Assert.Throws<ShapeMismatchException>(() => trained.LoadStateDict(trained.StateDict(), extraState: bad)).Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("csr:0.1")]
    [InlineData("q4")]
    [InlineData("lowrank:0.25")]
    public void AStateDictHoldsTheBuffersAndLoadsAnotherPatternThroughTheFormat(string format)
    {
        var device = Device.CreateCpu("state-dict");
        Init.ManualSeed(1);
        using var trained = Zoo.Mlp(hidden: 64, device: device, format: WeightFormat.Parse(format));
        using var opt = new Adam(trained.Parameters(), 1e-2);
        var rigl = format.StartsWith("csr", StringComparison.Ordinal) ? new Training.Sparsity.RigL(trained, opt, updateEvery: 2, dropFraction: 0.3, endStep: 8) : null;
        Steps(trained, opt, 1, 6, device, rigl is null ? null : () => rigl.Step());
        var state = trained.StateDict();
        Assert.Equal(trained.NamedTensors().Count(), state.Count);
        Assert.True(state.Count > trained.Parameters().Count() || format.StartsWith("lowrank", StringComparison.Ordinal), $"{state.Count} entries");

        Init.ManualSeed(7);   // another initialisation, and for CSR another random pattern
        using var fresh = Zoo.Mlp(hidden: 64, device: device, format: WeightFormat.Parse(format));
        fresh.LoadStateDict(state);
        using var scope = TensorScope.Begin();
        var x = Tensor.Uniform(new Shape(8, 1, 28, 28), -1, 1, 5, device: device);
        Assert.Equal(trained.Eval().Forward(x).ToArray<float>(), fresh.Eval().Forward(x).ToArray<float>());

        var partial = state.Where(kv => kv.Key != state.Keys.Last()).ToDictionary();
        var before = Snapshot(fresh, new SGD(fresh.Parameters(), 0.1));
        Assert.Contains($"missing [{state.Keys.Last()}]", Assert.Throws<ArgumentException>(() => fresh.LoadStateDict(partial)).Message, StringComparison.Ordinal);
        AssertSame(before, Snapshot(fresh, new SGD(fresh.Parameters(), 0.1)));
    }
}
