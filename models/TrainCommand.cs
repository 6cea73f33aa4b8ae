using Frugal.Formats;
using System.Globalization;
using Frugal.Data;
using Frugal.Memory;
using Frugal.Nn;
using Frugal.Optim;
using Spectre.Console;

namespace Frugal.Models;

/// <summary><c>frugal train</c>: trains a model on Fashion-MNIST with a live progress bar, per-epoch test accuracy,
/// and the allocator's peak bytes per category at the end.</summary>
internal static class TrainCommand
{
    private const string FormatHelp = "dense; csr:D for CSR weights of density D in (0, 1); bsr:D:B for B×B blocks (B = 8, 16, 32), a fraction D of the blocks stored (a layer that is not whole blocks stays dense); lowrank:R for U·Vᵀ factors of rank R, lowrank:F for factors holding a fraction F of each layer's parameters (the head stays dense); q8, q4, q2, q1 for packed 8/4/2/1-bit codes (every layer), then any of :G (a scale per G inputs; default 64 where it divides a layer's inputs, else :row, one per row), :masterfree (default: codes updated by stochastic rounding, no F32 copy) or :latent (F32 latent weights, straight-through estimator), :symmetric|:asymmetric|:ternary|:binary (default symmetric for q8/q4, ternary q2, binary q1), :aK (linear layers quantize their inputs to K = 1..7 bits, DoReFa); A+B composes formats (e.g. csr:0.1+q4)";

    /// <summary>Options of the image models only (mlp, mlp-shared, cnn).</summary>
    internal static readonly CliOption[] ImageOptions =
    [
        new("epochs", "N", "mlp, cnn: passes over the training set   default 1"),
        new("steps-per-epoch", "N", "mlp, cnn: stop each epoch after N steps (quick runs)   default: the whole epoch"),
        new("optimizer", "NAME", "mlp, cnn: adam, adamw or sgd (momentum 0.9); gpt trains with AdamW   default adam"),
        new("schedule", "NAME", "mlp, cnn: cosine (the rate decays from --lr to 0 over the run) or constant   default cosine"),
        CliOption.Data,
        new("sparsity", "NAME", "mlp, cnn: static (a random pattern); snip (pruned at init by |w·g| on one batch); set, rigl, snfs (the pattern updates every 100 steps, drop 0.3, cosine decay, frozen for the last quarter; snfs also moves weights between layers by momentum)   default static"),
        new("distribution", "NAME", "mlp, cnn: how sparse layers share the density: uniform (every layer at it) or erk (by the sum of a weight's sizes over their product)   default uniform"),
        new("teacher", "FORMAT", "mlp, cnn: first train the same model in FORMAT (e.g. dense) with the same options, then train the student by distillation from it (born-again when the formats are equal)   default: none"),
        new("teacher-epochs", "N", "mlp, cnn: the teacher's epochs   default --epochs"),
        new("kd-temperature", "T", "mlp, cnn: the distillation's softmax temperature   default 4"),
        new("kd-alpha", "A", "mlp, cnn: the soft loss's weight α in [0, 1]   default 0.9"),
        new("precision", "P", "mlp, cnn: fp32; bf16 or fp16: linear layers round inputs and weights to 16 bits and keep those for backward (master weights, gradients, losses F32); fp16 adds dynamic loss scaling   default fp32"),
        new("update-in-backward", null, "mlp, cnn: apply each weight's update during backward, as soon as its gradient is complete, and free that gradient at once (not with --precision fp16)"),
        new("metrics", "FILE", "mlp, cnn: write one JSON line per step (loss) and per epoch (losses, test accuracy, time) to FILE, and FILE's name with .png: the loss per step with the test accuracy per epoch"),
    ];

