using System.Diagnostics;
using System.Globalization;
using Frugal.Data;
using Frugal.Models;
using Frugal.Nn;
using Frugal.Optim;

namespace Frugal.Bench;

/// <summary>Training throughput of the CLI's models: examples per second at batch 128 with Adam, measured on
/// Fashion-MNIST batches after warm-up steps, in this process.</summary>
public static class TrainBench
{
    public static int Run(string[] args)
    {
        var data = EmbeddedData.LoadFashionMnist(null);
        Console.WriteLine($"data: {data.Source}; {Environment.ProcessorCount} cores; batch 128; Adam 1e-3");
        Console.WriteLine();
        // Warm-up: at least 3 s and 20 steps, so that the JIT's tier-1 code (compiled in the background after
        // ~30 calls) runs the timed steps.
        Console.WriteLine("| model | parameters | warm-up steps | timed steps | ms/step | examples/s | est. s/epoch (60k) |");
        Console.WriteLine("|---|---:|---:|---:|---:|---:|---:|");
        foreach (var (name, density, timed) in new (string, double?, int)[] { ("mlp", null, 300), ("mlp", 0.1, 300), ("cnn", null, 60) })
        {
            var (warmup, ms, parameters) = MsPerStep(name, data.Train, timed, Device.Cpu, density);
            var rate = 128 * 1000.0 / ms;
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"| {name}{(density is { } d ? $" csr {d}" : "")} | {parameters:N0} | {warmup} | {timed} | {ms:F2} | {rate:F0} | {60000 / rate:F1} |"));
        }
        return 0;
    }

    /// <summary>Milliseconds per training step (batch 128, Adam 1e-3) of model <paramref name="name"/> on
    /// <paramref name="device"/>, timed over <paramref name="timedSteps"/> steps after warm-up; also the warm-up
    /// steps taken and the parameter count.</summary>
    public static (int Warmup, double Ms, long Parameters) MsPerStep(string name, ImageDataset train, int timedSteps, Device device, double? density = null)
    {
        const int batch = 128;
        int? warmup = null;
        Init.ManualSeed(1);
        using var model = Zoo.Create(name, device, density);
        using var opt = new Adam(model.Parameters(), 1e-3);
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
                    loss.Backward();
                    opt.Step();
                    opt.ZeroGrad();
                    if (step + 1 == warmup + timedSteps)
                        loss.Item();   // waits for a GPU's queued work, so the clock covers it
                }
                if (++step == warmup + timedSteps)
                    break;
            }
        }
        clock.Stop();
        return (warmup!.Value, clock.Elapsed.TotalMilliseconds / timedSteps, model.ParameterCount());
    }
}
