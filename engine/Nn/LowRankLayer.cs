using Frugal.Formats;
using Frugal.Memory;

namespace Frugal.Nn;

/// <summary>
/// A layer whose weight matrix W [Rows, Cols] is stored as the low-rank product U [Rows, r] · Vᵀ [r, Cols] (see
/// <see cref="LowRankFormat"/>): both factors are parameters ("weight_u", "weight_vt"), so gradients and optimizer
/// state are r·(Rows + Cols) values; the forward pass applies Vᵀ then U and never forms W. From scratch the factors
/// are drawn so that the product's entries have the variance of the dense layer's default initialisation:
/// U, Vᵀ ~ U(±a) with r·(a²/3)² = Var(W_dense).
/// </summary>
public abstract class LowRankLayer : Module
{
    /// <summary>Registers the factors (shapes <paramref name="uShape"/> and <paramref name="vtShape"/>, holding
    /// Rows·r and r·Cols values) and the bias.</summary>
    private protected LowRankLayer(int rows, int cols, int rank, Shape uShape, Shape vtShape, double denseVariance, int? biasFanIn, bool normal, Device? device)
    {
        LowRankFormat.CheckRank(rows, cols, rank);
        (Rows, Cols, Rank) = (rows, cols, rank);
        // Each factor's variance σ² with r·σ⁴ = Var(W): the product keeps the dense initialisation's variance.
        var sigma = Math.Pow(denseVariance / rank, 0.25);
        Tensor Factor(Shape shape) => normal
            ? Tensor.Normal(shape, 0, sigma, Init.NextSeed(), DType.F32, device)
            : Init.Uniform(shape, sigma * Math.Sqrt(3), device);
        U = RegisterParameter("weight_u", () => Factor(uShape));
        Vt = RegisterParameter("weight_vt", () => Factor(vtShape));
        if (biasFanIn is { } fanIn)
            Bias = RegisterParameter("bias", () => Init.Default(new Shape(rows), fanIn, device));
    }

    /// <summary>The format entry.</summary>
    public static LowRankFormat Format => TensorFormat.LowRank;

    /// <summary>Rows of the weight matrix (output features or channels, or the embedding's entries).</summary>
    public int Rows { get; }

    /// <summary>Columns of the weight matrix (input features, input channels × kernel area, or the embedding width).</summary>
    public int Cols { get; }

    /// <summary>The rank r.</summary>
    public int Rank { get; }

    /// <summary>U: Rows × r values.</summary>
    public Tensor U { get; }

    /// <summary>Vᵀ: r × Cols values.</summary>
    public Tensor Vt { get; }

    /// <summary>Bias, or null.</summary>
    public Tensor? Bias { get; }

    /// <summary>Bytes per category: the factors and the bias as Parameter (the format's formula); gradients and
    /// each optimizer moment the same again.</summary>
    public IReadOnlyDictionary<MemoryCategory, long> StorageBytes()
    {
        var bytes = new Dictionary<MemoryCategory, long>(Format.StorageBytes(Rows, Cols, U.Numel + Vt.Numel, DType.F32));
        bytes[MemoryCategory.Parameter] += 4L * (Bias?.Numel ?? 0);
        return bytes;
    }

    /// <summary>The weight matrix U·Vᵀ as a dense [Rows, Cols] tensor (for checks and export; never used in training).</summary>
    public Tensor DenseWeight() => Tensor.FromArray(Format.ToDense(U.ToArray<float>(), Vt.ToArray<float>(), Rows, Cols), new Shape(Rows, Cols), U.Device);

    /// <summary>Sets the factors to the best rank-r approximation of a dense [Rows, Cols] weight (truncated SVD) and
    /// returns the discarded energy ‖W − U·Vᵀ‖²_F.</summary>
    /// <exception cref="ArgumentException">The weight is not [Rows, Cols] values.</exception>
    public double CopyFromDense(Tensor denseWeight)
    {
        ArgumentNullException.ThrowIfNull(denseWeight);
        if (denseWeight.Numel != (long)Rows * Cols)
            throw new ArgumentException($"{GetType().Name}: a dense weight {denseWeight.Describe()} is not [{Rows}, {Cols}] values");
        var (u, vt, discarded) = Format.FromDense(denseWeight.ToArray<float>(), Rows, Cols, Rank);
        using (Autograd.Autograd.NoGrad())
        {
            using var tu = Tensor.FromArray(u, U.Shape, U.Device);
            using var tv = Tensor.FromArray(vt, Vt.Shape, Vt.Device);
            F.CopyInto(U, tu);
            F.CopyInto(Vt, tv);
        }
        return discarded;
    }

