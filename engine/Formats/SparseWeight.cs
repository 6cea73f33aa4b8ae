using System.Globalization;
using Frugal.Memory;

namespace Frugal.Formats;

/// <summary>The sparse formats' settings: CSR or BSR (<see cref="Layout"/>), the stored fraction, and the format of
/// the stored values (F32, or a quantized format: <c>csr:0.1+q4</c>).</summary>
public sealed record SparseWeightFormat : WeightFormat
{
    internal SparseWeightFormat(SparseFormat layout, double density, QuantizedWeightFormat? values = null)
        => (Layout, _density, QuantizedValues) = (layout, density, values);

    private readonly double _density;

    /// <summary>CSR (block 1) or BSR with its block side.</summary>
    public SparseFormat Layout { get; }

    /// <inheritdoc/>
    public override double Density => _density;

    /// <summary>The quantized format of the stored values, or null for F32 values.</summary>
    public QuantizedWeightFormat? QuantizedValues { get; private init; }

    /// <inheritdoc/>
    public override WeightFormat? Values => QuantizedValues;

    /// <inheritdoc/>
    public override string Key => QuantizedValues is null ? Layout.Name : $"{Layout.Name}+{QuantizedValues.Key}";

    /// <inheritdoc/>
    public override WeightFormat WithDensity(double density) => new SparseWeightFormat(Layout, CheckDensity(density), QuantizedValues);

    /// <inheritdoc/>
    public override WeightFormat StoredAs(WeightFormat values) => this with { QuantizedValues = QuantizedWeightFormat.ForStoredValues(Layout.Name, values) };

    /// <inheritdoc/>
    public override bool Fits(Shape shape) => shape.Rank >= 2 && Layout.Fits(shape[0], checked((int)(shape.Numel / shape[0])));

    /// <inheritdoc/>
    public override Weight Create(Shape shape, WeightInit init, Device? device = null, DType dtype = DType.F32)
    {
        ArgumentNullException.ThrowIfNull(init);
        if (dtype != DType.F32)
            throw new ArgumentException($"{this}: sparse weights are f32, not {dtype.Name()}");
        var (rows, cols) = Matrix(shape);
        var pattern = Layout.RandomPattern(rows, cols, Density, (int)(Nn.Init.NextSeed() & int.MaxValue));
        return new SparseWeight(shape, Layout, pattern, QuantizedValues, init, device);
    }

    /// <summary>[rows, cols] of a logical shape [rows, ...].</summary>
    internal static (int Rows, int Cols) Matrix(Shape shape) => shape.Rank >= 2
        ? (shape[0], checked((int)(shape.Numel / shape[0])))
        : throw new ArgumentException($"a sparse weight is a matrix [rows, ...], not {shape}");

    internal static double CheckDensity(double density) => density > 0 && density <= 1
        ? density
        : throw new ArgumentOutOfRangeException(nameof(density), $"density must be in (0, 1], got {density}");

    /// <inheritdoc/>
    public override string ToString() => (Layout.Block == 1
            ? string.Create(CultureInfo.InvariantCulture, $"csr:{Density}")
            : string.Create(CultureInfo.InvariantCulture, $"bsr:{Density}:{Layout.Block}"))
        + (QuantizedValues is null ? "" : "+" + QuantizedValues);
}

/// <summary>
/// A weight matrix [Rows, Cols] (a convolution's [out, in·k·k]) in a sparse format (CSR, or BSR with dense blocks):
/// only the stored values are trained (named after the weight), so its gradient and optimizer state have one entry
/// per stored value; the pattern's row pointers and column indices are FormatMeta parts ("_row_ptr", "_col_idx").
/// The values start as the dense initialisation restricted to the pattern, which makes the layer the dense layer with
/// the same zeros. Products: cuSPARSE/CPU SpMM for X·Wᵀ and dY·W, SDDMM for the values' gradient on the pattern only.
/// The stored values may themselves be quantized (a composition): they are then codes and scales, dequantized into a
/// transient F32 vector of the stored size for the sparse kernels, their gradient passing to the codes.
/// Training methods (<see cref="Training.Sparsity.DynamicSparsity"/>) change the pattern between steps with
/// <see cref="UpdatePattern"/>.
/// </summary>
public sealed class SparseWeight : Weight
{
    private Weight _values;

