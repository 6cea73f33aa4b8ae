using Frugal.Formats;
using Frugal.Memory;

namespace Frugal.Nn;

/// <summary>
/// A layer whose weight matrix [Rows, Cols] is stored in a sparse format (CSR, or BSR with dense blocks): only the
/// stored values are a parameter (<see cref="Values"/>, named "weight"), so its gradient and optimizer state have
/// one entry per stored value; the pattern's row pointers and column indices are FormatMeta buffers. The values
/// start as PyTorch's default dense initialisation restricted to the pattern, which makes the layer the dense layer
/// with the same zeros. Training methods (<see cref="Training.Sparsity.DynamicSparsity"/>) change the pattern
/// between steps with <see cref="UpdatePattern"/>.
/// </summary>
public abstract class SparseLayer : Module
{
    /// <summary>A layer of <paramref name="format"/> with <paramref name="pattern"/> (a block pattern of
    /// [rows / block, cols / block]) and default-initialised values.</summary>
    /// <exception cref="ArgumentException">The pattern does not cover [rows, cols] in the format's blocks.</exception>
    private protected SparseLayer(SparseFormat format, CsrPattern pattern, int rows, int cols, int biasSize, bool bias, Device? device)
    {
        ArgumentNullException.ThrowIfNull(format);
        ArgumentNullException.ThrowIfNull(pattern);
        format.CheckShape(rows, cols);
        if (pattern.Rows * format.Block != rows || pattern.Cols * format.Block != cols)
            throw new ArgumentException($"{GetType().Name}: a [{pattern.Rows}, {pattern.Cols}] pattern of {format.Name} blocks does not cover the [{rows}, {cols}] weight");
        (Format, Pattern, Rows, Cols) = (format, pattern, rows, cols);
        RowPtr = RegisterBuffer("weight_row_ptr", MemoryCategory.FormatMeta, () => Tensor.FromArray(pattern.RowPtr.ToArray(), new Shape(pattern.Rows + 1), device));
        ColIdx = RegisterBuffer("weight_col_idx", MemoryCategory.FormatMeta, () => Tensor.FromArray(pattern.ColIdx.ToArray(), new Shape(pattern.Nnz), device));
        Values = RegisterParameter("weight", () => Init.Default(new Shape(StoredValues(pattern)), cols, device));
        if (bias)
            Bias = RegisterParameter("bias", () => Init.Default(new Shape(biasSize), cols, device));
    }

    /// <summary>The weight's format (<see cref="TensorFormat.Csr"/> or a <see cref="TensorFormat.Bsr"/>).</summary>
    public SparseFormat Format { get; }

    /// <inheritdoc/>
    public override string WeightFormatName => Format.Name;

    /// <summary>Block side of the format (1 for CSR).</summary>
    public int Block => Format.Block;

    /// <summary>Rows of the weight matrix (output features or channels).</summary>
    public int Rows { get; }

    /// <summary>Columns of the weight matrix (input features, or input channels × kernel area).</summary>
    public int Cols { get; }

    /// <summary>The pattern of stored blocks (host copy; entries are single values for CSR).</summary>
    public CsrPattern Pattern { get; private set; }

    /// <summary>Row pointers (I32, FormatMeta).</summary>
    public Tensor RowPtr { get; private set; }

    /// <summary>Block column indices (I32, FormatMeta).</summary>
    public Tensor ColIdx { get; private set; }

    /// <summary>The stored weight values, block² per stored block in pattern order (the trained parameter).</summary>
    public Tensor Values { get; private set; }

    /// <summary>Bias, or null.</summary>
    public Tensor? Bias { get; }

    /// <summary>Stored fraction of the weight.</summary>
    public double Density => Pattern.Density;

    /// <summary>The weight as a kernel operand.</summary>
    protected SparseWeight Weight => new(Rows, Cols, Block, RowPtr, ColIdx, Values);

    /// <summary>A regrowth request the next backward answers (set by RigL and SNFS before an update step), or null.</summary>
    internal GrowthScores? PendingGrowth { get; set; }

    /// <summary>The pending growth request with the pattern it was made for, as the sparse ops take it.</summary>
    private protected (GrowthScores, CsrPattern)? Growth => PendingGrowth is { } g ? (g, Pattern) : null;

