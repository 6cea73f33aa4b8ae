namespace Frugal.Formats;

/// <summary>
/// The sparsity pattern of a CSR matrix [Rows, Cols]: row pointers (Rows + 1, from 0 to Nnz, non-decreasing) and
/// column indices (Nnz, strictly increasing within each row, in [0, Cols)). Values live beside it, in the same
/// order, so a pattern can be shared by a weight, its gradient and its optimizer state. Every constructor
/// validates these invariants; a violation names the row and index involved.
/// </summary>
public sealed class CsrPattern
{
    private CsrPattern(int rows, int cols, int[] rowPtr, int[] colIdx)
    {
        Rows = rows;
        Cols = cols;
        RowPtr = rowPtr;
        ColIdx = colIdx;
    }

    /// <summary>Number of rows.</summary>
    public int Rows { get; }

    /// <summary>Number of columns.</summary>
    public int Cols { get; }

    /// <summary>Row pointers: row r holds entries RowPtr[r] .. RowPtr[r + 1] - 1.</summary>
    public IReadOnlyList<int> RowPtr { get; }

    /// <summary>Column index of each stored entry.</summary>
    public IReadOnlyList<int> ColIdx { get; }

    /// <summary>Number of stored entries.</summary>
    public int Nnz => ColIdx.Count;

    /// <summary>Stored fraction of the matrix.</summary>
    public double Density => Rows == 0 || Cols == 0 ? 0 : Nnz / ((double)Rows * Cols);

    /// <summary>A pattern from its arrays (copied), validated.</summary>
    /// <exception cref="ArgumentException">Sizes disagree, a pointer decreases, or an index is out of range or not
    /// strictly increasing within its row.</exception>
    public static CsrPattern FromParts(int rows, int cols, ReadOnlySpan<int> rowPtr, ReadOnlySpan<int> colIdx)
    {
        if (rows < 0 || cols < 0)
            throw new ArgumentException($"CSR pattern: shape [{rows}, {cols}] has a negative size");
        if (rowPtr.Length != rows + 1)
            throw new ArgumentException($"CSR pattern [{rows}, {cols}]: {rowPtr.Length} row pointers, expected {rows + 1}");
        if (rowPtr[0] != 0 || rowPtr[rows] != colIdx.Length)
            throw new ArgumentException($"CSR pattern [{rows}, {cols}]: row pointers must run from 0 to {colIdx.Length} (the number of column indices), got {rowPtr[0]} .. {rowPtr[rows]}");
        for (var r = 0; r < rows; r++)
        {
            if (rowPtr[r + 1] < rowPtr[r])
                throw new ArgumentException($"CSR pattern [{rows}, {cols}]: row pointer {r + 1} ({rowPtr[r + 1]}) is below row pointer {r} ({rowPtr[r]})");
            for (var k = rowPtr[r]; k < rowPtr[r + 1]; k++)
            {
                var c = colIdx[k];
                if (c < 0 || c >= cols)
                    throw new ArgumentException($"CSR pattern [{rows}, {cols}]: column index {c} at entry {k} (row {r}) is out of range [0, {cols})");
                if (k > rowPtr[r] && c <= colIdx[k - 1])
                    throw new ArgumentException($"CSR pattern [{rows}, {cols}]: column indices of row {r} are not strictly increasing ({colIdx[k - 1]} then {c} at entry {k})");
            }
        }
        return new CsrPattern(rows, cols, rowPtr.ToArray(), colIdx.ToArray());
    }

    /// <summary>A random pattern with round(density · Cols) entries in every row (at least one), seeded.</summary>
    /// <exception cref="ArgumentOutOfRangeException">Density outside (0, 1].</exception>
    public static CsrPattern Random(int rows, int cols, double density, int seed)
    {
        CheckDensity(density);
        var perRow = Math.Clamp((int)Math.Round(density * cols), 1, Math.Max(cols, 1));
        var rng = new System.Random(seed);
        var order = Enumerable.Range(0, cols).ToArray();
        var rowPtr = new int[rows + 1];
        var colIdx = new int[rows * perRow];
        for (var r = 0; r < rows; r++)
        {
            // A partial Fisher–Yates shuffle picks perRow distinct columns.
            for (var i = 0; i < perRow; i++)
            {
                var j = rng.Next(i, cols);
                (order[i], order[j]) = (order[j], order[i]);
            }
            var row = colIdx.AsSpan(r * perRow, perRow);
            order.AsSpan(0, perRow).CopyTo(row);
            row.Sort();
            rowPtr[r + 1] = (r + 1) * perRow;
        }
        return new CsrPattern(rows, cols, rowPtr, colIdx);
    }