    internal SparseWeight(Shape shape, SparseFormat layout, CsrPattern pattern, QuantizedWeightFormat? valueFormat, WeightInit init, Device? device)
        : base(shape)
    {
        (Layout, ValueFormat) = (layout, valueFormat);
        CheckPatternFits(pattern);
        Pattern = pattern;
        // The pattern's indices first, then the values (the allocation order of the layers before weights owned
        // their format, so models built from one seed stay the same).
        RowPtr = NewPart("_row_ptr", false, () => Tensor.FromArray(pattern.RowPtr.ToArray(), new Shape(pattern.Rows + 1), device));
        ColIdx = NewPart("_col_idx", false, () => Tensor.FromArray(pattern.ColIdx.ToArray(), new Shape(pattern.Nnz), device));
        _values = NewValues(new Shape(ValueCount(pattern.Nnz)), init, device);
    }

    /// <summary>CSR (block 1) or BSR.</summary>
    public SparseFormat Layout { get; }

    /// <summary>Block side (1 for CSR).</summary>
    public int Block => Layout.Block;

    /// <summary>The quantized format of the stored values, or null for F32 values.</summary>
    public QuantizedWeightFormat? ValueFormat { get; }

    /// <inheritdoc/>
    public override WeightFormat Format => new SparseWeightFormat(Layout, Density, ValueFormat);

    /// <inheritdoc/>
    public override string FormatName => ValueFormat is null ? Layout.Name : $"{Layout.Name}+{_values.FormatName}";

    /// <summary>The pattern of stored blocks (host copy; entries are single values for CSR).</summary>
    public CsrPattern Pattern { get; private set; }

    /// <summary>Stored fraction of the weight.</summary>
    public double Density => Pattern.Density;

    /// <summary>Row pointers (I32, FormatMeta).</summary>
    public Tensor RowPtr { get; private set; }

    /// <summary>Block column indices (I32, FormatMeta).</summary>
    public Tensor ColIdx { get; private set; }

    /// <summary>The stored F32 values, block² per stored block in pattern order (the trained parameter).</summary>
    /// <exception cref="NotSupportedException">The values are quantized (see <see cref="StoredValues"/>).</exception>
    public Tensor Values => _values is DenseWeight d
        ? d.Value
        : throw new NotSupportedException($"{FormatName}: the stored values are {_values.FormatName} codes, not an F32 tensor; use StoredValues");

    /// <summary>The stored values as a weight of their own (a dense vector, or quantized codes and scales).</summary>
    public Weight StoredValues => _values;

    /// <summary>A regrowth request the next backward answers (set by RigL and SNFS before an update step), or null.</summary>
    internal GrowthScores? PendingGrowth { get; set; }

    /// <inheritdoc/>
    public override IEnumerable<WeightPart> Parts => [.. _values.Parts, new("_row_ptr", RowPtr, false), new("_col_idx", ColIdx, false)];

    /// <summary>The weight as a kernel operand with F32 values, carrying the pending regrowth request.</summary>
    private SparseOperand Operand(Tensor values) => new(Rows, Cols, Block, RowPtr, ColIdx, values) { Growth = PendingGrowth is { } g ? (g, Pattern) : null };

    /// <summary>Runs <paramref name="body"/> with the F32 values: the parameter itself, or a composition's values
    /// dequantized into a transient (differentiable into the codes) that the op keeps for its backward.</summary>
    private Tensor WithValues(Func<SparseOperand, Tensor> body)
    {
        if (_values is DenseWeight d)
            return body(Operand(d.Value));
        using var values = _values.ToDense();
        return body(Operand(values));
    }

    /// <inheritdoc/>
    protected override Tensor LinearMatrix(Tensor x, Tensor? bias) => WithValues(w => F.SparseLinear(x, w, bias));

    /// <inheritdoc/>
    public override Tensor Conv2d(Tensor x, Tensor? bias, ConvOptions options)
    {
        if (Shape.Rank != 4 || Shape[2] != Shape[3])
            throw new ShapeMismatchException($"Conv2d: a {FormatName} weight {Shape} is not [out, in, k, k]");
        return WithValues(w => F.SparseConv2d(x, w, Shape[2], bias, options.Stride, options.Padding, options.Dilation));
    }

