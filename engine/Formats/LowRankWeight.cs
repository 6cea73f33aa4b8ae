using System.Globalization;

namespace Frugal.Formats;

/// <summary>The low-rank format's settings: a fixed rank, or a fraction of each weight's dense parameters, and the
/// format of the factors (F32, or quantized: <c>lowrank:32+q8</c>).</summary>
public sealed record LowRankWeightFormat : WeightFormat
{
    internal LowRankWeightFormat(int? rank, double fraction, QuantizedWeightFormat? factors = null)
        => (Rank, Fraction, QuantizedFactors) = (rank, fraction, factors);

    /// <summary>The rank, or null when it follows <see cref="Fraction"/>.</summary>
    public int? Rank { get; }

    /// <summary>Without a fixed rank: the fraction of each weight's dense parameters its factors hold.</summary>
    public double Fraction { get; }

    /// <summary>The quantized format of both factors, or null for F32 factors.</summary>
    public QuantizedWeightFormat? QuantizedFactors { get; private init; }

    /// <inheritdoc/>
    public override WeightFormat? Values => QuantizedFactors;

    /// <inheritdoc/>
    public override string Key => QuantizedFactors is null ? "lowrank" : $"lowrank+{QuantizedFactors.Key}";

    /// <summary>The rank a [rows, cols] weight gets.</summary>
    public int RankFor(int rows, int cols) => Rank ?? LowRankFormat.RankFor(rows, cols, Fraction);

    /// <inheritdoc/>
    public override WeightFormat StoredAs(WeightFormat values) => this with { QuantizedFactors = QuantizedWeightFormat.ForStoredValues("lowrank", values) };

    /// <inheritdoc/>
    public override bool Fits(Shape shape)
    {
        if (shape.Rank < 2)
            return false;
        var (rows, cols) = (shape[0], (int)(shape.Numel / shape[0]));
        return Rank is not { } r || r <= Math.Min(rows, cols);
    }

    /// <inheritdoc/>
    public override Weight Create(Shape shape, WeightInit init, Device? device = null, DType dtype = DType.F32)
    {
        ArgumentNullException.ThrowIfNull(init);
        if (dtype != DType.F32)
            throw new ArgumentException($"{this}: low-rank factors are f32, not {dtype.Name()}");
        if (shape.Rank < 2)
            throw new ArgumentException($"{this}: a low-rank weight is a matrix [rows, ...], not {shape}");
        var rows = shape[0];
        var rank = RankFor(rows, checked((int)(shape.Numel / rows)));
        return new LowRankWeight(this, shape, rank, init, device);
    }

    /// <inheritdoc/>
    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"lowrank:{(Rank is { } r ? r : Fraction)}")
        + (QuantizedFactors is null ? "" : "+" + QuantizedFactors);
}

/// <summary>
/// A weight matrix W [Rows, Cols] stored as the low-rank product U [Rows, r] · Vᵀ [r, Cols] (see
/// <see cref="LowRankFormat"/>): both factors are trained ("_u", "_vt"), so gradients and optimizer state are
/// r·(Rows + Cols) values, and products apply Vᵀ then U without forming W: a linear layer is two linear products,
/// a convolution a convolution into r channels (Vᵀ as [r, in, k, k]) then a 1×1 convolution (U as [out, r, 1, 1]),
/// an embedding (ALBERT's factorization) a [count, r] lookup then a projection by Vᵀ. The factors are weights of their
/// own, so they may be quantized (a composition). From scratch they are drawn so that the product's entries have the
/// variance of the dense initialisation: factors of variance σ² with r·σ⁴ = Var(W), uniform (normal for a normal
/// initialisation).
/// </summary>
public sealed class LowRankWeight : Weight
{
    private readonly LowRankWeightFormat _format;

    internal LowRankWeight(LowRankWeightFormat format, Shape shape, int rank, WeightInit init, Device? device)
        : base(shape)
    {
        _format = format;
        LowRankFormat.CheckRank(Rows, Cols, rank);
        Rank = rank;
        var sigma = Math.Pow(init.Variance / rank, 0.25);
        var factorInit = init.Kind == Nn.InitKind.Normal ? WeightInit.Normal(sigma) : WeightInit.Uniform(sigma * Math.Sqrt(3));
        var (uShape, vtShape) = FactorShapes(rank);
        U = NewFactor("_u", uShape, factorInit, device);
        Vt = NewFactor("_vt", vtShape, factorInit, device);
    }

    /// <summary>The rank r.</summary>
    public int Rank { get; private set; }

    /// <summary>U [Rows, r] ([Rows, r, 1, 1] for a convolution).</summary>
    public Weight U { get; private set; }

