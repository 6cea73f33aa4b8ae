namespace Frugal.Optim;

/// <summary>A learning-rate schedule: a multiplier of the base learning rate as a function of the step.</summary>
public abstract class LrSchedule
{
    /// <summary>Multiplier at <paramref name="step"/> (0-based).</summary>
    public abstract double Factor(long step);

    /// <summary>Sets the optimizer's learning rate for <paramref name="step"/>.</summary>
    public void Apply(Optimizer optimizer, long step) => optimizer.Lr = optimizer.BaseLr * Factor(step);
}

/// <summary>Cosine annealing from 1 to <c>minFactor</c> over <c>totalSteps</c>, then flat.</summary>
public sealed class CosineSchedule : LrSchedule
{
    /// <summary>Creates the schedule.</summary>
    public CosineSchedule(long totalSteps, double minFactor = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(totalSteps);
        (TotalSteps, MinFactor) = (totalSteps, minFactor);
    }

    /// <summary>Steps of the decay.</summary>
    public long TotalSteps { get; }

    /// <summary>Final multiplier.</summary>
    public double MinFactor { get; }

    /// <inheritdoc/>
    public override double Factor(long step)
    {
        var t = Math.Min(step, TotalSteps) / (double)TotalSteps;
        return MinFactor + (1 - MinFactor) * 0.5 * (1 + Math.Cos(Math.PI * t));
    }
}

/// <summary>Linear warm-up from 1/warmupSteps to 1 over <c>warmupSteps</c>, then <c>after</c> (shifted to start at 0), or flat.</summary>
public sealed class WarmupSchedule : LrSchedule
{
    /// <summary>Creates the schedule.</summary>
    public WarmupSchedule(long warmupSteps, LrSchedule? after = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(warmupSteps);
        (WarmupSteps, After) = (warmupSteps, after);
    }

    /// <summary>Steps of the ramp.</summary>
    public long WarmupSteps { get; }

    /// <summary>The schedule that follows the ramp.</summary>
    public LrSchedule? After { get; }

    /// <inheritdoc/>
    public override double Factor(long step)
        => step < WarmupSteps ? (step + 1) / (double)WarmupSteps : After?.Factor(step - WarmupSteps) ?? 1.0;
}
