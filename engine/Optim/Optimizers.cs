using Frugal.Backends;

namespace Frugal.Optim;

/// <summary>Stochastic gradient descent with optional momentum, dampening, Nesterov and L2 weight decay (PyTorch's SGD).</summary>
public sealed class SGD : Optimizer
{
    /// <summary>Creates the optimizer.</summary>
    public SGD(IEnumerable<Tensor> parameters, double lr, double momentum = 0, double dampening = 0, double weightDecay = 0, bool nesterov = false)
        : base(parameters, lr)
    {
        if (momentum < 0 || weightDecay < 0)
            throw new ArgumentOutOfRangeException(nameof(momentum), $"SGD: momentum {momentum} and weight decay {weightDecay} must be >= 0");
        if (nesterov && (momentum <= 0 || dampening != 0))
            throw new ArgumentException("SGD: Nesterov momentum requires momentum > 0 and zero dampening");
        (Momentum, Dampening, WeightDecay, Nesterov) = (momentum, dampening, weightDecay, nesterov);
    }

    /// <summary>Momentum factor.</summary>
    public double Momentum { get; }

    /// <summary>Dampening of the momentum.</summary>
    public double Dampening { get; }

    /// <summary>L2 penalty.</summary>
    public double WeightDecay { get; }

    /// <summary>Nesterov momentum.</summary>
    public bool Nesterov { get; }

    /// <inheritdoc/>
    protected override string? MomentumState => Momentum != 0 ? "momentum_buffer" : null;

    /// <inheritdoc/>
    protected override void Update(Tensor parameter, Tensor grad)
    {
        var first = false;
        var buf = Momentum != 0 ? State(parameter, "momentum_buffer", out first).View : default;
        parameter.Backend.SgdStep(parameter.View, grad.View, buf, new SgdArgs(Lr, Momentum, Dampening, WeightDecay, Nesterov, first));
    }
}

/// <summary>Adam (Kingma and Ba) with L2 weight decay added to the gradient, as PyTorch's Adam.</summary>
public class Adam : Optimizer
{
    /// <summary>Creates the optimizer.</summary>
    public Adam(IEnumerable<Tensor> parameters, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weightDecay = 0)
        : this(parameters, lr, beta1, beta2, eps, weightDecay, decoupled: false)
    {
    }

    /// <summary>Shared constructor of Adam and AdamW.</summary>
    protected Adam(IEnumerable<Tensor> parameters, double lr, double beta1, double beta2, double eps, double weightDecay, bool decoupled)
        : base(parameters, lr)
    {
        if (beta1 is < 0 or >= 1 || beta2 is < 0 or >= 1 || eps <= 0 || weightDecay < 0)
            throw new ArgumentOutOfRangeException(nameof(beta1), $"{GetType().Name}: invalid betas ({beta1}, {beta2}), eps {eps} or weight decay {weightDecay}");
        (Beta1, Beta2, Eps, WeightDecay, Decoupled) = (beta1, beta2, eps, weightDecay, decoupled);
    }

    /// <summary>First-moment decay.</summary>
    public double Beta1 { get; }

    /// <summary>Second-moment decay.</summary>
    public double Beta2 { get; }

    /// <summary>Denominator epsilon.</summary>
    public double Eps { get; }

    /// <summary>Weight decay (L2 for Adam, decoupled for AdamW).</summary>
    public double WeightDecay { get; }

    /// <summary>True for AdamW's decoupled weight decay.</summary>
    public bool Decoupled { get; }

    /// <inheritdoc/>
    protected override string? MomentumState => "exp_avg";

    /// <inheritdoc/>
    protected override bool IsSecondMoment(string state) => state == "exp_avg_sq";

    /// <inheritdoc/>
    protected override void Update(Tensor parameter, Tensor grad)
    {
        var m = State(parameter, "exp_avg", out _);
        var v = State(parameter, "exp_avg_sq", out _);
        parameter.Backend.AdamStep(parameter.View, grad.View, m.View, v.View,
            new AdamArgs(Lr, Beta1, Beta2, Eps, WeightDecay, Decoupled, StepCount));
    }
}

/// <summary>AdamW (Loshchilov and Hutter): Adam with decoupled weight decay p ← p·(1 - lr·wd).</summary>
public sealed class AdamW : Adam
{
    /// <summary>Creates the optimizer (PyTorch's default weight decay 0.01).</summary>
    public AdamW(IEnumerable<Tensor> parameters, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weightDecay = 0.01)
        : base(parameters, lr, beta1, beta2, eps, weightDecay, decoupled: true)
    {
    }
}
