using System.Diagnostics;
using Frugal.Data;

namespace Frugal.Peers.TorchSharp;

/// <summary>One benchmarked model: its batch, what one step processes, and the default run lengths.</summary>
/// <param name="Name">mlp, cnn or gpt.</param>
/// <param name="Batch">Examples (sequences for gpt) per step.</param>
/// <param name="Unit">What the throughput counts: examples/s or tokens/s.</param>
/// <param name="UnitsPerStep">Examples or tokens per step.</param>
/// <param name="MinWarmupSteps">Warm-up steps at least (and at least the warm-up seconds).</param>
/// <param name="DefaultSteps">Timed steps unless --{name}-steps says otherwise.</param>
internal sealed record ModelSpec(string Name, int Batch, string Unit, int UnitsPerStep, int MinWarmupSteps, int DefaultSteps)
{
    /// <summary>GPT context (tokens per sequence).</summary>
    public const int GptContext = 64;

    /// <summary>The three models, in table order.</summary>
    public static IReadOnlyList<ModelSpec> All { get; } =
    [
        new("mlp", 128, "examples/s", 128, 20, 1200),
        new("cnn", 128, "examples/s", 128, 10, 120),
        new("gpt", 32, "tokens/s", 32 * GptContext, 5, 100),
    ];

    /// <summary>The model called <paramref name="name"/>.</summary>
    public static ModelSpec Named(string name) => All.FirstOrDefault(m => m.Name == name)
        ?? throw new ArgumentException($"unknown model '{name}'; choose from {string.Join(", ", All.Select(m => m.Name))}");
}

/// <summary>What one worker process measured.</summary>
/// <param name="Engine">frugal or torchsharp.</param>
/// <param name="Model">Model name.</param>
/// <param name="Parameters">Trainable parameters.</param>
/// <param name="WarmupSteps">Untimed steps before the clock started.</param>
/// <param name="TimedSteps">Steps timed.</param>
/// <param name="Seconds">Wall time of the timed steps.</param>
/// <param name="Rate">Examples or tokens per second.</param>
/// <param name="FinalLoss">Loss of the last timed step (a sanity check that both engines train alike).</param>
/// <param name="Spread">Slowest over fastest chunk of the timed steps (see <see cref="Timing.Measured.Spread"/>).</param>
/// <param name="Data">Where the batches came from.</param>
/// <param name="Info">Engine version and threads.</param>
internal sealed record RunResult(string Engine, string Model, long Parameters, int WarmupSteps, int TimedSteps, double Seconds, double Rate, double FinalLoss, double Spread, string Data, string Info);

/// <summary>The settings a worker runs with.</summary>
/// <param name="Threads">Intra-op threads.</param>
/// <param name="Steps">Timed steps.</param>
/// <param name="WarmupSeconds">Minimum warm-up wall time.</param>
/// <param name="MaxSeconds">Cap on the timed steps' wall time.</param>
internal sealed record WorkerSettings(int Threads, int Steps, double WarmupSeconds, double MaxSeconds);

/// <summary>
/// A fixed pool of batches that both engines train on, built identically in each worker before any timing: Fashion-MNIST
/// training images (standardized, in a seeded shuffled order) with their labels, or byte windows of the fortunes corpus
/// with their next-byte targets. Each engine converts the pool to its own tensors once, outside the timed region, so the
/// clock covers the training steps only, never data loading or conversion.
/// </summary>
internal static class BatchPool
{
    /// <summary>Distinct batches in a pool; step i trains on batch i mod this.</summary>
    public const int Size = 64;

    /// <summary><see cref="Size"/> image batches of <paramref name="batch"/>: pixels [batch·784] and labels
    /// [batch].</summary>
    public static (float[][] Pixels, int[][] Labels, string Source) Images(int batch)
    {
        var (pixels, labels) = (new float[Size][], new int[Size][]);
        if (!Directory.Exists(FashionMnist.DefaultDirectory))
        {
            // Without Debian's dataset-fashion-mnist: random pixels and labels, which cost exactly the same to train on.
            var random = new Random(1);
            for (var k = 0; k < Size; k++)
            {
                pixels[k] = [.. Enumerable.Range(0, batch * 784).Select(_ => (float)(random.NextDouble() * 2 - 1))];
                labels[k] = [.. Enumerable.Range(0, batch).Select(_ => random.Next(10))];
            }
            return (pixels, labels, "generated images (apt-get install dataset-fashion-mnist for the real ones)");
        }
        var data = FashionMnist.Load();
        var order = DataLoader.Permutation(data.Train.Count, 1);
        for (var k = 0; k < Size; k++)
        {
            var indices = order.AsSpan(k * batch, batch);
            (pixels[k], labels[k]) = (new float[batch * data.Train.ImageSize], new int[batch]);
            data.Train.FillPixels(indices, pixels[k]);
            data.Train.FillLabels(indices, labels[k]);
        }
        return (pixels, labels, $"Fashion-MNIST training images from {data.Source}");
    }

