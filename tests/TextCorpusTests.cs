using System.Text;
using Frugal.Data;
using Frugal.Nn;
using Frugal.Optim;

namespace Frugal.Tests;

/// <summary>The byte-level text corpus (split, seeded windows with next-byte targets, the unigram baseline, Debian's
/// fortunes layout) and AdamW's decay of matrices only.</summary>
public class TextCorpusTests
{
    [Fact]
    public void SplitsAndDrawsSeededWindowsWithNextByteTargets()
    {
        var text = Encoding.UTF8.GetBytes(string.Concat(Enumerable.Range(0, 200).Select(i => $"line {i} héllo\n")));
        var corpus = TextCorpus.FromBytes("test", text, 0.25);
        Assert.Equal(text.Length, corpus.Train.Length + corpus.Validation.Length);
        Assert.Equal(text[..corpus.Train.Length], corpus.Train);
        Assert.Equal((int)Math.Round(text.Length * 0.75), corpus.Train.Length);
        using var scope = TensorScope.Begin();
        var (x, y) = TextCorpus.Batch(corpus.Train, 4, 10, seed: 3, index: 7);
        var (x2, y2) = TextCorpus.Batch(corpus.Train, 4, 10, seed: 3, index: 7);
        var (x3, _) = TextCorpus.Batch(corpus.Train, 4, 10, seed: 3, index: 8);
        Assert.Equal(new Shape(4, 10), x.Shape);
        Assert.Equal(x.ToArray<int>(), x2.ToArray<int>());
        Assert.Equal(y.ToArray<int>(), y2.ToArray<int>());
        Assert.NotEqual(x.ToArray<int>(), x3.ToArray<int>());
        var xs = x.ToArray<int>();
        var ys = y.ToArray<int>();
        for (var b = 0; b < 4; b++)
        {
            // Each window is a slice of the training text, and y is x moved one byte on.
            var window = xs.Skip(b * 10).Take(10).Select(v => (byte)v).ToArray();
            var start = Enumerable.Range(0, corpus.Train.Length - 10).First(s => corpus.Train.AsSpan(s, 10).SequenceEqual(window));
            Assert.Equal(corpus.Train.Skip(start + 1).Take(10).Select(v => (int)v), ys.Skip(b * 10).Take(10));
        }
        Assert.Throws<ArgumentException>(() => TextCorpus.Batch(corpus.Validation, 1, corpus.Validation.Length, 1, 0));
        Assert.Throws<ArgumentException>(() => TextCorpus.FromBytes("tiny", [1, 2, 3]));
    }

    [Fact]
    public void UnigramBaselineIsTheSmoothedByteFrequencyCrossEntropy()
    {
        var corpus = TextCorpus.FromBytes("ab", Encoding.ASCII.GetBytes("aaab" + "aaab" + "ab"), 0.2);
        Assert.Equal("aaabaaab"u8.ToArray(), corpus.Train);
        // Train: 6 a, 2 b over 8 bytes + 256 pseudo-counts; validation "ab".
        var expected = -(Math.Log(7 / 264.0) + Math.Log(3 / 264.0)) / 2;
        Assert.Equal(expected, corpus.UnigramValidationLoss(), 12);
    }

    [Fact]
    public void ReadsFortunesFoldersAndRefusesWhatIsNotText()
    {
        var dir = Path.Combine(Path.GetTempPath(), $"frugal-fortunes-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        try
        {
            File.WriteAllText(Path.Combine(dir, "b"), "second\n%\nthird\n");
            File.WriteAllText(Path.Combine(dir, "a"), "first one\n%\n");
            File.WriteAllBytes(Path.Combine(dir, "a.dat"), [0, 1, 2, 255]);
            var corpus = TextCorpus.FromFortunes(dir, 0.2)!;
            var all = Encoding.UTF8.GetString([.. corpus.Train, .. corpus.Validation]);
            Assert.Equal("first one\n\nsecond\n\nthird\n", all);
            Assert.Null(TextCorpus.FromFortunes(Path.Combine(dir, "none")));
            File.WriteAllBytes(Path.Combine(dir, "binary.txt"), [0xFF, 0xFE, 0x41, 0x42, 0x43, 0x44]);
            Assert.Contains("not UTF-8 text", Assert.Throws<InvalidDataException>(() => TextCorpus.FromFile(Path.Combine(dir, "binary.txt"))).Message, StringComparison.Ordinal);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void AdamWCanSpareBiasesAndNormsFromDecay()
    {
        Init.ManualSeed(2);
        using var model = new Sequential(new Linear(3, 2), new LayerNorm(2));
        var before = model.Parameters().Select(p => p.ToArray<float>()).ToList();
        using var opt = new AdamW(model.Parameters(), lr: 0.1, weightDecay: 0.5, decay: Adam.MatricesOnly);
        foreach (var p in model.Parameters())
            p.Grad = Tensor.Zeros(p.Shape);
        opt.Step();
        var after = model.Parameters().Select(p => p.ToArray<float>()).ToList();
        var ranks = model.Parameters().Select(p => p.Rank).ToList();
        for (var i = 0; i < before.Count; i++)
        {
            // With zero gradients only decoupled decay moves a weight: w·(1 − lr·wd) for matrices, unchanged otherwise.
            var factor = ranks[i] >= 2 ? 1 - 0.1 * 0.5 : 1;
            TestUtil.AssertClose([.. before[i].Select(v => v * factor)], [.. after[i].Select(v => (double)v)], 1e-7, 1e-6, $"parameter {i} (rank {ranks[i]})");
        }
    }
}
