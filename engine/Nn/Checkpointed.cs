namespace Frugal.Nn;

/// <summary>
/// Gradient checkpointing as a module: runs <see cref="Inner"/> as one checkpoint segment
/// (<see cref="Checkpoint.Run"/>): forward keeps only the segment's input, backward recomputes the segment
/// (with the same random draws) and differentiates through the recomputation. Activation memory of the segment is
/// traded for a second forward pass; gradients are the same.
/// </summary>
public sealed class Checkpointed : Module
{
    /// <summary>Checkpoints <paramref name="inner"/> (registered as child "0", so its parameters are this module's).</summary>
    public Checkpointed(Module inner) => Inner = RegisterModule("0", inner ?? throw new ArgumentNullException(nameof(inner)));

    /// <summary>The segment.</summary>
    public Module Inner { get; }

    /// <inheritdoc/>
    protected override Tensor OnForward(Tensor x) => Checkpoint.Run(inputs => Inner.Forward(inputs[0]), x);

    /// <inheritdoc/>
    public override string ToString() => $"Checkpointed({Inner})";
}