    /// <summary>Replaces the pattern, moving the values (and, when given, the optimizer's state of
    /// <see cref="Values"/>): new stored block k takes old block <paramref name="source"/>[k], or starts at zero
    /// where that is -1. The number of stored blocks may change (redistribution across layers); the parameter is then
    /// a new tensor, also in the optimizer. Call between steps, after the gradient is dropped.</summary>
    /// <exception cref="ArgumentException">The new pattern's shape differs, the map is wrong, or a gradient is pending.</exception>
    public void UpdatePattern(CsrPattern pattern, ReadOnlySpan<int> source, Optim.Optimizer? optimizer = null)
    {
        ArgumentNullException.ThrowIfNull(pattern);
        var name = $"{GetType().Name}.UpdatePattern";
        if (pattern.Rows != Pattern.Rows || pattern.Cols != Pattern.Cols)
            throw new ArgumentException($"{name}: new pattern [{pattern.Rows}, {pattern.Cols}] does not replace [{Pattern.Rows}, {Pattern.Cols}]");
        if (source.Length != pattern.Nnz)
            throw new ArgumentException($"{name}: {source.Length} map entries for {pattern.Nnz} stored blocks");
        if (Values.Grad is not null)
            throw new ArgumentException($"{name}: the weight still has a gradient; update the pattern after the optimizer step and ZeroGrad");
        var area = Block * Block;
        var valueMap = new int[(long)pattern.Nnz * area];
        for (var k = 0; k < pattern.Nnz; k++)
        {
            var from = source[k];
            if (from < -1 || from >= Pattern.Nnz)
                throw new ArgumentException($"{name}: source index {from} is outside [-1, {Pattern.Nnz})");
            for (var t = 0; t < area; t++)
                valueMap[k * area + t] = from < 0 ? -1 : from * area + t;
        }
        var old = Values.ToArray<float>();
        var moved = valueMap.Select(i => i < 0 ? 0f : old[i]).ToArray();
        if (pattern.Nnz == Pattern.Nnz)
        {
            optimizer?.RemapState(Values, valueMap);
            using (Autograd.Autograd.NoGrad())
            {
                using var values = Tensor.FromArray(moved, Values.Shape, Values.Device);
                using var rowPtr = Tensor.FromArray(pattern.RowPtr.ToArray(), RowPtr.Shape, RowPtr.Device);
                using var colIdx = Tensor.FromArray(pattern.ColIdx.ToArray(), ColIdx.Shape, ColIdx.Device);
                F.CopyInto(Values, values);
                F.CopyInto(RowPtr, rowPtr);
                F.CopyInto(ColIdx, colIdx);
            }
        }
        else
        {
            var device = Values.Device;
            var values = ReplaceParameter(Values, () => Tensor.FromArray(moved, new Shape(moved.Length), device));
            optimizer?.ReplaceParameter(Values, values, valueMap);
            Values.Dispose();
            Values = values;
            ColIdx = ReplaceBuffer(ColIdx, () => Tensor.FromArray(pattern.ColIdx.ToArray(), new Shape(pattern.Nnz), device));
            using var rowPtr = Tensor.FromArray(pattern.RowPtr.ToArray(), RowPtr.Shape, RowPtr.Device);
            using (Autograd.Autograd.NoGrad())
                F.CopyInto(RowPtr, rowPtr);
        }
        Pattern = pattern;
    }

    /// <inheritdoc/>
    /// <remarks>The stored pattern may hold another number of blocks (SNFS moves weights between layers); it is
    /// validated as a pattern of this layer's block grid, and the values must have its size.</remarks>
    protected internal override void CheckOwn(IO.SafeTensorsFile file)
    {
        var pattern = StoredPattern(file);
        CheckStored(file, Values, new Shape(checked(pattern.Nnz * Block * Block)));
        if (Bias is not null)
            CheckStored(file, Bias, Bias.Shape);
    }

    /// <inheritdoc/>
    protected internal override void LoadOwn(IO.SafeTensorsFile file, Optim.Optimizer? optimizer)
    {
        var pattern = StoredPattern(file);
        if (pattern.Nnz == Pattern.Nnz)
        {
            LoadStored(file, Values);
            LoadStored(file, ColIdx);
        }
        else
        {
            var (device, old, colName) = (Values.Device, Values, ColIdx.Name!);
            Values = ReplaceParameter(old, () => file.ToTensor(old.Name!, device));
            optimizer?.Forget(old, Values);
            old.Dispose();
            ColIdx = ReplaceBuffer(ColIdx, () => file.ToTensor(colName, device));
        }
        LoadStored(file, RowPtr);
        if (Bias is not null)
            LoadStored(file, Bias);
        Pattern = pattern;
    }

