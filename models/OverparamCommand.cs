using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Frugal.Formats;
using Frugal.Nn;
using Frugal.Optim;
using Frugal.Training.Sparsity;
using Spectre.Console;

namespace Frugal.Models;

/// <summary><c>frugal overparam</c>: how many hidden units gradient descent needs. XOR (or a two-unit teacher) is
/// represented exactly by two tanh units, yet SGD from a random start often fails at that width. For each hidden
/// width h the command trains many seeds three ways: a dense in-h-2 network; a network of the larger width
/// <c>--from</c> whose two weights are CSR and store exactly as many weights as the dense one, on a static random
/// pattern; and that sparse network with RigL's pattern updates. It prints the success rate per width and method
/// with a 95% Wilson interval.</summary>
internal static class OverparamCommand
{
    /// <summary><c>frugal overparam</c>.</summary>
    public static readonly CliCommand Command = new("overparam",
        "The success rate over seeds 0..K-1 of tanh networks in-h-2 trained full batch (cross-entropy, SGD momentum 0.9, constant rate, PyTorch's default initialisation) at each hidden width h, three ways: dense, sparse-from-larger and rigl (see --from).",
        [
            new("task", "NAME", "xor: the 4 points of XOR in {-1, 1}²; success = all 4 classified correctly. teacher: 256 fixed N(0, I) inputs in 8 dimensions labelled by a fixed 8-2-2 tanh teacher, a continuous XOR (class 1 inside a slab |w·x| < 0.70 along a random direction w: two units represent it, one cannot); inputs closer than 0.1 in logit margin to its boundary are redrawn, so 100% is reachable; success = training accuracy >= 99% (at most 2 of 256 wrong: forgives a point near the boundary that a finite run has not yet crossed, far above the ~76% a single hyperplane gets), the same criterion for every method   default xor"),
            new("widths", "W1,W2,...", "hidden widths   default 2,3,4,6,8,16,32"),
            new("seeds", "K", "seeds per width and method   default 100"),
            new("steps", "N", "full-batch optimizer steps of each run   default 2000"),
            new("lr", "X", "SGD learning rate   default 0.1"),
            new("from", "H", "the sparse networks' hidden width H. sparse-from-larger: both weights CSR on a static random pattern storing exactly the dense net's number of weights, drawn uniformly over each matrix (csr:D's per-row draw keeps at least one entry per row, 32 in a 2->32 layer); rigl: the same sparse net, RigL pattern updates every N/20 steps, drop fraction 0.3 decaying to 0 at 3N/4. Widths h >= H have no sparse column (—)   default 32"),
            new("device", "DEVICE", "cpu (seeds run in parallel), or cuda / cuda:N (one at a time)   default cpu"),
            new("markdown", "FILE", "also write the table as Markdown to FILE, with the settings, and as JSON beside it (.json)"),
        ],
        Run);

    /// <summary>Success rate reported as "reliable" in the summary line.</summary>
    private const double Reliable = 0.95;

    /// <summary>The three ways of training a width.</summary>
    internal enum Method
    {
        /// <summary>Dense in-h-2.</summary>
        Dense,

        /// <summary>in-H-2 with CSR weights holding the dense net's count, static random pattern.</summary>
        Sparse,

        /// <summary>The sparse net with RigL pattern updates.</summary>
        RigL,
    }

    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    private static readonly Method[] Methods = [Method.Dense, Method.Sparse, Method.RigL];

    private static string Label(Method m) => m switch
    {
        Method.Dense => "dense",
        Method.Sparse => "sparse",
        _ => "rigl",
    };

    /// <summary>A classification problem trained full batch: what it is, inputs [N, Features], labels in {0, 1}, and
    /// the accuracy a run must reach to count as a success.</summary>
    internal sealed record Problem(string Name, string Description, float[] Inputs, int[] Labels, int Features, double Threshold, string Criterion)
    {
        /// <summary>Number of points.</summary>
        public int Count => Labels.Length;
    }

    /// <summary>The result of one seed: final training accuracy and loss, and the weights the model stored.</summary>
    internal readonly record struct Trial(double Accuracy, double Loss, long Weights, bool Success);