    /// <summary><c>frugal train</c>: the image models here, <c>--model gpt</c> in <see cref="GptCommand"/>.</summary>
    public static readonly CliCommand Command = new("train",
        "Trains a model: mlp (784-512-512-10), mlp-shared (its hidden layers one shared weight) or cnn (2 conv + 2 fc) on Fashion-MNIST, with a progress bar and test accuracy per epoch; or gpt, a byte-level transformer on a text corpus. Ends with the allocator's peak bytes per category.",
        [
            new("model", "NAME", "mlp, mlp-shared, cnn or gpt   default mlp"),
            new("format", "FORMAT", $"the weight format: {FormatHelp}; gpt: of every attention and MLP layer   default dense"),
            new("batch", "B", "examples (gpt: sequences) per step   default 128 (gpt 32)"),
            new("lr", "X", "peak learning rate   default adam/adamw: 0.001 (mlp, gpt), 0.003 (cnn); sgd: 0.05"),
            new("seed", "S", "initialisation, shuffling and sampling seed   default 1"),
            CliOption.Device,
            CliOption.OptimizerBits,
            new("clip-grad-norm", "X", "scale the gradients so that their global L2 norm is at most X before each step (not with --update-in-backward or --precision fp16)   default: no clipping (gpt 1)"),
            new("checkpoint", null, "every block a gradient-checkpoint segment: its activations recomputed in backward instead of kept (the same results, less Activation memory, more time)"),
            new("save", "FILE", "write a checkpoint (safetensors: model, optimizer state, step, random stream) to FILE when training ends or stops (gpt: also for frugal sample)"),
            new("resume", "FILE", "continue the run saved in FILE exactly, given the same options (not with --teacher, --sparsity set or --precision fp16)"),
            new("stop-after", "N", "stop after N optimizer steps in all (then --save): an interrupted run"),
            .. ImageOptions,
            .. GptCommand.Options,
        ],
        Run);

