using Frugal.Data;
using Frugal.Formats;
using Frugal.Memory;
using Frugal.Models;
using Frugal.Nn;
using Frugal.Optim;

namespace Frugal.Tests;

/// <summary>Weights that own their format: compositions (sparse values and low-rank factors in low bits) with exact
/// bytes per category, the dense fallback every product is checked against, weight decay of every format's weight
/// parts, and a format added outside the engine (<see cref="BlockDiagonalFormat"/>) in layers and the CLI.</summary>
public class WeightFormatTests
{
    private static double[] D(float[] values) => Array.ConvertAll(values, v => (double)v);

    [Theory]
    [InlineData("csr:0.1+q4", "csr:0.1+q4:auto:masterfree", "csr+q4")]
    [InlineData("bsr:0.25:8+q8:latent", "bsr:0.25:8+q8:auto:latent", "bsr8+q8-latent")]
    [InlineData("lowrank:8+q8", "lowrank:8+q8:auto:masterfree", "lowrank+q8")]
    [InlineData("lowrank:0.25+q4:32", "lowrank:0.25+q4:32:masterfree", "lowrank+q4")]
    [InlineData("blockdiag:4", "blockdiag:4", "blockdiag")]
    public void CompositionsAndRegisteredFormatsParseAndPrint(string text, string printed, string key)
    {
        var format = WeightFormat.Parse(text);
        Assert.Equal(printed, format.ToString());
        Assert.Equal(key, format.Key);
        Assert.Equal(format, WeightFormat.Parse(printed));
    }

    [Theory]
    [InlineData("q4+csr:0.1", "its stored values cannot be in another format")]
    [InlineData("csr:0.1+lowrank:4", "stored values can be quantized")]
    [InlineData("csr:0.1+q4:a4", "without input quantization")]
    [InlineData("blockdiag:x", "blockdiag:B with B a positive number")]
    [InlineData("monarch:4", "or STRUCTURE+VALUES")]
    public void BadCompositionsAreRefusedByName(string text, string message)
    {
        var e = Assert.Throws<FormatException>(() => WeightFormat.Parse(text));
        Assert.Contains(message, e.Message, StringComparison.Ordinal);
    }

    /// <summary>A CSR weight with 4-bit master-free values stores codes for the stored values only (in rows of 64,
    /// the last padded), a scale and zero per 64 of them, and the pattern: bytes per category exact, in the weight
    /// and in the allocator.</summary>
    [Fact]
    public void SparseValuesInFourBitsStoreExactlyTheirCodesScalesAndPattern()
    {
        var device = Device.CreateCpu("csr-q4-bytes");
        Init.ManualSeed(3);
        using var layer = new Linear(96, 40, WeightFormat.Parse("csr:0.1+q4"), device: device);
        var w = Assert.IsType<SparseWeight>(layer.Weight);
        var nnz = w.Pattern.Nnz;
        Assert.Equal(40 * (int)Math.Round(0.1 * 96), nnz);
        var groups = (nnz + 63) / 64;
        var bytes = w.StorageBytes();
        Assert.Equal(groups * 64 / 2, bytes[MemoryCategory.Parameter]);
        Assert.Equal(8L * groups + 4L * (40 + 1 + nnz), bytes[MemoryCategory.FormatMeta]);
        Assert.Equal(bytes[MemoryCategory.Parameter] + 4L * 40, device.Allocator.Current(MemoryCategory.Parameter));
        Assert.Equal(bytes[MemoryCategory.FormatMeta], device.Allocator.Current(MemoryCategory.FormatMeta));
        Assert.Equal("csr+q4", layer.WeightFormatName);
        Assert.Equal(["weight", "bias"], layer.NamedParameters().Select(p => p.Name));
        Assert.Equal(["weight", "bias", "weight_scales", "weight_row_ptr", "weight_col_idx"], layer.NamedTensors().Select(t => t.Name));
    }