    /// <summary>Successes of one (width, method) cell over the seeds.</summary>
    internal sealed record Cell(int Width, Method Method, int Successes, int Seeds, long Weights, double MeanAccuracy, double MeanLoss, double Seconds)
    {
        /// <summary>The 95% Wilson score interval of the success rate.</summary>
        public (double Low, double High) Interval => Wilson(Successes, Seeds);

        /// <summary>The success rate.</summary>
        public double Rate => Successes / (double)Seeds;
    }

    /// <summary>XOR on {-1, 1}²: class 1 when the signs differ; success = every point right.</summary>
    internal static Problem Xor() => new("xor", "the 4 points of XOR on {-1, 1}², class 1 where the signs differ",
        [-1, -1, -1, 1, 1, -1, 1, 1], [0, 1, 1, 0], 2, 1.0, "all 4 points classified correctly");

    /// <summary>Inputs of the teacher task.</summary>
    internal const int TeacherFeatures = 8;

    /// <summary>Points of the teacher task.</summary>
    internal const int TeacherPoints = 256;

    /// <summary>The fixed teacher's seed.</summary>
    internal const int TeacherSeed = 7;

    /// <summary>Smallest |logit difference| of the teacher at a kept input.</summary>
    internal const double TeacherMargin = 0.1;

