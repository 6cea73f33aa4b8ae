using Frugal.Formats;
using System.Diagnostics;
using System.Globalization;
using Frugal.Data;
using Frugal.Memory;
using Frugal.Models;
using Frugal.Nn;
using Frugal.Optim;

namespace Frugal.Bench;

/// <summary>Training throughput and memory of the CLI's models per weight format: examples per second at batch 128
/// with Adam, measured on Fashion-MNIST batches after warm-up steps, in this process, and the allocator's peak bytes
/// over the run (each run on its own CPU device, so the peaks are the model's alone). "+ckpt" makes every block a
/// checkpoint segment; "+lean" uses 8-bit Adam states and applies updates in backward.</summary>
public static class TrainBench
{
    public static int Run(string[] args)
    {
        var data = EmbeddedData.LoadFashionMnist(null);
        Console.WriteLine($"data: {data.Source}; {Environment.ProcessorCount} cores; batch 128; Adam 1e-3");
        Console.WriteLine();
        // Warm-up: at least 3 s and 20 steps, so that the JIT's tier-1 code (compiled in the background after
        // ~30 calls) runs the timed steps.
        Console.WriteLine("| model | format | parameters | warm-up steps | timed steps | ms/step | ×dense | examples/s | peak P+G+OS+FM | peak total | ×dense |");
        Console.WriteLine("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        var formats = new[] { "dense", "dense +ckpt", "dense +lean", "csr:0.1", "bsr:0.1:16", "lowrank:0.25", "q8", "q4", "q4:latent", "q1:latent", "q8 +lean", "q4 +lean" };
        foreach (var (name, timed) in new[] { ("mlp", 300), ("cnn", 40) })
        {
            Result? dense = null;
            foreach (var format in formats)
            {
                var device = Device.CreateCpu($"bench-{name}-{format}");
                var r = MsPerStep(name, data.Train, timed, device, WeightFormat.Parse(format.Split(' ')[0]), checkpoint: format.EndsWith("+ckpt", StringComparison.Ordinal),
                    lean: format.EndsWith("+lean", StringComparison.Ordinal));
                dense ??= r;
                var rate = 128 * 1000.0 / r.Ms;
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"| {name} | {format} | {r.Parameters:N0} | {r.Warmup} | {timed} | {r.Ms:F2} | {r.Ms / dense.Ms:F2} | {rate:F0} | {r.PersistentPeak:N0} | {r.PeakTotal:N0} | {(double)r.PeakTotal / dense.PeakTotal:F3} |"));
            }
        }
        return 0;
    }

    /// <summary>A timed run: warm-up steps, milliseconds per step, parameters, the peak of Parameter + Gradient +
    /// OptimizerState + FormatMeta bytes (each category's peak) and the peak of all bytes at once.</summary>
    public sealed record Result(int Warmup, double Ms, long Parameters, long PersistentPeak, long PeakTotal);

    /// <summary>Milliseconds per training step (batch 128, Adam 1e-3) of model <paramref name="name"/> in
    /// <paramref name="format"/> (every block a checkpoint segment with <paramref name="checkpoint"/>; 8-bit states and
    /// updates in backward with <paramref name="lean"/>) on <paramref name="device"/>, timed over
    /// <paramref name="timedSteps"/> steps after warm-up.</summary>
    public static Result MsPerStep(string name, ImageDataset train, int timedSteps, Device device, WeightFormat? format = null, bool checkpoint = false, bool lean = false)
    {
        const int batch = 128;
        int? warmup = null;
        Init.ManualSeed(1);
        using var model = Zoo.Create(name, device, format, checkpoint: checkpoint);
        using var opt = new Adam(model.Parameters(), 1e-3, stateBits: lean ? 8 : 32);
        var clock = new Stopwatch();
        var warmClock = Stopwatch.StartNew();
        var step = 0;
        while (warmup is null || step < warmup + timedSteps)
        {
            foreach (var (x, y) in train.Batches(batch, shuffle: true, seed: step, device: device, dropLast: true))
            {
                if (warmup is null && step >= 20 && warmClock.Elapsed.TotalSeconds >= 3)
                {
                    warmup = step;
                    clock.Start();
                }
                using (TensorScope.Begin())
                {
                    using var logits = model.Forward(x);
                    using var loss = F.CrossEntropy(logits, y);
                    opt.BackwardAndStep(loss, inBackward: lean);
                    if (step + 1 == warmup + timedSteps)
                        loss.Item();   // waits for a GPU's queued work, so the clock covers it
                }
                if (++step == warmup + timedSteps)
                    break;
            }
        }
        clock.Stop();
        var stats = device.Allocator.Stats();
        var persistent = new[] { MemoryCategory.Parameter, MemoryCategory.Gradient, MemoryCategory.OptimizerState, MemoryCategory.FormatMeta }.Sum(stats.Peak);
        return new Result(warmup!.Value, clock.Elapsed.TotalMilliseconds / timedSteps, model.ParameterCount(), persistent, stats.PeakTotal);
    }
}
