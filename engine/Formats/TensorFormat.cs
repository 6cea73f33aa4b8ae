using Frugal.Memory;

namespace Frugal.Formats;

/// <summary>A weight storage format: the traits table of the design (as ggml's type traits, PyTorch's layouts). Each
/// entry says what a [rows, cols] weight stores and what that costs per category, from the number of values it
/// stores: the format's gradient and optimizer state follow its own rules (<see cref="GradientBytes"/>,
/// <see cref="StateValues"/>). Formats with their own layout (<see cref="SparseFormat"/>) also convert to and from
/// dense. Built so far: <see cref="Dense"/>, <see cref="Csr"/>, <see cref="Bsr"/> with blocks of 8, 16 and 32,
/// <see cref="LowRank"/> and <see cref="Quantized"/> (8, 4, 2 and 1 bits).</summary>
public abstract class TensorFormat
{
    /// <summary>Plain strided values.</summary>
    public static TensorFormat Dense { get; } = new DenseFormat();

    /// <summary>Compressed sparse rows: row pointers, column indices, values.</summary>
    public static SparseFormat Csr { get; } = new(1);

    private static readonly SparseFormat[] s_bsr = [new(8), new(16), new(32)];

    /// <summary>Factorized W = U·Vᵀ with both factors stored and trained.</summary>
    public static LowRankFormat LowRank { get; } = new();

    /// <summary>Packed low-bit codes with a scale per group (see <see cref="QuantizedFormat.Create"/>).</summary>
    public static QuantizedFormat Quantized(int bits, int group = 0, QuantScheme? scheme = null) => QuantizedFormat.Create(bits, group, scheme);

    /// <summary>Every format built, for listings and the profiler (quantized ones with their default schemes, one
    /// group per row).</summary>
    public static IReadOnlyList<TensorFormat> All { get; } = [Dense, Csr, .. s_bsr, LowRank, Quantized(8), Quantized(4), Quantized(2), Quantized(1)];

    /// <summary>Block-sparse rows with <paramref name="block"/> × <paramref name="block"/> dense blocks (8, 16 or 32).</summary>
    /// <exception cref="ArgumentOutOfRangeException">Another block size.</exception>
    public static SparseFormat Bsr(int block) => s_bsr.FirstOrDefault(f => f.Block == block)
        ?? throw new ArgumentOutOfRangeException(nameof(block), $"BSR blocks are 8, 16 or 32, got {block}");

    /// <summary>Short name ("dense", "csr", "bsr16" ...).</summary>
    public abstract string Name { get; }

    /// <summary>Bytes a [rows, cols] weight of this format holds per category when it stores
    /// <paramref name="stored"/> values: values as Parameter, indices and scales as FormatMeta.</summary>
    /// <exception cref="ArgumentException">The count or shape is impossible for this format.</exception>
    public abstract IReadOnlyDictionary<MemoryCategory, long> StorageBytes(int rows, int cols, long stored, DType dtype);

    /// <summary>Bytes of the gradient kept for a weight storing <paramref name="stored"/> values: one per stored value.</summary>
    public virtual long GradientBytes(long stored, DType dtype) => stored * dtype.SizeOf();

    /// <summary>Number of values an optimizer keeps state for (per moment): one per stored value.</summary>
    public virtual long StateValues(long stored) => stored;

    /// <inheritdoc/>
    public override string ToString() => Name;
}

/// <summary>The dense format: every value stored, gradient and optimizer state per value.</summary>
internal sealed class DenseFormat : TensorFormat
{
    public override string Name => "dense";

    public override IReadOnlyDictionary<MemoryCategory, long> StorageBytes(int rows, int cols, long stored, DType dtype)
    {
        if (stored != (long)rows * cols)
            throw new ArgumentException($"dense [{rows}, {cols}] stores {(long)rows * cols} values, not {stored}");
        return new Dictionary<MemoryCategory, long> { [MemoryCategory.Parameter] = stored * dtype.SizeOf() };
    }
}

/// <summary>
/// CSR over Block × Block dense blocks: Block 1 is CSR, 8/16/32 BSR. The pattern (<see cref="CsrPattern"/>) has one
/// entry per stored block of the [rows / Block, cols / Block] block grid; values hold Block² floats per stored block,
/// row-major within the block, in pattern order. Row pointers and block column indices are 32-bit (FormatMeta).
/// </summary>
public sealed class SparseFormat : TensorFormat
{
    internal SparseFormat(int block) => Block = block;

