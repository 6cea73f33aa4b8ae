using Frugal.Formats;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Frugal.Data;
using Frugal.Memory;
using Frugal.Nn;
using Frugal.Optim;
using Spectre.Console;

namespace Frugal.Models;

/// <summary><c>frugal profile</c>: trains a model a few steps in each weight format on the same batches under the
/// memory profiler and answers "what does training cost in each format?": one table (rows formats, columns the
/// categories' peaks, the peak of all at once, ×dense, ms/step), a JSON file, a stacked-area picture of one step per
/// run and a bar chart of the peaks per format.</summary>
internal static class ProfileCommand
{
    /// <summary><c>frugal profile</c>.</summary>
    public static readonly CliCommand Command = new("profile",
        "Trains the model a few steps in each weight format under the memory profiler and writes, per format, layer and category (parameters, gradients, optimizer state, activations, workspace, indices/scales), the bytes training holds: tables, profile.json and pictures.",
        [
            new("model", "NAME", "mlp, mlp-shared, cnn, or gpt (4 layers, width 256, 4 heads, context 128 on the text corpus, as train --model gpt; every attention and MLP layer in the format)   default mlp"),
            new("formats", "F1,F2,...", "weight formats to compare (dense, csr:D, bsr:D:B, lowrank:R|F, q8|q4|q2|q1[:G|:row][:latent|:masterfree], A+B; see train -h)   default dense,csr:0.1,bsr:0.1:16,lowrank:0.25,q8,q4,q2,q1 (every kind of format built)"),
            new("steps", "N", "training steps per format (Adam 1e-3); the last is the one pictured   default 3"),
            new("batch", "B", "examples (gpt: sequences) per step   default 128 (gpt 16)"),
            new("checkpoint", null, "also profile each format with every block a gradient-checkpoint segment"),
            new("precision", "P", "fp32, or bf16 / fp16 mixed precision (linear layers)   default fp32"),
            CliOption.OptimizerBits,
            new("update-in-backward", null, "each weight's update is applied during backward and its gradient freed"),
            new("out", "DIR", "folder for profile.json and the pictures   default profile"),
            CliOption.Data,
            CliOption.Corpus,
            CliOption.Device,
        ],
        Run);

    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    private static int Run(CliArgs args)
    {
        var modelName = args.Choice("model", "mlp", [.. Zoo.Names, "gpt"]);
        args.Refuse([modelName == "gpt" ? "data" : "corpus"], $"is not for --model {modelName}: images take --data, gpt takes --corpus");
        var steps = args.Int("steps", 3);
        var batch = args.Int("batch", modelName == "gpt" ? 16 : 128);
        var precision = TrainCommand.ParsePrecision(args.Choice("precision", "fp32", ["fp32", "bf16", "fp16"]));
        var optimizer = new OptimizerSettings(int.Parse(args.Choice("optimizer-bits", "32", ["32", "8"]), CultureInfo.InvariantCulture), args.Flag("update-in-backward"));
        var formats = args.String("formats", "dense,csr:0.1,bsr:0.1:16,lowrank:0.25,q8,q4,q2,q1").Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        if (formats.Length == 0)
            throw new UsageException("--formats is empty");
        var parsed = formats.Select(TrainCommand.ParseFormat).ToArray();
        var outDir = Path.GetFullPath(args.String("out", "profile"));
        CliFiles.CheckWritable(outDir);
        var checkpoints = args.Flag("checkpoint") ? new[] { false, true } : [false];
        var workload = modelName == "gpt" ? Workload.Text(GptCommand.LoadCorpus(args.Optional("corpus")), batch) : Workload.Images(modelName, args.Optional("data"), batch);
        var baseDevice = TrainCommand.ParseDevice(args.String("device", "cpu"));
        AnsiConsole.MarkupLine($"[bold]profile[/]: {modelName}, {steps} steps of batch {batch} per format on {Markup.Escape(workload.Source)}, device {baseDevice}{(precision is { } pr ? $", mixed precision {pr.Name()}" : "")}, Adam with {optimizer}");

        var runs = new List<ProfiledRun>();
        foreach (var format in parsed)
        {
            foreach (var checkpoint in checkpoints)
            {
                var run = Profile(workload, format, checkpoint, baseDevice, steps, precision, optimizer);
                runs.Add(run);
                AnsiConsole.MarkupLine(CultureInfo.InvariantCulture, "[[{0}/{1}]] {2}: {3:N0} bytes at once, {4:F1} ms/step",
                    runs.Count, parsed.Length * checkpoints.Length, Markup.Escape(run.Label), run.Report.PeakTotal, run.MsPerStep);
            }
        }
        var reference = runs.FirstOrDefault(r => r.Format == WeightFormat.Dense && !r.Checkpoint) ?? runs[0];
        AnsiConsole.Write(Table(runs, reference));
        AnsiConsole.MarkupLine($"category peaks are each category's own maximum; \"at once\" is the most bytes live together; ×{Markup.Escape(reference.Label)} compares that; \"kept B/param\" is Parameter + Gradient + OptimizerState + FormatMeta live when backward ends (updates in backward: no gradient), per parameter");
        foreach (var r in runs.Where(r => r.Report.DriverUsedBytes is not null))
        {
            AnsiConsole.MarkupLine(CultureInfo.InvariantCulture, "{0}: the driver reports {1:N0} bytes in use, the allocator reserves {2:N0} ({3:N0} of them cached free): {4}",
                Markup.Escape(r.Label), r.Report.DriverUsedBytes!.Value, r.Report.ReservedBytes, r.Report.CachedBytes, r.Report.DriverAgrees == true ? "consistent" : "[red]the driver reports fewer bytes than the allocator holds[/]");
        }

        WriteJson(Path.Combine(outDir, "profile.json"), modelName, steps, batch, optimizer, baseDevice, runs);
        foreach (var r in runs)
            ProfilePlots.StepTimeline(Path.Combine(outDir, $"step-{FileName(r.Label)}"), $"{modelName}, {r.Label}: memory by category over training step {steps}", r.Report.Window($"step {steps} "));
        ProfilePlots.PeaksPerFormat(Path.Combine(outDir, "peaks"), $"{modelName}: peak memory by category per weight format ({batch}-example steps, Adam)", [.. runs.Select(r => (r.Label, r.Report))]);
        AnsiConsole.MarkupLine($"wrote {Markup.Escape(Path.Combine(outDir, "profile.json"))}, peaks.png/.svg and step-*.png/.svg");
        return 0;
    }

