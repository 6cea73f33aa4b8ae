namespace Frugal.Memory;

/// <summary>What a buffer is for. Every allocation carries one, so training memory can be attributed.</summary>
public enum MemoryCategory
{
    /// <summary>Trained weights (for compressed formats: the stored values or codes).</summary>
    Parameter,
    /// <summary>Gradients, of parameters and of intermediate values during backward.</summary>
    Gradient,
    /// <summary>Optimizer state: momentum, Adam moments.</summary>
    OptimizerState,
    /// <summary>Forward results, including those autograd saves for backward.</summary>
    Activation,
    /// <summary>Transient scratch of a kernel (im2col columns, packed panels) or of a training method.</summary>
    Workspace,
    /// <summary>Format metadata: indices, row pointers, scales, zero points.</summary>
    FormatMeta,
    /// <summary>Anything else: input batches, user-created tensors.</summary>
    Other,
}

/// <summary>The categories in declaration order, for tables.</summary>
public static class MemoryCategories
{
    /// <summary>Every category.</summary>
    public static IReadOnlyList<MemoryCategory> All { get; } = Enum.GetValues<MemoryCategory>();
}
