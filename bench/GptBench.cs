using Frugal.Formats;
using System.Diagnostics;
using System.Globalization;
using Frugal.Data;
using Frugal.Memory;
using Frugal.Models;
using Frugal.Nn;
using Frugal.Optim;

namespace Frugal.Bench;

/// <summary><c>bench gpt [steps]</c>: training throughput (tokens/s) and the allocator's peak bytes of the CLI's GPT
/// (4 layers, width 256, 4 heads, context 128, batch 16, AdamW) per weight format of its attention and MLP layers, with
/// and without checkpointing every block; each run on its own CPU device, timed after warm-up steps.</summary>
public static class GptBench
{
    public static int Run(string[] args)
    {
        var timed = args.Length > 0 ? int.Parse(args[0], CultureInfo.InvariantCulture) : 5;
        var corpus = TextCorpus.FromFortunes() ?? TextCorpus.FromBytes("generated text", System.Text.Encoding.UTF8.GetBytes(string.Concat(Enumerable.Range(0, 20000).Select(i => $"line {i % 97} of {i % 13}.\n"))));
        const int Batch = 16, Context = 128;
        Console.WriteLine($"corpus: {corpus.Source}; {Environment.ProcessorCount} cores; GPT 4 × 256, 4 heads, context {Context}, batch {Batch}, AdamW; {timed} timed steps after 2 warm-up steps");
        Console.WriteLine();
        Console.WriteLine("| format | checkpoint | parameters | ms/step | tokens/s | ×dense | peak Activation | peak at once | ×dense |");
        Console.WriteLine("|---|---|---:|---:|---:|---:|---:|---:|---:|");
        (double Ms, long Peak)? dense = null;
        foreach (var format in new[] { "dense", "csr:0.1", "bsr:0.1:16", "lowrank:0.25", "q8", "q4" })
        {
            foreach (var checkpoint in new[] { false, true })
            {
                var device = Device.CreateCpu($"bench-gpt-{format}-{checkpoint}");
                var f = WeightFormat.Parse(format);
                Init.ManualSeed(1);
                using var model = new Gpt(new GptConfig(TextCorpus.Vocab, Context, 4, 256, 4, f, f, Checkpoint: checkpoint), device);
                using var opt = new AdamW(model.Parameters(), 1e-3, weightDecay: 0.1, decay: Adam.MatricesOnly);
                var clock = new Stopwatch();
                for (var step = 0; step < 2 + timed; step++)
                {
                    if (step == 2)
                        clock.Start();
                    using var scope = TensorScope.Begin();
                    var (x, y) = TextCorpus.Batch(corpus.Train, Batch, Context, 1, step, device);
                    opt.BackwardAndStep(Gpt.Loss(model.Forward(x), y));
                }
                clock.Stop();
                var ms = clock.Elapsed.TotalMilliseconds / timed;
                var stats = device.Allocator.Stats();
                dense ??= (ms, stats.PeakTotal);
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"| {format} | {(checkpoint ? "every block" : "no")} | {model.ParameterCount():N0} | {ms:F0} | {Batch * Context * 1000 / ms:F0} | {ms / dense.Value.Ms:F2} | {stats.Peak(MemoryCategory.Activation):N0} | {stats.PeakTotal:N0} | {(double)stats.PeakTotal / dense.Value.Peak:F3} |"));
            }
        }
        return 0;
    }
}