    /// <summary>The optimizer of the profiled steps: Adam 1e-3 with 32- or 8-bit states, stepping after backward or
    /// in it.</summary>
    public sealed record OptimizerSettings(int StateBits = 32, bool InBackward = false)
    {
        /// <inheritdoc/>
        public override string ToString() => $"{StateBits}-bit states{(InBackward ? ", updates in backward" : "")}";
    }

    /// <summary>One profiled run; <paramref name="KeptBytes"/> is the Parameter, Gradient, OptimizerState and
    /// FormatMeta bytes live when the last step's backward has ended (every gradient the optimizer step will read, or
    /// none with updates in backward): what a step holds beyond its transients.</summary>
    public sealed record ProfiledRun(WeightFormat Format, bool Checkpoint, long Parameters, double MsPerStep, MemoryReport Report, string Layers, long KeptBytes)
    {
        public string Label => Checkpoint ? $"{Format} +ckpt" : Format.ToString();

        /// <summary>Kept bytes per parameter (weights and biases, logical values).</summary>
        public double KeptPerParameter => (double)KeptBytes / Parameters;
    }

    /// <summary>What is profiled: a model builder (format, checkpointing), its batches and its loss.</summary>
    public sealed record Workload(string Source, Func<Device, WeightFormat, bool, Module> Build, Func<Device, IEnumerable<(Tensor X, Tensor Y)>> Batches, Func<Tensor, Tensor, Tensor> Loss)
    {
        /// <summary>An image classifier of the Zoo on Fashion-MNIST (<paramref name="dataArg"/> as train's --data).</summary>
        public static Workload Images(string modelName, string? dataArg, int batch)
        {
            var data = dataArg == "embedded" ? EmbeddedData.FashionMnistSlice() : EmbeddedData.LoadFashionMnist(dataArg);
            return new Workload(data.Source, (d, f, ck) => Zoo.Create(modelName, d, f, checkpoint: ck),
                d => data.Train.Batches(batch, shuffle: true, seed: 1, device: d, dropLast: true), (logits, y) => F.CrossEntropy(logits, y));
        }

