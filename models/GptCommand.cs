using Frugal.Formats;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using Frugal.Data;
using Frugal.Nn;
using Frugal.Optim;
using Spectre.Console;

namespace Frugal.Models;

/// <summary><c>frugal train --model gpt</c>: a byte-level GPT on a text corpus, with validation loss against the
/// unigram baseline; and <c>frugal sample</c>, text from a saved GPT.</summary>
internal static class GptCommand
{
    /// <summary>Options of <c>train --model gpt</c> only.</summary>
    internal static readonly CliOption[] Options =
    [
        new("steps", "N", "gpt: optimizer steps of the run (AdamW, weight decay 0.1 on matrices, 100 warm-up steps, cosine decay)   default 2000"),
        new("layers", "L", "gpt: transformer blocks   default 4"),
        new("width", "W", "gpt: model width   default 256"),
        new("heads", "H", "gpt: attention heads   default 4"),
        new("context", "C", "gpt: bytes of context   default 128"),
        new("attention-format", "FORMAT", "gpt: the format of the attention layers only (overriding --format)"),
        new("mlp-format", "FORMAT", "gpt: the format of the MLP layers only (overriding --format)"),
        new("embedding-format", "FORMAT", "gpt: any format; lowrank:R|F is ALBERT's factorized embedding (the head stays tied to it)   default dense"),
        CliOption.Corpus,
        new("eval-every", "N", "gpt: the validation loss every N steps (and at the end), over 8 batches   default 200"),
        new("share-blocks", null, "gpt: one block's weights for every layer (ALBERT)"),
        new("memory-efficient", null, "gpt: recompute attention scores in backward instead of keeping them"),
    ];

    /// <summary><c>frugal sample</c>.</summary>
    public static readonly CliCommand SampleCommand = new("sample",
        "Writes bytes continuing a prompt, sampled from a GPT saved by frugal train --model gpt --save FILE.",
        [
            new("load", "FILE", "the checkpoint (required)"),
            new("prompt", "TEXT", "the text to continue   default: none"),
            new("tokens", "N", "bytes to write   default 200"),
            new("temperature", "T", "sampling temperature   default 0.8"),
            new("seed", "S", "sampling seed   default 1"),
            CliOption.Device,
        ],
        Sample);

    /// <summary>The run's configuration in a checkpoint, for <c>frugal sample</c>.</summary>
    private const string ConfigKey = "gpt.config";