    /// <summary>Vᵀ [r, Cols] ([r, in, k, k] for a convolution).</summary>
    public Weight Vt { get; private set; }

    /// <inheritdoc/>
    public override WeightFormat Format => _format;

    /// <inheritdoc/>
    public override string FormatName => _format.QuantizedFactors is null ? "lowrank" : $"lowrank+{U.FormatName}";

    /// <inheritdoc/>
    public override IEnumerable<WeightPart> Parts
        => [.. U.Parts.Select(p => p with { Suffix = "_u" + p.Suffix }), .. Vt.Parts.Select(p => p with { Suffix = "_vt" + p.Suffix })];

    /// <summary>The factors' tensor shapes at rank <paramref name="rank"/>.</summary>
    private (Shape U, Shape Vt) FactorShapes(int rank) => Shape.Rank == 4
        ? (new Shape(Rows, rank, 1, 1), new Shape(rank, Shape[1], Shape[2], Shape[3]))
        : (new Shape(Rows, rank), new Shape(rank, Cols));

    private Weight NewFactor(string suffix, Shape shape, WeightInit init, Device? device)
    {
        var factor = _format.QuantizedFactors is { } q ? q.Create(shape, init, device) : new DenseWeight(shape, init, device);
        factor.Rename(Name + suffix);
        return factor;
    }

    /// <inheritdoc/>
    protected override void OnRenamed()
    {
        U.Rename(Name + "_u");
        Vt.Rename(Name + "_vt");
    }

    /// <inheritdoc/>
    protected override Tensor LinearMatrix(Tensor x, Tensor? bias)
    {
        using var h = Vt.Linear(x, null);
        return U.Linear(h, bias);
    }

    /// <inheritdoc/>
    public override Tensor Conv2d(Tensor x, Tensor? bias, ConvOptions options)
    {
        if (Shape.Rank != 4)
            throw new ShapeMismatchException($"Conv2d: a {FormatName} weight {Shape} is not [out, in, k, k]");
        using var h = Vt.Conv2d(x, null, options);
        return U.Conv2d(h, bias, new ConvOptions(1, 0, 1));
    }

    /// <inheritdoc/>
    public override Tensor Embedding(Tensor indices)
    {
        using var h = U.Embedding(indices);
        if (Vt is DenseWeight d)
            return F.MatMul(h, d.Value);
        using var vt = Vt.ToDense();
        return F.MatMul(h, vt);
    }

    /// <inheritdoc/>
    public override Tensor ToDense()
    {
        using var u = U.ToDense();
        using var vt = Vt.ToDense();
        using var u2 = u.Reshape(Rows, Rank);
        using var vt2 = vt.Reshape(Rank, Cols);
        using var w = F.MatMul(u2, vt2);
        return w.Reshape(Shape.Dims);
    }

    /// <summary>The F32 factors U and Vᵀ as tensors (dense factors only).</summary>
    /// <exception cref="NotSupportedException">The factors are quantized.</exception>
    public (Tensor U, Tensor Vt) DenseFactors => U is DenseWeight u && Vt is DenseWeight v
        ? (u.Value, v.Value)
        : throw new NotSupportedException($"{FormatName}: the factors are {U.FormatName} codes, not F32 tensors");

    /// <summary>
    /// Lowers the rank to <paramref name="rank"/> by dropping the smallest singular directions of U·Vᵀ (computed from
    /// the factors alone; W is never formed), and returns the discarded energy ‖W − W'‖²_F. The optimizer's state
    /// follows (<paramref name="optimizer"/>): first moments map with the factors' change of basis, second moments
    /// with the squared coefficients. Call between steps.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The rank is not in [1, current rank].</exception>
    /// <exception cref="ArgumentException">A gradient is pending.</exception>
    /// <exception cref="NotSupportedException">The factors are quantized.</exception>
    public double Truncate(int rank, Optim.Optimizer? optimizer = null)
    {
        var (u, vt) = DenseFactors;
        if (rank < 1 || rank > Rank)
            throw new ArgumentOutOfRangeException(nameof(rank), $"{this}: can lower the rank to [1, {Rank}], not to {rank}");
        if (u.Grad is not null || vt.Grad is not null)
            throw new ArgumentException($"{this}: truncate between steps, after the optimizer step and ZeroGrad");
        var t = LowRankFormat.Truncation(Array.ConvertAll(u.ToArray<float>(), x => (double)x), Array.ConvertAll(vt.ToArray<float>(), x => (double)x), Rows, Cols, Rank, rank);
        var (uShape, vtShape) = FactorShapes(rank);
        var device = u.Device;
        var newU = NewDenseWeight("_u", () => Tensor.FromArray(Array.ConvertAll(t.U, x => (float)x), uShape, device));
        var newVt = NewDenseWeight("_vt", () => Tensor.FromArray(Array.ConvertAll(t.Vt, x => (float)x), vtShape, device));
        int r = Rank, k = rank, rows = Rows, cols = Cols;
        optimizer?.ReplaceParameter(u, newU.Value, (m, squared) => LowRankFormat.Product(m, squared ? Squared(t.TvT) : t.TvT, rows, r, k));
        optimizer?.ReplaceParameter(vt, newVt.Value, (m, squared) => LowRankFormat.Product(squared ? Squared(t.TuT) : t.TuT, m, k, r, cols));
        SwapFactors(newU, newVt);
        return t.Discarded;

        static double[] Squared(double[] m) => Array.ConvertAll(m, x => x * x);
    }

