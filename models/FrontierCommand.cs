using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Frugal.Nn;
using Spectre.Console;

namespace Frugal.Models;

/// <summary><c>frugal frontier</c>: trains a family of models in several recipes (format + training options) and
/// widths on one data budget and seeds, measures each run's whole training peak and its accuracy or validation loss,
/// and answers "within the training memory of a dense model of N parameters, how large a compressed model trains as
/// well?": table, JSON, CSV, a picture with the Pareto frontier, and the headline.</summary>
internal static class FrontierCommand
{
    /// <summary><c>frugal frontier</c>.</summary>
    public static readonly CliCommand Command = new("frontier",
        "Trains a family of models in several recipes and widths on one data budget and seeds, measures each run's whole training peak and its accuracy (gpt: validation loss), and answers: within the training memory of a dense model of width W, how large a compressed model trains as well? Table, frontier.json, .csv, .png, .svg and the headline.",
        [
            new("model", "NAME", "mlp, cnn or gpt   default mlp"),
            new("formats", "R1,R2,...", $"the recipes: FORMAT[/8bit][/uib][/ckpt][/bf16][/rigl], a weight format (see train -h) and the options that change what training holds: 8-bit Adam moments, updates in backward, gradient checkpointing, bf16 autocast, RigL (csr/bsr with F32 values). Dense with fp32 Adam is always trained at every width: the reference. A recipe other than dense is first run for 2 steps: if that peak is over the budget it is not trained   default {DefaultRecipes}"),
            new("widths", "W1,W2,...", "mlp: hidden units (784-W-W-10); cnn: channels W, 2W and 8W hidden units; gpt: model width (W/32 heads)   default mlp 64,128,256,512,1024,2048; cnn 8,16,32,64; gpt 32,64,128,256"),
            new("budget-of", "dense:W", "the budget is the whole-run peak of the dense model of width W   default dense:256 (mlp), dense:16 (cnn), dense:64 (gpt)"),
            new("budget", "BYTES", "the budget in bytes (KiB/MiB/GiB suffixes), instead of --budget-of"),
            new("epochs", "N", "mlp, cnn: epochs of Fashion-MNIST (Adam, cosine)   default 1"),
            new("steps-per-epoch", "N", "mlp, cnn: stop each epoch after N steps   default: the whole epoch"),
            CliOption.Data,
            new("tokens", "N", "gpt: training tokens (steps = tokens / (batch · context), AdamW as train --model gpt)   default 307200 (300 steps of batch 16, context 64)"),
            new("steps", "N", "gpt: optimizer steps of each run, instead of --tokens"),
            new("layers", "L", "gpt: transformer blocks   default 2"),
            new("context", "C", "gpt: bytes of context   default 64"),
            CliOption.Corpus,
            new("seeds", "K", "seeds per point (error bars: the standard deviation over seeds)   default 1"),
            new("batch", "B", "examples (gpt: sequences) per step   default 128 (gpt 16)"),
            new("lr", "X", "peak learning rate   default 0.001 (cnn 0.003)"),
            new("factor", "F", "the headline asks for at least F times the reference's parameters   default 6"),
            new("out", "DIR", "folder for points.jsonl (finished points: a re-run skips them), frontier.json, .csv, .png, .svg   default frontier"),
            CliOption.Device,
        ],
        Run);

    private const string DefaultRecipes = "dense/8bit,dense/8bit/uib,dense/8bit/uib/ckpt,dense/bf16,q8/8bit/uib,q4/8bit/uib,csr:0.1,csr:0.1/8bit,csr:0.1/rigl,csr:0.1/8bit/rigl,csr:0.1+q4/8bit/uib,lowrank:0.25+q8/8bit/uib,lowrank:0.125+q8/8bit/uib,lowrank:0.125+q8/8bit/uib/bf16";