    /// <summary><c>frugal train --model gpt</c>.</summary>
    public static int Train(CliArgs args)
    {
        args.Refuse(TrainCommand.ImageOptions.Select(o => o.Name), "is for the image models (--model mlp|mlp-shared|cnn)");
        var layers = args.Int("layers", 4);
        var width = args.Int("width", 256);
        var heads = args.Int("heads", 4);
        var context = args.Int("context", 128);
        var batch = args.Int("batch", 32);
        var steps = args.Int("steps", 2000);
        var lr = args.Double("lr", 1e-3);
        var evalEvery = args.Int("eval-every", 200);
        var stateBits = int.Parse(args.Choice("optimizer-bits", "32", ["32", "8"]), CultureInfo.InvariantCulture);
        var clip = args.Double("clip-grad-norm", 1);
        var seed = args.Int("seed", 1, min: 0);
        var format = TrainCommand.ParseFormat(args.String("format", "dense"));
        var attentionFormat = args.Optional("attention-format") is { } af ? TrainCommand.ParseFormat(af) : format;
        var mlpFormat = args.Optional("mlp-format") is { } mf ? TrainCommand.ParseFormat(mf) : format;
        var embeddingFormat = TrainCommand.ParseFormat(args.String("embedding-format", "dense"));
        var stopAfter = args.Int("stop-after", 0, min: 0);
        var resumePath = args.Optional("resume");
        if (args.Optional("save") is { } savePath)
            CliFiles.CheckFile(savePath, "save");
        var device = TrainCommand.ParseDevice(args.String("device", "cpu"));
        var corpus = LoadCorpus(args.Optional("corpus"));
        if (corpus.Validation.Length < context + 1 || corpus.Train.Length < context + 1)
            throw new UsageException($"--context {context}: the corpus {corpus.Source} is too short ({corpus.Train.Length} training and {corpus.Validation.Length} validation bytes)");
        var config = new GptConfig(TextCorpus.Vocab, context, layers, width, heads, attentionFormat, mlpFormat, args.Flag("share-blocks"), args.Flag("memory-efficient"),
            args.Flag("checkpoint"), embeddingFormat);
        var options = string.Create(CultureInfo.InvariantCulture,
            $"gpt;{config};batch={batch};steps={steps};lr={lr:R};bits={stateBits};clip={clip:R};seed={seed};corpus={corpus.Source}");
        Init.ManualSeed((ulong)seed);
        Rng.ManualSeed((ulong)seed);
        Gpt model;
        try
        {
            model = new Gpt(config, device);
        }
        catch (ArgumentException e)
        {
            throw new UsageException(e.Message);
        }
        using var owned = model;
        using var opt = CreateOptimizer(model, lr, stateBits);
        var schedule = Schedule(steps);
        AnsiConsole.MarkupLine($"[bold]corpus[/]: {Markup.Escape(corpus.Source)}: {corpus.Train.Length:N0} training and {corpus.Validation.Length:N0} validation bytes");
        AnsiConsole.MarkupLine(CultureInfo.InvariantCulture, "[bold]model[/]: gpt, {0} layers, width {1}, {2} heads, context {3}, {4:N0} parameters ({5}{6}{7}), AdamW lr {8} (warm-up, cosine), batch {9}, device {10}",
            layers, width, heads, context, model.ParameterCount(), format, config.ShareBlocks ? ", shared blocks" : "", config.MemoryEfficientAttention ? ", memory-efficient attention" : "", lr, batch, device);
        AnsiConsole.MarkupLine(CultureInfo.InvariantCulture, "unigram baseline: validation loss {0:F4} nats/byte", corpus.UnigramValidationLoss());
        var start = 0;
        if (resumePath is not null)
        {
            start = (int)Math.Min(RunCheckpoint.Step(resumePath, options), steps);
            RunCheckpoint.Load(resumePath, model, opt, "resume");
            AnsiConsole.MarkupLine($"[bold]resumed[/] {Markup.Escape(resumePath)} after step {start}");
        }
        var end = stopAfter > 0 ? Math.Min(steps, stopAfter) : steps;
        device.Allocator.ResetPeak();
        var clock = Stopwatch.StartNew();
        double lossSum = 0;
        var lossCount = 0;
        double validation = double.NaN;
        void Loop(Action<int, double> progress)
        {
            for (var step = start; step < end; step++)
            {
                lossSum += Step(model, opt, schedule, corpus, batch, context, seed, step, clip, inBackward: false, device);
                lossCount++;
                progress(step + 1, lossSum / lossCount);
                if ((step + 1) % evalEvery == 0 || step + 1 == steps)
                {
                    validation = ValidationLoss(model, corpus, batch, context, device);
                    AnsiConsole.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"step {step + 1}/{steps}: train loss {lossSum / lossCount:F4}, validation loss {validation:F4}, {TokensPerSecond(step + 1):F0} tokens/s, {clock.Elapsed.TotalSeconds:F0} s"));
                    (lossSum, lossCount) = (0, 0);
                }
            }
        }

        double TokensPerSecond(int step) => (step - start) * (double)batch * context / clock.Elapsed.TotalSeconds;

        if (AnsiConsole.Profile.Capabilities.Interactive)
        {
            AnsiConsole.Progress()
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
                .Start(ctx =>
                {
                    var task = ctx.AddTask("training", maxValue: end - start);
                    Loop((step, loss) =>
                    {
                        task.Value = step - start;
                        task.Description = string.Create(CultureInfo.InvariantCulture, $"step {step}/{steps} loss {loss:F4} {TokensPerSecond(step),6:F0} tokens/s");
                    });
                });
        }
        else
        {
            // Redirected output (CI, logs): a line every 10% of the steps instead of a redrawn bar.
            var every = Math.Max(1, (end - start) / 10);
            Loop((step, loss) =>
            {
                if ((step - start) % every == 0)
                    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  step {step}/{steps} loss {loss:F4} {TokensPerSecond(step):F0} tokens/s"));
            });
        }
        if (end < steps)
            AnsiConsole.MarkupLine($"stopped after step {end} (--stop-after)");
        else
            AnsiConsole.MarkupLine(CultureInfo.InvariantCulture, "final validation loss [bold]{0:F4}[/] nats/byte (unigram {1:F4}) after {2:F0} s", validation, corpus.UnigramValidationLoss(), clock.Elapsed.TotalSeconds);
        if (args.Optional("save") is { } path)
        {
            var c = config;
            var meta = new Dictionary<string, string>
            {
                [ConfigKey] = string.Create(CultureInfo.InvariantCulture, $"{c.Vocab};{c.Context};{c.Layers};{c.Width};{c.Heads};{attentionFormat};{mlpFormat};{embeddingFormat};{c.ShareBlocks};{c.MemoryEfficientAttention}"),
            };
            RunCheckpoint.Save(path, model, opt, options, Math.Max(start, end), meta);
            AnsiConsole.MarkupLine($"[bold]saved[/] {Markup.Escape(path)}");
        }
        AnsiConsole.Write(TrainCommand.MemoryTable(device.Allocator.Stats()));
        return 0;
    }

    /// <summary>The optimizer of a GPT run: AdamW, β₂ 0.95, weight decay 0.1 on the matrices.</summary>
    internal static AdamW CreateOptimizer(Gpt model, double lr, int stateBits)
        => new(model.Parameters(), lr, beta2: 0.95, weightDecay: 0.1, stateBits: stateBits, decay: Adam.MatricesOnly);

    /// <summary>The learning-rate schedule of a GPT run of <paramref name="steps"/> steps: 100 warm-up steps, then
    /// cosine decay to a tenth.</summary>
    internal static LrSchedule Schedule(int steps) => new WarmupSchedule(Math.Min(100, steps), new CosineSchedule(Math.Max(1, steps - 100), minFactor: 0.1));

    /// <summary>Training step <paramref name="step"/> (its batch drawn from the seed and the step, so a resumed run
    /// sees the same ones): the scheduled rate, the loss, backward, gradients clipped to a global norm of
    /// <paramref name="clip"/> (0: not clipped) and the update (during backward when <paramref name="inBackward"/>,
    /// which cannot clip); with <paramref name="precision"/> the forward pass runs under that autocast; returns the
    /// loss.</summary>
    internal static double Step(Gpt model, Optimizer opt, LrSchedule schedule, TextCorpus corpus, int batch, int context, int seed, int step, double clip, bool inBackward, Device device, DType? precision = null)
    {
        if (inBackward && clip > 0)
            throw new ArgumentException("a GPT step cannot clip the gradients' global norm when each update is applied during backward");
        using var scope = TensorScope.Begin();
        var (x, y) = TextCorpus.Batch(corpus.Train, batch, context, (ulong)seed, step, device);
        schedule.Apply(opt, step);
        Tensor logits;
        using (precision is { } p ? Autocast.Enable(p) : default(Autocast.Scope?))
            logits = model.Forward(x);
        var loss = Gpt.Loss(logits, y);
        opt.BackwardAndStep(loss, inBackward, clip > 0 ? () => opt.ClipGradNorm(clip) : null);
        return loss.Item();
    }

    /// <summary>Mean loss over 8 fixed validation batches, without recording autograd.</summary>
    internal static double ValidationLoss(Gpt model, TextCorpus corpus, int batch, int context, Device device)
    {
        using var noGrad = Autograd.NoGrad();
        double sum = 0;
        for (var i = 0; i < 8; i++)
        {
            using var scope = TensorScope.Begin();
            var (x, y) = TextCorpus.Batch(corpus.Validation, batch, context, seed: 0xE7A1, i, device);
            sum += Gpt.Loss(model.Forward(x), y).Item();
        }
        return sum / 8;
    }

    /// <summary>The corpus at the path, else Debian's fortunes, else the embedded README.</summary>
    internal static TextCorpus LoadCorpus(string? path)
    {
        try
        {
            if (path is not null)
                return TextCorpus.FromFile(path);
            return TextCorpus.FromFortunes() ?? EmbeddedData.ReadmeCorpus();
        }
        catch (ArgumentException e)
        {
            throw new UsageException($"--corpus: {e.Message}");
        }
    }

    private static int Sample(CliArgs args)
    {
        var path = args.Optional("load") ?? throw new UsageException("sample needs --load FILE (written by frugal train --model gpt --save FILE)");
        var tokens = args.Int("tokens", 200);
        var temperature = args.Double("temperature", 0.8);
        var seed = args.Int("seed", 1, min: 0);
        var device = TrainCommand.ParseDevice(args.String("device", "cpu"));
        using var file = RunCheckpoint.Read(path, "load");
        var parts = file.Metadata.GetValueOrDefault(ConfigKey)?.Split(';');
        if (parts is not { Length: 10 })
            throw new UsageException($"--load {path}: no {ConfigKey}; it was not written by frugal train --model gpt --save");
        var config = new GptConfig(int.Parse(parts[0], CultureInfo.InvariantCulture), int.Parse(parts[1], CultureInfo.InvariantCulture),
            int.Parse(parts[2], CultureInfo.InvariantCulture), int.Parse(parts[3], CultureInfo.InvariantCulture), int.Parse(parts[4], CultureInfo.InvariantCulture),
            TrainCommand.ParseFormat(parts[5]), TrainCommand.ParseFormat(parts[6]), bool.Parse(parts[8]), bool.Parse(parts[9]), EmbeddingFormat: TrainCommand.ParseFormat(parts[7]));
        using var model = new Gpt(config, device);
        RunCheckpoint.Load(path, model, null, "load");
        model.Eval();
        var text = new List<byte>(Encoding.UTF8.GetBytes(args.String("prompt", "\n")));
        using var noGrad = Autograd.NoGrad();
        for (var n = 0; n < tokens; n++)
        {
            using var scope = TensorScope.Begin();
            var window = text.Skip(Math.Max(0, text.Count - config.Context)).Select(b => (int)b).ToArray();
            var logits = model.Forward(Tensor.FromArray(window, new Shape(1, window.Length), device));
            var last = logits.Narrow(1, window.Length - 1, 1).Reshape(config.Vocab).Mul(1 / temperature);
            var p = F.Softmax(last, 0).ToArray<float>();
            var u = Backends.Philox.Uniform((ulong)seed, (ulong)n);
            var (next, cumulative) = (p.Length - 1, 0.0);
            for (var i = 0; i < p.Length; i++)
            {
                cumulative += p[i];
                if (u < cumulative)
                {
                    next = i;
                    break;
                }
            }
            text.Add((byte)next);
        }
        Console.WriteLine(Encoding.UTF8.GetString([.. text]));
        return 0;
    }
}