    /// <summary>Block side (1 for CSR).</summary>
    public int Block { get; }

    /// <inheritdoc/>
    public override string Name => Block == 1 ? "csr" : $"bsr{Block}";

    /// <inheritdoc/>
    public override IReadOnlyDictionary<MemoryCategory, long> StorageBytes(int rows, int cols, long stored, DType dtype)
    {
        CheckShape(rows, cols);
        var area = (long)Block * Block;
        if (stored < 0 || stored % area != 0 || stored / area > (long)(rows / Block) * (cols / Block))
            throw new ArgumentException($"{Name} [{rows}, {cols}]: {stored} stored values is not a whole number of {Block}×{Block} blocks that fit");
        return new Dictionary<MemoryCategory, long>
        {
            [MemoryCategory.Parameter] = stored * dtype.SizeOf(),
            [MemoryCategory.FormatMeta] = 4L * (rows / Block + 1 + stored / area),
        };
    }

    /// <summary>Throws unless a [rows, cols] weight is a whole number of blocks.</summary>
    /// <exception cref="ArgumentException">A size is not positive or not a multiple of the block.</exception>
    public void CheckShape(int rows, int cols)
    {
        if (!Fits(rows, cols))
            throw new ArgumentException($"{Name}: a [{rows}, {cols}] weight is not a whole number of {Block}×{Block} blocks");
    }

    /// <summary>True when a [rows, cols] weight is a whole number of blocks.</summary>
    public bool Fits(int rows, int cols) => rows > 0 && cols > 0 && rows % Block == 0 && cols % Block == 0;

    /// <summary>A seeded random block pattern of a [rows, cols] weight: round(density · blocks per row) blocks in every
    /// block row (at least one).</summary>
    /// <exception cref="ArgumentException">The shape is not a whole number of blocks.</exception>
    /// <exception cref="ArgumentOutOfRangeException">Density outside (0, 1].</exception>
    public CsrPattern RandomPattern(int rows, int cols, double density, int seed)
    {
        CheckShape(rows, cols);
        return CsrPattern.Random(rows / Block, cols / Block, density, seed);
    }

    /// <summary>The blocks of largest L1 norm of a dense row-major [rows, cols] matrix, round(density · blocks) of
    /// them (magnitude pruning), with their values.</summary>
    /// <exception cref="ArgumentException">The values do not fill [rows, cols], or it is not a whole number of blocks.</exception>
    /// <exception cref="ArgumentOutOfRangeException">Density outside (0, 1].</exception>
    public (CsrPattern Pattern, float[] Values) FromDense(ReadOnlySpan<float> dense, int rows, int cols, double density)
    {
        var pattern = CsrPattern.TopScores(BlockScores(dense, rows, cols, Math.Abs), rows / Block, cols / Block, density);
        return (pattern, pattern.Gather(dense, Block));
    }

    /// <summary>The values of a dense row-major [rows, cols] matrix on <paramref name="pattern"/> (a block pattern).</summary>
    /// <exception cref="ArgumentException">The pattern or the values do not fit [rows, cols].</exception>
    public float[] FromDense(ReadOnlySpan<float> dense, int rows, int cols, CsrPattern pattern)
    {
        ArgumentNullException.ThrowIfNull(pattern);
        CheckPattern(rows, cols, pattern);
        return pattern.Gather(dense, Block);
    }

    /// <summary>The dense row-major [rows, cols] matrix of <paramref name="values"/> stored on <paramref name="pattern"/>.</summary>
    /// <exception cref="ArgumentException">The pattern or the values do not fit.</exception>
    public float[] ToDense(CsrPattern pattern, ReadOnlySpan<float> values, int rows, int cols)
    {
        ArgumentNullException.ThrowIfNull(pattern);
        CheckPattern(rows, cols, pattern);
        return pattern.ToDense(values, Block);
    }