    /// <summary><see cref="Size"/> token batches of <paramref name="batch"/> windows of
    /// <see cref="ModelSpec.GptContext"/> bytes: inputs and next-byte targets, [batch·context] each.</summary>
    public static (int[][] Inputs, int[][] Targets, string Source) Tokens(int batch)
    {
        // As bench/GptBench.cs: Debian's fortunes, else generated lines.
        var corpus = TextCorpus.FromFortunes() ?? TextCorpus.FromBytes("generated text",
            System.Text.Encoding.UTF8.GetBytes(string.Concat(Enumerable.Range(0, 20000).Select(i => $"line {i % 97} of {i % 13}.\n"))));
        var (inputs, targets) = (new int[Size][], new int[Size][]);
        for (var k = 0; k < Size; k++)
        {
            var (x, y) = TextCorpus.Batch(corpus.Train, batch, ModelSpec.GptContext, 1, k);
            using (x)
            using (y)
                (inputs[k], targets[k]) = (x.ToArray<int>(), y.ToArray<int>());
        }
        return (inputs, targets, corpus.Source);
    }
}

/// <summary>The timing loop both engines share.</summary>
internal static class Timing
{
    /// <summary>Timed chunks whose durations give <see cref="Measured.Spread"/>.</summary>
    public const int Chunks = 5;

    /// <summary>What <see cref="Run"/> measured.</summary>
    /// <param name="Warmup">Warm-up steps.</param>
    /// <param name="Steps">Steps timed (fewer than asked when the time cap stopped the run).</param>
    /// <param name="Seconds">Wall time of the timed steps.</param>
    /// <param name="Loss">Loss of the last timed step.</param>
    /// <param name="Spread">Slowest over fastest per-step time of the timed steps' consecutive chunks (1 on a quiet
    /// machine; far above 1 when other work took the cores, which hurts libtorch's OpenMP barriers most).</param>
    public sealed record Measured(int Warmup, int Steps, double Seconds, double Loss, double Spread);

    /// <summary>Runs <paramref name="step"/> (given the step index; it returns the loss when asked, else NaN) for
    /// warm-up until both <paramref name="minWarmupSteps"/> steps and <paramref name="warmupSeconds"/> have passed
    /// (so .NET's tier-1 JIT code and libtorch's allocator caches are in place), then times
    /// <paramref name="timedSteps"/> more, or as many as fit <paramref name="maxSeconds"/> (a busy machine can slow
    /// a run tenfold).</summary>
    public static Measured Run(Func<int, bool, double> step, int minWarmupSteps, double warmupSeconds, int timedSteps, double maxSeconds)
    {
        ArgumentNullException.ThrowIfNull(step);
        var i = 0;
        var warm = Stopwatch.StartNew();
        while (i < minWarmupSteps || warm.Elapsed.TotalSeconds < warmupSeconds)
            step(i++, false);
        var warmup = i;
        var loss = double.NaN;
        var chunks = Math.Min(Chunks, timedSteps);
        var perStep = new List<double>();
        var clock = Stopwatch.StartNew();
        var (done, chunk, chunkStart, last) = (0, 0, 0, TimeSpan.Zero);
        while (true)
        {
            var final = done == timedSteps - 1 || clock.Elapsed.TotalSeconds >= maxSeconds;
            loss = step(i++, final);
            done++;
            var chunkEnd = (int)((long)timedSteps * (chunk + 1) / chunks);
            if (done == chunkEnd || final)
            {
                var now = clock.Elapsed;
                // A cut-off last chunk counts only when it is at least half a chunk (or the only one).
                if (perStep.Count == 0 || 2 * (done - chunkStart) >= timedSteps / chunks)
                    perStep.Add((now - last).TotalSeconds / (done - chunkStart));
                (chunk, chunkStart, last) = (chunk + 1, done, now);
            }
            if (final)
                break;
        }
        clock.Stop();
        return new Measured(warmup, done, clock.Elapsed.TotalSeconds, loss, perStep.Max() / perStep.Min());
    }
}
