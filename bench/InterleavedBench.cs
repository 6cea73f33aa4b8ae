using System.Diagnostics;
using System.Globalization;
using Frugal.Data;
using Frugal.Formats;
using Frugal.Models;
using Frugal.Nn;
using Frugal.Optim;

namespace Frugal.Bench;

/// <summary>Step times of several MLP recipes measured side by side: every recipe's model and optimizer live at
/// once, and the rounds run each for a block of 20 steps in turn on the same 64 batches, so a shared machine's
/// slow periods fall on all of them alike; the 25th percentile and the minimum of the blocks, each against the first
/// recipe's. A recipe is FORMAT[/8bit][/uib] (8-bit Adam moments, updates in backward).</summary>
public static class InterleavedBench
{
    private const int Block = 20;

    public static int Run(string[] args)
    {
        var rounds = 40;
        var recipes = new List<string>();
        for (var i = 0; i < args.Length; i++)
        {
            if (args[i] == "--rounds" && i + 1 < args.Length)
                rounds = int.Parse(args[++i], CultureInfo.InvariantCulture);
            else
                recipes.Add(args[i]);
        }
        if (recipes.Count == 0)
            recipes.AddRange(["dense", "dense/8bit", "q8/8bit", "q4/8bit", "q8/8bit/uib", "q4/8bit/uib"]);
        var data = EmbeddedData.LoadFashionMnist(null);
        var device = Device.Cpu;
        var batches = new List<(Tensor X, Tensor Y)>();
        foreach (var (x, y) in data.Train.Batches(128, shuffle: true, seed: 1, device: device, dropLast: true))
        {
            batches.Add((Tensor.FromArray(x.ToArray<float>(), x.Shape).DetachFromScope(), Tensor.FromArray(y.ToArray<int>(), y.Shape).DetachFromScope()));   // kept: the loader frees its own
            if (batches.Count == 64)
                break;
        }
        var runs = recipes.Select(r =>
        {
            var parts = r.Split('/');
            Init.ManualSeed(1);
            var model = Zoo.Create("mlp", device, WeightFormat.Parse(parts[0]));
            return (Recipe: r, Model: model, Opt: new Adam(model.Parameters(), 1e-3, stateBits: parts.Contains("8bit") ? 8 : 32), InBackward: parts.Contains("uib"), Times: new List<double>());
        }).ToList();
        void Steps((string Recipe, Sequential Model, Adam Opt, bool InBackward, List<double> Times) run, int n, bool record)
        {
            var clock = Stopwatch.StartNew();
            for (var i = 0; i < n; i++)
            {
                var (x, y) = batches[i % batches.Count];
                using var scope = TensorScope.Begin();
                run.Opt.BackwardAndStep(F.CrossEntropy(run.Model.Forward(x), y), run.InBackward);
            }
            if (record)
                run.Times.Add(clock.Elapsed.TotalMilliseconds / n);
        }
        foreach (var run in runs)
            Steps(run, 300, record: false);   // the tiered JIT's optimized code
        for (var k = 0; k < rounds; k++)
        {
            foreach (var run in runs)
                Steps(run, Block, record: true);
        }
        static double P25(List<double> t) => t.Order().ElementAt(t.Count / 4);
        var (p25, min) = (P25(runs[0].Times), runs[0].Times.Min());
        Console.WriteLine($"MLP 784-512-512-10, batch 128, Adam 1e-3; {rounds} rounds of {Block} steps per recipe; {Backends.Cpu.CpuThreads.Count} threads");
        Console.WriteLine();
        Console.WriteLine("| recipe | ms/step (p25) | × first | ms/step (min) | × first |");
        Console.WriteLine("|---|---:|---:|---:|---:|");
        foreach (var run in runs)
        {
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"| {run.Recipe} | {P25(run.Times):F2} | {P25(run.Times) / p25:F2} | {run.Times.Min():F2} | {run.Times.Min() / min:F2} |"));
            run.Opt.Dispose();
            run.Model.Dispose();
        }
        foreach (var (x, y) in batches)
        {
            x.Dispose();
            y.Dispose();
        }
        return 0;
    }
}