    /// <summary>Σ f(value) over each block of a dense row-major [rows, cols] matrix, as a [rows / Block, cols / Block]
    /// row-major score matrix (f = |·| gives block L1 norms).</summary>
    /// <exception cref="ArgumentException">The values do not fill [rows, cols], or it is not a whole number of blocks.</exception>
    public float[] BlockScores(ReadOnlySpan<float> dense, int rows, int cols, Func<float, float> f)
    {
        ArgumentNullException.ThrowIfNull(f);
        CheckShape(rows, cols);
        if (dense.Length != (long)rows * cols)
            throw new ArgumentException($"{Name}: {dense.Length} values do not fill [{rows}, {cols}]");
        var blockCols = cols / Block;
        var scores = new float[rows / Block * blockCols];
        for (var r = 0; r < rows; r++)
        {
            for (var c = 0; c < cols; c++)
                scores[r / Block * blockCols + c / Block] += f(dense[r * cols + c]);
        }
        return scores;
    }

    private void CheckPattern(int rows, int cols, CsrPattern pattern)
    {
        CheckShape(rows, cols);
        if (pattern.Rows * Block != rows || pattern.Cols * Block != cols)
            throw new ArgumentException($"{Name}: a [{pattern.Rows}, {pattern.Cols}] block pattern of {Block}×{Block} blocks does not cover [{rows}, {cols}]");
    }
}

/// <summary>
/// The low-rank format: a [rows, cols] weight W = U·Vᵀ stored as its factors U [rows, r] and Vᵀ [r, cols], both
/// trained (Parameter; no indices). Products use the factors in turn and never form U·Vᵀ; gradients follow by the
/// chain rule into U and V, and optimizer state is one per factor value.
/// </summary>
public sealed class LowRankFormat : TensorFormat
{
    internal LowRankFormat()
    {
    }

    /// <inheritdoc/>
    public override string Name => "lowrank";

    /// <inheritdoc/>
    public override IReadOnlyDictionary<MemoryCategory, long> StorageBytes(int rows, int cols, long stored, DType dtype)
    {
        if (rows <= 0 || cols <= 0 || stored % ((long)rows + cols) != 0)
            throw new ArgumentException($"lowrank [{rows}, {cols}]: {stored} stored values is not r·({rows} + {cols}) for a whole rank r");
        CheckRank(rows, cols, (int)(stored / ((long)rows + cols)));
        return new Dictionary<MemoryCategory, long> { [MemoryCategory.Parameter] = stored * dtype.SizeOf() };
    }

    /// <summary>Values stored for a [rows, cols] weight of rank <paramref name="rank"/>: r·(rows + cols).</summary>
    public static long StoredValues(int rows, int cols, int rank) => (long)rank * ((long)rows + cols);

    /// <summary>The rank whose factors hold about <paramref name="fraction"/> of a dense [rows, cols] weight's values
    /// (at least 1).</summary>
    /// <exception cref="ArgumentOutOfRangeException">Fraction outside (0, 1].</exception>
    public static int RankFor(int rows, int cols, double fraction)
    {
        if (!(fraction > 0 && fraction <= 1))
            throw new ArgumentOutOfRangeException(nameof(fraction), $"lowrank: the fraction of parameters must be in (0, 1], got {fraction}");
        return (int)Math.Clamp(Math.Round(fraction * rows * cols / ((double)rows + cols)), 1, Math.Min(rows, cols));
    }

    /// <summary>Throws unless 1 ≤ rank ≤ min(rows, cols).</summary>
    /// <exception cref="ArgumentOutOfRangeException">The rank is out of range, naming the shape.</exception>
    public static void CheckRank(int rows, int cols, int rank)
    {
        if (rank <= 0 || rank > Math.Min(rows, cols))
            throw new ArgumentOutOfRangeException(nameof(rank), $"lowrank: rank {rank} is outside [1, {Math.Min(rows, cols)}] for a [{rows}, {cols}] weight");
    }

