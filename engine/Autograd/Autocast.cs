namespace Frugal;

/// <summary>
/// Mixed precision, autocast style: inside <see cref="Enable"/>, linear layers (<see cref="F.Linear(Tensor, Tensor, Tensor?)"/>) round their
/// F32 input and weight to BF16 or F16, multiply with F32 accumulation and keep the 16-bit copies, not the F32
/// tensors, for backward; gradients, master weights, reductions and losses stay F32. On the CPU the product is
/// emulated (the rounded values are multiplied in F32, which is what 16-bit tensor cores compute), but the rounding
/// and the saved bytes are real. With F16, scale the loss (<see cref="Optim.GradScaler"/>).
/// </summary>
public static class Autocast
{
    [ThreadStatic] private static DType? t_dtype;

    /// <summary>The 16-bit type linear layers compute in on this thread, or null outside autocast.</summary>
    public static DType? Current => t_dtype;

    /// <summary>Runs linear layers in <paramref name="dtype"/> (BF16 or F16) until the scope is disposed.</summary>
    /// <exception cref="ArgumentException">Another dtype.</exception>
    public static Scope Enable(DType dtype)
    {
        if (dtype is not (DType.BF16 or DType.F16))
            throw new ArgumentException($"Autocast: computes in bf16 or f16, not {dtype.Name()}");
        var scope = new Scope(t_dtype);
        t_dtype = dtype;
        return scope;
    }

    /// <summary>Restores the previous setting.</summary>
    public readonly struct Scope : IDisposable
    {
        private readonly DType? _previous;

        internal Scope(DType? previous) => _previous = previous;

        /// <inheritdoc/>
        public void Dispose() => t_dtype = _previous;
    }
}