    /// <inheritdoc/>
    /// <remarks>Through the sparse product (<see cref="Weight.DenseThrough"/>), so the values' gradient is the sparse
    /// kernels' own (SDDMM on the pattern).</remarks>
    public override Tensor ToDense() => WithValues(w => DenseThrough(eye => F.SparseLinear(eye, w with { Growth = null })));

    /// <summary>
    /// Replaces the pattern, moving the values (and, when given, the optimizer's state of <see cref="Values"/>): new
    /// stored block k takes old block <paramref name="source"/>[k], or starts at zero where that is -1. The number of
    /// stored blocks may change (redistribution across layers); the parameter is then a new tensor, also in the
    /// optimizer. Call between steps, after the gradient is dropped.
    /// </summary>
    /// <exception cref="ArgumentException">The new pattern's shape differs, the map is wrong, or a gradient is pending.</exception>
    /// <exception cref="NotSupportedException">The values are quantized (dynamic sparsity moves F32 values).</exception>
    public void UpdatePattern(CsrPattern pattern, ReadOnlySpan<int> source, Optim.Optimizer? optimizer = null)
    {
        ArgumentNullException.ThrowIfNull(pattern);
        var name = $"{Name}.UpdatePattern";
        var valuesTensor = _values is DenseWeight dense
            ? dense.Value
            : throw new NotSupportedException($"{name}: a {FormatName} weight stores quantized values; dynamic sparsity moves F32 values (use {Layout.Name} without +q)");
        if (pattern.Rows != Pattern.Rows || pattern.Cols != Pattern.Cols)
            throw new ArgumentException($"{name}: new pattern [{pattern.Rows}, {pattern.Cols}] does not replace [{Pattern.Rows}, {Pattern.Cols}]");
        if (source.Length != pattern.Nnz)
            throw new ArgumentException($"{name}: {source.Length} map entries for {pattern.Nnz} stored blocks");
        if (valuesTensor.Grad is not null)
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
        var old = valuesTensor.ToArray<float>();
        var moved = valueMap.Select(i => i < 0 ? 0f : old[i]).ToArray();
        using (Autograd.NoGrad())
        {
            if (pattern.Nnz == Pattern.Nnz)
            {
                optimizer?.RemapState(valuesTensor, valueMap);
                using var values = Tensor.FromArray(moved, valuesTensor.Shape, valuesTensor.Device);
                using var colIdx = Tensor.FromArray(pattern.ColIdx.ToArray(), ColIdx.Shape, ColIdx.Device);
                F.CopyInto(valuesTensor, values);
                F.CopyInto(ColIdx, colIdx);
            }
            else
            {
                var device = valuesTensor.Device;
                var replacement = NewDenseWeight("", () => Tensor.FromArray(moved, new Shape(moved.Length), device));
                optimizer?.ReplaceParameter(valuesTensor, replacement.Value, valueMap);
                _values.Dispose();
                _values = replacement;
                ReplaceIndices(() => Tensor.FromArray(pattern.ColIdx.ToArray(), new Shape(pattern.Nnz), device));
            }
            using var rowPtr = Tensor.FromArray(pattern.RowPtr.ToArray(), RowPtr.Shape, RowPtr.Device);
            F.CopyInto(RowPtr, rowPtr);
        }
        Pattern = pattern;
    }

    private void ReplaceIndices(Func<Tensor> create)
    {
        var old = ColIdx;
        ColIdx = NewPart("_col_idx", false, create);
        old.Dispose();
    }

    /// <inheritdoc/>
    /// <remarks>With F32 values the stored pattern may hold another number of blocks (SNFS moves weights between
    /// layers); it is validated as a pattern of this weight's block grid, and the values must have its size.</remarks>
    protected internal override void Check(IO.SafeTensorsFile file)
    {
        if (_values is not DenseWeight d)
        {
            base.Check(file);
            return;
        }
        var pattern = StoredPattern(file);
        CheckStored(file, d.Value, new Shape(ValueCount(pattern.Nnz)));
    }

    /// <inheritdoc/>
    protected internal override void Load(IO.SafeTensorsFile file, Optim.Optimizer? optimizer)
    {
        var pattern = StoredPattern(file);
        if (_values is DenseWeight d && pattern.Nnz != Pattern.Nnz)
        {
            var device = d.Value.Device;
            var replacement = NewDenseWeight("", () => file.ToTensor(Name, device));
            optimizer?.Forget(d.Value, replacement.Value);
            _values.Dispose();
            _values = replacement;
            ReplaceIndices(() => file.ToTensor(Name + "_col_idx", device));
            LoadStored(file, RowPtr);
        }
        else
        {
            base.Load(file, optimizer);
            _values.Load(file, optimizer);
        }
        Pattern = pattern;
    }

