using System.Globalization;
using Frugal.Data;
using Frugal.Formats;
using Frugal.Nn;
using Frugal.Optim;
using Frugal.Training.Sparsity;

namespace Frugal.Models;

/// <summary>One way of training a model on the frontier: a weight format and the training options that change what
/// training holds in memory, written <c>FORMAT[/8bit][/uib][/ckpt][/bf16][/rigl]</c> (e.g. <c>csr:0.1+q4/8bit/uib</c>):
/// 8-bit Adam moments, updates applied during backward (each gradient freed at once), every block a gradient-checkpoint
/// segment, bf16 autocast, RigL's pattern updates (sparse formats with F32 values).</summary>
public sealed record Recipe(WeightFormat Format, int StateBits = 32, bool InBackward = false, bool Checkpoint = false, DType? Precision = null, bool RigL = false)
{
    /// <summary>Dense weights, 32-bit Adam: the reference of the frontier.</summary>
    public static Recipe Dense { get; } = new(WeightFormat.Dense);

    /// <summary>Parses <c>FORMAT[/option...]</c>; throws <see cref="FormatException"/> naming the bad part.</summary>
    public static Recipe Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var parts = text.Split('/');
        var recipe = new Recipe(WeightFormat.Parse(parts[0]));
        foreach (var option in parts.Skip(1))
        {
            recipe = option switch
            {
                "8bit" when recipe.StateBits == 32 => recipe with { StateBits = 8 },
                "uib" when !recipe.InBackward => recipe with { InBackward = true },
                "ckpt" when !recipe.Checkpoint => recipe with { Checkpoint = true },
                "bf16" when recipe.Precision is null => recipe with { Precision = DType.BF16 },
                "rigl" when !recipe.RigL => recipe with { RigL = true },
                "8bit" or "uib" or "ckpt" or "bf16" or "rigl" => throw new FormatException($"'{text}': /{option} is given twice"),
                _ => throw new FormatException($"'{text}': unknown option /{option}; the options are /8bit (8-bit Adam moments), /uib (updates in backward), /ckpt (gradient checkpointing), /bf16 (bf16 autocast) and /rigl (RigL pattern updates)"),
            };
        }
        if (recipe.RigL && recipe.Format is not SparseWeightFormat { Values: null })
            throw new FormatException($"'{text}': /rigl needs a sparse format with F32 values (csr:D or bsr:D:B), not {recipe.Format}");
        return recipe;
    }

    /// <inheritdoc/>
    public override string ToString()
        => Format + (StateBits == 8 ? "/8bit" : "") + (InBackward ? "/uib" : "") + (Checkpoint ? "/ckpt" : "") + (Precision is not null ? "/bf16" : "") + (RigL ? "/rigl" : "");
}

/// <summary>What a frontier trains: a family of models indexed by a width, one data budget for all, and the metric
/// (test accuracy, higher is better, or validation loss, lower is better).</summary>
public abstract class FrontierTask
{
    /// <summary>The model family (mlp, cnn, gpt).</summary>
    public abstract string Model { get; }

    /// <summary>The data the models see.</summary>
    public abstract string Source { get; }

    /// <summary>What is measured after training ("test accuracy", "validation loss").</summary>
    public abstract string Metric { get; }

    /// <summary>True when a larger metric is better.</summary>
    public abstract bool HigherIsBetter { get; }

    /// <summary>The settings every point shares (data budget, batch, rate): part of each point's key, so a changed
    /// setting re-runs the points.</summary>
    public abstract string Settings { get; }

    /// <summary>The model of width <paramref name="width"/> in <paramref name="recipe"/>'s format.</summary>
    public abstract Module Build(Device device, Recipe recipe, int width);

    /// <summary>Trains <paramref name="model"/> with <paramref name="recipe"/>'s options from seed
    /// <paramref name="seed"/> and returns the metric; with <paramref name="probeSteps"/> &gt; 0 stops after that many
    /// steps and measures nothing (NaN).</summary>
    public abstract double Train(Module model, Device device, Recipe recipe, int seed, int probeSteps = 0);

    /// <summary>True when metric <paramref name="a"/> is at least as good as <paramref name="b"/>.</summary>
    public bool AtLeastAsGood(double a, double b) => HigherIsBetter ? a >= b : a <= b;
}

