namespace Frugal.Nn;

/// <summary>
/// Cross-layer weight sharing (ALBERT): this module runs <see cref="Target"/>, a module of the same model, a second
/// time with the very same parameters (and pattern, factors or codes: sharing works for every format). It owns
/// nothing and registers no parameter, so the model lists the shared weights once: gradients of both uses
/// accumulate into the one weight, the optimizer updates it once, the state dict stores it once and the allocator
/// counts its bytes once. The target must itself be part of the model (its parameters reach the optimizer there).
/// </summary>
public sealed class Shared : Module
{
    /// <summary>A second use of <paramref name="target"/>.</summary>
    public Shared(Module target)
    {
        ArgumentNullException.ThrowIfNull(target);
        Target = target;
    }

    /// <summary>The module whose weights are used.</summary>
    public Module Target { get; }

    /// <summary>A second use of <paramref name="target"/> in place of <paramref name="template"/>, a module built for
    /// that place (e.g. <c>new Linear(512, 512)</c>): the two must be the same kind of module (same format) with
    /// parameters of the same names, shapes, dtypes and devices. The template is disposed either way.</summary>
    /// <exception cref="ArgumentException">They differ; the message names both.</exception>
    public static Shared Like(Module target, Module template)
    {
        ArgumentNullException.ThrowIfNull(target);
        ArgumentNullException.ThrowIfNull(template);
        using (template)
        {
            Check(target, template);
            return new Shared(target);
        }
    }

    private static void Check(Module target, Module template)
    {
        if (target.GetType() != template.GetType())
            throw new ArgumentException($"Shared: {template} cannot use the weights of {target}: they are different kinds of layer");
        var (mineFormats, theirFormats) = (template.Weights().Select(w => w.Weight.Format).ToList(), target.Weights().Select(w => w.Weight.Format).ToList());
        if (!mineFormats.SequenceEqual(theirFormats))
            throw new ArgumentException($"Shared: {template} cannot use the weights of {target}: their weights are in other formats ({string.Join(", ", mineFormats)} vs {string.Join(", ", theirFormats)})");
        var mine = template.NamedParameters().Select(p => (Name: p.Name[(p.Name.LastIndexOf('.') + 1)..], p.Parameter)).ToList();
        var theirs = target.NamedParameters().Select(p => (Name: p.Name[(p.Name.LastIndexOf('.') + 1)..], p.Parameter)).ToList();
        if (mine.Count != theirs.Count)
            throw new ArgumentException($"Shared: {template} has {mine.Count} parameters, {target} has {theirs.Count}");
        foreach (var ((name, a), (otherName, b)) in mine.Zip(theirs))
        {
            if (name != otherName || a.Shape != b.Shape || a.DType != b.DType || a.Device != b.Device)
                throw new ArgumentException($"Shared: {template}'s {name} {a.Describe()} on {a.Device} cannot be {target}'s {otherName} {b.Describe()} on {b.Device}");
        }
    }

    /// <inheritdoc/>
    protected override Tensor OnForward(Tensor x) => Target.Forward(x);

    /// <inheritdoc/>
    public override string ToString() => $"Shared({Target})";
}