        /// <summary>The GPT of <c>train --model gpt</c>'s defaults on <paramref name="corpus"/>.</summary>
        public static Workload Text(TextCorpus corpus, int batch) => new(corpus.Source,
            (d, f, ck) => new Gpt(new GptConfig(TextCorpus.Vocab, 128, 4, 256, 4, f, f, Checkpoint: ck), d),
            d => TextBatches(corpus, batch, 128, d), Gpt.Loss);

        private static IEnumerable<(Tensor X, Tensor Y)> TextBatches(TextCorpus corpus, int batch, int context, Device device)
        {
            for (long i = 0; ; i++)
            {
                var (x, y) = TextCorpus.Batch(corpus.Train, batch, context, 1, i, device);
                try
                {
                    yield return (x, y);
                }
                finally
                {
                    x.Dispose();
                    y.Dispose();
                }
            }
        }
    }

    /// <summary>Builds the model in <paramref name="format"/> under a fresh profiler and trains <paramref name="steps"/>
    /// steps (marked "step i forward|backward|optimizer"); on the CPU each run has its own allocator.</summary>
    public static ProfiledRun Profile(Workload workload, WeightFormat format, bool checkpoint, Device baseDevice, int steps, DType? precision = null, OptimizerSettings? optimizer = null)
    {
        var settings = optimizer ?? new OptimizerSettings();
        var device = baseDevice.Kind == DeviceKind.Cpu ? Device.CreateCpu($"cpu ({format}{(checkpoint ? ", checkpointed" : "")})") : baseDevice;
        Init.ManualSeed(1);
        Rng.ManualSeed(1);
        using var profiler = MemoryProfiler.Start(device);
        profiler.Mark("model");
        Module model;
        try
        {
            model = workload.Build(device, format, checkpoint);
        }
        catch (ArgumentException e)
        {
            throw new UsageException($"--formats {format}: {e.Message}");
        }
        using var owned = model;
        var layers = string.Join(", ", model.Modules().Where(m => m.WeightFormatName is not null));
        var times = new List<double>();
        long kept = 0;
        using (var opt = new Adam(model.Parameters(), 1e-3, stateBits: settings.StateBits))
        {
            var step = 0;
            foreach (var (x, y) in workload.Batches(device))
            {
                var clock = Stopwatch.StartNew();
                using (var scope = TensorScope.Begin())
                {
                    profiler.Mark($"step {step + 1} forward");
                    Tensor logits;
                    using (precision is { } p ? Autocast.Enable(p) : default(Autocast.Scope?))
                        logits = model.Forward(x);
                    var loss = workload.Loss(logits, y);
                    profiler.Mark($"step {step + 1} backward");
                    opt.BackwardAndStep(loss, settings.InBackward, () =>
                    {
                        kept = Kept(device);
                        if (!settings.InBackward)
                            profiler.Mark($"step {step + 1} optimizer");
                    });
                    loss.Item();
                }
                times.Add(clock.Elapsed.TotalMilliseconds);
                if (++step == steps)
                    break;
            }
            profiler.Mark("done");
        }
        var report = profiler.Report(model.FormatsByPath());
        // The first step includes one-time costs (JIT, packing buffers): time the others when there are any.
        var timed = times.Count > 1 ? times.Skip(1).ToList() : times;
        return new ProfiledRun(format, checkpoint, model.ParameterCount(), timed.Average(), report, layers, kept);
    }

    /// <summary>Parameter + Gradient + OptimizerState + FormatMeta bytes live now.</summary>
    private static long Kept(Device device)
        => new[] { MemoryCategory.Parameter, MemoryCategory.Gradient, MemoryCategory.OptimizerState, MemoryCategory.FormatMeta }.Sum(device.Allocator.Current);