/// <summary>The MLP (784-W-W-10) or CNN (W and 2W channels, an 8W-unit hidden layer) of the Zoo on Fashion-MNIST:
/// Adam with a cosine schedule for a number of epochs, then test accuracy.</summary>
public sealed class ImageFrontier(string model, FashionMnist data, int epochs, int batch, double lr, int maxSteps) : FrontierTask
{
    /// <inheritdoc/>
    public override string Model => model;

    /// <inheritdoc/>
    public override string Source => data.Source;

    /// <inheritdoc/>
    public override string Metric => "test accuracy";

    /// <inheritdoc/>
    public override bool HigherIsBetter => true;

    /// <inheritdoc/>
    public override string Settings => string.Create(CultureInfo.InvariantCulture, $"{model};data={data.Source};epochs={epochs};steps={maxSteps};batch={batch};lr={lr:R}");

    /// <inheritdoc/>
    public override Module Build(Device device, Recipe recipe, int width) => model switch
    {
        "mlp" => Zoo.Mlp(hidden: width, device: device, format: recipe.Format, checkpoint: recipe.Checkpoint),
        "cnn" => Zoo.Cnn(hidden: 8 * width, device: device, format: recipe.Format, checkpoint: recipe.Checkpoint, width: width),
        _ => throw new ArgumentException($"the image frontier trains mlp or cnn, not '{model}'"),
    };

    /// <inheritdoc/>
    public override double Train(Module model, Device device, Recipe recipe, int seed, int probeSteps = 0)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(recipe);
        var stepsPerEpoch = (data.Train.Count + batch - 1) / batch;
        if (maxSteps > 0)
            stepsPerEpoch = Math.Min(stepsPerEpoch, maxSteps);
        var totalSteps = (long)stepsPerEpoch * epochs;
        Rng.ManualSeed((ulong)seed);
        using var opt = new Adam(model.Parameters(), lr, stateBits: recipe.StateBits);
        // RigL's schedule of train --sparsity rigl (a pattern update every 100 steps, drop fraction 0.3, none in the last
        // quarter), at least ten updates' room in a short run.
        var rigl = recipe.RigL ? new RigL(model, opt, updateEvery: (int)Math.Clamp(totalSteps / 10, 2, 100), dropFraction: 0.3, endStep: Math.Max(1, totalSteps * 3 / 4)) : null;
        var trainer = new Trainer(model, opt, device)
        {
            Schedule = new CosineSchedule(totalSteps),
            Precision = recipe.Precision,
            UpdateInBackward = recipe.InBackward,
            AfterStep = rigl is null ? null : () => rigl.Step(),
            StopAtStep = probeSteps,
        };
        var accuracy = double.NaN;
        for (var epoch = 1; epoch <= epochs && !trainer.Stopped; epoch++)
            accuracy = trainer.TrainEpoch(data.Train, data.Test, epoch, batch, seed, maxSteps).TestAccuracy;
        return probeSteps > 0 ? double.NaN : accuracy;
    }
}

/// <summary>The byte-level GPT of <c>train --model gpt</c> at width W (W/32 heads of 32, at least one) on a text
/// corpus: AdamW with warm-up and cosine decay for a number of steps, then the validation loss (nats per byte).</summary>
public sealed class TextFrontier(TextCorpus corpus, int layers, int context, int batch, int steps, double lr) : FrontierTask
{
    /// <inheritdoc/>
    public override string Model => "gpt";

    /// <inheritdoc/>
    public override string Source => corpus.Source;

    /// <inheritdoc/>
    public override string Metric => "validation loss";

    /// <inheritdoc/>
    public override bool HigherIsBetter => false;

    /// <inheritdoc/>
    public override string Settings => string.Create(CultureInfo.InvariantCulture, $"gpt;corpus={corpus.Source};layers={layers};context={context};steps={steps};batch={batch};lr={lr:R}");

    /// <inheritdoc/>
    public override Module Build(Device device, Recipe recipe, int width)
    {
        ArgumentNullException.ThrowIfNull(recipe);
        return new Gpt(new GptConfig(TextCorpus.Vocab, context, layers, width, Math.Max(1, width / 32), recipe.Format, recipe.Format, Checkpoint: recipe.Checkpoint), device);
    }