    /// <summary>The pattern stored in <paramref name="file"/>, validated against this layer's block grid.</summary>
    private CsrPattern StoredPattern(IO.SafeTensorsFile file)
    {
        CheckStored(file, RowPtr, RowPtr.Shape);
        if (!file.Contains(ColIdx.Name!) || file.Entry(ColIdx.Name!) is not { DType: DType.I32, Shape.Rank: 1 })
            throw new ArgumentException($"the checkpoint has no i32 vector '{ColIdx.Name}'");
        var rowPtr = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, int>(file.Bytes(RowPtr.Name!));
        var colIdx = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, int>(file.Bytes(ColIdx.Name!));
        try
        {
            return CsrPattern.FromParts(Pattern.Rows, Pattern.Cols, rowPtr, colIdx);
        }
        catch (ArgumentException e)
        {
            throw new ArgumentException($"'{RowPtr.Name}' and '{ColIdx.Name}': {e.Message}", e);
        }
    }

    /// <summary>Bytes this layer stores per category: the values and the bias as Parameter, the row pointers and
    /// column indices as FormatMeta (the format's formula, <see cref="TensorFormat.StorageBytes"/>). Its gradient
    /// and each optimizer moment have the Parameter bytes again (one entry per stored value), never the dense size.</summary>
    public IReadOnlyDictionary<MemoryCategory, long> StorageBytes()
    {
        var bytes = new Dictionary<MemoryCategory, long>(Format.StorageBytes(Rows, Cols, Values.Numel, DType.F32));
        bytes[MemoryCategory.Parameter] += 4L * (Bias?.Numel ?? 0);
        return bytes;
    }

    /// <summary>The weight matrix as a dense [Rows, Cols] tensor (for checks and export; never used in training).</summary>
    public Tensor DenseWeight() => Tensor.FromArray(Format.ToDense(Pattern, Values.ToArray<float>(), Rows, Cols), new Shape(Rows, Cols), Values.Device);

    /// <summary>Copies the dense weight's values on the pattern and the bias from a dense layer's tensors.</summary>
    private protected void CopyFromDense(Tensor denseWeight, Tensor? denseBias)
    {
        using (Autograd.Autograd.NoGrad())
        {
            using var values = Tensor.FromArray(Format.FromDense(denseWeight.ToArray<float>(), Rows, Cols, Pattern), Values.Shape, Values.Device);
            F.CopyInto(Values, values);
            if (denseBias is not null && Bias is not null)
                F.CopyInto(Bias, denseBias);
        }
    }

    private int StoredValues(CsrPattern pattern) => checked(pattern.Nnz * Block * Block);
}

/// <summary>A linear layer y = x·Wᵀ + b whose weight [out, in] is sparse (see <see cref="SparseLayer"/>).</summary>
public sealed class SparseLinear : SparseLayer
{
    /// <summary>A layer of density <paramref name="density"/> with a seeded random pattern (round(density · blocks per
    /// row) blocks in every block row) in <paramref name="format"/> (CSR by default).</summary>
    /// <exception cref="ArgumentException">The sizes are not a whole number of the format's blocks.</exception>
    public SparseLinear(int inFeatures, int outFeatures, double density, bool bias = true, Device? device = null, SparseFormat? format = null)
        : this((format ?? TensorFormat.Csr).RandomPattern(outFeatures, inFeatures, density, (int)(Init.NextSeed() & int.MaxValue)), bias, device, format)
    {
    }

    /// <summary>A layer with the given block pattern ([out / block, in / block]) and default-initialised values.</summary>
    public SparseLinear(CsrPattern pattern, bool bias = true, Device? device = null, SparseFormat? format = null)
        : base(format ?? TensorFormat.Csr, pattern, pattern.Rows * (format?.Block ?? 1), pattern.Cols * (format?.Block ?? 1), pattern.Rows * (format?.Block ?? 1), bias, device)
    {
    }

    /// <summary>Input width.</summary>
    public int InFeatures => Cols;

    /// <summary>Output width.</summary>
    public int OutFeatures => Rows;

    /// <summary>The dense layer restricted to <paramref name="pattern"/>: its weights on the stored blocks and its bias
    /// (pruning at initialisation, e.g. SNIP).</summary>
    /// <exception cref="ArgumentException">The pattern's shape is not the layer's.</exception>
    public static SparseLinear FromDense(Linear dense, CsrPattern pattern, SparseFormat? format = null)
    {
        ArgumentNullException.ThrowIfNull(dense);
        ArgumentNullException.ThrowIfNull(pattern);
        var block = format?.Block ?? 1;
        if (pattern.Rows * block != dense.OutFeatures || pattern.Cols * block != dense.InFeatures)
            throw new ArgumentException($"SparseLinear.FromDense: a [{pattern.Rows}, {pattern.Cols}] pattern of {block}×{block} blocks does not fit Linear({dense.InFeatures}, {dense.OutFeatures})");
        var layer = new SparseLinear(pattern, dense.Bias is not null, dense.Weight.Device, format);
        layer.CopyFromDense(dense.Weight, dense.Bias);
        return layer;
    }

