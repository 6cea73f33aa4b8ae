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

    /// <inheritdoc/>
    public override string WeightFormatName => Format.Name;

    /// <summary>Rows of the weight matrix (output features or channels, or the embedding's entries).</summary>
    public int Rows { get; }

    /// <summary>Columns of the weight matrix (input features, input channels × kernel area, or the embedding width).</summary>
    public int Cols { get; }

    /// <summary>The rank r.</summary>
    public int Rank { get; private set; }

    /// <summary>U: Rows × r values.</summary>
    public Tensor U { get; private set; }

    /// <summary>Vᵀ: r × Cols values.</summary>
    public Tensor Vt { get; private set; }

    /// <summary>The tensor shapes of U and Vᵀ at rank <paramref name="rank"/>.</summary>
    private protected abstract (Shape U, Shape Vt) FactorShapes(int rank);

    /// <summary>
    /// Lowers the rank to <paramref name="rank"/> by dropping the smallest singular directions of U·Vᵀ (computed from
    /// the factors alone: an SVD of U, then of the small core diag(σ)·Qᵀ·Vᵀ; W is never formed), and returns the
    /// discarded energy ‖W − W'‖²_F. The optimizer's state follows (<paramref name="optimizer"/>): with U' = U·Tu and
    /// V'ᵀ = Tv·Vᵀ, gradients map as dL/dU' = dL/dU·Tvᵀ and dL/dV'ᵀ = Tuᵀ·dL/dVᵀ, so first moments map the same way;
    /// second moments map with the squared coefficients (which keeps them non-negative). Call between steps.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The rank is not in [1, current rank].</exception>
    /// <exception cref="ArgumentException">A gradient is pending.</exception>
    public double Truncate(int rank, Optim.Optimizer? optimizer = null)
    {
        if (rank < 1 || rank > Rank)
            throw new ArgumentOutOfRangeException(nameof(rank), $"{this}: can lower the rank to [1, {Rank}], not to {rank}");
        if (U.Grad is not null || Vt.Grad is not null)
            throw new ArgumentException($"{this}: truncate between steps, after the optimizer step and ZeroGrad");
        int r = Rank, k = rank;
        var u = Array.ConvertAll(U.ToArray<float>(), x => (double)x);
        var vt = Array.ConvertAll(Vt.ToArray<float>(), x => (double)x);
        // U = P·diag(σ)·Qᵀ; W = P·C with C = diag(σ)·Qᵀ·Vᵀ [r, Cols] = A·diag(S)·Bᵀ.
        var (p, sigma, q) = Svd.Decompose(u, Rows, r);
        var sq = new double[r * r];   // diag(σ)·Qᵀ
        for (var i = 0; i < r; i++)
        {
            for (var j = 0; j < r; j++)
                sq[i * r + j] = sigma[i] * q[j * r + i];
        }
        var (a, s, b) = Svd.Decompose(Product(sq, vt, r, r, Cols), r, Cols);
        var newU = new double[Rows * k];
        var newVt = new double[k * Cols];
        var tu = new double[r * k];   // Q·diag(1/σ)·A_k·√S_k
        var tv = new double[k * r];   // diag(1/√S_k)·A_kᵀ·diag(σ)·Qᵀ
        for (var j = 0; j < k; j++)
        {
            var root = Math.Sqrt(s[j]);
            for (var i = 0; i < Rows; i++)
            {
                double sum = 0;
                for (var t = 0; t < r; t++)
                    sum += p[i * r + t] * a[t * r + j];
                newU[i * k + j] = sum * root;
            }
            for (var c = 0; c < Cols; c++)
                newVt[j * Cols + c] = b[c * r + j] * root;
            for (var i = 0; i < r; i++)
            {
                double sum = 0;
                for (var t = 0; t < r; t++)
                    sum += q[i * r + t] * Inverse(sigma[t]) * a[t * r + j];
                tu[i * k + j] = sum * root;
                double back = 0;
                for (var t = 0; t < r; t++)
                    back += a[t * r + j] * sq[t * r + i];
                tv[j * r + i] = back * Inverse(root);
            }
        }
        var tvT = Transpose(tv, k, r);   // [r, k]
        var tuT = Transpose(tu, r, k);   // [k, r]
        var (uShape, vtShape) = FactorShapes(k);
        var device = U.Device;
        var oldU = U;
        var oldVt = Vt;
        U = ReplaceParameter(oldU, () => Tensor.FromArray(Array.ConvertAll(newU, x => (float)x), uShape, device));
        Vt = ReplaceParameter(oldVt, () => Tensor.FromArray(Array.ConvertAll(newVt, x => (float)x), vtShape, device));
        optimizer?.ReplaceParameter(oldU, U, (m, squared) => Product(m, squared ? Squared(tvT) : tvT, Rows, r, k));
        optimizer?.ReplaceParameter(oldVt, Vt, (m, squared) => Product(squared ? Squared(tuT) : tuT, m, k, r, Cols));
        oldU.Dispose();
        oldVt.Dispose();
        Rank = k;
        return s.Skip(k).Sum(x => x * x);

        static double Inverse(double x) => x > 1e-12 ? 1 / x : 0;
        static double[] Squared(double[] m) => Array.ConvertAll(m, x => x * x);
    }

    /// <inheritdoc/>
    /// <remarks>The stored factors may have another rank (a rank schedule lowered it); both must be this layer's
    /// factor shapes for that rank.</remarks>
    protected internal override void CheckOwn(IO.SafeTensorsFile file)
    {
        StoredRank(file);
        if (Bias is not null)
            CheckStored(file, Bias, Bias.Shape);
    }

    /// <inheritdoc/>
    protected internal override void LoadOwn(IO.SafeTensorsFile file, Optim.Optimizer? optimizer)
    {
        var rank = StoredRank(file);
        if (rank == Rank)
        {
            LoadStored(file, U);
            LoadStored(file, Vt);
        }
        else
        {
            var device = U.Device;
            var (oldU, oldVt) = (U, Vt);
            U = ReplaceParameter(oldU, () => file.ToTensor(oldU.Name!, device));
            Vt = ReplaceParameter(oldVt, () => file.ToTensor(oldVt.Name!, device));
            optimizer?.Forget(oldU, U);
            optimizer?.Forget(oldVt, Vt);
            oldU.Dispose();
            oldVt.Dispose();
            Rank = rank;
        }
        if (Bias is not null)
            LoadStored(file, Bias);
    }

    /// <summary>The rank of the factors stored in <paramref name="file"/>, checked against this layer's shapes.</summary>
    private int StoredRank(IO.SafeTensorsFile file)
    {
        if (!file.Contains(U.Name!))
            throw new ArgumentException($"the checkpoint has no '{U.Name}'");
        var rank = (int)Math.Min(file.Entry(U.Name!).Shape.Numel / Rows, int.MaxValue);
        try
        {
            LowRankFormat.CheckRank(Rows, Cols, rank);
        }
        catch (ArgumentOutOfRangeException e)
        {
            throw new ArgumentException($"'{U.Name}': {e.Message}", e);
        }
        var (uShape, vtShape) = FactorShapes(rank);
        CheckStored(file, U, uShape);
        CheckStored(file, Vt, vtShape);
        return rank;
    }

    /// <summary>Row-major [m, n] · [n, p].</summary>
    private static double[] Product(double[] x, double[] y, int m, int n, int p)
    {
        var z = new double[m * p];
        for (var i = 0; i < m; i++)
        {
            for (var t = 0; t < n; t++)
            {
                var xi = x[i * n + t];
                for (var j = 0; j < p; j++)
                    z[i * p + j] += xi * y[t * p + j];
            }
        }
        return z;
    }

    private static double[] Transpose(double[] x, int m, int n)
    {
        var t = new double[m * n];
        for (var i = 0; i < m; i++)
        {
            for (var j = 0; j < n; j++)
                t[j * m + i] = x[i * n + j];
        }
        return t;
    }

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

    /// <inheritdoc/>
    private protected override (Shape U, Shape Vt) FactorShapes(int rank) => (new Shape(Rows, rank), new Shape(rank, Cols));

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

    /// <inheritdoc/>
    private protected override (Shape U, Shape Vt) FactorShapes(int rank)
        => (new Shape(Rows, rank, 1, 1), new Shape(rank, Cols / (Kernel * Kernel), Kernel, Kernel));

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
    /// <summary>A rank-<paramref name="rank"/> embedding of <paramref name="count"/> vectors of width
    /// <paramref name="dim"/>, whose product has entries of standard deviation <paramref name="std"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">rank ≤ 0 or &gt; min(count, dim).</exception>
    public LowRankEmbedding(int count, int dim, int rank, Device? device = null, double std = 1)
        : base(count, dim, rank, new Shape(count, rank), new Shape(rank, dim), std * std, biasFanIn: null, normal: true, device)
    {
    }

    /// <inheritdoc/>
    private protected override (Shape U, Shape Vt) FactorShapes(int rank) => (new Shape(Rows, rank), new Shape(rank, Cols));

    /// <inheritdoc/>
    protected override Tensor OnForward(Tensor x)
    {
        using var h = F.Embedding(x, U);
        return F.MatMul(h, Vt);
    }
}