    /// <summary>The teacher task, a continuous XOR: an 8-2-2 tanh network whose two hidden units look along one
    /// random unit direction w (from the fixed <paramref name="seed"/>), h₁ = tanh(3(w·x + 0.7)) and
    /// h₂ = tanh(3(w·x − 0.7)), with logits (0, h₁ − h₂ − 1), labels 256 N(0, I) inputs by argmax: class 1 inside
    /// the slab |w·x| &lt; 0.70 (about half the inputs), as XOR's class 1 is the middle of x₁ + x₂. Two tanh units
    /// represent it exactly; one cannot (its boundary is a single hyperplane). Inputs within
    /// <see cref="TeacherMargin"/> of the boundary in logit difference are redrawn, so that no label hangs on a
    /// rounding error. (Teachers with all weights random were tried first: on their inputs they were linearly
    /// separable in effect, solved by a single hidden unit for every seed, so they did not ask the question.)</summary>
    internal static Problem Teacher(int seed = TeacherSeed)
    {
        var rng = new Random(seed);
        double Normal() => Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble());
        var w = new double[TeacherFeatures];
        for (var i = 0; i < w.Length; i++)
            w[i] = Normal();
        var norm = Math.Sqrt(w.Sum(v => v * v));
        var inputs = new float[TeacherPoints * TeacherFeatures];
        var labels = new int[TeacherPoints];
        var x = new double[TeacherFeatures];
        for (var n = 0; n < TeacherPoints;)
        {
            var z = 0.0;
            for (var i = 0; i < TeacherFeatures; i++)
            {
                x[i] = Normal();
                z += w[i] / norm * x[i];
            }
            var margin = Math.Tanh(3 * (z + 0.7)) - Math.Tanh(3 * (z - 0.7)) - 1;
            if (Math.Abs(margin) < TeacherMargin)
                continue;
            for (var i = 0; i < TeacherFeatures; i++)
                inputs[n * TeacherFeatures + i] = (float)x[i];
            labels[n++] = margin > 0 ? 1 : 0;
        }
        var description = string.Create(CultureInfo.InvariantCulture,
            $"{TeacherPoints} N(0, I) inputs in {TeacherFeatures} dimensions labelled by a fixed {TeacherFeatures}-2-2 tanh teacher, a continuous XOR: "
            + $"class 1 inside the slab |w·x| < 0.70 along a random unit direction w (seed {seed}); inputs within {TeacherMargin} of its boundary in logit margin redrawn");
        return new("teacher", description, inputs, labels, TeacherFeatures, 0.99, $"training accuracy >= 99% on the {TeacherPoints} points");
    }

    private static int Run(CliArgs args)
    {
        var task = args.Choice("task", "xor", ["xor", "teacher"]);
        var widths = args.Widths("widths", "2,3,4,6,8,16,32");
        var seeds = args.Int("seeds", 100);
        var steps = args.Int("steps", 2000);
        var lr = args.Double("lr", 0.1);
        var from = args.Int("from", 32, min: 2);
        var device = TrainCommand.ParseDevice(args.String("device", "cpu"));
        var outPath = args.Optional("markdown");
        var problem = task == "xor" ? Xor() : Teacher();

        var positives = problem.Labels.Count(l => l == 1);
        AnsiConsole.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"task {problem.Name}: {problem.Description}; {positives} of {problem.Count} in class 1; success = {problem.Criterion}"));
        AnsiConsole.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{seeds} seeds per cell, {steps} full-batch steps of SGD (momentum 0.9, lr {lr}), cross-entropy; sparse nets have {from} hidden units, device {device}"));
        var clock = Stopwatch.StartNew();
        var cells = new List<Cell>();
        foreach (var width in widths)
        {
            foreach (var method in Methods)
            {
                if (method != Method.Dense && width >= from)
                    continue;
                var cell = RunCell(problem, method, width, from, seeds, steps, lr, device);
                cells.Add(cell);
                AnsiConsole.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"  width {width,3} {Label(method),-6}: {Rate(cell)}, {cell.Weights} weights, mean accuracy {Percent(cell.MeanAccuracy, 1)}, mean loss {cell.MeanLoss:F3}, {cell.Seconds:F1} s"));
            }
        }
        AnsiConsole.Write(Table(cells, widths, from));
        var summary = Summary(cells);
        AnsiConsole.WriteLine(summary);
        AnsiConsole.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{clock.Elapsed.TotalSeconds:F0} s in all"));
        if (outPath is not null)
        {
            var settings = Settings(problem, seeds, steps, lr, from);
            File.WriteAllText(outPath, Markdown(problem, settings, cells, widths, from, summary, clock.Elapsed.TotalSeconds));
            var json = Path.ChangeExtension(outPath, ".json");
            File.WriteAllText(json, Json(problem, seeds, steps, lr, from, cells, clock.Elapsed.TotalSeconds));
            AnsiConsole.WriteLine($"wrote {outPath} and {json}");
        }
        return 0;
    }

    /// <summary>Trains every seed of one cell (in parallel on the CPU: each thread has its own seeded streams).</summary>
    internal static Cell RunCell(Problem problem, Method method, int width, int from, int seeds, int steps, double lr, Device device)
    {
        var clock = Stopwatch.StartNew();
        var trials = new Trial[seeds];
        var parallel = new ParallelOptions { MaxDegreeOfParallelism = device == Device.Cpu ? Environment.ProcessorCount : 1 };
        Parallel.For(0, seeds, parallel, seed => trials[seed] = Train(problem, method, width, from, seed, steps, lr, device));
        var weights = trials[0].Weights;
        if (trials.Any(t => t.Weights != weights))
            throw new InvalidOperationException($"overparam: width {width} {Label(method)} stored different numbers of weights across seeds");
        return new Cell(width, method, trials.Count(t => t.Success), seeds, weights, trials.Average(t => t.Accuracy), trials.Average(t => t.Loss), clock.Elapsed.TotalSeconds);
    }

    /// <summary>The network of <paramref name="method"/> for hidden width <paramref name="width"/>: dense
    /// features-width-2, or features-<paramref name="from"/>-2 with both weights CSR storing as many weights as the
    /// dense layers (see <see cref="SparseLinear"/>). Uses the current thread's <see cref="Init"/> stream.</summary>
    internal static Sequential Build(Method method, int features, int width, int from, Device device)
    {
        if (method == Method.Dense || width >= from)
            return new Sequential(new Linear(features, width, device: device), new Tanh(), new Linear(width, 2, device: device));
        return new Sequential(SparseLinear(features, from, features * width, device), new Tanh(), SparseLinear(from, 2, 2 * width, device));
    }

    /// <summary>A CSR linear layer in → out storing exactly <paramref name="stored"/> weights, at positions drawn
    /// uniformly over the whole matrix (seeded from <see cref="Init"/>). Frugal's own random CSR pattern
    /// (<c>csr:D</c>) keeps round(D·in) entries in every row and at least one, so a 2 → 32 layer at density 2/32
    /// would store 32 weights, not 4: the exact count needs a pattern over the matrix, where a row may be empty
    /// (a hidden unit left with its bias only). Values and bias take the dense layer's default initialisation.</summary>
    internal static Linear SparseLinear(int inFeatures, int outFeatures, int stored, Device device)
    {
        var size = inFeatures * outFeatures;
        if (stored < 1 || stored > size)
            throw new ArgumentOutOfRangeException(nameof(stored), $"overparam: a [{outFeatures}, {inFeatures}] weight cannot store {stored} values");
        // The top `stored` of independent uniform scores: a uniformly random set of exactly that many positions.
        var rng = new Random((int)(Init.NextSeed() & int.MaxValue));
        var scores = new float[size];
        for (var i = 0; i < size; i++)
            scores[i] = rng.NextSingle();
        var pattern = CsrPattern.TopScores(scores, outFeatures, inFeatures, stored / (double)size);
        var weight = SparseWeight.OnPattern(new Shape(outFeatures, inFeatures), TensorFormat.Csr, pattern, device);
        var bias = Init.Default(new Shape(outFeatures), inFeatures, device);
        return new Linear(weight, bias);
    }

    /// <summary>Weights the model stores (a sparse weight's stored values, a dense one's every value; biases not
    /// counted).</summary>
    internal static long StoredWeights(Module model)
        => model.Weights().Sum(w => w.Weight is SparseWeight s ? (long)s.Pattern.Nnz * s.Block * s.Block : w.Weight.Shape.Numel);

    /// <summary>RigL's schedule for a run of <paramref name="steps"/>: an update every steps/20 (100 of 2000, the
    /// RigL paper's ΔT and <c>frugal train</c>'s: 14 updates, each pattern trained 100 full-batch steps first, far
    /// enough for these tiny nets to show which weights matter), drop fraction 0.3, cosine-decayed to 0 at 3/4 of
    /// the run, so the last quarter trains a fixed pattern (as <c>frugal train --sparsity rigl</c>). At least every
    /// 2 steps: RigL arms each update's dense-gradient request during the step before it, so step 1 cannot be an
    /// update.</summary>
    internal static (int UpdateEvery, double DropFraction, long EndStep) RigLSchedule(int steps)
        => (Math.Max(2, steps / 20), 0.3, Math.Max(1, steps * 3L / 4));

    /// <summary>Trains one seed (seeding <see cref="Init"/> and <see cref="Rng"/> on this thread) and measures the
    /// final training accuracy.</summary>
    internal static Trial Train(Problem problem, Method method, int width, int from, int seed, int steps, double lr, Device device)
    {
        Init.ManualSeed((ulong)seed);
        Rng.ManualSeed((ulong)seed);
        using var x = Tensor.FromArray<float>(problem.Inputs, new Shape(problem.Count, problem.Features), device);
        using var y = Tensor.FromArray<int>(problem.Labels, new Shape(problem.Count), device);
        using var model = Build(method, problem.Features, width, from, device);
        using var opt = new SGD(model.Parameters(), lr, momentum: 0.9);
        var (every, drop, end) = RigLSchedule(steps);
        var rigl = method == Method.RigL && width < from ? new RigL(model, opt, every, drop, end) : null;
        for (var step = 0; step < steps; step++)
        {
            using (TensorScope.Begin())
            {
                using var logits = model.Forward(x);
                using var loss = F.CrossEntropy(logits, y);
                loss.Backward();
                opt.Step();
                opt.ZeroGrad();
            }
            rigl?.Step();
        }
        var (accuracy, lossValue) = Evaluate(model, x, y, problem.Labels);
        return new Trial(accuracy, lossValue, StoredWeights(model), IsSuccess(accuracy, problem));
    }

    /// <summary>Training accuracy and loss of <paramref name="model"/>, without recording autograd.</summary>
    internal static (double Accuracy, double Loss) Evaluate(Module model, Tensor x, Tensor y, int[] labels)
    {
        using var noGrad = Autograd.NoGrad();
        using var scope = TensorScope.Begin();
        using var logits = model.Forward(x);
        using var loss = F.CrossEntropy(logits, y);
        using var pred = F.ArgMax(logits, 1);
        var p = pred.ToArray<int>();
        var correct = 0;
        for (var i = 0; i < p.Length; i++)
        {
            if (p[i] == labels[i])
                correct++;
        }
        return (correct / (double)labels.Length, loss.Item());
    }

    /// <summary>The success criterion: the accuracy reaches the problem's threshold (all points for XOR).</summary>
    internal static bool IsSuccess(double accuracy, Problem problem) => accuracy >= problem.Threshold - 1e-12;

    /// <summary>The 95% Wilson score interval of <paramref name="k"/> successes in <paramref name="n"/> trials.</summary>
    internal static (double Low, double High) Wilson(int k, int n)
    {
        const double z = 1.959963984540054;
        var p = k / (double)n;
        var denominator = 1 + z * z / n;
        var center = (p + z * z / (2 * n)) / denominator;
        var half = z * Math.Sqrt(p * (1 - p) / n + z * z / (4.0 * n * n)) / denominator;
        return (Math.Max(0, center - half), Math.Min(1, center + half));
    }

    private static string Rate(Cell c)
    {
        var (low, high) = c.Interval;
        return $"{c.Successes}/{c.Seeds} ({Percent(c.Rate, 0)}) [{Percent(low, 0)}–{Percent(high, 0)}]";
    }

    /// <summary>A fraction as a percentage with <paramref name="decimals"/> decimals ("87%").</summary>
    private static string Percent(double fraction, int decimals)
        => (100 * fraction).ToString("F" + decimals.ToString(CultureInfo.InvariantCulture), CultureInfo.InvariantCulture) + "%";

    private static Cell? Find(IEnumerable<Cell> cells, int width, Method method) => cells.FirstOrDefault(c => c.Width == width && c.Method == method);

    /// <summary>One row per width: width, then weights and success per method ("—" where the sparse net would not be
    /// smaller than the dense one).</summary>
    private static IEnumerable<string[]> Rows(IReadOnlyList<Cell> cells, int[] widths)
    {
        foreach (var w in widths)
        {
            var row = new List<string> { w.ToString(CultureInfo.InvariantCulture) };
            foreach (var m in Methods)
            {
                var c = Find(cells, w, m);
                row.Add(c is null ? "—" : c.Weights.ToString(CultureInfo.InvariantCulture));
                row.Add(c is null ? "—" : Rate(c));
            }
            yield return [.. row];
        }
    }

    private static string[] Headers(int from) =>
        ["width", "dense weights", "dense success", $"sparse-from-{from} weights", "sparse success", "rigl weights", "rigl success"];

    private static Table Table(IReadOnlyList<Cell> cells, int[] widths, int from)
    {
        var table = new Table().Title("success rate per hidden width (95% Wilson interval)");
        foreach (var (h, i) in Headers(from).Select((h, i) => (h, i)))
            table.AddColumn(i == 0 || h.EndsWith("weights", StringComparison.Ordinal) ? new TableColumn(h).RightAligned() : new TableColumn(h));
        foreach (var row in Rows(cells, widths))
            table.AddRow([.. row.Select(Markup.Escape)]);
        return table;
    }

    /// <summary>"smallest width with success >= 95%: dense 4, sparse 8, rigl none of 2..16".</summary>
    internal static string Summary(IReadOnlyList<Cell> cells)
    {
        var parts = Methods.Select(m =>
        {
            var mine = cells.Where(c => c.Method == m).OrderBy(c => c.Width).ToList();
            if (mine.Count == 0)
                return $"{Label(m)} not run";
            var first = mine.FirstOrDefault(c => c.Rate >= Reliable);
            return first is null
                ? $"{Label(m)} none of {string.Join(",", mine.Select(c => c.Width))}"
                : $"{Label(m)} {first.Width}";
        });
        return $"smallest width with success >= {Percent(Reliable, 0)}: {string.Join(", ", parts)}";
    }

    private static string Settings(Problem problem, int seeds, int steps, double lr, int from)
    {
        var (every, drop, end) = RigLSchedule(steps);
        return string.Create(CultureInfo.InvariantCulture,
            $"task {problem.Name}: {problem.Description}; success = {problem.Criterion}; seeds 0..{seeds - 1}; "
            + $"{steps} full-batch steps, SGD momentum 0.9, lr {lr}, cross-entropy, default (PyTorch) initialisation; "
            + $"sparse nets: {problem.Features}-{from}-2, both weights CSR with exactly the dense net's weight count on a uniform random pattern over each matrix "
            + $"(Frugal's csr:D draw keeps round(D·in) >= 1 entries per row, {from} weights in the {problem.Features}→{from} layer even where the dense net has fewer); "
            + $"rigl: update every {every} steps, drop fraction {drop} (cosine decay), frozen from step {end}");
    }

    private static string Markdown(Problem problem, string settings, IReadOnlyList<Cell> cells, int[] widths, int from, string summary, double seconds)
    {
        var text = new StringBuilder();
        text.Append(CultureInfo.InvariantCulture, $"# frugal overparam --task {problem.Name}\n\n");
        text.Append(settings).Append(".\n\n");
        text.Append("Success per cell: successes/seeds (rate) [95% Wilson interval]; weights = stored weight values (biases not counted: "
            + $"the dense net has h + 2 biases, the sparse nets {from} + 2). \"—\": the sparse net would not be smaller than the dense one.\n\n");
        var headers = Headers(from);
        text.Append("| ").AppendJoin(" | ", headers).Append(" |\n");
        text.Append('|').AppendJoin("", headers.Select((h, i) => i == 0 || h.EndsWith("weights", StringComparison.Ordinal) ? "---:|" : "---|")).Append('\n');
        foreach (var row in Rows(cells, widths))
            text.Append("| ").AppendJoin(" | ", row).Append(" |\n");
        text.Append('\n').Append(summary).Append(".\n\n");
        text.Append(CultureInfo.InvariantCulture, $"{seconds:F0} s on {Environment.ProcessorCount} CPU cores; mean final training accuracy per cell: ");
        text.AppendJoin(", ", cells.Select(c => string.Create(CultureInfo.InvariantCulture, $"{c.Width} {Label(c.Method)} {Percent(c.MeanAccuracy, 1)}"))).Append(".\n");
        return text.ToString();
    }

    private static string Json(Problem problem, int seeds, int steps, double lr, int from, IReadOnlyList<Cell> cells, double seconds)
    {
        var (every, drop, end) = RigLSchedule(steps);
        var document = new Dictionary<string, object>
        {
            ["task"] = problem.Name,
            ["description"] = problem.Description,
            ["criterion"] = problem.Criterion,
            ["threshold"] = problem.Threshold,
            ["points"] = problem.Count,
            ["seeds"] = seeds,
            ["steps"] = steps,
            ["lr"] = lr,
            ["momentum"] = 0.9,
            ["from"] = from,
            ["rigl"] = new Dictionary<string, object> { ["updateEvery"] = every, ["dropFraction"] = drop, ["endStep"] = end },
            ["seconds"] = Math.Round(seconds, 1),
            ["cells"] = cells.Select(c => new Dictionary<string, object>
            {
                ["width"] = c.Width,
                ["method"] = Label(c.Method),
                ["weights"] = c.Weights,
                ["successes"] = c.Successes,
                ["seeds"] = c.Seeds,
                ["wilsonLow"] = Math.Round(c.Interval.Low, 4),
                ["wilsonHigh"] = Math.Round(c.Interval.High, 4),
                ["meanAccuracy"] = Math.Round(c.MeanAccuracy, 4),
                ["meanLoss"] = Math.Round(c.MeanLoss, 4),
            }).ToList(),
        };
        return JsonSerializer.Serialize(document, Indented);
    }
}