    /// <summary>Low-rank factors in 8 bits: each factor is its codes (one byte per value) and a scale per group.</summary>
    [Fact]
    public void LowRankFactorsInEightBitsStoreExactlyTheirCodesAndScales()
    {
        var device = Device.CreateCpu("lowrank-q8-bytes");
        Init.ManualSeed(3);
        using var layer = new Linear(128, 64, WeightFormat.Parse("lowrank:8+q8:row"), device: device);
        var w = Assert.IsType<LowRankWeight>(layer.Weight);
        var bytes = w.StorageBytes();
        Assert.Equal(64L * 8 + 8L * 128, bytes[MemoryCategory.Parameter]);
        Assert.Equal(8L * (64 + 8), bytes[MemoryCategory.FormatMeta]);   // one group per row of U [64, 8] and Vᵀ [8, 128]
        Assert.Equal(bytes[MemoryCategory.Parameter] + 4L * 64, device.Allocator.Current(MemoryCategory.Parameter));
        Assert.Equal(8L * (64 + 128), w.ParameterCount);
        Assert.Equal(["weight_u", "weight_vt", "bias"], layer.NamedParameters().Select(p => p.Name));
    }

    /// <summary>Every composition's product is its dense fallback's, forward and backward into the trained parts.</summary>
    [Theory]
    [InlineData("csr:0.3+q8:latent")]
    [InlineData("bsr:0.5:8+q4:latent")]
    [InlineData("lowrank:6+q8:latent")]
    [InlineData("csr:0.3+q8")]
    [InlineData("lowrank:6+q4")]
    [InlineData("blockdiag:4")]
    public void ProductsMatchTheDenseFallback(string format)
    {
        var device = Device.CreateCpu($"fallback-{format}");
        Init.ManualSeed(7);
        using var layer = new Linear(32, 24, WeightFormat.Parse(format), device: device);
        using var x = Tensor.Uniform(new Shape(5, 32), -1, 1, 11, device: device);
        using var dy = Tensor.Uniform(new Shape(5, 24), -1, 1, 12, device: device);

        float[] Run(Func<Tensor> forward, out float[][] grads)
        {
            layer.ZeroGrad();
            using var scope = TensorScope.Begin();
            var y = forward();
            (y * dy).Sum().Backward();
            grads = [.. layer.Parameters().Select(p => p.Grad!.ToArray<float>())];
            return y.ToArray<float>();
        }

        var fast = Run(() => layer.Forward(x), out var fastGrads);
        var reference = Run(() => F.Linear(x, layer.Weight.ToDense(), layer.Bias), out var referenceGrads);
        TestUtil.AssertClose(D(reference), D(fast), 1e-5, 1e-5, format);
        for (var i = 0; i < fastGrads.Length; i++)
            TestUtil.AssertClose(D(referenceGrads[i]), D(fastGrads[i]), 1e-4, 1e-4, $"{format} gradient {i}");
    }

    /// <summary>Weight decay for matrices reaches every format's weight parts (CSR values and low-rank factors are
    /// rank-1 or small tensors) and spares biases and normalisation parameters.</summary>
    [Fact]
    public void SparseAndLowRankWeightsDecayLikeDenseMatrices()
    {
        var device = Device.CreateCpu("decay");
        Init.ManualSeed(1);
        using var model = new Gpt(new GptConfig(16, 8, 1, 32, 2, WeightFormat.Parse("csr:0.25"), WeightFormat.Parse("bsr:0.5:8"), EmbeddingFormat: WeightFormat.Parse("lowrank:4")), device);
        var decayed = model.NamedParameters().Where(p => Adam.MatricesOnly(p.Parameter)).Select(p => p.Name).ToHashSet();
        var weights = model.Weights().SelectMany(w => w.Weight.Parameters).Select(p => p.Name!).ToHashSet();
        Assert.Equal(weights, decayed);
        Assert.Contains("h.0.attn.qkv.weight", decayed);   // CSR values: a rank-1 tensor
        Assert.Contains("wte.weight_u", decayed);
        Assert.DoesNotContain("h.0.attn.qkv.bias", decayed);
        Assert.DoesNotContain("h.0.ln1.weight", decayed);

        // AdamW decays the CSR values: with a zero gradient the step is the decay alone.
        var block = Assert.IsType<TransformerBlock>(model.Blocks.Layers[0]);
        var values = Assert.IsType<SparseWeight>(Assert.IsType<Linear>(block.Attention.Qkv).Weight).Values;
        var before = values.ToArray<float>();
        using var opt = new AdamW(model.Parameters(), 0.1, weightDecay: 0.5, decay: Adam.MatricesOnly);
        values.Grad = Tensor.Zeros(values.Shape, DType.F32, device);
        opt.Step();
        var after = values.ToArray<float>();
        for (var i = 0; i < before.Length; i++)
            Assert.Equal(before[i] * (1 - 0.1 * 0.5), after[i], 1e-6);
    }