    private static Table Table(IReadOnlyList<ProfiledRun> runs, ProfiledRun reference)
    {
        var categories = MemoryCategories.All.Where(c => runs.Any(r => r.Report.Peak[c] > 0)).ToList();
        var table = new Table().Title($"peak bytes per category, {reference.Report.Device.Split(' ')[0]}");
        table.AddColumn("format");
        table.AddColumn(new TableColumn("parameters").RightAligned());
        foreach (var c in categories)
            table.AddColumn(new TableColumn(c.ToString()).RightAligned());
        table.AddColumn(new TableColumn("at once").RightAligned());
        table.AddColumn(new TableColumn($"×{reference.Label}").RightAligned());
        table.AddColumn(new TableColumn("kept B/param").RightAligned());
        table.AddColumn(new TableColumn("ms/step").RightAligned());
        foreach (var r in runs)
        {
            var cells = new List<string> { Markup.Escape(r.Label), r.Parameters.ToString("N0", CultureInfo.InvariantCulture) };
            cells.AddRange(categories.Select(c => r.Report.Peak[c].ToString("N0", CultureInfo.InvariantCulture)));
            cells.Add(r.Report.PeakTotal.ToString("N0", CultureInfo.InvariantCulture));
            cells.Add(((double)r.Report.PeakTotal / reference.Report.PeakTotal).ToString("F3", CultureInfo.InvariantCulture));
            cells.Add(r.KeptPerParameter.ToString("F3", CultureInfo.InvariantCulture));
            cells.Add(r.MsPerStep.ToString("F1", CultureInfo.InvariantCulture));
            table.AddRow([.. cells]);
        }
        return table;
    }

    private static string FileName(string label) => new([.. label.Select(ch => char.IsLetterOrDigit(ch) || ch == '.' ? ch : '-')]);

    /// <summary>The JSON of the README's schema: the command's settings and, per run, the report without the full
    /// timeline (only the pictured step's points).</summary>
    private static void WriteJson(string path, string model, int steps, int batch, OptimizerSettings optimizer, Device device, IReadOnlyList<ProfiledRun> runs)
    {
        static Dictionary<string, long> ByCategory(IReadOnlyDictionary<MemoryCategory, long> bytes) => bytes.ToDictionary(kv => kv.Key.ToString(), kv => kv.Value);
        var document = new
        {
            schema = "frugal-profile/1",
            model,
            steps,
            batch,
            optimizerBits = optimizer.StateBits,
            updateInBackward = optimizer.InBackward,
            device = device.Name,
            runs = runs.Select(r => new
            {
                format = r.Format.ToString(),
                checkpoint = r.Checkpoint,
                parameters = r.Parameters,
                layers = r.Layers,
                msPerStep = r.MsPerStep,
                keptBytes = r.KeptBytes,
                peak = ByCategory(r.Report.Peak),
                peakTotal = r.Report.PeakTotal,
                current = ByCategory(r.Report.Current),
                cachedBytes = r.Report.CachedBytes,
                reservedBytes = r.Report.ReservedBytes,
                driverUsedBytes = r.Report.DriverUsedBytes,
                driverAgrees = r.Report.DriverAgrees,
                liveAtPeak = r.Report.LiveAtPeak.Take(20).Select(o => new { owner = o.Owner, category = o.Category.ToString(), bytes = o.Bytes }),
                perModule = r.Report.PerModule.Select(g => new { module = g.Name, bytes = ByCategory(g.Bytes) }),
                perFormat = r.Report.PerFormat.Select(g => new { format = g.Name, bytes = ByCategory(g.Bytes) }),
                step = r.Report.Window($"step {steps} ").Select(t => new { ms = t.Ms, phase = t.Phase.Split(' ')[^1], bytes = t.Bytes }),
            }),
        };
        var temp = path + ".tmp";
        File.WriteAllText(temp, JsonSerializer.Serialize(document, Indented));
        File.Move(temp, path, overwrite: true);
    }
}
