using System.Diagnostics;
using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json;

namespace Frugal.Peers.TorchSharp;

/// <summary>
/// Side-by-side CPU training throughput of Frugal and TorchSharp-cpu on the same three models (MLP, CNN, GPT), the
/// same batches and the same optimizers. Each run is a child process of this executable (<c>--worker ENGINE
/// MODEL</c>), so libtorch's OpenMP threads (which spin-wait after each parallel region) never compete with Frugal's
/// worker threads; repeat r runs Frugal, then TorchSharp, and the table reports the medians over the repeats.
/// </summary>
internal static class Program
{
    private const string ResultPrefix = "RESULT ";

    /// <summary>A run's spread above which the report warns that the machine was busy.</summary>
    private const double UnsteadySpread = 1.5;

    private static int Main(string[] args)
    {
        try
        {
            if (args.Length > 0 && args[0] == "--worker")
                return Worker(args);
            return args.Length > 0 && args[0] == "--check" ? Check(args[1..]) : Compare(args);
        }
        catch (ArgumentException e)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            Console.Error.WriteLine("usage: dotnet run -c Release --project bench/peers/torchsharp -- [--check] [--models mlp,cnn,gpt] [--repeats 3] [--threads 2] [--out FILE.md] [--warmup-seconds 3] [--max-seconds 20] [--mlp-steps N] [--cnn-steps N] [--gpt-steps N]");
            return 2;
        }
    }

    /// <summary><c>--check [--models ...]</c>: the equivalence check of <see cref="CheckWorker"/>, in this process.</summary>
    private static int Check(string[] args)
    {
        var options = Options.Parse(args);
        foreach (var line in ElfVersionPatch.PatchApplication())
            Console.WriteLine($"libLibTorchSharp: {line}");
        return CheckWorker.Run(options.Models);
    }

    /// <summary>The parent: patches the native library, runs the workers, prints and writes the table.</summary>
    private static int Compare(string[] args)
    {
        var options = Options.Parse(args);
        foreach (var line in ElfVersionPatch.PatchApplication())
            Console.WriteLine($"libLibTorchSharp: {line}");
        Console.WriteLine($"{Environment.ProcessorCount} cores; {options.Threads} threads per engine; {options.Repeats} repeats; warm-up ≥ {options.WarmupSeconds} s; timed steps {string.Join(", ", options.Models.Select(m => $"{m.Name} {options.StepsFor(m)}"))} (at most {options.MaxSeconds} s)");
        var results = new Dictionary<(string Model, string Engine), List<RunResult>>();
        foreach (var spec in options.Models)
        {
            for (var r = 0; r < options.Repeats; r++)
            {
                foreach (var engine in new[] { "frugal", "torchsharp" })
                {
                    var result = RunWorker(engine, spec, options);
                    if (!results.TryGetValue((spec.Name, engine), out var list))
                        results[(spec.Name, engine)] = list = [];
                    list.Add(result);
                    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"  {spec.Name} repeat {r + 1}/{options.Repeats} {engine,-10} {result.Rate,10:N0} {spec.Unit} ({result.TimedSteps} steps in {result.Seconds:F2} s after {result.WarmupSteps} warm-up steps; spread {result.Spread:F2}; last loss {result.FinalLoss:F3})"));
                }
            }
        }
        var report = Report(options, results);
        Console.WriteLine();
        Console.Write(report);
        if (options.Out is not null)
        {
            File.WriteAllText(options.Out, report);
            Console.WriteLine($"written to {options.Out}");
        }
        return 0;
    }

    /// <summary>The markdown report: settings, versions, the table of medians and repeat values.</summary>
    private static string Report(Options options, Dictionary<(string Model, string Engine), List<RunResult>> results)
    {
        var text = new StringBuilder();
        void Line(FormattableString s) => text.Append(s.ToString(CultureInfo.InvariantCulture)).Append('\n');
        Line($"# Frugal vs TorchSharp-cpu, CPU training throughput");
        Line($"");
        Line($"{DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC; {Environment.ProcessorCount} cores; {options.Threads} threads per engine; medians of {options.Repeats} interleaved repeats (each run its own process; warm-up ≥ {options.WarmupSeconds} s).");
        foreach (var engine in new[] { "frugal", "torchsharp" })
        {
            var r = results.Values.SelectMany(v => v).First(x => x.Engine == engine);
            Line($"- {r.Info}");
        }
        foreach (var source in results.Values.SelectMany(v => v).Select(r => r.Data).Distinct())
            Line($"- data: {source}");
        Line($"");
        Line($"| model | unit | parameters | Frugal | TorchSharp | Frugal / TorchSharp | Frugal repeats | TorchSharp repeats | timed steps | worst spread F / T | last loss F / T |");
        Line($"|---|---|---:|---:|---:|---:|---|---|---:|---|---|");
        foreach (var spec in options.Models)
        {
            var (f, t) = (results[(spec.Name, "frugal")], results[(spec.Name, "torchsharp")]);
            var (mf, mt) = (Median(f.Select(x => x.Rate)), Median(t.Select(x => x.Rate)));
            var parameters = f[0].Parameters == t[0].Parameters ? $"{f[0].Parameters:N0}" : $"{f[0].Parameters:N0} vs {t[0].Parameters:N0} (differ!)";
            static string Steps(List<RunResult> f, List<RunResult> t)
            {
                var all = f.Concat(t).Select(x => x.TimedSteps).Distinct().Order().ToList();
                return all.Count == 1 ? $"{all[0]}" : $"{all[0]}–{all[^1]} (time cap)";
            }
            static string Values(List<RunResult> runs) => string.Join(", ", runs.Select(x => x.Rate.ToString("N0", CultureInfo.InvariantCulture)));
            Line($"| {spec.Name} | {spec.Unit} | {parameters} | {mf:N0} | {mt:N0} | {mf / mt:F2} | {Values(f)} | {Values(t)} | {Steps(f, t)} | {f.Max(x => x.Spread):F2} / {t.Max(x => x.Spread):F2} | {f[^1].FinalLoss:F3} / {t[^1].FinalLoss:F3} |");
        }
        Line($"");
        Line($"Throughput counts the timed steps only (forward, loss, backward, optimizer step, gradient reset) on pre-converted batches. Spread: the slowest over the fastest of a run's {Timing.Chunks} consecutive chunks of timed steps, per step; near 1 on a quiet machine.");
        if (results.Values.SelectMany(v => v).Any(x => x.Spread > UnsteadySpread))
            Line($"**Some runs were unsteady (spread > {UnsteadySpread}): other work probably shared the cores; libtorch's OpenMP barriers suffer most from that. Rerun on a quiet machine.**");
        return text.ToString();
    }

    private static double Median(IEnumerable<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
    }

    /// <summary>Runs one measurement in a child process of this executable and returns what it printed.</summary>
    private static RunResult RunWorker(string engine, ModelSpec spec, Options options)
    {
        var exe = Environment.ProcessPath ?? throw new InvalidOperationException("no process path to start workers from");
        var start = new ProcessStartInfo { FileName = exe, UseShellExecute = false, RedirectStandardOutput = true };
        if (Path.GetFileNameWithoutExtension(exe) == "dotnet")
            start.ArgumentList.Add(typeof(Program).Assembly.Location);   // started as `dotnet X.dll`
        foreach (var a in new[] { "--worker", engine, spec.Name, "--threads", $"{options.Threads}", "--steps", $"{options.StepsFor(spec)}",
            "--warmup-seconds", options.WarmupSeconds.ToString(CultureInfo.InvariantCulture), "--max-seconds", options.MaxSeconds.ToString(CultureInfo.InvariantCulture) })
        {
            start.ArgumentList.Add(a);
        }
        // FRUGAL_NUM_THREADS is Frugal's thread count (its CPU backend's CpuThreads); the OpenMP variables only back
        // up torch.set_num_threads in the TorchSharp worker.
        start.Environment["FRUGAL_NUM_THREADS"] = $"{options.Threads}";
        start.Environment["OMP_NUM_THREADS"] = $"{options.Threads}";
        start.Environment["MKL_NUM_THREADS"] = $"{options.Threads}";
        using var process = Process.Start(start) ?? throw new InvalidOperationException($"could not start {exe}");
        RunResult? result = null;
        while (process.StandardOutput.ReadLine() is { } line)
        {
            if (line.StartsWith(ResultPrefix, StringComparison.Ordinal))
                result = JsonSerializer.Deserialize<RunResult>(line[ResultPrefix.Length..]);
            else
                Console.WriteLine($"  [{engine} {spec.Name}] {line}");
        }
        process.WaitForExit();
        if (process.ExitCode != 0 || result is null)
            throw new InvalidOperationException($"the {engine} {spec.Name} worker failed (exit code {process.ExitCode}); its messages are above");
        return result;
    }

    /// <summary>A child: <c>--worker ENGINE MODEL --threads N --steps N --warmup-seconds S</c>; prints one RESULT line
    /// of JSON.</summary>
    private static int Worker(string[] args)
    {
        if (args.Length < 3)
            throw new ArgumentException("--worker needs an engine (frugal or torchsharp) and a model");
        var (engine, spec) = (args[1], ModelSpec.Named(args[2]));
        var rest = Options.Pairs(args[3..]);
        var settings = new WorkerSettings(
            Options.Int(rest, "threads", 2),
            Options.Int(rest, "steps", spec.DefaultSteps),
            Options.Double(rest, "warmup-seconds", 3),
            Options.Double(rest, "max-seconds", 20));
        var result = engine switch
        {
            "frugal" => FrugalWorker.Run(spec, settings),
            "torchsharp" => RunTorch(spec, settings),
            _ => throw new ArgumentException($"unknown engine '{engine}'; choose frugal or torchsharp"),
        };
        Console.WriteLine(ResultPrefix + JsonSerializer.Serialize(result));
        return 0;
    }

    /// <summary>Patches the native library (a no-op when the parent did) before the first TorchSharp type loads.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static RunResult RunTorch(ModelSpec spec, WorkerSettings settings)
    {
        ElfVersionPatch.PatchApplication();
        return TorchWorker.Run(spec, settings);
    }
}

