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

    /// <summary>The dense layer restricted to <paramref name="pattern"/>: its weights at the stored entries and its bias
    /// (pruning at initialisation, e.g. SNIP).</summary>
    /// <exception cref="ArgumentException">The pattern's shape is not the layer's.</exception>
    public static SparseLinear FromDense(Linear dense, CsrPattern pattern)
    {
        ArgumentNullException.ThrowIfNull(dense);
        ArgumentNullException.ThrowIfNull(pattern);
        if (pattern.Rows != dense.OutFeatures || pattern.Cols != dense.InFeatures)
            throw new ArgumentException($"SparseLinear.FromDense: pattern [{pattern.Rows}, {pattern.Cols}] does not fit Linear({dense.InFeatures}, {dense.OutFeatures})");
        var layer = new SparseLinear(pattern, dense.Bias is not null, dense.Weight.Device);
        using (Autograd.Autograd.NoGrad())
        {
            using var values = Tensor.FromArray(pattern.Gather(dense.Weight.ToArray<float>()), layer.Values.Shape, layer.Values.Device);
            F.CopyInto(layer.Values, values);
            if (dense.Bias is { } bias)
                F.CopyInto(layer.Bias!, bias);
        }
        return layer;
    }

    /// <summary>The sparsity pattern (host copy).</summary>
    public CsrPattern Pattern { get; private set; }

    /// <summary>Row pointers [out + 1] (I32, FormatMeta).</summary>
    public Tensor RowPtr { get; }

    /// <summary>Column indices [nnz] (I32, FormatMeta).</summary>
    public Tensor ColIdx { get; }

    /// <summary>The stored weight values [nnz], in pattern order (the trained parameter).</summary>
    public Tensor Values { get; }

    /// <summary>Bias [out], or null.</summary>
    public Tensor? Bias { get; }

    /// <summary>Replaces the pattern by one with as many entries, moving the values (and, when given, the
    /// optimizer's state of <see cref="Values"/>): new entry k takes old entry <paramref name="source"/>[k], or starts
    /// at zero where that is -1. Call between steps, after the gradient is dropped.</summary>
    /// <exception cref="ArgumentException">The new pattern's shape or size differs, the map is wrong, or a gradient is pending.</exception>
    public void UpdatePattern(CsrPattern pattern, ReadOnlySpan<int> source, Optim.Optimizer? optimizer = null)
    {
        ArgumentNullException.ThrowIfNull(pattern);
        if (pattern.Rows != Pattern.Rows || pattern.Cols != Pattern.Cols || pattern.Nnz != Pattern.Nnz)
            throw new ArgumentException($"SparseLinear.UpdatePattern: new pattern [{pattern.Rows}, {pattern.Cols}] with {pattern.Nnz} entries does not replace [{Pattern.Rows}, {Pattern.Cols}] with {Pattern.Nnz}");
        if (source.Length != pattern.Nnz)
            throw new ArgumentException($"SparseLinear.UpdatePattern: {source.Length} map entries for {pattern.Nnz} stored values");
        if (Values.Grad is not null)
            throw new ArgumentException("SparseLinear.UpdatePattern: the weight still has a gradient; update the pattern after the optimizer step and ZeroGrad");
        var old = Values.ToArray<float>();
        var moved = new float[old.Length];
        for (var k = 0; k < moved.Length; k++)
        {
            var from = source[k];
            if (from < -1 || from >= old.Length)
                throw new ArgumentException($"SparseLinear.UpdatePattern: source index {from} is outside [-1, {old.Length})");
            moved[k] = from < 0 ? 0 : old[from];
        }
        optimizer?.RemapState(Values, source);
        using (Autograd.Autograd.NoGrad())
        {
            using var values = Tensor.FromArray(moved, Values.Shape, Values.Device);
            using var rowPtr = Tensor.FromArray(pattern.RowPtr.ToArray(), RowPtr.Shape, RowPtr.Device);
            using var colIdx = Tensor.FromArray(pattern.ColIdx.ToArray(), ColIdx.Shape, ColIdx.Device);
            F.CopyInto(Values, values);
            F.CopyInto(RowPtr, rowPtr);
            F.CopyInto(ColIdx, colIdx);
        }
        Pattern = pattern;
    }

    /// <summary>Bytes this layer stores per category: the values and the bias as Parameter, the row pointers and
    /// column indices as FormatMeta. Its gradient and each optimizer moment have the Parameter bytes again (one
    /// entry per stored value), never the dense [out, in].</summary>
    public IReadOnlyDictionary<MemoryCategory, long> StorageBytes() => new Dictionary<MemoryCategory, long>
    {
        [MemoryCategory.Parameter] = 4L * (Pattern.Nnz + (Bias?.Numel ?? 0)),
        [MemoryCategory.FormatMeta] = Pattern.IndexBytes,
    };

    /// <summary>A regrowth request the next backward answers (set by RigL before an update step), or null.</summary>
    internal GrowthScores? PendingGrowth { get; set; }

    /// <summary>The weight as a dense [out, in] tensor (for checks and export; never used in training).</summary>
    public Tensor DenseWeight() => Tensor.FromArray(Pattern.ToDense(Values.ToArray<float>()), new Shape(Pattern.Rows, Pattern.Cols), Values.Device);

    /// <inheritdoc/>
    protected override Tensor OnForward(Tensor x)
    {
        var growth = PendingGrowth is { } g ? (g, Pattern) : ((GrowthScores, CsrPattern)?)null;
        if (x.Rank == 2)
            return F.SparseLinear(x, Pattern.Rows, Pattern.Cols, RowPtr, ColIdx, Values, Bias, growth);
        // Leading dimensions fold into the batch.
        using var flat = x.Reshape(-1, x.Shape[^1]);
        using var y = F.SparseLinear(flat, Pattern.Rows, Pattern.Cols, RowPtr, ColIdx, Values, Bias, growth);
        return y.Reshape([.. x.Shape.Dims[..^1], Pattern.Rows]);
    }
}
