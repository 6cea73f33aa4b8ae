namespace Frugal.Optim;

/// <summary>
/// Dynamic loss scaling for F16 training (as PyTorch's GradScaler): the loss is multiplied by <see cref="Scale"/>
/// before backward so small gradients survive 16-bit arithmetic; <see cref="Step"/> divides the gradients by it and
/// steps, unless a gradient is infinite or NaN: then the step is skipped, the gradients dropped and the scale lowered
/// by <c>backoffFactor</c>. After <c>growthInterval</c> steps without overflow the scale grows by
/// <c>growthFactor</c>.
/// </summary>
public sealed class GradScaler
{
    private int _goodSteps;

    /// <summary>A scaler starting at <paramref name="initialScale"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A factor or the interval is out of range.</exception>
    public GradScaler(double initialScale = 65536, double growthFactor = 2, double backoffFactor = 0.5, int growthInterval = 2000)
    {
        if (!(initialScale > 0) || !(growthFactor > 1) || !(backoffFactor > 0 && backoffFactor < 1) || growthInterval < 1)
            throw new ArgumentOutOfRangeException(nameof(initialScale), $"GradScaler: need scale > 0, growth > 1, backoff in (0, 1), interval ≥ 1; got {initialScale}, {growthFactor}, {backoffFactor}, {growthInterval}");
        (Scale, GrowthFactor, BackoffFactor, GrowthInterval) = (initialScale, growthFactor, backoffFactor, growthInterval);
    }

    /// <summary>The current loss scale.</summary>
    public double Scale { get; private set; }

    /// <summary>Factor of growth after <see cref="GrowthInterval"/> good steps.</summary>
    public double GrowthFactor { get; }

    /// <summary>Factor applied on overflow.</summary>
    public double BackoffFactor { get; }

    /// <summary>Good steps between growths.</summary>
    public int GrowthInterval { get; }

    /// <summary>Steps skipped because of overflow.</summary>
    public int SkippedSteps { get; private set; }

    /// <summary>The loss times the scale (backward this one).</summary>
    public Tensor ScaleLoss(Tensor loss)
    {
        ArgumentNullException.ThrowIfNull(loss);
        return loss.Mul(Scale);
    }

    /// <summary>Unscales the gradients and steps <paramref name="optimizer"/>; on overflow skips the step, drops the
    /// gradients and lowers the scale. Returns true when it stepped. Call ZeroGrad afterwards as usual.</summary>
    public bool Step(Optimizer optimizer)
    {
        ArgumentNullException.ThrowIfNull(optimizer);
        using var noGrad = Autograd.NoGrad();
        var grads = optimizer.Parameters.Select(p => p.Grad).OfType<Tensor>().ToList();
        foreach (var g in grads)
        {
            using var abs = g.Abs();
            using var max = F.Max(abs, [.. Enumerable.Range(0, g.Rank)]);
            if (!double.IsFinite(max.Item()))
            {
                optimizer.ZeroGrad();
                Scale *= BackoffFactor;
                SkippedSteps++;
                _goodSteps = 0;
                return false;
            }
        }
        foreach (var g in grads)
        {
            using var unscaled = g.Mul(1 / Scale);
            F.CopyInto(g, unscaled);
        }
        optimizer.Step();
        if (++_goodSteps == GrowthInterval)
        {
            Scale *= GrowthFactor;
            _goodSteps = 0;
        }
        return true;
    }
}