/// <summary>The parent's command line.</summary>
internal sealed class Options
{
    private Options(IReadOnlyList<ModelSpec> models, int repeats, int threads, string? output, double warmupSeconds, double maxSeconds, Dictionary<string, string> all)
        => (Models, Repeats, Threads, Out, WarmupSeconds, MaxSeconds, _all) = (models, repeats, threads, output, warmupSeconds, maxSeconds, all);

    private readonly Dictionary<string, string> _all;

    /// <summary>Models to run, in order.</summary>
    public IReadOnlyList<ModelSpec> Models { get; }

    /// <summary>Interleaved repeats per model and engine.</summary>
    public int Repeats { get; }

    /// <summary>Threads per engine.</summary>
    public int Threads { get; }

    /// <summary>Markdown file to write, or null.</summary>
    public string? Out { get; }

    /// <summary>Minimum warm-up seconds per run.</summary>
    public double WarmupSeconds { get; }

    /// <summary>Cap on a run's timed seconds: it stops early, with fewer steps, past it.</summary>
    public double MaxSeconds { get; }

    /// <summary>Timed steps of <paramref name="spec"/> (--{name}-steps, else its default).</summary>
    public int StepsFor(ModelSpec spec) => Int(_all, $"{spec.Name}-steps", spec.DefaultSteps);