    /// <summary>The entries of largest magnitude of a dense row-major matrix, round(density · size) of them (ties
    /// to the earlier index), with their values in pattern order.</summary>
    /// <exception cref="ArgumentOutOfRangeException">Density outside (0, 1].</exception>
    /// <exception cref="ArgumentException">The values do not fill [rows, cols].</exception>
    public static (CsrPattern Pattern, float[] Values) FromDense(ReadOnlySpan<float> dense, int rows, int cols, double density)
    {
        var magnitudes = new float[dense.Length];
        for (var i = 0; i < dense.Length; i++)
            magnitudes[i] = Math.Abs(dense[i]);
        var pattern = TopScores(magnitudes, rows, cols, density);
        return (pattern, pattern.Gather(dense));
    }

    /// <summary>The round(density · size) entries with the largest <paramref name="scores"/> (row-major [rows, cols];
    /// ties to the earlier index): SNIP's and magnitude pruning's selection.</summary>
    /// <exception cref="ArgumentOutOfRangeException">Density outside (0, 1].</exception>
    /// <exception cref="ArgumentException">The scores do not fill [rows, cols].</exception>
    public static CsrPattern TopScores(ReadOnlySpan<float> scores, int rows, int cols, double density)
    {
        CheckDensity(density);
        if (scores.Length != (long)rows * cols)
            throw new ArgumentException($"CSR selection: {scores.Length} scores do not fill [{rows}, {cols}]");
        var keep = Math.Clamp((int)Math.Round(density * scores.Length), scores.Length == 0 ? 0 : 1, scores.Length);
        var copy = scores.ToArray();
        var order = Enumerable.Range(0, scores.Length).ToArray();
        Array.Sort(order, (a, b) =>
        {
            var byScore = copy[b].CompareTo(copy[a]);
            return byScore != 0 ? byScore : a.CompareTo(b);
        });
        var chosen = order.AsSpan(0, keep).ToArray();
        Array.Sort(chosen);   // row-major order = CSR order
        var rowPtr = new int[rows + 1];
        var colIdx = new int[keep];
        for (var k = 0; k < keep; k++)
        {
            rowPtr[chosen[k] / cols + 1]++;
            colIdx[k] = chosen[k] % cols;
        }
        for (var r = 0; r < rows; r++)
            rowPtr[r + 1] += rowPtr[r];
        return new CsrPattern(rows, cols, rowPtr, colIdx);
    }

    /// <summary>The values of a dense row-major matrix at the stored entries, in pattern order; with
    /// <paramref name="block"/> &gt; 1 each entry is a block × block block of a [Rows·block, Cols·block] matrix and
    /// gives its block² values row-major.</summary>
    /// <exception cref="ArgumentException">The matrix is not [Rows·block, Cols·block].</exception>
    public float[] Gather(ReadOnlySpan<float> dense, int block = 1)
    {
        var (rows, cols) = ((long)Rows * block, (long)Cols * block);
        if (block < 1 || dense.Length != rows * cols)
            throw new ArgumentException($"CSR pattern [{Rows}, {Cols}] of {block}×{block} blocks: {dense.Length} dense values do not fill [{rows}, {cols}]");
        var values = new float[(long)Nnz * block * block];
        foreach (var (value, at) in Stored(block, cols))
            values[value] = dense[(int)at];
        return values;
    }

    /// <summary>The dense row-major matrix with <paramref name="values"/> (in pattern order, block² per entry for
    /// <paramref name="block"/> &gt; 1) at the stored entries.</summary>
    /// <exception cref="ArgumentException">The number of values is not <see cref="Nnz"/>·block².</exception>
    public float[] ToDense(ReadOnlySpan<float> values, int block = 1)
    {
        if (block < 1 || values.Length != (long)Nnz * block * block)
            throw new ArgumentException($"CSR pattern [{Rows}, {Cols}] of {block}×{block} blocks stores {(long)Nnz * block * block} values, got {values.Length}");
        var cols = (long)Cols * block;
        var dense = new float[(long)Rows * block * cols];
        foreach (var (value, at) in Stored(block, cols))
            dense[at] = values[(int)value];
        return dense;
    }

    /// <summary>(value index, dense row-major index) of every stored value.</summary>
    private IEnumerable<(long Value, long At)> Stored(int block, long cols)
    {
        for (var r = 0; r < Rows; r++)
        {
            for (var k = RowPtr[r]; k < RowPtr[r + 1]; k++)
            {
                for (var i = 0; i < block; i++)
                {
                    for (var j = 0; j < block; j++)
                        yield return (((long)k * block + i) * block + j, ((long)r * block + i) * cols + (long)ColIdx[k] * block + j);
                }
            }
        }
    }

    /// <summary>Bytes of the pattern's index arrays as 32-bit integers (FormatMeta).</summary>
    public long IndexBytes => 4L * (Rows + 1 + Nnz);

    private static void CheckDensity(double density)
    {
        if (!(density > 0 && density <= 1))
            throw new ArgumentOutOfRangeException(nameof(density), $"density must be in (0, 1], got {density}");
    }
}