    /// <summary>A composition trains: 30 steps of the MLP on real data lower the loss, and bytes stay exact.</summary>
    [Theory]
    [InlineData("csr:0.1+q4")]
    [InlineData("lowrank:0.25+q8")]
    public void CompositionsTrainOnRealData(string format)
    {
        var device = Device.CreateCpu($"train-{format}");
        Init.ManualSeed(2);
        var data = FashionMnist.Load();
        using var model = Zoo.Mlp(device: device, format: WeightFormat.Parse(format));
        using var opt = new Adam(model.Parameters(), 3e-3);
        var stored = model.Weights().Sum(w => w.Weight.StorageBytes().GetValueOrDefault(MemoryCategory.Parameter));
        var losses = new List<float>();
        foreach (var (x, y) in data.Train.Batches(128, shuffle: true, seed: 1, device: device).Take(30))
        {
            using var scope = TensorScope.Begin();
            using var images = x;
            using var labels = y;
            var loss = F.CrossEntropy(model.Forward(x), y);
            losses.Add(loss.ToArray<float>()[0]);
            opt.BackwardAndStep(loss);
        }
        Assert.True(losses.Skip(25).Average() < 0.8 * losses.Take(5).Average(), $"{format}: loss {losses.Take(5).Average():F3} -> {losses.Skip(25).Average():F3}");
        Assert.Equal(stored, model.Weights().Sum(w => w.Weight.StorageBytes().GetValueOrDefault(MemoryCategory.Parameter)));
    }

    /// <summary>The toy format added in one file works in layers (its product is checked against a float64 reference
    /// with gradients) and in the CLI through the registry.</summary>
    [Fact]
    public void AFormatAddedOutsideTheEngineTrainsInLayersAndTheCli()
    {
        var device = Device.CreateCpu("blockdiag");
        Init.ManualSeed(4);
        using var layer = new Linear(12, 8, WeightFormat.Parse("blockdiag:4"), device: device);
        var w = Assert.IsType<BlockDiagonalWeight>(layer.Weight);
        Assert.Equal(new Shape(4, 2, 3), w.Blocks.Shape);
        Assert.Equal(4L * 24, w.StorageBytes()[MemoryCategory.Parameter]);
        using var x = Tensor.Uniform(new Shape(3, 12), -1, 1, 5, device: device);
        using var y = layer.Forward(x);
        var blocks = w.Blocks.ToArray<float>();
        var bias = layer.Bias!.ToArray<float>();
        var xs = x.ToArray<float>();
        var expected = new double[3 * 8];
        for (var n = 0; n < 3; n++)
        {
            for (var r = 0; r < 8; r++)
            {
                double sum = bias[r];
                var b = r / 2;
                for (var c = 0; c < 3; c++)
                    sum += (double)blocks[b * 6 + (r % 2) * 3 + c] * xs[n * 12 + b * 3 + c];
                expected[n * 8 + r] = sum;
            }
        }
        TestUtil.AssertClose(expected, D(y.ToArray<float>()), 1e-5, 1e-5, "blockdiag");
        y.Sum().Backward();
        var grad = w.Blocks.Grad!.ToArray<float>();
        for (var b = 0; b < 4; b++)
        {
            for (var c = 0; c < 3; c++)
            {
                var column = Enumerable.Range(0, 3).Sum(n => (double)xs[n * 12 + b * 3 + c]);
                Assert.Equal(column, grad[b * 6 + c], 1e-5);
                Assert.Equal(column, grad[b * 6 + 3 + c], 1e-5);
            }
        }

        var (code, output, err) = CliTests.Run("train", "--model", "mlp", "--data", "embedded", "--format", "blockdiag:4", "--steps-per-epoch", "20", "--seed", "4");
        Assert.True(code == 0, err);
        Assert.Contains("blockdiag", output, StringComparison.Ordinal);
        Assert.Matches(@"test accuracy 0\.[3-9]", output);
    }
}