    /// <summary>Parses <c>--name value</c> pairs.</summary>
    /// <exception cref="ArgumentException">An unknown option or a bad value.</exception>
    public static Options Parse(string[] args)
    {
        var all = Pairs(args);
        var known = new[] { "models", "repeats", "threads", "out", "warmup-seconds", "max-seconds" }.Concat(ModelSpec.All.Select(m => $"{m.Name}-steps"));
        foreach (var key in all.Keys.Where(k => !known.Contains(k)))
            throw new ArgumentException($"unknown option --{key}");
        var models = (all.TryGetValue("models", out var m) ? m : "mlp,cnn,gpt").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(ModelSpec.Named).ToList();
        var options = new Options(models, Int(all, "repeats", 3), Int(all, "threads", 2), all.GetValueOrDefault("out"), Double(all, "warmup-seconds", 3), Double(all, "max-seconds", 20), all);
        if (options.Repeats < 1 || options.Threads < 1 || models.Count == 0 || options.WarmupSeconds < 0 || options.MaxSeconds <= 0 || models.Any(s => options.StepsFor(s) < 1))
            throw new ArgumentException("repeats, threads, steps and the time cap must be positive, warm-up seconds not negative, and at least one model given");
        return options;
    }

    /// <summary>The <c>--name value</c> pairs of <paramref name="args"/>.</summary>
    public static Dictionary<string, string> Pairs(string[] args)
    {
        var pairs = new Dictionary<string, string>(StringComparer.Ordinal);
        for (var i = 0; i < args.Length; i += 2)
        {
            if (!args[i].StartsWith("--", StringComparison.Ordinal) || i + 1 >= args.Length)
                throw new ArgumentException($"expected --name value pairs, got '{string.Join(' ', args[i..])}'");
            pairs[args[i][2..]] = args[i + 1];
        }
        return pairs;
    }

    /// <summary>The number option <paramref name="key"/>, or <paramref name="fallback"/>.</summary>
    public static double Double(Dictionary<string, string> pairs, string key, double fallback)
    {
        if (!pairs.TryGetValue(key, out var text))
            return fallback;
        return double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var value) ? value : throw new ArgumentException($"--{key} wants a number, got '{text}'");
    }

    /// <summary>The integer option <paramref name="key"/>, or <paramref name="fallback"/>.</summary>
    public static int Int(Dictionary<string, string> pairs, string key, int fallback)
    {
        if (!pairs.TryGetValue(key, out var text))
            return fallback;
        return int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out var value) ? value : throw new ArgumentException($"--{key} wants an integer, got '{text}'");
    }
}