    /// <inheritdoc/>
    public override string ToString() => $"{GetType().Name}({Cols}, {Rows}, rank: {Rank})";
}

/// <summary>y = (x·V)·Uᵀ + b: a linear layer whose weight [out, in] is U [out, r] · Vᵀ [r, in].</summary>
public sealed class LowRankLinear : LowRankLayer
{
    /// <summary>A rank-<paramref name="rank"/> layer initialised from scratch.</summary>
    /// <exception cref="ArgumentOutOfRangeException">rank ≤ 0 or &gt; min(in, out).</exception>
    public LowRankLinear(int inFeatures, int outFeatures, int rank, bool bias = true, Device? device = null)
        : base(outFeatures, inFeatures, rank, new Shape(outFeatures, rank), new Shape(rank, inFeatures), 1.0 / (3.0 * inFeatures), bias ? inFeatures : null, normal: false, device)
    {
    }

    /// <summary>The rank-<paramref name="rank"/> truncated SVD of a dense layer (its bias copied).</summary>
    /// <exception cref="ArgumentOutOfRangeException">The rank is out of range.</exception>
    public static LowRankLinear FromDense(Linear dense, int rank)
    {
        ArgumentNullException.ThrowIfNull(dense);
        var layer = new LowRankLinear(dense.InFeatures, dense.OutFeatures, rank, dense.Bias is not null, dense.Weight.Device);
        layer.CopyFromDense(dense.Weight);
        if (dense.Bias is { } b)
            F.CopyInto(layer.Bias!, b);
        return layer;
    }

    /// <inheritdoc/>
    protected override Tensor OnForward(Tensor x)
    {
        using var h = F.Linear(x, Vt);
        return F.Linear(h, U, Bias);
    }
}

/// <summary>A square-kernel convolution whose weight [out, in·k·k] is U [out, r] · Vᵀ [r, in·k·k]: a convolution into
/// r channels (Vᵀ as [r, in, k, k], no bias) followed by a 1×1 convolution (U as [out, r, 1, 1]) with the bias.</summary>
public sealed class LowRankConv2d : LowRankLayer
{
    /// <summary>A rank-<paramref name="rank"/> convolution initialised from scratch.</summary>
    /// <exception cref="ArgumentOutOfRangeException">rank ≤ 0 or &gt; min(out, in·k·k).</exception>
    public LowRankConv2d(int inChannels, int outChannels, int kernel, int rank, int stride = 1, int padding = 0, int dilation = 1, bool bias = true, Device? device = null)
        : base(outChannels, inChannels * kernel * kernel, rank, new Shape(outChannels, rank, 1, 1), new Shape(rank, inChannels, kernel, kernel),
            1.0 / (3.0 * inChannels * kernel * kernel), bias ? inChannels * kernel * kernel : null, normal: false, device)
        => (Kernel, Stride, Padding, Dilation) = (kernel, stride, padding, dilation);

    /// <summary>Kernel side.</summary>
    public int Kernel { get; }

    /// <summary>Stride.</summary>
    public int Stride { get; }

    /// <summary>Zero padding on each side.</summary>
    public int Padding { get; }

    /// <summary>Dilation.</summary>
    public int Dilation { get; }

    /// <inheritdoc/>
    protected override Tensor OnForward(Tensor x)
    {
        using var h = F.Conv2d(x, Vt, null, Stride, Padding, Dilation);
        return F.Conv2d(h, U, Bias);
    }
}

/// <summary>ALBERT's factorized embedding: a [count, r] table (U) looked up, then projected to the width by
/// Vᵀ [r, dim]; the table [count, dim] = U·Vᵀ is never formed. From scratch the product has the dense embedding's
/// N(0, 1) variance.</summary>
public sealed class LowRankEmbedding : LowRankLayer
{
    /// <summary>A rank-<paramref name="rank"/> embedding of <paramref name="count"/> vectors of width <paramref name="dim"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">rank ≤ 0 or &gt; min(count, dim).</exception>
    public LowRankEmbedding(int count, int dim, int rank, Device? device = null)
        : base(count, dim, rank, new Shape(count, rank), new Shape(rank, dim), 1.0, biasFanIn: null, normal: true, device)
    {
    }

    /// <inheritdoc/>
    protected override Tensor OnForward(Tensor x)
    {
        using var h = F.Embedding(x, U);
        return F.MatMul(h, Vt);
    }
}