    /// <summary>Puts new factors in place (once the optimizer's state has moved to them) and frees the old ones.</summary>
    private void SwapFactors(DenseWeight u, DenseWeight vt)
    {
        var (oldU, oldVt) = (U, Vt);
        (U, Vt) = (u, vt);
        Rank = checked((int)(u.Value.Numel / Rows));
        oldU.Dispose();
        oldVt.Dispose();
    }

    /// <inheritdoc/>
    /// <remarks>With F32 factors the stored factors may have another rank (a rank schedule lowered it); both must be
    /// this weight's factor shapes for that rank.</remarks>
    protected internal override void Check(IO.SafeTensorsFile file)
    {
        if (U is DenseWeight)
            StoredRank(file);
        else
            base.Check(file);
    }

    /// <inheritdoc/>
    protected internal override void Load(IO.SafeTensorsFile file, Optim.Optimizer? optimizer)
    {
        if (U is not DenseWeight || StoredRank(file) == Rank)
        {
            U.Load(file, optimizer);
            Vt.Load(file, optimizer);
            return;
        }
        var (u, vt) = DenseFactors;
        var device = u.Device;
        var newU = NewDenseWeight("_u", () => file.ToTensor(u.Name!, device));
        var newVt = NewDenseWeight("_vt", () => file.ToTensor(vt.Name!, device));
        optimizer?.Forget(u, newU.Value);
        optimizer?.Forget(vt, newVt.Value);
        SwapFactors(newU, newVt);
    }

    /// <inheritdoc/>
    protected internal override IEnumerable<KeyValuePair<string, string>> Metadata() => [.. U.Metadata(), .. Vt.Metadata()];

    /// <summary>The rank of the factors stored in <paramref name="file"/>, checked against this weight's shapes.</summary>
    private int StoredRank(IO.SafeTensorsFile file)
    {
        var (u, vt) = DenseFactors;
        if (!file.Contains(u.Name!))
            throw new ArgumentException($"the saved state has no '{u.Name}'");
        var rank = (int)Math.Min(file.Entry(u.Name!).Shape.Numel / Rows, int.MaxValue);
        try
        {
            LowRankFormat.CheckRank(Rows, Cols, rank);
        }
        catch (ArgumentOutOfRangeException e)
        {
            throw new ArgumentException($"'{u.Name}': {e.Message}", e);
        }
        var (uShape, vtShape) = FactorShapes(rank);
        CheckStored(file, u, uShape);
        CheckStored(file, vt, vtShape);
        return rank;
    }

    /// <summary>Sets the factors to the best rank-r approximation of a dense [Rows, Cols] weight (truncated SVD) and
    /// returns the discarded energy ‖W − U·Vᵀ‖²_F.</summary>
    /// <exception cref="ArgumentException">The weight is not [Rows, Cols] values.</exception>
    /// <exception cref="NotSupportedException">The factors are quantized.</exception>
    public double CopyFromDense(Tensor dense)
    {
        ArgumentNullException.ThrowIfNull(dense);
        var (u, vt) = DenseFactors;
        if (dense.Numel != (long)Rows * Cols)
            throw new ArgumentException($"{FormatName}: a dense weight {dense.Describe()} is not [{Rows}, {Cols}] values");
        var (fu, fvt, discarded) = TensorFormat.LowRank.FromDense(dense.ToArray<float>(), Rows, Cols, Rank);
        using (Autograd.NoGrad())
        {
            using var tu = Tensor.FromArray(fu, u.Shape, u.Device);
            using var tv = Tensor.FromArray(fvt, vt.Shape, vt.Device);
            F.CopyInto(u, tu);
            F.CopyInto(vt, tv);
        }
        return discarded;
    }

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            U.Dispose();
            Vt.Dispose();
        }
        base.Dispose(disposing);
    }

    /// <inheritdoc/>
    public override string Settings => $"rank: {Rank}";

    /// <inheritdoc/>
    public override string ToString() => $"{FormatName} [{Rows}, {Cols}], rank {Rank}";
}