    private static int Run(CliArgs args)
    {
        if (args.String("model", "mlp") == "gpt")
            return GptCommand.Train(args);
        args.Refuse(GptCommand.Options.Select(o => o.Name).Where(n => n != "steps"), "is for --model gpt");
        if (args.Any(["steps"]))
            throw new UsageException("--steps is the length of a --model gpt run; an image model trains for --epochs: give --steps-per-epoch N to cap each epoch");
        var modelName = args.Choice("model", "mlp", [.. Zoo.Names, "gpt"]);
        var epochs = args.Int("epochs", 1);
        var batch = args.Int("batch", 128);
        var optName = args.Choice("optimizer", "adam", ["adam", "adamw", "sgd"]);
        var lr = args.Double("lr", optName == "sgd" ? 0.05 : modelName == "cnn" ? 3e-3 : 1e-3);
        var seed = args.Int("seed", 1, min: 0);
        var maxSteps = args.Int("steps-per-epoch", 0, min: 0);
        var scheduleName = args.Choice("schedule", "cosine", ["cosine", "constant"]);
        var dataArg = args.Optional("data");

        var data = dataArg == "embedded" ? EmbeddedData.FashionMnistSlice() : EmbeddedData.LoadFashionMnist(dataArg);
        AnsiConsole.MarkupLine($"[bold]data[/]: {Markup.Escape(data.Source)} ({data.Train.Count} train, {data.Test.Count} test)");
        if (dataArg is null && data.Source.StartsWith("embedded", StringComparison.Ordinal))
            AnsiConsole.MarkupLine("[yellow]Fashion-MNIST is not installed: using the embedded slice (apt-get install dataset-fashion-mnist for the full set).[/]");

        var device = ParseDevice(args.String("device", "cpu"));
        Init.ManualSeed((ulong)seed);
        Rng.ManualSeed((ulong)seed);
        var format = ParseFormat(args.String("format", "dense"));
        var sparsity = args.Choice("sparsity", "static", ["static", "snip", "set", "rigl", "snfs"]);
        if (sparsity != "static" && format is not SparseWeightFormat { Values: null })
            throw new UsageException($"--sparsity {sparsity} needs sparse weights with F32 values: give --format csr:D or bsr:D:B");
        var checkpoint = args.Flag("checkpoint");
        if (checkpoint && sparsity == "snip")
            throw new UsageException("--checkpoint is not built for --sparsity snip (SNIP prunes the dense model's layers, not checkpoint segments)");
        var distribution = args.Choice("distribution", "uniform", ["uniform", "erk"]);
        if (distribution != "uniform" && format is not SparseWeightFormat)
            throw new UsageException($"--distribution {distribution} needs sparse weights: give --format csr:D or bsr:D:B");
        var erk = distribution == "erk";
        var precision = ParsePrecision(args.Choice("precision", "fp32", ["fp32", "bf16", "fp16"]));
        var stateBits = int.Parse(args.Choice("optimizer-bits", "32", ["32", "8"]), CultureInfo.InvariantCulture);
        var inBackward = args.Flag("update-in-backward");
        if (inBackward && precision == DType.F16)
            throw new UsageException("--update-in-backward cannot be combined with --precision fp16: loss scaling must see every gradient before any update");
        if (stateBits != 32 && sparsity == "snfs")
            throw new UsageException("--sparsity snfs reads Adam's first moment, which --optimizer-bits 8 keeps as 8-bit codes: use 32-bit optimizer states with snfs");
        if (stateBits != 32 && optName == "sgd")
            throw new UsageException("--optimizer-bits 8 is for adam and adamw (SGD's momentum stays 32-bit)");
        var teacherFormat = args.Optional("teacher") is { } tf ? ParseFormat(tf) : null;
        var temperature = args.Double("kd-temperature", 4);
        var alpha = args.Double("kd-alpha", 0.9);
        var teacherEpochs = args.Int("teacher-epochs", epochs);
        if (teacherFormat is null && (args.Optional("kd-temperature") ?? args.Optional("kd-alpha") ?? args.Optional("teacher-epochs")) is not null)
            throw new UsageException("--teacher-epochs, --kd-temperature and --kd-alpha need a teacher: give --teacher FORMAT");
        if (!(temperature > 0) || !(alpha >= 0 && alpha <= 1))
            throw new UsageException($"--kd-temperature must be > 0 and --kd-alpha in [0, 1], got {temperature} and {alpha}");
        var clip = args.Double("clip-grad-norm", 0);
        if (clip > 0 && inBackward)
            throw new UsageException("--clip-grad-norm cannot be combined with --update-in-backward: each update is applied before all gradients exist, so their global norm is not known");
        if (clip > 0 && precision == DType.F16)
            throw new UsageException("--clip-grad-norm cannot be combined with --precision fp16 (it would clip loss-scaled gradients)");
        var savePath = args.Optional("save");
        if (savePath is not null)
            CliFiles.CheckFile(savePath, "save");
        var metricsPath = args.Optional("metrics");
        if (metricsPath is not null)
            CliFiles.CheckFile(metricsPath, "metrics");
        var resumePath = args.Optional("resume");
        var stopAfter = args.Int("stop-after", 0, min: 0);
        // What a resumed run must share with the run it continues (anything that changes the steps it takes).
        var options = string.Join(";", $"model={modelName}", $"format={format}", $"sparsity={sparsity}", $"distribution={distribution}",
            $"optimizer={optName}", string.Create(CultureInfo.InvariantCulture, $"lr={lr:R}"), $"schedule={scheduleName}", $"seed={seed}",
            $"batch={batch}", $"epochs={epochs}", $"steps={maxSteps}", $"precision={(precision is { } pp ? pp.Name() : "fp32")}",
            $"optimizer-bits={stateBits}", $"update-in-backward={inBackward}", string.Create(CultureInfo.InvariantCulture, $"clip={clip:R}"), $"data={data.Source}");
        long resumedStep = 0;
        if (resumePath is not null)
        {
            if (teacherFormat is not null || sparsity == "set" || precision == DType.F16)
                throw new UsageException("--resume is not built for --teacher (the teacher is not checkpointed), --sparsity set (its random regrowth stream is not) or --precision fp16 (the loss scale is not)");
            resumedStep = RunCheckpoint.Step(resumePath, options);
        }
        var stepsPerEpoch = (data.Train.Count + batch - 1) / batch;
        if (maxSteps > 0)
            stepsPerEpoch = Math.Min(stepsPerEpoch, maxSteps);
        var totalSteps = (long)stepsPerEpoch * epochs;

        // The teacher, when asked for: the same model and options in its own format, trained first.
        Sequential? teacherModel = null;
        if (teacherFormat is not null)
        {
            Init.ManualSeed((ulong)seed + 1000);
            teacherModel = Build(() => Zoo.Create(modelName, device, teacherFormat, checkpoint: checkpoint));
            using var teacherOpt = CreateOptimizer(optName, teacherModel, lr, stateBits);
            AnsiConsole.MarkupLine($"[bold]teacher[/]: {modelName}, {teacherModel.ParameterCount():N0} parameters ({teacherFormat}), trained first");
            Fit(teacherModel, teacherOpt, null, null, teacherEpochs, "teacher ");
            Init.ManualSeed((ulong)seed);
            Rng.ManualSeed((ulong)seed);
        }
        using var ownedTeacher = teacherModel;
        var teacher = teacherModel is null ? null : new Training.Distillation.Teacher(teacherModel, temperature, alpha);

        var model = Build(() => sparsity == "snip"
            ? SnipModel(modelName, device, format, erk, data, batch, seed)
            : Zoo.Create(modelName, device, format, erk, checkpoint));
        using var owned = model;
        using var opt = CreateOptimizer(optName, model, lr, stateBits);
        AnsiConsole.MarkupLine($"[bold]model[/]: {modelName}, {model.ParameterCount():N0} parameters ({format}), {optName} lr {lr.ToString(CultureInfo.InvariantCulture)} ({scheduleName}), batch {batch}, device {device}{(precision is { } pr ? $", mixed precision {pr.Name()}" : "")}{(stateBits == 8 ? ", 8-bit optimizer states" : "")}");
        if (format != WeightFormat.Dense)
            AnsiConsole.MarkupLine("[bold]layers[/]: " + Markup.Escape(string.Join(", ", model.Layers.Where(l => l is Linear or Conv2d or Shared))));
        if (teacher is not null)
            AnsiConsole.MarkupLine(CultureInfo.InvariantCulture, "[bold]distillation[/]: T {0}, α {1}; the teacher's {2:N0} parameter bytes are in the Parameter row below", temperature, alpha, 4 * teacherModel!.ParameterCount());
        device.Allocator.ResetPeak();
        var endStep = Math.Max(1, totalSteps * 3 / 4);
        Training.Sparsity.DynamicSparsity? dynamic = sparsity switch
        {
            "set" => new Training.Sparsity.Set(model, opt, updateEvery: 100, dropFraction: 0.3, endStep: endStep, seed: seed),
            "rigl" => new Training.Sparsity.RigL(model, opt, updateEvery: 100, dropFraction: 0.3, endStep: endStep),
            "snfs" => new Training.Sparsity.Snfs(model, opt, updateEvery: 100, dropFraction: 0.3, endStep: endStep),
            _ => null,
        };
        if (resumePath is not null)
        {
            var meta = RunCheckpoint.Load(resumePath, model, opt, "resume");
            dynamic?.Resume(RunCheckpoint.Long(meta, "sparsity.step", resumePath), (int)RunCheckpoint.Long(meta, "sparsity.updates", resumePath));
            AnsiConsole.MarkupLine($"[bold]resumed[/] {Markup.Escape(resumePath)} after step {resumedStep}");
        }
        using var metrics = metricsPath is null ? null : new MetricsLog(metricsPath);
        var studentTrainer = Fit(model, opt, dynamic, teacher is null ? null : teacher.Loss, epochs, "", resumedStep, stopAfter, metrics);
        if (metrics is not null)
        {
            metrics.Plot($"{modelName} {format} on {data.Source}");
            AnsiConsole.MarkupLine($"[bold]metrics[/]: {Markup.Escape(metrics.Path)} and {Markup.Escape(metrics.PlotPath)}");
        }
        if (studentTrainer.Stopped)
            AnsiConsole.MarkupLine($"stopped after step {studentTrainer.GlobalStep} (--stop-after)");
        if (savePath is not null)
        {
            var meta = new Dictionary<string, string>();
            if (dynamic is not null)
            {
                meta["sparsity.step"] = dynamic.StepCount.ToString(CultureInfo.InvariantCulture);
                meta["sparsity.updates"] = dynamic.Updates.ToString(CultureInfo.InvariantCulture);
            }
            RunCheckpoint.Save(savePath, model, opt, options, studentTrainer.GlobalStep, meta);
            AnsiConsole.MarkupLine($"[bold]saved[/] {Markup.Escape(savePath)} (step {studentTrainer.GlobalStep})");
        }
        AnsiConsole.Write(MemoryTable(device.Allocator.Stats()));
        return 0;

        Trainer Fit(Sequential m, Optimizer o, Training.Sparsity.DynamicSparsity? dyn, Func<Tensor, Tensor, Tensor, Tensor>? loss, int runEpochs, string who, long startStep = 0, long stopAt = 0, MetricsLog? log = null)
        {
            var trainer = new Trainer(m, o, device)
            {
                GlobalStep = startStep,
                StopAtStep = stopAt,
                ClipGradNorm = clip,
                Schedule = scheduleName == "cosine" ? new CosineSchedule((long)stepsPerEpoch * runEpochs) : null,
                Precision = precision,
                Scaler = precision == DType.F16 ? new GradScaler() : null,
                UpdateInBackward = inBackward,
                AfterStep = dyn is null ? null : () => dyn.Step(),
                Loss = loss,
                OnLoss = log is null ? null : log.Step,
            };
            for (var epoch = (int)(startStep / stepsPerEpoch) + 1; epoch <= runEpochs && !trainer.Stopped; epoch++)
            {
                var r = RunEpoch(trainer, data, epoch, runEpochs, batch, seed, maxSteps);
                if (double.IsNaN(r.TestAccuracy))
                    break;
                log?.Epoch(r, trainer.GlobalStep);
                AnsiConsole.MarkupLine(CultureInfo.InvariantCulture,
                    "{6}epoch {0}/{1}: train loss {2:F4}, test accuracy [bold]{3:F4}[/], {4:F1} s, {5:F0} examples/s",
                    r.Epoch, runEpochs, r.TrainLoss, r.TestAccuracy, r.Seconds, r.ExamplesPerSecond, who);
            }
            return trainer;
        }
    }