    /// <summary>The best rank-<paramref name="rank"/> factors of a dense row-major [rows, cols] matrix (truncated
    /// SVD, each factor taking √S): U [rows, r] and Vᵀ [r, cols], row-major, and the discarded energy
    /// Σ_{i ≥ r} S_i² (= ‖W − U·Vᵀ‖²_F).</summary>
    /// <exception cref="ArgumentException">The values do not fill [rows, cols].</exception>
    /// <exception cref="ArgumentOutOfRangeException">The rank is out of range.</exception>
    public (float[] U, float[] Vt, double DiscardedEnergy) FromDense(ReadOnlySpan<float> dense, int rows, int cols, int rank)
    {
        CheckRank(rows, cols, rank);
        if (dense.Length != (long)rows * cols)
            throw new ArgumentException($"lowrank: {dense.Length} values do not fill [{rows}, {cols}]");
        var a = new double[dense.Length];
        for (var i = 0; i < a.Length; i++)
            a[i] = dense[i];
        var (u, s, v) = Svd.Decompose(a, rows, cols);
        var k = s.Length;
        var uf = new float[(long)rows * rank];
        var vt = new float[(long)rank * cols];
        for (var j = 0; j < rank; j++)
        {
            var root = Math.Sqrt(s[j]);
            for (var i = 0; i < rows; i++)
                uf[i * rank + j] = (float)(u[i * k + j] * root);
            for (var c = 0; c < cols; c++)
                vt[j * cols + c] = (float)(v[c * k + j] * root);
        }
        return (uf, vt, s.Skip(rank).Sum(x => x * x));
    }

    /// <summary>The factors of rank <paramref name="k"/> closest to U·Vᵀ (U [rows, r], Vᵀ [r, cols], row-major),
    /// from the factors alone (an SVD of U, then of the small core diag(σ)·Qᵀ·Vᵀ), with the change of basis of the
    /// gradients (dL/dU' = dL/dU·Tvᵀ, dL/dV'ᵀ = Tuᵀ·dL/dVᵀ) and the discarded energy.</summary>
    internal static (double[] U, double[] Vt, double[] TvT, double[] TuT, double Discarded) Truncation(double[] u, double[] vt, int rows, int cols, int r, int k)
    {
        // U = P·diag(σ)·Qᵀ; W = P·C with C = diag(σ)·Qᵀ·Vᵀ [r, cols] = A·diag(S)·Bᵀ.
        var (p, sigma, q) = Svd.Decompose(u, rows, r);
        var sq = new double[r * r];   // diag(σ)·Qᵀ
        for (var i = 0; i < r; i++)
        {
            for (var j = 0; j < r; j++)
                sq[i * r + j] = sigma[i] * q[j * r + i];
        }
        var (a, s, b) = Svd.Decompose(Product(sq, vt, r, r, cols), r, cols);
        var newU = new double[rows * k];
        var newVt = new double[k * cols];
        var tu = new double[r * k];   // Q·diag(1/σ)·A_k·√S_k
        var tv = new double[k * r];   // diag(1/√S_k)·A_kᵀ·diag(σ)·Qᵀ
        for (var j = 0; j < k; j++)
        {
            var root = Math.Sqrt(s[j]);
            for (var i = 0; i < rows; i++)
            {
                double sum = 0;
                for (var t = 0; t < r; t++)
                    sum += p[i * r + t] * a[t * r + j];
                newU[i * k + j] = sum * root;
            }
            for (var c = 0; c < cols; c++)
                newVt[j * cols + c] = b[c * r + j] * root;
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
        return (newU, newVt, tvT, tuT, s.Skip(k).Sum(x => x * x));

        static double Inverse(double x) => x > 1e-12 ? 1 / x : 0;
    }

    /// <summary>Row-major [m, n] · [n, p].</summary>
    internal static double[] Product(double[] x, double[] y, int m, int n, int p)
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

    /// <summary>The dense row-major [rows, cols] product U·Vᵀ of factors U [rows, r] and Vᵀ [r, cols] (for checks and
    /// export; never used in training).</summary>
    /// <exception cref="ArgumentException">The factors do not fit [rows, cols].</exception>
    public float[] ToDense(ReadOnlySpan<float> u, ReadOnlySpan<float> vt, int rows, int cols)
    {
        if (rows <= 0 || cols <= 0 || u.Length % rows != 0 || vt.Length != u.Length / rows * cols)
            throw new ArgumentException($"lowrank: factors of {u.Length} and {vt.Length} values are not U [{rows}, r] and Vᵀ [r, {cols}]");
        var rank = u.Length / rows;
        var dense = new float[(long)rows * cols];
        for (var i = 0; i < rows; i++)
        {
            for (var c = 0; c < cols; c++)
            {
                double sum = 0;
                for (var j = 0; j < rank; j++)
                    sum += (double)u[i * rank + j] * vt[j * cols + c];
                dense[(long)i * cols + c] = (float)sum;
            }
        }
        return dense;
    }
}
