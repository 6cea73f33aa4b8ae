using Frugal.Formats;
using Frugal.Memory;

namespace Frugal.Nn;

/// <summary>
/// A linear layer whose weight [out, in] is stored as CSR: only the stored values are parameters (so gradients and
/// optimizer state have one entry per stored value), the pattern's row pointers and column indices are FormatMeta.
/// The values start as PyTorch's default dense initialisation restricted to the pattern, which makes the layer the
/// dense layer with the same zeros.
/// </summary>
public sealed class SparseLinear : Module
{
    /// <summary>A layer of density <paramref name="density"/> with a seeded random pattern (round(density·in)
    /// entries per output row).</summary>
    public SparseLinear(int inFeatures, int outFeatures, double density, bool bias = true, Device? device = null)
        : this(CsrPattern.Random(outFeatures, inFeatures, density, (int)(Init.NextSeed() & int.MaxValue)), bias, device)
    {
    }

    /// <summary>A layer with the given pattern ([out, in]) and default-initialised values.</summary>
    public SparseLinear(CsrPattern pattern, bool bias = true, Device? device = null)
    {
        ArgumentNullException.ThrowIfNull(pattern);
        Pattern = pattern;
        var (outF, inF) = (pattern.Rows, pattern.Cols);
        RowPtr = RegisterBuffer("weight_row_ptr", MemoryCategory.FormatMeta, () => Tensor.FromArray(pattern.RowPtr.ToArray(), new Shape(outF + 1), device));
        ColIdx = RegisterBuffer("weight_col_idx", MemoryCategory.FormatMeta, () => Tensor.FromArray(pattern.ColIdx.ToArray(), new Shape(pattern.Nnz), device));
        Values = RegisterParameter("weight_values", () => Init.Default(new Shape(pattern.Nnz), inF, device));
        if (bias)
            Bias = RegisterParameter("bias", () => Init.Default(new Shape(outF), inF, device));
    }

    /// <summary>The sparsity pattern (host copy).</summary>
    public CsrPattern Pattern { get; }

    /// <summary>Row pointers [out + 1] (I32, FormatMeta).</summary>
    public Tensor RowPtr { get; }

    /// <summary>Column indices [nnz] (I32, FormatMeta).</summary>
    public Tensor ColIdx { get; }

    /// <summary>The stored weight values [nnz], in pattern order (the trained parameter).</summary>
    public Tensor Values { get; }

    /// <summary>Bias [out], or null.</summary>
    public Tensor? Bias { get; }

    /// <summary>The weight as a dense [out, in] tensor (for checks and export; never used in training).</summary>
    public Tensor DenseWeight() => Tensor.FromArray(Pattern.ToDense(Values.ToArray<float>()), new Shape(Pattern.Rows, Pattern.Cols), Values.Device);

    /// <inheritdoc/>
    protected override Tensor OnForward(Tensor x)
    {
        if (x.Rank == 2)
            return F.SparseLinear(x, Pattern.Rows, Pattern.Cols, RowPtr, ColIdx, Values, Bias);
        // Leading dimensions fold into the batch.
        using var flat = x.Reshape(-1, x.Shape[^1]);
        using var y = F.SparseLinear(flat, Pattern.Rows, Pattern.Cols, RowPtr, ColIdx, Values, Bias);
        return y.Reshape([.. x.Shape.Dims[..^1], Pattern.Rows]);
    }
}