    private static Sequential Build(Func<Sequential> create)
    {
        try
        {
            return create();
        }
        catch (ArgumentException e)
        {
            throw new UsageException(e.Message);
        }
    }

    /// <summary>The autocast dtype of a <c>--precision</c> value (null for fp32).</summary>
    internal static DType? ParsePrecision(string precision) => precision switch
    {
        "bf16" => DType.BF16,
        "fp16" => DType.F16,
        _ => null,
    };

    private static Optimizer CreateOptimizer(string name, Module model, double lr, int stateBits) => name switch
    {
        "sgd" => new SGD(model.Parameters(), lr, momentum: 0.9),
        "adamw" => new AdamW(model.Parameters(), lr, stateBits: stateBits),
        _ => new Adam(model.Parameters(), lr, stateBits: stateBits),
    };

    /// <summary>The model pruned at initialisation by SNIP on the first training batch.</summary>
    private static Sequential SnipModel(string modelName, Device device, WeightFormat format, bool erk, FashionMnist data, int batch, int seed)
    {
        var dense = Zoo.Create(modelName, device);
        foreach (var (x, y) in data.Train.Batches(batch, shuffle: true, seed: seed, device: device))
        {
            using var scope = TensorScope.Begin();
            F.CrossEntropy(dense.Forward(x), y).Backward();
            break;
        }
        // On success the dense Sequential is not disposed: the layers it still holds move into the sparse model.
        try
        {
            return new Sequential([.. Training.Sparsity.Snip.Prune(dense.Layers, Zoo.Densities(modelName, format, erk), ((SparseWeightFormat)format).Layout)]);
        }
        catch (ArgumentException)
        {
            dense.Dispose();
            throw;
        }
    }