    /// <inheritdoc/>
    protected internal override IEnumerable<KeyValuePair<string, string>> Metadata() => _values.Metadata();

    /// <inheritdoc/>
    protected override void OnRenamed() => _values.Rename(Name);

    /// <summary>The pattern stored in <paramref name="file"/>, validated against this weight's block grid.</summary>
    private CsrPattern StoredPattern(IO.SafeTensorsFile file)
    {
        CheckStored(file, RowPtr, RowPtr.Shape);
        if (!file.Contains(ColIdx.Name!) || file.Entry(ColIdx.Name!) is not { DType: DType.I32, Shape.Rank: 1 })
            throw new ArgumentException($"the saved state has no i32 vector '{ColIdx.Name}'");
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

    /// <summary>Sets the stored values to a dense weight's values on the pattern (pruning at initialisation).</summary>
    /// <exception cref="ArgumentException">The dense weight is not [Rows, Cols] values.</exception>
    public void CopyFromDense(Tensor dense)
    {
        ArgumentNullException.ThrowIfNull(dense);
        if (dense.Numel != (long)Rows * Cols)
            throw new ArgumentException($"{FormatName} [{Rows}, {Cols}]: a dense weight {dense.Describe()} does not fit");
        using (Autograd.NoGrad())
        {
            var values = Values;
            using var gathered = Tensor.FromArray(Layout.FromDense(dense.ToArray<float>(), Rows, Cols, Pattern), values.Shape, values.Device);
            F.CopyInto(values, gathered);
        }
    }

    /// <summary>A weight of logical shape <paramref name="shape"/> on <paramref name="pattern"/> (F32 values, default
    /// initialisation of fan-in Cols), e.g. the pattern SNIP chose.</summary>
    /// <exception cref="ArgumentException">The pattern does not cover the shape in the layout's blocks.</exception>
    public static SparseWeight OnPattern(Shape shape, SparseFormat layout, CsrPattern pattern, Device? device = null)
    {
        ArgumentNullException.ThrowIfNull(layout);
        ArgumentNullException.ThrowIfNull(pattern);
        var (_, cols) = SparseWeightFormat.Matrix(shape);
        return new SparseWeight(shape, layout, pattern, null, WeightInit.Default(cols), device);
    }

    /// <summary>A dense weight <paramref name="dense"/> restricted to <paramref name="pattern"/> (its values on the
    /// stored blocks, F32), in <paramref name="layout"/> (CSR when null): pruning at initialisation.</summary>
    /// <exception cref="ArgumentException">The pattern does not cover the dense weight's shape.</exception>
    public static SparseWeight FromDense(Tensor dense, CsrPattern pattern, SparseFormat? layout = null)
    {
        ArgumentNullException.ThrowIfNull(dense);
        var weight = OnPattern(dense.Shape, layout ?? TensorFormat.Csr, pattern, dense.Device);
        weight.CopyFromDense(dense);
        return weight;
    }

    private Weight NewValues(Shape shape, WeightInit init, Device? device)
    {
        var values = ValueFormat is null ? new DenseWeight(shape, init, device) : ValueFormat.Create(shape, init, device);
        values.Rename(Name);
        return values;
    }

    private void CheckPatternFits(CsrPattern pattern)
    {
        ArgumentNullException.ThrowIfNull(pattern);
        Layout.CheckShape(Rows, Cols);
        if (pattern.Rows * Block != Rows || pattern.Cols * Block != Cols)
            throw new ArgumentException($"{Layout.Name}: a [{pattern.Rows}, {pattern.Cols}] pattern of {Block}×{Block} blocks does not cover the [{Rows}, {Cols}] weight");
    }

    private int ValueCount(int blocks) => checked(blocks * Block * Block);

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        if (disposing)
            _values.Dispose();
        base.Dispose(disposing);
    }

    /// <inheritdoc/>
    public override string Settings => string.Create(CultureInfo.InvariantCulture, $"density: {Density:F3}");

    /// <inheritdoc/>
    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"{FormatName} [{Rows}, {Cols}], density {Density:F3}");
}