    /// <inheritdoc/>
    protected override Tensor OnForward(Tensor x)
    {
        if (x.Rank == 2)
            return F.SparseLinear(x, Weight, Bias, Growth);
        // Leading dimensions fold into the batch.
        using var flat = x.Reshape(-1, x.Shape[^1]);
        using var y = F.SparseLinear(flat, Weight, Bias, Growth);
        return y.Reshape([.. x.Shape.Dims[..^1], Rows]);
    }

    /// <inheritdoc/>
    public override string ToString() => $"SparseLinear({Cols}, {Rows}, {Format.Name}, density: {Density:F3})";
}

/// <summary>A 2-D convolution whose weight [out, in, k, k], flattened to [out, in·k·k], is sparse (see
/// <see cref="SparseLayer"/>): im2col columns times the sparse weight.</summary>
public sealed class SparseConv2d : SparseLayer
{
    /// <summary>A square-kernel convolution of density <paramref name="density"/> with a seeded random pattern in
    /// <paramref name="format"/> (CSR by default).</summary>
    /// <exception cref="ArgumentException">The sizes are not a whole number of the format's blocks.</exception>
    public SparseConv2d(int inChannels, int outChannels, int kernel, double density, int stride = 1, int padding = 0, int dilation = 1,
        bool bias = true, Device? device = null, SparseFormat? format = null)
        : this((format ?? TensorFormat.Csr).RandomPattern(outChannels, inChannels * kernel * kernel, density, (int)(Init.NextSeed() & int.MaxValue)),
            kernel, stride, padding, dilation, bias, device, format)
    {
    }

    /// <summary>A convolution with the given block pattern of its [out, in·k·k] weight.</summary>
    public SparseConv2d(CsrPattern pattern, int kernel, int stride = 1, int padding = 0, int dilation = 1, bool bias = true, Device? device = null, SparseFormat? format = null)
        : base(format ?? TensorFormat.Csr, pattern, pattern.Rows * (format?.Block ?? 1), pattern.Cols * (format?.Block ?? 1), pattern.Rows * (format?.Block ?? 1), bias, device)
    {
        if (kernel < 1 || Cols % (kernel * kernel) != 0)
            throw new ArgumentException($"SparseConv2d: a [{Rows}, {Cols}] weight is not [out, in·{kernel}·{kernel}]");
        (Kernel, Stride, Padding, Dilation) = (kernel, stride, padding, dilation);
    }

    /// <summary>Kernel side.</summary>
    public int Kernel { get; }

    /// <summary>Stride.</summary>
    public int Stride { get; }

    /// <summary>Zero padding on each side.</summary>
    public int Padding { get; }

    /// <summary>Dilation.</summary>
    public int Dilation { get; }

    /// <summary>The dense convolution restricted to <paramref name="pattern"/> (of its [out, in·k·k] weight).</summary>
    /// <exception cref="ArgumentException">The pattern's shape is not the layer's.</exception>
    public static SparseConv2d FromDense(Conv2d dense, CsrPattern pattern, SparseFormat? format = null)
    {
        ArgumentNullException.ThrowIfNull(dense);
        ArgumentNullException.ThrowIfNull(pattern);
        var s = dense.Weight.Shape;
        var layer = new SparseConv2d(pattern, s[2], dense.Stride, dense.Padding, dense.Dilation, dense.Bias is not null, dense.Weight.Device, format);
        if (layer.Rows != s[0] || layer.Cols != s[1] * s[2] * s[3])
        {
            layer.Dispose();
            throw new ArgumentException($"SparseConv2d.FromDense: the pattern gives a [{layer.Rows}, {layer.Cols}] weight, the convolution's is [{s[0]}, {s[1] * s[2] * s[3]}]");
        }
        layer.CopyFromDense(dense.Weight, dense.Bias);
        return layer;
    }

    /// <inheritdoc/>
    protected override Tensor OnForward(Tensor x) => F.SparseConv2d(x, Weight, Kernel, Bias, Stride, Padding, Dilation, Growth);

    /// <inheritdoc/>
    public override string ToString() => $"SparseConv2d({Cols / (Kernel * Kernel)}, {Rows}, kernel: {Kernel}, {Format.Name}, density: {Density:F3})";
}