    internal static WeightFormat ParseFormat(string format)
    {
        try
        {
            return WeightFormat.Parse(format);
        }
        catch (FormatException e)
        {
            throw new UsageException("--format: " + e.Message);
        }
    }

    internal static Device ParseDevice(string name)
    {
        if (name == "cpu")
            return Device.Cpu;
        if (name == "cuda" || (name.StartsWith("cuda:", StringComparison.Ordinal) && int.TryParse(name.AsSpan(5), NumberStyles.None, CultureInfo.InvariantCulture, out _)))
        {
            var index = name == "cuda" ? 0 : int.Parse(name.AsSpan(5), CultureInfo.InvariantCulture);
            try
            {
                return Device.Cuda(index);
            }
            catch (Exception e) when (e is InvalidOperationException or ArgumentOutOfRangeException)
            {
                throw new DeviceUnavailableException(e.Message);
            }
        }
        throw new UsageException($"--device must be cpu, cuda or cuda:N, got '{name}'");
    }

    private static EpochResult RunEpoch(Trainer trainer, FashionMnist data, int epoch, int epochs, int batch, int seed, int maxSteps)
    {
        if (!AnsiConsole.Profile.Capabilities.Interactive)
        {
            // Redirected output (CI, logs): a line every 10% instead of a redrawn bar.
            var last = -1;
            trainer.OnStep = (step, steps, loss, rate) =>
            {
                var pct = step * 10 / steps;
                if (pct == last)
                    return;
                last = pct;
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  epoch {epoch} step {step}/{steps} loss {loss:F4} {rate:F0} examples/s"));
            };
            return trainer.TrainEpoch(data.Train, data.Test, epoch, batch, seed, maxSteps);
        }
        EpochResult? result = null;
        AnsiConsole.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
            .Start(ctx =>
            {
                var task = ctx.AddTask($"epoch {epoch}/{epochs}");
                trainer.OnStep = (step, steps, loss, rate) =>
                {
                    task.MaxValue = steps;
                    task.Value = step;
                    task.Description = string.Create(CultureInfo.InvariantCulture, $"epoch {epoch}/{epochs} loss {loss:F4} {rate,6:F0} ex/s");
                };
                result = trainer.TrainEpoch(data.Train, data.Test, epoch, batch, seed, maxSteps);
            });
        return result!;
    }

    /// <summary>Peak and current bytes per category, as a console table.</summary>
    public static Table MemoryTable(MemoryStats stats)
    {
        var table = new Table().Title("allocator memory by category").AddColumn("category").AddColumn(new TableColumn("peak").RightAligned())
            .AddColumn(new TableColumn("peak bytes").RightAligned()).AddColumn(new TableColumn("current").RightAligned());
        foreach (var c in MemoryCategories.All)
        {
            table.AddRow(c.ToString(), MemoryStats.FormatBytes(stats.Peak(c)), stats.Peak(c).ToString("N0", CultureInfo.InvariantCulture),
                MemoryStats.FormatBytes(stats.Current(c)));
        }
        table.AddRow("[bold]total (at once)[/]", MemoryStats.FormatBytes(stats.PeakTotal), stats.PeakTotal.ToString("N0", CultureInfo.InvariantCulture),
            MemoryStats.FormatBytes(stats.CurrentTotal));
        table.Caption($"cache: {MemoryStats.FormatBytes(stats.CachedBytes)} free of {MemoryStats.FormatBytes(stats.ReservedBytes)} reserved");
        return table;
    }
}