    private const int ProbeSteps = 2;

    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    private static int Run(CliArgs args)
    {
        var modelName = args.Choice("model", "mlp", ["mlp", "cnn", "gpt"]);
        var seeds = args.Int("seeds", 1);
        var factor = args.Double("factor", 6);
        var widths = args.Widths("widths", modelName switch { "mlp" => "64,128,256,512,1024,2048", "cnn" => "8,16,32,64", _ => "32,64,128,256" }).ToList();
        var recipes = ParseRecipes(args.String("formats", DefaultRecipes));
        if (args.Optional("budget") is not null && args.Optional("budget-of") is not null)
            throw new UsageException("give --budget or --budget-of, not both");
        var budgetBytes = args.Optional("budget") is { } b ? ParseBytes(b) : (long?)null;
        var referenceWidth = budgetBytes is null ? ParseBudgetOf(args.String("budget-of", modelName switch { "mlp" => "dense:256", "cnn" => "dense:16", _ => "dense:64" })) : (int?)null;
        if (referenceWidth is { } rw && !widths.Contains(rw))
            widths = [.. widths.Append(rw).Order()];
        var task = CreateTask(modelName, args);
        var outDir = Path.GetFullPath(args.String("out", "frontier"));
        CliFiles.CheckWritable(outDir);
        var baseDevice = TrainCommand.ParseDevice(args.String("device", "cpu"));
        AnsiConsole.MarkupLine($"[bold]frontier[/]: {modelName} on {Markup.Escape(task.Source)}, {Markup.Escape(task.Settings)}, {seeds} seed(s), device {baseDevice}");
        AnsiConsole.MarkupLine($"[bold]recipes[/]: {Markup.Escape(string.Join(", ", recipes))}; widths {string.Join(", ", widths)}");

        var log = new PointLog(Path.Combine(outDir, "points.jsonl"));
        if (log.Count > 0)
            AnsiConsole.MarkupLine($"[bold]resuming[/]: {log.Count} finished point(s) in {Markup.Escape(log.Path)}");
        var total = recipes.Count * widths.Count * seeds;
        var done = 0;

        // The dense curve first, the reference width leading: its peak is the budget the other recipes must fit.
        var denseWidths = referenceWidth is { } r0 ? widths.OrderBy(w => w == r0 ? 0 : 1).ThenBy(w => w).ToList() : widths;
        foreach (var width in denseWidths)
            TrainSeeds(Recipe.Dense, width);
        var budget = budgetBytes ?? Rows(Recipe.Dense).SingleOrDefault(row => row.Width == referenceWidth)?.PeakBytes
            ?? throw new UsageException($"--budget-of dense:{referenceWidth}: the dense model of that width could not be trained");
        AnsiConsole.MarkupLine(CultureInfo.InvariantCulture, "[bold]budget[/]: {0:N0} bytes ({1}){2}", budget, Markup.Escape(Memory.MemoryStats.FormatBytes(budget)),
            referenceWidth is { } r1 ? $", the whole-run peak of dense width {r1}" : "");
        foreach (var recipe in recipes.Where(r => r != Recipe.Dense))
        {
            foreach (var width in widths)
            {
                var probe = log.Find(Key(task, baseDevice, recipe, width, seed: null)) ?? Measure(recipe, width, 1, ProbeSteps, null);
                if (probe.Error is not null)
                {
                    done += seeds;
                    AnsiConsole.MarkupLine(CultureInfo.InvariantCulture, "[red][[{0}/{1}]] {2} width {3}: {4}[/]", done, total, Markup.Escape(recipe.ToString()), width, Markup.Escape(probe.Error));
                    continue;
                }
                if (probe.PeakBytes > budget)
                {
                    done += seeds;
                    AnsiConsole.MarkupLine(CultureInfo.InvariantCulture, "[grey][[{0}/{1}]] {2} width {3}: over budget ({4:N0} bytes after {5} steps), not trained[/]",
                        done, total, Markup.Escape(recipe.ToString()), width, probe.PeakBytes, ProbeSteps);
                    continue;
                }
                TrainSeeds(recipe, width);
            }
        }

        var rows = recipes.SelectMany(Rows).ToList();
        var frontier = FrontierRow.Pareto(rows, task.HigherIsBetter);
        var reference = referenceWidth is { } r2 ? rows.Single(row => row.Recipe == Recipe.Dense.ToString() && row.Width == r2)
            : rows.Where(row => row.Recipe == Recipe.Dense.ToString() && row.PeakBytes <= budget).MaxBy(row => row.Width);
        var headline = reference is null ? null : FrontierHeadline.Of(reference, rows, budget, factor, task);
        var skipped = recipes.SelectMany(recipe => widths.Select(w => (recipe, w, probe: log.Find(Key(task, baseDevice, recipe, w, seed: null)))))
            .Where(p => p.probe is { Error: null } && p.probe.PeakBytes > budget && !rows.Any(row => row.Recipe == p.recipe.ToString() && row.Width == p.w))
            .Select(p => (Recipe: p.recipe.ToString(), Width: p.w, p.probe!.PeakBytes)).ToList();
        // Only this sweep's points: the folder may also hold those of other settings or devices.
        var invalid = recipes.SelectMany(recipe => widths.SelectMany(w => new int?[] { null }.Concat(Enumerable.Range(1, seeds).Select(s => (int?)s))
                .Select(seed => log.Find(Key(task, baseDevice, recipe, w, seed)))))
            .Where(p => p is { Error: not null }).Select(p => (p!.Recipe, p.Width, Error: p.Error!)).Distinct().ToList();

        AnsiConsole.Write(Table(task, rows, frontier, budget, skipped, invalid));
        var title = $"{modelName} on {task.Source}: {task.Metric} against training memory";
        FrontierPlot.Draw(Path.Combine(outDir, "frontier"), title, task.Metric, rows, frontier, budget, task.HigherIsBetter);
        WriteCsv(Path.Combine(outDir, "frontier.csv"), rows, frontier, budget);
        WriteJson(Path.Combine(outDir, "frontier.json"), task, baseDevice, seeds, budget, referenceWidth, rows, frontier, skipped, invalid, headline);
        AnsiConsole.MarkupLine(headline is null
            ? string.Create(CultureInfo.InvariantCulture, $"[bold]headline[/]: no dense model fits the {budget:N0}-byte budget")
            : $"[bold]headline[/] (≥ {factor.ToString("0.##", CultureInfo.InvariantCulture)}N logical parameters within the budget, {task.Metric} at least as good): {Markup.Escape(headline.Text)}");
        AnsiConsole.MarkupLine($"wrote {Markup.Escape(Path.Combine(outDir, "frontier.{json,csv,png,svg}"))} and {Markup.Escape(log.Path)}");
        return 0;

        void TrainSeeds(Recipe recipe, int width)
        {
            for (var seed = 1; seed <= seeds; seed++)
            {
                done++;
                var key = Key(task, baseDevice, recipe, width, seed);
                var point = log.Find(key);
                var resumed = point is not null;
                point ??= Measure(recipe, width, seed, 0, key);
                var metric = point.Error ?? string.Create(CultureInfo.InvariantCulture, $"{task.Metric} {point.Metric:F4}, peak {point.PeakBytes:N0} bytes, {point.Seconds:F1} s");
                AnsiConsole.MarkupLine(CultureInfo.InvariantCulture, "[[{0}/{1}]] {2} width {3} seed {4}: {5}{6}", done, total, Markup.Escape(recipe.ToString()), width, seed, Markup.Escape(metric), resumed ? " (finished before)" : "");
                if (point.Error is not null)
                    return;
            }
        }

        IEnumerable<FrontierRow> Rows(Recipe recipe) => widths.Select(w => Row(recipe, w)).OfType<FrontierRow>();

        FrontierRow? Row(Recipe recipe, int width)
        {
            var points = Enumerable.Range(1, seeds).Select(s => log.Find(Key(task, baseDevice, recipe, width, s))).Where(p => p is { Error: null }).Select(p => p!).ToList();
            if (points.Count == 0)
                return null;
            var mean = points.Average(p => p.Metric!.Value);
            var std = points.Count > 1 ? Math.Sqrt(points.Sum(p => (p.Metric!.Value - mean) * (p.Metric!.Value - mean)) / (points.Count - 1)) : 0;
            return new FrontierRow(recipe.ToString(), width, points[0].Logical, points[0].Stored, points.Max(p => p.PeakBytes), mean, std, points.Count);
        }

        // One run on its own allocator counters (a fresh CPU device; on CUDA the device's peak reset), so its peak is
        // the whole run: model, optimizer state, batches, activations and evaluation.
        FrontierPoint Measure(Recipe recipe, int width, int seed, int probeSteps, string? key)
        {
            var device = baseDevice.Kind == DeviceKind.Cpu ? Device.CreateCpu($"cpu (frontier {recipe} width {width} seed {seed})") : baseDevice;
            device.Allocator.ResetPeak();
            Init.ManualSeed((ulong)seed);
            Rng.ManualSeed((ulong)seed);
            var clock = Stopwatch.StartNew();
            FrontierPoint point;
            try
            {
                using var model = task.Build(device, recipe, width);
                var metric = task.Train(model, device, recipe, seed, probeSteps);
                point = new FrontierPoint(key ?? Key(task, baseDevice, recipe, width, null), recipe.ToString(), width, probeSteps > 0 ? null : seed,
                    model.LogicalParameterCount(), model.ParameterCount(), device.Allocator.Stats().PeakTotal, probeSteps > 0 ? null : metric, null, clock.Elapsed.TotalSeconds);
            }
            catch (Exception e) when (e is ArgumentException or NotSupportedException)
            {
                point = new FrontierPoint(key ?? Key(task, baseDevice, recipe, width, null), recipe.ToString(), width, probeSteps > 0 ? null : seed, 0, 0, 0, null, e.Message, clock.Elapsed.TotalSeconds);
            }
            if (device != baseDevice)
                device.Allocator.EmptyCache();
            log.Add(point);
            return point;
        }
    }

    private static FrontierTask CreateTask(string modelName, CliArgs args)
    {
        var batch = args.Int("batch", modelName == "gpt" ? 16 : 128);
        if (modelName == "gpt")
        {
            args.Refuse(["epochs", "steps-per-epoch", "data"], "is for mlp and cnn; gpt takes --tokens (or --steps) and --corpus");
            if (args.Optional("tokens") is not null && args.Optional("steps") is not null)
                throw new UsageException("give --tokens or --steps, not both");
            var context = args.Int("context", 64);
            var layers = args.Int("layers", 2);
            var steps = args.Optional("steps") is not null ? args.Int("steps", 300) : (int)Math.Ceiling(args.Int("tokens", 16 * 64 * 300) / (double)(batch * context));
            var corpus = GptCommand.LoadCorpus(args.Optional("corpus"));
            if (corpus.Validation.Length < context + 1 || corpus.Train.Length < context + 1)
                throw new UsageException($"--context {context}: the corpus {corpus.Source} is too short ({corpus.Train.Length} training and {corpus.Validation.Length} validation bytes)");
            return new TextFrontier(corpus, layers, context, batch, steps, args.Double("lr", 1e-3));
        }
        args.Refuse(["tokens", "steps", "corpus", "layers", "context"], "is for gpt; mlp and cnn take --epochs, --steps-per-epoch and --data");
        var dataArg = args.Optional("data");
        var data = dataArg == "embedded" ? EmbeddedData.FashionMnistSlice() : EmbeddedData.LoadFashionMnist(dataArg);
        if (dataArg is null && data.Source.StartsWith("embedded", StringComparison.Ordinal))
            AnsiConsole.MarkupLine("[yellow]Fashion-MNIST is not installed: using the embedded slice (apt-get install dataset-fashion-mnist for the full set).[/]");
        return new ImageFrontier(modelName, data, args.Int("epochs", 1), batch, args.Double("lr", modelName == "cnn" ? 3e-3 : 1e-3), args.Int("steps-per-epoch", 0, min: 0));
    }

    /// <summary>What identifies a finished point: the task's settings, the device kind, the recipe, the width and the
    /// seed (none: the recipe's 2-step probe).</summary>
    private static string Key(FrontierTask task, Device device, Recipe recipe, int width, int? seed)
        => string.Create(CultureInfo.InvariantCulture, $"{task.Settings}|{device.Kind}|{recipe}|width={width}|{(seed is { } s ? $"seed={s}" : $"probe={ProbeSteps}")}");

    private static List<Recipe> ParseRecipes(string text)
    {
        var recipes = new List<Recipe> { Recipe.Dense };
        foreach (var part in text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            Recipe recipe;
            try
            {
                recipe = Recipe.Parse(part);
            }
            catch (FormatException e)
            {
                throw new UsageException("--formats: " + e.Message);
            }
            if (recipe != Recipe.Dense && recipes.Contains(recipe))
                throw new UsageException($"--formats: {recipe} is given twice");
            if (recipe != Recipe.Dense)
                recipes.Add(recipe);
        }
        return recipes;
    }

    /// <summary>A byte count: digits with an optional B, KiB, MiB, GiB (or KB, MB, GB: powers of 1000) suffix.</summary>
    internal static long ParseBytes(string text)
    {
        (string Suffix, long Scale)[] units = [("GiB", 1L << 30), ("MiB", 1L << 20), ("KiB", 1L << 10), ("GB", 1_000_000_000), ("MB", 1_000_000), ("KB", 1000), ("B", 1)];
        var t = text.Trim();
        var (suffix, scale) = units.FirstOrDefault(u => t.EndsWith(u.Suffix, StringComparison.OrdinalIgnoreCase), ("", 1));
        var number = t[..^suffix.Length].Trim();
        if (!double.TryParse(number, NumberStyles.Float, CultureInfo.InvariantCulture, out var v) || !(v > 0) || v * scale > long.MaxValue)
            throw new UsageException($"--budget must be a positive byte count such as 3000000, 2.5MiB or 512KiB, got '{text}'");
        return (long)Math.Round(v * scale);
    }

    private static int ParseBudgetOf(string text)
    {
        if (!text.StartsWith("dense:", StringComparison.Ordinal) || !int.TryParse(text.AsSpan(6), NumberStyles.None, CultureInfo.InvariantCulture, out var w) || w < 1)
            throw new UsageException($"--budget-of must be dense:WIDTH (the dense fp32-Adam model whose whole-run peak is the budget), got '{text}'");
        return w;
    }

    private static Table Table(FrontierTask task, IReadOnlyList<FrontierRow> rows, IReadOnlyList<FrontierRow> frontier, long budget,
        IReadOnlyList<(string Recipe, int Width, long PeakBytes)> skipped, IReadOnlyList<(string Recipe, int Width, string Error)> invalid)
    {
        var table = new Table().Title(string.Create(CultureInfo.InvariantCulture, $"{task.Metric} against the whole run's peak training memory, budget {budget:N0} bytes"));
        table.AddColumn("recipe");
        table.AddColumn(new TableColumn("width").RightAligned());
        table.AddColumn(new TableColumn("logical params").RightAligned());
        table.AddColumn(new TableColumn("stored").RightAligned());
        table.AddColumn(new TableColumn("peak bytes").RightAligned());
        table.AddColumn(new TableColumn("×budget").RightAligned());
        table.AddColumn(new TableColumn(task.Metric).RightAligned());
        table.AddColumn("frontier");
        foreach (var r in rows)
        {
            table.AddRow(Markup.Escape(r.Recipe), r.Width.ToString(CultureInfo.InvariantCulture), r.Logical.ToString("N0", CultureInfo.InvariantCulture),
                r.Stored.ToString("N0", CultureInfo.InvariantCulture), r.PeakBytes.ToString("N0", CultureInfo.InvariantCulture),
                ((double)r.PeakBytes / budget).ToString("F2", CultureInfo.InvariantCulture), Metric(r), frontier.Contains(r) ? "★" : "");
        }
        foreach (var (recipe, width, peak) in skipped)
            table.AddRow(Markup.Escape(recipe), width.ToString(CultureInfo.InvariantCulture), "", "", peak.ToString("N0", CultureInfo.InvariantCulture),
                ((double)peak / budget).ToString("F2", CultureInfo.InvariantCulture), $"[grey]over budget after {ProbeSteps} steps[/]", "");
        foreach (var (recipe, width, error) in invalid)
            table.AddRow(Markup.Escape(recipe), width.ToString(CultureInfo.InvariantCulture), "", "", "", "", $"[red]{Markup.Escape(error)}[/]", "");
        return table;
    }

    private static string Metric(FrontierRow r)
        => string.Create(CultureInfo.InvariantCulture, $"{r.Mean:F4}") + (r.Seeds > 1 ? string.Create(CultureInfo.InvariantCulture, $" ± {r.Std:F4} ({r.Seeds})") : "");

    private static void WriteCsv(string path, IReadOnlyList<FrontierRow> rows, IReadOnlyList<FrontierRow> frontier, long budget)
    {
        var csv = new StringBuilder("recipe,width,logical_parameters,stored_values,peak_bytes,peak_over_budget,mean,std,seeds,pareto\n");
        foreach (var r in rows)
            csv.AppendLine(CultureInfo.InvariantCulture, $"{r.Recipe},{r.Width},{r.Logical},{r.Stored},{r.PeakBytes},{(double)r.PeakBytes / budget:F4},{r.Mean:R},{r.Std:R},{r.Seeds},{(frontier.Contains(r) ? 1 : 0)}");
        WriteAtomically(path, csv.ToString());
    }

    private static void WriteJson(string path, FrontierTask task, Device device, int seeds, long budget, int? referenceWidth, IReadOnlyList<FrontierRow> rows, IReadOnlyList<FrontierRow> frontier,
        IReadOnlyList<(string Recipe, int Width, long PeakBytes)> skipped, IReadOnlyList<(string Recipe, int Width, string Error)> invalid, FrontierHeadline? headline)
    {
        var document = new
        {
            schema = "frugal-frontier/1",
            model = task.Model,
            source = task.Source,
            settings = task.Settings,
            metric = task.Metric,
            higherIsBetter = task.HigherIsBetter,
            device = device.Name,
            seeds,
            budgetBytes = budget,
            budgetOf = referenceWidth is { } w ? $"dense:{w}" : null,
            rows = rows.Select(r => new { recipe = r.Recipe, width = r.Width, logicalParameters = r.Logical, storedValues = r.Stored, peakBytes = r.PeakBytes, mean = r.Mean, std = r.Std, seeds = r.Seeds, pareto = frontier.Contains(r), withinBudget = r.PeakBytes <= budget }),
            overBudget = skipped.Select(s => new { recipe = s.Recipe, width = s.Width, probePeakBytes = s.PeakBytes, probeSteps = ProbeSteps }),
            invalid = invalid.Select(i => new { recipe = i.Recipe, width = i.Width, error = i.Error }),
            headline = headline is null ? null : new { holds = headline.Holds, factor = headline.Factor, text = headline.Text, reference = headline.Reference, best = headline.Best },
        };
        WriteAtomically(path, JsonSerializer.Serialize(document, Indented));
    }

    private static void WriteAtomically(string path, string text)
    {
        var temp = path + ".tmp";
        File.WriteAllText(temp, text);
        File.Move(temp, path, overwrite: true);
    }

    /// <summary>One finished run: a seed's training (metric set) or a recipe's probe (seed and metric null), or the
    /// reason it could not be built or trained.</summary>
    private sealed record FrontierPoint(string Key, string Recipe, int Width, int? Seed, long Logical, long Stored, long PeakBytes, double? Metric, string? Error, double Seconds);

    /// <summary>The finished points of a frontier folder, one JSON line each, appended as they finish: a run cut off
    /// loses only the point in progress (an unreadable line, such as a half-written last one, is dropped on
    /// loading).</summary>
    private sealed class PointLog
    {
        private readonly Dictionary<string, FrontierPoint> _points = new(StringComparer.Ordinal);

        public PointLog(string path)
        {
            Path = path;
            if (!File.Exists(path))
                return;
            var text = File.ReadAllText(path);
            var dropped = 0;
            foreach (var line in text.Split('\n', StringSplitOptions.RemoveEmptyEntries))
            {
                FrontierPoint? point = null;
                try
                {
                    point = JsonSerializer.Deserialize<FrontierPoint>(line);
                }
                catch (JsonException)
                {
                }
                if (point?.Key is null)
                    dropped++;
                else
                    _points[point.Key] = point;
            }
            if (dropped > 0 || (text.Length > 0 && !text.EndsWith('\n')))
            {
                AnsiConsole.MarkupLine($"[yellow]{Markup.Escape(path)}: dropped {dropped} unreadable line(s) (a run cut off while writing)[/]");
                WriteAtomically(path, string.Concat(_points.Values.Select(p => JsonSerializer.Serialize(p) + "\n")));
            }
        }

        public string Path { get; }

        public int Count => _points.Count;

        public FrontierPoint? Find(string key) => _points.GetValueOrDefault(key);

        public void Add(FrontierPoint point)
        {
            _points[point.Key] = point;
            File.AppendAllText(Path, JsonSerializer.Serialize(point) + "\n");
        }
    }
}