    /// <inheritdoc/>
    public override double Train(Module model, Device device, Recipe recipe, int seed, int probeSteps = 0)
    {
        ArgumentNullException.ThrowIfNull(recipe);
        if (recipe.RigL)
            throw new ArgumentException("the GPT frontier does not run RigL");
        var gpt = (Gpt)model;
        Rng.ManualSeed((ulong)seed);
        using var opt = GptCommand.CreateOptimizer(gpt, lr, recipe.StateBits);
        var schedule = GptCommand.Schedule(steps);
        var end = probeSteps > 0 ? Math.Min(probeSteps, steps) : steps;
        for (var step = 0; step < end; step++)
            GptCommand.Step(gpt, opt, schedule, corpus, batch, context, seed, step, recipe.InBackward ? 0 : 1, recipe.InBackward, device, recipe.Precision);
        return probeSteps > 0 ? double.NaN : GptCommand.ValidationLoss(gpt, corpus, batch, context, device);
    }
}

/// <summary>A (recipe, width) of the frontier over its seeds.</summary>
/// <param name="Recipe">The recipe's label.</param>
/// <param name="Width">The model width.</param>
/// <param name="Logical">Dense-equivalent parameters (what the model represents).</param>
/// <param name="Stored">Trained values held (a sparse weight's stored values, a low-rank weight's factors).</param>
/// <param name="PeakBytes">The most bytes live at once over the whole run, the largest over the seeds.</param>
/// <param name="Mean">The metric's mean over the seeds.</param>
/// <param name="Std">Its sample standard deviation (0 for one seed).</param>
/// <param name="Seeds">Seeds trained.</param>
public sealed record FrontierRow(string Recipe, int Width, long Logical, long Stored, long PeakBytes, double Mean, double Std, int Seeds)
{
    /// <summary>The rows of the Pareto frontier of <paramref name="rows"/>: no other row holds at most as many bytes
    /// with an at least as good metric and is better in one of the two.</summary>
    public static IReadOnlyList<FrontierRow> Pareto(IEnumerable<FrontierRow> rows, bool higherIsBetter)
    {
        ArgumentNullException.ThrowIfNull(rows);
        var sign = higherIsBetter ? 1.0 : -1.0;
        var frontier = new List<FrontierRow>();
        var best = double.NegativeInfinity;
        foreach (var r in rows.OrderBy(r => r.PeakBytes).ThenByDescending(r => sign * r.Mean))
        {
            if (sign * r.Mean > best)
            {
                frontier.Add(r);
                best = sign * r.Mean;
            }
        }
        return frontier;
    }
}

/// <summary>The headline of a frontier: the dense reference model of N parameters (its peak the budget), and the best
/// compressed model of at least <see cref="Factor"/>·N logical parameters within that budget.</summary>
public sealed record FrontierHeadline(FrontierRow Reference, FrontierRow? Best, double Factor, bool Holds, string Text)
{
    /// <summary>Compares the best compressed row of at least <paramref name="factor"/> times the reference's logical
    /// parameters and at most <paramref name="budget"/> peak bytes with <paramref name="reference"/>.</summary>
    public static FrontierHeadline Of(FrontierRow reference, IEnumerable<FrontierRow> rows, long budget, double factor, FrontierTask task)
    {
        ArgumentNullException.ThrowIfNull(reference);
        ArgumentNullException.ThrowIfNull(rows);
        ArgumentNullException.ThrowIfNull(task);
        var sign = task.HigherIsBetter ? 1.0 : -1.0;
        var best = rows.Where(r => r.Recipe != Recipe.Dense.ToString() && r.PeakBytes <= budget && r.Logical >= factor * reference.Logical)
            .OrderByDescending(r => sign * r.Mean).FirstOrDefault();
        var refText = string.Create(CultureInfo.InvariantCulture,
            $"dense width {reference.Width} ({reference.Logical:N0} parameters = N, peak {reference.PeakBytes:N0} bytes): {task.Metric} {reference.Mean:F4} ± {reference.Std:F4}");
        if (best is null)
            return new FrontierHeadline(reference, null, factor, false, $"does not hold: no compressed model of at least {factor:0.#}N logical parameters was trained within the {budget:N0}-byte budget; {refText}");
        var holds = task.AtLeastAsGood(best.Mean, reference.Mean);
        var text = string.Create(CultureInfo.InvariantCulture,
            $"{(holds ? "holds" : "does not hold")}: {best.Recipe} width {best.Width}, {best.Logical:N0} logical parameters ({(double)best.Logical / reference.Logical:F1}N), peak {best.PeakBytes:N0} bytes ({(double)best.PeakBytes / reference.PeakBytes:F2}× the reference): {task.Metric} {best.Mean:F4} ± {best.Std:F4} over {best.Seeds} seed(s), against {refText}");
        return new FrontierHeadline(reference, best, factor, holds, text);
    }
}
